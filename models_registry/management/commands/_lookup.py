from django.core.management.base import CommandError

from models_registry.models import Dataset


def dataset_by_label(label: str) -> Dataset:
    name, _, version = label.partition("@")
    dataset = Dataset.objects.filter(name=name, version=version or "1").first()
    if dataset is None:
        raise CommandError(f"unknown dataset {label!r} (give name@version)")
    return dataset
