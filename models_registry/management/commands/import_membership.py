from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from foundation.errors import DomainError
from models_registry.importing import ImportRejected, training_membership_import_file
from models_registry.management.commands._lookup import dataset_by_label
from models_registry.models import TrainingRun


class Command(BaseCommand):
    help = "Load a training run's membership (record_key, shard, slice, position) from CSV or JSONL."

    def add_arguments(self, parser):
        parser.add_argument("--run", type=int, required=True)
        parser.add_argument("--dataset", required=True, help="name@version")
        parser.add_argument("--format", choices=["csv", "jsonl"])
        parser.add_argument("file", type=Path)

    def handle(self, *args, run, dataset, format, file, **options):
        fmt = format or ("jsonl" if file.suffix in (".jsonl", ".ndjson") else "csv")
        training_run = TrainingRun.objects.filter(pk=run).first()
        if training_run is None:
            raise CommandError(f"unknown training run {run}")
        try:
            with file.open("rb") as source:
                result = training_membership_import_file(
                    run=training_run, dataset=dataset_by_label(dataset), source=source, fmt=fmt
                )
        except ImportRejected as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}:{error.line}: {error.problem}")
            raise CommandError(exc.message) from exc
        except (DomainError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"loaded {result.rows} membership rows for run {run}")
