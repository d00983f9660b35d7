"""The chaos script in short form, on the database of this test run (see docs/chaos.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHAOS = ROOT / "tests" / "chaos" / "chaos.py"
# About 40 s a database: 3 workers for 30 s, then the drain and the stop.
SHORT_FORM = ["--workers", "3", "--concurrency", "3", "--jobs", "300", "--seconds", "30"]
TIMEOUT = 240  # seconds: the script bounds itself well within this


@pytest.mark.parametrize("sqlite_defaults", [False, True], ids=["tuned", "django-defaults"])
def test_chaos_short_form_loses_nothing_and_never_runs_a_job_twice_while_locked(
    worker_env: dict[str, str], tmp_path: Path, sqlite_defaults: bool
) -> None:
    extra = []
    if sqlite_defaults:
        if connection.vendor != "sqlite":
            pytest.skip("Django's default SQLite settings concern SQLite only.")
        with connection.cursor() as cursor:
            # The rollback journal of a new SQLite file (the test settings use WAL), and the
            # workers get no OPTIONS at all: Django's defaults, as the issue asks.
            cursor.execute("PRAGMA journal_mode=DELETE")
        extra = ["--sqlite-defaults"]
    # The script cuts every connection to this database but its own: ours must not be open.
    connection.close()
    command = [
        sys.executable,
        str(CHAOS),
        "--use-env-db",
        *extra,
        *SHORT_FORM,
        "--seed",
        "1",
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    result = subprocess.run(
        command,
        env=worker_env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    print(result.stdout)  # pytest shows it when the test fails
    assert result.returncode == 0, (
        f"chaos.py exited {result.returncode}:\n{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
    )
