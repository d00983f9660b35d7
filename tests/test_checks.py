"""System checks of the DJANGO_JOBS setting and the database configuration."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import django
import pytest
from django.core.checks import Error, Tags, Warning, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import modify_settings, override_settings

from django_jobs.backend import JobsBackend
from django_jobs.checks import check_settings, check_tasks_app, check_tasks_framework
from tests.testapp import tasks


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_the_test_settings_pass():
    assert check_settings() == []


def test_the_check_is_registered():
    with override_settings(DJANGO_JOBS={"POLL_INTERVAL": 0}):
        messages = run_checks(tags=[Tags.compatibility])
    assert "django_jobs.E003" in ids(messages)


def test_setting_that_is_not_a_dict():
    with override_settings(DJANGO_JOBS=[("POLL_INTERVAL", 1)]):
        (error,) = check_settings()
    assert error.id == "django_jobs.E001"
    assert "not list" in error.msg


def test_unknown_key():
    with override_settings(DJANGO_JOBS={"POLL_INTERVALL": 2, "LOCK_LIFETIME": 60}):
        (error,) = check_settings()
    assert isinstance(error, Error)
    assert error.id == "django_jobs.E002"
    assert "'POLL_INTERVALL'" in error.msg
    assert "POLL_INTERVAL" in error.hint and "LOCK_LIFETIME" in error.hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("POLL_INTERVAL", 0),
        ("POLL_INTERVAL", -1.5),
        ("LOCK_LIFETIME", "30"),
        ("LOCK_LIFETIME", None),
        ("GRACE_PERIOD", True),
        ("GRACE_PERIOD", -1),
        ("GRACE_PERIOD", math.nan),
        ("BACKOFF_BASE", math.nan),
        ("BACKOFF_MAX", -1),
        ("HEARTBEAT_INTERVAL", 0),
        ("STALE_WORKER_AFTER", -5),
        ("DEFAULT_MAX_ATTEMPTS", 0),
        ("DEFAULT_MAX_ATTEMPTS", 2.5),
        ("BACKOFF_JITTER", 1.5),
        ("BACKOFF_JITTER", -0.1),
        ("CLAIM_AHEAD", -1),
        ("CLAIM_AHEAD", 2.5),
        ("CLAIM_AHEAD", 1001),
    ],
)
def test_bad_numbers(key, value):
    with override_settings(DJANGO_JOBS={key: value}):
        (error,) = check_settings()
    assert error.id == "django_jobs.E003"
    assert error.msg == f"DJANGO_JOBS[{key!r}] is {value!r}."
    assert error.hint


@pytest.mark.parametrize(
    "value",
    [
        {"POLL_INTERVAL": 0.05, "LOCK_LIFETIME": 5, "GRACE_PERIOD": 1},
        {"GRACE_PERIOD": 0},  # as `runjobs --grace-period 0`: running jobs are handed back
        {"HEARTBEAT_INTERVAL": None, "STALE_WORKER_AFTER": None},
        {"HEARTBEAT_INTERVAL": 2, "STALE_WORKER_AFTER": 60.0},
        {"DEFAULT_MAX_ATTEMPTS": 1, "BACKOFF_JITTER": 0, "BACKOFF_BASE": 0.5},
        {"DEFAULT_QUEUE": "background", "DATABASE": "default"},
        {"CLAIM_AHEAD": 0},
        {"CLAIM_AHEAD": 1000},
    ],
)
def test_good_values(value):
    with override_settings(DJANGO_JOBS=value):
        assert check_settings() == []


def test_every_bad_value_is_reported():
    with override_settings(DJANGO_JOBS={"POLL_INTERVAL": 0, "LOCK_LIFETIME": 0, "NOPE": 1}):
        assert ids(check_settings()) == ["django_jobs.E002", "django_jobs.E003", "django_jobs.E003"]


def test_missing_database_alias():
    with override_settings(DJANGO_JOBS={"DATABASE": "jobs"}):
        (error,) = check_settings()
    assert error.id == "django_jobs.E004"
    assert "'jobs'" in error.msg
    assert "default" in error.hint


def test_use_tz_false():
    with override_settings(USE_TZ=False):
        (error,) = check_settings()
    assert error.id == "django_jobs.E005"
    assert "USE_TZ" in error.msg


def test_sqlite_without_immediate_transactions_is_warned_about(monkeypatch):
    if connection.vendor != "sqlite":
        pytest.skip("The advice is about SQLite only.")
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "transaction_mode", "DEFERRED")
    (warning,) = check_settings()
    assert warning.id == "django_jobs.W001"
    assert "IMMEDIATE" in warning.hint and "WAL" in warning.hint
    # Advice about speed: on Django's default settings the workers are correct, only slower.
    assert "For speed" in warning.hint and "correct without them" in warning.hint
    assert "database is locked" not in warning.msg + warning.hint


# --- TASKS naming JobsBackend -----------------------------------------------------------------


def hide_the_tasks_framework(monkeypatch):
    """Django 5.2 without the django-tasks backport, as test_backend.py simulates it."""
    monkeypatch.setitem(sys.modules, "django.tasks", None)
    monkeypatch.setitem(sys.modules, "django_tasks", None)
    monkeypatch.delitem(sys.modules, "django_jobs.tasks_compat")


@pytest.fixture
def without_the_tasks_framework(monkeypatch):
    hide_the_tasks_framework(monkeypatch)


def test_jobs_backend_on_a_django_with_the_framework_passes():
    assert check_tasks_framework() == []
    assert JobsBackend("default", {}).check() == []


def test_jobs_backend_on_a_django_without_the_framework_is_warned_about(
    without_the_tasks_framework,
):
    (warning,) = check_tasks_framework()
    assert isinstance(warning, Warning)
    assert warning.id == "django_jobs.W002"
    assert warning.msg == (
        "TASKS names 'django_jobs.backend.JobsBackend' for 'default' and 'retrying', but "
        f"Django {django.get_version()} has no tasks framework, so Django ignores TASKS."
    )
    assert 'pip install "django-dbjobs[tasks]"' in warning.hint
    assert "Django 6" in warning.hint
    assert "django_jobs.W002" in ids(run_checks(tags=[Tags.compatibility]))


@pytest.mark.parametrize(
    "value",
    [{"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}, "not a dict"],
)
def test_without_the_framework_other_backends_are_not_our_business(monkeypatch, value):
    # The framework's receivers of setting_changed import it: hide it inside the override.
    with override_settings(TASKS=value), monkeypatch.context() as patch:
        hide_the_tasks_framework(patch)
        assert check_tasks_framework() == []


@pytest.mark.django_db
def test_jobs_backend_without_the_app_is_an_error_with_the_fix():
    with modify_settings(INSTALLED_APPS={"remove": ["django_jobs"]}):
        (error,) = check_tasks_app("default")
        backend = JobsBackend("default", {})  # constructing it needs no model
        assert backend.check() == [error]
        with pytest.raises(ImproperlyConfigured) as refused:
            backend.enqueue(tasks.add, [1, 2], {})
        with pytest.raises(ImproperlyConfigured):
            backend.get_result("1")
    assert error.id == "django_jobs.E009"
    assert error.msg == (
        "TASKS['default'] names 'django_jobs.backend.JobsBackend', but 'django_jobs' is not in "
        "INSTALLED_APPS."
    )
    assert "Add 'django_jobs' to INSTALLED_APPS" in error.hint
    assert str(refused.value) == f"{error.msg} {error.hint}"
    assert check_tasks_app("default") == []  # installed again


# A project without django_jobs in INSTALLED_APPS: importing the backend must not load the
# models, so that `check` runs the backend's check (through the framework's own checks).
PROJECT_WITHOUT_THE_APP = textwrap.dedent(
    """
    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    apps = ["django.contrib.contenttypes", "django.contrib.auth"]
    if django.VERSION < (6, 0):
        apps.append("django_tasks")  # its ready() registers the framework's checks
    else:
        import django.tasks  # noqa: F401  (registers the framework's checks)
    settings.configure(
        INSTALLED_APPS=apps,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        TASKS={"default": {"BACKEND": "django_jobs.backend.JobsBackend"}},
        USE_TZ=True,
    )
    django.setup()
    import django_jobs.backend  # noqa: F401
    try:
        call_command("check")
    except SystemCheckError as exc:
        print(exc)
    else:
        print("check passed")
    """
)


def test_check_command_without_the_app_reports_it():
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH"}}
    done = subprocess.run(
        [sys.executable, "-c", PROJECT_WITHOUT_THE_APP],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "(django_jobs.E009) TASKS['default'] names 'django_jobs.backend.JobsBackend'" in (
        done.stdout
    )
    assert "RuntimeError" not in done.stdout + done.stderr
