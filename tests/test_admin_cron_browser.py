"""The recurring jobs page in headless Chromium, with real runjobs workers: a disable and a
pause made on the page last across a worker restart (whose sync re-creates declared rows), and
the job runs again once enabled and resumed.

Same set-up as test_admin_browser.py (Debian's chromium through Playwright, never a
downloaded browser).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_jobs.models import Job, JobRun, Pause, PauseKind, RunOutcome, Worker
from django_jobs.recurring import recurring_key

from .admin_support import make_job, make_run
from .conftest import WorkerProcess, wait_for
from .test_admin_browser import log_in, screenshot, staff
from .test_admin_browser import page as browser_page  # noqa: F401  (a fixture, used below)
from .testapp.models import Execution

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUIET_SECONDS = 2.5  # more than two polls of an idle worker (POLL_INTERVAL is 1 s)


@pytest.fixture
def page(browser_page: Any) -> Any:  # noqa: F811  (the browser page of test_admin_browser)
    return browser_page


def monthly() -> Job:
    """The row of tests/testapp/jobs.py's "monthly" (0 3 1 * *, Europe/Paris)."""
    return Job.objects.get(unique_key=recurring_key("monthly"))


def start(start_worker: Callable[..., WorkerProcess], worker_id: str) -> WorkerProcess:
    """Start a worker and wait until its start-up sync has run."""
    # The sync puts back the priority the code declares: once it has, the sync is done.
    Job.objects.filter(unique_key=recurring_key("monthly")).update(priority=7)
    worker = start_worker("--worker-id", worker_id)
    wait_for(lambda: Job.objects.filter(name="monthly", priority=0).exists())
    return worker


def stop(worker: WorkerProcess) -> None:
    worker.signal(15)
    assert worker.wait() == 0, worker.output()


def other_rows() -> None:
    """A few more recurring rows, none due during the test, for the screenshot."""
    now = timezone.now()
    report = make_job(
        "record",
        schedule="30 7 * * 1-5",
        timezone="America/New_York",
        queue="reports",
        next_run_at=now + timedelta(hours=9),
        last_started_at=now - timedelta(hours=15),
    )
    make_run(report, RunOutcome.FAILED, started_at=now - timedelta(hours=15), error="timeout")
    Pause.objects.create(kind=PauseKind.QUEUE, value="reports", reason="maintenance")
    digest = make_job(
        "sleep",
        schedule="every 15 minutes",
        next_run_at=now + timedelta(minutes=11),
        last_started_at=now - timedelta(minutes=4),
    )
    make_run(digest, started_at=now - timedelta(minutes=4))
    make_job(
        "gone",
        schedule="0 4 * * *",
        unique_key=recurring_key("gone"),
        next_run_at=now + timedelta(hours=5),
    )


def test_disable_and_pause_last_across_a_worker_restart(
    page: Any, live_server: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    other_rows()
    first = start(start_worker, "cron-1")
    row_id = monthly().pk
    log_in(page, live_server, staff("ops", "view_job", "run_job", "change_job", "pause_jobs"))
    page.goto(f"{live_server.url}/admin/django_jobs/")
    page.click("#content-main a:text-is('Recurring jobs')")
    page.wait_for_selector("h1:has-text('Recurring jobs')")
    assert "disabled, never cancelled" in page.inner_text(".djj-rule")
    row = page.locator(f"tr.djj-cron-row[data-job-id='{row_id}']")
    assert "declared in code" in row.inner_text()
    # The row the code no longer declares was disabled by the worker's sync, and says so.
    assert page.locator("tr.djj-origin-removed").inner_text().count("no longer in code") == 1

    row.locator("button.djj-cron-disable").click()
    page.wait_for_selector("text=Disabled 1 job.")
    row.locator("button.djj-cron-pause").click()
    page.wait_for_selector("text=Paused job 'monthly'")
    assert "not while disabled" in row.locator(".djj-cron-next").inner_text()
    assert "paused" in row.locator(".djj-cron-state").inner_text()

    # The worker stops; meanwhile the job's time comes. The next start syncs the rows again.
    stop(first)
    Job.objects.filter(pk=row_id).update(next_run_at=timezone.now() - timedelta(minutes=1))
    second = start(start_worker, "cron-2")
    wait_for(lambda: Worker.objects.filter(worker_id="cron-2").exists())
    time.sleep(QUIET_SECONDS)
    page.reload()
    state = row.locator(".djj-cron-state").inner_text()
    assert "disabled" in state and "paused" in state and "enabled" not in state
    assert row.locator("button.djj-cron-enable").count() == 1
    assert row.locator("button.djj-cron-resume").count() == 1
    assert not JobRun.objects.filter(job_id=row_id).exists()
    assert not Execution.objects.filter(job_id=row_id).exists()
    assert Job.objects.filter(name="monthly").count() == 1  # the same row, not a new one

    # Enabled but still paused: the worker leaves it alone.
    row.locator("button.djj-cron-enable").click()
    page.wait_for_selector("text=Enabled 1 job.")
    assert "held back while paused" in row.locator(".djj-cron-next").inner_text()
    time.sleep(QUIET_SECONDS)
    assert not JobRun.objects.filter(job_id=row_id).exists()

    # Resumed: the running worker takes it, and the next run is the next month's.
    row.locator("button.djj-cron-resume").click()
    page.wait_for_selector("text=Resumed job 'monthly'")
    wait_for(lambda: JobRun.objects.filter(job_id=row_id, outcome=RunOutcome.SUCCEEDED).exists())
    assert Execution.objects.filter(job_id=row_id).count() == 1
    page.reload()
    assert "succeeded" in row.locator(".djj-cron-last").inner_text()
    assert "in " in row.locator(".djj-cron-when").inner_text()
    row.locator("details.djj-cron-upcoming summary").click()
    assert row.locator("details.djj-cron-upcoming tbody tr").count() == 5
    stop(second)
    page.click("#toggle-nav-sidebar")  # room for every column in the screenshot
    screenshot(page, "cron")
