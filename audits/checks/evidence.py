"""What the audit runner measured on one model version, in the form the checks' adapters read.

The runner (worker side) scores the models; each registered check's ``inputs`` adapter
(:class:`~audits.checks.registry.CheckSpec`) picks its arguments out of one of these objects.
Plain data: NumPy arrays and the checks' own record types, no model code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from numpy.typing import NDArray

if TYPE_CHECKING:
    import numpy as np

    from audits.checks.equivalence import DeclaredMargins
    from audits.checks.lm_memorisation import LMRecordMemorisation
    from audits.checks.membership import ShadowReference

ModelKind = Literal["classifier", "language_model"]
MODEL_KINDS: tuple[ModelKind, ...] = get_args(ModelKind)

# The kind of model a plan names (the unlearning catalogue's words) -> the evidence its audit builds.
# A regression model is audited with classifier evidence whose per-record signal is its log-scaled
# squared error (audits.runner; RMIA is left out for it, and the audit says why), so the checks that
# apply to classifiers are the ones a plan can count on for it.
EVIDENCE_KIND_OF_MODEL: dict[str, ModelKind] = {
    "classifier": "classifier", "regressor": "classifier", "language_model": "language_model"}


def evidence_kind_of(model_kind: str) -> ModelKind:
    """The evidence kind (:data:`ModelKind`) the audit builds for a ``model_kind`` model
    (``"classifier"``, ``"regressor"`` or ``"language_model"``); ``ValueError`` for another."""
    if model_kind not in EVIDENCE_KIND_OF_MODEL:
        raise ValueError(f"unknown model kind {model_kind!r}; known: {', '.join(EVIDENCE_KIND_OF_MODEL)}")
    return EVIDENCE_KIND_OF_MODEL[model_kind]


# The utility check's bar when no policy declares one: five per cent relative loss (the ratio of the
# unlearned model's metric to the original's, 1 = as good). A model's policy declares its own
# (``unlearning_policy.min_utility_ratio``); the plan states it before any score is seen.
DEFAULT_MIN_UTILITY_RATIO = 0.95


@dataclass(frozen=True)
class UtilityFigures:
    """One utility metric (``"accuracy"``, ``"perplexity"``, ``"rmse"``) of the unlearned and the
    original model on the retain and the test set, and the bar the plan declared: the arguments of
    the utility check."""

    metric: str
    retain: float
    test: float
    original_retain: float
    original_test: float
    min_ratio: float = DEFAULT_MIN_UTILITY_RATIO


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
    # The level each per-record membership test runs at (Holm within the test over the records)
    # where the family-wise level was not split (``check_alpha`` None: evidence not assembled by the
    # audit runner).
    per_record_alpha: float = 0.05
    # Each statistical check's share of the audit's family-wise level, by check name: the checks that
    # can FAIL the verdict at a stated level and that this evidence supports split it (Bonferroni over
    # the checks; each holds its share over its own records or figures), the equivalence test keeping
    # the alpha the plan declared (audits.checks.verdict.with_family_alpha fills it). None: not split.
    check_alpha: Mapping[str, float] | None = None
    # The shadow policy (audits.checks.shadow_policy): shadow models in which each forgotten record
    # was absent, how many shadow models there are, and the minimum the platform (or the model's
    # policy) requires. None: not counted (then nothing statistical can PASS an approximate verdict).
    out_shadow_counts: NDArray[np.int64] | None = None
    shadow_models: int = 0
    min_out_shadows: int = 16
    # U-LiRA (audits.checks.ulira): the audited method run on the shadows that held the records,
    # as the check's arguments but the ids and alpha (``design``, ``target_scores``,
    # ``unlearned_shadow_scores``/``_held``, ``out_shadow_scores``/``_mask``). None: not run (not
    # an approximate result, no method known, no shadows).
    ulira: dict[str, Any] | None = None
    # The same runs' effect on the records that stay (audits.checks.retain_privacy.retain_privacy_ulira):
    # per unlearned shadow, the attack AUC of the kept records it trained on before and after the method
    # (``auc_before``, ``auc_after``) and how many it scored (``retain_records``). None: not measured.
    ulira_retain: dict[str, Any] | None = None
    # Canaries planted in the model's training (recorded in its lineage as such), scored like the
    # forget records: the pipeline's demonstrated power (audits.checks.power.canary_power). None
    # where none were planted. Never a stand-in for the forget records' own power.
    canaries: CanaryEvidence | None = None
    # For an approximate result: models retrained without the forget set and derived controls, and
    # what the representation and relearning checks compare of them (audits.forget_references).
    # None: not measured (another guarantee class); its ``not_applicable`` says why the checks do
    # not apply (random records rather than a class or sub-population, say).
    forget_references: ForgetReferenceFigures | None = None

    def alpha_share(self, name: str) -> float:
        """The level check ``name`` runs at: its share of the family-wise level where it was split,
        else ``per_record_alpha``."""
        if self.check_alpha is not None and name in self.check_alpha:
            return float(self.check_alpha[name])
        return self.per_record_alpha


@dataclass(frozen=True, eq=False)
class ForgetReferenceFigures:
    """What the representation and relearning checks read, measured for a class or sub-population
    forget set. Representations: (inputs, features) of the same inputs (the forgotten records,
    ``is_forget`` True, and held-out records of other labels) for the original, the unlearned model,
    each retrained reference and each derived control. Recoveries: budget name -> accuracy on the
    forgotten records after fine-tuning on held-out forget-like examples, for the unlearned model
    and each reference. ``not_applicable`` (both checks) and ``relearning_not_applicable`` say why
    a check does not apply; the figures are None then."""

    not_applicable: str | None = None
    relearning_not_applicable: str | None = None
    original_representation: NDArray[np.float64] | None = None
    unlearned_representation: NDArray[np.float64] | None = None
    reference_representations: tuple[NDArray[np.float64], ...] = ()
    control_representations: tuple[NDArray[np.float64], ...] = ()
    is_forget: NDArray[np.bool_] | None = None
    unlearned_recovery: dict[str, float] | None = None
    reference_recovery: tuple[dict[str, float], ...] = ()


@dataclass(frozen=True, eq=False)
class CanaryEvidence:
    """The planted canaries' ids, the original model's scores on them (on the forget scores' scale)
    and the shadow models' fit for them (the shadows trained on halves of the same data, canaries
    included); ``original_nonmember_null_scores`` as for the forget records."""

    record_ids: tuple[str, ...]
    original_scores: NDArray[np.float64]
    reference: ShadowReference
    original_nonmember_null_scores: NDArray[np.float64] | None = None


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
    # The LM audit's own reference policy (audits.checks.shadow_policy.lm_reference_policy): every
    # forgotten record's id, how many held-out records of its format it was compared with (the LM
    # audit's "never saw it" reference: it trains no shadow models), and the minimum required
    # (setting AUDIT_LM_MIN_REFERENCES). None: not counted.
    reference_record_ids: tuple[str, ...] | None = None
    references_per_record: tuple[int, ...] | None = None
    min_references: int = 4


Evidence = ClassifierEvidence | LanguageModelEvidence
