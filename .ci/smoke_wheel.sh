#!/usr/bin/env bash
# Smoke test of a built wheel, as a new user meets it: a clean venv, the wheel installed by
# file, and a throwaway Django project that migrates, schedules a @job and a @task, runs them
# with `runjobs --burst`, and renders the admin's job list (templates ship in the wheel).
#
#   .ci/smoke_wheel.sh dist/django_dbjobs-0.1.0-py3-none-any.whl
#
# PYTHON picks the interpreter of the clean venv (default: python3); it needs pip >= 22.3.
set -euo pipefail

WHEEL="$(realpath "${1:?usage: $0 path/to/django_dbjobs-*.whl}")"
PYTHON="${PYTHON:-python3}"
DIST="django-dbjobs"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/django-dbjobs-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# Nothing from the source tree or the caller's venv may leak into the clean venv.
unset PYTHONPATH DJANGO_SETTINGS_MODULE DATABASE_URL VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV
cd "$WORK"

step() { printf -- "--- [%3ds] %s\n" "$SECONDS" "$*"; }

step "Clean venv ($("$PYTHON" --version)) and the wheel $(basename "$WHEEL")"
# Without pip: PYTHON's own pip installs into it (pip --python), which spares the seconds
# that ensurepip takes.
"$PYTHON" -m venv --without-pip "$WORK/venv"
PY="$WORK/venv/bin/python"
# Django 6 needs Python 3.12, so an older Python gets Django 5.2, which has no django.tasks:
# there the backport comes with the wheel's `tasks` extra. One pip run, one resolve.
REQUIREMENT="$WHEEL"
if "$PY" -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then
    REQUIREMENT="$WHEEL[tasks]"
fi
"$PYTHON" -m pip --python "$PY" install --quiet --disable-pip-version-check "$REQUIREMENT"
"$PY" - "$DIST" "$WORK" <<'EOF'
import sys
from importlib.metadata import version
from pathlib import Path

import django
import django_jobs

dist, work = sys.argv[1], Path(sys.argv[2]).resolve()
installed = Path(django_jobs.__file__).resolve()
assert installed.is_relative_to(work / "venv"), f"django_jobs imported from {installed}"
assert django_jobs.__version__ == version(dist) != "0.0.0", django_jobs.__version__
print(f"{dist} {version(dist)} + Django {django.get_version()}, from {installed.parent}")
EOF

step "A throwaway project: SQLite in $WORK, one @job, one @task"
mkdir -p smokeproject smokeapp
touch smokeproject/__init__.py smokeapp/__init__.py
cat >manage.py <<'EOF'
import os
import sys

from django.core.management import execute_from_command_line

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smokeproject.settings")
execute_from_command_line(sys.argv)
EOF
cat >smokeproject/settings.py <<EOF
from pathlib import Path

import django

WORK = Path("$WORK")
SECRET_KEY = "smoke-test-only"
DEBUG = True
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_jobs",
    "smokeapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "smokeproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
STATIC_URL = "static/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": WORK / "db.sqlite3",
        # As docs/quickstart.md advises, so that \`check\` has nothing to say (no W001).
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL",
        },
    }
}
TASKS = {"default": {"BACKEND": "django_jobs.backend.JobsBackend"}}
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")
EOF
cat >smokeproject/urls.py <<'EOF'
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
EOF
cat >smokeapp/jobs.py <<'EOF'
from pathlib import Path

from django_jobs import job


@job("smoke-write-file")
def write_file(job):
    Path(job.data["path"]).write_text("ran\n")
EOF
cat >smokeapp/tasks.py <<'EOF'
try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task


@task()
def add(a, b):
    return a + b
EOF
manage() { "$PY" manage.py "$@"; }

step "check, migrate"
manage check --fail-level WARNING
manage migrate --verbosity 0

step "Schedule the job and enqueue the task (manage.py shell -c)"
manage shell -c "
from django_jobs import now
from smokeapp.tasks import add
now('smoke-write-file', {'path': '$WORK/ran.txt'})
print('task', add.enqueue(2, 3).id)
"

step "runjobs --burst"
timeout 120 "$PY" manage.py runjobs --burst

step "Both ran, and the admin lists them"
test -f "$WORK/ran.txt" || { echo "The job did not write $WORK/ran.txt." >&2; exit 1; }
manage shell -c "
from django.contrib.auth.models import User
from django.test import Client
from django_jobs.models import Job
from smokeapp.tasks import add

states = dict(Job.objects.values_list('name', 'state'))
assert states == {'smoke-write-file': 'succeeded', 'smokeapp.tasks.add': 'succeeded'}, states
task_id = str(Job.objects.get(name='smokeapp.tasks.add').pk)
assert add.get_result(task_id).return_value == 5
client = Client()
client.force_login(User.objects.create_superuser('admin', 'admin@example.com', 'x'))
page = client.get('/admin/django_jobs/job/')
assert page.status_code == 200 and b'smoke-write-file' in page.content, page.status_code
print('succeeded:', ', '.join(sorted(states)), '| the admin job list renders')
"
step "Smoke test passed"
