from django.core.management.base import BaseCommand

from models_registry.services import content_fingerprints_rekey


class Command(BaseCommand):
    help = ("Move every stored content fingerprint (records and the suppression list) to the current "
            "CONTENT_FINGERPRINT_KEY_VERSION after a rotation of the content fingerprint key. Idempotent.")

    def handle(self, *args, **options):
        moved = content_fingerprints_rekey()
        self.stdout.write(f"content fingerprints under key version {moved['key_version']}: "
                          f"{moved['records']} record(s) and {moved['suppression_entries']} suppression "
                          "entries re-keyed")
