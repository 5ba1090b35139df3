from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from foundation.errors import DomainError
from models_registry.importing import ImportRejected, dataset_records_import
from models_registry.management.commands._lookup import dataset_by_label


class Command(BaseCommand):
    help = "Register a dataset's records from CSV or JSONL (one transaction: all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="name@version")
        parser.add_argument("--format", choices=["csv", "jsonl"], help="default: from the file extension")
        parser.add_argument("file", type=Path)

    def handle(self, *args, dataset, format, file, **options):
        fmt = format or ("jsonl" if file.suffix in (".jsonl", ".ndjson") else "csv")
        try:
            with file.open("rb") as source:
                result = dataset_records_import(dataset=dataset_by_label(dataset), source=source, fmt=fmt)
        except ImportRejected as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}:{error.line}: {error.problem}")
            raise CommandError(exc.message) from exc
        except (DomainError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"imported {result.rows} records into {result.dataset} "
                          f"({result.subjects_created} new subjects)")
