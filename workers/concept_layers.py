"""What a "stop using attribute X" request (concept erasure, LEACE) needs of a model, said without torch.

The web side plans a concept request with these (deletion.concept_requests) and the worker fits the
eraser by them (workers.runners.concept), so both agree on:

* which layer's output holds a model's representations (:func:`representation_layer`): the last
  hidden activation of the platform's own architectures, or the layer the request names;
* which modules a model has (:func:`layer_problem`): said from the stored architecture for the
  platform's own, or read from the names the upload check recorded when it built a company's module
  (:func:`recorded_module_names`); whether the named module's output is [batch, features] is known
  only by running the model, so the worker checks that;
* why a model has none the platform can erase (:func:`concept_erasure_refusal`): a language model,
  a scikit-learn estimator, an MLP without hidden layers, a recipe whose stored versions would drop
  the eraser;
* which labelled records fit the eraser and which the audit's probes are measured on
  (:func:`fitting_split`): a probe measured on the eraser's own fitting records reads below chance
  (audits/checks/concept_probe.py), so the two sets never overlap, and the split is a pure function
  of the record keys and the seed, reproducible by the audit without storing the lists.

The attribute's labels are given by whoever files the request, one integer per record key of the
model's training dataset (any split): the platform never derives a sensitive attribute itself, the
attribute need not be a column of the dataset, and this works the same for every modality and data
source. Plain Python: the web process imports this module.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The layer whose output LEACE erases in the platform's own architectures: the last hidden
# activation, the representation the head reads.
_LAST_HIDDEN = {"small_cnn": "act2", "text_bag": "act0"}
# The recipes whose stored versions keep an eraser (workers.training.plain.SingleModelStorage: the
# eraser's tensors as their own safetensors blob beside the weights). The others rebuild the served
# model from what training kept (sisa, s3t) or store no torch module the eraser could hook into.
ERASER_STORING_RECIPES = ("plain", "plain_regression", "dp", "distill", "finetune", "keep_out_transfer")
# Families whose models are no torch modules: nothing to hook an eraser into.
_NO_TORCH_LAYERS = {"sklearn": "a scikit-learn estimator has no layers whose representations could be erased"}

# The share of the labelled records the eraser is fitted on; the rest are the audit's probe records.
DEFAULT_FIT_SHARE = 2 / 3
# Every attribute value needs this many labelled records: enough for the eraser's fit and for the
# probe's five folds on the held-out records (audits.checks.concept_probe needs one per fold).
MIN_RECORDS_PER_VALUE = 20
MAX_LABELS = 200_000

# An upload check records at most this many module names of a company's model (the first, in
# ``named_modules`` order), with how many it has: a large transformers model has thousands.
MAX_RECORDED_MODULE_NAMES = 2000
# The metrics key of a version that holds them (a version's metrics: JSON the web side reads).
RECORDED_MODULE_NAMES = "module_names"
# A refusal lists every module of a model with up to this many; of a larger one, only the nearest.
LISTED_MODULE_NAMES = 40
NEAREST_MODULE_NAMES = 10


def default_representation_layer(architecture: Mapping[str, Any] | None) -> str | None:
    """The layer whose output holds the representations of a model built from ``architecture`` (the
    platform's ``mlp``: ``act<last hidden>``; ``small_cnn``: ``act2``; ``text_bag``: ``act0``), or
    None where the platform does not know it (a company's own module: the request names the layer)."""
    name = (architecture or {}).get("name")
    if name == "mlp":
        hidden = ((architecture or {}).get("config") or {}).get("hidden", (64, 64))
        return f"act{len(hidden) - 1}" if hidden else None
    return _LAST_HIDDEN.get(name)


def module_names(architecture: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """The names of every module (``model.named_modules()``, less the root) of a model built from
    ``architecture`` by the platform's ``mlp``, ``small_cnn`` or ``text_bag``, in that order, from the
    stored configuration alone (workers.training.architectures builds them; tests hold the two in
    step); None for any other architecture (a company's module, a transformers model: their module
    names are known only once the model is built)."""
    name = (architecture or {}).get("name")
    config = dict((architecture or {}).get("config") or {})
    if name == "mlp":
        hidden = config.get("hidden", (64, 64))
        names = ["flatten"] + (["norm"] if config.get("input_norm", "asinh") in ("asinh", "batchnorm") else [])
        names += [f"{kind}{i}" for i in range(len(hidden)) for kind in ("fc", "act")] + ["head"]
        if (config.get("output_scale", 1.0), config.get("output_shift", 0.0)) != (1.0, 0.0):
            names.append("output")
        return tuple(names)
    if name == "small_cnn":
        return ("conv0", "act0", "pool0", "conv1", "act1", "pool1", "flatten", "fc0", "act2", "head")
    if name == "text_bag":
        return ("embedding", "fc0", "act0", "head")
    return None


def recorded_module_names(names: Iterable[str]) -> dict[str, Any]:
    """What an upload check records of the model it built (``names``: ``model.named_modules()``'s
    names less the root's, in that order) for the web side, which cannot build it: ``{"names": the
    first MAX_RECORDED_MODULE_NAMES, "count": how many there are}`` (a version's metrics
    RECORDED_MODULE_NAMES)."""
    kept, count = [], 0
    for name in names:
        count += 1
        if count <= MAX_RECORDED_MODULE_NAMES:
            kept.append(name)
    return {"names": kept, "count": count}


def layer_problem(architecture: Mapping[str, Any] | None, layer: str,
                  recorded: Mapping[str, Any] | None = None) -> str | None:
    """Why ``layer`` (a module name, as the request gives it) names no module of a model built from
    ``architecture``, listing the ones it has (of a large model, the nearest); None when it does, or
    when the platform cannot tell without building the model: :func:`module_names` is None and the
    upload check recorded no names (``recorded``, from :func:`recorded_module_names`; an older upload),
    or recorded only the first of more names than it keeps. The worker checks the layer then, and
    always checks that its output is [batch, features]: that is not known without running the model."""
    names: Sequence[str] | None = module_names(architecture)
    complete = True
    if names is None and recorded:
        names = list(recorded.get("names") or ())
        complete = len(names) >= int(recorded.get("count") or 0)
    if not layer or names is None or layer in names or not complete:
        return None
    if len(names) <= LISTED_MODULE_NAMES:
        return f"the model has no layer {layer!r}; its layers: {', '.join(names)}"
    return (f"the model has no layer {layer!r}; the nearest of its {len(names):,} modules: "
            f"{', '.join(nearest_module_names(layer, names))}")


def nearest_module_names(layer: str, names: Sequence[str], limit: int = NEAREST_MODULE_NAMES) -> list[str]:
    """Up to ``limit`` of ``names`` (module names) nearest to ``layer``: the most alike by difflib,
    then the modules under the longest dotted prefix of ``layer`` that is a module (``encoder.layer.12``
    of a 12-layer encoder: ``encoder.layer.0`` ...), else the top-level modules."""
    alike = difflib.get_close_matches(layer, names, n=limit, cutoff=0.6)
    parts = layer.split(".")
    known = set(names)
    under: list[str] = []
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in known:
            under = [n for n in names if n.startswith(prefix + ".") and "." not in n[len(prefix) + 1:]]
            break
    if not alike and not under:
        under = [n for n in names if "." not in n]
    return list(dict.fromkeys(alike + under))[:limit]


def concept_erasure_refusal(*, task: str, recipe: str, architecture: Mapping[str, Any] | None,
                            family: str | None, layer: str = "") -> str | None:
    """Why no concept eraser can be fitted to and stored with a model of this ``task``, storage
    ``recipe``, ``architecture`` and model ``family`` (given ``layer``, the one the request names,
    or ""), in words for the API's 400, or None when it can."""
    if task == "language_modeling":
        return ("a language model has no [batch, features] representation layer that LEACE erases here; concept "
                "erasure applies to classifiers and regression models")
    if family in _NO_TORCH_LAYERS:
        return _NO_TORCH_LAYERS[family]
    if recipe not in ERASER_STORING_RECIPES:
        return (f"its versions are stored by the {recipe} recipe, which would drop the eraser when the new version is "
                f"saved; concept erasure takes models of the recipes {', '.join(ERASER_STORING_RECIPES)}")
    if not layer and default_representation_layer(architecture) is None:
        if (architecture or {}).get("name") == "mlp":
            return ("an mlp without hidden layers has no representations: its inputs go straight to the head, "
                    "so there is no layer to erase the attribute from")
        return ("the platform does not know which layer of this architecture holds its representations; name it "
                "in the request (layer: a module name as model.get_submodule reads it)")
    return None


def fitting_split(keys: Iterable[str], *, seed: int, fit_share: float = DEFAULT_FIT_SHARE
                  ) -> tuple[list[str], list[str]]:
    """Split labelled record keys into ``(fit, probe)``, both sorted: a key fits the eraser when the
    first 8 bytes of sha256(``"<seed>:<key>"``), as a fraction of 2^64, are below ``fit_share``. The
    split depends on each key alone, never on which other keys are given."""
    if not 0.0 < fit_share < 1.0:
        raise ValueError(f"fit_share must be in (0, 1), got {fit_share}")
    fit, probe = [], []
    for key in sorted(set(keys)):
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        (fit if int.from_bytes(digest[:8], "big") / 2.0**64 < fit_share else probe).append(key)
    return fit, probe


def label_counts(labels: Mapping[str, int]) -> dict[int, int]:
    """How many records carry each attribute value, by value (ascending)."""
    counts: dict[int, int] = {}
    for value in labels.values():
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def labels_problem(labels: Mapping[str, int], *, seed: int, fit_share: float = DEFAULT_FIT_SHARE) -> str | None:
    """Why these attribute labels (record key -> integer value) cannot fit an eraser and power its
    audit, or None: fewer than two values, or a value with fewer than MIN_RECORDS_PER_VALUE records
    or without records in both the fitting and the probe share."""
    counts = label_counts(labels)
    if len(counts) < 2:
        return (f"the attribute takes {'no value' if not counts else 'a single value'} on the labelled records: "
                "there is nothing to erase (label records of at least two values)")
    scarce = {value: n for value, n in counts.items() if n < MIN_RECORDS_PER_VALUE}
    if scarce:
        return (f"every attribute value needs at least {MIN_RECORDS_PER_VALUE} labelled records (to fit the eraser "
                f"and to probe it on others); too few for: "
                + ", ".join(f"{value} ({n})" for value, n in scarce.items()))
    fit, probe = fitting_split(labels, seed=seed, fit_share=fit_share)
    for share, keys in (("fitting", fit), ("probe", probe)):
        missing = sorted(set(counts) - {labels[k] for k in keys})
        if missing:
            return f"no record of value(s) {missing} falls in the {share} share; label more records"
    return None
