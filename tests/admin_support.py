"""Helpers of the admin tests: users with chosen permissions, jobs in every state, URLs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_jobs.models import Job, JobRun, JobState, RunOutcome

XSS = "<script>alert('x')</script>"
XSS_ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"

# Queries a page takes, whatever the number of rows (see test_admin_big_tables.py).
# Superuser: session + user, then the page's own queries.
LIST_QUERIES = 4  # session, user, capped count, one page of jobs
JOB_PAGE_QUERIES = 4  # session, user, the job, its latest runs
# An enabled recurring job's page also asks alerts.py whether it is late or failing, and a
# waiting job's page whether a pause holds it back (JobAdmin.warn_of).
ALERT_QUERIES = 1
PAUSE_QUERIES = 1


def job_page_queries(job: Job) -> int:
    """The queries of `job`'s page: the fixed ones, and the looks that concern this job."""
    pause = PAUSE_QUERIES if job.state == JobState.SCHEDULED else 0
    alert = ALERT_QUERIES if job.schedule and job.enabled else 0
    return JOB_PAGE_QUERIES + pause + alert


# session, user, a capped count of the jobs, the counts per name, a capped count of the chart's
# runs, the runs per interval, the live workers
OVERVIEW_QUERIES = 7
# On a table of STATS_LIVE_BELOW jobs and runs or more, the workers' counts (stats.py): the
# capped counts, the mark (twice), the job counts, the counted minutes, the newest runs live.
OVERVIEW_STATS_QUERIES = 10
RUN_LIST_QUERIES = 4  # session, user, capped count, one page of runs
WORKER_LIST_QUERIES = 4  # session, user, count, workers with their running jobs
PERMISSION_QUERIES = 2  # a non-superuser's permissions: their own and their groups'


def job_filter_queries() -> int:
    """The job list filters' index probes: one per name and per queue that rows hold.

    Names are found through the (name, id) index, one probe per name and one that finds
    none; queues through the claim index, so once per state and enabled flag, except the
    running jobs' queues, which are one query. Counted here with SELECT DISTINCT,
    independently of the admin's own way of finding them.
    """
    names = Job.objects.order_by().values("name").distinct().count()
    probes = names + 1 + 1  # the running jobs' queues
    for state in JobState.values:
        if state == JobState.RUNNING:
            continue
        for enabled in (True, False):
            rows = Job.objects.filter(state=state, enabled=enabled).order_by()
            probes += rows.values("queue").distinct().count() + 1
    return probes


def run_filter_queries() -> int:
    """The run list name filter's index probes: one per job name that runs hold, and one."""
    return JobRun.objects.order_by().values("job_name").distinct().count() + 1


def assert_page_queries(
    client: Client, url: str, expected: int, django_assert_num_queries: Any
) -> Any:
    """GET url with exactly `expected` queries; returns the response.

    A first, unmeasured GET fills the per-process caches (content types) that a running site
    has warm, so only the page's own queries are counted.
    """
    assert client.get(url).status_code == 200, url
    with django_assert_num_queries(expected, info=url):
        response = client.get(url)
    assert response.status_code == 200, url
    return response


def make_user(
    username: str, *codenames: str, is_staff: bool = True, is_superuser: bool = False
) -> User:
    """A user with the given django_jobs permissions (codenames such as "run_job")."""
    user = User.objects.create_user(
        username, password="pw", is_staff=is_staff, is_superuser=is_superuser
    )
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="django_jobs", codename=codename)
        )
    return user


def client_for(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def make_job(name: str = "record", **fields: Any) -> Job:
    return Job.objects.create(name=name, **fields)


def future(**delta: float) -> Any:
    return timezone.now() + timedelta(**delta)


def past(**delta: float) -> Any:
    return timezone.now() - timedelta(**delta)


def jobs_in_every_state() -> dict[str, Job]:
    """One job per admin state, plus a recurring one; keyed by that state."""
    return {
        "scheduled": make_job(next_run_at=future(minutes=5)),
        "due": make_job(next_run_at=past(minutes=1)),
        "running": make_job(
            state=JobState.RUNNING,
            locked_by="host:1:abc",
            locked_until=future(seconds=30),
            last_started_at=past(seconds=5),
            progress=0.42,
            progress_message="halfway",
            attempts=1,
        ),
        "succeeded": make_job(
            state=JobState.SUCCEEDED,
            next_run_at=None,
            last_started_at=past(minutes=3),
            last_finished_at=past(minutes=3) + timedelta(seconds=2),
            attempts=1,
        ),
        "failed": make_job(
            state=JobState.FAILED,
            next_run_at=None,
            attempts=1,
            failure_count=1,
            last_error="ValueError: broken",
            last_traceback="Traceback (most recent call last):\nValueError: broken",
        ),
        "disabled": make_job(next_run_at=past(minutes=1), enabled=False),
        "recurring": make_job(
            name="monthly",
            schedule="0 3 1 * *",
            timezone="Europe/Paris",
            next_run_at=future(days=3),
            unique_key="django_jobs:recurring:monthly",
        ),
    }


def make_run(job: Job | None, outcome: str = RunOutcome.SUCCEEDED, **fields: Any) -> JobRun:
    started = fields.pop("started_at", timezone.now() - timedelta(seconds=10))
    return JobRun.objects.create(
        job=job,
        job_name=job.name if job else fields.pop("job_name", "record"),
        outcome=outcome,
        worker_id=fields.pop("worker_id", "host:1:abc"),
        lock_token="t",
        started_at=started,
        finished_at=fields.pop("finished_at", started + timedelta(seconds=1)),
        **fields,
    )


def log_messages(job: Job) -> list[str]:
    return list(
        LogEntry.objects.filter(object_id=str(job.pk))
        .order_by("pk")
        .values_list("change_message", flat=True)
    )


def changelist_url() -> str:
    return reverse("admin:django_jobs_job_changelist")


def job_url(job: Job) -> str:
    return reverse("admin:django_jobs_job_change", args=[job.pk])


def action_url(job: Job, action: str) -> str:
    return reverse("admin:django_jobs_job_action", args=[job.pk, action])


def reschedule_url(job: Job) -> str:
    return reverse("admin:django_jobs_job_reschedule", args=[job.pk])


def cancel_url(job: Job) -> str:
    return reverse("admin:django_jobs_job_delete", args=[job.pk])


def overview_url() -> str:
    return reverse("admin:django_jobs_job_overview")


def add_url() -> str:
    return reverse("admin:django_jobs_job_add")


def bulk(action: str, *jobs: Job, **extra: str) -> dict[str, Any]:
    """The POST data of a bulk action on the job list."""
    return {
        "action": action,
        "_selected_action": [str(job.pk) for job in jobs],
        "index": "0",
        **extra,
    }


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []
