"""The admin's job pages: who may start a training run or a shadow set (the API's roles, from the
user's groups), the forms calling the same services as the API (their refusals shown on the form),
a job's page and its Cancel button."""

from __future__ import annotations

import pytest

from models_registry.services import registered_model_create
from tests import factories
from workers.models import Job

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}}
SKLEARN = {"name": "sklearn", "config": {"in_features": 30, "num_classes": 2}}


@pytest.fixture
def registry(db):
    ds = factories.dataset("customers")
    factories.import_records(ds, [{"record_key": f"r{i}", "content": f"c{i}", "email": f"p{i}@example.org"}
                                  for i in range(3)])
    model = registered_model_create(name="churn", task="classification", training_recipe="plain", architecture=MLP)
    _, version = factories.trained_version(model, ds, [(f"r{i}", 0, 0) for i in range(3)])
    return {"ds": ds, "model": model, "version": version}


def test_who_may_start_what(client_for, registry):
    pages = {name: client_for(name) for name in ("alice", "bob", "charlie", "mallory")}
    listing = {name: client.get("/admin/workers/job/") for name, client in pages.items()}
    assert listing["mallory"].status_code == 403
    links = {name: ('href="/admin/workers/job/train/"' in page.text, 'href="/admin/workers/job/shadow/"' in page.text)
             for name, page in listing.items() if page.status_code == 200}
    assert links == {"alice": (False, False), "bob": (False, True), "charlie": (True, True)}
    expected = {"alice": (403, 403), "bob": (403, 200), "charlie": (200, 200), "mallory": (403, 403)}
    for name, client in pages.items():
        codes = (client.get("/admin/workers/job/train/").status_code, client.get("/admin/workers/job/shadow/").status_code)
        assert codes == expected[name], name


def test_train_from_the_admin_then_cancel(client_for, registry):
    charlie = client_for("charlie")
    form = charlie.get("/admin/workers/job/train/?model=churn")
    assert 'value="churn" selected' in form.text and "sklearn_sisa" in form.text  # the recipe table
    response = charlie.post("/admin/workers/job/train/", {
        "model": "churn", "dataset": registry["ds"].pk, "recipe": "", "recipe_config": '{"epochs": 1}',
        "split": "train"})
    job = Job.objects.get(kind="train")
    assert response.status_code == 302 and response["Location"] == f"/admin/workers/job/{job.pk}/change/"
    assert job.config["recipe_config"] == {"epochs": 1, "architecture": MLP} and job.method == "plain"
    page = charlie.get(response["Location"])
    assert f"job {job.pk} queued" in page.text and 'id="dp-job-cancel"' in page.text
    assert 'aria-valuenow="0"' in page.text and f'data-api-url="/api/v1/jobs/{job.pk}/"' in page.text
    assert 'id="dp-job-cancel"' not in client_for("alice").get(response["Location"]).text  # a DPO only reads

    done = charlie.post(f"/admin/workers/job/{job.pk}/cancel/", follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled" and "Cancelled." in done.text and "<script>" not in done.text  # no polling
    again = charlie.post(f"/admin/workers/job/{job.pk}/cancel/", follow=True)
    assert "has already ended (cancelled)" in again.text


def test_the_forms_show_the_services_refusals(client_for, registry):
    registered_model_create(name="logreg", task="classification", training_recipe="sklearn", architecture=SKLEARN)
    charlie = client_for("charlie")
    page = charlie.post("/admin/workers/job/train/", {"model": "logreg", "dataset": registry["ds"].pk,
                                                      "recipe": "s3t", "recipe_config": "{}", "split": "train"})
    assert page.status_code == 200 and "the s3t recipe" in page.text and "(family sklearn)" in page.text
    page = charlie.post("/admin/workers/job/train/", {"model": "churn", "dataset": registry["ds"].pk,
                                                      "recipe_config": "[]", "split": "train"})
    assert "recipe_config must be an object" in page.text
    page = client_for("bob").post("/admin/workers/job/shadow/", {"version": registry["version"].pk, "count": 1})
    assert page.status_code == 200 and "an approximate verdict needs 32" in page.text
    assert not Job.objects.exists()

    shadow = client_for("bob").post("/admin/workers/job/shadow/", {"version": registry["version"].pk, "count": 2})
    job = Job.objects.get(kind="shadow")
    assert shadow["Location"] == f"/admin/workers/job/{job.pk}/change/" and job.config == {"count": 2}
    assert 'id="dp-job-cancel"' in client_for("bob").get(shadow["Location"]).text


def test_a_request_job_is_cancelled_by_a_dpo_only(client_for, registry):
    from tests.admin.conftest import make_request

    job = Job.objects.create(kind="unlearn", registered_model=registry["model"], deletion_request=make_request())
    charlie = client_for("charlie")  # an ML engineer: the request's jobs are the DPO's to stop
    assert 'id="dp-job-cancel"' not in charlie.get(f"/admin/workers/job/{job.pk}/change/").text
    assert charlie.post(f"/admin/workers/job/{job.pk}/cancel/").status_code == 403
    job.refresh_from_db()
    assert job.status == "pending" and not job.cancel_requested
    alice = client_for("alice")
    assert 'id="dp-job-cancel"' in alice.get(f"/admin/workers/job/{job.pk}/change/").text
    answer = alice.post(f"/admin/workers/job/{job.pk}/cancel/", follow=True)
    assert "Cancelled." in answer.text
    job.refresh_from_db()
    assert job.status == "cancelled"
