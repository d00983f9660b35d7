"""HTML fragments of the admin: state badges, relative times, durations, progress, JSON.

Every value goes through format_html, so names, data and errors are escaped wherever shown.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone
from django.utils.formats import date_format, number_format, time_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _

from ..exceptions import InvalidSchedule
from ..models import Job, JobState, due_q
from ..schedules import parse_schedule
from .changelist import CountAtLeast

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
# The state filter offers one more: jobs waiting for their retry (also scheduled or due).
FILTER_LABELS = {
    **dict(list(STATE_LABELS.items())[:2]),
    "retrying": gettext_lazy("retrying"),
    **dict(list(STATE_LABELS.items())[2:]),
    # Recurring jobs that run late or keep failing (alerts.py, as jobstatus and the metrics).
    "attention": gettext_lazy("needs attention"),
}


def state_q(key: str) -> Q:
    """The condition of one admin state, by the database's clock."""
    due = due_q()
    if key == "scheduled":
        return Q(state=JobState.SCHEDULED) & ~due
    if key == "due":
        return due
    if key == "recurring":
        return ~Q(schedule="")
    if key == "disabled":
        return Q(enabled=False)
    if key == "retrying":
        return Q(state=JobState.SCHEDULED, attempts__gt=0)
    if key == "attention":
        from ..alerts import alert_q  # alerts reads the models, loaded after the admin module

        return alert_q()
    return Q(state=key)


def is_retrying(job: Job) -> bool:
    """Whether the job waits for another attempt after a failed (or orphaned) one.

    A worker claims a job by adding one to its attempts; a success, a final failure, a
    retry from the admin and a run-now of a finished job set them back to 0. So a waiting
    job with attempts made is waiting for its retry.
    """
    return job.state == JobState.SCHEDULED and job.attempts > 0


def display_state(job: Job) -> str:
    """The state shown on a badge: "retrying" for a job waiting for its next attempt, "due"
    for a waiting job whose time has come."""
    if is_retrying(job):
        return "retrying"
    return "due" if job.is_due else str(job.state)


def retry_text(job: Job, now: datetime | None = None) -> str:
    """ "attempt 2 of 3, next try in 40 s" for a job waiting for its retry."""
    attempt = {"attempt": job.attempts + 1, "max": max(job.max_attempts, job.attempts + 1)}
    if not job.enabled:
        return _("attempt %(attempt)d of %(max)d, not while disabled") % attempt
    if job.next_run_at is None:
        return _("attempt %(attempt)d of %(max)d") % attempt
    try:
        wait = job.next_run_at - (now or timezone.now())
    except OverflowError:
        wait = timedelta.max
    if wait <= timedelta(0):
        return _("attempt %(attempt)d of %(max)d, due now") % attempt
    return _("attempt %(attempt)d of %(max)d, next try in %(wait)s") % {
        **attempt,
        "wait": format_duration(timedelta(seconds=math.ceil(wait.total_seconds()))),
    }


def badge(key: str, label: Any) -> SafeString:
    """A coloured badge that carries its meaning as text too (for colour-blind users)."""
    return format_html('<span class="djj-badge djj-{}">{}</span>', key, label)


def state_badges(job: Job) -> SafeString:
    key = display_state(job)
    label = FILTER_LABELS.get(key) or job.get_state_display()
    badges = [badge(key, label)]
    if not job.enabled:
        badges.append(badge("disabled", STATE_LABELS["disabled"]))
    shown = format_html_join(" ", "{}", ((b,) for b in badges))
    if key == "retrying":
        return format_html('{} <span class="djj-note">{}</span>', shown, retry_text(job))
    return shown


def count_text(count: int) -> str:
    """A count with thousands separators ("12,345"), whatever USE_THOUSAND_SEPARATOR says.

    A count that stopped at its cap reads "10,000+".
    """
    text = number_format(int(count), force_grouping=True)
    if isinstance(count, CountAtLeast):
        return _("%(count)s+") % {"count": text}
    return text


def utc_text(value: datetime) -> str:
    """The instant in UTC as "9999-12-31 23:59:59 UTC": the fallback of every time shown."""
    try:
        return f"{value.astimezone(UTC).isoformat(sep=' ', timespec='seconds')[:19]} UTC"
    except (OverflowError, ValueError):
        return value.isoformat()


def exact_time(value: datetime) -> str:
    """The instant in the active timezone, to the second, with the timezone's abbreviation:
    "Nov. 30, 2026, 13:31:05 CET".

    Near year 1 and year 9999 the local time may fall outside the calendar Python knows
    (OverflowError): the instant is then shown in UTC, where the database stored it.
    """
    try:
        local = timezone.localtime(value)
        return (
            f"{date_format(local, 'DATE_FORMAT')}, {time_format(local, 'H:i:s')} {local.tzname()}"
        )
    except (OverflowError, ValueError):
        return utc_text(value)


def exact_time_or_empty(value: datetime | None) -> str:
    return EMPTY if value is None else exact_time(value)


def relative_text(value: datetime, now: datetime | None = None) -> str:
    """ "in 5 minutes" or "5 minutes ago"."""
    now = now or timezone.now()
    try:
        if abs(value - now) < timedelta(minutes=1):
            return _("in under a minute") if value > now else _("under a minute ago")
        if value > now:
            return _("in %(time)s") % {"time": timeuntil(value, now, depth=1)}
        return _("%(time)s ago") % {"time": timesince(value, now, depth=1)}
    except (OverflowError, ValueError):
        return utc_text(value)


def relative_time(value: datetime | None, now: datetime | None = None) -> SafeString | str:
    """A relative time with the exact time on hover."""
    if value is None:
        return EMPTY
    return _time_element(value, relative_text(value, now))


def next_run_time(job: Job, now: datetime | None = None) -> SafeString | str:
    """When a job runs next: "in 5 minutes"; a disabled job never runs, whatever its time says."""
    if job.next_run_at is None:
        return EMPTY
    if not job.enabled:
        return _time_element(job.next_run_at, _("not while disabled"))
    return relative_time(job.next_run_at, now)


def _time_element(value: datetime, text: str) -> SafeString:
    """Text about an instant, with the exact instant on hover."""
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact_time(value), text
    )


def format_duration(value: timedelta | None) -> str:
    """A duration in the largest sensible units: "0.42 s", "3 min 5 s", "2 h 10 min".

    A negative one (a run whose finish was written by a clock behind its start's) keeps its
    sign.
    """
    if value is None:
        return EMPTY
    seconds = value.total_seconds()
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.2f} s" if seconds < 10 else f"{sign}{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours} h {minutes} min"


def last_duration(job: Job) -> timedelta | None:
    """How long the last finished run took; None while a run is in progress."""
    started, finished = job.last_started_at, job.last_finished_at
    if started is None or finished is None or finished < started:
        return None
    return finished - started


def progress_bar(fraction: float | None, message: str = "") -> SafeString | str:
    if fraction is None:
        return EMPTY
    if not math.isfinite(fraction):
        return str(fraction)  # NaN or infinity: only a row written by hand holds one
    percent = round(min(max(fraction, 0.0), 1.0) * 100)
    title = f"{percent}% {message}".strip()
    return format_html(
        '<span class="djj-progress" title="{}"><progress value="{}" max="100">{}%</progress> '
        "{}%</span>",
        title,
        percent,
        percent,
        percent,
    )


@functools.lru_cache(maxsize=256)
def _schedule_described(expression: str, language: str | None) -> str:
    """A schedule in words, parsed once per expression and language: a list page shows the
    same few schedules on many rows, and parsing a cron expression takes about a millisecond."""
    try:
        return str(parse_schedule(expression).describe())
    except InvalidSchedule:
        return str(_("invalid schedule"))


def schedule_words(job: Job) -> SafeString | str:
    """A recurring job's schedule in words, with the expression on hover."""
    if not job.schedule:
        return EMPTY
    words = _schedule_described(job.schedule, get_language())
    if job.timezone != "UTC":
        words = f"{words} ({job.timezone})"
    return format_html('<span title="{}">{}</span>', job.schedule, words)


STORED_TEXT_SHOWN = 10_000  # characters of a value Python cannot decode, shown as stored


def pretty_json(value: Any) -> SafeString:
    """JSON indented for reading; the text is escaped.

    A value nested too deeply for Python's recursion limit, or holding an integer too long
    to print, gets a placeholder instead of an error.
    """
    try:
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError) as exc:
        return _unreadable(exc)
    return format_html('<pre class="djj-pre">{}</pre>', text)


def stored_json(text: str | None) -> SafeString | str:
    """JSON text as the database returned it, indented; shown as stored if Python cannot read it.

    The admin reads a job's data and result as text (see JobAdmin.get_object), so a row whose
    JSON is nested 1,000 deep or holds a 5,000-digit number still has a page.
    """
    if text is None:
        return EMPTY
    try:
        value = json.loads(text)
        pretty = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError) as exc:
        shown = text if len(text) <= STORED_TEXT_SHOWN else text[:STORED_TEXT_SHOWN] + "\u2026"
        return format_html(
            '<p class="djj-note">{}</p><pre class="djj-pre">{}</pre>', _shown_as_stored(exc), shown
        )
    return format_html('<pre class="djj-pre">{}</pre>', pretty)


def unreadable_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return _("it is nested too deeply for Python to read")
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return _("it holds a number too long for Python to read")
    return _("Python cannot read it (%(error)s)") % {"error": exc}


def _shown_as_stored(exc: BaseException) -> str:
    return _("Shown as stored: %(reason)s.") % {"reason": unreadable_reason(exc)}


def _unreadable(exc: BaseException) -> SafeString:
    return format_html(
        '<pre class="djj-pre djj-unreadable">{}</pre>',
        _("Cannot be shown: %(reason)s.") % {"reason": unreadable_reason(exc)},
    )


def preformatted(text: str) -> SafeString | str:
    if not text:
        return EMPTY
    return format_html('<pre class="djj-pre">{}</pre>', text)


def first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"
