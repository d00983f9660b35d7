"""The overview page's data: counts per job name, runs per interval as an SVG chart, workers.

Everything is counted by the database with one aggregate query each, never by loading rows;
on a big table the counts come from those the workers keep (stats.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..conf import settings
from ..models import DbNow, Job, JobState, Worker
from ..stats import FAILED_OUTCOMES as FAILED_OUTCOMES  # queues.py reads it here
from ..stats import Counted, job_counts, run_groups
from .display import STATE_LABELS, count_text, format_duration

COUNT_KEYS = list(STATE_LABELS)
# range -> (span, bucket width, label)
RANGES: dict[str, tuple[timedelta, timedelta, Any]] = {
    "hour": (timedelta(hours=1), timedelta(minutes=5), _("Last hour")),
    "day": (timedelta(days=1), timedelta(hours=1), _("Last day")),
}
WORKERS_SHOWN = 100


def counts_by_name(using: str) -> tuple[list[dict[str, Any]], dict[str, int], Counted]:
    """Per job name, how many jobs are in each admin state, and where the counts come from.

    The database groups by (name, state, enabled, due, recurring), at most a few hundred
    groups, with one count each; the admin states are summed from those groups here (one
    grouping key per row is about half the work of one conditional count per state). Below
    STATS_LIVE_BELOW jobs this request counts them (exact); on a bigger table it reads the
    groups that a worker counted at most STATS_EVERY seconds ago (stats.py), since counting a
    million jobs takes most of a second (docs/performance.md, "Admin at 1M jobs").
    """
    grouped, counted = job_counts(using)
    by_name: dict[str, dict[str, Any]] = {}
    for group in grouped:
        row = by_name.setdefault(
            group["name"], {"name": group["name"], "total": 0, **dict.fromkeys(COUNT_KEYS, 0)}
        )
        n = group["n"]
        row["total"] += n
        if group["is_due"]:
            row["due"] += n
        elif group["state"] == JobState.SCHEDULED:
            row["scheduled"] += n
        elif group["state"] in row:
            row[group["state"]] += n
        if group["is_recurring"]:
            row["recurring"] += n
        if not group["enabled"]:
            row["disabled"] += n
    rows = [by_name[name] for name in sorted(by_name)]
    totals = {key: sum(row[key] for row in rows) for key in [*COUNT_KEYS, "total"]}
    return rows, totals, counted


def counted_text(counted: Counted) -> str:
    """Under the counts: how old the workers' count is, or why this request counted itself."""
    if not counted.live and counted.age is not None:
        return _(
            "Counted by the workers %(age)s ago: a table of %(jobs)s jobs or more is counted "
            "every %(every)s s by one worker, not at every request."
        ) % {
            "age": format_duration(counted.age),
            "jobs": count_text(settings.STATS_LIVE_BELOW),
            "every": f"{settings.STATS_EVERY:g}",
        }
    if not counted.stale:
        return ""
    if counted.age is None:
        return str(_("Counted now: no worker has counted the jobs yet (are workers running?)."))
    return _(
        "Counted now: the workers last counted the jobs %(age)s ago (are workers running?)."
    ) % {"age": format_duration(counted.age)}


def in_progress_count() -> Coalesce:
    """A worker's running jobs, counted in the query that lists the workers."""
    running = (
        Job.objects.filter(state=JobState.RUNNING, locked_by=OuterRef("worker_id"))
        .order_by()
        .values("locked_by")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(running, output_field=IntegerField()), Value(0))


def is_alive() -> ExpressionWrapper:
    """Whether a worker row's own expiry has not passed, by the database's clock."""
    return ExpressionWrapper(Q(expires_at__gte=DbNow()), output_field=BooleanField())


def live_workers(using: str) -> QuerySet[Worker]:
    return (
        Worker.objects.using(using)
        .alive()
        .annotate(in_progress=in_progress_count())
        .order_by("hostname", "pid")[:WORKERS_SHOWN]
    )


@dataclass
class Bucket:
    start: datetime
    end: datetime
    runs: int
    failures: int


def run_buckets(using: str, range_key: str, now: datetime | None = None) -> list[Bucket]:
    """Runs started and failed per interval, counted by the database in one GROUP BY query.

    Runs are grouped by their minute (or hour) and the groups summed into the chart's
    intervals here: at most 60 or 24 rows come back, and the database evaluates one
    truncation per run instead of two conditions per interval. The counts read started_at
    and outcome only, which the chart index of migration 0007 holds (on PostgreSQL, since
    0016, started_at alone: the outcome is read from the table, so that a run's finish is a
    HOT update). With STATS_LIVE_BELOW runs or more in the range, the minutes that the workers
    have counted (stats.py) are read from their per-minute rows, and only the newest counted
    live.
    """
    span, step = RANGES[range_key][:2]
    now = now or timezone.now()
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    end = epoch + ((now - epoch) // step + 1) * step  # the end of the interval holding now
    start = end - span
    bounds = [(start + i * step, start + (i + 1) * step) for i in range(span // step)]
    kind = "hour" if step >= timedelta(hours=1) else "minute"  # divides every step above
    grouped = run_groups(using, start, end, kind)
    runs, failures = [0] * len(bounds), [0] * len(bounds)
    for row in grouped:
        i = (row["at"] - start) // step
        if 0 <= i < len(bounds):
            runs[i] += row["runs"] or 0
            failures[i] += row["failures"] or 0
    return [Bucket(low, high, runs[i], failures[i]) for i, (low, high) in enumerate(bounds)]


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # "runs" or "failures"
    title: str


@dataclass
class Chart:
    """Geometry of the runs chart, computed here so the template only draws it."""

    width: int
    height: int
    plot_left: int
    plot_bottom: int
    plot_right: int
    bars: list[Bar] = field(default_factory=list)
    grid: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    labels: list[tuple[float, str]] = field(default_factory=list)  # (x, text)
    total_runs: int = 0
    total_failures: int = 0
    summary: str = ""
    timezone: str = ""  # the zone of the axis' times


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least value (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def axis_text(value: int) -> str:
    """A count short enough for the chart's axis (at most 5 characters): 9,999, 20k, 1.5M."""
    if value < 10_000:
        return count_text(value)
    if value < 1_000_000:
        return f"{value / 1000:g}k"
    return f"{value / 1_000_000:g}M"


def build_chart(buckets: list[Bucket], range_key: str) -> Chart:
    width, height = 720, 220
    left, right, top, bottom = 44, 706, 12, 184
    chart = Chart(width, height, plot_left=left, plot_bottom=bottom, plot_right=right)
    peak = nice_ceiling(max((b.runs for b in buckets), default=0))
    scale = (bottom - top) / peak
    slot = (right - left) / max(len(buckets), 1)
    bar = slot * 0.38
    label_every = 2 if range_key == "hour" else 3
    for i, bucket in enumerate(buckets):
        x = left + i * slot + slot * 0.1
        start, end = timezone.localtime(bucket.start), timezone.localtime(bucket.end)
        period = f"{date_format(start, 'H:i')}\u2013{date_format(end, 'H:i')}"
        title = ngettext(
            "%(period)s: %(runs)d run, %(failures)d failed",
            "%(period)s: %(runs)d runs, %(failures)d failed",
            bucket.runs,
        ) % {"period": period, "runs": bucket.runs, "failures": bucket.failures}
        for offset, kind, value in ((0.0, "runs", bucket.runs), (bar, "failures", bucket.failures)):
            h = value * scale
            chart.bars.append(
                Bar(
                    round(x + offset, 1),
                    round(bottom - h, 1),
                    round(bar, 1),
                    round(h, 1),
                    kind,
                    title,
                )
            )
        if i % label_every == 0:
            chart.labels.append((round(left + i * slot, 1), date_format(start, "H:i")))
        chart.total_runs += bucket.runs
        chart.total_failures += bucket.failures
    chart.grid = [
        (round(bottom - v * scale, 1), axis_text(v)) for v in sorted({0, peak // 2, peak})
    ]
    if buckets:
        chart.timezone = timezone.localtime(buckets[-1].end).tzname() or ""
    chart.summary = ngettext(
        "%(runs)d run, %(failures)d failed, %(range)s.",
        "%(runs)d runs, %(failures)d failed, %(range)s.",
        chart.total_runs,
    ) % {
        "runs": chart.total_runs,
        "failures": chart.total_failures,
        "range": str(RANGES[range_key][2]).lower(),
    }
    return chart
