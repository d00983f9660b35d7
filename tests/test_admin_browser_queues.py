"""The queues page in headless Chromium: reached from the app page, its links filter the list.

Same set-up as test_admin_browser.py (Debian's chromium through Playwright, never a
downloaded browser).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_jobs.models import Job, JobState, Pause, PauseKind, RunOutcome

from .admin_support import make_job, make_run
from .test_admin_browser import log_in, screenshot, staff
from .test_admin_browser import page as browser_page  # noqa: F401  (a fixture, used below)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def page(browser_page: Any) -> Any:  # noqa: F811  (the browser page of test_admin_browser)
    return browser_page


def queue_data() -> None:
    now = timezone.now()
    Job.objects.bulk_create(
        [
            Job(name="send-receipt", queue="emails", next_run_at=now - timedelta(minutes=i % 9))
            for i in range(1500)
        ]
        + [
            Job(name="resize-image", queue="images", next_run_at=now + timedelta(hours=1))
            for _ in range(40)
        ]
    )
    done = make_job("resize-image", queue="images", state=JobState.SUCCEEDED, next_run_at=None)
    make_job("resize-image", queue="images", state=JobState.RUNNING, locked_by="web-1:42:ab")
    make_job("export-report", queue="reports", state=JobState.FAILED, next_run_at=None)
    for minutes in range(1, 58, 2):
        make_run(
            done,
            RunOutcome.FAILED if minutes % 10 == 1 else RunOutcome.SUCCEEDED,
            started_at=now - timedelta(minutes=minutes),
        )
    Pause.objects.create(kind=PauseKind.QUEUE, value="reports", reason="maintenance")


def test_queues_page(page: Any, live_server: Any) -> None:
    queue_data()
    log_in(page, live_server, staff("viewer", "view_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/")
    page.click("#content-main a:text-is('Queues')")
    page.wait_for_selector("h1:has-text('Queues')")
    rows = page.locator("#djj-queues tbody tr")
    assert rows.locator("th").all_inner_texts() == ["default", "emails", "images", "reports paused"]
    emails = rows.nth(1)
    assert emails.locator(".djj-count-due").inner_text() == "1,500"
    assert emails.locator(".djj-oldest").inner_text().startswith("8 min")
    images = rows.nth(2)
    assert images.locator(".djj-runs").inner_text() == "29"
    assert images.locator(".djj-failed-runs").inner_text() == "6"
    screenshot(page, "queues")

    # The filter now offers the queues that hold rows, and the counts' links use it.
    images.locator(".djj-count-scheduled a").click()
    page.wait_for_selector("#result_list")
    assert "40 jobs" in page.inner_text(".paginator")
    queue_filter = page.locator("#changelist-filter details", has_text="By queue")
    for queue in ("emails", "images", "reports"):
        assert queue_filter.locator(f"a:text-is('{queue}')").count() == 1
