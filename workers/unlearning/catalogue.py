"""Which unlearning methods exist and what each can unlearn, without importing them.

The web side checks a model's unlearning policy when it is saved (a misspelt method, or one
for the other kind of model, is refused then, not when a deletion's job first runs), and it
must not import torch; the method modules do. tests/workers/test_method_catalogue.py holds this
table to the registry.
"""

from __future__ import annotations

CLASSIFICATION = "classification"
LANGUAGE_MODELING = "language_modeling"

# Approximate methods a policy may name, and the task each applies to.
APPROXIMATE_METHODS: dict[str, str] = {
    "finetune": CLASSIFICATION,
    "neggrad_plus": CLASSIFICATION,
    "scrub": CLASSIFICATION,
    "ssd": CLASSIFICATION,
    "ssd_label_free": CLASSIFICATION,
    "l1_sparse": CLASSIFICATION,
    "salun": CLASSIFICATION,
    "influence": CLASSIFICATION,
    "gradient_ascent": LANGUAGE_MODELING,
    "grad_diff": LANGUAGE_MODELING,
    "npo": LANGUAGE_MODELING,
    "verifier_guard": LANGUAGE_MODELING,
}
# Exact methods: chosen by the planner from the training recipe (sisa, s3t) or as the fallback.
EXACT_METHODS = ("retrain", "sisa", "s3t")


def approximate_methods_for(task: str) -> list[str]:
    """The approximate methods that unlearn models of ``task``, by name."""
    return sorted(name for name, applies_to in APPROXIMATE_METHODS.items() if applies_to == task)


def approximate_method_problem(name: str, task: str | None) -> str | None:
    """Why ``name`` cannot be a policy's approximate method for a model of ``task`` (None: it can)."""
    fitting = approximate_methods_for(task) if task is not None else sorted(APPROXIMATE_METHODS)
    if name in EXACT_METHODS:
        return (f"{name!r} is an exact method; the planner picks it from the training recipe. Name an "
                f"approximate method: {', '.join(fitting)}")
    if name not in APPROXIMATE_METHODS:
        return f"unknown unlearning method {name!r}; known: {', '.join(fitting)}"
    if task is not None and APPROXIMATE_METHODS[name] != task:
        return (f"{name!r} unlearns {APPROXIMATE_METHODS[name].replace('_', ' ')} models, not {task.replace('_', ' ')}; "
                f"for this model: {', '.join(fitting)}")
    return None
