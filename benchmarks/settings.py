"""Settings of the benchmark: its own database (BENCH_DATABASE_URL) and a bench app.

Only what docs/deployment.md recommends for production is set: persistent connections with
health checks (CONN_MAX_AGE, CONN_HEALTH_CHECKS), on PostgreSQL prepared statements, and on
SQLite WAL with IMMEDIATE transactions. django_jobs logs at WARNING (see LOGGING below).
"""

import os
import tempfile
from pathlib import Path

import dj_database_url

SECRET_KEY = "django_jobs-benchmark-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"

_DEFAULT_SQLITE = Path(tempfile.gettempdir()) / "django_jobs_bench" / "bench.sqlite3"
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{_DEFAULT_SQLITE}")
# BENCH_DJANGO_DEFAULTS=1: Django's own defaults instead (no persistent connections, no
# SQLite options, no LOGGING), for "runjobs with no options" as a new project runs it.
DJANGO_DEFAULTS = os.environ.get("BENCH_DJANGO_DEFAULTS") == "1"
_db = dj_database_url.parse(
    DATABASE_URL, conn_max_age=0 if DJANGO_DEFAULTS else 600, conn_health_checks=not DJANGO_DEFAULTS
)
if DJANGO_DEFAULTS:
    pass
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
    }
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # psycopg 3 on a direct connection: prepared statements, so the claim is planned once
    # per connection (docs/deployment.md). BENCH_PREPARED=0 leaves them off, Django's default.
    if os.environ.get("BENCH_PREPARED", "1") != "0":
        _db["OPTIONS"] = {"prepare_threshold": 5}
elif _db["ENGINE"] == "django.db.backends.mysql":
    _db["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed"}
DATABASES = {"default": _db}

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_jobs",
    "benchmarks.benchapp",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DJANGO_JOBS: dict = {}
LOGGING: dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # WARNING, as docs/deployment.md recommends at thousands of jobs a second;
    # BENCH_LOG_LEVEL=INFO measures the cost of INFO (banners and summaries only since
    # per-job lines moved to django_jobs.jobs).
    "loggers": {
        "django_jobs": {
            "handlers": ["console"],
            "level": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
    },
}
if DJANGO_DEFAULTS:
    LOGGING = {"version": 1, "disable_existing_loggers": False}
