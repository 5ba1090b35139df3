"""U-LiRA in a request's audit: the request's own method run on the shadow models that held the
forgotten records (worker side; torch only inside functions).

For an approximate result the question is not only "does the new version look like a model that
never saw the record" (LiRA against shadows trained from scratch) but whether the METHOD leaves a
trace a retrain does not (Hayes et al., SaTML 2025; :mod:`audits.checks.ulira`). So the unlearning
job's method, with the job's config and a seed of its own per shadow, is run on shadow models that
trained on the records ("unlearned shadows"), and per record their scores are compared with those
of the shadows that never saw it (OUT shadows).

Design "per record": the platform's shadows come in complementary pairs of random halves
(workers.runners.shadow), so with m forgotten records all of them are together in only 2^-m of the
shadows; each IN shadow is unlearned of the forgotten records it held (forget loader: those
records; retain loader: the rest of its membership), and each record is tested on the shadows that
held it. At most ``AUDIT_ULIRA_MAX_SHADOWS`` shadows are unlearned (settings), picked so that the
records are covered as evenly as possible, and no more than fit in ``AUDIT_ULIRA_SECONDS`` (a slow method gets fewer runs and the section says so; a record left with fewer than
``MIN_SHADOWS_PER_SIDE`` unlearned shadows makes the check INCONCLUSIVE, naming the shortfall).

The same runs feed two figures that need several runs of the method and several retrains of the
same examples, which only the shadows give an audit: the NeurIPS 2023 challenge's forgetting score
F (:mod:`audits.checks.challenge_metric`, with its N printed) and KLoM (:mod:`audits.checks.klom`).
Both inform; neither decides a verdict.

Unlearned shadows are derived copies of the records: they are kept in memory for the audit only and
never stored, so there is nothing of them to purge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

DESIGN = "per record"
STORAGE_NOTE = "kept in memory only, none stored"
RETRAINED_STAND_IN = ("the OUT shadow models (trained with the model's recipe on random halves of its training "
                      "records that did not contain the record) stand in for the challenge's retrained models")


def audited_method(job, new) -> dict:
    """What U-LiRA runs on the shadows for the audit ``job`` of version ``new``: ``{"method",
    "config"}`` of the unlearning job that made ``new``, or ``{"not_run": why}`` when none of the
    platform's approximate classifier or regressor methods did (a version made elsewhere, the original presented
    as a result): then there is no method to run."""
    from workers.models import Job, JobKind
    from workers.unlearning.catalogue import CLASSIFIER, METHOD_SPECS, REGRESSOR
    from workers.unlearning.references import SHADOW_REFERENCES

    producer = Job.objects.filter(result_version=new, kind=JobKind.UNLEARN).first()
    if producer is None:
        return {"not_run": "no unlearning job of the platform made this version, so there is no method to run "
                           "on the shadow models"}
    # A regressor's method runs on its shadows the same way (its evidence is scored on the squared error).
    if producer.method not in METHOD_SPECS or METHOD_SPECS.get(producer.method).kind not in (CLASSIFIER, REGRESSOR):
        return {"not_run": f"the method {producer.method!r} is not an approximate method for classifiers or "
                           "regressors"}
    audited = {"method": producer.method, "config": dict(producer.config or {}), "job": producer.id}
    if SHADOW_REFERENCES in METHOD_SPECS.get(producer.method).needs:
        # A method that reads shadow models (oracle matching, DMM) reads the same ones on each audit
        # shadow as it did for the request: its split is by pair number, and the audit's shadows (those
        # it unlearns here and compares with) are the others (audits.runner.shadows_not_read_by_the_method).
        audited["references_from"] = producer.source_version_id
    return audited


def method_context(unlearning: dict, cache: dict) -> dict:
    """The context the audited method needs on a shadow: for a method that reads shadow models, the
    lineage's shadow models of the version it unlearned (``references``, listed once into ``cache``;
    a model's weights load when the method reads it)."""
    if not unlearning.get("references_from"):
        return {}
    if "references" not in cache:
        from models_registry.models import ModelVersion
        from workers.runners.shadow import shadow_references

        cache["references"] = shadow_references(version=ModelVersion.objects.get(pk=unlearning["references_from"]))
    return {"references": cache["references"]}


def plan_unlearned_shadows(shadow_in: np.ndarray, *, cap: int) -> list[int]:
    """Which shadows to unlearn, in the order to run them: at most ``cap`` of those that held a
    forgotten record (``shadow_in``: (shadows, records) bool), each pick the shadow that adds most
    to the least-covered records (sum of 1 / (1 + runs so far) over the records it held), so that a
    run cut short by the time budget still leaves the records covered evenly. Ties: lower index."""
    held = np.asarray(shadow_in, dtype=bool)
    coverage = np.zeros(held.shape[1] if held.ndim == 2 else 0)
    candidates = [i for i in range(held.shape[0]) if held[i].any()] if held.ndim == 2 else []
    order: list[int] = []
    while candidates and len(order) < cap:
        gains = [float((held[i] / (1.0 + coverage)).sum()) for i in candidates]
        best = candidates[int(np.argmax(gains))]
        order.append(best)
        candidates.remove(best)
        coverage += held[best]
    return order


def unlearned_shadow_runs(*, unlearning: dict, shadows: Sequence, shadow_in: np.ndarray, shadow_forget: np.ndarray,
                          shadow_test: Sequence[np.ndarray], target_scores: np.ndarray, forget_keys: Sequence[str],
                          train, forget_ds, test_ds, score: Callable, device: str, progress,
                          budget_seconds: float | None = None, cap: int | None = None,
                          retain_ds=None) -> tuple[dict | None, dict]:
    """Run the audited method on the shadows that held the records and gather what U-LiRA, the
    challenge score and KLoM compare.

    In: ``unlearning`` (:func:`audited_method`); the shadow runs, which of them trained on which
    forgotten record (shadows, records), their raw LiRA scores of the records (shadows, records)
    and of the held-out sample (one array per shadow); the audited model's scores of the records
    on the standardised scale; the train split (records by key), the forgotten records and the
    held-out sample as datasets, ``score(model, dataset)`` (the runner's LiRA score); the time
    budget and the most shadows to unlearn (default: the settings ``AUDIT_ULIRA_SECONDS`` and
    ``AUDIT_ULIRA_MAX_SHADOWS``); ``retain_ds``, a sample of the audited model's kept records, whose
    exposure each run measures before and after the method (the attack AUC of those a shadow trained
    on against the held-out sample). Out: ``(evidence, section)``: the arguments of
    :func:`audits.checks.ulira.unlearning_lira` but the ids and alpha (None when it cannot run), with
    ``"retain"`` (the arguments of :func:`audits.checks.retain_privacy.retain_privacy_ulira`, None
    without ``retain_ds``), and the audit's ``unlearning_lira`` section."""
    from django.conf import settings

    from audits.checks.signals import standardise_on_held_out as standardise

    budget_seconds = settings.AUDIT_ULIRA_SECONDS if budget_seconds is None else budget_seconds
    cap = settings.AUDIT_ULIRA_MAX_SHADOWS if cap is None else cap
    if "not_run" in unlearning:
        return None, {"ran": False, "why": unlearning["not_run"]}
    if cap == 0:
        return None, {"ran": False, "why": "turned off (AUDIT_ULIRA_MAX_SHADOWS is 0)"}
    if not len(shadows):
        return None, {"ran": False, "why": "there are no shadow models to run the method on"}
    held = np.asarray(shadow_in, dtype=bool).reshape(len(shadows), len(forget_keys))
    if not len(forget_keys) or not held.any():
        return None, {"ran": False, "why": "no shadow model held a forgotten record"}
    order = plan_unlearned_shadows(held, cap=cap)
    started = time.perf_counter()
    runs: list[tuple[int, np.ndarray, np.ndarray]] = []  # (shadow, raw scores of the records, standardised)
    stopped = None
    run_seconds: list[float] = []
    retain_auc: list[tuple[float, float, int]] = []  # (before, after, kept records scored) per run
    context_cache: dict = {}  # the lineage's shadow models, for a method that reads them (loaded once)
    for n, index in enumerate(order):
        elapsed = time.perf_counter() - started
        if runs and elapsed + elapsed / len(runs) > budget_seconds:
            stopped = (f"the time budget of {budget_seconds:g} s for the method's runs allowed {len(runs)} of the "
                       f"{len(order)} planned (about {elapsed / len(runs):.1f} s each)")
            break
        stage = f"unlearning shadow model {n + 1} of {len(order)} (U-LiRA)"
        try:
            model, members, retain_before = _unlearned_shadow(
                unlearning, shadows[index], [k for k, h in zip(forget_keys, held[index], strict=True) if h],
                train=train, seed_offset=index, device=device, context_cache=context_cache,
                before=None if retain_ds is None else (lambda m: score(m, retain_ds)),
                progress=lambda _stage, f, n=n, stage=stage: progress(stage, 0.7 + 0.05 * (n + f) / len(order)))
        except (ValueError, FloatingPointError) as exc:  # refused this shadow's data, or diverged on it: say so
            stopped = f"the method failed on shadow model {index} after {len(runs)} run(s): {exc}"
            break
        raw, test_after = score(model, forget_ds), score(model, test_ds)
        runs.append((index, raw, standardise(raw, test_after)[0]))
        if retain_ds is not None:
            retain_auc.append(_retain_exposure(retain_before, score(model, retain_ds), retain_ds, members,
                                               np.asarray(shadow_test[index]), test_after))
        del model  # a derived copy of the records: never stored
        run_seconds.append(round(time.perf_counter() - started - sum(run_seconds), 2))
    seconds = round(time.perf_counter() - started, 2)
    unlearned_index = [i for i, _, _ in runs]
    unlearned_held = held[unlearned_index]
    out_mask = ~held
    out_z = np.array([standardise(sc, te)[0] for sc, te in zip(shadow_forget, shadow_test, strict=True)])
    kept = [r for r in retain_auc if r[2] > 0]
    evidence = {
        "retain": {"auc_before": np.array([b for b, _, _ in kept]), "auc_after": np.array([a for _, a, _ in kept]),
                   "retain_records": np.array([n for _, _, n in kept])} if retain_ds is not None else None,
        "design": DESIGN, "target_scores": np.asarray(target_scores, dtype=np.float64),
        "unlearned_shadow_scores": np.array([z for _, _, z in runs]).reshape(len(runs), len(forget_keys)),
        "unlearned_shadow_held": unlearned_held, "out_shadow_scores": out_z, "out_shadow_mask": out_mask,
    }
    unlearned_raw = np.array([r for _, r, _ in runs]).reshape(len(runs), len(forget_keys))
    per_record_u, per_record_o = unlearned_held.sum(axis=0), out_mask.sum(axis=0)
    section = {
        "ran": True, "design": DESIGN, "method": unlearning["method"], "method_config": unlearning["config"],
        "unlearning_job": unlearning.get("job"),
        "method_read": ("the shadow models it read for the request (by pair number), never those it is run on or "
                        "compared with here" if unlearning.get("references_from") else "no shadow model"),
        "seeds": "the job's config with a seed of its own per shadow (the config's seed + 1 + the shadow's index)",
        "unlearned_shadows": len(runs), "in_shadows": int(held.any(axis=1).sum()), "planned": len(order), "cap": cap,
        "budget_seconds": budget_seconds, "seconds": seconds, "stopped": stopped,
        "storage": f"unlearned shadows: {len(runs)}, {STORAGE_NOTE}",
        "unlearned_per_record": {"min": int(per_record_u.min()), "max": int(per_record_u.max())},
        # After each run in turn: its seconds, and the fewest unlearned shadows any record had then.
        "run_seconds": run_seconds,
        "min_runs_per_record": np.cumsum(unlearned_held, axis=0).min(axis=1).astype(int).tolist(),
        # The kept records' exposure before and after each run (retain_privacy_ulira decides on it).
        "retain_exposure": None if retain_ds is None else {
            "retain_sample": len(retain_ds), "runs": len(kept),
            "auc_before": [round(b, 4) for b, _, _ in kept], "auc_after": [round(a, 4) for _, a, _ in kept]},
        "out_per_record": {"min": int(per_record_o.min()), "max": int(per_record_o.max())},
        **_run_figures(unlearned_raw, unlearned_held, np.asarray(shadow_forget, dtype=np.float64), out_mask,
                       forget_keys),
    }
    return evidence, section


def _retain_exposure(before: np.ndarray, after: np.ndarray, retain_ds, members: set[str], test_before: np.ndarray,
                     test_after: np.ndarray) -> tuple[float, float, int]:
    """The threshold attack's AUC of the kept records a shadow trained on (``members`` among
    ``retain_ds``'s keys) against the held-out sample, before and after the method, and how many
    kept records it scored ((nan, nan, 0) when it trained on none of them)."""
    from audits.checks.stats import attack_auc

    held = np.array([key in members for key in retain_ds.record_keys], dtype=bool)
    if not held.any() or not len(test_before) or not len(test_after):
        return float("nan"), float("nan"), 0
    return attack_auc(before[held], test_before), attack_auc(after[held], test_after), int(held.sum())


def _unlearned_shadow(unlearning: dict, run, held_keys: list[str], *, train, seed_offset: int, device: str,
                      progress, before: Callable | None = None, context_cache: dict | None = None):
    """The shadow of ``run``, loaded from the store, unlearned of ``held_keys`` by the audited
    method (retain: the rest of its membership); in memory only. ``progress`` is the method's (the
    job's heartbeat, and its cancellation); ``before(model)``, when given, is computed on the shadow
    as trained, before the method runs; ``context_cache`` keeps what :func:`method_context` loaded
    between shadows. Out: (the unlearned model, the shadow's membership keys, ``before``'s value or None)."""
    from torch.utils.data import DataLoader

    from models_registry.models import ArtifactKind, ArtifactStatus, StoredArtifact
    from workers.runners.storage import artifact_store
    from workers.runners.unlearning import LOADER_BATCH
    from workers.training.membership import collate_records
    from workers.training.storage import load_run
    from workers.unlearning.base import METHODS
    from workers.unlearning.methods import load_all_methods

    load_all_methods()
    artifact = StoredArtifact.objects.get(training_run=run, kind=ArtifactKind.SHADOW_MODEL,
                                          status=ArtifactStatus.PRESENT)
    shadow = load_run(artifact_store(), artifact.sha256)
    forget = set(held_keys)
    members = {row.record_key for row in shadow.membership}
    measured = before(shadow.model) if before is not None else None
    retain = sorted(key for key in members if key not in forget)
    config = dict(unlearning["config"])
    config["seed"] = int(config.get("seed", 0)) + 1 + seed_offset
    method = METHODS.get(unlearning["method"])(config)
    model, _ = method.unlearn(
        shadow.model, DataLoader(train.subset(sorted(forget)), batch_size=LOADER_BATCH, collate_fn=collate_records),
        DataLoader(train.subset(retain), batch_size=LOADER_BATCH, shuffle=False, collate_fn=collate_records),
        device=device, progress=progress, **method_context(unlearning, context_cache))
    return model.eval(), members, measured


def _run_figures(unlearned: np.ndarray, unlearned_held: np.ndarray, out: np.ndarray, out_mask: np.ndarray,
                 forget_keys: Sequence[str]) -> dict:
    """The challenge score F and KLoM over the records with at least 3 runs on each side, each
    record's first N runs per side (N: the fewest any of them has, so that every record rests on as
    many runs as the challenge asks: N unlearned and N retrained), on the raw logit-scaled
    confidence (log p_y - log(1 - p_y) = z_y - logsumexp of the other logits, which is also KLoM's
    margin)."""
    from audits.checks.challenge_metric import challenge_forget_score
    from audits.checks.klom import klom

    counts = np.minimum(unlearned_held.sum(axis=0), out_mask.sum(axis=0))
    kept = np.flatnonzero(counts >= 3)
    if not len(kept):
        why = "no record has 3 unlearned and 3 OUT shadow runs (the challenge's buckets need N >= 3)"
        return {"challenge_metric": {"computed": False, "why": why}, "klom": {"computed": False, "why": why}}
    n = int(counts[kept].min())
    u = np.array([unlearned[unlearned_held[:, j], j][:n] for j in kept]).T
    r = np.array([out[out_mask[:, j], j][:n] for j in kept]).T
    keys = [str(forget_keys[j]) for j in kept]
    try:
        score, divergence = challenge_forget_score(u, r), klom(u, r)
    except ValueError as exc:  # degenerate samples (every run alike): no figure, and why
        return {"challenge_metric": {"computed": False, "why": str(exc)}, "klom": {"computed": False, "why": str(exc)}}
    left_out = len(forget_keys) - len(kept)
    scope = (f"{len(kept)} of {len(forget_keys)} record(s), N = {n} unlearned and N = {n} OUT shadow runs each"
             + (f" ({left_out} record(s) with fewer than 3 runs on a side left out)" if left_out else ""))
    return {
        "challenge_metric": {"computed": True, "F": score.score, "N": n, "records": keys,
                             "epsilons": score.epsilons.round(4).tolist(), "summary": score.summary(),
                             "scope": scope, "retrained": RETRAINED_STAND_IN},
        "klom": {"computed": True, "N": n, "records": keys, "bins": divergence.bins,
                 "per_example": divergence.per_example.round(4).tolist(), "percentiles": divergence.percentiles,
                 "summary": divergence.summary(), "scope": scope},
    }


def ulira_notes(section: dict | None) -> list[str]:
    """What the report says of the U-LiRA runs: the design and counts, the challenge score with its
    N, KLoM, and that the unlearned shadows were never stored; or why U-LiRA did not run."""
    if not section:
        return []
    if not section.get("ran"):
        return [f"U-LiRA (the method run on shadow models that held the records) did not run: {section.get('why')}."]
    notes = [f"U-LiRA ({section['design']}): the method {section['method']} was run on {section['unlearned_shadows']} "
             f"shadow model(s) that held the erased records ({section['unlearned_per_record']['min']}-"
             f"{section['unlearned_per_record']['max']} per record, against {section['out_per_record']['min']}-"
             f"{section['out_per_record']['max']} that never saw it) in {section['seconds']} s; "
             f"{section['storage']}."]
    if section.get("method_read", "no shadow model") != "no shadow model":
        notes.append(f"The method reads shadow models itself: on each shadow it read {section['method_read']}.")
    if section.get("stopped"):
        notes.append(f"U-LiRA ran on fewer shadow models than planned: {section['stopped']}.")
    exposure = section.get("retain_exposure") or {}
    if exposure.get("runs"):
        before, after = np.mean(exposure["auc_before"]), np.mean(exposure["auc_after"])
        notes.append(f"The kept records over the same runs (a sample of {exposure['retain_sample']}): the membership "
                     f"attack's AUC on those each shadow trained on went from {before:.3f} before the method to "
                     f"{after:.3f} after, on average over {exposure['runs']} run(s) (retain_privacy_ulira; warns, "
                     "does not decide the verdict).")
    for key, label in (("challenge_metric", "NeurIPS 2023 challenge score"), ("klom", "KLoM")):
        figure = section.get(key) or {}
        if figure.get("computed"):
            notes.append(f"{label} (informs, does not decide the verdict): {figure['summary']}; {figure['scope']}.")
        elif figure:
            notes.append(f"{label} not computed: {figure['why']}.")
    return notes
