"""Live views in headless Chromium: the open page follows the database without a reload.

Same set-up as test_admin_browser.py (Debian's chromium through Playwright, never a
downloaded browser). The pages ask every second here instead of every 5 or 10.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_jobs.admin.live import LIVE_SECONDS
from django_jobs.models import Job, JobState

from .admin_support import make_job
from .test_admin_browser import log_in, screenshot, staff
from .test_admin_browser import page as browser_page  # noqa: F401  (a fixture, used below)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

POLL_MS = 1000


@pytest.fixture
def page(browser_page: Any) -> Any:  # noqa: F811  (the browser page of test_admin_browser)
    return browser_page


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("django_jobs.admin.jobs.LIVE_SECONDS", 1)
    monkeypatch.setattr("django_jobs.admin.views.OVERVIEW_LIVE_SECONDS", 1)


def updates(page: Any) -> int:
    return int(page.get_attribute(".djj-live", "data-updates") or 0)


def wait_for_updates(page: Any, more_than: int) -> None:
    page.wait_for_function(
        f"Number(document.querySelector('.djj-live').dataset.updates || 0) > {more_than}"
    )


def test_job_page_follows_a_running_job(
    page: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(
        "limited",
        state=JobState.RUNNING,
        locked_by="web-1:4242:a1b2c3",
        last_started_at=timezone.now(),
        progress=0.2,
        progress_message="2 of 10 batches",
        attempts=1,
    )
    log_in(page, live_server, staff("viewer", "view_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/job/{job.pk}/change/")
    url = page.url
    page.wait_for_selector(".field-progress_detail progress[value='20']")
    page.evaluate("window.djjNotReloaded = true")

    Job.objects.filter(pk=job.pk).update(progress=0.8, progress_message="8 of 10 batches")
    page.wait_for_selector(".field-progress_detail progress[value='80']")
    assert "8 of 10 batches" in page.inner_text(".field-progress_detail")
    assert page.locator(".djj-live-changed").is_hidden()
    if os.environ.get("DJANGO_JOBS_SCREENSHOTS") == "1":  # at the interval users get
        monkeypatch.setattr("django_jobs.admin.jobs.LIVE_SECONDS", LIVE_SECONDS)
        page.reload()
        wait_for_updates(page, 0)
        screenshot(page, "live-job-page")
        monkeypatch.setattr("django_jobs.admin.jobs.LIVE_SECONDS", 1)
        page.reload()
        page.evaluate("window.djjNotReloaded = true")

    Job.objects.filter(pk=job.pk).update(
        state=JobState.SUCCEEDED, progress=1.0, locked_by=None, last_finished_at=timezone.now()
    )
    page.wait_for_selector(".field-state_display .djj-succeeded")
    assert page.locator(".djj-live-changed").is_visible()  # its buttons need a reload
    assert page.inner_text(".field-locked_by .readonly") == "-"
    assert page.evaluate("window.djjNotReloaded") is True and page.url == url

    Job.objects.filter(pk=job.pk).delete()
    page.wait_for_selector("#content-main.djj-gone")
    assert page.inner_text(".djj-live-status") == "This job no longer exists."


def test_job_list_follows_the_database_and_the_switch_stops_it(page: Any, live_server: Any) -> None:
    waiting = make_job("record", next_run_at=timezone.now() + timedelta(hours=1))
    other = make_job("sleep", next_run_at=timezone.now() + timedelta(hours=2))
    log_in(page, live_server, staff("viewer", "view_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/job/")
    page.evaluate("window.djjNotReloaded = true")
    row = page.locator(
        "#result_list tbody tr", has=page.locator(f"a[href$='/job/{waiting.pk}/change/']")
    )
    assert row.locator(".djj-scheduled").count() == 1

    Job.objects.filter(pk=waiting.pk).update(
        state=JobState.RUNNING, locked_by="web-2:977:d4e5f6", progress=0.5
    )
    row.locator(".field-state_column .djj-running").wait_for()
    assert "web-2:977:d4e5f6" in row.locator(".field-state_column").inner_text()
    assert row.locator(".field-state_column progress[value='50']").count() == 1
    other_row = page.locator(
        "#result_list tbody tr", has=page.locator(f"a[href$='/job/{other.pk}/change/']")
    )
    assert other_row.locator(".djj-scheduled").count() == 1  # each row keeps its own cells
    assert page.evaluate("window.djjNotReloaded") is True

    # Off: no more requests, and the page stays as it was.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.uncheck(".djj-live-switch")
    page.wait_for_timeout(300)  # an answer already on its way is dropped
    before = updates(page)
    Job.objects.filter(pk=waiting.pk).update(progress=0.9)
    requests.clear()
    page.wait_for_timeout(3 * POLL_MS)
    assert [url for url in requests if "/live/" in url] == []
    assert updates(page) == before
    assert row.locator(".field-state_column progress[value='50']").count() == 1

    # Remembered across pages; on again, it catches up at once.
    page.reload()
    assert not page.is_checked(".djj-live-switch")
    page.check(".djj-live-switch")
    row.locator(".field-state_column progress[value='90']").wait_for()
    page.reload()
    assert page.is_checked(".djj-live-switch")


def test_a_hidden_tab_asks_nothing(page: Any, live_server: Any) -> None:
    job = make_job("record", state=JobState.RUNNING, progress=0.1)
    log_in(page, live_server, staff("viewer", "view_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/job/")
    wait_for_updates(page, 0)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    # What the browser does when the tab goes to the background.
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.wait_for_timeout(300)
    requests.clear()
    before = updates(page)
    Job.objects.filter(pk=job.pk).update(progress=0.6)
    page.wait_for_timeout(3 * POLL_MS)
    assert [url for url in requests if "/live/" in url] == []
    assert updates(page) == before
    assert page.inner_text(".djj-live-status") == "Paused while the tab is hidden."

    page.evaluate(
        "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.locator(".field-state_column progress[value='60']").wait_for()


def test_overview_counts_follow_the_database(page: Any, live_server: Any) -> None:
    make_job("record", state=JobState.FAILED, next_run_at=None)
    log_in(page, live_server, staff("viewer", "view_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/job/overview/")
    page.evaluate("window.djjNotReloaded = true")
    assert page.inner_text("#djj-counts .djj-total-failed") == "1"

    Job.objects.bulk_create(
        [Job(name="record", state=JobState.FAILED, next_run_at=None) for _ in range(1233)]
    )
    page.wait_for_function(
        "document.querySelector('#djj-counts .djj-total-failed').innerText.trim() === '1,234'"
    )
    assert page.evaluate("window.djjNotReloaded") is True


def test_job_page_offers_a_reload_only_when_its_buttons_change(page: Any, live_server: Any) -> None:
    job = make_job("record", next_run_at=timezone.now() + timedelta(seconds=2))
    log_in(page, live_server, staff("viewer", "view_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/job/{job.pk}/change/")
    assert page.locator(".field-state_display .djj-scheduled").count() == 1
    # Its time comes: the badge says "due", the buttons stay those of a scheduled job.
    page.wait_for_selector(".field-state_display .djj-due", timeout=10_000)
    assert page.locator(".djj-live-changed").is_hidden()
    Job.objects.filter(pk=job.pk).update(enabled=False)
    page.wait_for_selector(".djj-live-changed:not([hidden])")
    page.click(".djj-live-changed a")
    page.wait_for_selector(".field-state_display .djj-disabled")
    assert page.locator(".djj-live-changed").is_hidden()
