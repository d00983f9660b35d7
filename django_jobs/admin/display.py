"""HTML fragments of the admin: state badges, relative times, durations, progress, JSON.

Every value goes through format_html, so names, data and errors are escaped wherever shown.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..exceptions import InvalidSchedule
from ..models import DbNow, Job, JobState
from ..schedules import parse_schedule

EMPTY = "-"

# The states the admin filters and counts by. "scheduled" and "due" split the waiting jobs:
# due ones may run now; scheduled ones wait for a later time (or are disabled).
STATE_LABELS = {
    "scheduled": gettext_lazy("scheduled"),
    "due": gettext_lazy("due"),
    "running": gettext_lazy("running"),
    "succeeded": gettext_lazy("succeeded"),
    "failed": gettext_lazy("failed"),
    "recurring": gettext_lazy("recurring"),
    "disabled": gettext_lazy("disabled"),
}


def state_q(key: str) -> Q:
    """The condition of one admin state, by the database's clock."""
    due = Q(state=JobState.SCHEDULED, enabled=True, next_run_at__lte=DbNow())
    if key == "scheduled":
        return Q(state=JobState.SCHEDULED) & ~due
    if key == "due":
        return due
    if key == "recurring":
        return ~Q(schedule="")
    if key == "disabled":
        return Q(enabled=False)
    return Q(state=key)


def display_state(job: Job) -> str:
    """The state shown on a badge: "due" for a waiting job whose time has come."""
    return "due" if job.is_due else str(job.state)


def badge(key: str, label: Any) -> SafeString:
    """A coloured badge that carries its meaning as text too (for colour-blind users)."""
    return format_html('<span class="djj-badge djj-{}">{}</span>', key, label)


def state_badges(job: Job) -> SafeString:
    key = display_state(job)
    label = STATE_LABELS.get(key) or job.get_state_display()
    badges = [badge(key, label)]
    if not job.enabled:
        badges.append(badge("disabled", STATE_LABELS["disabled"]))
    return format_html_join(" ", "{}", ((b,) for b in badges))


def exact_time(value: datetime) -> str:
    """The instant in the active timezone, with the timezone's abbreviation."""
    local = timezone.localtime(value)
    return f"{date_format(local, 'DATETIME_FORMAT')} {local.tzname()}"


def relative_text(value: datetime, now: datetime | None = None) -> str:
    """ "in 5 minutes" or "5 minutes ago"."""
    now = now or timezone.now()
    if abs(value - now) < timedelta(minutes=1):
        return _("in under a minute") if value > now else _("under a minute ago")
    if value > now:
        return _("in %(time)s") % {"time": timeuntil(value, now, depth=1)}
    return _("%(time)s ago") % {"time": timesince(value, now, depth=1)}


def relative_time(value: datetime | None, now: datetime | None = None) -> SafeString | str:
    """A relative time with the exact time on hover."""
    if value is None:
        return EMPTY
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        exact_time(value),
        relative_text(value, now),
    )


def format_duration(value: timedelta | None) -> str:
    """A duration in the largest sensible units: "0.42 s", "3 min 5 s", "2 h 10 min"."""
    if value is None:
        return EMPTY
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def last_duration(job: Job) -> timedelta | None:
    """How long the last finished run took; None while a run is in progress."""
    started, finished = job.last_started_at, job.last_finished_at
    if started is None or finished is None or finished < started:
        return None
    return finished - started


def progress_bar(fraction: float | None, message: str = "") -> SafeString | str:
    if fraction is None:
        return EMPTY
    percent = round(fraction * 100)
    title = f"{percent}% {message}".strip()
    return format_html(
        '<span class="djj-progress" title="{}"><progress value="{}" max="100">{}%</progress> '
        "{}%</span>",
        title,
        percent,
        percent,
        percent,
    )


def schedule_words(job: Job) -> SafeString | str:
    """A recurring job's schedule in words, with the expression on hover."""
    if not job.schedule:
        return EMPTY
    try:
        words = parse_schedule(job.schedule).describe()
    except InvalidSchedule:
        words = _("invalid schedule")
    if job.timezone != "UTC":
        words = f"{words} ({job.timezone})"
    return format_html('<span title="{}">{}</span>', job.schedule, words)


def pretty_json(value: Any) -> SafeString:
    """JSON indented for reading; the text is escaped."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="djj-pre">{}</pre>', text)


def preformatted(text: str) -> SafeString | str:
    if not text:
        return EMPTY
    return format_html('<pre class="djj-pre">{}</pre>', text)


def first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"
