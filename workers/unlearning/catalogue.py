"""Every unlearning method the platform knows, declared once, without importing it.

A method is declared here by one :class:`MethodSpec` (one line below) and implemented by one
module whose class names the method in its class statement, which registers it
(``class Finetune(LossMethod, name="finetune")``, see :class:`workers.unlearning.base.UnlearningMethod`).
Everything else reads the declarations: the loader imports
the modules they name, the web side checks a model's unlearning policy against them when it is
saved (without importing torch, which the method modules do), the planner takes a method's
guarantee class from them, and the unlearning job decides from a method's kind how to call it.
tests/workers/test_method_catalogue.py holds the declarations and the registered classes equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from foundation.registry import Registry

# What a method may promise (DESIGN.md, "Guarantee classes"). ``exact_attested`` is no method of
# the platform's: the company's own pipeline retrained without the records and declared so, and the
# platform checked that declaration (deletion.external_retrain).
# ``concept_erased`` is about an attribute (a feature), not a person: a "stop using attribute X" request.
GUARANTEE_CLASSES = ("exact", "dp_bounded", "approximate", "suppressed", "exact_attested", "concept_erased")
# From the strongest promise to the weakest: a model derived from another promises at most what the
# version it was re-derived from promises (weakest_guarantee).
GUARANTEE_STRENGTH = ("exact", "exact_attested", "dp_bounded", "approximate", "suppressed", "concept_erased")


def concept_not_a_persons_erasure(holds_against: str) -> str:
    """Why a concept erasure never counts as a person's erasure, naming the probes its method's guarantee
    holds against (``MethodSpec.holds_against``; deletion.concept_requests gives each method's)."""
    return (f"concept erasure is not erasure of anyone's data: it stops read-outs of an attribute by "
            f"{holds_against}, and the records stay in the weights (choose an exact or approximate method to "
            "erase a person)")


CLASSIFICATION = "classification"
LANGUAGE_MODELING = "language_modeling"
REGRESSION = "regression"

REPLAY_WHEN = ("", "every audit", "on request")
# What a method may need the unlearning job to hand it (MethodSpec.needs).
METHOD_NEEDS = ("shadow_references",)

# What a method works on, which decides how an unlearning job calls it.
CLASSIFIER = "classifier"  # an nn.Module, loaders of (keys, inputs, targets) batches -> a new module
LANGUAGE_MODEL = "language_model"  # a causal LM, LM batches of the forget/retain texts -> a new LM
GUARD = "guard"  # a causal LM, the forgotten texts -> the same weights behind a keyed, calibrated guard
TRAINING_RUN = "training_run"  # the stored TrainingRun, forget keys, retain set -> a new TrainingRun
CONCEPT = "concept"  # a model, batches of (keys, inputs, attribute labels) -> the model with the attribute erased
# What LEACE's guarantee holds against; a concept method that holds beyond it is class-conditional (its
# eraser needs each input's attribute at inference, and its non-linear probe decides too).
LINEAR_PROBES_ONLY = "linear probes only"

# The classes that never count as erasure of a person's data, whatever their audit says, and why in the
# plan's words (audits.checks.registry.audit_cannot_confirm): the weights still hold the data
# (suppressed), or what was erased is an attribute, not anyone's records (concept_erased).
NOT_A_PERSONS_ERASURE: dict[str, str] = {
    "suppressed": ("suppression is not erasure: the weights keep the data, so the DPO decides whether to "
                   "accept it (or choose an exact method)"),
    "concept_erased": concept_not_a_persons_erasure(LINEAR_PROBES_ONLY),  # the class's floor: LEACE's
}

REGRESSOR = "regressor"  # as CLASSIFIER, but the module predicts one real number per input (MSE-trained)
# The task of the models a policy may name a method of each kind for; None: the planner picks
# methods of that kind, never a policy.
TASK_OF_KIND: dict[str, str | None] = {
    CLASSIFIER: CLASSIFICATION,
    LANGUAGE_MODEL: LANGUAGE_MODELING,
    GUARD: LANGUAGE_MODELING,
    REGRESSOR: REGRESSION,
    TRAINING_RUN: None,
    CONCEPT: None,
}


@dataclass(frozen=True)
class MethodSpec:
    """What the platform knows of a method before importing it.

    ``module`` is the module whose import registers the method's class. ``recipe``: the training
    recipe whose runs the planner unlearns with this method (they keep what it needs: shards,
    adapters). ``from_scratch``: the method trains afresh from the recipe and reads none of the
    source version's weights, so it may unlearn from a guarded version, whose weights still hold
    the records its guard suppresses.
    """

    name: str
    kind: str
    guarantee_class: str
    module: str
    recipe: str | None = None
    from_scratch: bool = False
    # What the method promises when its guarantee class's general words would say more (the report
    # prints this instead of the class's promise).
    promise: str | None = None
    # The independent replay of an exact result (workers.unlearning.exact.replay): "every audit",
    # "on request" (it costs what ``replay_cost`` says, shown in the plan), or "" (none).
    replay: str = ""
    replay_cost: str = ""
    # A method that re-derives a child from its parent's unlearned version: the lineage edge kind
    # (distilled_from, fine_tuned_from) of the children it takes. Its class is capped by the parent's.
    rederives: str = ""
    # The models it applies to, in words the plan can show ("": every model of its kind's task).
    applies_to: str = ""
    # What one run costs, for planning before the model has a history of jobs ("": not declared).
    cost: str = ""
    # It forgets whole classes only: the forget set must be every training record of one class.
    whole_class_only: bool = False
    # What the unlearning job must hand the method beyond the model and the two loaders (METHOD_NEEDS):
    # "shadow_references" = the lineage's shadow models, as the context key ``references``.
    needs: tuple[str, ...] = ()
    # What the report must say of every version the method makes, under its limitations ("": nothing),
    # e.g. that the new version keeps its parent's weights and hides the records from its outputs only.
    report_limitation: str = ""
    # A concept method's guarantee: what kind of probe it holds against, in the plan's and report's words
    # (required for kind concept, e.g. "linear probes only"; audits.concept_audit decides on those probes).
    holds_against: str = ""

    @property
    def beyond_linear_probes(self) -> bool:
        """Whether a concept method promises more than linear undecodability: its eraser is class-conditional
        (needs each input's attribute at inference) and the non-linear probe decides too."""
        return self.kind == CONCEPT and self.holds_against != LINEAR_PROBES_ONLY

    def __post_init__(self) -> None:
        if self.kind not in TASK_OF_KIND:
            raise ValueError(f"unlearning method {self.name!r}: unknown kind {self.kind!r}")
        if self.guarantee_class not in GUARANTEE_CLASSES:
            raise ValueError(f"unlearning method {self.name!r}: unknown guarantee class {self.guarantee_class!r}")
        if (self.guarantee_class == "concept_erased") != (self.kind == CONCEPT):
            raise ValueError(f"unlearning method {self.name!r}: concept_erased is the class of concept erasure "
                             "methods (kind concept) and of no other")
        if self.kind == CONCEPT and not self.holds_against:
            raise ValueError(f"unlearning method {self.name!r}: a concept method must say what its guarantee holds "
                             "against (holds_against)")
        if self.guarantee_class == "exact_attested":
            raise ValueError(f"unlearning method {self.name!r}: exact_attested is what the company's own pipeline "
                             "declares, never a method the platform runs")
        if self.replay not in REPLAY_WHEN or (self.replay and self.guarantee_class != "exact"):
            raise ValueError(f"unlearning method {self.name!r}: replay must be one of {REPLAY_WHEN}, for exact methods")
        unknown_needs = sorted(set(self.needs) - set(METHOD_NEEDS))
        if unknown_needs:
            raise ValueError(f"unlearning method {self.name!r}: unknown need(s) {', '.join(unknown_needs)}; "
                             f"known: {', '.join(METHOD_NEEDS)}")

    @property
    def task(self) -> str | None:
        """The task of the models a policy may name this method for (None: not a policy's choice)."""
        return TASK_OF_KIND[self.kind]


METHOD_SPECS: Registry[MethodSpec] = Registry("unlearning method")

S3T_PROMISE = (
    "Every adapter in service was trained only on data that never contained the records: the adapter "
    "trained on a slice that held them, and every later adapter of its ordering, were switched off and "
    "deleted. It is NOT the model a retrain on the kept data would give: the served model learned from "
    "fewer of the kept records (the figure 'Kept records the served model learned from' says how many), "
    "which can cost accuracy. Every older copy of the model that was trained on the records has been deleted."
)

S3T_RETRAIN_PROMISE = (
    "Every adapter in service was trained only on data that never contained the records: the adapter "
    "trained on a slice that held them, and every later adapter of its ordering, were deleted and trained "
    "again, from the last adapter before them, on the kept records of their slices, with the seeds and in "
    "the order the first training used. The served model again learned from every kept record, as a "
    "retrain on the kept data does ('Kept records the served model learned from' says how many). Every "
    "older copy of the model that was trained on the records has been deleted."
)


KEEP_OUT_PROMISE = (
    "The erased records never entered training: the model was trained on the company's static records and on "
    "auxiliary examples (a pool the company names, with their own labels) that its non-static records selected. The erased "
    "records' selections were dropped. Where every auxiliary example they selected is still selected by another "
    "record, the training set is unchanged and so is the model (the same weights); otherwise the model was "
    "retrained on the new selection. Either way every weight in service was computed from data without the "
    "erased records, and every older copy of the model that depended on them has been deleted."
)


def method_declare(spec: MethodSpec) -> MethodSpec:
    """Declare a method (a name declared twice raises ``ValueError``)."""
    return METHOD_SPECS.register(spec.name)(spec)


# One line per method; see ADDING_A_METHOD.md.
for _spec in (
    MethodSpec("finetune", CLASSIFIER, "approximate", "workers.unlearning.finetune"),
    MethodSpec("neggrad_plus", CLASSIFIER, "approximate", "workers.unlearning.neggrad_plus"),
    MethodSpec("scrub", CLASSIFIER, "approximate", "workers.unlearning.scrub"),
    MethodSpec("ssd", CLASSIFIER, "approximate", "workers.unlearning.ssd"),
    MethodSpec("ssd_label_free", CLASSIFIER, "approximate", "workers.unlearning.ssd"),
    MethodSpec("l1_sparse", CLASSIFIER, "approximate", "workers.unlearning.l1_sparse"),
    MethodSpec("salun", CLASSIFIER, "approximate", "workers.unlearning.salun"),
    MethodSpec("influence", CLASSIFIER, "approximate", "workers.unlearning.influence"),
    # Both read the shadow models of half of the pairs (stated in the result); the audit uses the rest.
    MethodSpec("oracle_matching", CLASSIFIER, "approximate", "workers.unlearning.oracle_matching",
               applies_to="classifiers with shadow models (at least 2 complementary pairs) and batches keyed by "
                          "record",
               cost="one forward pass of half the shadow models over the forget set, then 25 epochs over the "
                    "forget set paired with a 512-record retain sample: about a fine-tune's time. Its shadows: it "
                    "reads half the shadow pairs and the audit judges with the others, so for the audit's 16 "
                    "shadow models without each record the model needs 62 (twice what another method's audit "
                    "needs); every one that trained on a forgotten record is purged and trained again after the "
                    "deletion (with several records, nearly all): the extra half is this method's cost",
               needs=("shadow_references",)),
    MethodSpec("dmm", CLASSIFIER, "approximate", "workers.unlearning.dmm",
               applies_to="classifiers with shadow models (at least 2 complementary pairs, 4 models for the "
                          "method) and batches keyed by record",
               cost="one forward pass of half the shadow models over the forget set and a 512-record retain "
                    "sample, a least-squares fit per pair held out (seconds), then 25 epochs of matching: about "
                    "a fine-tune's time. Its shadows: it reads half the shadow pairs and the audit judges with the "
                    "others, so the model needs 62 shadow models for the audit's 16 without each record (twice what "
                    "another method's audit needs); more subset runs improve the datamodels; each, and its "
                    "retraining after a purge of a record it held, costs one training on half the data",
               needs=("shadow_references",)),
    # Needs no label: for data whose labels the company no longer has.
    MethodSpec("laf", CLASSIFIER, "approximate", "workers.unlearning.laf",
               applies_to="classifiers whose last layer is an nn.Linear on a feature vector (mlp, small_cnn, "
                          "text_bag, any such module); kept retain accuracy on wide features (256 units), not on "
                          "narrow ones (64)",
               cost="two small VAEs fitted on the forget and retain features, then a few epochs of two "
                    "extractor steps per forget batch: about a fine-tune's time"),
    # No gradients and no retain labels; refuses a forget set that is not one whole class.
    MethodSpec("data_free_class", CLASSIFIER, "approximate", "workers.unlearning.data_free_class",
               applies_to="classifiers built of nn.Linear / ungrouped nn.Conv2d layers in data order "
                          "(mlp, small_cnn), wide enough for class-specific units; forgetting one whole class",
               cost="two forward passes (the forget set and at most 2,048 retain records), no training: seconds",
               whole_class_only=True),
    # Regression (Tarun et al., ICML 2023): a blindspot model trained briefly on the retain set is the forget set's target.
    MethodSpec("blindspot", REGRESSOR, "approximate", "workers.unlearning.blindspot",
               applies_to="regression models (one output, MSE-trained) whose blindspot copy can be re-initialised "
                          "(every layer with reset_parameters: mlp); not classifiers",
               cost="a blindspot copy of the model trained 2 epochs on the retain set, then 5 epochs of one forward "
                    "and backward pass per retain batch paired with a forget batch: about twice a fine-tune's time"),
    MethodSpec("gradient_ascent", LANGUAGE_MODEL, "approximate", "workers.unlearning.lm.gradient_ascent"),
    MethodSpec("grad_diff", LANGUAGE_MODEL, "approximate", "workers.unlearning.lm.grad_diff"),
    MethodSpec("npo", LANGUAGE_MODEL, "approximate", "workers.unlearning.lm.npo"),
    # Weights unchanged: projections of two layers' hidden states, stacked across requests.
    MethodSpec("mrp", LANGUAGE_MODEL, "approximate", "workers.unlearning.lm.mrp",
               applies_to="any causal LM the platform accepts (decoder layers in one list)",
               cost="2 epochs of one forward and backward pass per forget batch and retain batch, training only "
                    "a few directions per layer: less than a LoRA epoch of GradDiff",
               report_limitation=(
                   "MRP changes no weight: the new version of {model} is its parent's weights (still trained on the "
                   "erased records, and not purged, since the new version uses them) with projections applied to two "
                   "layers' hidden states. The records are removed from what the served model computes, not from "
                   "its weights: whoever holds the weights file without the projections still holds the data.")),
    # Mechanistic unlearning (arXiv 2410.12949): trains only the MLPs that fact-lookup localisation selects.
    MethodSpec("fact_lookup", LANGUAGE_MODEL, "approximate", "workers.unlearning.lm.fact_lookup",
               applies_to="causal LMs whose decoder layers sit in one list and each have an mlp module (GPT-2, "
                          "Llama, Mistral, Qwen, SmolLM2); texts whose record-specific part starts with the subject "
                          "(a name) and goes on to its facts",
               cost="two forward passes per decoder layer over the forget texts (localisation), then the configured "
                    "epochs of one forward and backward pass per forget and retain batch, updating one MLP in ten: "
                    "about a GradDiff run of the same epochs"),
    # "Stop using attribute X": erases a feature from one layer's representations, no person's records.
    MethodSpec("leace", CONCEPT, "concept_erased", "workers.unlearning.concept_erasure",
               applies_to="any torch model with a named layer whose output is a [batch, features] tensor; an "
                          "attribute with labels for the records the eraser is fitted on",
               cost="one forward pass over the fitting records and a closed-form solve (seconds)",
               report_limitation=(
                   "LEACE makes the attribute undecodable by linear probes at the erased layer of {model}, and no "
                   "more: a non-linear probe may still recover it (the concept probe's figure says how well). It "
                   "erases an attribute, not any person's records."),
               holds_against=LINEAR_PROBES_ONLY),
    # PEF-style coupling (Basu Roy Chowdhury et al., AISTATS 2025): each attribute group's representations are
    # transported onto one shared distribution, so non-linear probes read chance too; the map needs the attribute.
    MethodSpec("pef_coupling", CONCEPT, "concept_erased", "workers.unlearning.pef_coupling",
               applies_to="any torch model with a named layer whose output is a [batch, features] tensor, served "
                          "where the attribute of every input is known at inference (the eraser is class-"
                          "conditional and refuses inputs without it); an attribute with labels for the records "
                          "the eraser is fitted on",
               cost="one forward pass over the fitting records, k-means and one linear programme (seconds)",
               report_limitation=(
                   "The coupling eraser transports each attribute group's representations at the erased layer of "
                   "{model} onto one shared distribution, so that probes of any kind, linear or not, read the "
                   "attribute at chance on inputs drawn like the fitting records. It needs the attribute of every "
                   "input at inference: the served model must be given it and refuses inputs without it. The "
                   "layer keeps only what its groups share, so the task loses what it learned from the attribute. "
                   "It erases an attribute, not any person's records."),
               holds_against=("linear and non-linear probes, on inputs drawn like the fitting records and served "
                              "with their attribute")),
    MethodSpec("verifier_guard", GUARD, "suppressed", "workers.unlearning.guard.method"),
    MethodSpec("retrain", TRAINING_RUN, "exact", "workers.unlearning.exact.retrain", from_scratch=True,
               replay="on request", replay_cost="one more full training of the model"),
    MethodSpec("sisa", TRAINING_RUN, "exact", "workers.unlearning.exact.sisa", recipe="sisa",
               replay="every audit", replay_cost="reruns the affected shards again: about the unlearning job's time"),
    MethodSpec("s3t", TRAINING_RUN, "exact", "workers.unlearning.exact.s3t", recipe="s3t", promise=S3T_PROMISE,
               replay="every audit", replay_cost="no training: seconds"),
    # Offered by the planner in place of s3t when deactivation would cross the model's kept-data floor.
    MethodSpec("s3t_retrain", TRAINING_RUN, "exact", "workers.unlearning.exact.s3t_retrain",
               promise=S3T_RETRAIN_PROMISE, replay="every audit",
               replay_cost="one S3T training from scratch on the kept records"),
    MethodSpec("sklearn_sisa", TRAINING_RUN, "exact", "workers.unlearning.exact.sklearn_sisa", recipe="sklearn_sisa",
               replay="every audit", replay_cost="refits the affected shards again: about the unlearning job's time"),
    # Keep-out transfer (arXiv 2405.10425): a non-static record only selected auxiliary examples; its
    # deletion keeps the weights when the selection's union is unchanged, else retrains on the new one.
    MethodSpec("keep_out_transfer", TRAINING_RUN, "exact", "workers.unlearning.exact.keep_out",
               recipe="keep_out_transfer", promise=KEEP_OUT_PROMISE, replay="every audit",
               replay_cost="one training of the model on its static records and selected auxiliary examples "
                           "(also when the deletion kept the weights: it shows they are what that training gives)"),
    # A derived child, once its parent is unlearned: distilled again from the parent's new version on
    # the transfer set without the records, or fine-tuned again from it. Exact only as far as the
    # parent's new version is (weakest_guarantee); from_scratch: nothing of the child's old weights is read.
    MethodSpec("redistill", TRAINING_RUN, "exact", "workers.unlearning.exact.rederive", recipe="distill",
               from_scratch=True, rederives="distilled_from"),
    MethodSpec("refinetune", TRAINING_RUN, "exact", "workers.unlearning.exact.rederive", recipe="finetune",
               from_scratch=True, rederives="fine_tuned_from"),
    # Records held by a version only through its concept eraser (fitted on them, never trained on): the
    # eraser is taken off, the weights kept. Planned by deletion.concept_erasers, never chosen by a policy.
    MethodSpec("eraser_drop", TRAINING_RUN, "exact", "workers.unlearning.exact.eraser_drop",
               applies_to="a version holding the records only through the concept eraser fitted on them",
               cost="no training: seconds",
               promise=("The weights were never trained on the records; the concept eraser fitted on them was taken "
                        "off, so the new version no longer erases its attribute."),
               report_limitation=("The concept eraser of {model} was taken off: the new version no longer erases "
                                  "the attribute it erased.")),
):
    method_declare(_spec)


def weakest_guarantee(*classes: str) -> str:
    """The weakest of ``classes`` (GUARANTEE_STRENGTH); empty strings are skipped (a version that was
    trained, never unlearned, promises nothing about a deletion). ``ValueError`` for an unknown class."""
    named = [c for c in classes if c]
    unknown = sorted(set(named) - set(GUARANTEE_STRENGTH))
    if unknown:
        raise ValueError(f"unknown guarantee class(es) {', '.join(unknown)}; known: {', '.join(GUARANTEE_STRENGTH)}")
    if not named:
        raise ValueError("no guarantee class given")
    return max(named, key=GUARANTEE_STRENGTH.index)


def counts_as_erasure(guarantee_class: str) -> bool:
    """Whether a result of ``guarantee_class`` can ever confirm erasure of a person's data
    (NOT_A_PERSONS_ERASURE: no); ``ValueError`` for an unknown class."""
    if guarantee_class not in GUARANTEE_CLASSES:
        raise ValueError(f"unknown guarantee class {guarantee_class!r}; known: {', '.join(GUARANTEE_CLASSES)}")
    return guarantee_class not in NOT_A_PERSONS_ERASURE


def rederiving_method_for(kind: str) -> MethodSpec | None:
    """The method that re-derives children of lineage edge ``kind`` (None: no such method)."""
    return next((spec for spec in method_specs() if spec.rederives == kind), None)


def method_specs(*, kind: str | None = None) -> list[MethodSpec]:
    """The declared methods (only those of ``kind`` when given), by name."""
    return [spec for spec in map(METHOD_SPECS.get, METHOD_SPECS) if kind is None or spec.kind == kind]


def approximate_methods_for(task: str | None) -> list[str]:
    """The methods a policy may name for models of ``task`` (None: of any task), by name."""
    return [spec.name for spec in method_specs()
            if spec.task is not None and (task is None or spec.task == task)]


def exact_method_for(recipe: str) -> MethodSpec | None:
    """The method the planner unlearns runs of training ``recipe`` with (None: the recipe has none)."""
    return next((spec for spec in method_specs() if spec.recipe == recipe), None)


def approximate_method_problem(name: str, task: str | None) -> str | None:
    """Why ``name`` cannot be a policy's approximate method for a model of ``task`` (None: it can)."""
    fitting = approximate_methods_for(task)
    if name not in METHOD_SPECS:
        return f"unknown unlearning method {name!r}; known: {', '.join(fitting)}"
    spec = METHOD_SPECS.get(name)
    if spec.task is None:
        return (f"{name!r} is an exact method; the planner picks it from the training recipe. Name an "
                f"approximate method: {', '.join(fitting)}")
    if task is not None and spec.task != task:
        return (f"{name!r} unlearns {spec.task.replace('_', ' ')} models, not {task.replace('_', ' ')}; "
                f"for this model: {', '.join(fitting)}")
    return None
