"""Pure time logic: parse "when" values and schedules, compute next runs in a timezone.

Nothing here touches the ORM or Django settings, so it is tested as plain functions.
All returned instants are aware datetimes in UTC (``tzinfo=datetime.UTC``).

Time rules:

- Cron expressions (5 fields: minute hour day-of-month month day-of-week) are evaluated on the
  wall clock of the definition's timezone. croniter walks naive local wall times; each
  candidate is then turned into an instant by these rules:

  - A wall time that does not exist (spring forward, e.g. Europe/Paris 2026-03-29 02:30) runs
    at the first instant after the gap (03:00 local, 01:00 UTC). Several candidates inside one
    gap collapse into that one run.
  - A wall time that occurs twice (fall back, e.g. Europe/Paris 2026-10-25 02:30) runs once, at
    its first occurrence (``fold=0``); the second occurrence is not a new run. So a frequent
    cron such as ``*/30 * * * *`` has no runs during the repeated hour.
  - A wall time is non-existent when local -> UTC -> local does not give it back.

- A monthly cron on a day some months lack (``0 3 31 * *``) runs only in months that have that
  day, as in standard cron. Cron expressions that can never match are rejected.
- Intervals in seconds, minutes or hours are absolute (UTC arithmetic). Intervals in days or
  weeks are calendar arithmetic on the wall clock of the timezone, so a daily job at 09:00
  stays at 09:00 across DST changes; their wall times follow the same gap and fold rules.
- Intervals keep their anchor: runs are at ``anchor + k * interval``, never at finish times.
- Misfires (see ``next_run``): the next run after a run due at ``scheduled_at`` is computed
  from ``scheduled_at``; if that is not after ``now``, runs were missed and the schedule skips
  to its first slot after ``now``, so missed runs fire once (the overdue run itself).
- ``parse_when("in N days")`` is absolute (N * 24 hours); it has no timezone to be calendar in.
- Every instant ``parse_when`` returns lies within ``validation.MIN_WHEN .. MAX_WHEN``; an
  interval is at most ``validation.MAX_INTERVAL`` (100 years).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from django_jobs.exceptions import InvalidSchedule
from django_jobs.validation import (
    MAX_INTERVAL,
    MAX_WHEN,
    SCHEDULE_MAX_LENGTH,
    TIMEZONE_MAX_LENGTH,
    check_when,
    shown,
)

__all__ = [
    "UNITS",
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "get_timezone",
    "next_run",
    "parse_schedule",
    "parse_when",
    "upcoming",
]

UNITS: dict[str, Callable[[int], timedelta]] = {
    "second": lambda n: timedelta(seconds=n),
    "seconds": lambda n: timedelta(seconds=n),
    "minute": lambda n: timedelta(minutes=n),
    "minutes": lambda n: timedelta(minutes=n),
    "hour": lambda n: timedelta(hours=n),
    "hours": lambda n: timedelta(hours=n),
    "day": lambda n: timedelta(days=n),
    "days": lambda n: timedelta(days=n),
    "week": lambda n: timedelta(weeks=n),
    "weeks": lambda n: timedelta(weeks=n),
}
CALENDAR_UNITS = frozenset({"day", "days", "week", "weeks"})

_UNIT_PATTERN = "|".join(sorted(UNITS, key=len, reverse=True))
_IN_RE = re.compile(rf"in\s+([0-9]+)\s+({_UNIT_PATTERN})", re.IGNORECASE)
_EVERY_N_RE = re.compile(rf"every\s+([0-9]+)\s+({_UNIT_PATTERN})", re.IGNORECASE)
_EVERY_ONE_RE = re.compile(r"every\s+(second|minute|hour|day|week)", re.IGNORECASE)

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter's "R" picks a random value per croniter object, so the slots would change on
# every computation; month/day names containing an R (MAR, FRI) are not matched.
_RANDOM_FIELD_RE = re.compile(r"(?<![A-Z])R(?![A-Z])")
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
_WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_WEEKDAY_NAMES = {name[:3].upper(): index for index, name in enumerate(_WEEKDAYS)}


def get_timezone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA timezone name, or raise InvalidSchedule."""
    if isinstance(name, str) and name and len(name) <= TIMEZONE_MAX_LENGTH:
        try:
            return ZoneInfo(name)
        # ZoneInfo raises ValueError for malformed keys and OSError for directories ("Europe").
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidSchedule(
        f"Unknown timezone {shown(name)}. Use an IANA name such as 'Europe/Paris' or 'UTC'."
    )


def _require_aware(value: datetime, name: str) -> None:
    """Raise InvalidSchedule unless value is an aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidSchedule(
            f"{name}={value!r} is not an aware datetime; pass one such as "
            "django.utils.timezone.now()."
        )


def parse_when(when: datetime | timedelta | str, *, now: datetime) -> datetime:
    """Turn a "when" value into an aware datetime in UTC, within MIN_WHEN .. MAX_WHEN.

    Accepts an aware datetime (the same instant is returned, in UTC), a timedelta (added to
    ``now``; negative means due now), ``"now"``, ``"in N seconds|minutes|hours|days|weeks"``
    (absolute time, singular units accepted, case-insensitive) and an ISO 8601 string with an
    offset or ``Z``.
    Naive datetimes and ISO strings without an offset are rejected rather than guessed, and
    so are instants outside the range the databases store (see validation.check_when).
    """
    _require_aware(now, "now")
    return check_when(_parse_when(when, now), value=when)


def _parse_when(when: datetime | timedelta | str, now: datetime) -> datetime:
    """parse_when() without the range check; out-of-range arithmetic gives a sentinel."""
    if isinstance(when, datetime):
        if when.utcoffset() is None:
            raise _naive_when(when)
        return when
    if isinstance(when, timedelta):
        return _plus(now, when)
    if isinstance(when, str):
        text = when.strip()
        if text.lower() == "now":
            return now
        if match := _IN_RE.fullmatch(text):
            try:
                delta = UNITS[match[2].lower()](int(match[1]))
            # OverflowError: past timedelta.max; ValueError: more digits than int() reads.
            except (OverflowError, ValueError):
                return _OUT_OF_RANGE
            return _plus(now, delta)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.utcoffset() is None:
                raise _naive_when(when)
            return parsed
    raise InvalidSchedule(
        f"Cannot understand when={shown(when)}. Use an aware datetime, a timedelta, 'now', "
        "'in N seconds|minutes|hours|days|weeks', or an ISO 8601 string with an offset such as "
        "'2026-12-01T09:00:00+01:00'."
    )


# What a "when" past datetime's own range becomes, so that check_when refuses it with the
# range in the message.
_OUT_OF_RANGE = datetime.max.replace(tzinfo=UTC)


def _plus(now: datetime, delta: timedelta) -> datetime:
    """now + delta, or a sentinel past MAX_WHEN (or before MIN_WHEN) when it overflows."""
    try:
        return now + delta
    except OverflowError:
        return _OUT_OF_RANGE if delta > timedelta(0) else datetime.min.replace(tzinfo=UTC)


def _naive_when(when: datetime | str) -> InvalidSchedule:
    """Build the error for a "when" that has no timezone."""
    return InvalidSchedule(
        f"when='{when}' has no timezone, so its instant is ambiguous; pass an aware datetime "
        "(e.g. django.utils.timezone.make_aware(value)) or an ISO string with an offset such "
        "as '+00:00'."
    )


def _to_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """Turn a naive wall time in tz into a UTC instant by the gap and fold rules."""
    # fold=0 picks the first occurrence of a repeated wall time.
    instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # In a gap, fold=0 uses the offset from before the transition and lands after it, fold=1
    # lands before it; the transition itself is the first instant after the gap.
    before = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    after = instant
    new_offset = after.astimezone(tz).utcoffset()
    step = timedelta(seconds=1)
    while after - before > step:
        middle = before + (after - before) // 2
        if middle.astimezone(tz).utcoffset() == new_offset:
            after = middle
        else:
            before = middle
    return after


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    """Return the naive wall time of an aware instant in tz."""
    return instant.astimezone(tz).replace(tzinfo=None)


@dataclass(frozen=True)
class Schedule(ABC):
    """A recurring schedule; subclasses compute runs in a given timezone."""

    expression: str

    @abstractmethod
    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        """Return the first run strictly after ``after``, in UTC."""

    @abstractmethod
    def describe(self) -> str:
        """Return the schedule in words, for the admin."""

    def runs_after(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Yield the runs strictly after ``after``, in order, in UTC."""
        while True:
            after = self.next_after(after, tz)
            yield after


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A 5-field cron expression evaluated on the wall clock of a timezone."""

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        """Return the first run strictly after ``after``, in UTC."""
        _require_aware(after, "after")
        fields = CRON_ALIASES.get(self.expression.lower(), self.expression)
        # croniter works on naive wall times so that the DST rules are ours, not croniter's.
        iterator = croniter(fields, _wall(after, tz))
        while True:
            try:
                wall = iterator.get_next(datetime)
            except CroniterBadDateError as exc:
                raise InvalidSchedule(
                    f"Schedule {self.expression!r} has no run after {after.isoformat()}; "
                    "check its day-of-month and month fields."
                ) from exc
            instant = _to_instant(wall, tz)
            # Candidates can fall at or before `after` when `after` is the second occurrence
            # of a repeated wall time; those slots already ran at their first occurrence.
            if instant > after:
                return instant

    def describe(self) -> str:
        """Return common cron shapes in words, others as "cron: <expression>"."""
        fields = CRON_ALIASES.get(self.expression.lower(), self.expression).split()
        minute, hour, day, month, weekday = fields
        fallback = f"cron: {self.expression}"
        if month != "*":
            return fallback
        if (hour, day, weekday) == ("*", "*", "*"):
            step = minute.removeprefix("*/")
            if minute == "*" or step == "1":
                return "every minute"
            if minute.isdigit():
                return f"hourly at :{int(minute):02d}"
            if minute.startswith("*/") and step.isdigit():
                return f"every {int(step)} minutes"
            return fallback
        if not (minute.isdigit() and hour.isdigit()):
            return fallback
        at = f"{int(hour):02d}:{int(minute):02d}"
        if day == "*" and weekday == "*":
            return f"daily at {at}"
        if day == "*" and (name := _weekday_name(weekday)):
            return f"weekly on {name} at {at}"
        if weekday == "*" and day.isdigit():
            return f"monthly on day {int(day)} at {at}"
        return fallback


def _weekday_name(field: str) -> str | None:
    """Return the weekday named by a single cron day-of-week value, else None."""
    if field.isdigit() and int(field) <= 7:
        return _WEEKDAYS[int(field) % 7]
    index = _WEEKDAY_NAMES.get(field.upper())
    return None if index is None else _WEEKDAYS[index]


@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """A fixed interval; days and weeks are calendar arithmetic on the wall clock."""

    interval: timedelta
    calendar: bool = False

    def slot(self, anchor: datetime, k: int, tz: ZoneInfo) -> datetime:
        """Return the k-th run after the anchor run, in UTC."""
        if self.calendar:
            return _to_instant(_wall(anchor, tz) + k * self.interval, tz)
        return anchor.astimezone(UTC) + k * self.interval

    def first_slot_after(self, anchor: datetime, limit: datetime, tz: ZoneInfo) -> datetime:
        """Return the first run ``anchor + k * interval`` (k >= 1) strictly after ``limit``."""
        # Start two intervals early: calendar slots drift from UTC arithmetic by at most the
        # largest UTC offset change, which is under one day, the smallest calendar interval.
        k = max(1, (limit - anchor) // self.interval - 2)
        while (run := self.slot(anchor, k, tz)) <= limit:
            k += 1
        return run

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        """Return ``after`` plus one interval, in UTC."""
        _require_aware(after, "after")
        return self.first_slot_after(after, after, tz)

    def runs_after(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Yield ``after + k * interval`` for k = 1, 2, ..., keeping the anchor's wall time."""
        _require_aware(after, "after")
        k = 1
        while True:
            yield self.slot(after, k, tz)
            k += 1

    def describe(self) -> str:
        """Return the interval in words, in the largest unit that divides it."""
        seconds = int(self.interval.total_seconds())
        units = [("week", 604800), ("day", 86400)] if self.calendar else []
        units += [("hour", 3600), ("minute", 60), ("second", 1)]
        for unit, size in units:
            if seconds % size == 0:
                count = seconds // size
                return f"every {unit}" if count == 1 else f"every {count} {unit}s"
        return f"every {self.interval}"


def parse_schedule(expression: str) -> Schedule:
    """Parse a 5-field cron expression or an interval such as "every 5 minutes".

    Intervals: ``every N seconds|minutes|hours|days|weeks`` (N a positive integer) and
    ``every second|minute|hour|day|week``. Cron: five fields, or an alias such as ``@daily``;
    seconds/year fields and croniter's random ``R`` are rejected.
    """
    if not isinstance(expression, str):
        raise _invalid(expression)
    text = " ".join(expression.split())
    if len(text) > SCHEDULE_MAX_LENGTH:
        raise _invalid(text, f"longer than {SCHEDULE_MAX_LENGTH} characters")
    if text.lower().startswith("every"):
        return _parse_interval(text)
    return _parse_cron(text)


def _invalid(expression: object, reason: str | None = None) -> InvalidSchedule:
    """Build the generic "invalid schedule" error, with the precise reason if known."""
    suffix = f" ({reason})" if reason else ""
    return InvalidSchedule(
        f"Invalid schedule {shown(expression)}: not a valid cron expression ({_CRON_FIELDS}) "
        f"nor an interval such as 'every 5 minutes'{suffix}."
    )


def _parse_interval(text: str) -> IntervalSchedule:
    """Parse "every N units" or "every unit"."""
    if match := _EVERY_N_RE.fullmatch(text):
        count, unit = int(match[1]), match[2].lower()
        if count == 0:
            raise InvalidSchedule(
                f"Invalid schedule {text!r}: the interval is 0; use a positive number such as "
                "'every 5 minutes'."
            )
    elif match := _EVERY_ONE_RE.fullmatch(text):
        count, unit = 1, match[1].lower()
    else:
        raise _invalid(text)
    try:
        interval = UNITS[unit](count)
    except OverflowError:
        interval = MAX_INTERVAL + timedelta(days=1)
    if interval > MAX_INTERVAL:
        raise InvalidSchedule(
            f"Invalid schedule {text!r}: the interval is longer than {MAX_INTERVAL.days} days "
            "(100 years); use a shorter one, or a cron expression."
        )
    return IntervalSchedule(
        expression=text.lower(), interval=interval, calendar=unit in CALENDAR_UNITS
    )


def _parse_cron(text: str) -> CronSchedule:
    """Validate a 5-field cron expression (or alias) with croniter."""
    fields = CRON_ALIASES.get(text.lower(), text)
    count = len(fields.split())
    if count in (6, 7):
        raise InvalidSchedule(
            f"Invalid schedule {text!r}: it has {count} fields, but only 5-field cron "
            f"expressions ({_CRON_FIELDS}) are supported, without seconds or year fields."
        )
    if count != 5:
        raise _invalid(text, f"expected 5 fields, got {count}")
    if _RANDOM_FIELD_RE.search(fields.upper()):
        raise InvalidSchedule(
            f"Invalid schedule {text!r}: random 'R' fields give different times on every "
            "computation; write the fixed minute and hour you want instead."
        )
    if not croniter.is_valid(fields):
        try:
            croniter(fields)
        except CroniterError as exc:
            raise _invalid(text, f"croniter: {exc}") from exc
        raise _invalid(text)
    try:
        # A fixed start keeps parsing deterministic; croniter searches decades ahead, so
        # "0 0 29 2 *" passes and "0 0 30 2 *" fails.
        croniter(fields, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError as exc:
        raise InvalidSchedule(
            f"Invalid schedule {text!r}: it never matches a date; check its day-of-month and "
            "month fields."
        ) from exc
    return CronSchedule(expression=text)


def next_run(
    schedule: Schedule, *, scheduled_at: datetime | None, now: datetime, tz: ZoneInfo
) -> datetime:
    """Return the run that follows the one due at ``scheduled_at``, applying the misfire rule.

    The next run is computed from ``scheduled_at`` (not from when the run finished). If it is
    not after ``now``, runs were missed: they are not replayed, and the schedule resumes at its
    first slot after ``now`` (intervals keep their anchor: ``scheduled_at + k * interval``).
    With ``scheduled_at=None`` (a definition's first sync) it is the first slot after ``now``.
    A next run past ``validation.MAX_WHEN`` raises InvalidSchedule.
    """
    _require_aware(now, "now")
    if scheduled_at is not None:
        _require_aware(scheduled_at, "scheduled_at")
    try:
        run = _next_run(schedule, scheduled_at=scheduled_at, now=now, tz=tz)
    except OverflowError:
        run = _OUT_OF_RANGE
    if run > MAX_WHEN:
        raise InvalidSchedule(
            f"Schedule {schedule.expression!r} has no run after {now.isoformat()} before "
            f"{MAX_WHEN.isoformat()}, the last time django_jobs can store; give it an earlier run."
        )
    return run


def _next_run(
    schedule: Schedule, *, scheduled_at: datetime | None, now: datetime, tz: ZoneInfo
) -> datetime:
    if scheduled_at is None:
        return schedule.next_after(now, tz)
    if isinstance(schedule, IntervalSchedule):
        return schedule.first_slot_after(scheduled_at, max(scheduled_at, now), tz)
    run = schedule.next_after(scheduled_at, tz)
    return run if run > now else schedule.next_after(now, tz)


def upcoming(
    schedule: Schedule, *, after: datetime, tz: ZoneInfo, count: int = 5
) -> list[tuple[datetime, bool]]:
    """Return the next ``count`` runs in UTC, each flagged True if a DST change precedes it.

    The flag compares the run's UTC offset in ``tz`` with the previous run's (for the first
    run, with the offset at ``after``). Runs past ``validation.MAX_WHEN`` are left out.
    """
    _require_aware(after, "after")
    runs: list[tuple[datetime, bool]] = []
    offset = after.astimezone(tz).utcoffset()
    try:
        for run in islice(schedule.runs_after(after, tz), count):
            if run > MAX_WHEN:
                break
            run_offset = run.astimezone(tz).utcoffset()
            runs.append((run, run_offset != offset))
            offset = run_offset
    # Near year 9999 the next slot is past what datetime holds: there are no more runs.
    except (OverflowError, InvalidSchedule):
        pass
    return runs
