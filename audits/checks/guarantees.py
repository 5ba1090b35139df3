"""Plain-words text for each guarantee class, for the report: what it promises, what it does not,
and what evidence the verdict rests on. Written for a reader who is not a statistician.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.unlearning.base import GUARANTEE_CLASSES


@dataclass(frozen=True)
class GuaranteeText:
    """The report's paragraph on one guarantee class."""

    name: str
    title: str
    # What was done to the model, in the words the report and the admin label each action with:
    # a removal (exact or approximate) or a suppression, which never counts as erasure.
    action: str
    promises: str
    does_not_promise: str
    evidence: str


GUARANTEE_TEXTS: dict[str, GuaranteeText] = {
    "exact": GuaranteeText(
        name="exact",
        title="Exact deletion",
        action="removal (exact)",
        promises=(
            "The new model was computed only from data that never contained the records. It is "
            "the model the company would have had if the records had never been collected. "
            "Every older copy of the model that was trained on the records has been deleted."
        ),
        does_not_promise=(
            "It does not cover other copies of the same information that were not identified as "
            "this person's records (for example a duplicate stored under another name), and it "
            "does not undo what anyone learned from the old model while it was in use."
        ),
        evidence=(
            "The training records of the new model, which list every record it was trained on, "
            "and the list of deleted copies with their fingerprints (sha256). Statistical tests "
            "are run as a cross-check only."
        ),
    ),
    "dp_bounded": GuaranteeText(
        name="dp_bounded",
        title="Bounded influence (differential privacy)",
        action="bounded influence, no removal",
        promises=(
            "The model was trained with a mathematical limit on how much any one record can "
            "change it. For this person's records together the limit is the stated (epsilon, "
            "delta): the model behaves almost the same as one trained without them, and the "
            "numbers say how close."
        ),
        does_not_promise=(
            "Nothing was removed from the model: the records were used in training and still "
            "had their small, bounded effect. A larger epsilon means a weaker limit; the limit "
            "grows with the number of records a person has."
        ),
        evidence=(
            "The privacy accountant of the training run, the number of this person's records, "
            "and the limits the company's policy sets."
        ),
    ),
    "approximate": GuaranteeText(
        name="approximate",
        title="Approximate unlearning, statistically tested",
        action="removal (approximate)",
        promises=(
            "The model was changed to remove the records' influence, and statistical tests found "
            "it indistinguishable from models that never saw the records, within the stated "
            "error rates and margins. The tests were shown to be able to detect the records in a "
            "model that did contain them."
        ),
        does_not_promise=(
            "It is not a proof: a test can only show that no difference was found at the stated "
            "level, not that none exists. Some information may remain below what the tests can "
            "detect. Where the tests could not reach a conclusion, the report says so instead of "
            "claiming the records are forgotten."
        ),
        evidence=(
            "A membership test per record against reference models trained with and without it, "
            "with a correction for testing many records at once; a demonstration that the test "
            "works; equivalence tests on aggregate measures with margins fixed in advance."
        ),
    ),
    "suppressed": GuaranteeText(
        name="suppressed",
        title="Suppressed at output",
        action="suppression, not erasure: the weights still hold the data",
        promises=(
            "The model's answers pass through a filter that blocks this person's data. The "
            "filter was measured on test prompts: its leak rate is below the stated rate, except "
            "with the stated small probability."
        ),
        does_not_promise=(
            "The data are still inside the model. Anyone with access to the model itself, rather "
            "than to its filtered answers, could recover them; the promise holds only for answers "
            "that go through the filter."
        ),
        evidence=(
            "The filter's calibration: how many test prompts were tried, how many leaked, and the "
            "resulting upper bound on the leak rate at the stated confidence."
        ),
    ),
    "exact_attested": GuaranteeText(
        name="exact_attested",
        title="Exact deletion, as attested by the company's pipeline",
        action="removal (exact, as declared by the company's own pipeline)",
        promises=(
            "The company's own training pipeline retrained the model without the records and "
            "declared which records the new model was trained on; the person named in this "
            "section attests it. The platform checked that declaration record by record: none of "
            "the records erased for this request, and none of those erased before, is in it. The "
            "new model was audited, and every older copy of the model that was trained on the "
            "records has been deleted."
        ),
        does_not_promise=(
            "The platform did not compute the new model: that it was trained only on the declared "
            "records rests on the company's declaration, which the platform checked but cannot "
            "recompute. It does not cover copies kept outside the platform (in the company's own "
            "pipeline or storage), copies of the same information stored under another name, or "
            "what anyone learned from the old model while it was in use."
        ),
        evidence=(
            "The company's declaration of the records the new model was trained on, checked against "
            "the records erased; who attests it; the audit of the new model against reference models "
            "trained by the same pipeline where the company provided them; and the list of deleted "
            "copies with their fingerprints (sha256)."
        ),
    ),
    "concept_erased": GuaranteeText(
        name="concept_erased",
        title="Concept erased (an attribute, not a person's data)",
        action="an eraser in one layer, the weights unchanged; no record removed",
        promises=(
            "The model can no longer use the named attribute through any linear read-out of the erased "
            "layer: a linear probe trained to predict the attribute from that layer's output does no "
            "better than chance, within the stated tolerance; with the PEF-style coupling, through any "
            "read-out the non-linear probe stands for too, on inputs served with their attribute."
        ),
        does_not_promise=(
            "With LEACE it holds against linear probes only: a non-linear probe may still recover the "
            "attribute, and the report shows how well one did; the coupling needs each input's attribute "
            "at inference. Nothing was removed from the model's weights, no "
            "record was deleted, and it never counts as erasure of anyone's personal data."
        ),
        evidence=(
            "A linear probe's AUC for the attribute on the erased representations (with its AUC before "
            "erasure), and a non-linear probe's AUC shown beside it."
        ),
    ),
}

if set(GUARANTEE_TEXTS) != set(GUARANTEE_CLASSES):  # pragma: no cover - a programming error
    raise RuntimeError("every guarantee class needs its plain-words text")


def guarantee_text(guarantee_class: str) -> GuaranteeText:
    """The plain-words text of a class; an unknown class raises ``ValueError``."""
    try:
        return GUARANTEE_TEXTS[guarantee_class]
    except KeyError:
        known = ", ".join(GUARANTEE_CLASSES)
        raise ValueError(f"unknown guarantee class {guarantee_class!r}; known: {known}") from None
