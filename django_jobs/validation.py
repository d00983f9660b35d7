"""The one home for checking every value a user can pass: bounded, finite, and storable.

The API (schedule, now, schedule_many, cancel), @job, the admin forms, the tasks backend,
`runjobs` and the settings checks all call these functions, so a bound is written once and a
value one entry point accepts is a value every other one accepts. Each refusal is a
django_jobs error whose message quotes the value and states the bound.

Nothing here touches the ORM or the settings, so schedules.py (pure time logic) can use it.

Bounds (the docs' "Bounds" table lists the same):

- times: ``MIN_WHEN`` .. ``MAX_WHEN`` (UTC); MariaDB's DATETIME starts at year 1000, and the
  margin below year 10000 keeps every timezone conversion of a stored time representable.
- data: JSON types only, finite floats, integers within 64 bits, no NUL character or lone
  surrogate in any string or key, at most ``MAX_JSON_DEPTH`` levels, at most
  ``MAX_DATA_BYTES`` as JSON.
- names: ``QUEUE_MAX_LENGTH``, ``NAME_MAX_LENGTH``, ``UNIQUE_KEY_MAX_LENGTH`` characters.
- numbers: the ``Bound`` constants below (attempts, concurrency, backoff, lock lifetimes,
  worker options, settings).
- rate limits: at most ``MAX_RATE_COUNT`` starts per period, a period from
  ``MIN_RATE_PERIOD`` to ``MAX_RATE_PERIOD`` seconds (``check_rate_limit()``).
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .exceptions import InvalidJobData, InvalidOption, InvalidSchedule, JobsError

__all__ = [
    "ALERT_AFTER_FAILURES",
    "ATTEMPTS",
    "BACKOFF",
    "BACKOFF_JITTER",
    "CONCURRENCY",
    "GRACE_PERIOD",
    "HEARTBEAT_INTERVAL",
    "JOB_ID",
    "LATE_AFTER",
    "LOCK_KEY_MAX_LENGTH",
    "LOCK_LIFETIME",
    "MAX_ATTEMPTS",
    "MAX_BACKOFF",
    "MAX_CONCURRENCY",
    "MAX_DATA_BYTES",
    "MAX_GRACE_PERIOD",
    "MAX_INTERVAL",
    "MAX_JOB_ID",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MAX_LATE_AFTER",
    "MAX_LOCK_LIFETIME",
    "MAX_POLL_INTERVAL",
    "MAX_PRIORITY",
    "MAX_PROCESSES",
    "MAX_RATE_COUNT",
    "MAX_RATE_PERIOD",
    "MAX_STALE_WORKER_AFTER",
    "MAX_STATS_EVERY",
    "MAX_STATS_LIVE_BELOW",
    "MAX_WHEN",
    "MAX_WORKER_CONCURRENCY",
    "MAX_WORKER_JOBS",
    "METRICS_CACHE",
    "METRICS_PORT",
    "MIN_JSON_INT",
    "MIN_LOCK_LIFETIME",
    "MIN_PRIORITY",
    "MIN_RATE_PERIOD",
    "MIN_STATS_EVERY",
    "MIN_WHEN",
    "NAME_MAX_LENGTH",
    "POLL_INTERVAL",
    "PRIORITIES",
    "PROCESSES",
    "QUEUE_MAX_LENGTH",
    "QUEUE_RULE",
    "RATE_LIMIT_RULE",
    "RESERVED_KEY_PREFIX",
    "SCHEDULE_MAX_LENGTH",
    "SETTINGS_BOUNDS",
    "STALE_WORKER_AFTER",
    "STATS_EVERY",
    "STATS_LIVE_BELOW",
    "TIMEZONE_MAX_LENGTH",
    "UNIQUE_KEY_MAX_LENGTH",
    "WORKER_CONCURRENCY",
    "WORKER_ID_MAX_LENGTH",
    "WORKER_JOBS",
    "Bound",
    "RateLimit",
    "check_job_id",
    "check_job_name",
    "check_json",
    "check_json_text",
    "check_late_after",
    "check_lock_key",
    "check_lock_lifetime",
    "check_nesting",
    "check_priority",
    "check_queue",
    "check_rate_limit",
    "check_unique_key",
    "check_when",
    "check_worker_id",
    "shown",
]

# Times

MIN_WHEN = datetime(1900, 1, 1, tzinfo=UTC)  # the earliest instant a job may be due
MAX_WHEN = datetime(9999, 12, 30, tzinfo=UTC)  # the latest; a day below year 10000 in any zone
MAX_INTERVAL = timedelta(days=36525)  # 100 years: the longest "every N units" schedule
SCHEDULE_MAX_LENGTH = 200  # characters of a cron expression or interval (Job.schedule)
TIMEZONE_MAX_LENGTH = 64  # characters of an IANA timezone name (Job.timezone)

# Data (JSON)

MAX_JSON_DEPTH = 20  # levels of nested lists and dicts; MariaDB refuses 32 and more
MAX_DATA_BYTES = 2**20  # bytes of the data as compact UTF-8 JSON (1 MiB)
MIN_JSON_INT, MAX_JSON_INT = -(2**63), 2**63 - 1  # what every database reads back as a number

# Names and keys (the widths of their columns)

NAME_MAX_LENGTH = 200  # characters of a job name (Job.name)
QUEUE_MAX_LENGTH = 100  # characters of a queue name (Job.queue)
UNIQUE_KEY_MAX_LENGTH = 255  # characters of a unique key (Job.unique_key)
LOCK_KEY_MAX_LENGTH = 255  # characters of a lock key (Job.lock_key)
# Worker.worker_id holds 255; the cluster supervisor appends "-N" to each process's id.
WORKER_ID_MAX_LENGTH = 200
# Keys django_jobs writes itself (the recurring rows' "django_jobs:recurring:<name>").
RESERVED_KEY_PREFIX = "django_jobs:"

PRIORITIES = {"lowest": -20, "low": -10, "normal": 0, "high": 10, "highest": 20}
MIN_PRIORITY, MAX_PRIORITY = -100, 100  # the range Django's tasks framework uses

# NUL: PostgreSQL refuses it in text and jsonb. Surrogates: no UTF-8 encoding exists for them.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Names also refuse the other control characters: they end up in logs, URLs and the admin.
_NOT_A_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

# Numbers

MAX_ATTEMPTS = 1000  # attempts of one job
MAX_CONCURRENCY = 10_000  # runs of one job name at once, in the cluster or one process (@job)
MAX_BACKOFF = 30 * 86400.0  # seconds (30 days): the longest wait before a retry
MIN_LOCK_LIFETIME = 1.0  # seconds; the heartbeat must beat faster than the shortest lock
MAX_LOCK_LIFETIME = 86400.0  # seconds (1 day) a claim holds without a heartbeat
MAX_POLL_INTERVAL = 3600.0  # seconds an idle worker sleeps between looks for due jobs
MAX_GRACE_PERIOD = 86400.0  # seconds running jobs get to finish after SIGTERM
MAX_WORKER_CONCURRENCY = 1000  # threads of one worker process (runjobs --concurrency)
MAX_CLAIM_AHEAD = 1000  # jobs claimed beyond a worker's free threads (CLAIM_AHEAD)
MAX_WORKER_JOBS = 10**9  # runjobs --max-jobs
MAX_PROCESSES = 256  # runjobs --processes
MAX_STALE_WORKER_AFTER = 3 * MAX_LOCK_LIFETIME  # seconds (3 days) without a heartbeat
MAX_JOB_ID = 2**63 - 1  # the largest BigAutoField id
MAX_LATE_AFTER = 30 * 86400.0  # seconds (30 days) a recurring run may wait before it is late
MAX_METRICS_CACHE = 3600.0  # seconds the metrics' database counts are reused
MIN_STATS_EVERY = 1.0  # seconds between two counts of the overview's numbers by the workers
MAX_STATS_EVERY = 3600.0
MAX_STATS_LIVE_BELOW = 10**9  # jobs or runs below which the overview counts them itself
MAX_TIMEOUT = 7 * 86400.0  # seconds (a week) a run may take before it is stopped


@dataclass(frozen=True)
class Bound:
    """A range of finite numbers, and the words that state it in every error."""

    low: float
    high: float
    whole: bool = False  # integers only (never bool)
    low_open: bool = False  # `low` itself is refused ("above 0")
    unit: str = ""  # "seconds": "a number of seconds from 1 to 86400 (1 day)"

    def accepts(self, value: object) -> bool:
        """True if value is a number of the right kind within the range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        # math.isfinite() overflows on huge ints, which are finite anyway.
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        """The requirement in words: "a whole number from 1 to 1000"."""
        kind = "a whole number" if self.whole else f"a number of {self.unit}" if self.unit else ""
        kind = kind or "a number"
        high = _number_text(self.high)
        if self.unit == "seconds" and self.high >= 3600:
            high += f" ({_duration_text(self.high)})"
        if self.low_open:
            return f"{kind} above {_number_text(self.low)} and at most {high}"
        return f"{kind} from {_number_text(self.low)} to {high}"

    def check(
        self,
        name: str,
        value: Any,
        *,
        where: str = "",
        fix: str = "",
        error: type[JobsError] = InvalidOption,
    ) -> Any:
        """Return value if it is within the bound, else raise `error` quoting it."""
        if not self.accepts(value):
            raise error(f"Invalid {name}={shown(value)}{where}. Use {self.describe()}{fix}.")
        return value


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _duration_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


ATTEMPTS = Bound(1, MAX_ATTEMPTS, whole=True)
CONCURRENCY = Bound(1, MAX_CONCURRENCY, whole=True)
BACKOFF = Bound(0, MAX_BACKOFF, low_open=True, unit="seconds")
BACKOFF_JITTER = Bound(0, 1)
LOCK_LIFETIME = Bound(MIN_LOCK_LIFETIME, MAX_LOCK_LIFETIME, unit="seconds")
POLL_INTERVAL = Bound(0, MAX_POLL_INTERVAL, low_open=True, unit="seconds")
GRACE_PERIOD = Bound(0, MAX_GRACE_PERIOD, unit="seconds")
WORKER_CONCURRENCY = Bound(1, MAX_WORKER_CONCURRENCY, whole=True)
CLAIM_AHEAD = Bound(0, MAX_CLAIM_AHEAD, whole=True)
WORKER_JOBS = Bound(1, MAX_WORKER_JOBS, whole=True)
PROCESSES = Bound(1, MAX_PROCESSES, whole=True)
HEARTBEAT_INTERVAL = Bound(0, MAX_LOCK_LIFETIME, low_open=True, unit="seconds")
# jobstatus: how old a heartbeat or how late a due job may be before the probe fails.
PROBE_AGE = Bound(0, MAX_STALE_WORKER_AFTER, low_open=True, unit="seconds")
STALE_WORKER_AFTER = Bound(0, MAX_STALE_WORKER_AFTER, low_open=True, unit="seconds")
JOB_ID = Bound(1, MAX_JOB_ID, whole=True)
# Late-job alerts (alerts.py): how long past its due time a recurring run may wait unclaimed,
# and how many failed runs in a row flag a recurring job.
LATE_AFTER = Bound(0, MAX_LATE_AFTER, low_open=True, unit="seconds")
ALERT_AFTER_FAILURES = Bound(1, MAX_ATTEMPTS, whole=True)
# Metrics (metrics.py): runjobs --metrics-port, and how long the database counts are reused.
METRICS_PORT = Bound(1, 65535, whole=True)
METRICS_CACHE = Bound(0, MAX_METRICS_CACHE, unit="seconds")
# The overview's numbers kept by the workers (stats.py): how often, and from what size on.
STATS_EVERY = Bound(MIN_STATS_EVERY, MAX_STATS_EVERY, unit="seconds")
STATS_LIVE_BELOW = Bound(0, MAX_STATS_LIVE_BELOW, whole=True)
# Seconds a run may take before it is stopped (@job(timeout=), DEFAULT_TIMEOUT).
TIMEOUT = Bound(0, MAX_TIMEOUT, low_open=True, unit="seconds")

# The numeric DJANGO_JOBS settings; DEFAULT_QUEUE is a queue name (check_queue).
SETTINGS_BOUNDS: dict[str, Bound] = {
    "POLL_INTERVAL": POLL_INTERVAL,
    "CONCURRENCY": WORKER_CONCURRENCY,
    "CLAIM_AHEAD": CLAIM_AHEAD,
    "LOCK_LIFETIME": LOCK_LIFETIME,
    "HEARTBEAT_INTERVAL": HEARTBEAT_INTERVAL,  # None: a third of LOCK_LIFETIME
    "GRACE_PERIOD": GRACE_PERIOD,
    "BACKOFF_BASE": BACKOFF,
    "BACKOFF_MAX": BACKOFF,
    "BACKOFF_JITTER": BACKOFF_JITTER,
    "STALE_WORKER_AFTER": STALE_WORKER_AFTER,  # None: the worker's own lock lifetime
    "DEFAULT_MAX_ATTEMPTS": ATTEMPTS,
    "LATE_AFTER": LATE_AFTER,  # None: no late alerts
    "ALERT_AFTER_FAILURES": ALERT_AFTER_FAILURES,  # None: no alerts for failing jobs
    "METRICS_CACHE": METRICS_CACHE,
    "STATS_EVERY": STATS_EVERY,
    "STATS_LIVE_BELOW": STATS_LIVE_BELOW,
    "DEFAULT_TIMEOUT": TIMEOUT,  # None (the default): no timeout
}


# Quoting values in messages


class _Shown(reprlib.Repr):
    """repr() that stays short and never fails: deep, huge or cyclic values are abbreviated."""

    def __init__(self) -> None:
        super().__init__()
        # Long enough to quote any value a bound allows in full (a 255-character key).
        self.maxstring = self.maxother = 300
        self.maxlevel = 3
        self.maxlong = 300

    def repr_int(self, x: int, level: int) -> str:
        # Python refuses to print an int of more than 4300 digits; say how long it is instead.
        if x.bit_length() > 1000:
            return f"an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits"
        return super().repr_int(x, level)


_shown = _Shown()


def shown(value: object) -> str:
    """The value as a message quotes it: its repr, abbreviated if long, deep or huge."""
    if isinstance(value, datetime):
        try:
            return repr(value.isoformat())
        except (ValueError, OverflowError):  # a tzinfo whose utcoffset() is invalid
            pass
    try:
        return _shown.repr(value)
    except Exception:  # a user's object whose __repr__ fails
        return f"a {type(value).__name__}"


# Times


def check_when(instant: datetime, *, value: object = None, name: str = "when") -> datetime:
    """Return an aware instant within MIN_WHEN .. MAX_WHEN, in UTC, else raise InvalidSchedule.

    The instant comes back in UTC because PostgreSQL refuses UTC offsets of 16 hours or more,
    which Python allows (up to 23:59). `value` is what the user passed (a string, a
    timedelta), quoted in the error instead of the instant it became.
    """
    try:
        aware = isinstance(instant, datetime) and instant.utcoffset() is not None
    except (ValueError, OverflowError, TypeError):
        aware = False
    if not aware:
        quoted = shown(instant if value is None else value)
        raise InvalidSchedule(
            f"{name}={quoted} has no timezone, so its instant is ambiguous; pass an aware "
            "datetime (e.g. django.utils.timezone.make_aware(value))."
        )
    try:
        inside = MIN_WHEN <= instant <= MAX_WHEN
    except OverflowError:
        inside = False
    if not inside:
        quoted = shown(instant if value is None else value)
        raise InvalidSchedule(
            f"{name}={quoted} is outside the times django_jobs can store, "
            f"{MIN_WHEN.isoformat()} to {MAX_WHEN.isoformat()} (UTC); pick a time in that range."
        )
    return instant.astimezone(UTC)


# Data


class _Path:
    """Where a value sits in the data, as data['user'][0]; only rendered for an error."""

    __slots__ = ("key", "parent")

    def __init__(self, parent: _Path | str, key: object) -> None:
        self.parent, self.key = parent, key

    def __str__(self) -> str:
        keys: list[object] = []
        node: _Path | str = self
        while isinstance(node, _Path):
            keys.append(node.key)
            node = node.parent
        return node + "".join(f"[{shown(key)}]" for key in reversed(keys))


def check_json(value: Any, path: str = "data") -> int:
    """Refuse anything the database cannot store and give back as JSON; returns its size.

    Accepts None, bool, str, int, float, and lists, tuples and dicts (with str keys) of those,
    within the bounds of this module. The error names where the offending value sits, e.g.
    ``data['user']['joined']``. Walks the value without recursion, so any depth is refused
    cleanly. The size returned is the bytes of the value as compact UTF-8 JSON.
    """
    if type(value) is dict and not value:
        return 2  # {}: the data of most jobs
    # Bytes of compact JSON: `low` never overestimates (stop walking once it is too big),
    # `high` never underestimates (skip serializing when it is small enough).
    low = high = 0
    stack: list[tuple[Any, _Path | str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool):
            low, high = low + 4, high + 5
        elif isinstance(item, str):
            _check_text(item, where)
            # JSON escapes a control character as \u00XX: 6 bytes at most per character.
            low, high = low + len(item) + 2, high + 6 * len(item) + 2
        elif isinstance(item, int):
            if not MIN_JSON_INT <= item <= MAX_JSON_INT:
                raise InvalidJobData(
                    f"{where} is {shown(item)}, outside the 64-bit integers every database reads "
                    f"back ({MIN_JSON_INT} to {MAX_JSON_INT}); store it as a string instead."
                )
            low, high = low + 1, high + 20
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidJobData(
                    f"{where} is {item!r}, which JSON cannot store. Use a finite number or None."
                )
            low, high = low + 1, high + 24
        elif isinstance(item, dict | list | tuple):
            if depth > MAX_JSON_DEPTH:
                raise InvalidJobData(
                    f"{where} is nested more than {MAX_JSON_DEPTH} levels deep (lists and dicts "
                    "within each other); flatten the data or store the deep part as a string."
                )
            low, high = low + 2 + max(len(item) - 1, 0), high + 2 + len(item)
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidJobData(
                            f"{where} has the key {shown(key)} of type {type(key).__name__}; "
                            f"JSON keys are strings. Use {shown(str(key))} instead."
                        )
                    _check_text(key, where, key=True)
                    low, high = low + len(key) + 3, high + 6 * len(key) + 3
                    stack.append((child, _Path(where, key), depth + 1))
            else:
                stack.extend(
                    (child, _Path(where, index), depth + 1) for index, child in enumerate(item)
                )
        else:
            raise InvalidJobData(
                f"{where} is a {type(item).__name__} ({shown(item):.60}), which is not JSON. "
                "Store a string, number, boolean, None, list or dict instead (e.g. "
                "value.isoformat() for a datetime, or the object's id)."
            )
        if low > MAX_DATA_BYTES:
            break
    if high <= MAX_DATA_BYTES:
        return high
    size = (
        low
        if low > MAX_DATA_BYTES
        else len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    )
    if size > MAX_DATA_BYTES:
        raise InvalidJobData(
            f"{path} is {'over ' if low > MAX_DATA_BYTES else ''}{size} bytes as JSON "
            f"({shown(value):.60}...); at most {MAX_DATA_BYTES} bytes (1 MiB) are allowed. "
            "Store large content elsewhere (a file, a model) and pass its id."
        )
    return size


def check_json_text(text: str, path: str = "data") -> None:
    """Refuse JSON text too large to be data, before it is parsed."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DATA_BYTES:
        raise InvalidJobData(
            f"{path} is {size} bytes of JSON text; at most {MAX_DATA_BYTES} bytes (1 MiB) are "
            "allowed. Store large content elsewhere (a file, a model) and pass its id."
        )


def check_nesting(value: Any, path: str = "data") -> None:
    """Refuse mappings and sequences nested past MAX_JSON_DEPTH, before a recursive walk."""
    stack: list[tuple[Any, _Path | str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            continue
        if isinstance(item, Mapping):
            children: Any = item.items()
        elif isinstance(item, Sequence):
            children = enumerate(item)
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidJobData(
                f"{where} is nested more than {MAX_JSON_DEPTH} levels deep (lists and dicts "
                "within each other); flatten the data or store the deep part as a string."
            )
        stack.extend((child, _Path(where, key), depth + 1) for key, child in children)


def _check_text(text: str, where: _Path | str, *, key: bool = False) -> None:
    """Refuse NUL and lone surrogates, which no database stores in JSON."""
    if match := _UNSTORABLE.search(text):
        what = f"{where} has the key {shown(text)}" if key else f"{where} is {shown(text)}"
        raise InvalidJobData(
            f"{what}, which holds the character {match[0]!r} that the database cannot store; "
            "remove it (NUL and lone surrogates are refused)."
        )


# Names, keys and options


def check_queue(value: object, *, error: type[JobsError] = InvalidOption) -> str:
    """A queue name: a non-empty string of at most 100 characters, no control characters."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > QUEUE_MAX_LENGTH
        or _NOT_A_NAME.search(value)
    ):
        raise error(
            f"Invalid queue {shown(value)}. Use {QUEUE_RULE}, such as 'default' or 'emails'."
        )
    return value


QUEUE_RULE = (
    f"a non-empty name of at most {QUEUE_MAX_LENGTH} characters, without control characters"
)


def check_job_name(value: object, *, error: type[JobsError] = InvalidOption) -> str:
    """A job name: a non-blank string of at most 200 characters, no control characters."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > NAME_MAX_LENGTH
        or _NOT_A_NAME.search(value)
    ):
        raise error(
            f"Invalid job name {shown(value)}. Use a non-empty string of at most "
            f"{NAME_MAX_LENGTH} characters, without control characters, such as "
            "'send-welcome-email'."
        )
    return value


def check_unique_key(value: object, *, reserved: bool = False) -> str:
    """A unique key: a non-empty string of at most 255 characters, without NUL or surrogates.

    Keys starting with "django_jobs:" are django_jobs' own (the recurring rows); they may be
    looked up (`reserved=True`, as cancel() does) but not scheduled.
    """
    if (
        not isinstance(value, str)
        or not value
        or len(value) > UNIQUE_KEY_MAX_LENGTH
        or _UNSTORABLE.search(value)
    ):
        raise InvalidOption(
            f"Invalid unique_key={shown(value)}. Use a non-empty string of at most "
            f"{UNIQUE_KEY_MAX_LENGTH} characters, without NUL characters or lone surrogates, "
            "such as 'report:42'."
        )
    if not reserved and value.startswith(RESERVED_KEY_PREFIX):
        raise InvalidOption(
            f"Invalid unique_key={shown(value)}: keys starting with {RESERVED_KEY_PREFIX!r} "
            "belong to django_jobs' recurring jobs. Use another prefix."
        )
    return value


def check_lock_key(value: object) -> str:
    """A lock key: a non-empty string of at most 255 characters, without NUL or surrogates."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > LOCK_KEY_MAX_LENGTH
        or _UNSTORABLE.search(value)
    ):
        raise InvalidOption(
            f"Invalid lock_key={shown(value)}. Use a non-empty string of at most "
            f"{LOCK_KEY_MAX_LENGTH} characters, without NUL characters or lone surrogates, "
            "such as 'account:42'."
        )
    return value


def check_priority(value: object, *, error: type[JobsError] = InvalidOption) -> int:
    """A priority name or an integer from -100 to 100; a higher number runs first."""
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES[value]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and MIN_PRIORITY <= value <= MAX_PRIORITY:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    names = ", ".join(PRIORITIES)
    raise error(
        f"Invalid priority {shown(value)}. Use one of {names} or an integer from "
        f"{MIN_PRIORITY} to {MAX_PRIORITY} (higher runs first)."
    )


def check_lock_lifetime(
    value: object, *, where: str = "", error: type[JobsError] = InvalidOption
) -> timedelta:
    """A lock lifetime: seconds (or a timedelta) from MIN_LOCK_LIFETIME to MAX_LOCK_LIFETIME."""
    return check_duration("lock_lifetime", value, LOCK_LIFETIME, where=where, error=error)


def check_late_after(
    value: object, *, where: str = "", error: type[JobsError] = InvalidOption
) -> timedelta:
    """A late-alert threshold: seconds (or a timedelta) above 0 and at most MAX_LATE_AFTER."""
    return check_duration("late_after", value, LATE_AFTER, where=where, error=error)


def check_job_id(value: object) -> int:
    """A job's id: a whole number from 1 to 2**63 - 1 (not a bool, float, string or bytes)."""
    if not JOB_ID.accepts(value):
        raise InvalidOption(
            f"Invalid job id {shown(value)}. Pass a Job or its id, {JOB_ID.describe()}."
        )
    return value  # type: ignore[return-value]


def check_worker_id(value: object) -> str:
    """A worker id: a non-blank string of at most 200 characters, no control characters."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > WORKER_ID_MAX_LENGTH
        or _NOT_A_NAME.search(value)
    ):
        raise InvalidOption(
            f"Invalid worker id {shown(value)}. Use a non-empty name of at most "
            f"{WORKER_ID_MAX_LENGTH} characters, without control characters, or leave it out "
            "for a generated id."
        )
    return value


# Timeouts and the names of who asked (controls)

CANCELLED_BY_MAX_LENGTH = 150  # characters of who cancelled or paused (a user name)


def check_duration(
    option: str, value: object, bound: Bound, *, where: str = "", error: type[JobsError]
) -> timedelta:
    """Seconds (or a timedelta) within `bound`, as a timedelta."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if not bound.accepts(seconds):
        raise error(
            f"Invalid {option}={shown(value)}{where}. Use {bound.describe()}, or a timedelta "
            "within that range."
        )
    return timedelta(seconds=seconds)  # type: ignore[arg-type]


def check_timeout(
    value: object, *, where: str = "", error: type[JobsError] = InvalidOption
) -> timedelta:
    """A run's timeout: seconds (or a timedelta) above 0 and at most MAX_TIMEOUT."""
    return check_duration("timeout", value, TIMEOUT, where=where, error=error)


def check_text(option: str, value: object, limit: int) -> str:
    """A short free text (a reason, a user name): a string of at most `limit` characters."""
    if not isinstance(value, str) or len(value) > limit or _UNSTORABLE.search(value):
        raise InvalidOption(
            f"Invalid {option}={shown(value)}. Use a string of at most {limit} characters, "
            "without NUL characters or lone surrogates."
        )
    return value


# Rate limits (@job(rate_limit="100/m"))

MAX_RATE_COUNT = 1_000_000  # starts allowed in one period of a rate limit
MIN_RATE_PERIOD = 1.0  # seconds; shorter periods meet the database clock's resolution
MAX_RATE_PERIOD = 86400.0  # seconds (1 day): the starts of one period are counted each claim
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"\s*(\d{1,7})\s*/\s*(\d{0,5})\s*([smhd])\s*", re.ASCII)
RATE_LIMIT_RULE = (
    f'"N/unit" or "N/Kunit" with N from 1 to {MAX_RATE_COUNT}, unit s, m, h or d and a period '
    f'from {MIN_RATE_PERIOD:g} second to 1 day, such as "100/m" or "20/2s"'
)


@dataclass(frozen=True)
class RateLimit:
    """At most `count` starts of a job name within any `period` seconds, across the cluster."""

    count: int
    period: float  # seconds

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


def check_rate_limit(
    value: object, *, where: str = "", error: type[JobsError] = InvalidOption
) -> RateLimit:
    """A rate limit: "100/m", "20/2s", "5000/h", "1/d" (starts per period), bounded."""
    if isinstance(value, RateLimit):
        value = str(value)
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is not None:
        count = int(match[1])
        period = int(match[2] or 1) * _RATE_UNITS[match[3]]
        if 1 <= count <= MAX_RATE_COUNT and MIN_RATE_PERIOD <= period <= MAX_RATE_PERIOD:
            return RateLimit(count, float(period))
    raise error(f"Invalid rate_limit={shown(value)}{where}. Use {RATE_LIMIT_RULE}.")
