"""The overview's numbers on a big table, kept by the workers instead of counted per request.

Counting a million jobs by name and state, or the runs of a day, takes most of a second on
PostgreSQL whatever the index (docs/performance.md). So one worker of the cluster does it
every DJANGO_JOBS["STATS_EVERY"] seconds, and the overview reads the result:

- **Jobs**: a snapshot of the overview's GROUP BY (name, state, enabled, due, recurring) in
  JobCount, dated by the database's clock (StatsMark.counted_at).
- **Runs**: RunCount holds, per minute of started_at (UTC) and outcome, how many runs there
  are. Each refresh counts the minutes from the last one's `runs_through` up to one minute
  ago (runs are written in short claim transactions: a minute that old has all its rows), and
  counts again every minute that still held a running run. So a finished run is counted under
  its final outcome at the first refresh after it ends; until then it counts as a run, not
  yet as a failure, as the live count would have it while it ran. The chart adds a live count
  of the runs after `runs_through`, so it is complete up to the moment of the request. One
  row escapes it: the attempt that recovery records, with its claim's start time, for a worker
  lost between its claim and writing its run (claiming/recovery.py), once that start is
  already folded; it is in the run list, not in the chart.

Below DJANGO_JOBS["STATS_LIVE_BELOW"] jobs (or runs in the chart's range) the overview still
counts itself, exact at every request; so does it when no worker has counted lately.

The turn is a compare-and-set on StatsMark.taken_at by the database's clock: among the
workers that look at once, one wins and the others find the turn taken until the period ends.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet, Sum
from django.db.models.functions import Trunc

from .claiming.sql import database_now
from .conf import settings
from .db import DbNow, db_now_plus, write_transaction
from .models import Job, JobCount, JobRun, RunCount, RunOutcome, StatsMark, due_q
from .retention import parse_age

logger = logging.getLogger(__name__)

MARK = "overview"  # the key of the one StatsMark row
MINUTE = timedelta(minutes=1)
# Runs are counted up to this long before the refresh: a claim's transaction stamps its run
# with the database's clock when it begins, and commits a moment later.
RUNS_SETTLE = timedelta(minutes=1)
# The chart's longest range is a day: runs are folded into minutes from a day back at most,
# and minutes older than two days are deleted (sooner with a shorter RETENTION).
RUNS_FIRST = timedelta(days=1)
KEEP_MINUTES = timedelta(days=2)
RECOUNT_MINUTES = 200  # minutes with a running run counted again per refresh, oldest first
FAILED_OUTCOMES = [RunOutcome.FAILED, RunOutcome.ORPHANED]


def stale_after(every: float | None = None) -> timedelta:
    """How old the workers' job counts may be before the overview counts itself again."""
    every = settings.STATS_EVERY if every is None else every
    return timedelta(seconds=2 * every + 60)


def job_groups(using: str) -> QuerySet[Any, Any]:
    """The jobs grouped by (name, state, enabled, due, recurring), one count each."""
    # The admin's "due" and "recurring" states (admin/display.py's state_q), by the database's
    # clock; the admin itself is not imported, since a worker may run without it.
    return (
        Job.objects.using(using)
        .order_by()
        .values(
            "name",
            "state",
            "enabled",
            is_due=ExpressionWrapper(due_q(), output_field=BooleanField()),
            is_recurring=ExpressionWrapper(~Q(schedule=""), output_field=BooleanField()),
        )
        .annotate(n=Count("name"))
    )


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


# The workers' side


def take_turn(using: str, every: float) -> bool:
    """Whether this caller keeps the numbers now: a compare-and-set by the database's clock."""
    marks = StatsMark.objects.using(using)
    turn_is_free = Q(taken_at__isnull=True) | Q(taken_at__lte=db_now_plus(-every))
    if marks.filter(turn_is_free, key=MARK).update(taken_at=DbNow()):
        return True
    if marks.filter(key=MARK).exists():
        return False
    marks.bulk_create([StatsMark(key=MARK)], ignore_conflicts=True)  # the first refresh ever
    return bool(marks.filter(turn_is_free, key=MARK).update(taken_at=DbNow()))


def refresh(using: str | None = None, every: float | None = None) -> bool:
    """Count the jobs and fold the runs if no worker did in the last `every` seconds.

    Returns whether this call did (False: another worker had the turn).
    """
    using = using or settings.DATABASE
    every = settings.STATS_EVERY if every is None else every
    if not take_turn(using, every):
        return False
    count_jobs(using)
    fold_runs(using)
    return True


def count_jobs(using: str) -> int:
    """Replace the snapshot of the job counts; returns its number of groups."""
    counted_at = database_now(using)  # before the count: its age is never understated
    groups = [JobCount(count=group.pop("n"), **group) for group in job_groups(using)]
    with write_transaction(using):
        JobCount.objects.using(using).all().delete()
        JobCount.objects.using(using).bulk_create(groups, batch_size=500)
        StatsMark.objects.using(using).filter(key=MARK).update(counted_at=counted_at)
    return len(groups)


def fold_runs(using: str) -> int:
    """Count the runs of the minutes since the last refresh (and of those that held a running
    run) into RunCount; delete minutes past keeping. Returns the minutes written."""
    now = database_now(using)
    mark = StatsMark.objects.using(using).filter(key=MARK).first()
    through = floor_minute(now - RUNS_SETTLE)
    start = floor_minute(now - RUNS_FIRST)
    if mark is not None and mark.runs_through is not None:
        start = max(start, min(mark.runs_through, through))
    recount = list(
        RunCount.objects.using(using)
        .filter(outcome=RunOutcome.RUNNING, minute__lt=start, count__gt=0)
        .order_by("minute")
        .values_list("minute", flat=True)[:RECOUNT_MINUTES]
    )
    spans = Q(started_at__gte=start, started_at__lt=through)
    for minute in recount:
        spans |= Q(started_at__gte=minute, started_at__lt=minute + MINUTE)
    counted = (
        JobRun.objects.using(using)
        .filter(spans)
        .order_by()
        .values("outcome", at=Trunc("started_at", "minute", tzinfo=UTC))
        .annotate(n=Count("pk"))
    )
    rows = [RunCount(minute=row["at"], outcome=row["outcome"], count=row["n"]) for row in counted]
    redone = Q(minute__gte=start, minute__lt=through) | Q(minute__in=recount)
    with write_transaction(using):
        RunCount.objects.using(using).filter(redone).delete()
        RunCount.objects.using(using).bulk_create(rows, batch_size=500)
        StatsMark.objects.using(using).filter(key=MARK).update(runs_through=through)
        purge_minutes(now - keep_minutes(), using)
    return len({row.minute for row in rows})


def keep_minutes() -> timedelta:
    """How long per-minute run counts are kept: two days, or RETENTION if that is shorter."""
    if settings.RETENTION is None:
        return KEEP_MINUTES
    return min(KEEP_MINUTES, parse_age(settings.RETENTION))


def purge_minutes(cutoff: datetime, using: str) -> int:
    """Delete the per-minute run counts of minutes wholly before `cutoff`, as their runs go."""
    deleted, _ = RunCount.objects.using(using).filter(minute__lte=cutoff - MINUTE).delete()
    return deleted


class StatsKeeper:
    """A worker's thread that offers every half period to keep the overview's numbers.

    Its own thread (and connection), as the alerts' watcher: a count of a million jobs must
    never delay the heartbeat. Errors are logged and the next period tries again.
    """

    def __init__(self, using: str, stopping: threading.Event) -> None:
        self.using, self.stopping = using, stopping

    def start(self) -> None:
        threading.Thread(target=self._run, name="django_jobs-stats", daemon=True).start()

    def _run(self) -> None:
        every = settings.STATS_EVERY
        wait = random.uniform(0, every / 2)  # spread the looks of workers started together
        while not self.stopping.wait(wait):
            try:
                refresh(self.using, every)
            except Exception as exc:
                logger.warning(
                    "Counting jobs for the overview failed (%s); trying again later.", exc
                )
                connections[self.using].close()
            wait = every / 2
        connections.close_all()


# The overview's side


@dataclass
class Counted:
    """Where the overview's job counts come from."""

    live: bool  # counted by this request
    counted_at: datetime | None = None  # the workers' count, by the database's clock
    age: timedelta | None = None  # how old the workers' count is (None: counted live)
    stale: bool = False  # a big table counted live: the workers' count was missing or old


def capped_count(queryset: QuerySet[Any], cap: int) -> int:
    return queryset.order_by().values("pk")[:cap].count()


def read_mark(using: str) -> tuple[StatsMark | None, datetime | None]:
    """The mark row and the database's clock, in one query."""
    row = (
        StatsMark.objects.using(using)
        .filter(key=MARK)
        .annotate(db_now=DbNow())
        .values("counted_at", "runs_through", "db_now")
        .first()
    )
    if row is None:
        return None, None
    now = row["db_now"]
    if isinstance(now, str):  # SQLite's clock comes back as text
        now = datetime.fromisoformat(now)
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return StatsMark(key=MARK, counted_at=row["counted_at"], runs_through=row["runs_through"]), now


def job_counts(using: str) -> tuple[Iterable[Mapping[str, Any]], Counted]:
    """The job groups of the overview: counted now on a small table, else the workers' count."""
    below = settings.STATS_LIVE_BELOW
    if below and capped_count(Job.objects.using(using), below) < below:
        return job_groups(using), Counted(live=True)
    mark, now = read_mark(using)
    if mark is None or mark.counted_at is None or now is None:
        return job_groups(using), Counted(live=True, stale=True)
    age = max(timedelta(0), now - mark.counted_at)
    if age > stale_after():
        return job_groups(using), Counted(
            live=True, counted_at=mark.counted_at, age=age, stale=True
        )
    groups = JobCount.objects.using(using).values(
        "name", "state", "enabled", "is_due", "is_recurring", n=Sum("count")
    )
    return groups, Counted(live=False, counted_at=mark.counted_at, age=age)


def run_groups(using: str, start: datetime, end: datetime, kind: str) -> list[Mapping[str, Any]]:
    """Runs and failures per minute or hour (`kind`) started in [start, end), as dicts with
    at, runs and failures: the workers' minutes where they have counted, live after that."""
    live = JobRun.objects.using(using).filter(started_at__gte=start, started_at__lt=end)
    below = settings.STATS_LIVE_BELOW
    through = None
    if not below or capped_count(live, below) >= below:
        mark, _now = read_mark(using)
        through = mark.runs_through if mark is not None else None
    if through is None or through <= start:
        return list(_live_groups(live, kind))
    folded_end = min(through, end)
    rows: list[Mapping[str, Any]] = list(
        RunCount.objects.using(using)
        .filter(minute__gte=start, minute__lt=folded_end)
        .order_by()
        .values(at=Trunc("minute", kind, tzinfo=UTC))
        .annotate(
            runs=Sum("count"),
            failures=Sum("count", filter=Q(outcome__in=FAILED_OUTCOMES)),
        )
    )
    if folded_end < end:
        rows.extend(_live_groups(live.filter(started_at__gte=folded_end), kind))
    return rows


def _live_groups(runs: QuerySet[JobRun], kind: str) -> QuerySet[Any, Any]:
    return (
        runs.order_by()
        .values(at=Trunc("started_at", kind, tzinfo=UTC))
        .annotate(
            runs=Count("started_at"),
            failures=Count("started_at", filter=Q(outcome__in=FAILED_OUTCOMES)),
        )
    )
