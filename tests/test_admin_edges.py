"""The admin at the edges: forged URL lookups, NUL characters, edge dates, deep JSON, and the
buttons and bulk actions following the one table of states.ACTIONS."""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.test import Client, RequestFactory, override_settings
from django.utils import timezone

from django_jobs import states
from django_jobs.admin import display
from django_jobs.admin.jobs import upcoming_runs
from django_jobs.db import EARLIEST_TIME, LATEST_TIME
from django_jobs.models import Job, JobRun, JobState, RunOutcome, Worker
from django_jobs.states import ActionRule

from .admin_support import (
    bulk,
    cancel_url,
    changelist_url,
    client_for,
    job_url,
    make_job,
    make_run,
    make_user,
    messages_of,
    overview_url,
    reschedule_url,
)

pytestmark = pytest.mark.django_db

JOBS = "/admin/django_jobs/job/"
RUNS = "/admin/django_jobs/jobrun/"
WORKERS = "/admin/django_jobs/worker/"
VIEW_ONLY = ("view_job", "view_jobrun", "view_worker")


def viewer() -> Client:
    return client_for(make_user("viewer", *VIEW_ONLY))


# Lookups in the URL: only the ones the admin's own filters and links use


FORGED_LOOKUPS = [
    (JOBS, "lock_token__startswith=ab"),
    (JOBS, "lock_token=abc"),
    (JOBS, "lock_token__isnull=False"),
    (JOBS, "last_traceback__icontains="),
    (JOBS, "last_error__regex=.*"),
    (JOBS, "data__icontains=secret"),
    (JOBS, "data__email=a"),
    (JOBS, "unique_key__startswith=a"),
    (JOBS, "locked_by__startswith=a"),
    (JOBS, "id__gt=0"),
    (JOBS, "name__startswith=r"),
    (JOBS, "runs__lock_token__startswith=a"),
    (RUNS, "lock_token__startswith=a"),
    (RUNS, "traceback__icontains="),
    (RUNS, "error__icontains=x"),
    (RUNS, "job__lock_token__startswith=a"),
    (RUNS, "job__data__icontains=a"),
    (RUNS, "worker_id__startswith=h"),
    (RUNS, "job__id__gt=0"),
    (WORKERS, "hostname__startswith=a"),
    (WORKERS, "worker_id__regex=."),
    (WORKERS, "queues__contains=a"),
]


@pytest.mark.parametrize(("url", "query"), FORGED_LOOKUPS)
def test_forged_lookups_are_refused(url: str, query: str) -> None:
    job = make_job(state=JobState.RUNNING, locked_by="w", lock_token="abcdef")
    make_run(job)
    Worker.objects.create(worker_id="w", hostname="h", pid=1, concurrency=1)
    response = viewer().get(f"{url}?{query}")
    assert response.status_code == 400
    assert b"abcdef" not in response.content


def test_a_superuser_cannot_forge_lookups_either(admin_client: Client) -> None:
    make_job(state=JobState.RUNNING, locked_by="w", lock_token="abcdef")
    assert admin_client.get(JOBS + "?lock_token__startswith=ab").status_code == 400


def links(path: str, page: str) -> set[str]:
    """The admin URLs with a query string that a page links to (the filters' are relative)."""
    found = re.findall(r'href="((?:/admin/django_jobs/[^"]*)?\?[^"]*)"', page)
    return {html.unescape(url if url.startswith("/") else path + url) for url in found}


def test_every_link_the_admin_builds_is_allowed(admin_client: Client) -> None:
    job = make_job(state=JobState.FAILED, next_run_at=None, queue="emails")
    make_job("monthly", schedule="every 1 hour")
    make_run(job, RunOutcome.FAILED)
    Worker.objects.create(worker_id="w", hostname="h", pid=1, concurrency=1)
    pages = [
        JOBS,
        JOBS + "?state=failed&name=record&queue=emails",
        overview_url(),
        job_url(job),
        RUNS,
        RUNS + "?outcome=failed&job_name=record",
        f"{RUNS}?job__id__exact={job.pk}",
        WORKERS,
    ]
    urls: set[str] = set()
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        urls |= links(page.split("?")[0], response.content.decode())
    assert f"{RUNS}?job__id__exact={job.pk}" in urls  # the job page's link to its runs
    assert any("state=failed" in url and "name=record" in url for url in urls)  # the overview
    assert any("outcome=failed" in url for url in urls)  # the run list's filter
    assert len(urls) > 30
    for url in sorted(urls):
        assert admin_client.get(url).status_code in (200, 302), url


def test_the_filters_still_filter() -> None:
    failed = make_job(state=JobState.FAILED, next_run_at=None, queue="emails")
    make_job()
    run = make_run(failed, RunOutcome.FAILED)
    make_run(make_job("sleep"))
    client = viewer()

    def listed(url: str) -> list[int]:
        response = client.get(url)
        assert response.status_code == 200, url
        return [row.pk for row in response.context["cl"].result_list]

    assert listed(JOBS + "?state=failed") == [failed.pk]
    assert listed(JOBS + "?name=record&queue=emails") == [failed.pk]
    assert listed(RUNS + "?outcome=failed") == [run.pk]
    assert listed(RUNS + "?job_name=record") == [run.pk]
    assert listed(f"{RUNS}?job__id__exact={failed.pk}") == [run.pk]


# NUL characters and lone surrogates in filters and the search box

BAD_TEXT = ["%00", "a%00b", "%ED%A0%80", "%ED%BF%BF", "%F0%9F", "%C0%80", "%00%ED%B0%80x"]
FILTER_PARAMS = [
    (JOBS, "name"),
    (JOBS, "queue"),
    (JOBS, "state"),
    (JOBS, "q"),
    (RUNS, "outcome"),
    (RUNS, "job_name"),
    (RUNS, "job__id__exact"),
    (RUNS, "q"),
    (WORKERS, "q"),
]


@pytest.mark.parametrize("value", BAD_TEXT)
@pytest.mark.parametrize(("url", "param"), FILTER_PARAMS)
def test_nul_and_surrogates_in_filters_and_search_give_a_page(
    admin_client: Client, url: str, param: str, value: str
) -> None:
    job = make_job(data={"x": "y"})
    make_run(job)
    Worker.objects.create(worker_id="w", hostname="h", pid=1, concurrency=1)
    response = admin_client.get(f"{url}?{param}={value}", follow=True)
    assert response.status_code == 200
    if "%00" not in value or "e=1" in response.request["QUERY_STRING"]:
        return  # the replacement character, or a lookup Django finds invalid (?e=1)
    if param == "q":
        # Django's own search form refuses a NUL: a message, and the search is not applied.
        assert "Null characters are not allowed." in messages_of(response)
    else:
        # No stored row holds a NUL (PostgreSQL cannot store one): nothing matches.
        assert list(response.context["cl"].result_list) == []


@pytest.mark.parametrize("value", ["%00", "%ED%A0%80"])
def test_nul_in_a_job_id_is_not_an_error(admin_client: Client, value: str) -> None:
    assert admin_client.get(f"{JOBS}{value}/change/").status_code == 302  # "does not exist"
    assert admin_client.get(f"{JOBS}{value}/reschedule/").status_code == 404
    assert admin_client.get(f"{JOBS}{value}/delete/").status_code == 404
    assert admin_client.post(f"{JOBS}{value}/actions/retry/").status_code == 404
    assert admin_client.get(f"{RUNS}{value}/change/").status_code == 302


# Rows at the edges of what the database holds


ZONES = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"]  # UTC, UTC+14, UTC-12
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)  # the last instant stored


def earliest() -> datetime:
    """The earliest time the test database stores: year 1, or 1000 on MariaDB/MySQL."""
    return datetime(1000 if connection.vendor == "mysql" else 1, 1, 1, tzinfo=UTC)


def edge_rows(at: datetime) -> dict[str, Any]:
    """Jobs, a run and a worker whose every time is `at`, written straight through the ORM.

    next_run_at is held by a database constraint to EARLIEST_TIME..LATEST_TIME: it gets the
    bound nearest `at`.
    """
    times = {
        "next_run_at": min(max(at, EARLIEST_TIME), LATEST_TIME),
        "last_started_at": at,
        "last_finished_at": at,
        "locked_until": at,
        "created_at": at,
        "updated_at": at,
    }
    rows: dict[str, Any] = {
        "one_off": make_job(**times),
        "failed": make_job(**{**times, "state": JobState.FAILED}),
        "running": make_job(**{**times, "state": JobState.RUNNING, "locked_by": "w"}),
        "cron": make_job("monthly", schedule="0 3 * * *", timezone="Europe/Paris", **times),
        "interval": make_job("monthly", schedule="every 1 hour", **times),
    }
    rows["run"] = JobRun.objects.create(
        job=rows["one_off"],
        job_name="record",
        outcome=RunOutcome.FAILED,
        worker_id="w",
        lock_token="t",
        started_at=at,
        finished_at=at,
        error="boom",
    )
    JobRun.objects.create(
        job=rows["one_off"], job_name="record", worker_id="w", lock_token="t", started_at=at
    )
    rows["worker"] = Worker.objects.create(
        worker_id="w", hostname="h", pid=1, concurrency=1, started_at=at, last_heartbeat_at=at
    )
    return rows


@pytest.fixture(params=["latest", "earliest"])
def edge(request: pytest.FixtureRequest) -> datetime:
    return LATEST if request.param == "latest" else earliest()


@pytest.mark.parametrize("zone", ZONES)
def test_rows_at_the_edges_of_time_render_everywhere(
    admin_client: Client, edge: datetime, zone: str
) -> None:
    rows = edge_rows(edge)
    jobs = [rows[key] for key in ("one_off", "failed", "running", "cron", "interval")]
    with override_settings(TIME_ZONE=zone):
        pages = [
            JOBS,
            JOBS + "?state=scheduled",
            overview_url(),
            RUNS,
            f"{RUNS}{rows['run'].pk}/change/",
            WORKERS,
            f"{WORKERS}{rows['worker'].pk}/change/",
        ]
        for job in jobs:
            pages += [job_url(job), cancel_url(job), reschedule_url(job)]
        for page in pages:
            response = admin_client.get(page)
            assert response.status_code == 200, page
        # The bulk actions' confirmation pages list the same rows.
        for action in ("reschedule", "cancel"):
            response = admin_client.post(JOBS, bulk(action, *jobs))
            assert response.status_code == 200, action
        page = admin_client.get(job_url(rows["one_off"])).content.decode()
        assert edge.isoformat() in page  # the exact instant, whatever the timezone can show


def test_an_edge_time_reads_as_its_utc_value_where_the_timezone_cannot_show_it(
    admin_client: Client,
) -> None:
    job = make_job(last_started_at=LATEST, locked_until=LATEST)
    with override_settings(TIME_ZONE="Pacific/Kiritimati"):
        page = admin_client.get(job_url(job)).content.decode()
    assert "9999-12-31 23:59:59 UTC" in page


def test_actions_on_edge_rows(admin_client: Client) -> None:
    rows = edge_rows(LATEST)
    with override_settings(TIME_ZONE="Pacific/Kiritimati"):
        for action in ("run_now", "disable", "enable"):
            response = admin_client.post(JOBS, bulk(action, rows["one_off"], rows["cron"]))
            assert response.status_code == 302, action
        response = admin_client.post(
            JOBS, bulk("reschedule", rows["one_off"], apply="1", when="in 1 hour"), follow=True
        )
        assert "Rescheduled 1 job." in messages_of(response)


# Data nested 1,000 deep, and numbers too long for Python to read


@contextmanager
def python_limits(recursion: int = 20_000, digits: int = 0) -> Iterator[None]:
    """Lift Python's limits while a test writes a row that Python cannot read back."""
    old_recursion, old_digits = sys.getrecursionlimit(), sys.get_int_max_str_digits()
    sys.setrecursionlimit(recursion)
    sys.set_int_max_str_digits(digits)
    try:
        yield
    finally:
        sys.setrecursionlimit(old_recursion)
        sys.set_int_max_str_digits(old_digits)


def nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def store(**fields: Any) -> list[Job]:
    """A one-off and a recurring job with `fields`, or a skip where the database refuses them."""
    try:
        with python_limits(), transaction.atomic():
            return [
                make_job(**fields),
                make_job("monthly", schedule="every 1 hour", **fields),
            ]
    except DatabaseError as exc:
        pytest.skip(f"{connection.vendor} cannot store this value, so no such row exists: {exc}")


def python_reads(value: Any) -> bool:
    """Whether this Python, at its normal limits, reads `value` back from its JSON text."""
    with python_limits():
        text = json.dumps(value)
    try:
        json.loads(text)
    except (RecursionError, ValueError):
        return False
    return True


@pytest.mark.parametrize(
    "fields",
    [
        # Python 3.13 reads JSON nested 1,000 deep (3.11 does not), and MariaDB stores at
        # most 32 levels: a case runs where the database holds a row this Python cannot read
        # (tests/test_trust.py covers deeper rows through the worker).
        pytest.param({"data": nested(1000), "result": nested(1000)}, id="nested-1000"),
        pytest.param({"data": [nested(1000)] * 3}, id="nested-1000-thrice"),
        pytest.param({"data": {"n": 10**5000}, "result": -(10**5000)}, id="5000-digits"),
    ],
)
def test_data_python_cannot_read_renders_everywhere(
    admin_client: Client, fields: dict[str, Any]
) -> None:
    if all(python_reads(value) for value in fields.values()):
        pytest.skip("This Python reads the value back, so the row is an ordinary one here.")
    one_off, recurring = store(**fields)
    for page in [
        JOBS,
        JOBS + "?q=leaf",
        overview_url(),
        job_url(one_off),
        job_url(recurring),
        cancel_url(one_off),
        reschedule_url(one_off),
    ]:
        response = admin_client.get(page)
        assert response.status_code == 200, page
    page = admin_client.get(job_url(one_off)).content.decode()
    assert "Shown as stored" in page
    for action in ("disable", "enable", "run_now"):
        response = admin_client.post(JOBS, bulk(action, one_off, recurring), follow=True)
        assert response.status_code == 200, action
    # The recurring job's run-now copy needs its data: refused with a message, not an error.
    response = admin_client.post(JOBS, bulk("run_now", recurring), follow=True)
    (message,) = messages_of(response)
    assert f"#{recurring.pk}" in message and "data" in message
    response = admin_client.post(cancel_url(one_off), {"post": "yes"}, follow=True)
    assert response.status_code == 200
    if Job.objects.filter(pk=one_off.pk).exists():
        # Job.cancel() deletes through Django's collector, which loads every column: the job
        # stays, and the message says why.
        (message,) = messages_of(response)
        assert f"#{one_off.pk}" in message and "data" in message


def test_deep_data_python_can_read_is_still_shown_indented(admin_client: Client) -> None:
    (job, _recurring) = store(data=nested(50))
    page = admin_client.get(job_url(job)).content.decode()
    assert "Shown as stored" not in page
    assert "&quot;leaf&quot;: 1" in page


# The display helpers never raise


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(
    "value",
    [
        datetime.max.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=UTC),
        datetime(9999, 12, 31, 12, tzinfo=UTC),
        datetime(1, 1, 1, 11, tzinfo=UTC),
    ],
)
def test_time_helpers_never_raise(zone: str, value: datetime) -> None:
    with timezone.override(zone):
        text = display.exact_time(value)
        assert str(value.year) in text
        assert value.isoformat() in display.relative_time(value)
        assert display.relative_text(value)
        assert display.relative_time(value, now=datetime.max.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    "value",
    [timedelta.max, timedelta.min, timedelta(days=-1), timedelta(0), timedelta(days=10**8)],
)
def test_format_duration_never_raises(value: timedelta) -> None:
    assert display.format_duration(value)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), 1e308, -1.0, 2.0, 0.5]
)
def test_progress_bar_never_raises(value: float) -> None:
    assert display.progress_bar(value, "m")


def test_pretty_json_never_raises() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    for value in [deep, nested(2000), {"n": 10**5000}, [float("nan")], {1: object()}]:
        assert '<pre class="djj-pre' in display.pretty_json(value)
    assert "nested too deeply" in display.pretty_json(deep)
    assert "number too long" in display.pretty_json({"n": 10**5000})
    assert "Shown as stored" in display.stored_json("[" * 100_000 + "]" * 100_000)
    assert "Shown as stored" in display.stored_json("1" * 5000)
    assert "Shown as stored" in display.stored_json("{not json")
    assert "&quot;a&quot;: 1" in display.stored_json('{"a": 1}')
    assert display.stored_json(None) == display.EMPTY


def test_upcoming_runs_at_the_end_of_the_calendar() -> None:
    for schedule in ["every 1 hour", "0 3 * * *"]:
        job = Job(name="monthly", schedule=schedule, timezone="Pacific/Kiritimati")
        job.state, job.next_run_at = JobState.SCHEDULED, LATEST
        upcoming = upcoming_runs(job)
        assert upcoming is not None
        assert [row["at"] for row in upcoming["runs"]] == [LATEST]
        assert "9999" in upcoming["runs"][0]["local_text"]
        assert upcoming["error"]


# Buttons and bulk actions follow states.ACTIONS


BUTTONS = [
    "run_now",
    "retry",
    "reschedule",
    "disable",
    "enable",
    "cancel",
    "cancel_running",
    "delete_finished",
]
CODENAMES = sorted({rule.permission for rule in states.ACTIONS.values()})


def rules_of(button: str, job: Job) -> list[str]:
    """The table's actions behind a button: reschedule covers change_schedule when recurring."""
    if button == "reschedule" and job.recurring:
        return ["reschedule", "change_schedule"]
    return [button]


def expected_buttons(job: Job, codenames: set[str]) -> set[str]:
    return {
        button
        for button in BUTTONS
        if any(
            states.ACTIONS[rule].permission in codenames and states.allows(rule, job)
            for rule in rules_of(button, job)
        )
    }


def every_kind_of_job() -> list[Job]:
    jobs = []
    for state in JobState:
        for recurring in (False, True):
            for enabled in (True, False):
                jobs.append(
                    make_job(
                        "monthly" if recurring else "record",
                        state=state,
                        enabled=enabled,
                        schedule="every 1 hour" if recurring else "",
                        locked_by="w" if state == JobState.RUNNING else None,
                    )
                )
    return jobs


def shown_buttons(user: User, job: Job) -> set[str]:
    request = RequestFactory().get("/")
    request.user = user
    model_admin = admin.site._registry[Job]
    return {button["name"] for button in model_admin.job_buttons(request, job)}  # type: ignore[attr-defined]


def test_buttons_follow_the_table_of_actions_and_permissions() -> None:
    jobs = every_kind_of_job()
    users = [(make_user("root", is_superuser=True), set(CODENAMES))]
    users += [(make_user(f"u-{name}", "view_job", name), {name}) for name in CODENAMES]
    users += [(make_user("viewer", "view_job"), set())]
    for user, codenames in users:
        for job in jobs:
            expected = expected_buttons(job, codenames)
            assert shown_buttons(user, job) == expected, (user.username, job.state, job.schedule)


def test_the_job_page_shows_the_tables_buttons(admin_client: Client) -> None:
    for job in every_kind_of_job():
        page = admin_client.get(job_url(job)).content.decode()
        # The whole class name: "djj-tool-cancel" is also the start of "djj-tool-cancel_running".
        shown = {name for name in BUTTONS if re.search(f'djj-tool-{name}[" ]', page)}
        assert shown == expected_buttons(job, set(CODENAMES)), (job.state, job.schedule)


def offered_actions(client: Client) -> set[str]:
    form = client.get(changelist_url()).context["action_form"]
    return {name for name, _label in form.fields["action"].choices if name} if form else set()


def test_bulk_actions_offered_follow_the_tables_permissions() -> None:
    make_job()
    for codename in CODENAMES:
        client = client_for(make_user(f"u-{codename}", "view_job", codename))
        # Cancel run is a button of a running job's page only, not a bulk action.
        expected = {
            name
            for name in BUTTONS
            if states.ACTIONS[name].permission == codename and name != "cancel_running"
        }
        assert offered_actions(client) == expected, codename


BULK = [
    # (button, the table's action it applies, extra POST data)
    ("run_now", "run_now", {}),
    ("retry", "retry", {}),
    ("reschedule", "reschedule", {"apply": "1", "when": "in 1 hour"}),
    (
        "reschedule",
        "change_schedule",
        {"apply": "1", "schedule": "every 2 hours", "timezone": "UTC"},
    ),
    ("disable", "disable", {}),
    ("enable", "enable", {}),
    ("cancel", "cancel", {"post": "yes"}),
]


@pytest.mark.parametrize(("button", "action", "extra"), BULK, ids=[b[1] for b in BULK])
def test_bulk_actions_change_exactly_the_jobs_the_table_allows(
    admin_client: Client, button: str, action: str, extra: dict[str, str]
) -> None:
    jobs = every_kind_of_job()
    if action == "change_schedule":
        jobs = [job for job in jobs if job.recurring]
    for job in jobs:
        allowed = states.allows(action, job)
        admin_client.post(changelist_url(), bulk(button, job, **extra))
        changed = LogEntry.objects.filter(object_id=str(job.pk)).exists()
        assert changed == allowed, (action, job.state, job.schedule, job.enabled)


def test_the_admin_reads_the_table_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Change the table, and the buttons, bulk actions and permission checks follow."""
    monkeypatch.setitem(
        states.ACTIONS,
        "retry",
        ActionRule(
            one_off=frozenset({JobState.SUCCEEDED}),
            recurring=frozenset(),
            permission="change_job",
        ),
    )
    succeeded = make_job(state=JobState.SUCCEEDED, next_run_at=None)
    failed = make_job(state=JobState.FAILED, next_run_at=None)
    changer = make_user("changer", "view_job", "change_job")
    runner = make_user("runner", "view_job", "run_job")
    assert "retry" in shown_buttons(changer, succeeded)
    assert "retry" not in shown_buttons(changer, failed)
    assert "retry" not in shown_buttons(runner, succeeded)
    assert "retry" in offered_actions(client_for(changer))
    assert "retry" not in offered_actions(client_for(runner))
    response = client_for(runner).post(JOBS + f"{succeeded.pk}/actions/retry/")
    assert response.status_code == 403
    response = client_for(changer).post(changelist_url(), bulk("retry", succeeded), follow=True)
    assert "1 failed job will run again." in messages_of(response)
    succeeded.refresh_from_db()
    assert succeeded.state == JobState.SCHEDULED


def test_cancel_refusal_names_the_states_cancel_starts_from(admin_client: Client) -> None:
    done = make_job(state=JobState.SUCCEEDED, next_run_at=None)
    response = admin_client.post(cancel_url(done), {"post": "yes"}, follow=True)
    (message,) = messages_of(response)
    assert f"Cannot cancel job record #{done.pk} while it is succeeded." in message
    assert "Only scheduled jobs can be cancelled." in message
