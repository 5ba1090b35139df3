"""The platform's REST API, as a company's training code calls it (standard library only).

Requests that are safe to repeat (reads, the membership upload's calls) are retried with backoff
when the connection breaks or the platform answers 429, 502, 503 or 504; the others (registering a
dataset, a model, a run, uploading weights) are sent once, since a retry of one whose answer was
lost would register it twice. Errors of the platform (``{"error": {"code", "message", ...}}``) are
raised as :class:`PlatformError` naming the message.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lineage_client.streaming import membership_chunks

RETRIED_STATUSES = (429, 502, 503, 504)


class PlatformError(Exception):
    """The platform refused a request: ``status`` (HTTP), ``code`` (machine-readable), ``message``,
    ``fields`` and ``details`` as the platform sent them."""

    def __init__(self, status: int, code: str, message: str, *, fields: dict | None = None,
                 details: dict | None = None) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.details = details or {}


class ConnectionFailed(ConnectionError):
    """The platform could not be reached, or the connection broke, on every attempt."""


class UploadRefused(PlatformError):
    """A worker's check of uploaded weights refused them (nothing was stored)."""


class PlatformClient:
    """One platform (``base_url``, e.g. ``http://localhost:8000``) and one API token (role ``ml_engineer``).

    ``retries`` attempts more for a request safe to repeat, waiting ``backoff`` seconds doubled each
    time (with jitter, at most ``max_backoff``); ``timeout`` is per attempt.
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 300.0, retries: int = 8,
                 backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    # ---------------------------------------------------------------- registry

    def register_dataset(self, *, name: str, version: str, modality: str, purpose: str, legal_basis: str,
                         source: dict | None = None, record_schema: dict | None = None,
                         storage_location: str | None = None) -> dict:
        """Register a dataset (``source``: ``{"kind": "parquet" | "csv" | "jsonl"}`` for a file sent with
        :meth:`import_dataset_file`, or ``{"kind": "postgresql", "query": name}``; ``record_schema``
        maps its columns to records). Returns the dataset (``id``)."""
        body = {"name": name, "version": version, "modality": modality, "purpose": purpose, "legal_basis": legal_basis}
        optional = {"source": source, "record_schema": record_schema, "storage_location": storage_location}
        body.update({k: v for k, v in optional.items() if v is not None})
        return self.request("POST", "/api/v1/datasets/", json_body=body)

    def import_dataset_file(self, dataset: int, data: bytes | str | Path | None = None) -> dict:
        """Import the dataset's records from its source: the file's bytes (or path) for a file source,
        nothing for a database source. Every record or none; the 400 names the row and the column."""
        return self.request("POST", f"/api/v1/datasets/{dataset}/import/", body=_bytes(data) if data else b"",
                            content_type="application/octet-stream")

    def register_model(self, *, name: str, task: str, training_recipe: str, architecture: dict,
                       unlearning_policy: dict | None = None) -> dict:
        """Register a model; its ``architecture`` names its family (see the platform's README)."""
        return self.request("POST", "/api/v1/models/", json_body={
            "name": name, "task": task, "training_recipe": training_recipe, "architecture": architecture,
            "unlearning_policy": unlearning_policy or {}})

    def register_training_run(self, *, model: str, recipe: str, seed: int, code_version: str,
                              datasets: Sequence[int], config: dict | None = None) -> dict:
        """Register a training run of ``model`` on ``datasets`` (ids); ``config`` is what the recipe
        needs to train the same way again (epochs, lr, batch_size, ...). Returns the run (``id``)."""
        return self.request("POST", "/api/v1/training-runs/", json_body={
            "model": model, "recipe": recipe, "seed": seed, "code_version": code_version,
            "config": config or {}, "datasets": list(datasets)})

    def upload_membership(self, training_run: int, dataset: int, rows: Iterable[Sequence[Any]], *,
                          chunk_rows: int = 50_000) -> dict:
        """Stream the run's membership of ``dataset``: ``rows`` (MembershipRow or (record_key, shard,
        slice, position) tuples, in a fixed order, e.g. ``recorder.rows()``) in chunks of ``chunk_rows``.

        Resumable: the platform keeps one upload per run and dataset and says which chunks it holds;
        called again with the same rows (after a crash, say), this sends only the others. Each chunk is
        retried when the connection breaks (a chunk applied twice is applied once). Completing states
        the number of chunks and rows, which the platform checks. Returns the completed upload."""
        upload = self.request("POST", f"/api/v1/training-runs/{training_run}/membership-uploads/",
                              json_body={"dataset": dataset}, retry=True)
        held = set(upload["chunks"])
        chunks = total = 0
        for number, (body, count) in enumerate(membership_chunks(rows, chunk_rows)):
            if number not in held:
                self.request("PUT", f"/api/v1/membership-uploads/{upload['id']}/chunks/{number}/", body=body,
                             content_type="text/csv", retry=True)
            chunks, total = number + 1, total + count
        return self.request("POST", f"/api/v1/membership-uploads/{upload['id']}/complete/",
                            json_body={"chunks": chunks, "rows": total}, retry=True)

    def membership_upload(self, upload: int) -> dict:
        """An upload's state: ``status`` (open, complete), ``chunks`` held, ``rows``."""
        return self.request("GET", f"/api/v1/membership-uploads/{upload}/", retry=True)

    def upload_weights(self, model: str, training_run: int, data: bytes | str | Path, *,
                       content_type: str = "application/octet-stream", wait: bool = True,
                       timeout: float = 3600.0, poll: float = 2.0) -> dict:
        """Upload the trained weights (safetensors, a skops file, or an archive of a transformers
        model's folder with ``content_type`` application/zip or application/gzip) as a new version of
        ``model`` whose lineage is the run's membership. Returns the version; a model the platform checks
        in a worker answers 202 with an upload check, followed until it ends (``wait=False``: the
        check). UploadRefused when the check refuses the weights."""
        answer = self.request("POST", f"/api/v1/models/{urllib.parse.quote(model, safe='')}/versions/",
                              query={"training_run": training_run}, body=_bytes(data), content_type=content_type)
        if not str(answer.get("url", "")).startswith("/api/v1/upload-checks/") or not wait:  # 201: the version
            return answer
        deadline = time.monotonic() + timeout
        while answer["status"] in ("pending", "running"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"upload check {answer['id']} still {answer['status']} after {timeout:.0f} s")
            time.sleep(poll)
            answer = self.upload_check(answer["id"])
        if answer["status"] == "registered":
            return answer["version"]
        refused = answer.get("refused") or {"code": answer["status"], "message": answer.get("error") or answer["status"]}
        # 400: what the same refusal answers when the web side checks the upload itself.
        raise UploadRefused(400, refused["code"], f"upload check {answer['id']}: {refused['message']}")

    def upload_check(self, check: int) -> dict:
        """An upload check's state: pending, running, registered (``version``), refused (``refused``)."""
        return self.request("GET", f"/api/v1/upload-checks/{check}/", retry=True)

    def job(self, job: int) -> dict:
        """A job's state: ``status``, ``progress``, ``result_version``, ``error``."""
        return self.request("GET", f"/api/v1/jobs/{job}/", retry=True)

    # ---------------------------------------------------------------- transport

    def request(self, method: str, path: str, *, json_body: Any = None, body: bytes | None = None,
                content_type: str | None = None, query: dict | None = None, retry: bool = False) -> Any:
        """One API call; the decoded JSON answer. ``retry``: the call is safe to repeat (see the module)."""
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if json_body is not None:
            body, content_type = json.dumps(json_body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        last = self.retries if retry else 0
        attempt = 0
        while True:
            try:
                status, payload, retry_after = self._send(
                    urllib.request.Request(url, data=body, headers=headers, method=method))
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
                if attempt == last:
                    raise ConnectionFailed(f"{method} {path}: {exc} ({attempt + 1} attempt(s))") from exc
                retry_after = None
            else:
                if status < 400:
                    return json.loads(payload) if payload else {}
                if status not in RETRIED_STATUSES or attempt == last:
                    raise _platform_error(status, payload)
            self._wait(attempt, retry_after)
            attempt += 1

    def _send(self, request: urllib.request.Request) -> tuple[int, bytes, float | None]:
        """Send one request: (status, body, the Retry-After seconds of an error). Raises OSError or
        HTTPException when the connection fails."""
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read(), None
        except urllib.error.HTTPError as exc:
            with exc:
                payload = exc.read()
            retry_after = exc.headers.get("Retry-After", "")
            return exc.code, payload, float(retry_after) if retry_after.isdigit() else None

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
        time.sleep(max(delay, min(retry_after or 0, self.max_backoff)))


def _platform_error(status: int, payload: bytes) -> PlatformError:
    try:
        error = json.loads(payload)["error"]
        return PlatformError(status, str(error["code"]), str(error["message"]), fields=error.get("fields"),
                             details=error.get("details"))
    except (ValueError, KeyError, TypeError):
        text = payload[:300].decode("utf-8", "replace").strip()
        return PlatformError(status, "http_error", text or http.client.responses.get(status, "error"))


def _bytes(data: bytes | str | Path) -> bytes:
    return data if isinstance(data, bytes | bytearray) else Path(data).read_bytes()
