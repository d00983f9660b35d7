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
    "GRACE_PERIOD",
    "BACKOFF_BASE",
    "BACKOFF_MAX",
)


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
    for key in POSITIVE_NUMBERS:
        value = raw.get(key, getattr(JobsSettings, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            errors.append(
                Error(
                    f"DJANGO_JOBS[{key!r}] is {value!r}.",
                    hint="Use a positive number of seconds.",
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
