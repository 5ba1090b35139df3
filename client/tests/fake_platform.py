"""A stand-in for the platform's REST API in a thread (http.server): the membership upload protocol
and the calls around it, with faults a test can arm (a connection cut before or after a chunk is
applied, a 503), so that the client's retries and resumption are tested without Django."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "test-token"


class FakePlatform:
    """``with FakePlatform() as platform: PlatformClient(platform.url, TOKEN)``. ``faults`` maps
    (method, path) to a list of faults taken one per request: "cut_before" (the connection closes
    before the request is handled), "cut_after" (handled, then closed without an answer), "503"."""

    def __init__(self) -> None:
        self.uploads: dict[int, dict] = {}
        self.applied: list[tuple[int, int]] = []  # (upload, chunk) each time a chunk was applied
        self.requests: list[tuple[str, str]] = []
        self.faults: dict[tuple[str, str], list[str]] = {}
        self.checks: dict[int, list[dict]] = {}  # upload check id -> the states it answers, in turn
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakePlatform:
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """The answer (status, JSON) of the platform to one request."""
        if match := re.fullmatch(r"/api/v1/training-runs/(\d+)/membership-uploads/", path):
            run, dataset = int(match[1]), json.loads(body)["dataset"]
            for upload in self.uploads.values():
                if (upload["training_run"], upload["dataset"]) == (run, dataset):
                    return 200, self.state(upload)
            upload = {"id": len(self.uploads) + 1, "training_run": run, "dataset": dataset, "status": "open",
                      "chunks": {}}
            self.uploads[upload["id"]] = upload
            return 201, self.state(upload)
        if match := re.fullmatch(r"/api/v1/membership-uploads/(\d+)/chunks/(\d+)/", path):
            upload, number = self.uploads[int(match[1])], int(match[2])
            digest = hashlib.sha256(body).hexdigest()
            if number in upload["chunks"]:
                if upload["chunks"][number]["sha256"] != digest:
                    return 409, _error("chunk_differs", f"chunk {number} was applied with other rows")
                return 200, upload["chunks"][number]
            if upload["status"] == "complete":
                return 409, _error("membership_upload_complete", "the upload takes no more chunks")
            lines = body.decode().splitlines()
            if lines[0] != "record_key,shard,slice,position":
                return 400, _error("import_rejected", "chunk rejected, nothing was kept: line 1: bad header")
            upload["chunks"][number] = {"upload": upload["id"], "chunk": number, "rows": len(lines) - 1,
                                        "sha256": digest, "lines": lines[1:]}
            self.applied.append((upload["id"], number))
            return 201, upload["chunks"][number]
        if match := re.fullmatch(r"/api/v1/membership-uploads/(\d+)/complete/", path):
            upload, expected = self.uploads[int(match[1])], json.loads(body)
            if sorted(upload["chunks"]) != list(range(expected["chunks"])):
                return 409, _error("chunks_missing", "chunks not received")
            upload["status"] = "complete"
            return 200, self.state(upload)
        if match := re.fullmatch(r"/api/v1/membership-uploads/(\d+)/", path):
            return 200, self.state(self.uploads[int(match[1])])
        if re.fullmatch(r"/api/v1/models/[^/]+/versions/\?training_run=\d+", path):
            return 202, {"id": 1, "status": "pending", "url": "/api/v1/upload-checks/1/"}
        if match := re.fullmatch(r"/api/v1/upload-checks/(\d+)/", path):
            return 200, self.checks[int(match[1])].pop(0)
        if path == "/api/v1/models/":
            return 400, {"error": {"code": "validation_failed", "message": "model 'churn' already exists",
                                   "fields": {"name": ["model 'churn' already exists"]}}}
        return 404, _error("not_found", f"no route {method} {path}")

    def state(self, upload: dict) -> dict:
        rows = sum(chunk["rows"] for chunk in upload["chunks"].values())
        return {**upload, "chunks": sorted(upload["chunks"]), "rows": rows}

    def membership_lines(self, upload_id: int) -> list[str]:
        chunks = self.uploads[upload_id]["chunks"]
        return [line for number in sorted(chunks) for line in chunks[number]["lines"]]


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _handler(platform: FakePlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            method = self.command
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with platform.lock:
                platform.requests.append((method, self.path))
                queued = platform.faults.get((method, self.path)) or []
                fault = queued.pop(0) if queued else None
                if fault == "cut_before":
                    return
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, answer = 401, _error("not_authenticated", "no valid token")
                elif fault == "503":
                    status, answer = 503, _error("service_unavailable", "the database is unavailable; retry later")
                else:
                    status, answer = platform.handle(method, self.path, body)
                if fault == "cut_after":
                    return
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 503:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args) -> None:
            pass

    return Handler
