"""`make demo`: the main job end to end, on embedded services, as a user would run it.

Starts the embedded PostgreSQL and Redis, a real Celery worker process and the web API under
gunicorn; registers the reference datasets with their records and subjects; trains a SISA model on
MNIST and a plain model on the breast-cancer table (lineage recorded by the recipes) and their
shadow models; then acts as outside clients over HTTP with API tokens: submits deletion requests
(one person with data in both models, one with data in one, one with none, and a duplicate
submission with the same Idempotency-Key), approves them as the DPO, waits for the workers,
confirms the new versions as the serving side, and prints per request its final status, method and
guarantee class per model, verdict, signed PDF and time from receipt to completion. A student
distilled from the breast-cancer model over the training API is unlearned after it: re-distilled
from the parent's audited new version, then audited itself.
Exits 0 only if every request completed and every PDF verifies.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MNIST_SISA = {
    "architecture": {"name": "small_cnn", "config": {"num_classes": 10, "channels": [8, 16], "hidden": 32}},
    "shards": 5, "slices": 4, "slice_epochs": [6, 3, 2, 1], "lr": 3e-3, "batch_size": 32, "seed": 7,
}
# Canaries planted in the MNIST model's training (workers.canaries): its audits state the pipeline's
# power on them beside the forget records' own. Measured (benchmarks/canary_cost.py, 2026-12-07): the
# draw takes under 0.1 s and 10 more records in 4,024 add nothing measurable to the training time.
# This SISA ensemble barely memorises them (median probability of the planted label 0.0005, 0.0001
# without them): with 8 shadow models canary_power detected 0 of 10, and the report says so.
MNIST_CANARIES = 10
BC_PLAIN = {
    "architecture": {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [32, 16]}},
    "epochs": 30, "lr": 3e-3, "batch_size": 32, "seed": 7,
}
# A smaller student distilled from the breast-cancer model on its training records (the transfer set).
BC_STUDENT = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16]}}
BC_DISTILL = {"epochs": 20, "lr": 3e-3, "batch_size": 32, "seed": 7, "temperature": 2.0}


def say(text: str = "") -> None:
    print(text, flush=True)


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


class Bar:
    """A progress bar (tqdm) fed with absolute percentages; in a log (stdout not a terminal) one
    plain line at each quarter instead, so that CI logs stay readable."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last = 0.0
        self.tty = sys.stdout.isatty()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc=f"  {label:<34}", bar_format="{desc} {bar} {n:3.0f}% {postfix}",
                            file=sys.stdout, ncols=100)
        self.printed = -1

    def update(self, percent: float, note: str = "") -> None:
        percent = max(self.last, min(100.0, percent))
        if self.bar is not None:
            self.bar.update(percent - self.last)
            self.bar.set_postfix_str(note[:28], refresh=True)
        elif int(percent // 25) > self.printed:
            self.printed = int(percent // 25)
            print(f"  {self.label:<34} {percent:3.0f}% {note[:40]}", flush=True)
        self.last = percent

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def wait_jobs(jobs, label_of) -> None:
    from workers.models import Job, JobStatus

    done = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
    bars = {job.pk: Bar(label_of(job)) for job in jobs}
    pending = set(bars)
    while pending:
        for job in Job.objects.filter(pk__in=pending):
            bars[job.pk].update(job.progress_percent, job.progress_stage)
            if job.status in done:
                if job.status != JobStatus.SUCCEEDED:
                    for bar in bars.values():
                        bar.close()
                    raise SystemExit(f"job {job.pk} ({job.kind}) {job.status}: {job.error}")
                bars[job.pk].update(100, "done")
                pending.discard(job.pk)
        time.sleep(0.5)
    for bar in bars.values():
        bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the deletion platform end to end on bundled data.")
    parser.add_argument("--shadows", type=int, default=32,
                        help="shadow models per model (complementary pairs: 32 put every record OUT in 16, "
                             "what an approximate verdict needs)")
    args = parser.parse_args(argv)
    started_demo = time.perf_counter()
    prepare_platform()
    port = _free_port(8000)
    processes = start_stack(port)
    try:
        return _run(args, port, started_demo)
    finally:
        stop_stack(*processes)


def prepare_platform() -> None:
    """Embedded PostgreSQL and Redis (unless DATABASE_URL is set), Django, migrations, roles and
    the development signing identity."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deletion_platform.settings")
    from deletion_platform import embedded

    say("== 1. Services")
    services = embedded.ensure_running() if not os.environ.get("DATABASE_URL") else None
    if services:
        say(f"  PostgreSQL and Redis running under {services.data_dir} (Unix sockets, nothing on the network)")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if _has_command("setup_roles"):
        call_command("setup_roles", stdout=io.StringIO())
    from audits.signing import ensure_dev_signing_identity

    note = ensure_dev_signing_identity()
    if note:
        say(f"  {note}")


def start_stack(port: int, *, name: str = "demo", single_worker: bool = False) -> tuple[subprocess.Popen, ...]:
    """The web API under gunicorn on ``port`` and two real Celery worker processes, as a deployment
    has them: one for the training queue (gpu: training, unlearning, shadow models) and one for
    audits, reports and checks (audit, default), so a report never waits behind a long training.
    ``single_worker``: one worker on every queue instead (benchmarks that kill "the" worker)."""
    from django.conf import settings

    from deletion_platform import embedded

    logs = Path(settings.DATA_DIR) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # The processes run as the application's role (ledger: SELECT and INSERT only), not as the
    # schema owner that migrated.
    url = os.environ.get("DATABASE_URL") or embedded.services_for(Path(settings.DATA_DIR)).database_url
    env = {**os.environ, "DATABASE_URL": embedded.app_database_url(url)}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "deletion_platform", "worker", "-Q", queues,
         "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1",
         "-n", f"{name}-{role}-{os.getpid()}@%h", "--loglevel", "INFO"], cwd=REPO, env=env,
        stdout=(logs / f"{name}-worker-{role}.log").open("ab"), stderr=subprocess.STDOUT)
        for role, queues in ((("all", "gpu,audit,default"),) if single_worker
                             else (("training", "gpu"), ("audit", "audit,default")))]
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "deletion_platform.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--log-level", "warning"], cwd=REPO, env=env,
        stdout=(logs / f"{name}-web.log").open("ab"), stderr=subprocess.STDOUT)
    return (web, *workers)


def stop_stack(*processes: subprocess.Popen) -> None:
    """Stop the processes; a worker still training (shadow models replenished after a purge) is
    killed after a short wait: its job is recovered by the next worker (a heartbeat-less running
    job is re-queued)."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _has_command(name: str) -> bool:
    from django.core.management import get_commands

    return name in get_commands()


def _run(args, port: int, started_demo: float) -> int:
    import requests

    from audits.reports import report_verify
    from deletion.models import DeletionRequest
    from foundation.access.authentication import api_token_create
    from models_registry.models import DataRecord
    from models_registry.services import registered_model_create
    from workers.datasets.reference import reference_records
    from workers.reference_data import reference_dataset_register
    from workers.services import model_train, shadow_models_train

    base = f"http://127.0.0.1:{port}"
    _wait_http(base)
    say(f"  web API on {base}, two Celery worker processes (queue gpu: training; queues audit, default: "
        "audits and reports)")

    say("\n== 2. Reference datasets (records and subjects; identifiers pseudonymised on import)")
    datasets = {}
    for name in ("mnist", "breast_cancer"):
        t = time.perf_counter()
        datasets[name] = reference_dataset_register(name=name)
        count = DataRecord.objects.filter(dataset=datasets[name]).count()
        subjects = DataRecord.objects.filter(dataset=datasets[name]).values("subject").distinct().count()
        say(f"  {name:<14} {count:>5} records of {subjects:>4} subjects ({time.perf_counter() - t:.1f} s)")

    say("\n== 3. Training with record-level lineage, then shadow models for the audits")
    run_id = uuid.uuid4().hex[:6]
    mnist_model = registered_model_create(name=f"mnist-sisa-{run_id}", task="classification",
                                          training_recipe="sisa", architecture=MNIST_SISA["architecture"])
    bc_model = registered_model_create(name=f"breast-cancer-{run_id}", task="classification",
                                       training_recipe="plain", architecture=BC_PLAIN["architecture"],
                                       unlearning_policy={"approximate_method": "finetune", "exact_after": 3})
    # A model being retired: the DPO withdraws it (Art. 18) and has it erased rather than unlearned.
    legacy_model = registered_model_create(name=f"breast-cancer-legacy-{run_id}", task="classification",
                                           training_recipe="plain", architecture=BC_PLAIN["architecture"],
                                           unlearning_policy={"approximate_method": "finetune"})
    # A triage model whose approximate result the DPO accepts with its residual risk (two DPO users).
    triage_model = registered_model_create(name=f"breast-cancer-triage-{run_id}", task="classification",
                                           training_recipe="plain", architecture=BC_PLAIN["architecture"],
                                           unlearning_policy={"approximate_method": "finetune"})
    trainings = [model_train(model=mnist_model, dataset=datasets["mnist"], recipe_config=MNIST_SISA,
                             canaries=MNIST_CANARIES),
                 model_train(model=bc_model, dataset=datasets["breast_cancer"], recipe_config=BC_PLAIN),
                 model_train(model=legacy_model, dataset=datasets["breast_cancer"],
                             recipe_config={**BC_PLAIN, "seed": BC_PLAIN.get("seed", 0) + 1}),
                 model_train(model=triage_model, dataset=datasets["breast_cancer"],
                             recipe_config={**BC_PLAIN, "seed": BC_PLAIN.get("seed", 0) + 2})]
    wait_jobs(trainings, lambda job: f"train {job.registered_model.name}")
    versions = {}
    for job in trainings:
        job.refresh_from_db()
        versions[job.registered_model.name] = job.result_version
        metrics = job.result_version.metrics
        planted = f" and {job.result['canaries']} planted canaries" if job.result.get("canaries") else ""
        say(f"  {job.registered_model.name} v1: {job.result.get('members')} training records{planted} in its lineage, "
            f"test accuracy {metrics.get('test_accuracy', metrics.get('accuracy', 'n/a'))}")
    shadow_jobs = [shadow_models_train(version=v, count=args.shadows) for v in versions.values()
                   if v.model_id != legacy_model.id]  # withdrawn, never audited
    wait_jobs(shadow_jobs, lambda job: f"{args.shadows} shadows of {job.registered_model.name}")

    say("\n== 4. API clients")
    _, intake_token = api_token_create(name="web-form", role="intake")
    dpo_token, second_dpo_token = dpo_tokens()
    _, serving_token = api_token_create(name="serving-side", role="ml_engineer")
    say("  tokens created for: web-form (intake), dpo-console and dpo-second (held by the DPO users dpo and "
        "dpo2: accepting a residual risk takes two people), serving-side (ml_engineer)")
    student = _distil_student(base, serving_token, parent=versions[bc_model.name], dataset=datasets["breast_cancer"],
                              run_id=run_id)

    rows = {name: [r for r in reference_records(datasets[name].storage_location) if r["split"] == "train"]
            for name in datasets}
    # People whose records are still active (a re-run of the demo must not pick someone erased).
    active = set(DataRecord.objects.filter(status="active").values_list("external_key", flat=True))
    patients = [r for r in rows["breast_cancer"] if r["record_key"] in active]
    writers = [r for r in rows["mnist"] if r["record_key"] in active]
    patient, writer = patients[3], writers[3]
    other_writer = next(r for r in writers[40:] if r["subject"]["email"] != writer["subject"]["email"])
    submissions = [
        ("person in both models", {"email": patient["subject"]["email"],
                                   "customer_id": writer["subject"]["customer_id"]}, "key-both"),
        ("person in one model", {"email": other_writer["subject"]["email"]}, "key-one"),
        ("person with no data", {"email": "nobody.here@example.org"}, "key-none"),
        ("duplicate submission", {"email": other_writer["subject"]["email"]}, "key-one"),
    ]
    say("\n== 5. Deletion requests over HTTP")
    intake = requests.Session()
    intake.headers["Authorization"] = f"Bearer {intake_token}"
    dpo = requests.Session()
    dpo.headers["Authorization"] = f"Bearer {dpo_token}"
    second_dpo = requests.Session()
    second_dpo.headers["Authorization"] = f"Bearer {second_dpo_token}"
    serving = requests.Session()
    serving.headers["Authorization"] = f"Bearer {serving_token}"
    request_ids: dict[str, str] = {}
    for label, identifiers, key in submissions:
        response = intake.post(f"{base}/api/v1/deletion-requests/", headers={"Idempotency-Key": f"{run_id}-{key}"},
                               json={"identifiers": identifiers, "jurisdiction": "GDPR", "legal_ground": "art17_1_b",
                                     "channel": "web-form"}, timeout=30)
        response.raise_for_status()
        body = response.json()
        say(f"  {label:<22} -> HTTP {response.status_code} request {body['id']}"
            + (" (the original, not a new one)" if response.status_code == 200 else ""))
        request_ids.setdefault(body["id"], label)
    say("\n== 6. The DPO verifies and approves every request; workers unlearn, audit and purge, the")
    say("   serving side confirms the new versions, the reports are signed. Requests on the same model")
    say("   queue behind each other: each unlearns from the version the one before produced, once audited.")
    for request_id in request_ids:
        verified = dpo.post(f"{base}/api/v1/deletion-requests/{request_id}/verify/", timeout=60, json={
            "method": "signed-in account + e-mail link", "verified_at": "2026-11-25T09:00:00Z", "verifier": "dpo"})
        verified.raise_for_status()
        plan = verified.json()["plan"]
        steps = ", ".join(f"{p['model']}: {p['method']} ({p['guarantee_class']})" for p in plan) or "nothing holds the data"
        say(f"  scoped {request_id[:8]}: {verified.json()['scope']['records']} records; plan: {steps}")
        for step in plan:  # said before the method runs
            if step.get("audit_cannot_confirm"):
                say(f"    {step['model']}: {step['audit_cannot_confirm']}")
        dpo.post(f"{base}/api/v1/deletion-requests/{request_id}/approve/", json={}, timeout=60).raise_for_status()
    finished = _follow(base, request_ids, (dpo, second_dpo), serving)

    say("\n== 7. Results")
    ok = True
    from audits.models import Report

    for request_id, label in request_ids.items():
        state = finished.get(request_id) or {"status": "TIMED OUT", "outcomes": []}
        request = DeletionRequest.objects.get(public_id=request_id)
        seconds = (request.completed_at - request.received_at).total_seconds() if request.completed_at else None
        say(f"  {label}: request {request_id}")
        say(f"    status {state['status']}; receipt to completion {seconds:.1f} s" if seconds else
            f"    status {state['status']}")
        for outcome in state["outcomes"]:
            say(f"    {outcome['model']} v{outcome['version']} -> v{_version_number(outcome['new_version_id'])}: "
                f"{outcome['method']} ({outcome['guarantee_class']}), verdict {outcome['verdict'] or 'none'}, "
                f"{outcome['status']}")
            if outcome["model"] == student.model.name:
                derived_ok = _derived_summary(request, outcome)
                ok = ok and derived_ok
        if not state["outcomes"]:
            say("    no model held this person's data")
        report = Report.objects.filter(request=request).order_by("-id").first()
        if report is None:
            ok = False
            say("    NO REPORT")
        else:
            problems = report_verify(report.pdf_path)
            say(f"    signed report: {report.pdf_path} ({'signature and ledger head verified' if not problems else '; '.join(problems)})")
            ok = ok and not problems
            # The report's first page states how the request ended; it must be what the request says.
            ended = report.json.get("end_state", {}).get("status")
            say(f"    report's first page: {ended}")
            ok = ok and ended == state["status"]
        ok = ok and state["status"] in ("COMPLETED", "CLOSED_RISK_ACCEPTED")

    logins = ", ".join(f"{username} / {_dpo_login(username)}" for _, username in DPO_CONSOLES)
    say(f"\n== Done in {time.perf_counter() - started_demo:.0f} s. {'Every request ended as its evidence supports, its report says so, and every PDF verifies.' if ok else 'SOMETHING FAILED (see above).'}")
    say("  Browse: make serve, then http://127.0.0.1:8000/admin/ "
        f"(DPO logins: {logins}); API docs at /api/docs/")
    return 0 if ok else 1


def _distil_student(base: str, token: str, *, parent, dataset, run_id: str):
    """An ML engineer distils a smaller student from the breast-cancer model over the training API
    (``parent_version``); the version it registers carries the distilled_from lineage edge, so a
    request that reaches the parent re-distils the student from the parent's unlearned version."""
    import requests

    from models_registry.services import registered_model_create
    from workers.models import Job

    model = registered_model_create(name=f"breast-cancer-student-{run_id}", task="classification",
                                    training_recipe="distill", architecture=BC_STUDENT)
    response = requests.post(f"{base}/api/v1/training-jobs/", headers={"Authorization": f"Bearer {token}"},
                             json={"model": model.name, "dataset": dataset.id, "recipe_config": BC_DISTILL,
                                   "parent_version": parent.id}, timeout=30)
    response.raise_for_status()
    job = Job.objects.get(pk=response.json()["id"])
    wait_jobs([job], lambda job: f"distil {model.name}")
    job.refresh_from_db()
    version = job.result_version
    edge = version.upstream_edges.get()
    say(f"  {model.name} v{version.version}: {edge.kind.replace('_', ' ')} {parent.model.name} v{parent.version} over "
        f"the API on {job.result.get('members')} transfer records, test accuracy {version.metrics.get('test_accuracy')}")
    return version


def _derived_summary(request, outcome: dict) -> bool:
    """Print how a derived child was unlearned: re-derived from which new version of its parent, with
    which class cap, and that its job ran after the parent's audit. True when it was unlearned and
    audited after its parent."""
    from deletion.models import ModelOutcome

    child = ModelOutcome.objects.select_related("job", "audit_job").get(request=request,
                                                                         model_version_id=outcome["model_version_id"])
    details = ((child.job.result or {}).get("unlearning") or {}).get("details") or {} if child.job else {}
    parent = details.get("derived_from")
    if not parent:
        say("    derived child: NOT re-derived (see its job)")
        return False
    parent_outcome = (ModelOutcome.objects.select_related("audit_job")
                      .filter(request=request, model_version_id=parent["version_id"]).first())
    audited_first = (parent_outcome is not None and parent_outcome.audit_job is not None and child.job.started_at
                     and parent_outcome.audit_job.finished_at and child.job.started_at > parent_outcome.audit_job.finished_at)
    new_parent = details.get("parent_new_version") or {}
    say(f"      {parent['kind'].replace('_', ' ')} {parent['model']} v{parent['version']}: re-distilled from its "
        f"v{new_parent.get('version')} ({new_parent.get('guarantee_class')}) "
        f"{'after' if audited_first else 'NOT after'} the parent's audit; class cap {details.get('class_cap')}; "
        f"own audit {child.verdict or 'none'} ({(child.audit or {}).get('shadow_models', 0)} shadow models: a derived "
        "model has no reference that never saw its parent's records)")
    return bool(audited_first and child.verdict)


def _follow(base: str, request_ids: dict[str, str], dpos, serving) -> dict[str, dict]:
    """Poll the requests to their ends, confirming deployments and deciding on every result that
    did not pass (see _decide). Returns each request's state."""
    bars = {rid: Bar(f"request {rid[:8]} ({label})") for rid, label in request_ids.items()}
    escalated: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 3600
    states: dict[str, dict] = {}
    open_ids = list(request_ids)
    dpo = dpos[0]
    while open_ids and time.monotonic() < deadline:
        _deploy_pending(base, serving)
        for request_id in list(open_ids):
            state = states[request_id] = dpo.get(f"{base}/api/v1/deletion-requests/{request_id}/", timeout=30).json()
            _decide(base, request_id, state, dpos, escalated, bars[request_id])
            jobs = [o["job"] for o in state["outcomes"] if o.get("job")]
            percent = sum(j["percent"] for j in jobs) / len(jobs) if jobs else 0.0
            share = {"EXECUTING": 0.6, "AUDITING": 0.9}.get(state["status"], 0.1)
            stages = [j.get("stage", "") for j in jobs if str(j.get("stage", "")).startswith("waiting")]
            note = "waiting for the model" if stages and state["status"] == "EXECUTING" else state["status"].lower()
            bars[request_id].update(100 if state["status"] in ENDED else min(percent * share, 99), note)
            if state["status"] in ENDED:
                open_ids.remove(request_id)
        time.sleep(1)
    for bar in bars.values():
        bar.close()
    return states


ENDED = ("COMPLETED", "CLOSED_RISK_ACCEPTED", "FAILED", "REJECTED", "CANCELLED")
# The DPO's written reasons for accepting a result that does not confirm erasure, by guarantee class.
RISK_REASONS = {
    "approximate": ("{method} is approximate and the audit could not confirm erasure of one record (its power "
                    "could not be shown on a single record). The triage model is retrained without the record "
                    "at its scheduled monthly retrain; accepted until then."),
    "exact": ("{method} is exact, but the audit could not confirm it (see the verdict's reasons). Accepted "
              "while the replay is repeated on a worker with the recorded environment."),
    "suppressed": ("{method}: the output filter holds its calibrated leak bound, but the weights still hold the "
                   "data (suppression, not erasure). Accepted until the model is retrained without the records."),
}


def _deploy_pending(base: str, serving) -> None:
    """The serving side: deploy what the platform lists as ready, then confirm each."""
    pending = serving.get(f"{base}/api/v1/deployments/pending/", timeout=30)
    pending.raise_for_status()
    for item in pending.json():
        serving.post(f"{base}{item['confirm_url']}", json={"new_version_id": item["new_version_id"]},
                     timeout=30).raise_for_status()


def _decide(base: str, request_id: str, state: dict, dpos, escalated: set, bar) -> None:
    """The DPO's decisions. A model being retired is withdrawn (Art. 18) and erased as soon as the
    request is approved. On results whose audit did not pass: the triage model's inconclusive
    approximate result has its residual risk accepted by two DPO users, with the reason in
    writing; any other FAIL or inconclusive approximate result is escalated to an exact retrain; a
    FAIL after that retrain withdraws the model; what stays inconclusive after an exact method (or
    is only suppressed) has its residual risk accepted by two DPO users."""
    dpo = dpos[0]
    url = f"{base}/api/v1/deletion-requests/{request_id}"
    for outcome in state["outcomes"]:
        key = (request_id, outcome["model_version_id"])
        if outcome["model"].startswith("breast-cancer-legacy-") and outcome["status"] != "withdrawn":
            bar.write(f"  {outcome['model']} is being retired: the DPO withdraws it from serving and has it erased")
            dpo.post(f"{url}/withdraw-model/", json={"model_version_id": outcome["model_version_id"],
                                                      "reason": "model retired: withdrawn and erased, not unlearned"},
                     timeout=30).raise_for_status()
            continue
        if outcome["status"] not in ("audit_failed", "awaiting_decision"):
            continue
        verdict, name = outcome["verdict"], outcome["model"]
        if verdict == "FAIL" and key in escalated:
            bar.write(f"  audit FAIL again on {name}: the DPO withdraws it from serving")
            dpo.post(f"{url}/withdraw-model/", json={"model_version_id": outcome["model_version_id"],
                                                      "reason": "audit failed after an exact retrain"},
                     timeout=30).raise_for_status()
        elif (verdict == "INCONCLUSIVE" and outcome["guarantee_class"] == "approximate"
              and name.startswith("breast-cancer-triage-") and not outcome["risk_acceptance"].get("confirmed_by")):
            _accept_risk(url, outcome, dpos, bar)
        elif (verdict == "FAIL" or outcome["guarantee_class"] == "approximate") and key not in escalated:
            escalated.add(key)
            bar.write(f"  audit {verdict} on {name} ({outcome['method']}): the DPO escalates to an exact retrain")
            response = dpo.post(f"{url}/escalate/", json={"model_version_id": outcome["model_version_id"]}, timeout=30)
            if response.status_code == 409 and response.json()["error"]["code"] == "escalation_impossible":
                bar.write(f"  {name} cannot be retrained (its files are gone): the DPO withdraws it")
                dpo.post(f"{url}/withdraw-model/", json={"model_version_id": outcome["model_version_id"],
                                                          "reason": response.json()["error"]["message"][:500]},
                         timeout=30).raise_for_status()
            else:
                response.raise_for_status()
        elif not outcome["risk_acceptance"].get("confirmed_by"):
            _accept_risk(url, outcome, dpos, bar)


def _accept_risk(url: str, outcome: dict, dpos, bar) -> None:
    """Two DPO users accept the residual risk of a result that did not pass, with the reason in writing."""
    dpo, second_dpo = dpos
    reason = RISK_REASONS.get(outcome["guarantee_class"], RISK_REASONS["exact"]).format(method=outcome["method"])
    what = "suppression" if outcome["guarantee_class"] == "suppressed" else "the residual risk"
    bar.write(f"  audit {outcome['verdict']} on {outcome['model']} ({outcome['method']}): two DPO users accept {what}")
    body = {"model_version_id": outcome["model_version_id"], "reason": reason}
    dpo.post(f"{url}/accept-risk/", json=body, timeout=30).raise_for_status()
    second_dpo.post(f"{url}/accept-risk/", json=body, timeout=30).raise_for_status()


def _version_number(version_id) -> str:
    from models_registry.models import ModelVersion

    if not version_id:
        return "-"
    return str(ModelVersion.objects.get(pk=version_id).version)


def _wait_http(base: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{base}/api/schema/", timeout=5)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise SystemExit(f"the web server on {base} did not start (see .data/logs/demo-web.log)") from None
            time.sleep(0.3)


# The DPO consoles' API tokens and the DPO users who hold them: accepting a residual risk takes two
# people, and the platform counts the user a token is bound to, never the token.
DPO_CONSOLES = (("dpo-console", "dpo"), ("dpo-second", "dpo2"))


def dpo_tokens() -> tuple[str, ...]:
    """One API token per DPO console, each bound to its own DPO user (a login made by
    :func:`_dpo_login`). Returns the tokens, in DPO_CONSOLES' order."""
    from foundation.access.authentication import api_token_create

    tokens = []
    for token_name, username in DPO_CONSOLES:
        _dpo_login(username)
        tokens.append(api_token_create(name=token_name, role="dpo", user=username)[1])
    return tuple(tokens)


def _dpo_login(username: str = "dpo") -> str:
    """A staff user ``username`` in the dpo group; its password is generated once and kept under
    DATA_DIR (secrets/<username>_password)."""
    from django.conf import settings
    from django.contrib.auth.models import Group, User

    path = Path(settings.DATA_DIR) / "secrets" / f"{username}_password"
    if path.exists():
        password = path.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password)
        path.chmod(0o600)
    user, _ = User.objects.get_or_create(username=username, defaults={"is_staff": True})
    user.is_staff = user.is_active = True
    user.set_password(password)
    user.save()
    group, _ = Group.objects.get_or_create(name="dpo")
    user.groups.add(group)
    return password


if __name__ == "__main__":
    sys.exit(main())
