"""The DPO workspace in a real browser (Playwright driving Debian's headless Chromium against the
live test server): find an overdue request, approve it, watch its job's progress bar follow the
job row, download the signed PDF; an auditor sees no approve button; an ML engineer trains a model
and its shadow models and watches the jobs run. Screenshots of the queue, the request page, the
dashboard, a model's version tree and the job pages go to tests/_screenshots/."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.admin.conftest import PASSWORD, finish_job, make_report, make_request
from workers.models import Job

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "_screenshots"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls the tests make between
    # browser steps are plain synchronous calls, so Django's async-context guard is lifted here.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield chromium
        chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def no_broker(monkeypatch):
    """Approving creates jobs; keep them in the database instead of sending them to a broker."""
    monkeypatch.setattr("workers.jobs.job_enqueue", lambda **kwargs: None)


def logged_in_page(browser, live_server, username: str):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return page


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_dpo_approves_an_overdue_request_and_watches_its_job(browser, live_server, cast, trained, no_broker):
    from playwright.sync_api import expect

    overdue = make_request(email="p0@example.org", due_in_days=-3.5)
    make_request(email="p1@example.org", due_in_days=5.5)
    make_request(email="p2@example.org", jurisdiction="CCPA", scoped=False)
    page = logged_in_page(browser, live_server, "alice")

    # The admin index links to the dashboard; the queue shows the overdue request badged red.
    expect(page.locator("#dp-dashboard-link")).to_be_visible()
    shoot(page, "index")
    page.goto(f"{live_server.url}/admin/deletion/deletionrequest/")
    short_id = str(overdue.public_id)[:8]
    overdue_row = page.locator("#result_list tbody tr", has_text=short_id)
    expect(overdue_row.locator(".dp-badge.dp-bad")).to_have_text("overdue 4 d")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    shoot(page, "queue")
    page.get_by_role("link", name="Overdue", exact=True).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)

    # The request page: approve the whole plan.
    page.get_by_role("link", name=short_id).click()
    expect(page.locator("#dp-status")).to_have_text("SCOPED")
    expect(page.locator("#dp-plan")).to_contain_text("sisa")
    page.click("#dp-approve-button")
    expect(page.locator(".messagelist")).to_contain_text("Approved.")
    expect(page.locator("#dp-status")).to_have_text("EXECUTING")
    bar = page.locator("#dp-jobs [role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", "0")

    # The worker reports progress; the page polls and the bar follows without a reload.
    job = Job.objects.get(kind="unlearn", source_version=trained["version"])
    Job.objects.filter(pk=job.pk).update(status="running", progress_percent=40.0,
                                         progress_stage="retraining shard 1 of 2")
    expect(bar).to_have_attribute("aria-valuenow", "40", timeout=8_000)
    expect(page.locator(f'[data-job-text="{job.id}"]')).to_have_text("40% · retraining shard 1 of 2")
    assert page.locator(".dp-progress-fill").evaluate("e => e.style.width") == "40%"
    shoot(page, "request")

    page.goto(f"{live_server.url}/admin/deletion/deletionrequest/dashboard/")
    expect(page.locator("#dp-kpi-overdue .dp-kpi-value")).to_have_text("1")
    expect(page.locator("#dp-kpi-open .dp-kpi-value")).to_have_text("3")
    expect(page.locator("svg.dp-chart rect")).to_have_count(24)
    shoot(page, "dashboard")

    page.goto(f"{live_server.url}/admin/models_registry/registeredmodel/{trained['model'].pk}/change/")
    expect(page.locator(".dp-version-tree")).to_contain_text("v1")
    shoot(page, "registry_model")
    page.context.close()


def test_dpo_downloads_the_signed_pdf(browser, live_server, cast, trained):
    request = make_request()
    pdf = b"%PDF-1.4\n% stand-in for a signed report\n%%EOF\n"
    report = make_report(request, pdf)
    page = logged_in_page(browser, live_server, "alice")
    page.goto(f"{live_server.url}/admin/deletion/deletionrequest/{request.pk}/change/")
    with page.expect_download() as download:
        page.click(f"#dp-report-pdf-{report.pk}")
    assert re.match(r"erasure-report-.*\.pdf", download.value.suggested_filename)
    assert Path(download.value.path()).read_bytes() == pdf
    page.context.close()


def test_auditor_finds_no_approve_button(browser, live_server, cast, trained, no_broker):
    from playwright.sync_api import expect

    from deletion import decisions
    from tests import factories

    request = make_request(due_in_days=-1)
    # A second request, further on: two models, one on legal hold, the other audited FAIL.
    fraud = factories.registered_model("fraud", recipe="plain")
    factories.trained_version(fraud, trained["ds"], [(f"r{i}", 0, 0) for i in range(9)])
    audited = make_request(email="p1@example.org")
    audited = decisions.deletion_request_approve(request=audited, actor=cast["alice"],
                                                holds={trained["version"].id: "litigation hold until 2027"})
    finish_job(audited.outcomes.get(status="executing"), {"model": fraud}, verdict="FAIL")
    make_report(audited)

    page = logged_in_page(browser, live_server, "bob")
    page.goto(f"{live_server.url}/admin/deletion/deletionrequest/")
    page.get_by_role("link", name=str(request.public_id)[:8]).click()
    expect(page.locator("#dp-status")).to_have_text("SCOPED")
    expect(page.locator("#dp-timeline")).to_contain_text("request.scoped")
    assert page.locator("#dp-approve-button").count() == 0
    assert page.locator("#dp-actions").count() == 0
    assert page.locator("#content-main form").count() == 0

    page.goto(f"{live_server.url}/admin/deletion/deletionrequest/{audited.pk}/change/")
    expect(page.locator("#dp-outcomes .dp-badge.dp-bad")).to_have_text("FAIL")
    expect(page.locator("#dp-outcomes")).to_contain_text("litigation hold until 2027")
    expect(page.locator("#dp-outcomes")).to_contain_text("0.980 → 0.610")
    assert page.locator("#content-main form").count() == 0  # no escalate, withdraw or confirm either
    expect(page.get_by_role("link", name="Download signed PDF")).to_be_visible()
    shoot(page, "request_audited")
    page.context.close()


def run_in_background(job_id: int):
    """Run a job in a thread, as a worker would, while the page watches it."""
    import threading

    from django.db import connection

    from workers.jobs import job_execute

    def run() -> None:
        try:
            job_execute(job_id=job_id)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_ml_engineer_trains_a_model_and_its_shadows_and_watches_them(browser, live_server, cast, no_broker,
                                                                     monkeypatch):
    from playwright.sync_api import expect

    from models_registry.services import registered_model_create
    from workers.jobs import ProgressReporter
    from workers.reference_data import reference_dataset_register

    dataset = reference_dataset_register(name="breast_cancer")
    registered_model_create(name="bc-admin", task="classification", training_recipe="plain",
                            architecture={"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}})
    report = ProgressReporter.__call__

    def slow_report(self, stage: str, fraction: float) -> None:  # the tiny runs last long enough to be seen
        report(self, stage, fraction)
        time.sleep(0.5)

    monkeypatch.setattr(ProgressReporter, "__call__", slow_report)
    page = logged_in_page(browser, live_server, "charlie")
    page.goto(f"{live_server.url}/admin/workers/job/")
    page.get_by_role("link", name="Train a model", exact=True).click()
    page.select_option("#id_model", "bc-admin")
    page.select_option("#id_dataset", str(dataset.pk))
    page.fill("#id_recipe_config", '{"epochs": 2, "seed": 1}')
    shoot(page, "train_form")
    page.click("#dp-start")
    status, bar = page.locator("#dp-job-status"), page.locator("#dp-job-progress")
    expect(status).to_have_text("pending")
    worker = run_in_background(Job.objects.get(kind="train").pk)
    expect(status).to_have_text("running", timeout=10_000)  # the page polls the job API
    shoot(page, "training_job")
    expect(page.locator("#dp-job-result")).to_have_text("bc-admin v1", timeout=20_000)  # reloaded at the end
    worker.join()
    expect(status).to_have_text("succeeded")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    assert page.locator("#dp-job-cancel").count() == 0

    page.click("#dp-job-train-shadows")
    expect(page.locator("#id_version option:checked")).to_have_text("bc-admin v1")
    page.fill("#id_count", "2")
    page.click("#dp-start")
    expect(page.locator("#content-main")).to_contain_text("bc-admin v1")
    worker = run_in_background(Job.objects.get(kind="shadow").pk)
    expect(status).to_have_text("running", timeout=10_000)
    expect(status).to_have_text("succeeded", timeout=20_000)
    worker.join()
    expect(bar).to_have_attribute("aria-valuenow", "100")
    shoot(page, "shadow_job")
    page.context.close()
