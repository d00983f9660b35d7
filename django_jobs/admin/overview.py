"""The overview page's data: counts per job name, runs per interval as an SVG chart, workers.

Everything is counted by the database with one aggregate query each, never by loading rows.
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
from django.db.models.functions import Coalesce, Trunc
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import DbNow, Job, JobRun, JobState, RunOutcome, Worker
from .display import STATE_LABELS, count_text, state_q

COUNT_KEYS = list(STATE_LABELS)
FAILED_OUTCOMES = [RunOutcome.FAILED, RunOutcome.ORPHANED]
# range -> (span, bucket width, label)
RANGES: dict[str, tuple[timedelta, timedelta, Any]] = {
    "hour": (timedelta(hours=1), timedelta(minutes=5), _("Last hour")),
    "day": (timedelta(days=1), timedelta(hours=1), _("Last day")),
}
WORKERS_SHOWN = 100


def counts_by_name(using: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per job name, how many jobs are in each admin state: one GROUP BY query.

    The database groups by (name, state, enabled, due, recurring), at most a few hundred
    groups, with one count each; the admin states are summed from those groups here (one
    grouping key per row is about half the work of one conditional count per state). It
    still reads every job: at 1,000,000 jobs that is about half a second on PostgreSQL
    (docs/performance.md, "Admin at 1M jobs").
    """
    grouped = (
        Job.objects.using(using)
        .order_by()
        .values(
            "name",
            "state",
            "enabled",
            is_due=ExpressionWrapper(state_q("due"), output_field=BooleanField()),
            is_recurring=ExpressionWrapper(state_q("recurring"), output_field=BooleanField()),
        )
        .annotate(n=Count("name"))
    )
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
    return rows, totals


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
    and outcome only, which the chart index of migration 0007 holds, so PostgreSQL reads that
    index alone.
    """
    span, step = RANGES[range_key][:2]
    now = now or timezone.now()
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    end = epoch + ((now - epoch) // step + 1) * step  # the end of the interval holding now
    start = end - span
    bounds = [(start + i * step, start + (i + 1) * step) for i in range(span // step)]
    kind = "hour" if step >= timedelta(hours=1) else "minute"  # divides every step above
    grouped = (
        JobRun.objects.using(using)
        .filter(started_at__gte=start, started_at__lt=end)
        .order_by()
        .values(at=Trunc("started_at", kind, tzinfo=UTC))
        .annotate(
            runs=Count("started_at"),
            failures=Count("started_at", filter=Q(outcome__in=FAILED_OUTCOMES)),
        )
    )
    runs, failures = [0] * len(bounds), [0] * len(bounds)
    for row in grouped:
        i = (row["at"] - start) // step
        if 0 <= i < len(bounds):
            runs[i] += row["runs"]
            failures[i] += row["failures"]
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
