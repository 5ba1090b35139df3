"""The admin's cast (healthchecks style): alice is a DPO, bob an auditor, charlie an ML engineer
and mallory a staff user in no group. Groups and permissions come from ``setup_roles``."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.utils import timezone

from deletion import decisions, intake, workflow
from deletion.models import DeletionRequest, ModelOutcome
from models_registry.services import model_version_create
from tests import factories
from workers.models import Job

PASSWORD = "correct-horse-battery-staple"
BODY = {"identifiers": {"email": "p0@example.org"}, "jurisdiction": "GDPR", "legal_ground": "art17_1_b",
        "channel": "web-form"}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """The cast logs in with passwords; the production hasher's million rounds cost seconds."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def cast(db) -> dict[str, User]:
    call_command("setup_roles", stdout=io.StringIO())
    users = {}
    for name, group in (("alice", "dpo"), ("bob", "auditor"), ("charlie", "ml_engineer"), ("mallory", None)):
        user = User.objects.create_user(name, f"{name}@example.org", PASSWORD, is_staff=True)
        if group:
            user.groups.add(Group.objects.get(name=group))
        users[name] = user
    return users


@pytest.fixture
def client_for(cast):
    """``client_for("alice")`` -> a Django test client logged in as that user."""
    from django.test import Client

    def make(name: str) -> Client:
        logged_in = Client()
        logged_in.force_login(cast[name])
        return logged_in

    return make


@pytest.fixture
def trained(db) -> dict:
    """Nine records of three subjects in one dataset; a SISA model (v1, serving) trained on all."""
    ds = factories.dataset("customers")
    factories.import_records(ds, [{"record_key": f"r{i}", "content": f"c{i}", "email": f"p{i % 3}@example.org"}
                                  for i in range(9)])
    model = factories.registered_model("churn", recipe="sisa")
    run, version = factories.trained_version(model, ds, [(f"r{i}", i % 2, 0) for i in range(9)])
    return {"ds": ds, "model": model, "run": run, "version": version}


def make_request(*, email: str = "p0@example.org", jurisdiction: str = "GDPR", scoped: bool = True,
                 due_in_days: float | None = None, actor=None) -> DeletionRequest:
    """A request created through the services, verified and scoped unless ``scoped`` is False;
    ``due_in_days`` moves its deadline (negative: overdue)."""
    ground = "ccpa_1798_105" if jurisdiction == "CCPA" else "art17_1_b"
    request, _ = intake.deletion_request_create(client=None, body={
        **BODY, "identifiers": {"email": email}, "jurisdiction": jurisdiction, "legal_ground": ground})
    if scoped:
        request = decisions.deletion_request_verify(request=request, actor=actor or "tests", evidence=EVIDENCE)
    if due_in_days is not None:
        DeletionRequest.objects.filter(pk=request.pk).update(due_at=timezone.now() + timedelta(days=due_in_days))
        request.refresh_from_db()
    return request


def make_report(request: DeletionRequest, pdf: bytes = b"%PDF-1.4\n% a stand-in for a signed report\n%%EOF\n"):
    """A Report row with its PDF in the report store (no signing: the admin only links to it)."""
    import hashlib
    from pathlib import Path

    from django.conf import settings

    sha256 = hashlib.sha256(pdf).hexdigest()
    root = Path(settings.REPORT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{sha256}.pdf").write_bytes(pdf)
    from audits.models import Report

    return Report.objects.create(
        request=request, json={"request_id": str(request.public_id)}, pdf_sha256=sha256, pdf_path=f"{sha256}.pdf",
        ledger_seq=1, ledger_hash="0" * 64, signer="Test Signer", signature_profile="PAdES-B-T")


AUDIT = {
    "shadow_models": 8,
    "metrics": {"forget_accuracy": {"original": 0.98, "unlearned": 0.61},
                "test_accuracy": {"original": 0.9, "unlearned": 0.89}},
    "checks": [{"check": "membership_test", "verdict": "PASS"}, {"check": "utility", "verdict": "PASS"}],
    "verdict": {"verdict": "PASS", "rule": "every check passed and no older copy holds the records"},
}


RULES = {"PASS": "every check passed and no older copy holds the records",
         "FAIL": "the membership test still tells the erased records from held-out ones",
         "INCONCLUSIVE": "too few shadow models for the membership test to have power"}


def finish_job(outcome: ModelOutcome, trained: dict, *, verdict: str = "PASS"):
    """Play the workers: the unlearning job made a new version, then its audit gave ``verdict``."""
    new = model_version_create(model=trained["model"], artifact_sha256="9" * 64, training_run=None,
                               parent=outcome.model_version)
    Job.objects.filter(pk=outcome.job_id).update(status="succeeded", result_version=new, progress_percent=100)
    workflow.on_job_finished(job_id=outcome.job_id)
    outcome.refresh_from_db()
    audit_job_id = getattr(outcome, "audit_job_id", None)
    if audit_job_id:
        # The audit runner returns its evidence as the job's result; the workflow writes the outcome.
        audit = {**AUDIT, "verdict": {"verdict": verdict, "rule": RULES[verdict]}}
        Job.objects.filter(pk=audit_job_id).update(status="succeeded", progress_percent=100,
                                                   result={"verdict": verdict, "audit": audit})
        workflow.on_job_finished(job_id=audit_job_id)
    return new
