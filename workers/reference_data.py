"""Registering the reference datasets (materialised from installed packages) in the registry.

Django side: materialises files under DATASET_ROOT with the pure helpers in
workers.datasets.reference, registers the Dataset row and imports its records (with their
subjects' identifiers pseudonymised on the way in) through the platform's own import service.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from django.conf import settings
from django.db import transaction

from models_registry import services
from models_registry.importing import dataset_records_import
from models_registry.models import ArtifactKind, Dataset

REFERENCE_META = {
    "breast_cancer": dict(modality="tabular", purpose="Diagnosis support model (reference set).",
                          legal_basis="consent"),
    "mnist": dict(modality="image", purpose="Handwriting recognition model (reference set).",
                  legal_basis="legitimate_interests"),
    "synthetic_pii_text": dict(modality="text", purpose="Customer-support language model (reference set).",
                               legal_basis="contract"),
}


def reference_dataset_register(*, name: str, seed: int = 0, version: str = "1") -> Dataset:
    """Materialise and register reference dataset ``name`` (idempotent: returns the existing row)."""
    from workers.datasets.reference import (
        dataset_info,
        materialise_reference,
        record_import_row,
        reference_records,
    )

    existing = Dataset.objects.filter(name=name, version=version).first()
    if existing is not None:
        return existing
    directory = materialise_reference(name, Path(settings.DATASET_ROOT), seed=seed)
    body = io.BytesIO()
    for row in reference_records(directory):
        body.write(json.dumps(record_import_row(row)).encode() + b"\n")
    body.seek(0)
    with transaction.atomic():
        dataset = services.dataset_register(name=name, version=version, storage_location=str(directory),
                                            **REFERENCE_META[name])
        dataset_records_import(dataset=dataset, source=body, fmt="jsonl")
        info = dataset_info(directory)
        for split, meta in info["splits"].items():
            path = directory / meta["file"]
            services.stored_artifact_register(
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(), kind=ArtifactKind.DATASET_CACHE,
                size_bytes=path.stat().st_size, dataset=dataset, label=f"{name} {split} split file",
            )
    return dataset
