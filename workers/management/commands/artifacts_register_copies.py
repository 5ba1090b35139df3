from django.core.management.base import BaseCommand

from models_registry.models import ModelVersion, StoredArtifact, VersionStatus
from workers.runners.storage import artifact_store, stored_artifacts_register


class Command(BaseCommand):
    help = ("Give each model version's training run its own registry rows for the files its weights "
            "use. Data folders written before per-model rows (a model trained to the same bytes as "
            "another got no rows for the shared files) need it once: otherwise purging one model's "
            "copies could delete a file the other model still uses. Idempotent.")

    def handle(self, *args, **options):
        store = artifact_store()
        before = StoredArtifact.objects.count()
        versions = (ModelVersion.objects.exclude(status=VersionStatus.PURGED).exclude(training_run=None)
                    .select_related("training_run").order_by("id"))
        checked = missing = 0
        for version in versions:
            if not version.artifact_sha256 or not store.exists(version.artifact_sha256):
                missing += 1
                continue
            stored_artifacts_register(store=store, top_id=version.artifact_sha256, run=version.training_run,
                                      version=version)
            checked += 1
        added = StoredArtifact.objects.count() - before
        self.stdout.write(f"{checked} versions checked, {added} rows added"
                          + (f"; {missing} versions have no file in the store (left as they are)" if missing else ""))
