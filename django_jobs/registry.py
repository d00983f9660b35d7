"""Job definitions: a name, a function and its options, declared with @job in a jobs.py module."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .exceptions import InvalidJobDefinition, InvalidSchedule, UnknownJob
from .schedules import Schedule, get_timezone, parse_schedule

PRIORITIES = {"lowest": -20, "low": -10, "normal": 0, "high": 10, "highest": 20}
MIN_PRIORITY, MAX_PRIORITY = -100, 100  # the range Django's tasks framework uses
NAME_MAX_LENGTH = 200
QUEUE_MAX_LENGTH = 100


def parse_priority(value: int | str) -> int:
    """A priority name or an integer from -100 to 100; a higher number runs first."""
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES[value]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and MIN_PRIORITY <= value <= MAX_PRIORITY:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    names = ", ".join(PRIORITIES)
    raise InvalidJobDefinition(
        f"Invalid priority {value!r}. Use one of {names} or an integer from "
        f"{MIN_PRIORITY} to {MAX_PRIORITY} (higher runs first)."
    )


def check_queue(value: str) -> str:
    """A queue name: a non-empty string of at most 100 characters."""
    if not isinstance(value, str) or not value or len(value) > QUEUE_MAX_LENGTH:
        raise InvalidJobDefinition(
            f"Invalid queue {value!r}. Use a non-empty name of at most {QUEUE_MAX_LENGTH} "
            "characters, such as 'default' or 'emails'."
        )
    return value


def _positive(option: str, value: Any, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidJobDefinition(
            f"Invalid {option}={value!r}. Use a positive number"
            + (" or None for no limit." if allow_none else ".")
        )
    return value


@dataclass(frozen=True)
class JobDefinition:
    """A registered job: what `@job(...)` declared."""

    name: str
    func: Callable[..., Any]
    priority: int = 0
    queue: str = "default"
    concurrency: int | None = None  # at most this many run at once in one worker process
    lock_lifetime: timedelta | None = None  # None: the worker's --lock-lifetime
    max_attempts: int = 3
    backoff_base: float = 10.0  # seconds before the first retry; doubled per attempt
    backoff_max: float = 3600.0  # seconds
    backoff_jitter: float = 0.1  # fraction of the delay added at random
    schedule: Schedule | None = None
    timezone: str = "UTC"
    is_async: bool = field(default=False)

    @property
    def recurring(self) -> bool:
        return self.schedule is not None

    def retry_delay(self, attempt: int) -> timedelta:
        """Exponential backoff with jitter: the wait after failed attempt number `attempt`."""
        delay = self.backoff_base * 2 ** max(attempt - 1, 0)
        delay += delay * self.backoff_jitter * random.random()
        return timedelta(seconds=min(delay, self.backoff_max))


class Registry:
    """Name -> JobDefinition for every job the project declared."""

    def __init__(self) -> None:
        self._definitions: dict[str, JobDefinition] = {}

    def register(self, definition: JobDefinition) -> None:
        existing = self._definitions.get(definition.name)
        if existing is not None and _qualname(existing.func) != _qualname(definition.func):
            raise InvalidJobDefinition(
                f"Job name {definition.name!r} is already registered by "
                f"{_qualname(existing.func)}. Give {_qualname(definition.func)} another name."
            )
        self._definitions[definition.name] = definition

    def unregister(self, name: str) -> None:
        self._definitions.pop(name, None)

    def get(self, name: str) -> JobDefinition | None:
        return self._definitions.get(name)

    def __getitem__(self, name: str) -> JobDefinition:
        definition = self._definitions.get(name)
        if definition is None:
            raise UnknownJob(f"Unknown job {name!r}. Registered jobs: {self.names_text()}.")
        return definition

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._definitions.values()))

    def names(self) -> list[str]:
        return sorted(self._definitions)

    def names_text(self) -> str:
        return ", ".join(self.names()) or "(none; declare jobs with @job in a jobs.py module)"

    def recurring(self) -> list[JobDefinition]:
        return [d for d in self._definitions.values() if d.recurring]


registry = Registry()


def _qualname(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def job(
    name: str,
    *,
    priority: int | str = "normal",
    queue: str | None = None,
    concurrency: int | None = None,
    lock_lifetime: float | timedelta | None = None,
    max_attempts: int | None = None,
    backoff: float | None = None,
    backoff_max: float | None = None,
    backoff_jitter: float | None = None,
    schedule: str | None = None,
    timezone: str = "UTC",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the job `name`.

    The function receives the `Job` instance (`job.data`, `job.attempt`,
    `job.set_progress(...)`); it may be `async def`. Options:

    - priority: "lowest", "low", "normal", "high", "highest" or -100..100 (higher first).
    - queue: the queue workers select with `runjobs --queue`.
    - concurrency: at most this many of this job run at once in one worker process.
    - lock_lifetime: seconds a claim holds without a heartbeat (default: the worker's).
    - max_attempts: runs before the job is failed for good; retries back off
      exponentially from `backoff` seconds up to `backoff_max`, plus `backoff_jitter`
      (a fraction of the delay added at random); each defaults to its DJANGO_JOBS setting
      (BACKOFF_BASE, BACKOFF_MAX, BACKOFF_JITTER).
    - schedule: a cron expression ("0 3 1 * *") or an interval ("every 5 minutes")
      that makes the job recurring, evaluated in `timezone` (an IANA name).
    """
    from .conf import settings

    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX_LENGTH:
        raise InvalidJobDefinition(
            f"Invalid job name {name!r}. Use a non-empty string of at most "
            f"{NAME_MAX_LENGTH} characters, such as 'send-welcome-email'."
        )
    parsed_schedule = parse_schedule(schedule) if schedule is not None else None
    get_timezone(timezone)
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency <= 0
    ):
        raise InvalidJobDefinition(
            f"Invalid concurrency={concurrency!r} for job {name!r}. Use a positive integer, "
            "or None for no per-job limit."
        )
    attempts = settings.DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidJobDefinition(
            f"Invalid max_attempts={attempts!r} for job {name!r}. Use an integer of 1 or more."
        )
    if isinstance(lock_lifetime, int | float) and not isinstance(lock_lifetime, bool):
        _positive("lock_lifetime", lock_lifetime)
        lock_lifetime = timedelta(seconds=lock_lifetime)
    elif lock_lifetime is not None and (
        not isinstance(lock_lifetime, timedelta) or lock_lifetime <= timedelta(0)
    ):
        raise InvalidJobDefinition(
            f"Invalid lock_lifetime={lock_lifetime!r}. Use a positive number of seconds."
        )
    backoff = settings.BACKOFF_BASE if backoff is None else backoff
    backoff_max = settings.BACKOFF_MAX if backoff_max is None else backoff_max
    backoff_jitter = settings.BACKOFF_JITTER if backoff_jitter is None else backoff_jitter
    _positive("backoff", backoff)
    _positive("backoff_max", backoff_max)
    if (
        isinstance(backoff_jitter, bool)
        or not isinstance(backoff_jitter, int | float)
        or not 0 <= backoff_jitter <= 1
    ):
        raise InvalidJobDefinition(
            f"Invalid backoff_jitter={backoff_jitter!r}. Use a fraction from 0 to 1."
        )

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise InvalidJobDefinition(f"@job({name!r}) decorates {func!r}, which is not callable.")
        definition = JobDefinition(
            name=name,
            func=func,
            priority=parse_priority(priority),
            queue=check_queue(settings.DEFAULT_QUEUE if queue is None else queue),
            concurrency=concurrency,
            lock_lifetime=lock_lifetime,  # type: ignore[arg-type]
            max_attempts=attempts,
            backoff_base=float(backoff),
            backoff_max=float(backoff_max),
            backoff_jitter=float(backoff_jitter),
            schedule=parsed_schedule,
            timezone=timezone,
            is_async=inspect.iscoroutinefunction(func),
        )
        registry.register(definition)
        func.job_definition = definition  # type: ignore[attr-defined]
        return func

    return decorator


__all__ = ["InvalidSchedule", "JobDefinition", "Registry", "job", "registry"]
