"""scikit-learn classifiers and pipelines (preprocessing included), uploaded as a skops file.

Architecture: ``{"name": "sklearn", "config": {"in_features": F, "num_classes": C}}``. The body is
what ``skops.io.dump`` wrote: one fitted classifier (recipe ``sklearn``) or a list of S fitted
classifiers with the same parameters, one per shard (recipe ``sklearn_sisa``; the training run
records ``shards`` = S and the ``shard_key`` its pipeline assigned records with, and its imported
membership must put each record where that keyed hash does). Nothing is unpickled: the file is
loaded only when every type it names is on the allow-list (workers.training.sklearn_estimators).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workers.model_families.base import CheckedUpload, ModelFamily, UploadRefused

APPROXIMATE_METHODS_REFUSED = (
    "a scikit-learn estimator has no gradients to fine-tune or ascend, so the approximate methods do not "
    "apply to it; its deletions are exact: a full retrain (a refit of the pipeline on the kept records) or, "
    "for the sklearn_sisa recipe, a refit of the affected shards. Leave approximate_method out of the policy")


class ScikitLearn(ModelFamily, name="sklearn"):
    architectures = ("sklearn",)
    approximate_methods_refused = APPROXIMATE_METHODS_REFUSED

    def architecture_problem(self, architecture: Mapping[str, Any], task: str | None) -> str | None:
        if task is not None and task != "classification":
            return f"scikit-learn models are registered for classification, not {task}"
        spec = architecture.get("config")
        if not isinstance(spec, Mapping) or set(spec) != {"in_features", "num_classes"}:
            return 'a scikit-learn architecture is {"name": "sklearn", "config": {"in_features": F, "num_classes": C}}'
        for key, low in (("in_features", 1), ("num_classes", 2)):
            if not isinstance(spec[key], int) or isinstance(spec[key], bool) or spec[key] < low:
                return f"architecture.config.{key} must be an integer >= {low}"
        return None

    def check_upload(self, data: bytes, *, architecture: Mapping[str, Any], task: str,
                     run_config: Mapping[str, Any]) -> CheckedUpload:
        from workers.training.sklearn_estimators import (
            SklearnConfig,
            SklearnSisaConfig,
            SkopsRefused,
            dump_skops,
            load_skops,
            skops_to_tensors,
            template_of,
        )

        if task != "classification":
            raise UploadRefused(f"scikit-learn models are registered for classification, not {task}",
                                code="architecture_mismatch")
        spec = dict(architecture.get("config") or {})
        try:
            loaded = load_skops(data, source="the uploaded file")
        except SkopsRefused as exc:
            raise UploadRefused(str(exc), code=exc.code) from None
        ensemble = isinstance(loaded, list)
        estimators = loaded if ensemble else [loaded]
        if ensemble and not estimators:
            raise UploadRefused("the uploaded list holds no estimator", code="architecture_mismatch")
        for index, estimator in enumerate(estimators):
            _check_classifier(estimator, spec, what=f"estimator {index} of the list" if ensemble else "the estimator")
        _check_same_parameters(estimators)
        config: dict[str, Any] = {"architecture": dict(architecture), "estimator": template_of(estimators[0])}
        if "seed" in run_config:
            config["seed"] = run_config["seed"]
        if ensemble:
            missing = [k for k in ("shards", "shard_key") if k not in run_config]
            if missing:
                raise UploadRefused(f"a list of estimators is a SISA ensemble: the training run must record "
                                    f"{' and '.join(missing)} (the number of shards and the HMAC key its pipeline "
                                    "assigned records to shards with)", code="architecture_mismatch")
            if run_config["shards"] != len(estimators):
                raise UploadRefused(f"the training run records {run_config['shards']} shards; the upload holds "
                                    f"{len(estimators)} estimators", code="architecture_mismatch")
            config.update(shards=run_config["shards"], shard_key=run_config["shard_key"])
        (SklearnSisaConfig if ensemble else SklearnConfig).from_dict(config)  # refuses bad values now
        # Stored as written here from the checked objects, not as uploaded.
        stored = dump_skops(list(estimators) if ensemble else estimators[0])
        return CheckedUpload(blobs={"estimator": skops_to_tensors(stored)},
                             recipe="sklearn_sisa" if ensemble else "sklearn", recipe_config=config,
                             architecture=dict(architecture),
                             extra={"estimator": _describe(estimators[0]), "estimators": len(estimators)})

    def check_membership(self, checked: CheckedUpload, membership: Sequence[Any]) -> None:
        """A sklearn_sisa upload's membership must follow the keyed hash its recipe refits with."""
        from workers.training.sklearn_estimators import membership_shards_problem

        if checked.recipe != "sklearn_sisa":
            return
        problem = membership_shards_problem(membership, shard_key=checked.recipe_config["shard_key"],
                                            shards=checked.recipe_config["shards"])
        if problem:
            raise UploadRefused(f"the training run's membership does not fit its SISA ensemble: {problem}",
                                code="membership_mismatch")


def _check_classifier(estimator: Any, spec: Mapping[str, Any], *, what: str) -> None:
    """A fitted classifier with predict_proba that takes ``in_features`` inputs and predicts
    classes among 0..num_classes-1."""
    import numpy as np
    from sklearn.base import is_classifier
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not is_classifier(estimator):
        raise UploadRefused(f"{what} is a {type(estimator).__name__}, not a scikit-learn classifier",
                            code="architecture_mismatch")
    if not hasattr(estimator, "predict_proba"):
        raise UploadRefused(f"{what} ({type(estimator).__name__}) has no predict_proba, which the audit scores "
                            "(for SVC: probability=True)", code="architecture_mismatch")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise UploadRefused(f"{what} ({type(estimator).__name__}) is not fitted: upload the estimator the "
                            "training run fitted", code="architecture_mismatch") from None
    features, classes = spec.get("in_features"), spec.get("num_classes")
    if getattr(estimator, "n_features_in_", None) != features:
        raise UploadRefused(f"{what} takes {getattr(estimator, 'n_features_in_', '?')} features; the architecture "
                            f"registers in_features={features}", code="architecture_mismatch")
    labels = np.asarray(getattr(estimator, "classes_", []))
    if labels.dtype.kind not in "iub" or not isinstance(classes, int) or labels.min(initial=0) < 0 \
            or labels.max(initial=0) >= classes:
        raise UploadRefused(f"{what} predicts classes {labels.tolist()[:10]}; the architecture registers "
                            f"num_classes={classes} (integer labels 0..{classes - 1 if isinstance(classes, int) else '?'})",
                            code="architecture_mismatch")


def _check_same_parameters(estimators: list[Any]) -> None:
    """Every shard's estimator has the parameters of the first: a refit uses the first's."""
    first = _parameters(estimators[0])
    for index, estimator in enumerate(estimators[1:], start=1):
        if _parameters(estimator) != first:
            raise UploadRefused(f"estimator {index} of the list has other parameters than estimator 0: a shard "
                                "refit could not follow the procedure that fitted it", code="architecture_mismatch")


def _parameters(estimator: Any) -> str:
    """The estimator's parameters, nested ones included, as comparable text."""
    from sklearn.base import BaseEstimator

    def text(value: Any) -> str:
        if isinstance(value, BaseEstimator):
            return f"{type(value).__module__}.{type(value).__qualname__}({_parameters(value)})"
        if isinstance(value, list | tuple):
            return "[" + ", ".join(text(v) for v in value) + "]"
        return repr(value)

    params = estimator.get_params(deep=False)
    return ", ".join(f"{name}={text(params[name])}" for name in sorted(params))


def _describe(estimator: Any) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        return "Pipeline(" + " -> ".join(type(step).__name__ for _, step in steps) + ")"
    return type(estimator).__name__
