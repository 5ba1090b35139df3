"""The ledger (LedgerEvent, LedgerHead) and API tokens (ApiToken) moved to the foundation apps
``ledger`` and ``access``. Tables, rows, the ledger's SQL function, triggers and grants stay as
they are; only Django's state moves. The content types are renamed in place, so the permissions
the staff groups hold and the admin's history keep pointing at the same models."""

from django.db import migrations, models

MOVED = {"ledgerevent": "ledger", "ledgerhead": "ledger", "apitoken": "access"}


def rename_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if ContentType.objects.filter(app_label=app_label, model=model).exists():
            continue  # created already (a fresh database): the old one, if any, has no rows to keep
        ContentType.objects.filter(app_label="deletion", model=model).update(app_label=app_label)


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        ContentType.objects.filter(app_label=app_label, model=model).update(app_label="deletion")


class Migration(migrations.Migration):

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("deletion", "0013_outcome_attempts"),
        ("ledger", "0001_initial"),
        ("access", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="deletionrequest",
                    name="created_by",
                    field=models.ForeignKey(blank=True, null=True, on_delete=models.deletion.PROTECT,
                                            related_name="requests", to="access.apitoken"),
                ),
                migrations.AlterField(
                    model_name="webhookendpoint",
                    name="client",
                    field=models.ForeignKey(on_delete=models.deletion.CASCADE, related_name="webhooks",
                                            to="access.apitoken"),
                ),
                migrations.DeleteModel(name="LedgerEvent"),
                migrations.DeleteModel(name="LedgerHead"),
                migrations.DeleteModel(name="ApiToken"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(rename_content_types, restore_content_types),
    ]
