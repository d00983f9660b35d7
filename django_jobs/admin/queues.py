"""The queues page's numbers, and the queues and names that have rows (for the list filters).

Every query reads an index range and stops early, so the page costs the same at a million
jobs as at a hundred (docs/performance.md, "Admin at 1M jobs"):

- the distinct values of a column are found by skipping through an index, one probe per
  value (`WHERE queue > 'emails' ORDER BY queue LIMIT 1`), never by SELECT DISTINCT, which
  reads every row. Names skip through the (name, id) index; queues through the claim index
  (state, enabled, queue, ...), once per state and enabled flag, since no index starts
  with the queue;
- the counts per queue and state are capped (at most COUNT_LIMIT + 1 rows each), as the
  lists' counts are, and each is a range of the claim index;
- running jobs are the exception: on PostgreSQL the claim index leaves them out (a claim
  then writes nothing there; migration 0019), and they are few (at most the workers'
  concurrency, and those whose lock ran out), so their queues and counts per queue are one
  grouped read of at most COUNT_LIMIT + 1 of them, through the running jobs' index;
- the oldest due job's wait and the runs of the last hour are one query each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..conf import settings
from ..models import DbNow, Job, JobRun, JobState, Pause, PauseKind
from ..registry import registry
from .changelist import COUNT_LIMIT, CountAtLeast
from .overview import FAILED_OUTCOMES

MAX_VALUES = 200  # distinct queues or names listed; more would make the filter unreadable
THROUGHPUT_SPAN = timedelta(hours=1)
# The admin states counted per queue, in the order of the page's columns.
QUEUE_STATES = ("due", "scheduled", "running", "succeeded", "failed", "disabled")


def distinct_values(queryset: QuerySet[Any], column: str, limit: int = MAX_VALUES) -> list[str]:
    """The distinct values of `column` in `queryset`, one index probe each (a loose scan)."""
    values: list[str] = []
    ordered = queryset.order_by(column).values_list(column, flat=True)
    while len(values) < limit:
        rest = ordered.filter(**{f"{column}__gt": values[-1]}) if values else ordered
        found = list(rest[:1])
        if not found:
            break
        values.append(found[0])
    return values


# The states the claim index holds on PostgreSQL (migration 0019), each read by its ranges.
INDEXED_STATES = tuple(state for state in JobState.values if state != JobState.RUNNING)


def job_queues(using: str, running: dict[str, RunningCount] | None = None) -> list[str]:
    """Every queue that holds a job: through the claim index (state, enabled, queue, ...)
    for each state it holds, and from the few running jobs for theirs."""
    jobs = Job.objects.using(using)
    found = set(running_by_queue(using) if running is None else running)
    for state in INDEXED_STATES:
        for enabled in (True, False):
            found.update(distinct_values(jobs.filter(state=state, enabled=enabled), "queue"))
    return sorted(found)[:MAX_VALUES]


@dataclass
class RunningCount:
    running: int = 0
    disabled: int = 0  # of those, the disabled ones


def running_by_queue(using: str) -> dict[str, RunningCount]:
    """The running jobs of each queue (and the disabled ones among them), from one read of at
    most COUNT_LIMIT + 1 running jobs: past that, every count is "at least"."""
    rows = (
        Job.objects.using(using)
        .filter(state=JobState.RUNNING)
        .order_by()
        .values_list("queue", "enabled")[: COUNT_LIMIT + 1]
    )
    read = list(rows)
    found: dict[str, RunningCount] = {}
    for queue, enabled in read:
        count = found.setdefault(queue, RunningCount())
        count.running += 1
        count.disabled += not enabled
    if len(read) > COUNT_LIMIT:
        for count in found.values():
            count.running, count.disabled = (
                CountAtLeast(count.running),
                CountAtLeast(count.disabled) if count.disabled else 0,
            )
    return found


def registered_queues() -> set[str]:
    """The queues the code declares: each job definition's, and the default one."""
    return {definition.queue for definition in registry} | {settings.DEFAULT_QUEUE}


def job_names(using: str) -> list[str]:
    """Every name that a job has, through the (name, id) index."""
    return distinct_values(Job.objects.using(using), "name")


def run_names(using: str) -> list[str]:
    """Every job name that a run has, through the (job_name, started_at) index."""
    return distinct_values(JobRun.objects.using(using), "job_name")


def capped_count(queryset: QuerySet[Any]) -> int:
    """How many rows, counting at most COUNT_LIMIT + 1 of them (shown as "10,000+")."""
    found = queryset.order_by().values("pk")[: COUNT_LIMIT + 1].count()
    return CountAtLeast(COUNT_LIMIT) if found > COUNT_LIMIT else found


def _queue_condition(key: str, queue: str) -> Q:
    """One admin state of one queue (but its running jobs), as ranges of the claim index."""
    both = [True, False]
    if key == "due":
        return Q(state=JobState.SCHEDULED, enabled=True, queue=queue, next_run_at__lte=DbNow())
    if key == "scheduled":  # waiting for a later time, or disabled (as the list's filter)
        return Q(state=JobState.SCHEDULED, enabled__in=both, queue=queue) & ~Q(
            enabled=True, next_run_at__lte=DbNow()
        )
    if key == "disabled":  # the running ones are counted by running_by_queue()
        return Q(state__in=INDEXED_STATES, enabled=False, queue=queue)
    return Q(state=key, enabled__in=both, queue=queue)


def _queue_counts(jobs: QuerySet[Any], queue: str, running: RunningCount) -> dict[str, int]:
    """A queue's capped count of each admin state; its running jobs are counted already."""
    counts = {
        key: capped_count(jobs.filter(_queue_condition(key, queue)))
        for key in QUEUE_STATES
        if key != "running"
    }
    counts["running"] = running.running
    disabled = [counts["disabled"], running.disabled]
    capped = sum(disabled) > COUNT_LIMIT or any(isinstance(c, CountAtLeast) for c in disabled)
    counts["disabled"] = CountAtLeast(min(sum(disabled), COUNT_LIMIT)) if capped else sum(disabled)
    return {key: counts[key] for key in QUEUE_STATES}


@dataclass
class QueueRow:
    queue: str
    counts: dict[str, int] = field(default_factory=dict)
    oldest_due_at: datetime | None = None
    runs: int = 0  # runs started within THROUGHPUT_SPAN
    failed_runs: int = 0
    paused: bool = False

    @property
    def oldest_wait(self) -> timedelta | None:
        if self.oldest_due_at is None:
            return None
        return max(timedelta(0), timezone.now() - self.oldest_due_at)


def queue_rows(using: str, now: datetime | None = None) -> list[QueueRow]:
    """Per queue that holds jobs: capped counts by state, oldest due job, last hour's runs."""
    now = now or timezone.now()
    jobs = Job.objects.using(using)
    paused = set(
        Pause.objects.using(using)
        .filter(kind=PauseKind.QUEUE)
        .values_list("value", flat=True)[:MAX_VALUES]
    )
    running = running_by_queue(using)
    queues = set(job_queues(using, running)) | registered_queues() | paused
    shown = sorted(queues)[:MAX_VALUES]
    rows = {queue: QueueRow(queue, paused=queue in paused) for queue in shown}
    for queue, row in rows.items():
        row.counts = _queue_counts(jobs, queue, running.get(queue, RunningCount()))
        if row.counts["due"]:
            # MIN of an expression: PostgreSQL would answer MIN(next_run_at) by walking the
            # next_run_at index from its oldest entry, across every finished job (300 ms at
            # a million jobs), instead of the queue's range of the claim index (3 ms).
            row.oldest_due_at = jobs.filter(_queue_condition("due", queue)).aggregate(
                at=Min(Coalesce("next_run_at", DbNow()))
            )["at"]
    # Each run's queue by a lookup of its job's primary key: a join made PostgreSQL hash
    # every job (a scan of the table, 250 ms at a million jobs) for the hour's 12,000 runs.
    queue_of_job = Subquery(
        Job.objects.using(using).filter(pk=OuterRef("job_id")).order_by().values("queue")[:1]
    )
    for group in (
        JobRun.objects.using(using)
        .filter(started_at__gte=now - THROUGHPUT_SPAN, job__isnull=False)
        .order_by()
        .annotate(job_queue=queue_of_job)
        .values("job_queue")
        .annotate(
            runs=Count("pk"),
            failed=Count("pk", filter=Q(outcome__in=FAILED_OUTCOMES)),
        )
    ):
        found = rows.get(group["job_queue"])
        if found is not None:
            found.runs, found.failed_runs = group["runs"], group["failed"]
    return list(rows.values())
