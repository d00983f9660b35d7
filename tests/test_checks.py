"""System checks of the DJANGO_JOBS setting and the database configuration."""

from __future__ import annotations

import math

import pytest
from django.core.checks import Error, Tags, run_checks
from django.db import connection
from django.test import override_settings

from django_jobs.checks import check_settings


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
