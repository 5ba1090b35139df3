from django.core.management.base import BaseCommand

from foundation.ledger.services import ledger_checkpoint_write


class Command(BaseCommand):
    help = "Write a signed checkpoint of the ledger head (run periodically; beat does it too)."

    def handle(self, *args, **options):
        self.stdout.write(str(ledger_checkpoint_write()))
