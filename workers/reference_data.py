"""Registering the reference datasets (materialised from installed packages) in the registry.

Django side: materialises files under DATASET_ROOT (with ARTIFACT_STORE=s3: in the bucket, as
shared files, workers.shared_files) with the pure helpers in
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
    "diabetes": dict(modality="tabular", purpose="Disease progression prediction model, a regression (reference set).",
                     legal_basis="consent"),
    "mnist": dict(modality="image", purpose="Handwriting recognition model (reference set).",
                  legal_basis="legitimate_interests"),
    "synthetic_pii_text": dict(modality="text", purpose="Customer-support language model (reference set).",
                               legal_basis="contract"),
}


def reference_dataset_register(*, name: str, seed: int = 0, version: str = "1") -> Dataset:
    """Materialise and register reference dataset ``name`` (idempotent: returns the existing row)."""
    from workers.datasets.reference import (
        as_folder,
        dataset_info,
        materialise_reference,
        materialise_reference_into,
        record_import_row,
        reference_records,
    )
    from workers.runners.storage import STORED_FOLDER_PREFIX, dataset_folder

    existing = Dataset.objects.filter(name=name, version=version).first()
    if existing is not None:
        return existing
    if settings.ARTIFACT_STORE == "s3":  # every worker host reads it from the bucket, in memory
        location = f"{STORED_FOLDER_PREFIX}{name}"
        directory = materialise_reference_into(name, dataset_folder(location), seed=seed)
    else:
        directory = materialise_reference(name, Path(settings.DATASET_ROOT), seed=seed)
        location = str(directory)
    body = io.BytesIO()
    for row in reference_records(directory):
        body.write(json.dumps(record_import_row(row)).encode() + b"\n")
    body.seek(0)
    with transaction.atomic():
        dataset = services.dataset_register(name=name, version=version, storage_location=location,
                                            **REFERENCE_META[name])
        dataset_records_import(dataset=dataset, source=body, fmt="jsonl")
        info = dataset_info(directory)
        for split, meta in info["splits"].items():
            data = as_folder(directory).read_bytes(meta["file"])
            services.stored_artifact_register(
                sha256=hashlib.sha256(data).hexdigest(), kind=ArtifactKind.DATASET_CACHE,
                size_bytes=len(data), dataset=dataset, label=f"{name} {split} split file",
            )
    return dataset
