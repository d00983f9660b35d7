"""Job definitions: a name, a function and its options, declared with @job in a jobs.py module."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .conf import settings
from .exceptions import InvalidJobDefinition, InvalidSchedule, UnknownJob
from .schedules import Schedule, get_timezone, parse_schedule
from .validation import (
    ATTEMPTS,
    BACKOFF,
    BACKOFF_JITTER,
    CONCURRENCY,
    PRIORITIES,
    RateLimit,
    check_job_name,
    check_late_after,
    check_lock_lifetime,
    check_priority,
    check_queue,
    check_rate_limit,
    check_timeout,
    shown,
)

# The names other modules and the docs knew these by; the rules live in validation.py.
parse_priority = check_priority


@dataclass(frozen=True)
class JobDefinition:
    """A registered job: what `@job(...)` declared."""

    name: str
    func: Callable[..., Any]
    priority: int = 0
    queue: str = "default"
    concurrency: int | None = None  # at most this many run at once across the cluster
    process_concurrency: int | None = None  # at most this many at once in one worker process
    rate_limit: RateLimit | None = None  # at most this many starts per period, cluster-wide
    lock_lifetime: timedelta | None = None  # None: the worker's --lock-lifetime
    max_attempts: int = 3
    backoff_base: float = 10.0  # seconds before the first retry; doubled per attempt
    backoff_max: float = 3600.0  # seconds
    backoff_jitter: float = 0.1  # fraction of the delay added at random
    schedule: Schedule | None = None
    timezone: str = "UTC"
    is_async: bool = field(default=False)
    late_after: timedelta | None = None  # None: DJANGO_JOBS["LATE_AFTER"] (alerts.py)
    timeout: timedelta | None = None  # None: DJANGO_JOBS["DEFAULT_TIMEOUT"]

    def timeout_seconds(self) -> float | None:
        """Seconds a run may take before it is stopped, or None for no limit."""
        if self.timeout is not None:
            return self.timeout.total_seconds()
        return settings.DEFAULT_TIMEOUT

    @property
    def recurring(self) -> bool:
        return self.schedule is not None

    @property
    def limited(self) -> bool:
        """True if its jobs are claimed under a cluster-wide count (claiming/limits.py)."""
        return self.concurrency is not None or self.rate_limit is not None

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
        # A name that is not a string (a list, say) is unhashable or could never be registered.
        definition = self._definitions.get(name) if isinstance(name, str) else None
        if definition is None:
            raise UnknownJob(f"Unknown job {shown(name)}. Registered jobs: {self.names_text()}.")
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

    def limited(self) -> list[JobDefinition]:
        return [d for d in self._definitions.values() if d.limited]


registry = Registry()


def _qualname(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def job(
    name: str,
    *,
    priority: int | str = "normal",
    queue: str | None = None,
    concurrency: int | None = None,
    process_concurrency: int | None = None,
    rate_limit: str | None = None,
    lock_lifetime: float | timedelta | None = None,
    max_attempts: int | None = None,
    backoff: float | None = None,
    backoff_max: float | None = None,
    backoff_jitter: float | None = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    late_after: float | timedelta | None = None,
    timeout: float | timedelta | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the job `name`.

    The function receives the `Job` instance (`job.data`, `job.attempt`,
    `job.set_progress(...)`); it may be `async def`. Options:

    - priority: "lowest", "low", "normal", "high", "highest" or -100..100 (higher first).
    - queue: the queue workers select with `runjobs --queue`.
    - concurrency: at most this many runs of this job at once across the cluster (every
      worker on every host); a run whose lock expired no longer holds its slot.
    - process_concurrency: at most this many runs of this job at once in one worker process.
    - rate_limit: at most N starts per period across the cluster, "100/m", "20/2s", "5/h";
      jobs over it wait unclaimed until the period lets them start.
    - lock_lifetime: seconds a claim holds without a heartbeat (default: the worker's).
    - max_attempts: runs before the job is failed for good; retries back off
      exponentially from `backoff` seconds up to `backoff_max`, plus `backoff_jitter`
      (a fraction of the delay added at random); each defaults to its DJANGO_JOBS setting
      (BACKOFF_BASE, BACKOFF_MAX, BACKOFF_JITTER).
    - schedule: a cron expression ("0 3 1 * *") or an interval ("every 5 minutes")
      that makes the job recurring, evaluated in `timezone` (an IANA name).
    - late_after: seconds (or a timedelta) a due run of this recurring job may wait
      unclaimed before it is flagged as late (default: DJANGO_JOBS["LATE_AFTER"]).
    - timeout: seconds (or a timedelta) a run may take; past it the job is stopped (see
      docs/controls.md) and the run is "timed out", a failed attempt that is retried within
      max_attempts (default: DJANGO_JOBS["DEFAULT_TIMEOUT"], None for no limit).
    """
    check_job_name(name, error=InvalidJobDefinition)
    where = f" for job {name!r}"
    parsed_schedule = parse_schedule(schedule) if schedule is not None else None
    get_timezone(timezone)
    limits = (("concurrency", concurrency), ("process_concurrency", process_concurrency))
    for option, value in limits:
        if value is not None:
            CONCURRENCY.check(
                option, value, where=where, fix=", or None for no limit", error=InvalidJobDefinition
            )
    rate = (
        None
        if rate_limit is None
        else check_rate_limit(rate_limit, where=where, error=InvalidJobDefinition)
    )
    attempts = settings.DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts
    ATTEMPTS.check("max_attempts", attempts, where=where, error=InvalidJobDefinition)
    lifetime = (
        None
        if lock_lifetime is None
        else check_lock_lifetime(lock_lifetime, where=where, error=InvalidJobDefinition)
    )
    backoff = settings.BACKOFF_BASE if backoff is None else backoff
    backoff_max = settings.BACKOFF_MAX if backoff_max is None else backoff_max
    backoff_jitter = settings.BACKOFF_JITTER if backoff_jitter is None else backoff_jitter
    BACKOFF.check("backoff", backoff, where=where, error=InvalidJobDefinition)
    BACKOFF.check("backoff_max", backoff_max, where=where, error=InvalidJobDefinition)
    BACKOFF_JITTER.check(
        "backoff_jitter",
        backoff_jitter,
        where=where,
        fix=" (the fraction of the delay added at random)",
        error=InvalidJobDefinition,
    )
    late = (
        None
        if late_after is None
        else check_late_after(late_after, where=where, error=InvalidJobDefinition)
    )
    if late is not None and parsed_schedule is None:
        raise InvalidJobDefinition(
            f"late_after={shown(late_after)}{where} applies to recurring jobs only; add a "
            "schedule or remove late_after (jobstatus --max-lateness watches one-off jobs)."
        )
    run_timeout = (
        None if timeout is None else check_timeout(timeout, where=where, error=InvalidJobDefinition)
    )
    parsed_priority = check_priority(priority, error=InvalidJobDefinition)
    parsed_queue = check_queue(
        settings.DEFAULT_QUEUE if queue is None else queue, error=InvalidJobDefinition
    )

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise InvalidJobDefinition(f"@job({name!r}) decorates {func!r}, which is not callable.")
        definition = JobDefinition(
            name=name,
            func=func,
            priority=parsed_priority,
            queue=parsed_queue,
            concurrency=concurrency,
            process_concurrency=process_concurrency,
            rate_limit=rate,
            lock_lifetime=lifetime,
            max_attempts=attempts,
            backoff_base=float(backoff),
            backoff_max=float(backoff_max),
            backoff_jitter=float(backoff_jitter),
            schedule=parsed_schedule,
            timezone=timezone,
            is_async=inspect.iscoroutinefunction(func),
            late_after=late,
            timeout=run_timeout,
        )
        registry.register(definition)
        func.job_definition = definition  # type: ignore[attr-defined]
        return func

    return decorator


__all__ = [
    "PRIORITIES",
    "InvalidSchedule",
    "JobDefinition",
    "Registry",
    "job",
    "parse_priority",
    "registry",
]
