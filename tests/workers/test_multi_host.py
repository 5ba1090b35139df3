"""Three worker "hosts" that share nothing but PostgreSQL, Redis and the object store (issue 26).

Three real `celery worker` processes, each with its own empty local directories (DATA_DIR,
ARTIFACT_ROOT, DATASET_ROOT, REPORT_ROOT, KEYSTORE_DIR, TMPDIR, HOME) and no shared filesystem,
with ARTIFACT_STORE=s3 on the session's moto server and the keystore in a database of its own.
This process plays the web side, the DPO, the serving side and the beat (it calls the stale-job
sweeper, as the beat's ``sweep-stale-jobs`` does). A batch of 20 erasure requests across two SISA
models goes to signed reports while one worker is SIGKILLed mid-job twice (and restarted on its
own directories). Afterwards: every request ended once, with one report that verifies; every
unlearning job made one version; the garbage collector leaves no orphan object and no version or
delete marker of a removed object; and no file is left on any host's disk.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests import factories
from tests.audits.conftest import dev_identity  # noqa: F401 (fixture)
from tests.flows import outcomes_settle, run_job
from tests.worker_process import WorkerProcess, purge_broker

# slow (RUN_SLOW=1): about 3 min on 2 shared cores (passed whole on 2026-12-07 in 175 s), more than
# make test's budget for one issue. Run it alone: it shares the test broker.
pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(900)]

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}}
# Enough epochs that an unlearning job (a shard's retrain) runs a few seconds: long enough to be
# killed mid-job, short enough for the test.
SISA = {"architecture": MLP, "shards": 2, "slices": 2, "epochs": 40, "seed": 1}
REQUESTS_PER_MODEL = 10
KILLS = 2
HOSTS = 3


def _host_env(root: Path, shared: dict[str, str]) -> dict[str, str]:
    folders = {name: root / name.lower() for name in ("DATA_DIR", "ARTIFACT_ROOT", "DATASET_ROOT", "REPORT_ROOT",
                                                        "KEYSTORE_DIR", "TMPDIR", "HOME")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {**shared, **{name: str(path) for name, path in folders.items()}}


# Caches a host keeps that hold nothing of a request: matplotlib's index of the system's fonts
# (written under HOME the first time a report draws its charts).
HOST_CACHES = (re.compile(r"home/\.cache/matplotlib/fontlist-v[\d.]+\.json"),)


def _files_under(root: Path) -> list[str]:
    """The files under a host's root, less the registered per-host caches (HOST_CACHES)."""
    names = (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return sorted(n for n in names if not any(c.fullmatch(n) for c in HOST_CACHES))


@pytest.fixture
def object_store_settings(settings, s3_server, keystore_database_url, dev_identity):  # noqa: F811
    """The platform on the object store (this process and, through env, every worker host)."""
    location = s3_server.location(f"hosts-{uuid.uuid4().hex[:10]}")
    settings.ARTIFACT_STORE = "s3"
    settings.KEYSTORE_DATABASE_URL = keystore_database_url
    settings.ARTIFACT_S3_BUCKET, settings.ARTIFACT_S3_PREFIX = location.bucket, location.prefix
    settings.ARTIFACT_S3_ENDPOINT_URL, settings.ARTIFACT_S3_REGION = location.endpoint_url, location.region
    settings.ARTIFACT_S3_ACCESS_KEY_ID = location.access_key_id
    settings.ARTIFACT_S3_SECRET_ACCESS_KEY = location.secret_access_key
    settings.REPORT_SIGNING_KEY, settings.REPORT_SIGNING_CERT = dev_identity.key_path, dev_identity.cert_path
    settings.REPORT_SIGNING_CHAIN = settings.REPORT_TRUST_ROOT = dev_identity.root_path
    settings.REPORT_SIGNING_PKCS12 = settings.REPORT_TSA_URL = None
    settings.JOB_STALE_AFTER_SECONDS = 15
    return {
        "ARTIFACT_STORE": "s3", "KEYSTORE_DATABASE_URL": keystore_database_url, "ARTIFACT_S3_BUCKET": location.bucket,
        "ARTIFACT_S3_PREFIX": location.prefix, "ARTIFACT_S3_ENDPOINT_URL": location.endpoint_url,
        "ARTIFACT_S3_REGION": location.region, "ARTIFACT_S3_ACCESS_KEY_ID": location.access_key_id,
        "ARTIFACT_S3_SECRET_ACCESS_KEY": location.secret_access_key, "RECORD_KEK": settings.RECORD_KEK,
        "REPORT_SIGNING_KEY": str(dev_identity.key_path), "REPORT_SIGNING_CERT": str(dev_identity.cert_path),
        "REPORT_SIGNING_CHAIN": str(dev_identity.root_path), "REPORT_TRUST_ROOT": str(dev_identity.root_path),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend", "TORCH_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }


class Hosts:
    """The worker hosts: one celery worker each, on its own directories."""

    def __init__(self, root: Path, shared_env: dict[str, str]) -> None:
        self.roots = [root / f"host-{i}" for i in range(HOSTS)]
        self.logs = [root / f"host-{i}.log" for i in range(HOSTS)]  # beside the hosts, not on them
        self.envs = [_host_env(r, shared_env) for r in self.roots]
        self.workers: list[WorkerProcess] = []
        self.kills: list[str] = []

    def start(self, index: int) -> WorkerProcess:
        worker = WorkerProcess(self.logs[index], extra_env=self.envs[index]).start()
        if index < len(self.workers):
            self.workers[index] = worker
        else:
            self.workers.append(worker)
        return worker

    def identity(self, index: int) -> str:
        import socket

        return f"{socket.gethostname()}:{self.workers[index].process.pid}"

    def kill_mid_job(self, index: int) -> bool:
        """SIGKILL host ``index``'s worker if it is running a job now, then start it again."""
        from workers.models import Job

        running = Job.objects.filter(status="running", claimed_by=self.identity(index)).first()
        if running is None:
            return False
        self.workers[index].kill()
        self.kills.append(f"{running.kind} job {running.id} at {running.progress_percent}%")
        self.start(index)
        return True

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def _approved_request(record):
    from tests.flows import approved_request

    return approved_request([record])


def _state(requests) -> str:
    """The jobs and outcomes, for a failure's message."""
    from deletion.models import ModelOutcome
    from workers.models import Job

    jobs = [(j.id, j.kind, j.status, j.attempts, j.progress_stage, j.claimed_by, j.error[:200])
            for j in Job.objects.order_by("id")]
    outcomes = [(o.request_id, o.model_version_id, o.status, o.job_id, o.audit_job_id)
                for o in ModelOutcome.objects.filter(request__in=requests).order_by("id")]
    return "jobs:\n" + "\n".join(map(str, jobs)) + "\noutcomes:\n" + "\n".join(map(str, outcomes))


def _drive(requests, hosts: Hosts, *, timeout: float) -> None:
    """Play DPO, serving side and beat until every request ended: accept the residual risk of a
    result the audit did not pass (two DPOs), confirm new versions, sweep stale jobs, and kill host
    0's worker mid-job until it was killed KILLS times."""
    from deletion.models import DeletionRequest
    from workers.jobs import jobs_sweep_stale

    ended = {"COMPLETED", "CLOSED_RISK_ACCEPTED", "FAILED"}
    deadline = time.monotonic() + timeout
    while True:
        statuses = dict(DeletionRequest.objects.filter(pk__in=[r.pk for r in requests]).values_list("pk", "status"))
        if all(s in ended for s in statuses.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"requests not ended after {timeout} s: {sorted(statuses.values())}; kills: "
                                 f"{hosts.kills}\n{_state(requests)}")
        if len(hosts.kills) < KILLS:
            hosts.kill_mid_job(0)
        jobs_sweep_stale()
        outcomes_settle(requests, reason="multi-host test")
        time.sleep(0.5)


def _expected_end(request) -> str:
    """The end state a request's audits call for: COMPLETED when every affected model's audit
    PASSed, else CLOSED_RISK_ACCEPTED (the DPOs accepted the residual risk of each result that did
    not pass). Without shadow models most audits do not pass; an exact SISA retrain may."""
    verdicts = [outcome.verdict for outcome in request.outcomes.all()]
    return "COMPLETED" if verdicts and all(v == "PASS" for v in verdicts) else "CLOSED_RISK_ACCEPTED"


def test_three_hosts_sharing_only_database_broker_and_object_store(object_store_settings, tmp_path, s3_server):
    from audits.models import Report
    from audits.reports import report_pdf_bytes, report_verify
    from deletion.models import DeletionRequest
    from foundation.ledger.models import LedgerEvent
    from models_registry.models import DataRecord, ModelVersion, StoredArtifact
    from workers.artifact_gc import artifact_store_gc
    from workers.models import Job
    from workers.reference_data import reference_dataset_register
    from workers.runners.storage import artifact_store, shared_files
    from workers.services import model_train

    started = time.monotonic()
    purge_broker()
    dataset = reference_dataset_register(name="breast_cancer")  # in the bucket: no host has it on disk
    models = []
    for name in ("bc-host-a", "bc-host-b"):
        model = factories.registered_model(name=name, recipe="sisa", unlearning_policy={"batch_window_seconds": 4})
        run_job(model_train(model=model, dataset=dataset, recipe_config=SISA, enqueue=False))
        models.append(model)
    hosts = Hosts(tmp_path, object_store_settings)
    try:
        for index in range(HOSTS):
            hosts.start(index)
        records = list(DataRecord.objects.filter(dataset=dataset, split="train", subject__isnull=False)
                       .order_by("id")[:2 * REQUESTS_PER_MODEL])
        # Both models were trained on the same records: each request's plan names both models.
        requests = [_approved_request(record) for record in records]
        _drive(requests, hosts, timeout=420)
    finally:
        hosts.stop()
    print(f"multi-host batch: {len(requests)} requests, kills: {hosts.kills}, "
          f"{time.monotonic() - started:.0f} s")

    assert len(hosts.kills) == KILLS, hosts.kills
    # Every request ended once, as its audits' verdicts call for, with one signed report that verifies.
    end_states = []
    for request in DeletionRequest.objects.filter(pk__in=[r.pk for r in requests]):
        failed_jobs = list(Job.objects.filter(status="failed").values_list("id", "kind", "error"))
        verdicts = [(o.model_version_id, o.verdict, o.status) for o in request.outcomes.all()]
        assert len(verdicts) == len(models), verdicts  # both models trained on the record
        assert request.status == _expected_end(request), (request.status, verdicts, request.failure, failed_jobs)
        for outcome in request.outcomes.exclude(verdict="PASS"):
            accepted = outcome.risk_acceptance  # by two DPO users (tests.flows.outcomes_settle)
            assert accepted.get("proposed_by") and accepted.get("confirmed_by"), accepted
        end_states.append(request.status)
        [report] = Report.objects.filter(request=request)
        assert report_verify(report_pdf_bytes(report=report)) == []
        signed = [e for e in LedgerEvent.objects.filter(request_ref=request.public_id)
                  if json.loads(e.payload).get("type") == "report.signed"]
        assert len(signed) == 1
    print(f"end states: {end_states.count('COMPLETED')} COMPLETED, "
          f"{end_states.count('CLOSED_RISK_ACCEPTED')} CLOSED_RISK_ACCEPTED")
    # Every unlearning job made exactly one version, whatever its attempts; jobs were re-run after the kills.
    unlearn = list(Job.objects.filter(kind="unlearn", registered_model__in=models))
    assert all(j.status == "succeeded" for j in unlearn), [(j.id, j.status, j.error) for j in unlearn]
    for model in models:
        versions = list(ModelVersion.objects.filter(model=model))
        assert len(versions) == 1 + len([j for j in unlearn if j.registered_model_id == model.id])
        assert len({v.parent_id for v in versions}) == len(versions)  # a chain: no version unlearned twice
    assert Job.objects.filter(attempts__gt=1).exists()  # the killed jobs were taken up again

    # No orphans: after the garbage collector, every object in the bucket is something the registry holds.
    store = artifact_store()
    artifact_store_gc(min_age_seconds=0)
    present = set(StoredArtifact.objects.filter(status="present").exclude(kind="dataset_cache")
                  .values_list("sha256", flat=True))
    held = {a for top in present for a in store.closure(top)}
    blobs = {e["sha256"] for a in held for e in store.manifest(a).files.values()}
    manifests, stored_blobs, partials = store.scan()
    assert set(manifests) == held and set(stored_blobs) == blobs and not partials
    files = {area: shared_files(area).names() for area in ("datasets", "pending-uploads", "reports")}
    assert files["pending-uploads"] == []
    assert sorted(files["reports"]) == sorted(f"{sha}.pdf" for sha in Report.objects.filter(
        request__in=requests).values_list("pdf_sha256", flat=True))
    assert {n.split("/")[0] for n in files["datasets"]} == {"breast_cancer"}
    location = store.objects.location
    listing = store.objects.client.list_object_versions(Bucket=location.bucket, Prefix=location.key(""))
    current = {v["Key"] for v in listing.get("Versions", []) if v["IsLatest"]}
    # Nothing removed left a version or a delete marker behind (a present object may have older
    # versions of its own content: a put of stored content makes it young again by a copy).
    leftover = {v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])} - current
    assert len(current) < 1000 and leftover == set(), sorted(leftover)[:10]
    # No file of the run on any host's disk.
    for root in hosts.roots:
        assert _files_under(root) == [], (root.name, _files_under(root)[:20])
