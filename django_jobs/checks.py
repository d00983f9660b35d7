"""System checks for the DJANGO_JOBS setting and the database configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register
from django.db import connections

from .conf import KNOWN_KEYS, JobsSettings, raw_settings

POSITIVE_NUMBERS = (
    "POLL_INTERVAL",
    "LOCK_LIFETIME",
    "BACKOFF_BASE",
    "BACKOFF_MAX",
)
# 0 is a real choice here, as with `runjobs --grace-period 0`: hand running jobs back at once.
NON_NEGATIVE_NUMBERS = ("GRACE_PERIOD",)
# None means "derived from LOCK_LIFETIME"; a value <= 0 would make the heartbeat spin.
OPTIONAL_POSITIVE_NUMBERS = ("HEARTBEAT_INTERVAL", "STALE_WORKER_AFTER")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    raw = getattr(django_settings, "DJANGO_JOBS", {})
    if not isinstance(raw, dict):
        return [
            Error(
                f"DJANGO_JOBS must be a dict, not {type(raw).__name__}.",
                hint="Write DJANGO_JOBS = {'POLL_INTERVAL': 1.0, ...} or remove it.",
                id="django_jobs.E001",
            )
        ]
    for key in sorted(set(raw) - KNOWN_KEYS):
        errors.append(
            Error(
                f"DJANGO_JOBS has the unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(KNOWN_KEYS))}.",
                id="django_jobs.E002",
            )
        )
    for key in NON_NEGATIVE_NUMBERS:
        value = raw.get(key, getattr(JobsSettings, key))
        if not _is_number(value) or not value >= 0:  # `not >=` also catches NaN
            errors.append(
                Error(
                    f"DJANGO_JOBS[{key!r}] is {value!r}.",
                    hint="Use a number of seconds, 0 or more (0: hand running jobs back at once).",
                    id="django_jobs.E003",
                )
            )
    for key in (*POSITIVE_NUMBERS, *OPTIONAL_POSITIVE_NUMBERS):
        value = raw.get(key, getattr(JobsSettings, key))
        if value is None and key in OPTIONAL_POSITIVE_NUMBERS:
            continue
        if not _is_number(value) or not value > 0:  # `not >` also catches NaN
            optional = " or None for the default" if key in OPTIONAL_POSITIVE_NUMBERS else ""
            errors.append(
                Error(
                    f"DJANGO_JOBS[{key!r}] is {value!r}.",
                    hint=f"Use a positive number of seconds{optional}.",
                    id="django_jobs.E003",
                )
            )
    attempts = raw.get("DEFAULT_MAX_ATTEMPTS", JobsSettings.DEFAULT_MAX_ATTEMPTS)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        errors.append(
            Error(
                f"DJANGO_JOBS['DEFAULT_MAX_ATTEMPTS'] is {attempts!r}.",
                hint="Use a whole number of 1 or more.",
                id="django_jobs.E003",
            )
        )
    jitter = raw.get("BACKOFF_JITTER", JobsSettings.BACKOFF_JITTER)
    if not _is_number(jitter) or not 0 <= jitter <= 1:
        errors.append(
            Error(
                f"DJANGO_JOBS['BACKOFF_JITTER'] is {jitter!r}.",
                hint="Use a fraction from 0 (no jitter) to 1.",
                id="django_jobs.E003",
            )
        )
    alias = raw_settings().get("DATABASE", "default")
    if alias not in django_settings.DATABASES:
        errors.append(
            Error(
                f"DJANGO_JOBS['DATABASE'] is {alias!r}, which is not in DATABASES.",
                hint=f"Use one of: {', '.join(django_settings.DATABASES)}.",
                id="django_jobs.E004",
            )
        )
    if not django_settings.USE_TZ:
        errors.append(
            Error(
                "django_jobs needs USE_TZ = True.",
                hint="Set USE_TZ = True (Django's default) so run times are stored in UTC.",
                id="django_jobs.E005",
            )
        )
    elif alias in django_settings.DATABASES:
        connection = connections[alias]
        if connection.vendor == "sqlite":
            options = connection.settings_dict.get("OPTIONS", {})
            if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
                errors.append(
                    Warning(
                        "The SQLite database of django_jobs is not in IMMEDIATE transaction mode.",
                        hint=(
                            "Add 'OPTIONS': {'transaction_mode': 'IMMEDIATE', 'timeout': 20, "
                            "'init_command': 'PRAGMA journal_mode=WAL'} so several workers "
                            "do not fail with 'database is locked'."
                        ),
                        id="django_jobs.W001",
                    )
                )
    return errors


@register(Tags.compatibility)
def check_retention_and_notify(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """RETENTION must be an age; NOTIFY a boolean."""
    from .retention import InvalidAge, parse_age

    raw = raw_settings()
    errors: list[Any] = []
    retention = raw.get("RETENTION")
    if retention is not None:
        try:
            parse_age(retention)
        except InvalidAge as exc:
            errors.append(
                Error(
                    f"DJANGO_JOBS['RETENTION'] is {retention!r}: {exc}",
                    hint='Use an age such as "30d" or "12h", a timedelta, or None to keep '
                    "the history forever.",
                    id="django_jobs.E006",
                )
            )
    notify = raw.get("NOTIFY", True)
    if not isinstance(notify, bool):
        errors.append(
            Error(
                f"DJANGO_JOBS['NOTIFY'] is {notify!r}.",
                hint="Use True (wake workers with LISTEN/NOTIFY on PostgreSQL) or False.",
                id="django_jobs.E007",
            )
        )
    return errors
