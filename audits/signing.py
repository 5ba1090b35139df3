"""The organisation's report-signing identity, PAdES signing and signature verification.

The identity comes from settings (``REPORT_SIGNING_KEY`` + ``REPORT_SIGNING_CERT`` [+
``REPORT_SIGNING_CHAIN``], or ``REPORT_SIGNING_PKCS12``, with ``REPORT_SIGNING_PASSPHRASE``).
With none of them set and ``DJANGO_DEBUG`` on (``settings.REPORT_DEV_SIGNING``), a development
identity is used: a self-signed test root CA and a signing certificate issued by it, generated
once under ``DATA_DIR/secrets/signing/`` (:func:`ensure_dev_signing_identity`). Reports signed
with it are valid only for a verifier that trusts that root.

Signatures are PAdES (subfilter ``ETSI.CAdES.detached``): B-B always, B-T when
``REPORT_TSA_URL`` names an RFC 3161 time-stamping service, and the validation data (certificates,
plus CRLs/OCSP responses where the CA publishes them) go into the document security store in the
signature's own revision when a trust root is known (B-LT together with a timestamp; with a TSA,
``REPORT_TRUST_ROOT`` must hold the TSA's root as well). Keeping
everything in one revision means the signature covers the whole file, so any later change shows.

pyHanko is imported inside the functions: the web process imports this module only to sign or
verify, not at start-up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:  # pragma: no cover
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.signers import SimpleSigner
    from pyhanko.sign.timestamps import TimeStamper

logger = logging.getLogger(__name__)

SIGNATURE_FIELD = "ErasureReportSignature"
DEV_ROOT_NAME = "Development report-signing root (not for production)"
DEV_SIGNER_NAME = "Development report signer"
DEV_ORGANISATION = "Data-deletion platform (development)"


# ---------------------------------------------------------------- development identity


@dataclass(frozen=True)
class DevSigningFiles:
    """The files of the development identity."""

    directory: Path
    root_path: Path  # the test root CA: what a verifier must trust
    cert_path: Path  # the signing certificate, issued by the root
    key_path: Path  # the signing key (PKCS#8 PEM, unencrypted, mode 0600)


def dev_signing_directory() -> Path:
    """``DATA_DIR/secrets/signing``: where the development identity is kept."""
    return Path(settings.DATA_DIR) / "secrets" / "signing"


def dev_signing_files(directory: Path | str | None = None) -> DevSigningFiles:
    """Where the development identity's files are (or would be) under ``directory``."""
    target = Path(directory) if directory is not None else dev_signing_directory()
    return DevSigningFiles(directory=target, root_path=target / "root.pem",
                           cert_path=target / "signing-cert.pem", key_path=target / "signing-key.pem")


def ensure_dev_signing_identity(directory: Path | str | None = None) -> str | None:
    """Create the development signing identity under ``directory`` unless it is already there.

    In: a folder (default :func:`dev_signing_directory`). Out: a note saying what was generated
    and where, when this call generated it; None when it already existed (its files:
    :func:`dev_signing_files`). The identity is a self-signed test root CA (``root.pem``, what a
    verifier must trust) and a signing certificate issued by it (``signing-cert.pem``,
    ``signing-key.pem``). The root's private key is thrown away once the signing certificate is
    issued, so nobody can issue another certificate under this root. Safe to call from several
    processes at once: the files are written to a temporary folder that is renamed into place.
    """
    files = dev_signing_files(directory)
    target = files.directory
    if all(path.is_file() for path in (files.root_path, files.cert_path, files.key_path)):
        return None
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".signing-", dir=target.parent))
    _write_dev_identity(staging)
    try:
        if target.exists() and not any(target.iterdir()):
            target.rmdir()
        os.rename(staging, target)
    except OSError:  # another process won the race, or a partial folder is in the way
        shutil.rmtree(staging, ignore_errors=True)
        if not all(path.is_file() for path in (files.root_path, files.cert_path, files.key_path)):
            raise ImproperlyConfigured(
                f"{target} holds an incomplete development signing identity; remove it") from None
        return None
    return (
        f"Generated a development signing identity in {target}: a self-signed test root CA "
        f"(root.pem) and a report-signing certificate issued by it. Reports signed with it are "
        f"valid only for a verifier that trusts root.pem. For production set REPORT_SIGNING_KEY "
        f"and REPORT_SIGNING_CERT (or REPORT_SIGNING_PKCS12) and REPORT_TRUST_ROOT."
    )


def _write_dev_identity(folder: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    signer_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)

    def name(common_name: str) -> x509.Name:
        return x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANISATION),
        ])

    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(name(DEV_ROOT_NAME)).issuer_name(name(DEV_ROOT_NAME))
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    signer = (
        x509.CertificateBuilder()
        .subject_name(name(DEV_SIGNER_NAME)).issuer_name(root.subject)
        .public_key(signer_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3 * 365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    folder.chmod(0o700)
    pem = serialization.Encoding.PEM
    (folder / "root.pem").write_bytes(root.public_bytes(pem))
    (folder / "signing-cert.pem").write_bytes(signer.public_bytes(pem))
    key_path = folder / "signing-key.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(signer_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


# ---------------------------------------------------------------- the configured identity


@dataclass(frozen=True)
class SigningIdentity:
    """The signer (key and certificate), the certificates above it, and the trust roots."""

    signer: SimpleSigner
    certificate: asn1_x509.Certificate
    chain: tuple[asn1_x509.Certificate, ...]
    trust_roots: tuple[asn1_x509.Certificate, ...]
    development: bool
    note: str = ""  # set when this load generated the development identity

    @property
    def name(self) -> str:
        """The signer's common name (or the whole subject when it has none)."""
        return _subject_part(self.certificate, "common_name")

    @property
    def organisation(self) -> str:
        return _subject_part(self.certificate, "organization_name", default="")

    @property
    def certificate_sha256(self) -> str:
        return hashlib.sha256(self.certificate.dump()).hexdigest()


def _subject_part(certificate: asn1_x509.Certificate, part: str, default: str | None = None) -> str:
    native = certificate.subject.native
    if part in native:
        return str(native[part])
    return certificate.subject.human_friendly if default is None else default


def _passphrase() -> bytes | None:
    value = getattr(settings, "REPORT_SIGNING_PASSPHRASE", None)
    return value.encode() if value else None


def _load_certs(path: Path, setting: str) -> list[asn1_x509.Certificate]:
    from pyhanko.keys import load_certs_from_pemder

    try:
        certs = list(load_certs_from_pemder([str(path)]))
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"{setting}={path} holds no readable certificate: {exc}") from exc
    if not certs:
        raise ImproperlyConfigured(f"{setting}={path} holds no certificate")
    return certs


def _configured_trust_roots() -> list[asn1_x509.Certificate]:
    path = getattr(settings, "REPORT_TRUST_ROOT", None)
    return _load_certs(Path(path), "REPORT_TRUST_ROOT") if path else []


def signing_identity() -> SigningIdentity:
    """Load the signing identity from settings; the development one when none is configured.

    Raises ``ImproperlyConfigured`` naming the setting when a file cannot be read or the
    passphrase is wrong, and when nothing is configured and ``REPORT_DEV_SIGNING`` (DJANGO_DEBUG
    at start-up) is off.
    """
    from pyhanko.keys import load_cert_from_pemder, load_private_key_from_pemder
    from pyhanko.sign.signers import SimpleSigner
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    key_path = getattr(settings, "REPORT_SIGNING_KEY", None)
    cert_path = getattr(settings, "REPORT_SIGNING_CERT", None)
    pkcs12_path = getattr(settings, "REPORT_SIGNING_PKCS12", None)
    chain_path = getattr(settings, "REPORT_SIGNING_CHAIN", None)
    chain = _load_certs(Path(chain_path), "REPORT_SIGNING_CHAIN") if chain_path else []
    trust_roots = _configured_trust_roots()
    development, note = False, ""

    if pkcs12_path:
        try:
            signer = SimpleSigner.load_pkcs12_data(
                Path(pkcs12_path).read_bytes(), other_certs=chain, passphrase=_passphrase())
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"REPORT_SIGNING_PKCS12={pkcs12_path} cannot be opened (file or "
                f"REPORT_SIGNING_PASSPHRASE): {exc}") from exc
        chain = list(signer.cert_registry)
    else:
        if key_path and cert_path:
            paths = Path(key_path), Path(cert_path)
        elif key_path or cert_path:
            raise ImproperlyConfigured("REPORT_SIGNING_KEY and REPORT_SIGNING_CERT must be set together")
        elif getattr(settings, "REPORT_DEV_SIGNING", settings.DEBUG):
            note = ensure_dev_signing_identity() or ""
            dev = dev_signing_files()
            paths, development = (dev.key_path, dev.cert_path), True
            chain = _load_certs(dev.root_path, "development root")
            trust_roots = trust_roots or chain
        else:
            raise ImproperlyConfigured(
                "REPORT_SIGNING_KEY and REPORT_SIGNING_CERT (or REPORT_SIGNING_PKCS12) must be set "
                "to sign reports when DJANGO_DEBUG is off")
        try:
            key = load_private_key_from_pemder(str(paths[0]), passphrase=_passphrase())
        except (OSError, ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"REPORT_SIGNING_KEY={paths[0]} cannot be read (or REPORT_SIGNING_PASSPHRASE is "
                f"wrong): {exc}") from exc
        try:
            certificate = load_cert_from_pemder(str(paths[1]))
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(f"REPORT_SIGNING_CERT={paths[1]} cannot be read: {exc}") from exc
        registry = SimpleCertificateStore()
        registry.register_multiple(chain)
        signer = SimpleSigner(signing_cert=certificate, signing_key=key, cert_registry=registry)
    if not _key_matches(signer):
        raise ImproperlyConfigured("the report-signing key does not belong to REPORT_SIGNING_CERT")
    return SigningIdentity(signer=signer, certificate=signer.signing_cert, chain=tuple(chain),
                           trust_roots=tuple(trust_roots), development=development, note=note)


def _key_matches(signer: SimpleSigner) -> bool:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_der_private_key(signer.signing_key.dump(), password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == signer.signing_cert.public_key.dump()


def verification_trust_roots() -> list[asn1_x509.Certificate]:
    """The roots a verifier trusts: ``REPORT_TRUST_ROOT``, else the development root if one exists."""
    roots = _configured_trust_roots()
    if roots:
        return roots
    dev_root = dev_signing_files().root_path
    return _load_certs(dev_root, "development root") if dev_root.is_file() else []


# ---------------------------------------------------------------- signing


def _timestamper() -> TimeStamper | None:
    """The RFC 3161 client for ``REPORT_TSA_URL`` (None when unset)."""
    url = getattr(settings, "REPORT_TSA_URL", None)
    if not url:
        return None
    from pyhanko.sign.timestamps import HTTPTimeStamper

    return HTTPTimeStamper(url, timeout=15)


def signature_profile(*, timestamped: bool, validation_info: bool) -> str:
    """The PAdES baseline level a signature reaches: B-B, B-T or B-LT."""
    if timestamped and validation_info:
        return "PAdES-B-LT"
    if timestamped:
        return "PAdES-B-T"
    return "PAdES-B-B (validation data embedded)" if validation_info else "PAdES-B-B"


@dataclass(frozen=True)
class SignedPdf:
    """The signed file and what the signature carries."""

    pdf: bytes
    profile: str
    signer: str
    organisation: str
    certificate_sha256: str


def sign_pdf(pdf_bytes: bytes, *, attachments: Mapping[str, bytes] | None = None) -> bytes:
    """Sign a PDF with the organisation's identity; returns the signed file's bytes.

    In: the PDF, and optional files to embed (name -> content) before signing, so that the
    signature covers them too. See :func:`sign_pdf_detailed` for the profile reached.
    """
    return sign_pdf_detailed(pdf_bytes, attachments=attachments).pdf


def sign_pdf_detailed(
    pdf_bytes: bytes, *, attachments: Mapping[str, bytes] | None = None,
    identity: SigningIdentity | None = None,
) -> SignedPdf:
    """Sign as :func:`sign_pdf` does; out: the bytes with the PAdES profile reached and the signer."""
    from pyhanko.pdf_utils import embed
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko.sign.signers.pdf_signer import DSSContentSettings, SigDSSPlacementPreference
    from pyhanko_certvalidator import ValidationContext

    identity = identity or signing_identity()
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf_bytes))
    for name, data in (attachments or {}).items():
        stream = embed.EmbeddedFileObject.from_file_data(
            writer, data, mime_type="application/json" if name.endswith(".json") else None,
            params=embed.EmbeddedFileParams(embed_size=True, embed_checksum=True))
        embed.embed_file(writer, embed.FileSpec(
            file_spec_string=name, file_name=name, embedded_data=stream,
            description="Machine-readable copy of this report (covered by the signature)"))

    timestamper = _timestamper()
    validation_context = None
    if identity.trust_roots:
        # With a timestamp, REPORT_TRUST_ROOT must hold the TSA's root too: the TSA's
        # certificates are validated and embedded like the signer's.
        validation_context = ValidationContext(
            trust_roots=list(identity.trust_roots), other_certs=list(identity.chain),
            allow_fetching=True, revocation_mode="soft-fail")
    else:
        logger.warning("no trust root configured (REPORT_TRUST_ROOT): signing without validation data")
    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        subfilter=fields.SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        reason="Erasure audit report",
        name=identity.name,
        embed_validation_info=validation_context is not None,
        validation_context=validation_context,
        # In the signature's own revision: the signature then covers the entire file.
        dss_settings=DSSContentSettings(
            placement=SigDSSPlacementPreference.TOGETHER_WITH_SIGNATURE, include_vri=False),
    )
    pdf_signer = signers.PdfSigner(metadata, signer=identity.signer, timestamper=timestamper)
    output = pdf_signer.sign_pdf(writer)
    return SignedPdf(
        pdf=output.getvalue(),
        profile=signature_profile(timestamped=timestamper is not None,
                                  validation_info=validation_context is not None),
        signer=identity.name, organisation=identity.organisation,
        certificate_sha256=identity.certificate_sha256,
    )


# ---------------------------------------------------------------- verification


@dataclass
class SignatureCheck:
    """What a signature check found: ``problems`` is empty when the signature is good."""

    problems: list[str] = field(default_factory=list)
    signer: str | None = None
    certificate_sha256: str | None = None  # of the certificate that actually signed
    signed_at: dt.datetime | None = None
    timestamped: bool = False
    signed_pdf: bytes | None = field(default=None, repr=False)  # the signed revision's bytes


def verify_pdf_signature(
    pdf_bytes: bytes, *, trust_roots: list[asn1_x509.Certificate] | None = None
) -> SignatureCheck:
    """Check the PDF's signature: intact, cryptographically valid, issued under a trusted root,
    nothing added after signing but validation data, timestamp (if any) valid.

    In: the file and the roots to trust (default :func:`verification_trust_roots`). Out: a
    :class:`SignatureCheck` whose ``problems`` say in words what is wrong. Offline: no
    certificate status is fetched; what the signer embedded is used.
    """
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import SignatureCoverageLevel, validate_pdf_signature
    from pyhanko.sign.validation.dss import DocumentSecurityStore, NoDSSFoundError
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko_certvalidator import ValidationContext

    check = SignatureCheck()
    roots = verification_trust_roots() if trust_roots is None else trust_roots
    if not roots:
        check.problems.append("no trust root is configured (REPORT_TRUST_ROOT), so the signer cannot be checked")
    try:
        reader = PdfFileReader(io.BytesIO(pdf_bytes), strict=False)
        signatures = reader.embedded_regular_signatures
    except Exception as exc:  # a damaged file: pyHanko raises several kinds
        check.problems.append(f"the file cannot be read as a PDF: {exc}")
        return check
    if not signatures:
        check.problems.append("the PDF carries no signature")
        return check
    if len(signatures) > 1:
        check.problems.append(f"the PDF carries {len(signatures)} signatures; a report is signed once")
    signature = signatures[0]
    context_kwargs: dict[str, Any] = {"trust_roots": roots, "allow_fetching": False,
                                      "revocation_mode": "soft-fail"}
    try:
        signer_context = DocumentSecurityStore.read_dss(reader).as_validation_context(context_kwargs)
    except NoDSSFoundError:
        signer_context = ValidationContext(**context_kwargs)
    timestamp_context = ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")
    try:
        status = validate_pdf_signature(
            signature, signer_validation_context=signer_context,
            ts_validation_context=timestamp_context,
            key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}))
    except Exception as exc:
        check.problems.append(f"the signature cannot be validated: {exc}")
        return check
    if status.signing_cert is not None:
        check.signer = _subject_part(status.signing_cert, "common_name")
        check.certificate_sha256 = hashlib.sha256(status.signing_cert.dump()).hexdigest()
    check.signed_at = status.signer_reported_dt
    check.timestamped = status.timestamp_validity is not None
    if not status.intact:
        check.problems.append(
            "the signed content was changed after signing: its digest does not match the signature")
    elif not status.valid:
        check.problems.append("the signature value does not verify against the signer's certificate")
    if not status.trusted:
        check.problems.append(
            f"the signer's certificate ({check.signer}) does not lead to a trusted root "
            f"({', '.join(_subject_part(r, 'common_name') for r in roots) or 'none configured'})")
    coverage = status.coverage
    if coverage != SignatureCoverageLevel.ENTIRE_FILE:
        level = status.modification_level
        if coverage != SignatureCoverageLevel.ENTIRE_REVISION or level is None or level.name not in (
                "NONE", "LTA_UPDATES"):
            check.problems.append(
                "content was added to the file after it was signed "
                f"(coverage {getattr(coverage, 'name', coverage)}, changes {getattr(level, 'name', level)})")
    if status.timestamp_validity is not None:
        ts = status.timestamp_validity
        if not (ts.intact and ts.valid and ts.trusted):
            check.problems.append("the signature's timestamp does not verify or its TSA is not trusted")
        check.signed_at = ts.timestamp
    byte_range = signature.sig_object.get("/ByteRange")
    if byte_range is not None and len(byte_range) == 4:
        check.signed_pdf = pdf_bytes[: int(byte_range[2]) + int(byte_range[3])]
    return check


def embedded_files(pdf_bytes: bytes) -> dict[str, bytes]:
    """The files embedded in a PDF's document-level attachment list (name -> content)."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(pdf_bytes), strict=False)
    found: dict[str, bytes] = {}
    try:
        names = reader.root["/Names"]["/EmbeddedFiles"]["/Names"]
    except KeyError:
        return found
    for index in range(0, len(names) - 1, 2):
        spec = names[index + 1].get_object()
        stream = spec["/EF"]["/F"].get_object()
        found[str(names[index])] = stream.data
    return found
