"""A run's membership uploaded in numbered chunks: streamed, resumable and idempotent.

A training loop of millions of records cannot send its membership as one request that a broken
connection loses whole. The client opens an upload for (run, dataset) — opening it again answers the
same upload, with the chunks it holds, which is how a restarted client resumes — and sends chunks
``0..n-1`` in any order. Each chunk is checked like a whole import (unknown, repeated, erased or
suppressed keys refuse it naming the line; a key already in the run, from an earlier chunk too, is a
repeat) and loaded into the membership in its own transaction. A chunk sent again with the same bytes
(a retry whose answer was lost) is a no-op that answers the same result; other bytes under a number
already applied are a conflict. Completing the upload says how many chunks there are; from then on no
chunk is accepted.

Chunks are loaded where the run's membership lives, so an upload left open leaves part of it there:
while any upload of a run is open, no version may be registered from the run
(:func:`membership_complete_check`, called where versions are registered from a run's membership).
"""

from __future__ import annotations

import hashlib
import io

from django.db import transaction
from django.utils import timezone

from foundation.errors import Conflict, ValidationFailed
from models_registry import importing
from models_registry.models import (
    Dataset,
    MembershipUpload,
    MembershipUploadChunk,
    MembershipUploadStatus,
    TrainingRun,
)

MAX_CHUNKS = 100_000
CHUNK_REQUIRED_COLUMNS = {"record_key", "position"}


def membership_upload_open(*, run: TrainingRun, dataset: Dataset) -> tuple[MembershipUpload, bool]:
    """The upload of ``run``'s membership of ``dataset``, and whether it was created now. The same
    (run, dataset) answers the same upload, open or complete. A new upload is refused (Conflict) once
    a version was registered from the run: that version's lineage is the membership it was stored with."""
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        existing = MembershipUpload.objects.filter(run=locked, dataset=dataset).first()
        if existing is not None:
            return existing, False
        if locked.versions.exists():
            raise Conflict(f"training run {run.id} already has a registered version, whose lineage is the "
                           "membership it was registered with; register a new training run for new membership",
                           code="run_has_versions")
        return MembershipUpload.objects.create(run=locked, dataset=dataset), True


def membership_chunk_apply(*, upload: MembershipUpload, number: int, data: bytes, fmt: str
                           ) -> tuple[MembershipUploadChunk, bool]:
    """Check and load chunk ``number`` (CSV or JSONL rows: record_key, shard, slice, position; the
    position is required, it orders the records the run first saw in a shard and slice). Returns the
    chunk and whether it was applied now (False: the same bytes were applied before). ImportRejected
    naming the chunk and the line; Conflict for other bytes under an applied number, or a new chunk
    after the upload was completed."""
    if not 0 <= number < MAX_CHUNKS:
        raise ValidationFailed(f"chunk numbers run from 0 to {MAX_CHUNKS - 1}", field="chunk")
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        # One chunk of an upload at a time: a retry racing its original waits and finds it applied.
        upload = MembershipUpload.objects.select_for_update().select_related("run", "dataset").get(pk=upload.pk)
        applied = upload.chunks.filter(number=number).first()
        if applied is not None:
            if applied.sha256 != digest:
                raise Conflict(f"chunk {number} of membership upload {upload.id} was applied with other rows "
                               f"(sha256 {applied.sha256}); a chunk is sent again only unchanged", code="chunk_differs")
            return applied, False
        if upload.status == MembershipUploadStatus.COMPLETE:
            raise Conflict(f"membership upload {upload.id} is complete: it takes no more chunks",
                           code="membership_upload_complete")
        rows = importing.membership_rows_from_file(io.BytesIO(data), fmt, required=CHUNK_REQUIRED_COLUMNS)
        try:
            result = importing.training_membership_import(run=upload.run, dataset=upload.dataset, rows=rows)
        except importing.ImportRejected as exc:
            raise importing.ImportRejected(exc.errors, total=exc.total, what=f"chunk {number}") from None
        chunk = MembershipUploadChunk.objects.create(upload=upload, number=number, sha256=digest, rows=result.rows)
        MembershipUpload.objects.filter(pk=upload.pk).update(rows=upload.rows + result.rows)
    return chunk, True


def membership_upload_complete(*, upload: MembershipUpload, chunks: int, rows: int | None = None
                               ) -> MembershipUpload:
    """Close the upload: chunks ``0..chunks-1`` (at least one) must all be applied (and hold ``rows`` rows, when
    given), so that a chunk lost on the way cannot go unnoticed. Completing again with the same
    counts answers the same upload. Conflict naming the missing chunks or the other counts."""
    with transaction.atomic():
        upload = MembershipUpload.objects.select_for_update().get(pk=upload.pk)
        numbers = set(upload.chunks.values_list("number", flat=True))
        if numbers != set(range(chunks)):
            missing = sorted(set(range(chunks)) - numbers)
            extra = sorted(numbers - set(range(chunks)))
            problem = (f"chunk(s) {_ranges(missing)} not received" if missing
                       else f"chunk(s) {_ranges(extra)} received beyond the {chunks} announced")
            raise Conflict(f"membership upload {upload.id} cannot complete with {chunks} chunk(s): {problem}",
                           code="chunks_missing" if missing else "chunks_extra")
        if rows is not None and rows != upload.rows:
            raise Conflict(f"membership upload {upload.id} holds {upload.rows} row(s), not {rows}",
                           code="rows_differ")
        if upload.status != MembershipUploadStatus.COMPLETE:
            upload.status = MembershipUploadStatus.COMPLETE
            upload.completed_at = timezone.now()
            upload.save(update_fields=["status", "completed_at"])
    return upload


def membership_complete_check(*, run: TrainingRun, lock: bool = False) -> int:
    """Refuse (ValidationFailed ``membership_incomplete``, as a run without membership is refused)
    while an upload of ``run``'s membership is open: what the run holds then is part of what it trained
    on, never its membership. Returns how many uploads the run has had, so that a caller that reads the
    membership and registers a version later can check again, under the run's lock (``lock``: inside
    a transaction), that no upload began meanwhile."""
    if lock:
        TrainingRun.objects.select_for_update().filter(pk=run.pk).first()
    uploads = list(MembershipUpload.objects.filter(run_id=run.pk).values_list("id", "status", "dataset_id"))
    open_ = [(upload_id, dataset_id) for upload_id, status, dataset_id in uploads
             if status == MembershipUploadStatus.OPEN]
    if open_:
        upload_id, dataset_id = open_[0]
        raise ValidationFailed(f"the membership of training run {run.pk} is still being uploaded (upload {upload_id}, "
                       f"dataset {dataset_id}, is not complete): send its remaining chunks and complete it "
                       f"(POST /api/v1/membership-uploads/{upload_id}/complete/) first",
                       code="membership_incomplete", field="training_run")
    return len(uploads)


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5" (at most ten groups)."""
    groups: list[list[int]] = []
    for n in numbers:
        if groups and groups[-1][1] == n - 1:
            groups[-1][1] = n
        else:
            groups.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in groups[:10])
    return text + (", ..." if len(groups) > 10 else "")
