import json

from django.core.management.base import BaseCommand

from deletion.workflow import erased_shadows_purge


class Command(BaseCommand):
    help = ("Destroy the shadow models that still hold records already erased (a data folder from before the "
            "request's erasure destroyed them: an audit that reruns a method on them fails) and queue their "
            "replacement; the ledger records it. Run once after upgrading; --dry-run lists them.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list the shadow models, destroy nothing")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the result as JSON")

    def handle(self, *args, dry_run=False, as_json=False, **options):
        found = erased_shadows_purge(actor="erased_shadows_purge command", dry_run=dry_run)
        if as_json:
            self.stdout.write(json.dumps(found, indent=2))
            return
        verb = "destroyed" if found["purged"] else "would destroy"
        for shadow in found["shadow_models"]:
            self.stdout.write(f"{verb} {shadow['label'] or 'shadow model'} {shadow['sha256']}")
        self.stdout.write(f"{len(found['shadow_models'])} shadow model(s) hold any of the {found['erased_records']} "
                          f"erased record(s)" + (" [dry run]" if dry_run else "")
                          + (f"; replacement queued (job(s) {', '.join(map(str, found['replenish_jobs']))})"
                             if found["replenish_jobs"] else ""))
