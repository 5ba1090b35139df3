"""What the bring-your-own-model benchmarks share: the real stack (gunicorn and two Celery workers)
with API clients for an ML engineer and two DPO users, and one company model's way over HTTP from
registration to the signed report of one person's erasure request, timed.

Call :func:`django_setup` (``_setup.py``) first; the heavy imports happen inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

EVIDENCE = {"method": "benchmark", "verified_at": "2026-11-25T00:00:00Z", "verifier": "benchmark"}
ENDED = ("COMPLETED", "CLOSED_RISK_ACCEPTED", "FAILED", "REJECTED", "CANCELLED")


class StepFailed(Exception):
    """A model's upload or shadow training did not succeed: a result for that model (its request
    is not made), not the end of the benchmark."""


@dataclass(frozen=True)
class CompanyModel:
    """A model the company trained on its own machines, and what it registers for it: the model
    (``task``, ``recipe``, ``architecture``, ``policy``), the training run (``run_recipe``,
    ``run_config``, ``seed``) with its membership (``members`` of dataset ``dataset_id``; ``shard_of`` gives a
    SISA ensemble's shard per record), the upload (``body`` as ``content_type``), how many shadow
    models its audit gets, and the identifiers of the person whose erasure is requested.
    ``details`` are reported as they are (parameters, the company's training seconds, ...)."""

    label: str
    family: str
    name: str
    task: str
    recipe: str
    architecture: dict[str, Any]
    policy: dict[str, Any]
    run_recipe: str
    run_config: dict[str, Any]
    dataset_id: int
    members: list[str]
    body: bytes
    content_type: str
    identifiers: dict[str, str]
    seed: int = 1
    shadows: int = 0
    shard_of: dict[str, int] | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Clients:
    """The API's base URL and the sessions of the ML engineer and of two DPO users (accepting a
    residual risk takes both)."""

    api: str
    engineer: Any
    dpos: tuple[Any, Any]


@contextlib.contextmanager
def byo_stack(*, name: str, port: int) -> Iterator[Clients]:
    """The web API under gunicorn (on ``port`` or a free one) and the two worker processes of
    ``deletion_platform.demo.start_stack``, the development signing identity and API tokens for an
    ``ml_engineer`` and two ``dpo`` users; the processes are stopped on leaving, on SIGTERM too."""
    import requests

    from audits.signing import ensure_dev_signing_identity
    from deletion_platform.demo import _free_port, _wait_http, start_stack, stop_stack
    from foundation.access.authentication import api_token_create

    # A timeout's SIGTERM still stops the web server and the workers (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_dev_signing_identity()
    port = _free_port(port)
    stack = start_stack(port, name=name)
    try:
        _wait_http(f"http://127.0.0.1:{port}")
        sessions = []
        for role, user in (("ml_engineer", f"{name}-engineer"), ("dpo", f"{name}-alice"), ("dpo", f"{name}-bob")):
            # The DPOs' tokens are bound to two DPO users: accepting a residual risk takes two people.
            holder = _role_user(user, role) if role == "dpo" else None
            _, token = api_token_create(name=user, role=role, user=holder)
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            sessions.append(session)
        yield Clients(api=f"http://127.0.0.1:{port}/api/v1", engineer=sessions[0], dpos=(sessions[1], sessions[2]))
    finally:
        stop_stack(*stack)


def _role_user(username: str, role: str) -> str:
    """A staff user ``username`` in ``role``'s group (made where there is none): the person a token is bound to."""
    from django.contrib.auth.models import Group, User

    user, _ = User.objects.get_or_create(username=username, defaults={"is_staff": True})
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return username


def jobs_settled(timeout_s: float = 600) -> float:
    """Wait until no job is pending or running (shadow models a purge replenishes after the last
    model's request), so that the next model's figures are its own; returns the seconds waited."""
    from workers.models import Job, JobStatus

    started = time.perf_counter()
    while Job.objects.filter(status__in=(JobStatus.PENDING, JobStatus.RUNNING)).exists():
        if time.perf_counter() - started > timeout_s:
            break
        time.sleep(0.5)
    return time.perf_counter() - started


def model_register(clients: Clients, model: CompanyModel) -> int:
    """The model, its training run and the run's membership, over HTTP; returns the run's id."""
    engineer, api = clients.engineer, clients.api
    engineer.post(f"{api}/models/", json={"name": model.name, "task": model.task, "training_recipe": model.recipe,
                                          "architecture": model.architecture, "unlearning_policy": model.policy},
                  timeout=60).raise_for_status()
    run = engineer.post(f"{api}/training-runs/", json={
        "model": model.name, "recipe": model.run_recipe, "seed": model.seed,
        "code_version": "benchmark", "config": model.run_config, "datasets": [model.dataset_id]}, timeout=60)
    run.raise_for_status()
    rows = ({"record_key": key} | ({"shard": model.shard_of[key]} if model.shard_of else {}) for key in model.members)
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    engineer.post(f"{api}/training-runs/{run.json()['id']}/membership/?dataset={model.dataset_id}", data=body,
                  headers={"Content-Type": "application/x-ndjson"}, timeout=120).raise_for_status()
    return run.json()["id"]


def version_upload(clients: Clients, model: CompanyModel, run_id: int, timeout_s: float = 600) -> int:
    """Upload the weights against the run and return the registered version's id: at once (201),
    or, for a family a worker checks (202), once its upload check has registered it."""
    api = clients.api
    uploaded = clients.engineer.post(f"{api}/models/{model.name}/versions/?training_run={run_id}", data=model.body,
                                     headers={"Content-Type": model.content_type}, timeout=600)
    if uploaded.status_code == 201:
        return uploaded.json()["id"]
    if uploaded.status_code != 202:
        raise StepFailed(f"upload refused: {uploaded.text}")
    check_url = f"{api}/upload-checks/{uploaded.json()['id']}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check = clients.engineer.get(check_url, timeout=60).json()
        if check["status"] == "registered":
            return check["version"]["id"]
        if check["status"] in ("refused", "failed", "cancelled"):
            raise StepFailed(f"upload check {check['status']}: {check['refused'] or check['error']}")
        time.sleep(0.2)
    raise StepFailed(f"upload check still {check['status']} after {timeout_s:.0f} s")


def shadow_models(version_id: int, count: int, name: str) -> None:
    """Train ``count`` shadow models of the version (the family's recipe with the run's recorded
    configuration) and wait for them; progress goes to stderr. Raises StepFailed if the job fails."""
    from deletion_platform.demo import wait_jobs
    from models_registry.models import ModelVersion
    from workers.services import shadow_models_train

    job = shadow_models_train(version=ModelVersion.objects.get(pk=version_id), count=count)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            wait_jobs([job], lambda job: f"{count} shadow models of {name}")
    except SystemExit as exc:  # how wait_jobs ends the demo on a failed job
        raise StepFailed(f"shadow models: {exc}") from None


def erasure_to_signed_report(clients: Clients, model: CompanyModel, timeout_s: float) -> dict[str, Any]:
    """One person's erasure request (``model.identifiers``) through verification, approval,
    unlearning and audit, the DPO's decision on a result that did not pass (two DPO users accept its
    residual risk) and the serving side's confirmation of the new version, to the signed report.
    Returns the request's ``end_state`` (``TIMED OUT`` after ``timeout_s``), how many models
    it touched (one, when only this model holds the person's data), the model's ``method`` and
    ``verdict`` and the seconds from receipt to the signed report."""
    from deletion.models import DeletionRequest

    alice, bob = clients.dpos
    base = f"{clients.api}/deletion-requests/"
    created = alice.post(base, json={"identifiers": model.identifiers, "jurisdiction": "GDPR",
                                     "legal_ground": "art17_1_b", "channel": "benchmark"},
                         headers={"Idempotency-Key": f"byo-{model.name}"}, timeout=60)
    created.raise_for_status()
    request_id = created.json()["id"]
    alice.post(f"{base}{request_id}/verify/", json=EVIDENCE, timeout=120).raise_for_status()
    alice.post(f"{base}{request_id}/approve/", json={}, timeout=120).raise_for_status()
    outcome_of_model: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    state = {"status": "TIMED OUT"}
    while time.monotonic() < deadline:
        state = alice.get(f"{base}{request_id}/", timeout=60).json()
        for outcome in state["outcomes"]:
            if outcome["model"] == model.name:
                outcome_of_model = outcome
            if outcome["status"] in ("awaiting_decision", "audit_failed") and not outcome["risk_acceptance"]:
                for dpo in (alice, bob):
                    dpo.post(f"{base}{request_id}/accept-risk/", json={
                        "model_version_id": outcome["model_version_id"],
                        "reason": f"{outcome['verdict']} {outcome['guarantee_class']} result; benchmark"},
                        timeout=60).raise_for_status()
            if outcome["status"] == "awaiting_deployment":
                clients.engineer.post(f"{base}{request_id}/confirm-deployment/",
                                      json={"new_version_id": outcome["new_version_id"]}, timeout=60)
        if state["status"] in ENDED:
            break
        time.sleep(0.5)
    request = DeletionRequest.objects.get(public_id=request_id)
    ended = request.status if state["status"] in ENDED else "TIMED OUT"
    seconds = (request.completed_at - request.received_at).total_seconds() if request.completed_at else None
    return {"request": request_id, "end_state": ended, "models_in_request": len(state.get("outcomes", [])),
            "method": outcome_of_model.get("method"), "verdict": outcome_of_model.get("verdict"),
            "request_to_signed_report_s": seconds, "failure": request.failure if request.status == "FAILED" else None}


def company_model_to_signed_report(clients: Clients, model: CompanyModel, *,
                                   request_timeout_s: float = 1200) -> dict[str, Any]:
    """Register ``model`` over HTTP, upload it, train its shadow models and take its person's
    erasure request to the signed report, after the jobs of the models before it have settled.
    Returns the figures of :func:`results_table` (seconds) and the request's end state."""
    waited = jobs_settled()
    run_id = model_register(clients, model)
    upload_started = time.perf_counter()
    upload_seconds = shadow_seconds = seconds = None
    erasure = {"end_state": "NOT RUN", "method": None, "verdict": None}
    try:
        version_id = version_upload(clients, model, run_id)
        upload_seconds = time.perf_counter() - upload_started
        shadow_started = time.perf_counter()
        if model.shadows:
            shadow_models(version_id, model.shadows, model.name)
        shadow_seconds = time.perf_counter() - shadow_started if model.shadows else 0.0
        request_started = time.perf_counter()
        erasure = erasure_to_signed_report(clients, model, request_timeout_s)
        seconds = erasure.pop("request_to_signed_report_s")
        erasure["poll_wall_s"] = round(time.perf_counter() - request_started, 1)
    except StepFailed as exc:
        erasure["failure"] = str(exc)
    result = {"family": model.family, "model": model.label, **model.details, "records": len(model.members),
              "upload_bytes": len(model.body), "waited_for_earlier_jobs_s": round(waited, 1),
              "upload_check_s": _rounded(upload_seconds, 2), "shadow_models": model.shadows,
              "shadow_training_s": _rounded(shadow_seconds, 1), "request_to_signed_report_s": _rounded(seconds, 1),
              "upload_to_signed_report_s": _rounded(time.perf_counter() - upload_started if seconds else None, 1),
              **erasure}
    shown = _shown(result)
    print(f"{model.label}: upload check {shown['upload_check_s']} s, {model.shadows} shadow models "
          f"{shown['shadow_training_s']} s, request to signed report {shown['request_to_signed_report_s']} s "
          f"({result['end_state']}, {shown['method']}, verdict {shown['verdict']})"
          + (f": {result['failure']}" if result["failure"] else ""), file=sys.stderr, flush=True)
    return result


def _rounded(seconds: float | None, digits: int) -> float | None:
    return None if seconds is None else round(seconds, digits)


def _shown(result: dict[str, Any]) -> dict[str, Any]:
    """The result with "-" for what a step that did not run left None."""
    return {key: "-" if value is None else value for key, value in result.items()}


def failed_jobs() -> list[dict[str, Any]]:
    """The jobs that failed during the run, the ones nobody waited for (shadow models a purge
    replenishes) included: id, kind, model and the error's last line."""
    from workers.models import Job, JobStatus

    return [{"job": job.id, "kind": job.kind, "model": getattr(job.registered_model, "name", None),
             "error": ((job.error or "").strip().splitlines() or [""])[-1]}
            for job in Job.objects.filter(status=JobStatus.FAILED).select_related("registered_model").order_by("id")]


def results_table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table, one row per model."""
    lines = ["| family | model | parameters | upload check s | shadow models (s) | request to signed report s | "
             "upload to signed report s | method | verdict | end state |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in results:
        cells = _shown(r)
        parameters = f"{r['parameters']:,}" if r.get("parameters") is not None else "-"
        lines.append(f"| {r['family']} | {r['model']} | {parameters} | {cells['upload_check_s']} | "
                     f"{r['shadow_models']} ({cells['shadow_training_s']}) | {cells['request_to_signed_report_s']} | "
                     f"{cells['upload_to_signed_report_s']} | {cells['method']} | {cells['verdict']} | "
                     f"{r['end_state']} |")
    return "\n".join(lines)
