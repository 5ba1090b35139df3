"""What the audit runner measured on one model version, in the form the checks' adapters read.

The runner (worker side) scores the models; each registered check's ``inputs`` adapter
(:class:`~audits.checks.registry.CheckSpec`) picks its arguments out of one of these objects.
Plain data: NumPy arrays and the checks' own record types, no model code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from numpy.typing import NDArray

if TYPE_CHECKING:
    import numpy as np

    from audits.checks.equivalence import DeclaredMargins
    from audits.checks.lm_memorisation import LMRecordMemorisation
    from audits.checks.membership import ShadowReference

ModelKind = Literal["classifier", "language_model"]
MODEL_KINDS: tuple[ModelKind, ...] = get_args(ModelKind)


@dataclass(frozen=True)
class UtilityFigures:
    """One utility metric (``"accuracy"`` or ``"perplexity"``) of the unlearned and the original
    model on the retain and the test set: the arguments of the utility check."""

    metric: str
    retain: float
    test: float
    original_retain: float
    original_test: float


# eq=False: the fields hold arrays, whose == is element-wise.
@dataclass(frozen=True, eq=False)
class ClassifierEvidence:
    """A classifier's scores, all LiRA scores (logit-scaled confidence of the true class, higher =
    member), arrays in ``record_ids`` order for the forget set.

    ``forget_scores``/``original_forget_scores``: the unlearned / original model on the forgotten
    records, on the scale of the shadow models' (see the runner). ``shadow_reference``: the shadow
    models' fit for those records, None with fewer than two shadow models or no records.
    ``equivalence_margins``: the equivalence test's margins as the plan declared them before the
    audit (the audit job's config carries them), None when none were declared.
    ``attack_*``: what the population attack compares (forget set vs held-out records), with the
    signal's name. ``retain_*``/``nonmember_*``: a retain sample and held-out records on the
    unlearned model and (``original_*``) on the original. ``nonmember_null_scores`` /
    ``original_nonmember_null_scores``: the same held-out records on the scale of
    ``forget_scores`` / ``original_forget_scores``; with the shadow models' scores of them (held by
    ``shadow_reference``) they are the per-record test's empirical null. None when not measured.
    """

    model_kind: ClassVar[ModelKind] = "classifier"

    record_ids: tuple[str, ...]
    forget_scores: NDArray[np.float64]
    original_forget_scores: NDArray[np.float64]
    shadow_reference: ShadowReference | None
    equivalence_margins: DeclaredMargins | None
    attack_forget_scores: NDArray[np.float64]
    attack_nonmember_scores: NDArray[np.float64]
    attack_signal: str
    retain_scores: NDArray[np.float64]
    original_retain_scores: NDArray[np.float64]
    nonmember_scores: NDArray[np.float64]
    original_nonmember_scores: NDArray[np.float64]
    utility: UtilityFigures
    nonmember_null_scores: NDArray[np.float64] | None = None
    original_nonmember_null_scores: NDArray[np.float64] | None = None
    # How the shadow models were trained against how the model was (see audits.checks.shadow_procedure).
    shadow_procedure: ShadowProcedure | None = None
    # The logit-scaled confidences before any standardisation, for the tests that need
    # probabilities (RMIA): ``unlearned_conf``/``original_conf`` (forget records), ``reference_conf``
    # (shadow models x forget records, rows as in ``shadow_reference.shadow_out``) and the same three
    # on the held-out records (``population_*``). None when not measured.
    raw_confidences: dict[str, NDArray[np.float64]] | None = None
    # The level each per-record membership test runs at (Holm within the test over the records);
    # the runner divides the family-wise alpha between the per-record tests it runs.
    per_record_alpha: float = 0.05
    # The shadow policy (audits.checks.shadow_policy): shadow models in which each forgotten record
    # was absent, how many shadow models there are, and the minimum the platform (or the model's
    # policy) requires. None: not counted (then nothing statistical can PASS an approximate verdict).
    out_shadow_counts: NDArray[np.int64] | None = None
    shadow_models: int = 0
    min_out_shadows: int = 16


@dataclass(frozen=True)
class ShadowProcedure:
    """Whether the shadow models come from the procedure that trained the audited model, in words:
    ``shadows`` (how they were trained) and ``model`` (how the model was)."""

    same_as_model: bool
    shadows: str
    model: str


@dataclass(frozen=True)
class LanguageModelEvidence:
    """A language model's memorisation of the forgotten records that have a reference (measured
    through the guard for a guarded version), the reference's on the same records, and its
    perplexity figures."""

    model_kind: ClassVar[ModelKind] = "language_model"

    memorisation: tuple[LMRecordMemorisation, ...]
    reference_memorisation: tuple[LMRecordMemorisation, ...]
    utility: UtilityFigures


Evidence = ClassifierEvidence | LanguageModelEvidence
