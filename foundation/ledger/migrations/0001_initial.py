"""The ledger's tables, which the deletion app created (migrations 0002-0008 there, with the SQL
function that appends and the triggers that refuse changes), now belong to this app. Nothing in the
database changes: this records them in Django's state under their existing table names."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("deletion", "0013_outcome_attempts"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="LedgerEvent",
                    fields=[
                        ("seq", models.BigIntegerField(primary_key=True, serialize=False)),
                        ("prev_hash", models.BinaryField(max_length=32)),
                        ("hash", models.BinaryField(max_length=32)),
                        ("payload", models.TextField()),
                        ("request_ref", models.UUIDField(blank=True, db_index=True, null=True)),
                        ("created_at", models.DateTimeField()),
                    ],
                    options={"db_table": "deletion_ledgerevent", "ordering": ["seq"]},
                ),
                migrations.CreateModel(
                    name="LedgerHead",
                    fields=[
                        ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                        ("seq", models.BigIntegerField(default=0)),
                        ("hash", models.BinaryField(max_length=32)),
                    ],
                    options={"db_table": "deletion_ledgerhead"},
                ),
            ],
            database_operations=[],
        ),
    ]
