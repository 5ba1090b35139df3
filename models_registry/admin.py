"""Admin registration for the registry. Raw identifiers are never stored, so digests are shown
only as short hex prefixes; TrainingMembership (composite key, which the admin cannot register)
is shown inside its run and its record.

For ML engineers, a model's page shows its versions as a tree (parent to child, with the job that
made each version and the open requests that touch it), and a version's page shows its lineage,
the training run and datasets behind it, its model's unlearning policy and its open requests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin
from django.template.loader import render_to_string
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from foundation.errors import DomainError
from models_registry import selectors
from models_registry.models import (
    DataRecord,
    Dataset,
    DataSubject,
    ExcludedRecord,
    ModelLineageEdge,
    ModelVersion,
    RegisteredModel,
    StoredArtifact,
    SubjectIdentifier,
    SuppressionEntry,
    TrainingMembership,
    TrainingRun,
)
from models_registry.services import kept_data_floor_validate, unlearning_policy_validate

MEMBERSHIP_PREVIEW = 50


def _hex(value) -> str:
    return bytes(value).hex()[:16] + "…" if value else ""


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "modality", "source_kind", "legal_basis", "created_at")
    list_filter = ("modality", "legal_basis")
    search_fields = ("name",)
    # Where the records are read is set when the dataset is registered and its file imported: a
    # form must not repoint a dataset at another file or query (README "Bring your own data").
    readonly_fields = ("source", "record_schema", "storage_location")

    @admin.display(description="source")
    def source_kind(self, obj):
        return (obj.source or {}).get("kind", "folder")


class SubjectIdentifierInline(admin.TabularInline):
    model = SubjectIdentifier
    fields = ("kind", "key_version", "digest_prefix", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="digest")
    def digest_prefix(self, obj):
        return _hex(obj.digest)


@admin.register(DataSubject)
class DataSubjectAdmin(admin.ModelAdmin):
    list_display = ("reference", "created_at", "erased_at")
    search_fields = ("reference",)
    inlines = [SubjectIdentifierInline]
    readonly_fields = ("reference", "created_at", "erased_at")


@admin.register(SubjectIdentifier)
class SubjectIdentifierAdmin(admin.ModelAdmin):
    list_display = ("subject", "kind", "key_version", "digest_prefix")
    list_filter = ("kind", "key_version")
    readonly_fields = ("subject", "kind", "key_version", "digest_prefix", "created_at")
    exclude = ("digest",)

    @admin.display(description="digest")
    def digest_prefix(self, obj):
        return _hex(obj.digest)


@admin.register(DataRecord)
class DataRecordAdmin(admin.ModelAdmin):
    list_display = ("external_key", "dataset", "subject", "split", "status", "canary", "erased_at")
    list_filter = ("status", "dataset", "split", "canary")
    search_fields = ("external_key", "subject__reference")
    list_select_related = ("dataset", "subject")
    readonly_fields = ("fingerprint", "memberships")
    exclude = ("content_fingerprint",)
    raw_id_fields = ("subject",)

    @admin.display(description="content fingerprint")
    def fingerprint(self, obj):
        return _hex(obj.content_fingerprint)

    @admin.display(description="training runs")
    def memberships(self, obj):
        rows = [row[1:] for row in selectors.memberships_of_records(record_ids=[obj.id])]
        return format_html_join(", ", "run {} (shard {}, slice {})", rows[:MEMBERSHIP_PREVIEW]) or "none"


@admin.register(SuppressionEntry)
class SuppressionEntryAdmin(admin.ModelAdmin):
    list_display = ("kind", "dataset_name", "external_key", "identifier_kind", "reason", "created_at")
    list_filter = ("kind",)
    search_fields = ("external_key", "reason")
    exclude = ("digest",)


@dataclass
class OpenRequestLookups:
    """What the registry's pages show of the open requests on a version. The registry knows no
    requests: the request app sets these from its AppConfig.ready() (deletion.apps); until then a
    page shows none."""

    counts_by_version: Callable[..., dict[int, int]] = lambda *, version_ids: {}
    touching_version: Callable[..., list[dict[str, Any]]] = lambda *, version_id: []


OPEN_REQUESTS = OpenRequestLookups()


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ("version", "parent", "status", "guarantee_class", "artifact_sha256", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


def version_tree(model: RegisteredModel) -> list[dict]:
    """A model's versions in tree order (each parent before its children, depth-first), each as
    ``{"version", "depth", "job", "open_requests"}``; ``job`` is the job that made it, if any."""
    versions = list(model.versions.select_related("training_run", "created_by_job").order_by("version"))
    by_id = {v.id: v for v in versions}
    children: dict[int | None, list[ModelVersion]] = {}
    for version in versions:
        # A parent in another model (or none) makes the version a root of this model's tree.
        children.setdefault(version.parent_id if version.parent_id in by_id else None, []).append(version)
    counts = OPEN_REQUESTS.counts_by_version(version_ids=list(by_id))
    rows: list[dict] = []

    def walk(parent_id: int | None, depth: int) -> None:
        for version in children.get(parent_id, []):
            rows.append({"version": version, "depth": depth, "indent": depth * 22,
                         "job": getattr(version, "created_by_job", None), "open_requests": counts.get(version.id, 0)})
            walk(version.id, depth + 1)

    walk(None, 0)
    return rows


class RegisteredModelForm(forms.ModelForm):
    class Meta:
        model = RegisteredModel
        fields = "__all__"

    def clean_unlearning_policy(self):
        policy = self.cleaned_data["unlearning_policy"]
        # task is read-only once a model exists; on the add form it is cleaned before the policy.
        task = self.instance.task if self.instance.pk else self.cleaned_data.get("task")
        try:
            return unlearning_policy_validate(policy=policy if policy is not None else {}, task=task or None,
                                              architecture=self.cleaned_data.get("architecture", self.instance.architecture))
        except DomainError as error:
            raise forms.ValidationError(error.message) from error

    def clean_s3t_kept_data_floor(self):
        recipe = self.instance.training_recipe if self.instance.pk else self.cleaned_data.get("training_recipe", "")
        try:
            return kept_data_floor_validate(floor=self.cleaned_data["s3t_kept_data_floor"], training_recipe=recipe)
        except DomainError as error:
            raise forms.ValidationError(error.message) from error


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "task", "training_recipe", "created_at")
    search_fields = ("name",)
    inlines = [ModelVersionInline]
    form = RegisteredModelForm
    readonly_fields = ("versions_tree",)

    def get_readonly_fields(self, request, obj=None):
        # How a model was trained decides the guarantee its deletions can claim (a sharded recipe
        # plans exact unlearning), and plans name the model: neither is edited after creation.
        # What stays editable is the architecture note, the unlearning policy and the kept-data floor.
        fixed = ("name", "task", "training_recipe") if obj is not None else ()
        return fixed + tuple(super().get_readonly_fields(request, obj))

    @admin.display(description="version tree")
    def versions_tree(self, obj: RegisteredModel) -> SafeString | str:
        if obj is None or obj.pk is None:
            return "—"
        return render_to_string("admin/models_registry/version_tree.html", {"rows": version_tree(obj)})


class ExcludedRecordInline(admin.TabularInline):
    model = ExcludedRecord
    extra = 0
    raw_id_fields = ("record",)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("model", "version", "parent", "status", "guarantee_class", "created_at")
    list_filter = ("status", "model", "guarantee_class")
    raw_id_fields = ("parent", "training_run")
    inlines = [ExcludedRecordInline]
    readonly_fields = ("lineage", "training_data", "unlearning_policy")
    change_form_template = "admin/models_registry/modelversion/change_form.html"

    @admin.display(description="lineage")
    def lineage(self, obj: ModelVersion | None):
        if obj is None or obj.pk is None:
            return "—"
        job = getattr(obj, "created_by_job", None)
        made_by = (format_html("job #{} ({} {}, {}, {})", job.id, job.kind, job.method or "—",
                               job.guarantee_class or "no class", job.status)
                   if job else "a training run" if obj.training_run_id else "registered by hand")
        children = format_html_join(", ", "v{}", ((c.version,) for c in obj.children.order_by("version"))) or "none"
        edges = [(e.kind, str(e.parent)) for e in obj.upstream_edges.select_related("parent__model")]
        downstream = [(e.kind, str(e.child)) for e in obj.downstream_edges.select_related("child__model")]
        return format_html(
            "parent: {} · children: {} · made by {}{}{}",
            f"v{obj.parent.version}" if obj.parent else "none", children, made_by,
            format_html_join("", " · {} from {}", edges),
            format_html_join("", " · {} into {}", downstream),
        )

    @admin.display(description="training data")
    def training_data(self, obj: ModelVersion | None):
        run = obj.training_run if obj is not None else None
        if run is None:
            return "—"
        datasets = format_html_join(", ", "{}@{} ({}, {})", run.datasets.values_list(
            "name", "version", "modality", "legal_basis")) or "no datasets"
        excluded = obj.excluded_records.count()
        members = TrainingMembership.objects.filter(run=run)
        canaries = members.filter(record__canary=True).count()
        return format_html(
            "run {} · recipe {} · seed {} · code {} · {} training records{} · datasets: {}{}",
            run.id, run.recipe, run.seed, run.code_version, members.count() - canaries,
            f" (and {canaries} planted canaries)" if canaries else "",
            datasets, f" · {excluded} records excluded by unlearning" if excluded else "",
        )

    @admin.display(description="unlearning policy")
    def unlearning_policy(self, obj: ModelVersion | None):
        if obj is None or obj.pk is None:
            return "—"
        policy = obj.model.unlearning_policy or {}
        return format_html("<pre style=\"margin:0\">{}</pre><div>recipe {}{}</div>",
                           json.dumps(policy, indent=2, sort_keys=True) if policy else "{} (none: full retrain)",
                           obj.model.training_recipe, f" · guarantee of this version: {obj.guarantee_class}"
                           if obj.guarantee_class else "")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The change page, with the open requests that touch the version below the form (links to
        the requests only for those who may see them: the template checks ``perms``)."""
        extra = dict(extra_context or {})
        if str(object_id).isdigit():
            extra["open_requests"] = OPEN_REQUESTS.touching_version(version_id=int(object_id))
        return super().change_view(request, object_id, form_url, extra_context=extra)


@admin.register(ModelLineageEdge)
class ModelLineageEdgeAdmin(admin.ModelAdmin):
    list_display = ("parent", "kind", "child", "created_at")
    raw_id_fields = ("parent", "child")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "recipe", "seed", "code_version", "started_at", "finished_at")
    list_filter = ("recipe", "model")
    readonly_fields = ("membership_summary",)

    @admin.display(description="membership")
    def membership_summary(self, obj):
        rows = TrainingMembership.objects.filter(run=obj)
        preview = rows.values_list("record__external_key", "shard", "slice", "position").order_by("position")
        count = rows.count()
        listing = format_html_join(", ", "{} (shard {}, slice {}, pos {})", preview[:MEMBERSHIP_PREVIEW])
        return f"{count} records: {listing}{' …' if count > MEMBERSHIP_PREVIEW else ''}"


@admin.register(StoredArtifact)
class StoredArtifactAdmin(admin.ModelAdmin):
    list_display = ("sha256", "kind", "model_version", "training_run", "shard", "slices", "status", "size_bytes")
    list_filter = ("kind", "status")
    search_fields = ("sha256", "label")
