from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from models_registry.models import ModelVersion, StoredArtifact, VersionStatus
from workers.artifacts import ArtifactNotFound
from workers.runners.storage import artifact_store, stored_artifacts_register


class Command(BaseCommand):
    help = ("Give each model version's training run its own registry rows for the files its weights "
            "use. Data folders written before per-model rows (a model trained to the same bytes as "
            "another got no rows for the shared files) need it once: otherwise purging one model's "
            "copies could delete a file the other model still uses. Idempotent. A version that is not "
            "purged but misses a file (already deleted) is listed, left unchanged, and the command exits 1.")

    def handle(self, *args, **options):
        store = artifact_store()
        before = StoredArtifact.objects.count()
        versions = (ModelVersion.objects.exclude(status=VersionStatus.PURGED).exclude(training_run=None)
                    .select_related("training_run", "model").order_by("id"))
        checked, damaged = 0, []
        for version in versions:
            if not version.artifact_sha256 or not store.exists(version.artifact_sha256):
                damaged.append(f"{version} (id {version.id}, {version.status}): its weights are not in the store")
                continue
            try:
                with transaction.atomic():  # a damaged version adds no rows at all
                    stored_artifacts_register(store=store, top_id=version.artifact_sha256, run=version.training_run,
                                              version=version)
            except ArtifactNotFound as exc:
                damaged.append(f"{version} (id {version.id}, {version.status}): {exc}")
                continue
            checked += 1
        added = StoredArtifact.objects.count() - before
        self.stdout.write(f"{checked} versions checked, {added} rows added")
        for line in damaged:
            self.stderr.write(f"DAMAGED: {line}")
        if damaged:
            raise CommandError(f"{len(damaged)} version(s) that are not purged miss a file their weights use "
                               "(listed above): they cannot be loaded; withdraw or retrain them")
