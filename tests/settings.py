"""Settings for the test suite: the database comes from DATABASE_URL (SQLite by default)."""

import os
import tempfile
from pathlib import Path

import dj_database_url
import django

SECRET_KEY = "django_jobs-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

# Worker subprocesses started by the tests must reach the same database, so the
# SQLite test database is a file (never ":memory:") whose path the tests hand down.
_SQLITE_DIR = Path(os.environ.get("DJANGO_JOBS_SQLITE_DIR", tempfile.gettempdir()))
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{_SQLITE_DIR / 'django_jobs.sqlite3'}"
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
# DJANGO_JOBS_SQLITE_DEFAULTS=1: SQLite exactly as Django's startproject leaves it (no OPTIONS),
# for the tests that prove the embedded default works without tuning.
_SQLITE_DEFAULTS = os.environ.get("DJANGO_JOBS_SQLITE_DEFAULTS") == "1"
if _db["ENGINE"] == "django.db.backends.sqlite3":
    if not _SQLITE_DEFAULTS:
        _db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
        }
    _db["TEST"] = {
        "NAME": os.environ.get("DJANGO_JOBS_TEST_DB_NAME")
        or str(_SQLITE_DIR / "test_django_jobs.sqlite3")
    }
elif _db["ENGINE"] == "django.db.backends.mysql":
    _db["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed"}
    _db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
# DJANGO_JOBS_TEST_DB_SUFFIX=x: a test database of its own (test_<name>_x), so two test runs
# on one PostgreSQL or MariaDB server do not drop each other's database.
if os.environ.get("DJANGO_JOBS_TEST_DB_SUFFIX") and _db["ENGINE"] != "django.db.backends.sqlite3":
    _db.setdefault("TEST", {})["NAME"] = (
        f"test_{_db['NAME']}_{os.environ['DJANGO_JOBS_TEST_DB_SUFFIX']}"
    )
# A worker subprocess is pointed at the test database the parent created.
if os.environ.get("DJANGO_JOBS_USE_TEST_DB"):
    _db["NAME"] = os.environ["DJANGO_JOBS_USE_TEST_DB"]
DATABASES = {"default": _db}

# DJANGO_JOBS_PGBOUNCER_DIRECT_URL (runtests.sh --db pgbouncer): DATABASE_URL goes through
# PgBouncer in transaction mode, and this URL reaches the same PostgreSQL directly. It is the
# "direct" alias, for LISTEN only (a mirror of the test database, not a database of its own).
# DJANGO_JOBS_LISTEN_DATABASE overrides the setting: "false" (poll), "none" (the pooled
# connection), or an alias.
DJANGO_JOBS: dict[str, object] = {}
_DIRECT_URL = os.environ.get("DJANGO_JOBS_PGBOUNCER_DIRECT_URL")
if _DIRECT_URL:
    # What a project behind PgBouncer 1.18 (no max_prepared_statements) sets: no server-side
    # prepared statements (Django's default, spelt out) and no server-side cursors, since
    # neither outlives the transaction on a pooled connection.
    _db.setdefault("OPTIONS", {})["prepare_threshold"] = None
    _db["DISABLE_SERVER_SIDE_CURSORS"] = True
    _direct = dj_database_url.parse(_DIRECT_URL, conn_max_age=0)
    _direct["TEST"] = {"MIRROR": "default"}
    if os.environ.get("DJANGO_JOBS_USE_TEST_DB"):
        _direct["NAME"] = os.environ["DJANGO_JOBS_USE_TEST_DB"]
    DATABASES["direct"] = _direct
    DJANGO_JOBS["LISTEN_DATABASE"] = "direct"
_LISTEN = os.environ.get("DJANGO_JOBS_LISTEN_DATABASE")
if _LISTEN:
    DJANGO_JOBS["LISTEN_DATABASE"] = {"false": False, "none": None}.get(_LISTEN.lower(), _LISTEN)

# DJANGO_JOBS_STATS_EVERY: how often worker subprocesses keep the overview's counts (test_stats.py).
if os.environ.get("DJANGO_JOBS_STATS_EVERY"):
    DJANGO_JOBS["STATS_EVERY"] = float(os.environ["DJANGO_JOBS_STATS_EVERY"])

# DJANGO_JOBS_TEST_SPANS_FILE: a worker subprocess records its spans there (test_tracing.py).
if os.environ.get("DJANGO_JOBS_TEST_SPANS_FILE"):
    from tests.otel_support import export_spans_to

    export_spans_to(os.environ["DJANGO_JOBS_TEST_SPANS_FILE"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_jobs",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django 6.1 replaces EMAIL_BACKEND (deprecated there) with MAILERS.
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_jobs": {"handlers": ["console"], "level": "INFO"}},
}

# Django's tasks framework (django.tasks; the django-tasks backport on Django 5.2) runs its
# @task functions through django_jobs. "retrying" is the backend with retries.
TASKS = {
    "default": {"BACKEND": "django_jobs.backend.JobsBackend", "QUEUES": ["default", "emails"]},
    "retrying": {
        "BACKEND": "django_jobs.backend.JobsBackend",
        "OPTIONS": {"MAX_ATTEMPTS": 3, "BACKOFF": 0.01},
    },
}
