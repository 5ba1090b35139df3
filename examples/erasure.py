"""The other side of every example: one person's erasure request, over the platform's REST API only.

The data-protection officer files the request for a person (identifiers as the person gave them),
verifies and approves it; the workers unlearn and audit; the serving side deploys each new version it
is offered and confirms it; on a result the audit could not confirm, the DPO decides (escalate to an
exact retrain, or two DPO users accept the residual risk in writing); the platform signs the report.
:func:`take_to_the_end` does all of that and saves the signed PDF; :func:`conclude` prints the
verdict and the end state as a script's last two lines (``verdict: PASS``, ``end state: COMPLETED``).

Standard library and the lineage client only, like the scripts that import it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from lineage_client import PlatformClient, PlatformError

ENDED = ("COMPLETED", "CLOSED_RISK_ACCEPTED", "FAILED", "REJECTED", "CANCELLED")
# How the person's identity was checked before the request goes on (what the DPO's team records).
EVIDENCE = {"method": "signed-in account + e-mail link", "verified_at": "2026-11-25T09:00:00Z",
            "verifier": "privacy desk"}


def say(text: str) -> None:
    print(text, flush=True)


def platform_arguments(parser: argparse.ArgumentParser, *, second_dpo: bool = False) -> None:
    """The options every example takes: where the platform is, the API tokens (or their environment
    variables), ``--small``, where the signed report goes, and the run's tag (names on the platform and
    the synthetic people are new each run: an erased person is on the suppression list, and a later
    import that holds them again is refused)."""
    env = os.environ.get
    parser.add_argument("--url", default=env("PLATFORM_URL", "http://127.0.0.1:8000"),
                        help="the platform (PLATFORM_URL)")
    parser.add_argument("--engineer-token", default=env("PLATFORM_ENGINEER_TOKEN"),
                        help="an ml_engineer API token (PLATFORM_ENGINEER_TOKEN)")
    parser.add_argument("--dpo-token", default=env("PLATFORM_DPO_TOKEN"),
                        help="a dpo API token (PLATFORM_DPO_TOKEN), bound to its DPO user where it accepts a risk")
    if second_dpo:
        parser.add_argument("--second-dpo-token", default=env("PLATFORM_SECOND_DPO_TOKEN"),
                            help="a second DPO user's token (PLATFORM_SECOND_DPO_TOKEN): accepting a residual "
                                 "risk takes two people, so each token is bound to its own DPO user")
    parser.add_argument("--small", action="store_true", help="tiny data and models (seconds, for tests)")
    parser.add_argument("--out", type=Path, default=Path("example-output"), help="where the signed report is saved")
    parser.add_argument("--tag", default=uuid.uuid4().hex[:6], help="suffix of this run's names (default: random)")


def required_tokens(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    missing = [name for name in ("engineer_token", "dpo_token", "second_dpo_token")
               if hasattr(args, name) and not getattr(args, name)]
    if missing:
        parser.error("missing API token(s): " + ", ".join("--" + name.replace("_", "-") for name in missing)
                     + " (python manage.py create_api_token --role ml_engineer|dpo --name ...; a DPO's token "
                       "--user <their username>)")


def job_done(client: PlatformClient, job: dict, *, poll: float = 0.5, timeout: float = 1800) -> dict:
    """Follow a platform job (training, shadow models) until it ends; SystemExit when it did not succeed."""
    deadline = time.monotonic() + timeout
    while job["status"] in ("pending", "running"):
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job['id']} still {job['status']} after {timeout:.0f} s")
        time.sleep(poll)
        job = client.job(job["id"])
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['id']} ({job['kind']}) {job['status']}: {job['error']}")
    return job


@dataclass
class Ending:
    """How a request ended: its status, the report's overall verdict, the report and its signed PDF."""

    status: str
    verdict: str
    report: dict | None
    pdf: Path | None


class ErasureDesk:
    """The DPO's console and the serving side, each with its own API token. ``second_dpo_token``: a
    second DPO user's, needed only to accept a residual risk (two people must: the platform counts
    the users the two tokens are bound to, and refuses a token bound to no one)."""

    def __init__(self, url: str, *, dpo_token: str, serving_token: str, second_dpo_token: str | None = None,
                 poll: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.dpo = PlatformClient(self.url, dpo_token, backoff=0.2)
        self.serving = PlatformClient(self.url, serving_token, backoff=0.2)
        self.second_dpo = PlatformClient(self.url, second_dpo_token, backoff=0.2) if second_dpo_token else None
        self.poll = poll

    def file(self, identifiers: dict, *, attempts: int = 3) -> dict:
        """File the request (GDPR Art. 17(1)(b), consent withdrawn). With its Idempotency-Key a repeat of
        the call answers the same request, so a call whose connection broke is sent again; the lineage
        client's request helper sends no such header, hence plain urllib here."""
        body = json.dumps({"identifiers": identifiers, "jurisdiction": "GDPR", "legal_ground": "art17_1_b",
                           "channel": "privacy-portal"}).encode()
        headers = {"Authorization": f"Bearer {self.dpo.token}", "Content-Type": "application/json",
                   "Accept": "application/json", "Idempotency-Key": uuid.uuid4().hex}
        request = urllib.request.Request(f"{self.url}/api/v1/deletion-requests/", data=body, headers=headers,
                                         method="POST")
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                with exc:
                    refusal = exc.read()[:500].decode("utf-8", "replace")
                raise SystemExit(f"the platform refused the request: HTTP {exc.code} {refusal}") from None
            except OSError:  # refused, reset, timed out: the same key again
                attempt += 1
                if attempt >= attempts:
                    raise
                time.sleep(attempt)

    def verify_and_approve(self, request_id: str) -> dict:
        """Record how the person's identity was checked (the platform scopes the request through its
        lineage), print the plan, approve it. Returns the approved request."""
        scoped = self.dpo.request("POST", f"/api/v1/deletion-requests/{request_id}/verify/", json_body=EVIDENCE)
        say(f"  scoped: {scoped['scope'].get('records', 0)} record(s) of this person; status {scoped['status']}")
        for step in scoped["plan"]:
            say(f"  plan: {step['model']} v{step['version']}: {step['method']} ({step['guarantee_class']})")
            if step.get("audit_cannot_confirm"):
                say(f"    said before it runs: {step['audit_cannot_confirm']}")
        if not scoped["plan"]:
            say("  plan: no model was trained on this person's records")
        return self.dpo.request("POST", f"/api/v1/deletion-requests/{request_id}/approve/", json_body={})

    def follow(self, request_id: str, *, risk_reason: str | None = None, timeout: float = 1800) -> dict:
        """Poll the request to its end. Meanwhile the serving side deploys and confirms what the
        platform offers for this request, and the DPO decides on a result that did not pass: with
        ``risk_reason``, an INCONCLUSIVE result's residual risk is accepted by both DPO users with that
        reason in writing; otherwise, and for a FAIL, it is escalated once to an exact retrain (a FAIL
        after that withdraws the model). Returns the request as it ended."""
        escalated: set[int] = set()
        seen: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            state = self.dpo.request("GET", f"/api/v1/deletion-requests/{request_id}/", retry=True)
            for outcome in state["outcomes"]:
                shown = f"{outcome['status']}/{outcome['verdict'] or '-'}"
                if seen.get(outcome["model_version_id"]) != shown:
                    seen[outcome["model_version_id"]] = shown
                    say(f"  {outcome['model']} v{outcome['version']}: {outcome['method']} "
                        f"({outcome['guarantee_class']}) {outcome['status']}"
                        + (f", audit {outcome['verdict']}" if outcome["verdict"] else ""))
                self._decide(request_id, outcome, escalated, risk_reason)
            if state["status"] in ENDED:
                return state
            self._deploy(request_id)
            if time.monotonic() > deadline:
                raise SystemExit(f"request {request_id} still {state['status']} after {timeout:.0f} s")
            time.sleep(self.poll)

    def _deploy(self, request_id: str) -> None:
        """The serving side: deploy each new version the platform lists for this request, then confirm it."""
        for item in self.serving.request("GET", "/api/v1/deployments/pending/", retry=True):
            if item["request_id"] == request_id:
                say(f"  serving side deploys {item['model']} v{item['new_version']} "
                    f"(sha256 {item['new_artifact_sha256'][:12]}...) and confirms it")
                self.serving.request("POST", item["confirm_url"], json_body={"new_version_id": item["new_version_id"]})

    def _decide(self, request_id: str, outcome: dict, escalated: set[int], risk_reason: str | None) -> None:
        if outcome["status"] not in ("awaiting_decision", "audit_failed"):
            return
        path = f"/api/v1/deletion-requests/{request_id}"
        body = {"model_version_id": outcome["model_version_id"]}
        if outcome["verdict"] == "INCONCLUSIVE" and risk_reason:
            if self.second_dpo is None:
                raise SystemExit("accepting a residual risk takes two DPO users: give a second DPO token, "
                                 "bound to another DPO user than the first")
            accepted = outcome["risk_acceptance"]
            if not accepted.get("proposed_by"):
                say(f"  two DPO users accept the residual risk on {outcome['model']}: {risk_reason}")
                self.dpo.request("POST", f"{path}/accept-risk/", json_body={**body, "reason": risk_reason})
            if not accepted.get("confirmed_by"):  # the second user confirms by the same call
                self.second_dpo.request("POST", f"{path}/accept-risk/", json_body={**body, "reason": risk_reason})
        elif outcome["model_version_id"] not in escalated:
            escalated.add(outcome["model_version_id"])
            say(f"  audit {outcome['verdict']} on {outcome['model']}: the DPO escalates to an exact retrain")
            self.dpo.request("POST", f"{path}/escalate/", json_body=body)
        elif outcome["verdict"] == "FAIL":
            say(f"  audit FAIL again on {outcome['model']}: the DPO withdraws the model from serving")
            self.dpo.request("POST", f"{path}/withdraw-model/",
                             json_body={**body, "reason": "audit failed after an exact retrain"})
        else:
            raise SystemExit(f"{outcome['model']}: still INCONCLUSIVE after an exact retrain; the DPO decides in "
                             "the admin (accept the residual risk, or withdraw the model)")

    def report(self, state: dict, out: Path) -> tuple[dict | None, Path | None]:
        """The signed report of an ended request (found by the ledger's ``report.signed`` event in its
        timeline): its data, and its PDF saved under ``out`` with the data beside it (``.json``)."""
        signed = [e for e in state["timeline"] if e["event"] == "report.signed"]
        if not signed:
            return None, None
        report_id = signed[-1]["data"]["report"]
        report = self.dpo.request("GET", f"/api/v1/reports/{report_id}/", retry=True)
        out.mkdir(parents=True, exist_ok=True)
        pdf = out / f"erasure-report-{state['id']}.pdf"
        pdf.write_bytes(_get_bytes(self.dpo, f"/api/v1/reports/{report_id}/pdf/"))
        pdf.with_suffix(".json").write_text(json.dumps(report["report"], indent=1))
        say(f"  signed report {report_id}: {pdf} (signer {report['signer']}, {report['signature_profile']})")
        return report, pdf


def overall_verdict(report: dict | None) -> str:
    """The report's overall result as its first page states it: FAIL if any unlearned version failed,
    INCONCLUSIVE if any could not be confirmed, PASS when all passed; ``none`` when no model had to be
    unlearned (none held the data, or each was withdrawn or held)."""
    if report is None:
        return "none"
    verdicts = [e["verdict"]["verdict"] for e in report["report"]["model_versions"]
                if e["outcome"] not in ("withdrawn", "held")]
    for worst in ("FAIL", "INCONCLUSIVE", "PASS"):
        if worst in verdicts:
            return worst
    return "none"


def take_to_the_end(desk: ErasureDesk, identifiers: dict, *, out: Path, risk_reason: str | None = None,
                    timeout: float = 1800) -> Ending:
    """File, verify and approve a request for the person behind ``identifiers``, follow it to its end,
    save its signed report under ``out``. Returns how it ended (:func:`conclude` prints it)."""
    created = desk.file(identifiers)
    request_id = created["id"]
    say(f"erasure request {request_id} filed ({created['status']}) for {', '.join(identifiers.values())}")
    desk.verify_and_approve(request_id)
    state = desk.follow(request_id, risk_reason=risk_reason, timeout=timeout)
    report, pdf = desk.report(state, out)
    if report is not None:
        first_page = report["report"].get("end_state", {}).get("status")
        if first_page != state["status"]:
            raise SystemExit(f"the report's first page says {first_page}, the request {state['status']}")
        for entry in report["report"]["model_versions"]:
            say(f"  report: {entry['model']} v{entry['version']} -> v{entry['new_version']}: {entry['method']}, "
                f"{entry['guarantee']['guarantee_class']}, {entry['verdict']['verdict']}")
    return Ending(status=state["status"], verdict=overall_verdict(report), report=report, pdf=pdf)


def conclude(ending: Ending) -> int:
    """Print the verdict and the end state as the last two lines; the exit status: 0 when the request
    ended as a report can end it (COMPLETED or CLOSED_RISK_ACCEPTED), 1 otherwise."""
    say(f"verdict: {ending.verdict}")
    say(f"end state: {ending.status}")
    return 0 if ending.status in ("COMPLETED", "CLOSED_RISK_ACCEPTED") else 1


def _get_bytes(client: PlatformClient, path: str) -> bytes:
    """A binary GET (the report's PDF): the client's request helper decodes JSON only."""
    request = urllib.request.Request(client.base_url + path, headers={
        "Authorization": f"Bearer {client.token}", "Accept": "application/pdf"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            raise PlatformError(exc.code, "http_error", exc.read()[:300].decode("utf-8", "replace")) from None
