"""Record which records a company's own training loop used, and send it to the data-deletion platform.

Standard library only: ``LineageCallback`` (a transformers TrainerCallback) imports transformers
when it is first used, and torch is used only where the training code already imported it.
"""

from __future__ import annotations

from typing import Any

from lineage_client.api import ConnectionFailed, PlatformClient, PlatformError, UploadRefused
from lineage_client.ranks import gather_membership, merge_rank_rows
from lineage_client.recording import (
    DuplicateShardMembership,
    MembershipRecorder,
    MembershipRow,
    RecordingLoader,
)

__all__ = [
    "ConnectionFailed",
    "DuplicateShardMembership",
    "LineageCallback",
    "MembershipRecorder",
    "MembershipRow",
    "PlatformClient",
    "PlatformError",
    "RecordingLoader",
    "UploadRefused",
    "gather_membership",
    "merge_rank_rows",
]


def __getattr__(name: str) -> Any:
    if name == "LineageCallback":  # imports transformers: only when asked for
        from lineage_client.hf import LineageCallback

        return LineageCallback
    raise AttributeError(f"module 'lineage_client' has no attribute {name!r}")
