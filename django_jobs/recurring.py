"""Recurring jobs: the one home of their rules (no ORM here; sync.py writes the rows).

- first_run(): when a new or changed schedule runs first (sync, the admin's new schedule);
- next_slot(): the run after the one that was due (the worker's outcome writer);
- preview(): the next runs for the admin, each flagged when a DST change precedes it;
- owned_by_code(): whether a row's schedule is the one its code declares (code vs admin);
- removed_note(): what a row says once its definition has left the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from .registry import Registry, registry
from .schedules import Schedule, get_timezone, next_run, parse_schedule, upcoming

RECURRING_KEY_PREFIX = "django_jobs:recurring:"


class _Recurring(Protocol):
    schedule: str
    timezone: str
    next_run_at: datetime | None


def recurring_key(name: str) -> str:
    """The unique key that holds the one row of the recurring definition `name`."""
    return RECURRING_KEY_PREFIX + name


def first_run(schedule: Schedule, tz_name: str, now: datetime) -> datetime:
    """The first slot of `schedule` after `now`, in the timezone `tz_name`."""
    return next_run(schedule, scheduled_at=None, now=now, tz=get_timezone(tz_name))


def next_slot(job: _Recurring, now: datetime) -> datetime:
    """The next run of a recurring job after the run that was due at its next_run_at."""
    return next_run(
        parse_schedule(job.schedule),
        scheduled_at=job.next_run_at,
        now=now,
        tz=get_timezone(job.timezone),
    )


def preview(
    schedule: Schedule, tz_name: str, *, after: datetime, count: int
) -> list[tuple[datetime, bool]]:
    """The next `count` runs after `after`, each flagged True when a DST change precedes it."""
    return upcoming(schedule, after=after, tz=get_timezone(tz_name), count=count)


def owned_by_code(
    name: str, expression: str, tz_name: str, definitions: Registry = registry
) -> bool:
    """True if `expression` in `tz_name` is the schedule the code declares for `name`.

    A schedule set in the admin that differs is kept across worker starts (the row is
    "overridden"); setting the code's schedule again hands the row back to the code.
    """
    definition = definitions.get(name)
    return (
        definition is not None
        and definition.schedule is not None
        and definition.schedule.expression == expression
        and definition.timezone == tz_name
    )


def declared_in_code(name: str, unique_key: str | None, definitions: Registry = registry) -> bool:
    """True for the row of a recurring job the code declares: every worker start adds it
    again (sync.py), so it can be disabled (that lasts), never cancelled (that would not)."""
    definition = definitions.get(name)
    return (
        definition is not None
        and definition.schedule is not None
        and unique_key == recurring_key(name)
    )


def declared_keys(definitions: Registry = registry) -> list[str]:
    """The unique keys of every recurring row the code declares (see declared_in_code)."""
    return [recurring_key(d.name) for d in definitions.recurring()]


def declared_refusal(job_text: str, doing: str = "cancelling") -> str:
    """Why a recurring job declared in code is not cancelled (nor deleted), and what to do."""
    return (
        f"Recurring job {job_text} is declared in the code (@job(..., schedule=...)), so "
        f"{doing} it would last only until the next worker starts and adds it again. "
        "Disable it instead (that lasts across restarts), or remove its schedule from the "
        "code: its row is then disabled, and can be cancelled."
    )


def removed_note(name: str) -> str:
    return (
        f"Disabled when a worker started: the code no longer declares a recurring job named "
        f"{name!r}. Delete this row, or declare the job again and enable it."
    )
