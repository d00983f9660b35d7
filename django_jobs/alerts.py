"""Late-job alerts: the one rule for a recurring job that runs late or keeps failing.

- **late**: an enabled recurring job whose due run has waited unclaimed longer than its
  threshold (``@job(late_after=...)``, else ``DJANGO_JOBS["LATE_AFTER"]``);
- **failing**: an enabled recurring job whose last ``DJANGO_JOBS["ALERT_AFTER_FAILURES"]``
  runs failed (failed, timed-out or orphaned runs since its last success).

`late_q()`, `failing_q()` and `alert_q()` filter any Job queryset; `flagged()` gives each
flagged job with a human reason; `jobstatus`, the metrics and the worker's `job_overdue`
signal all read them. Every age is judged by the database's clock.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections, models
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from .conf import settings
from .db import EARLIEST_TIME, DbNow, db_now_plus
from .models import Job, JobRun, JobState, RunOutcome, unpaused_q
from .registry import registry
from .signals import job_overdue, send_signal

logger = logging.getLogger("django_jobs.alerts")

# The runs of a failing streak: a failed or timed-out attempt, or one whose worker was lost.
# Interrupted (a worker stopped) and cancelled runs neither count nor end a streak.
FAILED_OUTCOMES = (RunOutcome.FAILED, RunOutcome.TIMED_OUT, RunOutcome.ORPHANED)
CHECK_EVERY = 15.0  # seconds between two looks for late jobs by one worker process (at most)


def thresholds() -> dict[float, list[str]]:
    """Seconds of lateness allowed -> the registered job names it applies to.

    Only registered names: a row of an unknown name never runs, so it is never late, and the
    filter on names lets the (name, state) index find the few recurring rows among millions.
    """
    default = settings.LATE_AFTER
    groups: dict[float, list[str]] = {}
    for definition in registry:
        limit = definition.late_after.total_seconds() if definition.late_after else default
        if limit is not None:
            groups.setdefault(float(limit), []).append(definition.name)
    return groups


def _recurring() -> Q:
    """Enabled, unpaused recurring jobs of a registered name: a disabled job, or one whose name
    or queue is paused, waits on purpose."""
    return Q(name__in=registry.names(), enabled=True) & ~Q(schedule="") & unpaused_q()


def _late_within(seconds: float, names: list[str]) -> Q:
    return Q(name__in=names, state=JobState.SCHEDULED, next_run_at__lt=db_now_plus(-seconds))


def late_q() -> Q:
    """Recurring jobs whose due run has waited unclaimed longer than its threshold."""
    late = Q(pk__in=[])  # nothing, when no threshold applies
    for seconds, names in thresholds().items():
        late |= _late_within(seconds, names)
    return _recurring() & late


def _failures_since_success() -> models.QuerySet[JobRun]:
    """Failed runs of the outer job since its last successful run (all of them if none)."""
    last_success = (
        JobRun.objects.filter(job=OuterRef(OuterRef("pk")), outcome=RunOutcome.SUCCEEDED)
        .order_by("-started_at")
        .values("started_at")[:1]
    )
    since = Coalesce(
        Subquery(last_success), Value(EARLIEST_TIME, output_field=models.DateTimeField())
    )
    return JobRun.objects.filter(
        job=OuterRef("pk"), outcome__in=FAILED_OUTCOMES, started_at__gt=since
    )


def failing_q() -> Q:
    """Recurring jobs whose last ALERT_AFTER_FAILURES runs failed."""
    count = settings.ALERT_AFTER_FAILURES
    if count is None:
        return Q(pk__in=[])
    # EXISTS of the count-th failure (LIMIT 1 OFFSET count-1): the database stops after
    # `count` index entries of the (job, started_at) index, however long the streak.
    return _recurring() & Q(Exists(_failures_since_success()[count - 1 : count]))


def alert_q() -> Q:
    """Recurring jobs that are late or failing."""
    return late_q() | failing_q()


def late(queryset: models.QuerySet[Job] | None = None) -> models.QuerySet[Job]:
    return (Job.objects.all() if queryset is None else queryset).filter(late_q())


def failing(queryset: models.QuerySet[Job] | None = None) -> models.QuerySet[Job]:
    return (Job.objects.all() if queryset is None else queryset).filter(failing_q())


@dataclass
class Alert:
    """A flagged job and why: late, failing, or both."""

    job: Job
    late: bool
    failing: bool
    waited: timedelta | None  # how long its due run has waited, by the database's clock
    late_after: timedelta | None  # the threshold that applies to it
    failures: int  # failed runs since its last success

    @property
    def reasons(self) -> list[str]:
        """One sentence per reason, e.g. "late: due at 2026-11-30 03:00:00 UTC, ..."."""
        reasons = []
        if self.late and self.job.next_run_at is not None:
            reasons.append(
                f"late: due at {_when(self.job.next_run_at)}, not started after "
                f"{_duration(self.waited)} (limit {_duration(self.late_after)})"
            )
        if self.failing:
            error = self.job.last_error.splitlines()[0][:200] if self.job.last_error else ""
            reasons.append(
                f"failing: its last {self.failures} runs failed"
                + (f" (last error: {error})" if error else "")
            )
        return reasons

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def __str__(self) -> str:
        return f"{self.job}: {self.reason}"


def flagged(queryset: models.QuerySet[Job] | None = None, using: str | None = None) -> list[Alert]:
    """Every late or failing recurring job of `queryset` (default: all jobs), with its reasons.

    A few queries whatever the table's size: the filters of late_q() and failing_q(), each
    row annotated with the database's clock and its failures since its last success.
    """
    if queryset is None:
        queryset = Job.objects.using(using or settings.DATABASE)
    failures = (
        _failures_since_success()
        .order_by()
        .values("job")
        .annotate(count=Count("pk"))
        .values("count")
    )
    limits = {name: seconds for seconds, names in thresholds().items() for name in names}
    rows = (
        queryset.filter(alert_q())
        .annotate(
            db_now=DbNow(),
            failures=Coalesce(Subquery(failures), Value(0)),
            is_late=models.ExpressionWrapper(late_q(), output_field=models.BooleanField()),
        )
        .order_by("name", "pk")
    )
    needed = settings.ALERT_AFTER_FAILURES
    alerts = []
    for job in rows:
        db_now: datetime = job.db_now  # type: ignore[attr-defined]
        limit = limits.get(job.name)
        is_late = bool(job.is_late)  # type: ignore[attr-defined]
        alerts.append(
            Alert(
                job=job,
                late=is_late,
                failing=needed is not None and job.failures >= needed,  # type: ignore[attr-defined]
                waited=db_now - job.next_run_at if is_late and job.next_run_at else None,
                late_after=timedelta(seconds=limit) if limit is not None else None,
                failures=job.failures,  # type: ignore[attr-defined]
            )
        )
    return alerts


def reason(job: Job) -> str:
    """Why `job` is flagged, or "" if it is neither late nor failing (for one job's page)."""
    found = flagged(Job.objects.using(job._state.db or settings.DATABASE).filter(pk=job.pk))
    return found[0].reason if found else ""


# The worker's side: job_overdue, once per late episode in the whole cluster.


def announce_overdue(using: str | None = None) -> list[Alert]:
    """Send job_overdue for each late run that nobody announced yet; returns what was sent.

    A late episode is one due run (a job and its next_run_at). The worker that announces it
    stamps the row's updated_at with the database's clock, which is then past the due time
    plus the threshold; the stamp is a compare-and-set, so among workers that look at once
    only one wins, and a later look finds the episode announced. The run's end (a new
    next_run_at, an updated_at before it) starts the next episode.
    """
    using = using or settings.DATABASE
    sent = []
    for seconds, names in thresholds().items():
        unannounced = _recurring() & _late_within(seconds, names)
        unannounced &= Q(updated_at__lt=F("next_run_at") + timedelta(seconds=seconds))
        for job in Job.objects.using(using).filter(unannounced).order_by("pk")[:100]:
            won = (
                Job.objects.using(using)
                .filter(unannounced, pk=job.pk, next_run_at=job.next_run_at)
                .update(updated_at=DbNow())
            )
            if not won:
                continue  # another worker announced it, or it started meanwhile
            for alert in flagged(Job.objects.using(using).filter(pk=job.pk)):
                if not alert.late:
                    continue
                logger.warning("Job %s overdue: %s.", alert.job, alert.reason)
                sent.append(alert)
                _send(alert)
    return sent


def _send(alert: Alert) -> None:
    send_signal(job_overdue, job=alert.job, alert=alert, reason=alert.reason)


class OverdueWatcher:
    """A worker's thread that announces late jobs every `period` seconds until `stopping`.

    Its own thread (and database connection): job_overdue receivers may be slow (mail, a
    pager), and must never delay the heartbeat that keeps the locks.
    """

    def __init__(self, using: str, stopping: threading.Event, period: float) -> None:
        self.using, self.stopping = using, stopping
        self.period = max(0.5, min(CHECK_EVERY, period))

    def start(self) -> None:
        if not thresholds():
            return  # LATE_AFTER is None and no job sets late_after: nothing can be late
        threading.Thread(target=self._run, name="django_jobs-alerts", daemon=True).start()

    def _run(self) -> None:
        wait = random.uniform(0, self.period)  # spread the looks of workers started together
        while not self.stopping.wait(wait):
            try:
                announce_overdue(self.using)
            except Exception as exc:
                logger.warning("Looking for late jobs failed (%s); trying again later.", exc)
                connections[self.using].close()
            wait = self.period
        connections.close_all()


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "?"
    seconds = max(0, int(value.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"
