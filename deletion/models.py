"""Deletion requests, their outcomes per model, and webhooks."""

from __future__ import annotations

from django.db import models


class Jurisdiction(models.TextChoices):
    GDPR = "GDPR", "GDPR"
    UK_GDPR = "UK_GDPR", "UK GDPR"
    CCPA = "CCPA", "CCPA"


class LegalGround(models.TextChoices):
    # GDPR / UK GDPR Art. 17(1)(a)-(f)
    ART17_1_A = "art17_1_a", "Art. 17(1)(a): no longer necessary"
    ART17_1_B = "art17_1_b", "Art. 17(1)(b): consent withdrawn"
    ART17_1_C = "art17_1_c", "Art. 17(1)(c): objection to processing"
    ART17_1_D = "art17_1_d", "Art. 17(1)(d): unlawfully processed"
    ART17_1_E = "art17_1_e", "Art. 17(1)(e): legal obligation to erase"
    ART17_1_F = "art17_1_f", "Art. 17(1)(f): child's information-society data"
    CCPA_DELETE = "ccpa_1798_105", "CCPA §1798.105: right to delete"
    # No person's right: the company's own decision that its models stop using an attribute (a
    # concept request, deletion.concept_requests). No jurisdiction lists it as a ground for erasure.
    CONCEPT_ERASURE = "concept_erasure", ("None needed: the DPO asked that the models stop using an attribute "
                                          "(concept erasure); no person asked for erasure")


class RejectionGround(models.TextChoices):
    # GDPR Art. 17(3)(a)-(e)
    ART17_3_A = "art17_3_a", "Art. 17(3)(a): freedom of expression and information"
    ART17_3_B = "art17_3_b", "Art. 17(3)(b): legal obligation or public task"
    ART17_3_C = "art17_3_c", "Art. 17(3)(c): public health"
    ART17_3_D = "art17_3_d", "Art. 17(3)(d): archiving, research or statistics"
    ART17_3_E = "art17_3_e", "Art. 17(3)(e): legal claims"
    # CCPA §1798.105(d)(1)-(7)
    CCPA_D1 = "ccpa_d1", "§1798.105(d)(1): complete the transaction"
    CCPA_D2 = "ccpa_d2", "§1798.105(d)(2): security and integrity"
    CCPA_D3 = "ccpa_d3", "§1798.105(d)(3): debug and repair errors"
    CCPA_D4 = "ccpa_d4", "§1798.105(d)(4): free speech"
    CCPA_D5 = "ccpa_d5", "§1798.105(d)(5): Cal. Electronic Communications Privacy Act"
    CCPA_D6 = "ccpa_d6", "§1798.105(d)(6): research in the public interest"
    CCPA_D7 = "ccpa_d7", "§1798.105(d)(7): legal obligation"


def _grounds_by_jurisdiction(grounds: type[models.TextChoices], *, gdpr_prefix: str) -> dict[str, list[str]]:
    """The grounds of ``grounds`` that apply under each jurisdiction: GDPR and UK GDPR share the
    articles starting with ``gdpr_prefix``; CCPA's are the ``ccpa`` ones."""
    gdpr = [g for g in grounds.values if g.startswith(gdpr_prefix)]
    return {Jurisdiction.GDPR: gdpr, Jurisdiction.UK_GDPR: gdpr,
            Jurisdiction.CCPA: [g for g in grounds.values if g.startswith("ccpa")]}


# Which legal grounds a request may invoke, and on which grounds it may be refused, per jurisdiction.
GROUNDS_BY_JURISDICTION = _grounds_by_jurisdiction(LegalGround, gdpr_prefix="art17_1")
REJECTIONS_BY_JURISDICTION = _grounds_by_jurisdiction(RejectionGround, gdpr_prefix="art17_3")


class RequestStatus(models.TextChoices):
    RECEIVED = "RECEIVED"
    VERIFIED = "VERIFIED"
    SCOPED = "SCOPED"
    APPROVED = "APPROVED"
    EXECUTING = "EXECUTING"
    AUDITING = "AUDITING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    # Ended without confirmed erasure for some model: two DPO users accepted the residual risk in
    # writing. Never COMPLETED (see DESIGN.md, "Guarantee classes").
    CLOSED_RISK_ACCEPTED = "CLOSED_RISK_ACCEPTED", "Closed, residual risk accepted"


# A request in one of the ENDED_STATES is closed; in any other it is still worked on (its deadline runs).
ENDED_STATES = (RequestStatus.COMPLETED, RequestStatus.CLOSED_RISK_ACCEPTED, RequestStatus.REJECTED,
                RequestStatus.CANCELLED, RequestStatus.FAILED)
OPEN_STATES = tuple(s for s in RequestStatus if s not in ENDED_STATES)


class RequestKind(models.TextChoices):
    ERASURE = "erasure", "Erasure of a person's data"
    # "Stop using attribute X": no data subject, no record erased; the models named get a concept
    # eraser (guarantee class concept_erased), which never counts as anyone's erasure.
    CONCEPT = "concept", "Concept erasure (an attribute, no person)"


class DeletionRequest(models.Model):
    """An erasure request. Raw identifiers never reach this row: only the subject they resolved to
    (or none) and which kinds of identifier were given. A concept request (``kind`` concept) names
    no subject and no record: the models and the attribute are in ``concept``."""

    public_id = models.UUIDField(unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=RequestKind.choices, default=RequestKind.ERASURE)
    # A concept request's attribute: {attribute, dataset_id, dataset, labels: {record key: value},
    # models: [{model_version_id, layer}], reason, seed, fit_share} (deletion.concept_requests).
    concept = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=RequestStatus.choices, default=RequestStatus.RECEIVED)
    jurisdiction = models.CharField(max_length=10, choices=Jurisdiction.choices)
    legal_ground = models.CharField(max_length=20, choices=LegalGround.choices)
    channel = models.CharField(max_length=50)
    subject = models.ForeignKey("models_registry.DataSubject", on_delete=models.PROTECT, null=True, blank=True,
                                related_name="deletion_requests")
    # A person may be registered as several subjects (an e-mail in one system, a customer id in
    # another); the verified identifiers link them in this request.
    linked_subjects = models.ManyToManyField("models_registry.DataSubject", blank=True, related_name="+")
    identifier_kinds = models.JSONField(default=list)
    # Keyed digests (every pepper version) of the identifiers the request gave, kept until it ends: a
    # completed request puts them on the suppression list even when no record of the person existed
    # yet (their data imported later is refused); a rejected or cancelled one drops them.
    identifier_digests = models.JSONField(default=list, blank=True)
    record_ids = models.JSONField(default=list, help_text="Records named by key in the request.")
    verification = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey("access.ApiToken", on_delete=models.PROTECT, null=True, blank=True, related_name="requests")
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    body_fingerprint = models.CharField(max_length=64, blank=True, default="")
    received_at = models.DateTimeField()
    due_at = models.DateTimeField()
    extended_at = models.DateTimeField(null=True, blank=True)
    extension_reason = models.TextField(blank=True, default="")
    scope = models.JSONField(default=dict, blank=True)
    plan = models.JSONField(default=list, blank=True)
    rejection_ground = models.CharField(max_length=20, choices=RejectionGround.choices, blank=True, default="")
    decision_reason = models.TextField(blank=True, default="")
    completed_at = models.DateTimeField(null=True, blank=True)
    failure = models.TextField(blank=True, default="")
    due_soon = models.BooleanField(default=False)
    overdue = models.BooleanField(default=False)
    # Notices to the person (deletion/notices.py). Their e-mail address, if they gave one, is kept
    # only AES-GCM encrypted under a data key of its own in the keystore (``contact_key_ref``); the
    # key is destroyed and these fields blanked after the last notice. ``contact_handoff``: the
    # notices go to the requesting client's webhooks (the company's own request system) instead.
    language = models.CharField(max_length=35, blank=True, default="",
                                help_text="The language the person asked for, e.g. de or fr-CA.")
    contact_key_ref = models.CharField(max_length=100, blank=True, default="")
    contact_nonce = models.BinaryField(blank=True, default=b"", editable=False)
    contact_ciphertext = models.BinaryField(blank=True, default=b"", editable=False)
    contact_handoff = models.BooleanField(default=False)
    contact_destroyed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["created_by", "idempotency_key"], condition=~models.Q(idempotency_key=""),
                                    name="request_idempotency_unique"),
        ]
        indexes = [models.Index(fields=["status", "due_at"], name="request_status_due_idx")]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"request {self.public_id} ({self.status})"


class OutcomeStatus(models.TextChoices):
    PLANNED = "planned"
    HELD = "held", "Legal hold (not erased)"
    EXECUTING = "executing"
    AUDITING = "auditing"
    AWAITING_DEPLOYMENT = "awaiting_deployment", "Awaiting deployment"
    CONFIRMED = "confirmed"
    WITHDRAWN = "withdrawn", "Withdrawn from serving (Art. 18)"
    AUDIT_FAILED = "audit_failed", "Audit failed"
    # The audit could not confirm erasure (INCONCLUSIVE): the DPO escalates, withdraws the model
    # or accepts the residual risk (two DPO users); the older copies wait for that decision.
    AWAITING_DECISION = "awaiting_decision", "Audit inconclusive: awaiting the DPO's decision"
    FAILED = "failed"


class ModelOutcome(models.Model):
    """What happens to one affected model version within a request."""

    request = models.ForeignKey(DeletionRequest, on_delete=models.CASCADE, related_name="outcomes")
    model_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT, related_name="outcomes")
    status = models.CharField(max_length=30, choices=OutcomeStatus.choices, default=OutcomeStatus.PLANNED)
    method = models.CharField(max_length=50)
    guarantee_class = models.CharField(max_length=20)
    record_ids = models.JSONField(default=list)
    estimated_seconds = models.FloatField(null=True, blank=True)
    job = models.ForeignKey("workers.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="outcomes")
    new_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="outcome_results")
    verdict = models.CharField(max_length=20, blank=True, default="")
    # The audit of the new version: checks, metrics, charts' data, the verdict and its rule.
    audit = models.JSONField(default=dict, blank=True)
    audit_job = models.ForeignKey("workers.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    hold_reason = models.TextField(blank=True, default="")
    # Earlier attempts on this version whose audit failed and which were escalated, oldest first:
    # [{method, guarantee_class, job_id, new_version_id, new_version, new_artifact_sha256, verdict,
    #   audit, escalated_at, escalated_by, purged_artifacts}]. The report shows them.
    attempts = models.JSONField(default=list, blank=True)
    # The residual risk of a result that did not PASS, accepted in writing: {reason, proposed_by,
    # proposed_at} by one DPO user, then {confirmed_by, confirmed_at} by a second one.
    risk_acceptance = models.JSONField(default=dict, blank=True)
    confirmed_by = models.CharField(max_length=200, blank=True, default="")
    confirmed_manually = models.BooleanField(default=False)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request", "model_version"], name="outcome_unique")]


class WebhookEndpoint(models.Model):
    """A client's callback URL. State changes of the requests the client may see are POSTed to it,
    signed with HMAC-SHA256 under ``secret`` (shown to the client once, kept to sign)."""

    client = models.ForeignKey("access.ApiToken", on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    secret = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)


class ModelRecipient(models.Model):
    """Someone outside the platform to whom a copy of a model version was disclosed (GDPR Art. 19):
    when a request erases data from that version, they are told through their own signed webhook
    (``endpoint``, whose secret they were given once) which version replaces it and what to do.
    The endpoint serves this recipient alone: it never receives the clients' request events."""

    name = models.CharField(max_length=200)
    model_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    endpoint = models.OneToOneField(WebhookEndpoint, on_delete=models.CASCADE, related_name="recipient")
    registered_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} (holds model version {self.model_version_id})"


class WebhookDelivery(models.Model):
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.JSONField()
    status = models.CharField(max_length=20, default="pending")  # pending, delivered, failed
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)


class ExternalRetrainStatus(models.TextChoices):
    AWAITING_UPLOAD = "awaiting_upload", "Signed job sent; awaiting the company pipeline's upload"
    REGISTERED = "registered", "Uploaded, checked and registered as a new version"
    REFUSED = "refused", "Upload refused: its membership holds an erased record"
    EXPIRED = "expired", "The upload token expired before any upload"
    CANCELLED = "cancelled", "Cancelled (the model was withdrawn)"


class ExternalRetrain(models.Model):
    """The external-retrain handshake of one outcome (deletion.external_retrain): the signed job
    sent to the company's pipeline, its upload token, and what became of the upload.

    The token is random (256 bits); only its SHA-256 is kept here, scoped to this row (so to one
    request and one model version), with its expiry and the moment it was used (once)."""

    public_id = models.UUIDField(unique=True, editable=False)
    outcome = models.ForeignKey(ModelOutcome, on_delete=models.CASCADE, related_name="external_retrains")
    status = models.CharField(max_length=20, choices=ExternalRetrainStatus.choices,
                              default=ExternalRetrainStatus.AWAITING_UPLOAD)
    webhook = models.ForeignKey(WebhookEndpoint, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    attested_by = models.CharField(max_length=300)
    requested_by = models.CharField(max_length=200)
    # What the job asked for (the signed payload without the token).
    job = models.JSONField(default=dict)
    token_hash = models.CharField(max_length=64, unique=True)
    token_prefix = models.CharField(max_length=12)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    uploaded_at = models.DateTimeField(null=True, blank=True)
    # What the pipeline declared (code version, seed, config) and what the platform checked of it:
    # {records_declared, request_records_checked, erased_before_checked, erased_found: [keys], ...}.
    declaration = models.JSONField(default=dict, blank=True)
    membership_check = models.JSONField(default=dict, blank=True)
    refusal = models.JSONField(default=dict, blank=True)  # {code, message, record_keys}
    new_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+")
    reference_models = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"], name="external_retrain_status_idx")]

    def __str__(self) -> str:
        return f"external retrain {self.public_id} ({self.status})"


class NoticeKind(models.TextChoices):
    RECEIPT = "receipt", "Request received"
    EXTENSION = "extension", "Deadline extended"
    REFUSAL = "refusal", "Request refused"
    COMPLETION = "completion", "Request completed"
    CANCELLATION = "cancellation", "Request cancelled"
    RECIPIENT_ERASURE = "recipient_erasure", "Erasure notice to a recipient (Art. 19)"


# After one of these the person is told nothing more: their contact address is destroyed.
LAST_NOTICES = (NoticeKind.REFUSAL, NoticeKind.COMPLETION, NoticeKind.CANCELLATION)


class NoticeDelivery(models.Model):
    """One notice about a request: to the person (by e-mail, or handed to the requesting client's
    webhooks) or to a recipient of a model copy (their webhook). Holds what the notice said in
    plain facts (``context``), never the address it went to."""

    request = models.ForeignKey(DeletionRequest, on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=30, choices=NoticeKind.choices)
    channel = models.CharField(max_length=20)  # email, webhook
    language = models.CharField(max_length=10, blank=True, default="")
    recipient = models.ForeignKey(ModelRecipient, on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="notices")
    status = models.CharField(max_length=20, default="pending")  # pending, sent, failed
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
