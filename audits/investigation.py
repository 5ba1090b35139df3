"""Investigating a sanity-check flag on an exact deletion.

When the per-record membership test flags an erased record on a model that provably never saw it
(an exact method), the usual causes are a copy of the record's content left in the kept data, a
near-duplicate the model learned instead, or a false alarm. The platform looks for the first two
for every flagged record and reports what it finds:

* exact copies: kept training records whose keyed content fingerprint equals the erased record's
  (the fingerprint the registry computed at import; no content is read);
* near-duplicates: kept training records closer to the erased record in the model's own
  representation (the inputs of its output layers) than all but ``NEAR_QUANTILE`` of the held-out
  records are to their nearest training record, i.e. closer than a genuinely new record usually is.

A copy or near-duplicate that belongs to the same person is that person's data too: it is offered
to the DPO as an addition to the request's scope. The report prints record keys and counts, never
the content of anyone's record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models_registry.models import DataRecord

# A kept record nearer than this quantile of held-out records' nearest-training-record distances
# counts as a near-duplicate: 1 in 100 genuinely new records comes that close by chance.
NEAR_QUANTILE = 0.01
HELD_OUT_FOR_THRESHOLD = 500


@dataclass(frozen=True)
class FlagFinding:
    record_key: str
    exact_copies: tuple[str, ...]
    near_duplicates: tuple[str, ...]
    same_person: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"record_key": self.record_key, "exact_copies": list(self.exact_copies),
                "near_duplicates": list(self.near_duplicates), "same_person": list(self.same_person)}


def flagged_record_keys(checks: list) -> list[str]:
    """The erased records the per-record membership test flagged (after its correction)."""
    return sorted({str(k) for c in checks if c.check == "membership_lira" for k in getattr(c, "detected_ids", ())})


def investigate_flags(*, flagged_keys: list[str], dataset, kept_keys: list[str], model, train, test,
                      device: str) -> dict:
    """For each flagged record: exact copies among ``kept_keys`` by content fingerprint,
    near-duplicates in ``model``'s representation, and which of those belong to the same person
    (offered as scope additions). ``train``/``test``: the dataset's splits (RecordDatasets).
    Returns ``{"findings": [...], "scope_additions": [...], "threshold": ..., "summary": ...}``."""
    if not flagged_keys:
        return {"findings": [], "scope_additions": [], "threshold": None, "summary": ""}
    records = {r.external_key: r for r in DataRecord.objects.filter(dataset=dataset, external_key__in=flagged_keys)}
    kept = set(kept_keys)
    features_kept, kept_order = _representation(model, train.subset(sorted(kept)), device)
    features_flagged, flagged_order = _representation(model, train.subset(sorted(records)), device)
    held_out = sorted(test.record_keys)[:HELD_OUT_FOR_THRESHOLD]
    features_test, _ = _representation(model, test.subset(held_out), device)
    threshold = None
    if len(features_test) and len(features_kept):
        nearest = _pairwise(features_test, features_kept).min(axis=1)
        threshold = float(np.quantile(nearest, NEAR_QUANTILE))
    findings, additions = [], []
    for key in flagged_keys:
        record = records.get(key)
        if record is None:
            continue
        copies = sorted(DataRecord.objects.filter(
            dataset=dataset, content_fingerprint=record.content_fingerprint,
            fingerprint_key_version=record.fingerprint_key_version, external_key__in=kept,
        ).exclude(pk=record.pk).values_list("external_key", flat=True))
        near: list[str] = []
        if threshold is not None and key in flagged_order:
            distances = _pairwise(features_flagged[[flagged_order.index(key)]], features_kept)[0]
            near = sorted(kept_order[i] for i in np.flatnonzero(distances <= threshold) if kept_order[i] not in copies)
        candidates = set(copies) | set(near)
        same = sorted(DataRecord.objects.filter(dataset=dataset, external_key__in=candidates, subject_id=record.subject_id)
                      .values_list("external_key", flat=True)) if record.subject_id else []
        findings.append(FlagFinding(key, tuple(copies), tuple(near), tuple(same)))
        additions += [{"record_key": k, "of_erased_record": key,
                       "why": "exact copy" if k in copies else "near-duplicate in the model's representation"}
                      for k in same]
    summary = _summary(findings, threshold)
    return {"findings": [f.to_dict() for f in findings], "scope_additions": additions,
            "threshold": threshold, "summary": summary}


def _summary(findings: list[FlagFinding], threshold: float | None) -> str:
    copies = sum(len(f.exact_copies) for f in findings)
    near = sum(len(f.near_duplicates) for f in findings)
    same = sum(len(f.same_person) for f in findings)
    explained = sum(1 for f in findings if f.exact_copies or f.near_duplicates)
    text = (f"Sanity-check flag investigated for {len(findings)} record(s) ("
            + ", ".join(f.record_key for f in findings[:10]) + ("..." if len(findings) > 10 else "")
            + f"): {copies} exact cop{'y' if copies == 1 else 'ies'} by content fingerprint and {near} "
            f"near-duplicate(s) in the model's representation found in the kept data; {explained} of "
            f"{len(findings)} flag(s) explained by them.")
    if threshold is None:
        text += " Near-duplicates were not searched (no held-out records to set the distance threshold)."
    if same:
        text += (f" {same} of them belong to the same person and are offered to the DPO as additions to the "
                 "request's scope.")
    return text


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(squared, 0, None))


def _representation(model, dataset, device: str) -> tuple[np.ndarray, list[str]]:
    """The inputs of the model's output layers (every ``Linear`` whose output is the class
    dimension: one per shard model of an ensemble), concatenated, for each record; a model
    without such layers (a scikit-learn estimator) gives its own through ``representation``."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from workers.training.membership import collate_records

    model = model.to(device).eval()
    if callable(getattr(model, "representation", None)):
        keys, rows = [], []
        for batch_keys, inputs, _targets in DataLoader(dataset, batch_size=256, collate_fn=collate_records):
            if not batch_keys:
                continue
            rows.append(model.representation(inputs.to(device)).double().cpu().numpy())
            keys += list(batch_keys)
        return (np.concatenate(rows), keys) if rows else (np.zeros((0, 0)), [])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear output layer to take a representation from")
    classes = linears[-1].out_features
    heads = [m for m in linears if m.out_features == classes]
    captured: list[torch.Tensor] = []
    hooks = [h.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach().flatten(1).cpu()))
             for h in heads]
    keys, rows = [], []
    try:
        with torch.no_grad():
            for batch_keys, inputs, _targets in DataLoader(dataset, batch_size=256, collate_fn=collate_records):
                captured.clear()
                model(inputs.to(device))
                rows.append(torch.cat(captured, dim=1).double().numpy())
                keys += list(batch_keys)
    finally:
        for hook in hooks:
            hook.remove()
    if not rows:
        return np.zeros((0, 0)), []
    return np.concatenate(rows), keys
