"""Layout in headless Chromium: the lists fit beside the sidebar, small screens work.

Same set-up as test_admin_browser.py (Debian's chromium through Playwright, never a
downloaded browser).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_jobs.models import Job, RunOutcome

from .admin_support import make_job, make_run
from .test_admin_browser import demo_data, log_in, staff
from .test_admin_browser import page as browser_page  # noqa: F401  (a fixture, used below)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LISTS = ["job/", "jobrun/"]
PAGES = [
    "job/",
    "jobrun/",
    "job/overview/",
    "job/queues/",
    "job/recurring/",
    f"job/{1}/change/",
]


@pytest.fixture
def page(browser_page: Any) -> Any:  # noqa: F811  (the browser page of test_admin_browser)
    return browser_page


def wide_rows() -> None:
    """Rows whose cells are as wide as real ones get: long names, errors, worker ids."""
    demo_data()
    job = make_job(
        "generate-monthly-invoice-pdf",
        queue="invoices-and-receipts",
        priority=10,
        next_run_at=timezone.now() + timedelta(minutes=3),
    )
    make_run(
        job,
        RunOutcome.FAILED,
        worker_id="web-production-7f9c4:123456:0123456789ab",
        error="ConnectionError: smtp.example.com:25 refused the connection " * 3,
    )
    # A recurring job with a long name, schedule and zone, for the recurring jobs page.
    make_job(
        "generate-monthly-invoice-pdf",
        schedule="30 7 1-7 * 1",
        timezone="America/Argentina/ComodRivadavia",
        queue="invoices-and-receipts",
        next_run_at=timezone.now() + timedelta(days=3),
    )
    Job.objects.bulk_create(
        [Job(name="bulk", next_run_at=timezone.now() + timedelta(hours=1)) for _ in range(12345)]
    )


def columns_hidden(page: Any) -> list[str]:
    """Headers of the result table that lie outside its box (cut off or scrolled away)."""
    return page.evaluate(
        """() => {
            const box = document.querySelector('#changelist .results').getBoundingClientRect();
            return [...document.querySelectorAll('#result_list thead th')]
                .filter(th => th.getBoundingClientRect().right > box.right + 1)
                .map(th => th.innerText.trim());
        }"""
    )


def test_lists_fit_beside_the_open_sidebar_at_1400(page: Any, live_server: Any) -> None:
    wide_rows()
    page.set_viewport_size({"width": 1400, "height": 900})
    log_in(page, live_server, staff("admin", superuser=True))
    for url in LISTS:
        page.goto(f"{live_server.url}/admin/django_jobs/{url}")
        assert page.is_visible("#nav-sidebar"), "the navigation sidebar is open"
        assert columns_hidden(page) == [], url
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400, url


def test_small_screen_has_no_page_wide_scroll(page: Any, live_server: Any) -> None:
    wide_rows()
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, live_server, staff("admin", superuser=True))
    for url in PAGES:
        page.goto(f"{live_server.url}/admin/django_jobs/{url}")
        # Wide tables scroll inside their own box; the page itself does not.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
        if url == "job/recurring/":  # the check is not of an empty page
            assert "America/Argentina/ComodRivadavia" in page.content()
    page.goto(f"{live_server.url}/admin/django_jobs/job/")
    page.fill("#searchbar", "generate-monthly-invoice-pdf")
    page.press("#searchbar", "Enter")
    page.wait_for_selector("#result_list a:text-is('generate-monthly-invoice-pdf')")


def test_chart_labels_are_inside_the_chart(
    page: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_jobs.admin import views
    from django_jobs.admin.overview import run_buckets

    def busy(using: str, range_key: str, now: Any = None) -> Any:
        """A busy site's counts (1,234,567 runs an interval), without loading them."""
        buckets = run_buckets(using, range_key, now)
        for bucket in buckets:
            bucket.runs, bucket.failures = 1_234_567, 123_456
        return buckets

    monkeypatch.setattr(views, "run_buckets", busy)
    log_in(page, live_server, staff("admin", superuser=True))
    for width in (1400, 390):
        page.set_viewport_size({"width": width, "height": 900})
        for query in ("", "?range=day"):
            page.goto(f"{live_server.url}/admin/django_jobs/job/overview/{query}")
            outside = page.evaluate(
                """() => {
                    const svg = document.querySelector('svg.djj-chart');
                    const box = svg.viewBox.baseVal;
                    return [...svg.querySelectorAll('text')].filter(t => {
                        const b = t.getBBox();
                        return b.x < box.x || b.y < box.y || b.x + b.width > box.x + box.width
                            || b.y + b.height > box.y + box.height;
                    }).map(t => t.textContent);
                }"""
            )
            assert outside == [], (width, query)


def test_breadcrumbs_read_sensibly(page: Any, live_server: Any) -> None:
    job = make_job("record")
    log_in(page, live_server, staff("admin", superuser=True))
    expected = {
        "job/": ["Home", "Jobs", "All jobs"],
        f"job/{job.pk}/change/": ["Home", "Jobs", "All jobs", f"record #{job.pk}"],
        f"job/{job.pk}/reschedule/": [
            "Home",
            "Jobs",
            "All jobs",
            f"record #{job.pk}",
            "Reschedule",
        ],
        "job/overview/": ["Home", "Jobs", "Overview"],
        "job/queues/": ["Home", "Jobs", "Queues"],
    }
    for url, crumbs in expected.items():
        page.goto(f"{live_server.url}/admin/django_jobs/{url}")
        assert crumbs_of(page) == crumbs, url


def crumbs_of(page: Any) -> list[str]:
    """The breadcrumbs' items: a list on Django 6, a line split by "\u203a" on 5.2."""
    items = page.locator(".breadcrumbs li").all_inner_texts()
    if not items:
        items = page.inner_text(".breadcrumbs").split("\u203a")
    return [item.strip() for item in items]
