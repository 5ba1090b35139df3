"""The data-protection officer's workspace on the Django admin site.

- The request queue (the DeletionRequest changelist): status, jurisdiction, due date and days left
  with overdue requests badged red; filters by status, jurisdiction, due date and model; search by
  request id or subject reference.
- The request page (replaces the change form, which would let a row be edited past the services):
  the ledger timeline, scope, plan, jobs with live progress, audit verdicts and reports, and one
  POST form per action. Each action calls one service with the user as actor; a DomainError's
  message comes back as an admin message.
- The dashboard (``dashboard/``): see deletion/admin_dashboard.py.

Who may do what is Django model permissions (granted to groups by ``manage.py setup_roles``):
viewing needs ``deletion.view_deletionrequest``, acting ``deletion.change_deletionrequest``. The
views check them; hiding a button is only a courtesy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Value, When
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

from audits.checks.guarantees import guarantee_text
from deletion import deadlines, decisions, selectors
from deletion.admin_dashboard import dashboard_view, duration_text
from deletion.admin_forms import (
    ApproveForm,
    CancelForm,
    ConfirmDeploymentForm,
    ExtendForm,
    RejectForm,
    VerifyForm,
    VersionReasonForm,
)
from deletion.models import (
    ENDED_STATES,
    OPEN_STATES,
    REJECTIONS_BY_JURISDICTION,
    DeletionRequest,
    Jurisdiction,
    OutcomeStatus,
    RejectionGround,
    RequestKind,
    RequestStatus,
)
from deletion.planning import MODEL_KIND_WORDS
from deletion.report_data import derived_model_note
from foundation.errors import DomainError
from models_registry.models import RegisteredModel

VIEW_PERMISSION = "deletion.view_deletionrequest"
ACT_PERMISSION = "deletion.change_deletionrequest"
S = RequestStatus

# Where each request-wide action is offered (the services decide what is legal; this only keeps
# buttons that cannot work off the page).
UNDECIDED = (S.RECEIVED, S.VERIFIED, S.SCOPED)
STATUS_TONE = {
    S.RECEIVED: "new", S.VERIFIED: "new", S.SCOPED: "new", S.APPROVED: "busy", S.EXECUTING: "busy",
    S.AUDITING: "busy", S.COMPLETED: "ok", S.CLOSED_RISK_ACCEPTED: "warn", S.REJECTED: "off", S.CANCELLED: "off",
    S.FAILED: "bad",
}
VERDICT_TONE = {"PASS": "ok", "FAIL": "bad", "INCONCLUSIVE": "warn"}


# ---------------------------------------------------------------- presentation helpers


def deadline_badge(request: DeletionRequest, now=None) -> tuple[str, str]:
    """(tone, text) for a request's deadline: ``bad`` overdue, ``warn`` due within a week, ``ok``
    later, ``off`` for a request that has ended."""
    if request.status in ENDED_STATES:
        return "off", "ended"
    left = deadlines.days_left(request, now)
    if left < 0:
        return "bad", f"overdue {-left} d"
    if left < selectors.DUE_SOON_DAYS:
        return "warn", f"{left} d left"
    return "ok", f"{left} d left"


def badge(tone: str, text: str) -> SafeString:
    return format_html('<span class="dp-badge dp-{}">{}</span>', tone, text)


def estimated_total(estimates: list[float | None]) -> str:
    """The plan's total estimated cost; methods without past jobs have no estimate."""
    known = [e for e in estimates if e is not None]
    if not known:
        return "no history yet" if estimates else "—"
    total = duration_text(sum(known))
    return total if len(known) == len(estimates) else f"at least {total} (some methods have no history)"


AUDIT_METRICS = {
    "forget_accuracy": "accuracy on the erased records",
    "retain_accuracy": "accuracy on kept training records",
    "test_accuracy": "accuracy on held-out records",
    "forget_mae": "mean absolute error on the erased records",
    "forget_rmse": "root mean squared error on the erased records",
    "retain_mae": "mean absolute error on kept training records",
    "retain_rmse": "root mean squared error on kept training records",
    "test_mae": "mean absolute error on held-out records",
    "test_rmse": "root mean squared error on held-out records",
}


# A concept erasure's audit (audits.concept_audit): the probes' AUC for the attribute, before -> after.
CONCEPT_METRICS = {
    "linear_auc": "linear probe's AUC for the attribute (0.5: chance)",
    "nonlinear_auc": "MLP probe's AUC for the attribute (0.5: chance)",
}
TASK_SIDES = {"retain": "on labelled records it trained on", "test": "on held-out records"}


def audit_summary(audit: Any) -> dict[str, Any]:
    """The key figures of an outcome's audit (the JSON the audit job writes): accuracy before and
    after (for a concept erasure: the probes' AUC for the attribute and the model's own task), each
    check's verdict, the verdict's rule. Empty lists where the audit has not run."""
    audit = audit if isinstance(audit, dict) else {}
    metrics = audit.get("metrics") or {}
    rows = [(label, metrics[key].get("original"), metrics[key].get("unlearned"))
            for key, label in AUDIT_METRICS.items() if isinstance(metrics.get(key), dict)]
    concept = audit.get("concept") if isinstance(audit.get("concept"), dict) else {}
    rows += [(label, concept.get(f"original_{key}"), concept.get(key)) for key, label in CONCEPT_METRICS.items()
             if key in concept]
    task = audit.get("task_utility") if isinstance(audit.get("task_utility"), dict) else {}
    rows += [(f"the model's own task, {task[side].get('metric', 'accuracy')} {label}", task[side].get("original"),
              task[side].get("erased")) for side, label in TASK_SIDES.items() if isinstance(task.get(side), dict)]
    checks = [(str(check.get("check", "check")), str(check.get("verdict", "")))
              for check in audit.get("checks", []) if isinstance(check, dict)]
    verdict = audit.get("verdict") if isinstance(audit.get("verdict"), dict) else {}
    return {"metrics": rows, "checks": checks, "rule": verdict.get("rule", ""),
            "shadow_models": audit.get("shadow_models"), "nothing_deleted": bool(audit.get("nothing_deleted"))}


def report_pdf_url(report_id: int) -> str:
    """The reports API's PDF download (session-authenticated for staff with a DPO or auditor role)."""
    try:
        return reverse("report-pdf", kwargs={"report_id": report_id})
    except NoReverseMatch:  # the reports API is not routed (yet): its documented address
        return f"/api/v1/reports/{report_id}/pdf/"


# ---------------------------------------------------------------- the queue's filters


def jurisdiction_label(code: str) -> str:
    return code.replace("_", " ")  # GDPR, UK GDPR, CCPA: how the law names itself


class JurisdictionFilter(admin.SimpleListFilter):
    title = "jurisdiction"
    parameter_name = "jurisdiction"

    def lookups(self, request, model_admin):
        return [(code, jurisdiction_label(code)) for code in Jurisdiction.values]

    def queryset(self, request, queryset):
        return queryset.filter(jurisdiction=self.value()) if self.value() else queryset


class DueFilter(admin.SimpleListFilter):
    title = "due"
    parameter_name = "due"

    def lookups(self, request, model_admin):
        return [("open", "Open (not ended)"), ("week", "Due within 7 days"), ("overdue", "Overdue")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(status__in=OPEN_STATES)
        if self.value() == "week":
            return queryset.filter(pk__in=selectors.requests_due_soon().values("pk"))
        if self.value() == "overdue":
            return queryset.filter(pk__in=selectors.requests_overdue().values("pk"))
        return queryset


class AwaitingFilter(admin.SimpleListFilter):
    title = "waiting for"
    parameter_name = "awaiting"

    def lookups(self, request, model_admin):
        return list(selectors.DECISIONS.items())

    def queryset(self, request, queryset):
        if self.value() in selectors.DECISIONS:
            return queryset.filter(pk__in=selectors.requests_awaiting(decision=self.value()).values("pk"))
        return queryset


class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        return [(name, name) for name in RegisteredModel.objects.order_by("name").values_list("name", flat=True)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(pk__in=selectors.requests_for_model(model_name=self.value()).values("pk"))
        return queryset


# ---------------------------------------------------------------- actions: form -> one service


@dataclass(frozen=True)
class Action:
    form: Callable[[dict, DeletionRequest], forms.Form]
    call: Callable[[HttpRequest, DeletionRequest, forms.Form], Any]
    done: str


def _verify(http: HttpRequest, target: DeletionRequest, form: VerifyForm) -> DeletionRequest:
    evidence = form.evidence(default_verifier=http.user.get_username())
    return decisions.deletion_request_verify(request=target, actor=http.user, evidence=evidence)


def _approve(http: HttpRequest, target: DeletionRequest, form: ApproveForm) -> DeletionRequest:
    return decisions.deletion_request_approve(request=target, actor=http.user, holds=form.holds(),
                                             methods=form.methods())


def _reject(http: HttpRequest, target: DeletionRequest, form: RejectForm) -> DeletionRequest:
    data = form.cleaned_data
    return decisions.deletion_request_reject(request=target, actor=http.user, ground=data["ground"],
                                            reason=data["reason"])


def _extend(http: HttpRequest, target: DeletionRequest, form: ExtendForm) -> DeletionRequest:
    data = form.cleaned_data
    return decisions.deletion_request_extend(request=target, actor=http.user, reason=data["reason"],
                                            months=data["months"], days=data["days"])


def _cancel(http: HttpRequest, target: DeletionRequest, form: CancelForm) -> DeletionRequest:
    return decisions.deletion_request_cancel(request=target, actor=http.user, reason=form.cleaned_data["reason"])


def _withdraw(http: HttpRequest, target: DeletionRequest, form: VersionReasonForm) -> DeletionRequest:
    data = form.cleaned_data
    return decisions.model_withdraw(request=target, actor=http.user, model_version_id=data["model_version_id"],
                                   reason=data["reason"])


def _confirm(http: HttpRequest, target: DeletionRequest, form: ConfirmDeploymentForm) -> DeletionRequest:
    # A person confirming in the admin is a manual confirmation, whoever they are.
    return decisions.deployment_confirm(request=target, actor=http.user,
                                       new_version_id=form.cleaned_data["new_version_id"], manual=True)


def _escalate(http: HttpRequest, target: DeletionRequest, form: VersionReasonForm) -> DeletionRequest:
    return decisions.outcome_escalate(request=target, actor=http.user,
                                      model_version_id=form.cleaned_data["model_version_id"])


def _accept_risk(http: HttpRequest, target: DeletionRequest, form: VersionReasonForm) -> DeletionRequest:
    data = form.cleaned_data
    return decisions.outcome_risk_accept(request=target, actor=http.user, model_version_id=data["model_version_id"],
                                         reason=data["reason"])


ACTIONS: dict[str, Action] = {
    "verify": Action(lambda data, t: VerifyForm(data), _verify, "Identity verified; the request is scoped."),
    "approve": Action(lambda data, t: ApproveForm(data, plan=t.plan or []), _approve,
                      "Approved."),
    "reject": Action(lambda data, t: RejectForm(data), _reject, "Rejected."),
    "extend": Action(lambda data, t: ExtendForm(data), _extend, "Deadline extended."),
    "cancel": Action(lambda data, t: CancelForm(data), _cancel, "Cancelled."),
    "withdraw": Action(lambda data, t: VersionReasonForm(data), _withdraw,
                       "Model version withdrawn from serving (Art. 18)."),
    "confirm": Action(lambda data, t: ConfirmDeploymentForm(data), _confirm, "Deployment confirmed."),
    "escalate": Action(lambda data, t: VersionReasonForm(data), _escalate, "Escalated to an exact retrain."),
    "accept_risk": Action(lambda data, t: VersionReasonForm(data), _accept_risk,
                          "Residual risk: recorded (a second DPO user confirms it) or confirmed."),
}


def _form_errors(form: forms.Form) -> str:
    return "; ".join(f"{'' if name == '__all__' else name + ': '}{' '.join(errors)}"
                     for name, errors in form.errors.items())


# ---------------------------------------------------------------- the admin


@admin.register(DeletionRequest)
class DeletionRequestAdmin(admin.ModelAdmin):
    list_display = ("request_id", "status_badge", "jurisdiction_code", "received", "due", "models")
    list_display_links = ("request_id",)
    list_filter = ("status", AwaitingFilter, JurisdictionFilter, DueFilter, ModelFilter)
    search_fields = ("public_id", "subject__reference")
    search_help_text = "Request id (or its first characters), or the subject's reference."
    list_select_related = ("subject",)
    list_per_page = 50
    change_list_template = "admin/deletion/deletionrequest/change_list.html"
    detail_template = "admin/deletion/deletionrequest/detail.html"

    def get_queryset(self, request: HttpRequest):
        # The queue puts open requests first (most urgent at the top) and ended ones after.
        ended = Case(When(status__in=ENDED_STATES, then=Value(1)), default=Value(0))
        queryset = self.model._default_manager.get_queryset().annotate(queue_rank=ended)
        return queryset.order_by(*self.get_ordering(request))

    def get_ordering(self, request: HttpRequest):
        return ("queue_rank", "due_at")

    # Requests come in through the API and are never deleted (the ledger outlives them anyway).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DeletionRequest | None = None) -> bool:
        return False

    # ------------------------------------------------------------ queue columns

    @admin.display(description="request", ordering="public_id")
    def request_id(self, obj: DeletionRequest) -> str:
        return str(obj.public_id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: DeletionRequest) -> SafeString:
        return badge(STATUS_TONE.get(obj.status, "off"), obj.status)

    @admin.display(description="jurisdiction", ordering="jurisdiction")
    def jurisdiction_code(self, obj: DeletionRequest) -> str:
        return jurisdiction_label(obj.jurisdiction)

    @admin.display(description="received", ordering="received_at")
    def received(self, obj: DeletionRequest) -> str:
        return date_format(timezone.localtime(obj.received_at), "j M Y")

    @admin.display(description="due", ordering="due_at")
    def due(self, obj: DeletionRequest) -> SafeString:
        return format_html("{}&nbsp; {}", date_format(timezone.localtime(obj.due_at), "j M Y"),
                           badge(*deadline_badge(obj)))

    @admin.display(description="models")
    def models(self, obj: DeletionRequest) -> str:
        return ", ".join(f"{step['model']} v{step['version']}" for step in obj.plan) or "—"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"dashboard_url": reverse("admin:deletion_deletionrequest_dashboard"),
                 "title": "Deletion requests: the queue", **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    # ------------------------------------------------------------ URLs

    def get_urls(self):
        wrap = self.admin_site.admin_view
        own = [
            path("dashboard/", wrap(self.dashboard), name="deletion_deletionrequest_dashboard"),
            path("<int:object_id>/progress/", wrap(self.progress_view), name="deletion_deletionrequest_progress"),
            path("<int:object_id>/act/<slug:action>/", wrap(self.action_view),
                 name="deletion_deletionrequest_act"),
        ]
        return own + super().get_urls()

    def _visible(self, request: HttpRequest, object_id) -> DeletionRequest:
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied
        target = DeletionRequest.objects.select_related("subject").filter(pk=object_id).first()
        if target is None:
            raise Http404("no such deletion request")
        return target

    # ------------------------------------------------------------ the request page

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        """The request page. Read-only: every change goes through an action (a service)."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        if not str(object_id).isdigit():
            raise Http404("no such deletion request")
        target = self._visible(request, object_id)
        context = {
            **self.admin_site.each_context(request),
            **self.request_page_context(request, target),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.detail_template, context)

    def request_page_context(self, request: HttpRequest, target: DeletionRequest) -> dict[str, Any]:
        """Everything the request page shows; ``offer`` and ``can_*`` say which forms to show
        (the action view checks the permission again, and the services check the state)."""
        can_act = request.user.has_perm(ACT_PERMISSION)
        ended = target.status in ENDED_STATES
        timeline = [{**item, "at": parse_datetime(item["at"]) or item["at"]}
                    for item in selectors.request_timeline(request=target)]
        # A step planned before plans named the model's kind has none (the page then shows none).
        plan = [{**{k: v for k, v in step.items() if k != "record_ids"},
                 "model_kind_words": MODEL_KIND_WORDS.get(step.get("model_kind", ""), "")} for step in target.plan]
        estimates = [step.get("estimated_seconds") for step in plan]
        outcomes = selectors.request_outcomes(request=target)
        jobs = selectors.request_jobs(request=target)
        rows = [{
            "outcome": outcome,
            "verdict_tone": VERDICT_TONE.get(outcome.verdict, "off"),
            "action": guarantee_text(outcome.guarantee_class).action,
            # A derived child: its parent, the parent's new version it was re-derived from, the class cap.
            "derived": derived_model_note(outcome),
            "audit": audit_summary(getattr(outcome, "audit", None)),
            # The utility check against the plan's bar: a version can erase the records and lose accuracy.
            "utility": selectors.outcome_utility(outcome),
            # An ended request takes no more decisions (the services answer request_ended).
            "can_withdraw": can_act and not ended and outcome.status != OutcomeStatus.WITHDRAWN,
            "can_confirm": can_act and not ended and outcome.status == OutcomeStatus.AWAITING_DEPLOYMENT
            and outcome.new_version_id is not None,
            # A concept erasure names no record to retrain without: it has no exact method to escalate to.
            "can_escalate": can_act and not ended and outcome.status in decisions.DECIDABLE
            and target.kind != RequestKind.CONCEPT,
            # One DPO user records the acceptance and its reason; another person confirms it.
            "can_accept_risk": can_act and not ended and outcome.status in decisions.DECIDABLE
            and decisions.risk_acceptance_proposer(outcome.risk_acceptance) != decisions.actor_person(request.user),
        } for outcome in outcomes]
        grounds = dict(RejectionGround.choices)
        tone, deadline_text = deadline_badge(target)
        return {
            "title": f"Deletion request {target.public_id}",
            "opts": self.model._meta,
            "original": target,
            "target": target,
            "status_tone": STATUS_TONE.get(target.status, "off"),
            "deadline_tone": tone,
            "deadline_text": deadline_text,
            "timeline": timeline,
            "scope": target.scope or {},
            "plan": plan,
            "estimated_total": estimated_total(estimates),
            "jurisdiction_label": jurisdiction_label(target.jurisdiction),
            "outcomes": rows,
            "jobs": jobs,
            "reports": [{"report": report, "pdf_url": report_pdf_url(report.pk)}
                        for report in selectors.request_reports(request=target)],
            # Notices to the person and to recipients of model copies: never the address or the text.
            "notices": list(target.notices.select_related("recipient").order_by("created_at", "id")),
            "can_act": can_act,
            "ended": ended,
            "offer": {
                "verify": can_act and target.status == S.RECEIVED,
                "approve": can_act and target.status == S.SCOPED,
                # A concept request is the company's own decision: cancelled, never refused under Art. 17(3).
                "reject": can_act and target.status in UNDECIDED and target.kind != RequestKind.CONCEPT,
                "cancel": can_act and target.status in UNDECIDED,
                "extend": can_act and not ended and target.extended_at is None,
            },
            "rejection_grounds": [(g, grounds[g]) for g in REJECTIONS_BY_JURISDICTION[target.jurisdiction]],
            "extend_in_months": target.jurisdiction in deadlines.GDPR_LIKE,
            "extend_days_max": deadlines.CCPA_DAYS,
            "progress_url": reverse("admin:deletion_deletionrequest_progress", args=[target.pk]),
        }

    def progress_view(self, request: HttpRequest, object_id: int) -> JsonResponse:
        """What the progress bars poll: the request's status and each job's stage and percent."""
        target = self._visible(request, object_id)
        return JsonResponse({"status": target.status, "jobs": selectors.request_jobs_progress(request=target)})

    def action_view(self, request: HttpRequest, object_id: int, action: str) -> HttpResponse:
        """POST only: parse the form, call the action's service, say how it went, go back."""
        if not request.user.has_perm(ACT_PERMISSION):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        spec = ACTIONS.get(action)
        if spec is None:
            raise Http404("no such action")
        target = self._visible(request, object_id)
        back = redirect("admin:deletion_deletionrequest_change", target.pk)
        form = spec.form(request.POST, target)
        if not form.is_valid():
            messages.error(request, f"{action}: {_form_errors(form)}")
            return back
        try:
            spec.call(request, target, form)
        except DomainError as error:
            messages.error(request, f"{action}: {error.message}")
            return back
        self.log_change(request, target, f"{action} (recorded in the ledger)")
        messages.success(request, spec.done)
        return back

    def dashboard(self, request: HttpRequest) -> HttpResponse:
        """The dashboard, for those who may see requests."""
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied
        return dashboard_view(request, self.admin_site, self.model._meta)


# The admin index links to the dashboard (for those who may see requests).
admin.site.index_template = "admin/deletion/index.html"
