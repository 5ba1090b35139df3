from django.core.management.base import BaseCommand

from foundation.ledger.services import ledger_head, ledger_verify


class Command(BaseCommand):
    help = "Verify the ledger's hash chain against its head and its signed anchors; exit 1 on any break."

    def handle(self, *args, **options):
        problems = ledger_verify()
        if problems:
            for problem in problems:
                self.stderr.write(f"entry {problem.seq}: {problem.problem}")
            raise SystemExit(1)
        seq, digest = ledger_head()
        self.stdout.write(f"ledger intact: {seq} entries, head {digest.hex()}")
