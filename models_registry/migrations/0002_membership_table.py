"""TrainingMembership is partitioned by training run, so it is created here by SQL.

Each run's membership is loaded into its own table, indexed, given a CHECK on run_id (so that
ATTACH skips its validation scan) and attached as a partition; see models_registry.importing.
The primary key (record_id, run_id) is the only index and serves the record lookup.
"""

from django.db import migrations

CREATE = """
CREATE TABLE models_registry_trainingmembership (
    record_id integer NOT NULL,
    run_id integer NOT NULL,
    shard smallint NOT NULL DEFAULT 0,
    slice smallint NOT NULL DEFAULT 0,
    position integer NOT NULL DEFAULT 0,
    PRIMARY KEY (record_id, run_id)
) PARTITION BY LIST (run_id);
"""

DROP = "DROP TABLE IF EXISTS models_registry_trainingmembership CASCADE;"


class Migration(migrations.Migration):
    dependencies = [("models_registry", "0001_initial")]
    operations = [migrations.RunSQL(CREATE, DROP)]
