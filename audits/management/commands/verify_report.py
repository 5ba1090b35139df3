from django.core.management.base import BaseCommand

from audits.reports import report_verify_detailed


class Command(BaseCommand):
    help = ("Verify a signed erasure report: its PAdES signature against the trust root "
            "(REPORT_TRUST_ROOT or the development root) and its anchored ledger head against the "
            "ledger in the database. Exits 1 on any problem.")

    def add_arguments(self, parser):
        parser.add_argument("pdf", help="the report PDF")

    def handle(self, *args, **options):
        result = report_verify_detailed(options["pdf"])
        if result.problems:
            for problem in result.problems:
                self.stderr.write(f"problem: {problem}")
            raise SystemExit(1)
        when = f"{result.signed_at:%Y-%m-%d %H:%M:%S %Z}" if result.signed_at else "an unknown time"
        self.stdout.write(
            f"report valid: request {result.request_id}, signed by {result.signer} at {when}; "
            f"ledger entry {result.ledger_seq} still has hash {result.ledger_hash}")
