"""Registry pages for ML engineers: the version tree, a version's lineage, training data, policy
and the open requests that touch it."""

from __future__ import annotations

import re

import pytest

from models_registry.admin import RegisteredModelForm, version_tree
from models_registry.services import model_version_create
from tests.admin.conftest import make_request
from workers.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def lineage(trained):
    """churn v1 (trained) -> v2 (unlearned by a job) -> v3 (unlearned again); a request touches v1."""
    v1 = trained["version"]
    v2 = model_version_create(model=trained["model"], artifact_sha256="2" * 64, training_run=None, parent=v1)
    v3 = model_version_create(model=trained["model"], artifact_sha256="3" * 64, training_run=None, parent=v2)
    job = Job.objects.create(kind="unlearn", status="succeeded", registered_model=trained["model"],
                             source_version=v1, result_version=v2, method="sisa", guarantee_class="exact")
    request = make_request()
    return {**trained, "v1": v1, "v2": v2, "v3": v3, "job": job, "request": request}


def test_version_tree_order_depth_and_jobs(lineage):
    rows = version_tree(lineage["model"])
    assert [(r["version"].version, r["depth"]) for r in rows] == [(1, 0), (2, 1), (3, 2)]
    assert rows[1]["job"] == lineage["job"] and rows[0]["job"] is None
    assert [r["open_requests"] for r in rows] == [1, 0, 0]


def test_model_page_shows_the_tree(client_for, lineage):
    html = client_for("charlie").get(
        f"/admin/models_registry/registeredmodel/{lineage['model'].pk}/change/").content.decode()
    tree = html.split('class="dp-version-tree"')[1].split("</table>")[0]
    assert re.findall(r'data-version="(\d)" data-depth="(\d)"', tree) == [("1", "0"), ("2", "1"), ("3", "2")]
    assert f"job #{lineage['job'].id}: unlearn sisa (succeeded)" in tree
    assert f"run {lineage['run'].id} (sisa)" in tree


def test_version_page_lineage_training_policy_and_requests(client_for, lineage):
    url = f"/admin/models_registry/modelversion/{lineage['v1'].pk}/change/"
    charlie = client_for("charlie").get(url).content.decode()
    assert f"run {lineage['run'].id} · recipe sisa" in charlie and "customers@1 (tabular, consent)" in charlie
    assert "9 training records" in charlie and "children: v2" in charlie
    assert "(none: full retrain)" in charlie  # the model has no unlearning policy
    requests = charlie.split('id="dp-open-requests"')[1].split("</table>")[0]
    assert str(lineage["request"].public_id) in requests and "in plan" in requests
    assert "/admin/deletion/deletionrequest/" not in requests  # ML engineers cannot open requests
    alice = client_for("alice").get(url).content.decode().split('id="dp-open-requests"')[1]
    assert f"/admin/deletion/deletionrequest/{lineage['request'].pk}/change/" in alice
    v2 = client_for("charlie").get(f"/admin/models_registry/modelversion/{lineage['v2'].pk}/change/").content.decode()
    assert f"made by job #{lineage['job'].id} (unlearn sisa, exact, succeeded)" in v2


def test_open_requests_after_approval_come_from_outcomes(client_for, lineage):
    from deletion import decisions

    decisions.deletion_request_approve(request=lineage["request"], actor=lineage["model"])
    html = client_for("charlie").get(
        f"/admin/models_registry/modelversion/{lineage['v1'].pk}/change/").content.decode()
    assert ">executing<" in html.split('id="dp-open-requests"')[1]


def test_policy_is_validated_by_the_service(lineage):
    model = lineage["model"]
    data = {"name": model.name, "task": model.task, "training_recipe": model.training_recipe,
            "architecture": "{}", "unlearning_policy": '{"approximate_method": "finetune", "colour": "red"}'}
    form = RegisteredModelForm(data=data, instance=model)
    assert not form.is_valid()
    assert "unknown unlearning_policy field 'colour'" in form.errors["unlearning_policy"][0]
    form = RegisteredModelForm(data={**data, "unlearning_policy": '{"approximate_method": "finetune"}'},
                               instance=model)
    assert form.is_valid(), form.errors


def test_registry_rights_by_role(client_for, lineage):
    url = f"/admin/models_registry/registeredmodel/{lineage['model'].pk}/change/"
    engineer = client_for("charlie").get(url).content.decode()
    assert 'name="unlearning_policy"' in engineer  # the policy may change ...
    assert 'name="training_recipe"' not in engineer and 'name="name"' not in engineer  # ... how it was trained not
    version_url = f"/admin/models_registry/modelversion/{lineage['v1'].pk}/change/"
    assert 'name="status"' not in client_for("charlie").get(version_url).content.decode()
    assert client_for("charlie").post(version_url, {"status": "retired"}).status_code == 403
    auditor = client_for("bob")
    assert auditor.get(url).status_code == 200
    assert 'name="unlearning_policy"' not in auditor.get(url).content.decode()  # read-only
    assert auditor.post(url, {"name": "renamed"}).status_code == 403
    assert client_for("mallory").get(url).status_code == 403
    assert client_for("charlie").get("/admin/models_registry/datasubject/").status_code == 403


def test_ml_engineer_saves_a_policy_through_the_admin(client_for, lineage):
    model = lineage["model"]
    url = f"/admin/models_registry/registeredmodel/{model.pk}/change/"
    form = {"architecture": "{}", "unlearning_policy": '{"approximate_method": "finetune", "exact_after": 3}',
            "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"}
    response = client_for("charlie").post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    model.refresh_from_db()
    assert model.unlearning_policy == {"approximate_method": "finetune", "exact_after": 3}
    bad = client_for("charlie").post(url, {**form, "unlearning_policy": '{"exact_after": -1}'})
    assert bad.status_code == 200 and "unlearning_policy.exact_after must be &gt;= 0" in bad.content.decode()
    wrong_kind = client_for("charlie").post(url, {**form, "unlearning_policy": '{"approximate_method": "npo"}'})
    assert wrong_kind.status_code == 200
    assert "&#x27;npo&#x27; unlearns language modeling models, not classification" in wrong_kind.content.decode()
    model.refresh_from_db()
    assert model.unlearning_policy == {"approximate_method": "finetune", "exact_after": 3}
