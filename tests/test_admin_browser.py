"""End-to-end: the admin in headless Chromium, driven by Playwright, with a real runjobs worker.

Needs the `playwright` Python package and a Chromium binary (Debian's `chromium` package at
/usr/bin/chromium, or PLAYWRIGHT_CHROMIUM_EXECUTABLE); Playwright never downloads a browser
here. With DJANGO_JOBS_SCREENSHOTS=1 the tests save the screenshots used by docs/admin.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.utils import timezone

from django_jobs.models import Job, JobState, RunOutcome, Worker

from .admin_support import make_job, make_run, make_user
from .conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM_EXECUTABLE", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "_static" / "screenshots"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def page(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Chromium page; the live server and its database are set up before the browser."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the playwright package is not installed (pip install playwright)",
    )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"Chromium not found at {CHROMIUM}; install it (apt-get install chromium) or set "
            "PLAYWRIGHT_CHROMIUM_EXECUTABLE."
        )
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1600, "height": 900})
        context.set_default_timeout(15_000)
        yield context.new_page()
        context.close()
        browser.close()
        # While Playwright's loop runs, Django keeps this thread's connection in a context
        # variable, not in the thread's storage: close it now, or it outlives the test and
        # PostgreSQL cannot drop the test database.
        connections.close_all()


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot for the docs, only when asked to (so CI leaves the tree clean)."""
    if os.environ.get("DJANGO_JOBS_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Any, live_server: Any, user: User) -> None:
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


def staff(username: str, *codenames: str, superuser: bool = False) -> User:
    user = make_user(username, *codenames, is_superuser=superuser)
    user.set_password(PASSWORD)
    user.save()
    return user


def demo_data() -> Job:
    """A little of everything, so the screenshots show what each screen is for."""
    now = timezone.now()
    make_job("sleep", data={"seconds": 30}, next_run_at=now + timedelta(minutes=12), queue="slow")
    make_job("sleep", data={"seconds": 5}, next_run_at=now + timedelta(hours=3), priority=10)
    make_job(
        "limited",
        data={"seconds": 20},
        state=JobState.RUNNING,
        locked_by="web-1:4242:a1b2c3",
        last_started_at=now - timedelta(seconds=40),
        progress=0.6,
        progress_message="6 of 10 batches",
        attempts=1,
    )
    make_job("record", data={"order": 1041}, next_run_at=now + timedelta(days=1), enabled=False)
    done = make_job(
        "record",
        data={"order": 1040},
        state=JobState.SUCCEEDED,
        next_run_at=None,
        attempts=1,
        last_started_at=now - timedelta(minutes=7),
        last_finished_at=now - timedelta(minutes=7) + timedelta(seconds=1.4),
    )
    failed = make_job(
        "record",
        data={"order": 1039, "email": "ada@example.com"},
        state=JobState.FAILED,
        next_run_at=None,
        attempts=1,
        max_attempts=1,
        failure_count=1,
        last_started_at=now - timedelta(minutes=3),
        last_finished_at=now - timedelta(minutes=3) + timedelta(seconds=0.2),
        last_error="ConnectionError: SMTP server smtp.example.com refused the connection",
        last_traceback=(
            "Traceback (most recent call last):\n"
            '  File "shop/jobs.py", line 14, in send_receipt\n'
            "    mail.send()\n"
            "ConnectionError: SMTP server smtp.example.com refused the connection"
        ),
    )
    make_run(
        failed,
        RunOutcome.FAILED,
        started_at=now - timedelta(minutes=3),
        error=failed.last_error,
        worker_id="web-1:4242:a1b2c3",
    )
    make_run(done, started_at=now - timedelta(minutes=7), worker_id="web-2:977:d4e5f6")
    for minutes in range(2, 58, 3):
        outcome = RunOutcome.FAILED if minutes % 4 == 0 else RunOutcome.SUCCEEDED
        for _ in range(1 + minutes % 5):
            make_run(done, outcome, started_at=now - timedelta(minutes=minutes))
    return failed


def test_retry_a_failed_job_and_see_a_worker_run_it(
    page: Any, live_server: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    failed = demo_data()
    log_in(page, live_server, staff("admin", superuser=True))

    # A real worker, idle on a queue of its own, so the overview lists a live worker.
    idle = start_worker("--queue", "idle", "--worker-id", "web-1:4242:a1b2c3")
    wait_for(lambda: Worker.objects.filter(worker_id="web-1:4242:a1b2c3").exists())

    page.goto(f"{live_server.url}/admin/django_jobs/")
    page.click("text=Overview")
    page.wait_for_selector("h1:has-text('Jobs overview')")
    assert page.locator("#djj-workers td", has_text="web-1:4242:a1b2c3").count() == 1
    assert page.locator("svg.djj-chart rect.djj-bar-failures").count() == 12
    screenshot(page, "overview")
    idle.signal(15)
    assert idle.wait() == 0

    page.goto(f"{live_server.url}/admin/django_jobs/job/")
    page.click("#toggle-nav-sidebar")  # room for every column in the screenshot
    screenshot(page, "job-list")
    page.click("#changelist-filter a:text-is('failed')")
    page.click(f"#result_list a[href*='/job/{failed.pk}/change/']")
    page.wait_for_selector(".field-state_display .djj-failed")
    assert page.locator(".field-last_error_display").inner_text().count("SMTP server") == 1
    screenshot(page, "job-page")

    page.click("button.djj-tool-retry")
    page.wait_for_selector("text=1 failed job will run again.")
    assert page.locator(".field-state_display .djj-due").count() == 1

    worker = start_worker("--burst")
    assert worker.wait() == 0, worker.output()
    page.reload()
    assert page.locator(".field-state_display .djj-succeeded").count() == 1
    assert page.locator(".djj-runs tbody tr").count() == 2  # the failed run and the new one
    failed.refresh_from_db()
    assert failed.state == JobState.SUCCEEDED


def test_reschedule_through_the_form(page: Any, live_server: Any) -> None:
    job = make_job("record", next_run_at=timezone.now() + timedelta(days=5))
    recurring = make_job("monthly", schedule="0 3 1 * *", timezone="Europe/Paris")
    log_in(page, live_server, staff("scheduler", "view_job", "reschedule_job"))

    page.goto(f"{live_server.url}/admin/django_jobs/job/{job.pk}/change/")
    page.click("a.djj-tool-reschedule")
    page.fill("#id_when", "in 2 hours")
    page.click("input[type=submit][value=Reschedule]")
    page.wait_for_selector("text=Rescheduled 1 job.")
    assert re.search(r"in (1\xa0hour|2\xa0hours)", page.locator(".field-next_run").inner_text())
    job.refresh_from_db()
    assert abs(job.next_run_at - (timezone.now() + timedelta(hours=2))) < timedelta(minutes=1)

    page.goto(f"{live_server.url}/admin/django_jobs/job/{recurring.pk}/reschedule/")
    page.fill("#id_schedule", "0 25 * * *")
    page.click("input[type=submit][value=Reschedule]")
    assert "Invalid schedule '0 25 * * *'" in page.locator(".errorlist").first.inner_text()
    screenshot(page, "reschedule")
    page.fill("#id_schedule", "30 7 * * 1")
    page.fill("#id_timezone", "America/New_York")
    page.click("input[type=submit][value=Reschedule]")
    page.wait_for_selector("text=Rescheduled 1 job.")
    assert "weekly on Monday at 07:30 (America/New_York)" in page.content()
    assert page.locator(".djj-upcoming tbody tr").count() == 5
    recurring.refresh_from_db()
    assert (recurring.schedule, recurring.schedule_overridden) == ("30 7 * * 1", True)


def test_run_now_button_is_absent_without_the_permission(page: Any, live_server: Any) -> None:
    job = make_job("record", state=JobState.FAILED, next_run_at=None)
    log_in(page, live_server, staff("viewer", "view_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/job/{job.pk}/change/")
    page.wait_for_selector("a.historylink")
    assert page.locator("button.djj-tool-run_now").count() == 0
    assert page.locator("button.djj-tool-retry").count() == 0
    assert page.locator("select[name=action]").count() == 0 or "run_now" not in page.content()

    page.context.clear_cookies()
    log_in(page, live_server, staff("operator", "view_job", "run_job"))
    page.goto(f"{live_server.url}/admin/django_jobs/job/{job.pk}/change/")
    assert page.locator("button.djj-tool-run_now").count() == 1
    assert page.locator("a.djj-tool-reschedule").count() == 0


def test_retry_every_failed_job_of_a_filter_in_batches(
    page: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_jobs.admin import bulk

    jobs = [
        make_job("refund-order", state=JobState.FAILED, next_run_at=None, attempts=3)
        for _ in range(60)  # more than a page of 50, so "Select all 60" is needed
    ]
    other = make_job("record", state=JobState.FAILED, next_run_at=None)
    log_in(page, live_server, staff("operator", "view_job", "run_job"))

    page.goto(f"{live_server.url}/admin/django_jobs/job/?state=failed&name=refund-order")
    page.click("#action-toggle")
    page.click(".actions .question a")
    page.select_option("select[name=action]", "retry")
    page.click("button[name=index]")
    page.wait_for_selector(
        "text=This retries 60 failed jobs matching state=failed&name=refund-order. Continue?"
    )
    screenshot(page, "bulk")  # with the real batch size, before the test makes it small
    monkeypatch.setattr(bulk, "BATCH_SIZE", 7)  # several batches: the live server shares it
    page.click("input[type=submit][value='Yes, retry them']")
    page.wait_for_selector("text=Retried 60 failed jobs.")
    assert "state=failed" in page.url and "name=refund-order" in page.url
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], state=JobState.SCHEDULED).count() == 60
    assert Job.objects.get(pk=other.pk).state == JobState.FAILED
