"""Whether the shadow models come from the audited model's own training procedure.

Every statistic that calibrates against shadow models (the per-record test, its power, the
equivalence test, the calibrated population attack) assumes the shadows were trained as the model
was: same recipe, configuration and code. For a model trained by the platform that holds. For a
model trained outside it (uploaded) the platform trains its shadows with the model family's recipe
and the configuration the training run recorded, which is a different procedure from the company's
own pipeline; its statistics may still be informative, but they cannot give PASS. The check says
which it is, so the report names the procedure, and the approximate class needs it to PASS.
"""

from __future__ import annotations

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict


def _inputs(evidence: ClassifierEvidence) -> dict | None:
    if evidence.shadow_procedure is None:
        return None
    procedure = evidence.shadow_procedure
    return {"same_as_model": procedure.same_as_model, "shadows": procedure.shadows, "model": procedure.model}


@register_check(CheckSpec(
    name="shadow_procedure", role="power", applies_to=("classifier",), inputs=_inputs,
    needed_for_approximate_pass="the shadow models' training procedure was not established",
))
def shadow_procedure(*, same_as_model: bool, shadows: str, model: str) -> CheckResult:
    """PASS when the shadow models were trained by the model's own procedure; otherwise
    INCONCLUSIVE, naming both procedures (statistics calibrated on them cannot give PASS)."""
    rule = ("The shadow models must come from the procedure that trained the model (recipe, configuration, "
            "code): PASS if they do; INCONCLUSIVE, naming both procedures, if not (an approximate result then "
            "cannot PASS: every calibrated statistic assumes it).")
    if same_as_model:
        return CheckResult(check="shadow_procedure", verdict=Verdict.PASS, rule=rule,
                           reason=f"Shadow models: {shadows}; the model: {model}.")
    return CheckResult(check="shadow_procedure", verdict=Verdict.INCONCLUSIVE, rule=rule,
                       reason=f"Shadow models from a different procedure: {shadows}; the model: {model}.")
