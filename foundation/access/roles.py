"""Staff roles on the admin site: the groups ``dpo``, ``ml_engineer`` and ``auditor`` and the
Django model permissions each holds. The group names are the roles ``role_of`` reads, so a staff
user's admin rights and their API rights (session authentication) agree.

- dpo: views and changes deletion requests (acting on a request needs the change permission),
  views the registry, jobs and reports.
- ml_engineer: views and changes registered models (their unlearning policies), views versions,
  the rest of the registry that describes models and training, and jobs. No requests, no
  subjects. Versions are not changed by hand: their status and exclusions decide what scoping
  finds, so they change only through the services (with the ledger).
- auditor: views everything, changes nothing, and downloads reports.

Starting jobs goes by role, not by these permissions (workers.services.JOB_STARTERS, for the API and
the admin alike): ML engineers train models; ML engineers and auditors ask for shadow models.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db import transaction

from foundation.access.models import Role

EVERY_MODEL = "*"
# Models no role sees in the admin: webhook endpoints hold the secret their deliveries are signed with.
SECRET_MODELS = {("deletion", "webhookendpoint")}

# role -> [(app label, model name or EVERY_MODEL, actions)]. Models that do not exist (yet) are skipped.
ROLE_PERMISSIONS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    Role.DPO: [
        ("deletion", "deletionrequest", ("view", "change")),
        ("deletion", "modeloutcome", ("view",)),
        ("ledger", "ledgerevent", ("view",)),
        ("models_registry", EVERY_MODEL, ("view",)),
        ("workers", EVERY_MODEL, ("view",)),
        ("audits", EVERY_MODEL, ("view", "download")),
    ],
    Role.ML_ENGINEER: [
        ("models_registry", "registeredmodel", ("view", "change")),
        ("models_registry", "modelversion", ("view",)),
        ("models_registry", "dataset", ("view",)),
        ("models_registry", "trainingrun", ("view",)),
        ("models_registry", "modellineageedge", ("view",)),
        ("models_registry", "storedartifact", ("view",)),
        ("models_registry", "excludedrecord", ("view",)),
        ("workers", EVERY_MODEL, ("view",)),
    ],
    Role.AUDITOR: [
        ("deletion", EVERY_MODEL, ("view",)),
        ("ledger", EVERY_MODEL, ("view",)),
        ("access", EVERY_MODEL, ("view",)),
        ("models_registry", EVERY_MODEL, ("view",)),
        ("workers", EVERY_MODEL, ("view",)),
        ("audits", EVERY_MODEL, ("view", "download")),
    ],
}


def role_permissions(role: str) -> list[Permission]:
    """The permissions a role's group holds. An action matches the codename ``<action>_<model>``
    and, for custom permissions (``download_report``-style), any codename starting with
    ``<action>_`` on the model."""
    wanted = []
    for app_label, model_name, actions in ROLE_PERMISSIONS[role]:
        try:
            models = apps.get_app_config(app_label).get_models()
        except LookupError:  # an app that is not installed
            continue
        for model in models:
            name = model._meta.model_name
            if (model_name not in (EVERY_MODEL, name)) or (app_label, name) in SECRET_MODELS:
                continue
            for permission in Permission.objects.filter(content_type__app_label=app_label,
                                                        content_type__model=name):
                if any(permission.codename == f"{action}_{name}"
                       or (action not in ("view", "add", "change", "delete") and permission.codename.startswith(f"{action}_"))
                       for action in actions):
                    wanted.append(permission)
    return sorted(set(wanted), key=lambda p: (p.content_type.app_label, p.codename))


@transaction.atomic
def roles_setup() -> dict[str, list[str]]:
    """Create (or reset) the three groups with exactly their role's permissions. Idempotent.
    Returns each group's permissions as ``app_label.codename``."""
    for app_config in apps.get_app_configs():  # make sure every model's permissions exist
        create_permissions(app_config, verbosity=0)
    granted = {}
    for role in (Role.DPO, Role.ML_ENGINEER, Role.AUDITOR):
        group, _ = Group.objects.get_or_create(name=role.value)
        permissions = role_permissions(role)
        group.permissions.set(permissions)
        granted[role.value] = [f"{p.content_type.app_label}.{p.codename}" for p in permissions]
    return granted
