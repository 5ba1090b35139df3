"""Jobs on the admin site: the list, a job's page (its progress, polled from the job API, and a
Cancel button), and the two pages that start work, "Train a model" and "Train shadow models". They
call the same services as the REST API (workers.services), and the same roles may use them
(workers.services.JOB_STARTERS, read from the user's groups as the API reads them); seeing jobs
needs ``workers.view_job``. Job rows change only through the services: nothing here edits one.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from foundation.access.authentication import role_of
from foundation.errors import DomainError
from models_registry.models import Dataset, ModelVersion, RegisteredModel
from workers.models import Job, JobKind
from workers.selectors import ENDED, job_state, job_with_state
from workers.services import (
    JOB_STARTERS,
    REQUEST_JOB_CANCELLERS,
    model_train,
    shadow_models_train,
    started_job_cancel,
)
from workers.training_catalogue import NO_ARCHITECTURE, RECIPE_SPECS

STATUS_TONE = {"pending": "new", "running": "busy", "succeeded": "ok", "failed": "bad", "cancelled": "off"}


class TrainForm(forms.Form):
    model = forms.ModelChoiceField(RegisteredModel.objects.order_by("name"), to_field_name="name")
    dataset = forms.ModelChoiceField(Dataset.objects.all())
    recipe = forms.ChoiceField(required=False, choices=[("", "the model's registered recipe")]
                               + [(name, name) for name in RECIPE_SPECS])
    recipe_config = forms.JSONField(required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 8, "cols": 70}),
                                    help_text="A JSON object; architecture defaults to the model's registered one.")
    split = forms.CharField(max_length=20, initial="train")
    canaries = forms.IntegerField(required=False, initial=0, min_value=0, help_text=(
        "Canaries to plant: mislabelled synthetic records drawn from the dataset's test split with the run's seed. "
        "The audits show by them that they detect memorisation in this model; no request, count or export shows them."))

    def start(self) -> Job:
        data = self.cleaned_data
        return model_train(model=data["model"], dataset=data["dataset"], recipe=data["recipe"] or None,
                           recipe_config={} if data["recipe_config"] is None else data["recipe_config"],
                           split=data["split"], canaries=data["canaries"] or 0)


class ShadowForm(forms.Form):
    # Shadow models are made for trained versions at the top of their lineage (see shadow_models_train).
    version = forms.ModelChoiceField(ModelVersion.objects.filter(parent__isnull=True, training_run__isnull=False)
                                     .select_related("model").order_by("model__name", "version"))
    count = forms.IntegerField(initial=32, help_text="At least 2, in complementary pairs; an approximate verdict "
                                                      "needs 32 (every record OUT in 16).")

    def start(self) -> Job:
        return shadow_models_train(version=self.cleaned_data["version"], count=self.cleaned_data["count"])


START_FORMS = {JobKind.TRAIN: ("Train a model", TrainForm), JobKind.SHADOW: ("Train shadow models", ShadowForm)}


def recipe_table() -> list[dict]:
    """The recipe catalogue as the training form shows it: which recipe trains which models."""
    rows = []
    for name in RECIPE_SPECS:
        spec = RECIPE_SPECS.get(name)
        families = [("no registered architecture" if family == NO_ARCHITECTURE else family) for family in spec.families]
        rows.append({"name": name, "task": spec.task, "families": ", ".join(families),
                     "trains": spec.trains + (" (no BatchNorm)" if spec.no_running_statistics else "")})
    return rows


def may_start(request: HttpRequest, kind: str) -> bool:
    return role_of(request) in JOB_STARTERS.get(kind, ())


def may_cancel(request: HttpRequest, job: Job) -> bool:
    """Who may start a kind of job may cancel it; a deletion request's unlearning job, the DPO."""
    if job.deletion_request_id is not None:
        return job.kind == JobKind.UNLEARN and role_of(request) in REQUEST_JOB_CANCELLERS
    return may_start(request, job.kind)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status_badge", "registered_model", "method", "progress", "created_at")
    list_filter = ("kind", "status")
    list_select_related = ("registered_model",)
    change_list_template = "admin/workers/job/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job):
        return format_html('<span class="dp-badge dp-{}">{}</span>', STATUS_TONE.get(obj.status, "off"), obj.status)

    @admin.display(description="progress")
    def progress(self, obj: Job) -> str:
        return f"{obj.progress_percent:.0f}%" + (f" · {obj.progress_stage}" if obj.progress_stage else "")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        starts = [(reverse(f"admin:workers_job_{kind}"), title) for kind, (title, _) in START_FORMS.items()
                  if may_start(request, kind)]
        return super().changelist_view(request, extra_context={"start_links": starts, **(extra_context or {})})

    def get_urls(self):
        wrap = self.admin_site.admin_view
        own = [path(f"{kind}/", wrap(self.start_view), {"kind": kind}, name=f"workers_job_{kind}")
               for kind in START_FORMS]
        own.append(path("<int:object_id>/cancel/", wrap(self.cancel_view), name="workers_job_cancel"))
        return own + super().get_urls()

    def _visible(self, request: HttpRequest, object_id) -> Job:
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = job_with_state(job_id=int(object_id)) if str(object_id).isdigit() else None
        if job is None:
            raise Http404("no such job")
        return job

    def start_view(self, request: HttpRequest, kind: str) -> HttpResponse:
        """The form that starts a training run or a shadow set; on success, the new job's page."""
        if not may_start(request, kind):
            raise PermissionDenied
        title, form_class = START_FORMS[kind]
        form = form_class(request.POST if request.method == "POST" else None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            try:
                job = form.start()
            except DomainError as error:
                field = (error.field or "").split(".")[0]  # recipe_config.architecture -> recipe_config
                form.add_error(field if field in form.fields else None, error.message)
            else:
                messages.success(request, f"{title}: job {job.id} queued.")
                return redirect("admin:workers_job_change", job.id)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title, "crumb": title,
                   "form": form, "recipes": recipe_table() if kind == JobKind.TRAIN else []}
        return TemplateResponse(request, "admin/workers/job/start.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        """The job's page: read-only, its progress polled from the job API while it is pending or running."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        job = self._visible(request, object_id)
        state = job_state(job=job)
        result = state["result_version"]
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": job,
            "title": f"Job {job.id}: {job.get_kind_display()}", "crumb": job.id, "job": state,
            "status_tone": STATUS_TONE.get(job.status, "off"), "active": job.status not in ENDED,
            "dataset": Dataset.objects.filter(pk=state["dataset"]).first() if state["dataset"] else None,
            "result_url": reverse("admin:models_registry_modelversion_change", args=[result["id"]]) if result else "",
            "shadow_url": (f"{reverse('admin:workers_job_shadow')}?version={result['id']}"
                           if result and may_start(request, JobKind.SHADOW) else ""),
            "can_cancel": job.status not in ENDED and may_cancel(request, job),
            "api_url": reverse("job", args=[job.id]),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/workers/job/detail.html", context)

    def cancel_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """POST only: cancel the job (workers.services.started_job_cancel) and go back to its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self._visible(request, object_id)
        if not may_cancel(request, job):
            raise PermissionDenied
        try:
            job = started_job_cancel(job=job)
        except DomainError as error:
            messages.error(request, f"cancel: {error.message}")
        else:
            messages.success(request, "Cancelled." if job.status == "cancelled"
                             else "Cancel requested: the job stops at its next progress report.")
        return redirect("admin:workers_job_change", job.id)
