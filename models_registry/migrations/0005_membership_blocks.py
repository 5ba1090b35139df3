"""Training membership stored by record block: models_registry_membershipblock.

One partition per run with a B-tree each made every scope query probe every partition (200 runs:
200 index descents per record, p99 5-20 ms), and a row per membership costs ~45 bytes of tuple
overhead before any index. Membership is now stored as one row per (block of 256 record ids,
run): the records' offsets in the block, their placements (shard << 16 | slice & 0xffff) and
their positions, as parallel arrays. The primary key (block, run_id) includes the offsets and
placements, so "which runs hold record r, with which shard and slice" is an index-only scan of a
few leaf pages; an index on run_id serves the per-run reads. An import is one grouped INSERT.

models_registry_trainingmembership becomes a view with the old columns (record_id, run_id,
shard, slice, position), so the ORM model and per-run queries read it as before. Existing rows
are moved over.
"""

from django.db import migrations

CREATE = """
CREATE TABLE models_registry_membershipblock (
    block integer NOT NULL,
    run_id integer NOT NULL,
    offsets smallint[] NOT NULL,
    placements integer[] NOT NULL,
    positions integer[] NOT NULL,
    CONSTRAINT models_registry_membershipblock_pkey PRIMARY KEY (block, run_id) INCLUDE (offsets, placements),
    CONSTRAINT models_registry_membershipblock_aligned CHECK (
        cardinality(offsets) = cardinality(placements) AND cardinality(offsets) = cardinality(positions))
);
CREATE INDEX models_registry_membershipblock_run ON models_registry_membershipblock (run_id);
INSERT INTO models_registry_membershipblock (block, run_id, offsets, placements, positions)
SELECT record_id >> 8, run_id,
       array_agg((record_id & 255)::smallint ORDER BY record_id),
       array_agg((shard::int << 16) | (slice::int & 65535) ORDER BY record_id),
       array_agg(position ORDER BY record_id)
FROM models_registry_trainingmembership GROUP BY 1, 2;
DROP TABLE models_registry_trainingmembership CASCADE;
CREATE VIEW models_registry_trainingmembership AS
SELECT (b.block << 8) | m.offset_in_block AS record_id,
       b.run_id,
       (m.placement >> 16)::smallint AS shard,
       ((m.placement << 16) >> 16)::smallint AS slice,
       m.position
FROM models_registry_membershipblock b,
     unnest(b.offsets, b.placements, b.positions) AS m(offset_in_block, placement, position);
"""

DROP = """
CREATE TABLE models_registry_trainingmembership_rows AS SELECT * FROM models_registry_trainingmembership;
DROP VIEW models_registry_trainingmembership;
DROP TABLE models_registry_membershipblock;
ALTER TABLE models_registry_trainingmembership_rows RENAME TO models_registry_trainingmembership;
ALTER TABLE models_registry_trainingmembership ADD PRIMARY KEY (record_id, run_id);
"""


class Migration(migrations.Migration):
    dependencies = [("models_registry", "0004_record_content")]
    operations = [migrations.RunSQL(CREATE, DROP)]
