"""One typed settings object, read lazily from settings.DJANGO_JOBS and reset on setting_changed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class JobsSettings:
    """The DJANGO_JOBS setting with its defaults; every module reads settings from here."""

    DATABASE: str = "default"  # alias of the database that holds the job tables
    DEFAULT_QUEUE: str = "default"
    DEFAULT_MAX_ATTEMPTS: int = 3
    POLL_INTERVAL: float = 1.0  # seconds a worker sleeps when it knows of no due job
    # Threads running jobs at once in each worker process (runjobs --concurrency): a claim
    # takes up to this many due jobs in one statement, and their outcomes are written together.
    CONCURRENCY: int = 10
    # Jobs a worker may claim beyond its free threads, to wait in the process for the next
    # free thread; only while its jobs are quick (each of the last ones it wrote, and each it
    # runs, younger than a tenth of a second), so a job never waits there behind a long one.
    # Fewer, bigger claims for short jobs; 0 turns it off.
    CLAIM_AHEAD: int = 30
    LOCK_LIFETIME: float = 30.0  # seconds; the heartbeat extends running jobs' locks
    HEARTBEAT_INTERVAL: float | None = None  # seconds; None = a third of LOCK_LIFETIME
    GRACE_PERIOD: float = 30.0  # seconds running jobs get to finish after SIGTERM
    # Seconds a run may take before it is stopped and recorded as timed out, for jobs whose
    # @job(timeout=...) says nothing (and for tasks of Django's tasks framework); None: none.
    DEFAULT_TIMEOUT: float | None = None
    BACKOFF_BASE: float = 10.0  # seconds before the first retry; doubles each attempt
    BACKOFF_MAX: float = 3600.0  # seconds; the longest wait between retries
    BACKOFF_JITTER: float = 0.1  # fraction of the delay added at random, 0 to disable
    # seconds without a heartbeat after which a worker is dead; None = its own lock lifetime
    STALE_WORKER_AFTER: float | None = None
    NOTIFY: bool = True  # PostgreSQL: wake idle workers with LISTEN/NOTIFY (False: poll only)
    # Where workers LISTEN: None = on the connection they claim with; an alias of DATABASES =
    # on a connection of their own to it (PostgreSQL itself, when DATABASE goes through a
    # pooler such as PgBouncer in transaction mode); False = nowhere: workers poll.
    LISTEN_DATABASE: str | bool | None = None
    # Finished jobs and runs older than this are deleted by the workers, hourly: "30d",
    # "12h", a timedelta or seconds. None keeps the history forever (see purgejobs).
    RETENTION: str | float | timedelta | None = None
    # Late-job alerts (alerts.py): a recurring job whose due run waited this many seconds
    # unclaimed is late (@job(late_after=...) overrides it per job; None: never late) ...
    LATE_AFTER: float | None = 300.0
    # ... or whose last this many runs failed is failing (None: never flagged for failures).
    ALERT_AFTER_FAILURES: int | None = 3
    # Seconds the metrics reuse their counts from the database (one query set per period).
    METRICS_CACHE: float = 10.0
    # A secret a scraper sends as "Authorization: Bearer <token>" to metrics_view; None: only
    # logged-in users with the view_job permission may read the metrics there.
    METRICS_TOKEN: str | None = None
    # The overview on a big table (stats.py): one worker of the cluster counts the jobs by name
    # and state, and the runs per minute, every this many seconds ...
    STATS_EVERY: float = 30.0
    # ... and the overview reads those counts once the jobs (or the runs of its chart) reach
    # this many; below it the overview counts them itself, exact at every request.
    STATS_LIVE_BELOW: int = 20_000

    @property
    def heartbeat_interval(self) -> float:
        return self.HEARTBEAT_INTERVAL or self.LOCK_LIFETIME / 3


_cached: JobsSettings | None = None
KNOWN_KEYS = frozenset(f.name for f in fields(JobsSettings))


def raw_settings() -> dict[str, Any]:
    """The DJANGO_JOBS dict as the project wrote it."""
    value = getattr(django_settings, "DJANGO_JOBS", {})
    return value if isinstance(value, dict) else {}


def get_settings() -> JobsSettings:
    """The current settings; unknown keys are ignored here and reported by the system check."""
    global _cached
    if _cached is None:
        raw = raw_settings()
        _cached = JobsSettings(**{k: v for k, v in raw.items() if k in KNOWN_KEYS})
    return _cached


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    global _cached
    if setting == "DJANGO_JOBS":
        _cached = None


class _LazySettings:
    def __getattr__(self, name: str) -> Any:
        return getattr(get_settings(), name)


settings: JobsSettings = _LazySettings()  # type: ignore[assignment]
