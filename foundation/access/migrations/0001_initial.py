"""API tokens, which the deletion app created (its migration 0001), now belong to this app. Nothing
in the database changes: this records the table in Django's state under its existing name."""

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
                    name="ApiToken",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                                   verbose_name="ID")),
                        ("name", models.CharField(max_length=200)),
                        ("role", models.CharField(choices=[
                            ("intake", "Intake (create requests, read its own)"),
                            ("dpo", "Data-protection officer (everything on requests)"),
                            ("ml_engineer", "ML engineer (registry)"),
                            ("auditor", "Auditor (read-only requests and reports)")], max_length=20)),
                        ("token_hash", models.CharField(max_length=64, unique=True)),
                        ("prefix", models.CharField(help_text="The token's first characters, to tell tokens apart.",
                                                    max_length=16)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={"db_table": "deletion_apitoken"},
                ),
            ],
            database_operations=[],
        ),
    ]
