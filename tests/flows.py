"""Steps many tests take on the way to an audited deletion: run a job in-process, file an erasure
request for some records and take it to approval, and play the DPOs and the serving side for
requests that workers are taking through."""

from __future__ import annotations

from collections.abc import Iterable

from deletion import decisions, intake
from workers.jobs import job_execute
from workers.models import Job

EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


def run_job(job: Job) -> Job:
    """Run ``job`` here and now; it must succeed (its error is the assertion's message)."""
    assert job_execute(job_id=job.id) == "succeeded", Job.objects.get(pk=job.id).error
    job.refresh_from_db()
    return job


def approved_request(records: Iterable, **approve):
    """An erasure request for ``records`` (DataRecord rows), verified and approved (``approve``:
    ``holds``, ``methods`` for deletion_request_approve)."""
    records = list(records)
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "record_keys": [{"dataset": f"{r.dataset.name}@{r.dataset.version}",
                                            "record_key": r.external_key} for r in records],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test"})
    request = decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)
    return decisions.deletion_request_approve(request=request, actor="tests", **approve)


def outcomes_settle(requests: Iterable, *, reason: str) -> None:
    """One pass over ``requests``' model outcomes: where an audit did not confirm the deletion, two
    DPO users (alice, bob) accept the residual risk with ``reason``; a new version awaiting
    deployment is confirmed by the serving side. For loops that wait on real workers."""
    from deletion.models import ModelOutcome

    for outcome in ModelOutcome.objects.filter(request__in=list(requests),
                                               status__in=["audit_failed", "awaiting_decision", "awaiting_deployment"]):
        if outcome.status in ("audit_failed", "awaiting_decision"):
            for dpo in ("alice", "bob"):
                decisions.outcome_risk_accept(request=outcome.request, actor=dpo,
                                              model_version_id=outcome.model_version_id, reason=reason)
            outcome.refresh_from_db()
        if outcome.status == "awaiting_deployment":
            decisions.deployment_confirm(request=outcome.request, actor="serving", manual=True,
                                         new_version_id=outcome.new_version_id)


def registered_over_api(client, *, name: str, architecture: dict, dataset, keys, recipe: str = "plain",
                        policy: dict | None = None, run_config: dict | None = None,
                        code_version: str = "company-pipeline", shard_of=None) -> int:
    """What an ML engineer does before uploading a model trained elsewhere, over the REST API: the
    model, its training run and the run's membership (``shard_of(key)`` per record when given).
    Returns the run's id."""
    response = client.post("/api/v1/models/", {"name": name, "task": "classification", "training_recipe": recipe,
                                               "architecture": architecture, "unlearning_policy": policy or {}},
                           format="json")
    assert response.status_code == 201, response.content
    run = client.post("/api/v1/training-runs/", {"model": name, "recipe": recipe, "seed": 5,
                                                   "code_version": code_version, "config": run_config or {},
                                                   "datasets": [dataset.id]}, format="json")
    assert run.status_code == 201, run.content
    shard_of = shard_of or (lambda key: 0)
    body = "".join(f'{{"record_key": "{k}", "shard": {shard_of(k)}}}\n' for k in keys).encode()
    imported = client.generic("POST", f"/api/v1/training-runs/{run.json()['id']}/membership/?dataset={dataset.id}",
                              body, content_type="application/x-ndjson")
    assert imported.status_code == 201, imported.content
    return run.json()["id"]


def upload_over_api(client, name: str, run_id: int, data: bytes):
    """POST a model file as a new version of model ``name`` with the lineage of run ``run_id``."""
    return client.generic("POST", f"/api/v1/models/{name}/versions/?training_run={run_id}", data,
                          content_type="application/octet-stream")
