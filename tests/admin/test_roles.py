"""setup_roles: the groups and their permissions."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def granted(group: str) -> set[str]:
    return {f"{app}.{codename}" for app, codename in
            Group.objects.get(name=group).permissions.values_list("content_type__app_label", "codename")}


def test_setup_roles_grants_and_is_idempotent():
    out = io.StringIO()
    call_command("setup_roles", stdout=out)
    first = {g: granted(g) for g in ("dpo", "ml_engineer", "auditor")}
    group = Group.objects.get(name="auditor")
    group.permissions.clear()  # drift is reset by the next run
    call_command("setup_roles", stdout=io.StringIO())
    assert {g: granted(g) for g in ("dpo", "ml_engineer", "auditor")} == first
    assert "dpo: " in out.getvalue()

    dpo, engineer, auditor = first["dpo"], first["ml_engineer"], first["auditor"]
    assert {"deletion.view_deletionrequest", "deletion.change_deletionrequest",
            "models_registry.view_modelversion", "workers.view_job"} <= dpo
    assert {"models_registry.change_registeredmodel", "models_registry.view_modelversion",
            "models_registry.view_trainingrun"} <= engineer
    assert "models_registry.change_modelversion" not in engineer  # status and exclusions via services only
    assert not {p for p in engineer if p.startswith("deletion.")}
    assert "models_registry.view_datasubject" not in engineer
    assert {"deletion.view_deletionrequest", "ledger.view_ledgerevent", "models_registry.view_datarecord"} <= auditor
    assert all(p.split(".")[1].startswith(("view_", "download_")) for p in auditor)
    assert not any("webhookendpoint" in p for p in dpo | engineer | auditor)
    # reports: DPOs and auditors read and download them
    assert "audits.view_report" in auditor and "audits.view_report" in dpo
    assert "audits.view_report" not in engineer
