"""The exact_attested verdict (issue 21): the company's declaration, checked by the platform, decides
a FAIL with the purge and any member-side statistic; a PASS needs the statistical audit against
reference models from the company's own pipeline, and says what power that audit had."""

from dataclasses import dataclass

from audits.checks.result import CheckResult, Verdict
from audits.checks.verdict import RULES, LineageProof, final_verdict

PASS, FAIL, INCONCLUSIVE = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE
CHECKED = LineageProof(new_version_holds_none=True, older_copies_purged=True)


@dataclass(frozen=True, kw_only=True)
class Sided(CheckResult):
    side: str | None = None


def r(check: str, verdict: Verdict, side: str | None = None) -> CheckResult:
    return Sided(check=check, verdict=verdict, rule="test rule", reason=f"{check} said so", side=side)


def audited(**verdicts: Verdict) -> list[CheckResult]:
    base = {"membership_lira": PASS, "membership_power": PASS, "shadow_procedure": PASS, "utility": PASS}
    return [r(name, verdict) for name, verdict in {**base, **verdicts}.items()]


def verdict(checks, lineage=CHECKED):
    return final_verdict(guarantee_class="exact_attested", checks=checks, lineage=lineage)


def test_a_pass_rests_on_the_checked_declaration_and_the_pipelines_reference_models():
    result = verdict(audited())
    assert result.verdict == PASS and result.rule == RULES["exact_attested"]
    assert "power was demonstrated" in result.reason
    weak = verdict(audited(membership_power=INCONCLUSIVE))
    assert weak.verdict == PASS and "power was not demonstrated" in weak.reason and "adds little" in weak.reason


def test_the_declaration_the_purge_or_the_data_contradicting_it_fail():
    assert verdict(audited(), LineageProof(new_version_holds_none=False, older_copies_purged=True)).verdict == FAIL
    assert verdict(audited(), LineageProof(new_version_holds_none=True, older_copies_purged=False)).verdict == FAIL
    contradicted = verdict(audited(membership_lira=FAIL))
    assert contradicted.verdict == FAIL and "contradict the company's declaration" in contradicted.reason
    # Over-forgetting is not a member-side FAIL, but it is no clean test either.
    assert verdict([*audited(), r("equivalence_tost", FAIL, side="non_member")]).verdict == PASS


def test_without_the_pipelines_reference_models_the_declaration_is_not_tested():
    none = verdict([r("utility", PASS)])
    assert none.verdict == INCONCLUSIVE and "company's word alone" in none.reason
    other = verdict(audited(shadow_procedure=INCONCLUSIVE))
    assert other.verdict == INCONCLUSIVE and "not from the company's pipeline" in other.reason
    untested = verdict(audited(membership_lira=INCONCLUSIVE))
    assert untested.verdict == INCONCLUSIVE
    waiting = verdict(audited(), LineageProof(new_version_holds_none=True, older_copies_purged=None))
    assert waiting.verdict == INCONCLUSIVE and "not purged yet" in waiting.reason
