"""System checks for the DJANGO_JOBS setting, the database configuration and TASKS."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import django
from django.apps import apps
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

from .conf import KNOWN_KEYS, JobsSettings, raw_settings
from .exceptions import JobsError, TasksUnavailable
from .validation import QUEUE_RULE, SETTINGS_BOUNDS, check_queue, shown

JOBS_BACKEND_PATH = "django_jobs.backend.JobsBackend"
# None means "derived from LOCK_LIFETIME", or for the alerts "off".
OPTIONAL = frozenset(
    {
        "HEARTBEAT_INTERVAL",
        "STALE_WORKER_AFTER",
        "LATE_AFTER",
        "ALERT_AFTER_FAILURES",
        "DEFAULT_TIMEOUT",
    }
)
HINTS = {
    # 0 is a real choice here, as with `runjobs --grace-period 0`.
    "GRACE_PERIOD": " (0: hand running jobs back at once)",
    "BACKOFF_JITTER": " (the fraction of the delay added at random; 0 for none)",
    "METRICS_CACHE": " (0: count again at every scrape)",
    "STATS_LIVE_BELOW": " (0: the overview always reads the workers' counts)",
}


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
    # The bounds are validation.py's, as for @job and `runjobs`.
    for key, bound in SETTINGS_BOUNDS.items():
        value = raw.get(key, getattr(JobsSettings, key))
        if value is None and key in OPTIONAL:
            continue
        if not bound.accepts(value):
            optional = " or None for the default" if key in OPTIONAL else ""
            errors.append(
                Error(
                    f"DJANGO_JOBS[{key!r}] is {shown(value)}.",
                    hint=f"Use {bound.describe()}{HINTS.get(key, '')}{optional}.",
                    id="django_jobs.E003",
                )
            )
    queue = raw.get("DEFAULT_QUEUE", JobsSettings.DEFAULT_QUEUE)
    try:
        check_queue(queue)
    except JobsError:
        errors.append(
            Error(
                f"DJANGO_JOBS['DEFAULT_QUEUE'] is {shown(queue)}.",
                hint=f"Use {QUEUE_RULE}, such as 'default'.",
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
            # Advice about speed only: the workers' own writes take SQLite's write lock up
            # front, so any number of them work on Django's default settings.
            if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
                errors.append(
                    Warning(
                        "The SQLite database of django_jobs is not in IMMEDIATE transaction "
                        "mode, so several workers wait on each other more than they need to.",
                        hint=(
                            "For speed, add 'OPTIONS': {'transaction_mode': 'IMMEDIATE', "
                            "'timeout': 20, 'init_command': 'PRAGMA journal_mode=WAL'}: WAL "
                            "lets readers run beside a writer and IMMEDIATE spares the retries "
                            "of deferred transactions. Workers are correct without them."
                        ),
                        id="django_jobs.W001",
                    )
                )
    return errors


@register(Tags.compatibility)
def check_retention_and_notify(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """RETENTION must be an age; NOTIFY a boolean; METRICS_TOKEN a secret or None."""
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
    token = raw.get("METRICS_TOKEN")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        errors.append(
            Error(
                f"DJANGO_JOBS['METRICS_TOKEN'] is {shown(token)}.",
                hint="Use a non-empty secret string that the scraper sends as 'Authorization: "
                "Bearer <token>', or None to let only staff with the view_job permission in.",
                id="django_jobs.E010",
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


def jobs_backend_aliases() -> list[str]:
    """The aliases of TASKS whose BACKEND is JobsBackend."""
    # Django's own setting, absent from Django 5.2's defaults; not one of DJANGO_JOBS.
    tasks = getattr(django_settings, "TASKS", None)
    if not isinstance(tasks, dict):
        return []
    return [
        str(alias)
        for alias, params in tasks.items()
        if isinstance(params, dict) and params.get("BACKEND") == JOBS_BACKEND_PATH
    ]


def _for(aliases: list[str]) -> str:
    shown = [repr(alias) for alias in aliases]
    return " and ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)


@register(Tags.compatibility)
def check_tasks_framework(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """TASKS names JobsBackend, but this Django cannot load it (Django 5.2 without the backport)."""
    aliases = jobs_backend_aliases()
    if not aliases:
        return []
    try:
        # import_module, unlike `from . import`, imports again a module dropped from sys.modules.
        import_module("django_jobs.tasks_compat")
    except TasksUnavailable:
        return [
            Warning(
                f"TASKS names {JOBS_BACKEND_PATH!r} for {_for(aliases)}, but Django "
                f"{django.get_version()} has no tasks framework, so Django ignores TASKS.",
                hint=(
                    'Install the django-tasks backport with pip install "django-dbjobs[tasks]", '
                    "or upgrade to Django 6."
                ),
                id="django_jobs.W002",
            )
        ]
    return []


def check_tasks_app(alias: str) -> list[CheckMessage]:
    """JobsBackend's tables belong to an app that is not installed; run by JobsBackend.check().

    Not registered: without the app in INSTALLED_APPS, Django never runs the app's checks.
    """
    if apps.is_installed("django_jobs"):
        return []
    return [
        Error(
            f"TASKS[{alias!r}] names {JOBS_BACKEND_PATH!r}, but 'django_jobs' is not in "
            "INSTALLED_APPS.",
            hint="Add 'django_jobs' to INSTALLED_APPS and run manage.py migrate: the backend "
            "stores tasks in its tables.",
            id="django_jobs.E009",
        )
    ]
