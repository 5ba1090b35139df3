import json

from django.core.management.base import BaseCommand, CommandError

from workers.artifact_gc import artifact_store_gc


class Command(BaseCommand):
    help = ("Remove artifact-store files that no registry row reaches (orphans a killed job left), "
            "older than the grace period; report registry rows whose files are missing. "
            "Beat runs it every ARTIFACT_GC_EVERY_SECONDS.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list the orphans, remove nothing")
        parser.add_argument("--min-age", type=float, default=None, metavar="SECONDS",
                            help="spare files younger than this (default ARTIFACT_GC_MIN_AGE_SECONDS)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the whole report as JSON")

    def handle(self, *args, dry_run=False, min_age=None, as_json=False, **options):
        if min_age is not None and min_age < 0:
            raise CommandError("--min-age must not be negative")
        report = artifact_store_gc(dry_run=dry_run, min_age_seconds=min_age, actor="artifacts_gc command")
        if as_json:
            self.stdout.write(json.dumps(report.to_dict(), indent=2))
        else:
            verb = "would remove" if dry_run or report.refused else "removed"
            listed = report.orphans if dry_run or report.refused else report.removed
            for orphan in listed:
                self.stdout.write(f"{verb} {orphan.kind} {orphan.sha256} ({orphan.bytes} bytes, "
                                  f"{orphan.age_seconds:.0f} s old)")
            summary = report.summary()
            self.stdout.write(
                f"{summary['manifests']} manifests and {summary['blobs']} blobs in the store; "
                f"{summary['referenced_manifests']} manifests and {summary['referenced_blobs']} blobs referenced; "
                f"{summary['young_kept']} unreferenced files younger than the grace period kept; "
                f"{summary['orphans_found']} orphans found, {summary['orphans_removed']} removed "
                f"({summary['removed_bytes']} bytes)" + (" [dry run]" if dry_run else ""))
        for copy in report.retained:
            self.stderr.write(f"KEPT BY THE OBJECT STORE: {copy['kind']} {copy['sha256']}: {copy['reason']} "
                              "(its data key is destroyed; re-checked on every run, deleted once released)")
        for entry in report.still_held:
            self.stdout.write(f"still held: {entry['kind']} {entry['sha256']} ({entry['reason']}; "
                              f"reported {entry['held_since']})")
        for entry in report.released:
            self.stdout.write(f"released: {entry['kind']} {entry['sha256']} (held since {entry['held_since']} by "
                              f"{entry['was_held_by']}): {'would be removed' if dry_run else 'removed'}")
        for row in report.missing:
            self.stderr.write(f"MISSING: {row.source} {row.row_id} ({row.label}) names {row.sha256}: "
                              f"{row.missing} is not in the store")
        if report.blobs_held:
            self.stderr.write(f"HELD: {report.blobs_held}")
        for entry in report.unreadable:
            self.stderr.write(f"UNREADABLE: manifest {entry['sha256']}: {entry['problem']}")
        if report.refused:
            raise CommandError(report.refused)
        if report.missing:
            raise CommandError(f"{len(report.missing)} registry row(s) name files that are missing (listed above); "
                               "nothing was changed for them")

