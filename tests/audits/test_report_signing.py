"""The signing identity (configured, PKCS#12, development), timestamps, and what verification
refuses: an untrusted signer and content added after signing."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.exceptions import ImproperlyConfigured
from reportlab.pdfgen import canvas

from audits import signing

pytestmark = pytest.mark.usefixtures("signing_settings")


def _small_pdf() -> bytes:
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer)
    page.drawString(72, 720, "A small report")
    page.save()
    return buffer.getvalue()


def _certificate(subject: str, key, issuer_name: x509.Name | None = None, issuer_key=None, *,
                 ca: bool = False, eku=None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=True)
    return builder.sign(issuer_key or key, hashes.SHA256())


def test_dev_identity_is_made_once_with_a_private_key_only_its_owner_reads(tmp_path, dev_identity):
    assert dev_identity.note.startswith(f"Generated a development signing identity in {dev_identity.directory}")
    assert oct(dev_identity.key_path.stat().st_mode & 0o777) == "0o600"
    root = x509.load_pem_x509_certificate(dev_identity.root_path.read_bytes())
    signer = x509.load_pem_x509_certificate(dev_identity.cert_path.read_bytes())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert signer.issuer == root.subject
    signer.verify_directly_issued_by(root)
    assert signer.extensions.get_extension_for_class(x509.KeyUsage).value.content_commitment
    before = dev_identity.cert_path.read_bytes()
    assert signing.ensure_dev_signing_identity(dev_identity.directory) is None  # already there
    assert dev_identity.cert_path.read_bytes() == before


def test_unconfigured_debug_signs_with_the_dev_identity_and_verifies_against_its_root(settings, dev_identity):
    shutil.copytree(dev_identity.directory, signing.dev_signing_directory())
    settings.REPORT_SIGNING_KEY = settings.REPORT_SIGNING_CERT = settings.REPORT_SIGNING_CHAIN = None
    settings.REPORT_TRUST_ROOT = None
    settings.REPORT_DEV_SIGNING = True
    identity = signing.signing_identity()
    assert identity.development and identity.name == signing.DEV_SIGNER_NAME and identity.note == ""
    signed = signing.sign_pdf(_small_pdf())
    assert signing.verify_pdf_signature(signed).problems == []


def test_unconfigured_production_refuses_to_sign(settings):
    settings.REPORT_SIGNING_KEY = settings.REPORT_SIGNING_CERT = None
    settings.REPORT_DEV_SIGNING = False
    with pytest.raises(ImproperlyConfigured, match="REPORT_SIGNING_KEY and REPORT_SIGNING_CERT"):
        signing.signing_identity()


def test_pkcs12_identity_signs_and_a_wrong_passphrase_is_named(settings, tmp_path, dev_identity):
    key = serialization.load_pem_private_key(dev_identity.key_path.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(dev_identity.cert_path.read_bytes())
    root = x509.load_pem_x509_certificate(dev_identity.root_path.read_bytes())
    bundle = tmp_path / "signer.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(
        b"signer", key, cert, [root], serialization.BestAvailableEncryption(b"correct horse")))
    settings.REPORT_SIGNING_KEY = settings.REPORT_SIGNING_CERT = settings.REPORT_SIGNING_CHAIN = None
    settings.REPORT_SIGNING_PKCS12 = bundle
    settings.REPORT_SIGNING_PASSPHRASE = "correct horse"
    signed = signing.sign_pdf_detailed(_small_pdf())
    assert signed.signer == signing.DEV_SIGNER_NAME
    assert signing.verify_pdf_signature(signed.pdf).problems == []
    settings.REPORT_SIGNING_PASSPHRASE = "wrong"
    with pytest.raises(ImproperlyConfigured, match="REPORT_SIGNING_PKCS12"):
        signing.signing_identity()


def test_key_of_another_certificate_is_refused(settings, tmp_path):
    other = tmp_path / "other-key.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    settings.REPORT_SIGNING_KEY = other
    with pytest.raises(ImproperlyConfigured, match="does not belong to REPORT_SIGNING_CERT"):
        signing.signing_identity()


def test_timestamped_signature_is_b_lt_and_verifies(settings, tmp_path, monkeypatch, dev_identity):
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

    # pyHanko's test TSA signs with RSA only.
    tsa_root_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    tsa_root = _certificate("Test TSA root", tsa_root_key, ca=True)
    tsa = _certificate("Test TSA", tsa_key, tsa_root.subject, tsa_root_key, eku=[ExtendedKeyUsageOID.TIME_STAMPING])
    roots = tmp_path / "roots.pem"
    roots.write_bytes(dev_identity.root_path.read_bytes() + tsa_root.public_bytes(serialization.Encoding.PEM))
    settings.REPORT_TRUST_ROOT = roots
    der = serialization.Encoding.DER
    stamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(tsa.public_bytes(der)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(tsa_key.private_bytes(
            der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        certs_to_embed=[asn1_x509.Certificate.load(tsa_root.public_bytes(der))])
    monkeypatch.setattr(signing, "_timestamper", lambda: stamper)
    signed = signing.sign_pdf_detailed(_small_pdf())
    assert signed.profile == "PAdES-B-LT"
    check = signing.verify_pdf_signature(signed.pdf)
    assert check.problems == [] and check.timestamped


def test_signer_under_another_root_is_not_trusted(dev_identity):
    other_key = ec.generate_private_key(ec.SECP256R1())
    from asn1crypto import x509 as asn1_x509

    other_root = asn1_x509.Certificate.load(
        _certificate("Some other root", other_key, ca=True).public_bytes(serialization.Encoding.DER))
    problems = signing.verify_pdf_signature(signing.sign_pdf(_small_pdf()), trust_roots=[other_root]).problems
    assert any("does not lead to a trusted root (Some other root)" in p for p in problems), problems


def test_content_added_after_signing_is_found_and_not_read_as_the_report():
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    signed = signing.sign_pdf(_small_pdf(), attachments={"erasure-report.json": b'{"signed": true}'})
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    page["/Rotate"] = generic.NumberObject(90)
    writer.update_container(page)
    output = io.BytesIO()
    writer.write(output)
    check = signing.verify_pdf_signature(output.getvalue())
    assert any("content was added to the file after it was signed" in p for p in check.problems), check.problems
    assert signing.embedded_files(check.signed_pdf) == {"erasure-report.json": b'{"signed": true}'}


@pytest.mark.parametrize("env,name", [
    ({"REPORT_SIGNING_KEY": "/nonexistent/key.pem", "REPORT_SIGNING_CERT": "/etc/hostname"}, "REPORT_SIGNING_KEY"),
    ({"REPORT_SIGNING_KEY": "/etc/hostname"}, "REPORT_SIGNING_CERT"),
    ({"REPORT_TSA_URL": "ftp://tsa.example"}, "REPORT_TSA_URL"),
    ({"REPORT_TRUST_ROOT": "/nonexistent/root.pem"}, "REPORT_TRUST_ROOT"),
])
def test_malformed_signing_setting_fails_at_start_naming_it(env, name):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REPORT_")}
    result = subprocess.run([sys.executable, "-c", "import deletion_platform.settings"],
                            env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert name in result.stderr.splitlines()[-1], result.stderr[-500:]
