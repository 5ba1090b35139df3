"""External retrain: the company's own pipeline as a model's exact method (guarantee class
``exact_attested``).

A model trained outside the platform names its pipeline in its unlearning policy::

    "external_retrain": {"webhook": 12, "attested_by": "ML platform team (J. Doe)",
                         "use": "escalation", "token_ttl_seconds": 43200}

``webhook`` is the pipeline's webhook endpoint (registered by an ``ml_engineer`` client), ``attested_by``
who attests its retrains (the report names them). When the DPO escalates a result that did not pass
(``use: "escalation"``, the default), or when a request is approved (``use: "every_deletion"``: the
planner's method), the platform sends that endpoint a signed job, signed and retried like every
webhook (``X-Deletion-Signature``, deletion.webhooks): the request, the model version, the record keys
to exclude per dataset, how many records were erased before (the membership must leave those out
too), and an upload URL with a short-lived token. The pipeline retrains without the records and POSTs
the new version's weights, the records it trained on and, where it has them, reference models it
trained the same way (multipart, ``Authorization: Upload <token>``; no API token).

The upload token is 256 random bits; only its SHA-256 is kept, on the ExternalRetrain row, which scopes
it to one request and one model version, with its expiry and the moment it was used. Random rather
than an HMAC of its scope: single use and revocation (a withdrawn model) need the row anyway, so a
stateless signed token would only add a key to keep and rotate, and a read of the database never
yields a usable token. The clear token travels only in the signed job; the delivery row forgets it
when the delivery ends. A token is refused when forged (401 ``upload_token_invalid``), expired (401
``upload_token_expired``) or used before (403 ``upload_token_used``), and so is any token once the
retrain was cancelled (403 ``external_retrain_closed``).

States of the retrain: ``awaiting_upload`` -> ``registered`` | ``refused`` | ``expired`` |
``cancelled``. The outcome meanwhile is ``executing``. An upload whose declared membership (or a
reference model's) still holds a record of the request or one erased before is refused with the keys
named: the token is spent, nothing is stored, and the outcome becomes a failed audit that waits for the
DPO (escalate again for a new job, withdraw the model, or accept the risk). An expired token does the
same. A malformed upload (weights the family refuses, an unreadable membership) is a 400 that spends
nothing. An accepted upload is checked by the model's family like any upload and registered as a new
version (parent: the affected version, class ``exact_attested``), recorded as an unlearning job of
method ``external_retrain`` (so later deletions of the model build on it), and audited like any result.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import secrets
import uuid
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from deletion.models import (
    ExternalRetrain,
    ExternalRetrainStatus,
    ModelOutcome,
    OutcomeStatus,
    WebhookEndpoint,
)
from deletion.transitions import actor_name
from deletion.webhooks import webhook_send
from deletion.workflow import DECISIONS_OPEN, advance, announce, on_job_finished
from foundation.errors import Conflict, ValidationFailed
from foundation.ledger.services import ledger_append
from foundation.strict_json import fields_once
from models_registry.models import (
    DataRecord,
    Dataset,
    ModelVersion,
    RecordStatus,
    SuppressionEntry,
    SuppressionKind,
)

EXTERNAL_RETRAIN = "external_retrain"  # the outcome's method
GUARANTEE_CLASS = "exact_attested"
TOKEN_PREFIX = "dpx_"
DEFAULT_TOKEN_TTL_SECONDS = 12 * 3600
# The clients whose webhook may receive the job (it names the records to exclude): the ML side's.
PIPELINE_ROLES = ("ml_engineer",)
# Django takes at most 100 files a request (DATA_UPLOAD_MAX_NUMBER_FILES): weights, membership, 2 per reference.
MAX_REFERENCE_MODELS = 48
KEYS_NAMED = 100  # erased keys named in a refusal (the count is always given)
UPLOAD_FIELDS = {
    "weights": "the new version's model file, as POST /api/v1/models/<name>/versions/ takes it",
    "membership": "the records the new version was trained on: JSONL (or CSV, membership_format=csv) with "
                  "record_key and optionally shard, slice, position, as the membership import takes them",
    "run": 'JSON: {"code_version": the pipeline\'s version (required), "seed": int, "config": {...}}',
    "reference_weights": "optional, repeated: reference models the pipeline trained the same way on part of "
                         "the kept records (the audit's shadow models)",
    "reference_membership": "one per reference_weights, in the same order: the records each was trained on",
}
REFUSAL_RULE = ("The membership the company's pipeline declares for the new version, and for each reference "
                "model it uploads, must leave out every record of this request and every record erased before: "
                "FAIL when it holds any of them (the upload is refused and nothing is stored).")
EXPIRY_RULE = ("The company's pipeline must upload the retrained version before its upload token expires: FAIL "
               "when it did not (nothing was retrained).")


class UploadTokenRefused(Exception):
    """An upload token that does not open the upload: ``status`` 401 (not a valid credential: forged,
    expired) or 403 (valid once, but spent, or its retrain was closed); ``code`` for the API."""

    def __init__(self, message: str, *, code: str, status: int = 401) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- the model's declaration


def external_retrain_policy(model) -> dict | None:
    """The model's ``unlearning_policy.external_retrain`` section, or None when it declares none."""
    return (model.unlearning_policy or {}).get("external_retrain") or None


def external_retrain_planned(model) -> bool:
    """Whether the company's pipeline is the model's method for every deletion (not only escalations)."""
    section = external_retrain_policy(model)
    return bool(section) and section.get("use") == "every_deletion"


def external_retrain_problem(section: dict, architecture: dict) -> str | None:
    """Why ``section`` cannot serve a model of ``architecture`` (the registry's policy check, and
    again when a job is sent): its webhook is none such, inactive or not the ML side's; the model's
    family checks uploads in a worker, which this handshake does not take. None when it can."""
    endpoint = WebhookEndpoint.objects.filter(pk=section.get("webhook")).select_related("client").first()
    if endpoint is None:
        return (f"no webhook endpoint {section.get('webhook')}: register the pipeline's (POST /api/v1/webhooks/ "
                "with its ml_engineer client's token) and name its id")
    if not endpoint.active or endpoint.client.revoked_at is not None:
        return f"webhook endpoint {endpoint.id} is inactive or its client's token is revoked"
    if endpoint.client.role not in PIPELINE_ROLES:
        return (f"webhook endpoint {endpoint.id} belongs to a {endpoint.client.role} client; the job names the records "
                "to exclude, so it goes only to the ML side's endpoint (an ml_engineer client's)")
    if architecture:
        from workers.model_families import family_of

        try:
            family = family_of(architecture)
        except ValueError:
            return None  # the architecture check names it
        if family.checked_in_worker:
            return (f"a model of the {family.name} family is checked in a worker, which the external retrain's "
                    "upload does not take yet; the platform's exact retrain builds it")
    return None


# ---------------------------------------------------------------- sending the job


def external_retrain_start(*, outcome: ModelOutcome, actor) -> ExternalRetrain:
    """Send the company's pipeline the signed job for ``outcome`` (in the caller's transaction; the
    delivery goes after commit) and set the outcome executing with method ``external_retrain``.
    Conflict when the model declares no external retrain or its declaration cannot serve now."""
    version = outcome.model_version
    model = version.model
    section = external_retrain_policy(model)
    if section is None:
        raise Conflict(f"model {model.name} declares no external retrain (unlearning_policy.external_retrain)",
                       code="no_external_retrain")
    problem = external_retrain_problem(section, model.architecture or {})
    if problem:
        raise Conflict(f"the external retrain of {model.name} cannot start: {problem}", code="external_retrain_unavailable")
    endpoint = WebhookEndpoint.objects.get(pk=section["webhook"])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    retrain = ExternalRetrain.objects.create(
        public_id=uuid.uuid4(), outcome=outcome, webhook=endpoint, attested_by=section["attested_by"].strip(),
        requested_by=actor_name(actor), token_hash=_hash(token), token_prefix=token[:10],
        expires_at=now + timedelta(seconds=section.get("token_ttl_seconds", DEFAULT_TOKEN_TTL_SECONDS)))
    retrain.job = _job(retrain, outcome, now)
    retrain.delivery = webhook_send(endpoint=endpoint,
                                    payload={**retrain.job, "upload": {**retrain.job["upload"], "token": token}})
    retrain.save(update_fields=["job", "delivery"])
    outcome.method, outcome.guarantee_class = EXTERNAL_RETRAIN, GUARANTEE_CLASS
    outcome.status, outcome.verdict, outcome.audit = OutcomeStatus.EXECUTING, "", {}
    outcome.job = outcome.audit_job = outcome.new_version = None
    outcome.save(update_fields=["method", "guarantee_class", "status", "verdict", "audit", "job", "audit_job",
                                "new_version"])
    ledger_append(event_type="external_retrain.requested", actor=actor_name(actor),
                  request=str(outcome.request.public_id), model_version=version.id,
                  external_retrain=str(retrain.public_id), webhook=endpoint.id, attested_by=retrain.attested_by,
                  records=len(outcome.record_ids), expires_at=retrain.expires_at.isoformat())
    return retrain


def _job(retrain: ExternalRetrain, outcome: ModelOutcome, now) -> dict[str, Any]:
    """The signed job, without its token: what to exclude, where and until when to upload."""
    version = outcome.model_version
    run = version.training_run
    exclude: dict[str, list[str]] = {}
    for record in (DataRecord.objects.filter(id__in=outcome.record_ids).select_related("dataset")
                   .order_by("dataset_id", "external_key")):
        exclude.setdefault(f"{record.dataset.name}@{record.dataset.version}", []).append(record.external_key)
    datasets = list(run.datasets.all()) if run else []
    path = reverse("external-retrain-upload", kwargs={"retrain_id": retrain.public_id})
    base = getattr(settings, "PUBLIC_BASE_URL", None)
    return {
        "event": "external_retrain.requested",
        "external_retrain": str(retrain.public_id),
        "request": str(outcome.request.public_id),
        "model": version.model.name,
        "model_version": {"id": version.id, "version": version.version, "artifact_sha256": version.artifact_sha256},
        "training_run": None if run is None else {"id": run.id, "recipe": run.recipe, "code_version": run.code_version,
                                                  "seed": run.seed, "config": run.config},
        "exclude": [{"dataset": name, "record_keys": keys} for name, keys in exclude.items()],
        "erased_before": {
            "records": sum(len(_erased_keys(dataset)) for dataset in datasets),
            "rule": "the membership must leave out every record erased before too; the platform checks it against "
                    "its suppression list"},
        "attested_by": retrain.attested_by,
        "upload": {"url": f"{base.rstrip('/')}{path}" if base else path, "path": path, "method": "POST",
                   "content_type": "multipart/form-data", "authorization": "Upload <token>",
                   "expires_at": retrain.expires_at.isoformat(), "single_use": True, "fields": UPLOAD_FIELDS},
        "at": now.isoformat(),
    }


def _erased_keys(dataset: Dataset) -> set[str]:
    """Keys of the dataset's records erased before (marked erased, or on the suppression list by key)."""
    erased = set(DataRecord.objects.filter(dataset=dataset).exclude(status=RecordStatus.ACTIVE)
                 .values_list("external_key", flat=True))
    return erased | set(SuppressionEntry.objects.filter(kind=SuppressionKind.RECORD, dataset_name=dataset.name)
                        .values_list("external_key", flat=True))


# ---------------------------------------------------------------- the upload


def external_retrain_authenticate(*, public_id, token: str) -> ExternalRetrain:
    """The retrain ``token`` opens the upload of, read fresh; UploadTokenRefused naming why not."""
    retrain = (ExternalRetrain.objects.select_related("outcome__model_version__model", "outcome__request")
               .filter(public_id=public_id).first())
    if retrain is None or not hmac.compare_digest(retrain.token_hash, _hash(token)):
        raise UploadTokenRefused("the upload token is not valid for this external retrain", code="upload_token_invalid")
    if retrain.used_at is not None:
        raise UploadTokenRefused(f"this upload token was used at {retrain.used_at.isoformat()}; a token takes one "
                                 "upload (the DPO may escalate again for a new job)", code="upload_token_used", status=403)
    if retrain.status == ExternalRetrainStatus.EXPIRED or retrain.expires_at <= timezone.now():
        raise UploadTokenRefused(f"the upload token expired at {retrain.expires_at.isoformat()}; the DPO may escalate "
                                 "again for a new job", code="upload_token_expired")
    if retrain.status != ExternalRetrainStatus.AWAITING_UPLOAD:
        raise UploadTokenRefused(f"this external retrain was {retrain.status}: it takes no upload any more",
                                 code="external_retrain_closed", status=403)
    return retrain


def _lock_outcome(retrain: ExternalRetrain) -> None:
    """Lock the retrain's outcome first, as the DPO's decisions do (a withdrawal cancels the retrain
    with its outcome locked): the same order everywhere, so the two never deadlock."""
    ModelOutcome.objects.select_for_update().filter(pk=retrain.outcome_id).first()


def _spend(retrain: ExternalRetrain, token: str) -> None:
    """Use the token, exactly once (a conditional UPDATE): the loser of two concurrent uploads, or
    an upload racing the expiry, gets the refusal that now applies."""
    now = timezone.now()
    spent = ExternalRetrain.objects.filter(pk=retrain.pk, token_hash=_hash(token), used_at__isnull=True,
                                           status=ExternalRetrainStatus.AWAITING_UPLOAD,
                                           expires_at__gt=now).update(used_at=now)
    if spent != 1:
        external_retrain_authenticate(public_id=retrain.public_id, token=token)
        raise UploadTokenRefused("the upload token was used meanwhile", code="upload_token_used", status=403)


def external_retrain_upload(*, public_id, token: str, weights: bytes, membership: IO, membership_format: str = "jsonl",
                            run: Any, references: list[tuple[bytes, IO]] = ()) -> ExternalRetrain:
    """Take the company pipeline's upload for the retrain ``public_id``, authorised by ``token``:
    ``weights`` (the model file), ``membership`` (the records it was trained on, JSONL or CSV),
    ``run`` (the retrain's declaration: code_version, seed, config; a dict or its JSON text) and
    ``references`` (reference models' files with their memberships).

    Refused, with nothing stored and the token kept: a malformed upload (ValidationFailed / ImportRejected,
    400). Refused with the token spent and the outcome back with the DPO: a membership that holds an
    erased record (Conflict ``erased_records_in_membership`` naming the keys). UploadTokenRefused for a
    token that does not open it. Otherwise the version is registered and its audit queued."""
    retrain = external_retrain_authenticate(public_id=public_id, token=token)
    outcome = retrain.outcome
    version = outcome.model_version
    model = version.model
    declared = _declaration(run, version)
    dataset = _dataset_of(version)
    rows = _membership_rows(membership, membership_format, what="membership")
    if len(references) > MAX_REFERENCE_MODELS:
        raise ValidationFailed(f"at most {MAX_REFERENCE_MODELS} reference models are taken", field="reference_weights")
    reference_rows = [_membership_rows(source, membership_format, what=f"reference_membership {index}")
                      for index, (_, source) in enumerate(references)]
    check = _membership_check(outcome, dataset, rows, reference_rows)
    if check["erased_found"]:
        _refuse(retrain, token, declared, check)
        found = check["erased_found"]
        raise Conflict(f"refused: the declared membership still holds {len(found)} erased record(s) of "
                       f"{dataset.name}@{dataset.version}: {', '.join(found[:20])}{' ...' if len(found) > 20 else ''}. "
                       "Nothing was stored; the token is spent and the request is back with the DPO",
                       code="erased_records_in_membership",
                       details={"record_keys": found[:KEYS_NAMED], "count": len(found)})
    family, checked, checked_references = _checked_files(model, weights, references, declared)
    return _register(retrain, token, declared=declared, dataset=dataset, rows=rows, family=family, checked=checked,
                     size_bytes=len(weights), references=[(c, r, len(w)) for (c, w), r in
                                                          zip(checked_references, reference_rows, strict=True)],
                     check=check)


def _declaration(run: Any, version: ModelVersion) -> dict[str, Any]:
    """The pipeline's declaration of its retrain: ``code_version`` (required), ``seed`` and ``config``
    (default: the affected version's run's)."""
    if isinstance(run, (str, bytes)):
        try:  # strictly: no field twice, no NaN (it is stored and hashed)
            run = json.loads(run, object_pairs_hook=fields_once, parse_constant=_no_constant)
        except ValueError as exc:
            raise ValidationFailed(f"run must be a JSON object {{code_version, seed, config}}: {exc}",
                                   field="run") from None
    if not isinstance(run, dict):
        raise ValidationFailed("run is required: a JSON object {code_version, seed, config}", field="run")
    unknown = sorted(set(run) - {"code_version", "seed", "config"})
    if unknown:
        raise ValidationFailed(f"unknown run field {unknown[0]!r}; allowed: code_version, seed, config", field="run")
    code_version = run.get("code_version")
    if not isinstance(code_version, str) or not code_version.strip() or len(code_version) > 100:
        raise ValidationFailed("run.code_version must name the pipeline's version (1 to 100 characters): the report "
                               "names it", field="run")
    original = version.training_run
    seed = run.get("seed", original.seed if original else 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**63:
        raise ValidationFailed("run.seed must be an integer", field="run")
    config = run.get("config", original.config if original else {})
    if not isinstance(config, dict):
        raise ValidationFailed("run.config must be an object", field="run")
    return {"code_version": code_version.strip(), "seed": seed, "config": config}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _dataset_of(version: ModelVersion) -> Dataset:
    datasets = list(version.training_run.datasets.all()) if version.training_run else []
    if len(datasets) != 1:
        raise Conflict(f"{version} was trained on {len(datasets)} datasets; the external retrain takes the membership "
                       "of a model trained on one", code="external_retrain_unavailable")
    return datasets[0]


def _membership_rows(source: IO, fmt: str, *, what: str) -> list[tuple[int, str, int, int, int]]:
    from models_registry.importing import ImportRejected, membership_rows_from_file

    if fmt not in ("jsonl", "csv"):
        raise ValidationFailed("membership_format must be jsonl or csv", field="membership_format")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        rows = list(membership_rows_from_file(source, fmt))
    except ImportRejected as exc:
        raise ValidationFailed(f"{what}: {exc.message}", field=what.split()[0], code="invalid_membership",
                               details=exc.details) from None
    if not rows:
        raise ValidationFailed(f"{what} lists no record", field=what.split()[0], code="invalid_membership")
    return rows


def _membership_check(outcome: ModelOutcome, dataset: Dataset, rows: list, reference_rows: list[list]) -> dict:
    """The platform's check of the company's declaration: every declared membership (the version's and
    each reference model's) against this request's records and those erased before."""
    request_keys = set(DataRecord.objects.filter(id__in=outcome.record_ids, dataset=dataset)
                       .values_list("external_key", flat=True))
    erased_before = _erased_keys(dataset) - request_keys
    forbidden = request_keys | erased_before
    declared = {row[1] for row in rows}
    in_references = {row[1] for reference in reference_rows for row in reference}
    found = sorted((declared | in_references) & forbidden)
    return {"dataset": f"{dataset.name}@{dataset.version}", "records_declared": len(declared),
            "reference_models": len(reference_rows),
            "reference_records_declared": sum(len(reference) for reference in reference_rows),
            "request_records_checked": len(request_keys), "erased_before_checked": len(erased_before),
            "erased_found": found, "of_this_request": sorted(set(found) & request_keys),
            "in_version": len(declared & forbidden), "in_references": len(in_references & forbidden),
            "checked_at": timezone.now().isoformat()}


def _checked_files(model, weights: bytes, references: list[tuple[bytes, IO]], declared: dict):
    """The model's family's check of the weights and of each reference model (nothing executed)."""
    from workers.model_families import family_of
    from workers.services import MAX_CHECKPOINT_BYTES, family_upload_check

    try:
        family = family_of(model.architecture)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="architecture") from None
    if family.checked_in_worker:  # the policy check refuses it; a policy edited around that check
        raise Conflict(f"a model of the {family.name} family is checked in a worker, which the external retrain's "
                       "upload does not take", code="external_retrain_unavailable")
    checked = []
    for index, data in enumerate([weights, *(w for w, _ in references)]):
        field = "weights" if index == 0 else "reference_weights"
        if len(data) > MAX_CHECKPOINT_BYTES:
            raise ValidationFailed(f"{field}: larger than {MAX_CHECKPOINT_BYTES} bytes", field=field)
        try:
            checked.append((family_upload_check(family=family, model=model, data=data, run_config=declared["config"]),
                            data))
        except ValidationFailed as exc:
            which = "weights" if index == 0 else f"reference model {index - 1}"
            raise ValidationFailed(f"{which}: {exc.message}", field=field, code=exc.code) from None
    return family, checked[0][0], checked[1:]


def _register(retrain: ExternalRetrain, token: str, *, declared: dict, dataset: Dataset, rows: list, family, checked,
              size_bytes: int, references: list, check: dict) -> ExternalRetrain:
    """Spend the token and register what passed: the retrain's run and membership, the new version
    (parent: the affected one, class exact_attested), the reference models; record the upload as a
    succeeded unlearning job and hand it to the workflow, which queues the audit."""
    from models_registry import services as registry
    from models_registry.importing import training_membership_import
    from workers.jobs import job_create
    from workers.models import JobKind, JobStatus
    from workers.pipeline_references import pipeline_reference_store
    from workers.services import uploaded_version_store

    outcome = retrain.outcome
    version = outcome.model_version
    model = version.model
    with transaction.atomic():
        _lock_outcome(retrain)
        _spend(retrain, token)
        run = registry.training_run_start(model=model, recipe=version.training_run.recipe, config=declared["config"],
                                          seed=declared["seed"], code_version=declared["code_version"],
                                          datasets=[dataset])
        training_membership_import(run=run, dataset=dataset, rows=rows)
        registry.training_run_finish(run=run)
        new = uploaded_version_store(model=model, training_run=run, family=family, checked=checked,
                                     size_bytes=size_bytes, parent=version, guarantee_class=GUARANTEE_CLASS)
        for index, (reference, reference_rows, reference_bytes) in enumerate(references):
            pipeline_reference_store(version=new, index=index, family=family, checked=reference, dataset=dataset,
                                     rows=reference_rows, code_version=declared["code_version"],
                                     seed=declared["seed"], size_bytes=reference_bytes)
        now = timezone.now()
        job = job_create(
            kind=JobKind.UNLEARN, enqueue=False, status=JobStatus.SUCCEEDED, registered_model=model,
            source_version=version, deletion_request=outcome.request, method=EXTERNAL_RETRAIN,
            guarantee_class=GUARANTEE_CLASS, forget_record_ids=outcome.record_ids, result_version=new,
            started_at=retrain.created_at, finished_at=now, wall_seconds=(now - retrain.created_at).total_seconds(),
            device="the company's pipeline", progress_stage=JobStatus.SUCCEEDED, progress_percent=100.0,
            result={"version": new.id, "code_version": declared["code_version"],
                    "external_retrain": {"id": str(retrain.public_id), "attested_by": retrain.attested_by,
                                         "membership_check": check}})
        ExternalRetrain.objects.filter(pk=retrain.pk).update(
            status=ExternalRetrainStatus.REGISTERED, uploaded_at=now, declaration=declared, membership_check=check,
            new_version=new, reference_models=len(references))
        ModelOutcome.objects.filter(pk=outcome.pk).update(job=job)
        ledger_append(event_type="external_retrain.registered", actor=f"pipeline:{retrain.attested_by}"[:200],
                      request=str(outcome.request.public_id), model_version=version.id, new_version=new.id,
                      external_retrain=str(retrain.public_id), code_version=declared["code_version"],
                      records_declared=check["records_declared"], erased_checked=check["request_records_checked"]
                      + check["erased_before_checked"], erased_found=0, reference_models=len(references),
                      job=job.id)
        on_job_finished(job_id=job.id)  # the workflow takes it from here: the audit job
    retrain.refresh_from_db()
    return retrain


def _refuse(retrain: ExternalRetrain, token: str, declared: dict, check: dict) -> None:
    """Spend the token on a declaration that holds erased records and put the outcome back with the DPO
    as a failed audit (nothing of the upload is stored). Every key found goes to the retrain row (the
    DPO's and the pipeline's); the outcome's audit, which this person's report quotes, names only this
    request's keys and counts the others (other people's records); the ledger gets counts."""
    found, own = check["erased_found"], check["of_this_request"]
    others = len(found) - len(own)
    named = f": {', '.join(own[:20])}{' ...' if len(own) > 20 else ''}" if own else ""
    message = (f"The company's pipeline declared a membership that still holds {len(own)} record(s) of this request"
               f"{named}, and {others} record(s) erased before (other requests' records, not named here) "
               f"({check['in_version']} in the new version's membership, {check['in_references']} in its reference "
               "models'). The upload was refused and nothing was stored.")
    with transaction.atomic():
        _lock_outcome(retrain)
        _spend(retrain, token)
        now = timezone.now()
        refusal = {"code": "erased_records_in_membership", "message": message, "record_keys": found[:KEYS_NAMED],
                   "count": len(found), "of_this_request": own[:KEYS_NAMED]}
        ExternalRetrain.objects.filter(pk=retrain.pk).update(status=ExternalRetrainStatus.REFUSED, uploaded_at=now,
                                                             declaration=declared, membership_check=check,
                                                             refusal=refusal)
        _back_to_dpo(retrain, verdict_rule=REFUSAL_RULE, reason=message, event="external_retrain.refused",
                     erased_found=len(found), records_declared=check["records_declared"])


def _back_to_dpo(retrain: ExternalRetrain, *, verdict_rule: str, reason: str, event: str, **ledger: Any) -> None:
    """The outcome becomes a failed audit (no new version) that waits for the DPO's decision."""
    outcome = ModelOutcome.objects.select_for_update().select_related("request").get(pk=retrain.outcome_id)
    if outcome.status != OutcomeStatus.EXECUTING or outcome.method != EXTERNAL_RETRAIN:
        return  # decided meanwhile (withdrawn): nothing to hand back
    retrain.refresh_from_db()
    outcome.status, outcome.verdict = OutcomeStatus.AUDIT_FAILED, "FAIL"
    outcome.audit = {"verdict": {"verdict": "FAIL", "rule": verdict_rule, "reasons": [reason], "warnings": [],
                                 "notes": [f"The DPO may now {DECISIONS_OPEN}."]},
                     "external_retrain": external_retrain_state(retrain)}
    outcome.save(update_fields=["status", "verdict", "audit"])
    ledger_append(event_type=event, actor="platform", request=str(outcome.request.public_id),
                  model_version=outcome.model_version_id, external_retrain=str(retrain.public_id), **ledger)
    advance(outcome.request)
    announce(outcome)


# ---------------------------------------------------------------- expiry, cancellation, waiting


def external_retrains_expire(*, now=None) -> list[str]:
    """Beat task: retrains whose token expired without an upload end ``expired``, and their outcome
    goes back to the DPO as a failed audit. Returns the retrains expired."""
    now = now or timezone.now()
    expired = []
    for retrain in ExternalRetrain.objects.filter(status=ExternalRetrainStatus.AWAITING_UPLOAD, expires_at__lte=now):
        with transaction.atomic():
            _lock_outcome(retrain)
            changed = ExternalRetrain.objects.filter(pk=retrain.pk, status=ExternalRetrainStatus.AWAITING_UPLOAD,
                                                     used_at__isnull=True, expires_at__lte=now).update(
                status=ExternalRetrainStatus.EXPIRED)
            if not changed:
                continue
            _back_to_dpo(retrain, verdict_rule=EXPIRY_RULE, event="external_retrain.expired",
                         reason=f"The company's pipeline uploaded no retrained version before its upload token expired "
                                f"({retrain.expires_at.isoformat()}): nothing was retrained.")
        expired.append(str(retrain.public_id))
    return expired


def external_retrains_cancel(*, outcome: ModelOutcome) -> int:
    """Close the outcome's retrains still awaiting an upload (the model was withdrawn): their tokens
    then open nothing."""
    return ExternalRetrain.objects.filter(outcome=outcome, status=ExternalRetrainStatus.AWAITING_UPLOAD).update(
        status=ExternalRetrainStatus.CANCELLED)


def external_retrain_wait_reason(job) -> str:
    """A start gate for unlearning jobs (workers.jobs.JOB_GATES): a version of the model is being
    retrained by the company's pipeline, and the job must build on what it uploads."""
    if job.kind != "unlearn" or job.registered_model_id is None:
        return ""
    waiting = (ExternalRetrain.objects.filter(status=ExternalRetrainStatus.AWAITING_UPLOAD,
                                              outcome__model_version__model_id=job.registered_model_id)
               .select_related("outcome__model_version").order_by("id").first())
    if waiting is None:
        return ""
    return (f"version {waiting.outcome.model_version.version} is being retrained by the company's pipeline "
            f"(until {waiting.expires_at:%Y-%m-%d %H:%M} UTC)")


def external_retrain_state(retrain: ExternalRetrain | None) -> dict | None:
    """What the API and the outcome's audit show of a retrain (never its token)."""
    if retrain is None:
        return None
    return {"id": str(retrain.public_id), "status": retrain.status, "attested_by": retrain.attested_by,
            "webhook": retrain.webhook_id, "delivery": retrain.delivery.status if retrain.delivery_id else None,
            "sent_at": retrain.created_at.isoformat() if retrain.created_at else None,
            "expires_at": retrain.expires_at.isoformat(),
            "uploaded_at": retrain.uploaded_at.isoformat() if retrain.uploaded_at else None,
            "new_version_id": retrain.new_version_id, "reference_models": retrain.reference_models,
            "membership_check": {k: v for k, v in (retrain.membership_check or {}).items()
                                 if k not in ("erased_found", "of_this_request")},
            # Keys of this request only: the others are other people's records (the pipeline's 409 named them).
            "refusal": {k: v for k, v in retrain.refusal.items() if k != "record_keys"} if retrain.refusal else None}


def external_retrain_latest(outcome: ModelOutcome) -> ExternalRetrain | None:
    return outcome.external_retrains.order_by("-id").first()
