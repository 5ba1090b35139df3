"""Admin registration for the registry. Raw identifiers are never stored, so digests are shown
only as short hex prefixes; TrainingMembership (composite key, which the admin cannot register)
is shown inside its run and its record."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join

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

MEMBERSHIP_PREVIEW = 50


def _hex(value) -> str:
    return bytes(value).hex()[:16] + "…" if value else ""


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "modality", "legal_basis", "created_at")
    list_filter = ("modality", "legal_basis")
    search_fields = ("name",)


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
    list_display = ("external_key", "dataset", "subject", "split", "status", "erased_at")
    list_filter = ("status", "dataset", "split")
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
        rows = TrainingMembership.objects.filter(record=obj).values_list("run_id", "shard", "slice", "position")
        return format_html_join(
            ", ", "run {} (shard {}, slice {}, position {})", rows[:MEMBERSHIP_PREVIEW]
        ) or "none"


@admin.register(SuppressionEntry)
class SuppressionEntryAdmin(admin.ModelAdmin):
    list_display = ("kind", "dataset_name", "external_key", "identifier_kind", "reason", "created_at")
    list_filter = ("kind",)
    search_fields = ("external_key", "reason")
    exclude = ("digest",)


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ("version", "parent", "status", "guarantee_class", "artifact_sha256", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "task", "training_recipe", "created_at")
    search_fields = ("name",)
    inlines = [ModelVersionInline]


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
