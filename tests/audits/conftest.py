"""Fixtures of the report tests: one signing identity per session, an NSS database that trusts
its root (for poppler's pdfsig), and settings that point at them. None is autouse, so the pure
checks under tests/audits/checks keep running without Django."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require_tool(name: str) -> str:
    """The tool's path; a missing tool fails the test (skips only with SKIP_SYSTEM_TOOLS=1)."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (run scripts/install_system_deps.sh)"
    if os.environ.get("SKIP_SYSTEM_TOOLS") == "1":
        pytest.skip(message)
    pytest.fail(message)


def rendered_text(report: dict, path) -> str:
    """Render ``report`` to ``path`` (a PDF) and return its text as pdftotext reads it, each run of
    whitespace one space."""
    import subprocess

    from audits.rendering import render_report_pdf

    path.write_bytes(render_report_pdf(report))
    out = subprocess.run([require_tool("pdftotext"), str(path), "-"], check=True, capture_output=True, text=True)
    return " ".join(out.stdout.split())


@pytest.fixture(scope="session")
def dev_identity(tmp_path_factory):
    """The development identity's files (test root CA + signer), generated once for the session;
    ``note`` is what the generating call returned."""
    from dataclasses import dataclass

    from audits.signing import DevSigningFiles, dev_signing_files, ensure_dev_signing_identity

    @dataclass(frozen=True)
    class Generated(DevSigningFiles):
        note: str | None = None

    directory = tmp_path_factory.mktemp("signing") / "signing"
    note = ensure_dev_signing_identity(directory)
    return Generated(**vars(dev_signing_files(directory)), note=note)


@pytest.fixture
def signing_settings(settings, tmp_path, dev_identity):
    """Sign with the session identity, trust its root; ledger checkpoints in the test's tmp."""
    settings.DATA_DIR = tmp_path
    settings.REPORT_SIGNING_KEY = dev_identity.key_path
    settings.REPORT_SIGNING_CERT = dev_identity.cert_path
    settings.REPORT_SIGNING_CHAIN = dev_identity.root_path
    settings.REPORT_SIGNING_PKCS12 = None
    settings.REPORT_SIGNING_PASSPHRASE = None
    settings.REPORT_TRUST_ROOT = dev_identity.root_path
    settings.REPORT_TSA_URL = None
    return settings


@pytest.fixture(scope="session")
def nss_db(tmp_path_factory, dev_identity) -> str:
    """``sql:DIR`` of an NSS database that trusts the development root (pdfsig -nssdir)."""
    certutil = require_tool("certutil")
    folder: Path = tmp_path_factory.mktemp("nss")
    subprocess.run([certutil, "-N", "--empty-password", "-d", f"sql:{folder}"], check=True,
                   capture_output=True)
    subprocess.run([certutil, "-A", "-n", "root", "-t", "CT,C,C", "-i", str(dev_identity.root_path),
                    "-d", f"sql:{folder}"], check=True, capture_output=True)
    return f"sql:{folder}"


def pdfsig(path: Path, nss: str) -> str:
    """pdfsig's report on a file, checked against the NSS database ``nss``."""
    tool = require_tool("pdfsig")
    result = subprocess.run([tool, "-nssdir", nss, str(path)], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr
