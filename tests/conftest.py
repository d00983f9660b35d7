"""Fixtures shared by the tests: real runjobs subprocesses against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """A `manage.py runjobs` subprocess whose output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "runjobs", *args],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def worker_env() -> dict[str, str]:
    """Environment that points a subprocess at the test database this test uses."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["DJANGO_JOBS_USE_TEST_DB"] = str(connection.settings_dict["NAME"])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def start_worker(
    transactional_db: None, worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `runjobs` subprocesses; every one still running at the end is killed."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(list(args), worker_env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@contextlib.contextmanager
def row_held(rows: Any) -> Iterator[None]:
    """Another connection holds the one row of the queryset `rows` (SELECT ... FOR UPDATE)
    until the block ends, as an admin action or a project's long transaction would."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:  # a connection of its own: Django's are per thread
            with transaction.atomic():
                rows.select_for_update().get()
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10), "the row could not be locked"
        yield
    finally:
        release.set()
        holder.join(30)


def wait_for(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.05) -> None:
    """Poll until predicate() is true; fail with the predicate's name after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")


def drain_while_killing_connections(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path, kill: Callable[[], int], jobs: int
) -> WorkerProcess:
    """Drain `jobs` jobs on one worker while `kill()` drops its database connections, then
    check that every job ran exactly once (counted in a file, outside the database)."""
    from collections import Counter

    from django_jobs import schedule_many
    from django_jobs.models import Job, JobRun, JobState, RunOutcome

    lines = tmp_path / "executions.txt"
    scheduled = schedule_many(
        ("now", "append-line", {"path": str(lines), "seconds": 0.005}) for _ in range(jobs)
    )
    worker = start_worker("--concurrency", "4", "--worker-id", "survivor", "--lock-lifetime", "3")

    def done() -> bool:
        return Job.objects.filter(state=JobState.SUCCEEDED).count() == len(scheduled)

    kills = 0
    deadline = time.monotonic() + 120
    while not done() and time.monotonic() < deadline:
        if kills < 6 and lines.exists() and kill():
            kills += 1
        time.sleep(0.25)
    wait_for(done, timeout=120)
    assert kills >= 2, "the drain ended before the connections could be killed"

    counts = Counter(int(line.split()[0]) for line in lines.read_text().splitlines())
    assert set(counts) == {job.pk for job in scheduled}
    assert set(counts.values()) == {1}, [pk for pk, n in counts.items() if n > 1]
    # Each has one successful run; nothing is left running (a claim whose answer was lost
    # comes back as an orphaned run once its lock expires, then runs).
    succeeded = Counter(
        JobRun.objects.filter(outcome=RunOutcome.SUCCEEDED).values_list("job_id", flat=True)
    )
    assert set(succeeded.values()) == {1} and len(succeeded) == len(scheduled)
    assert not JobRun.objects.filter(outcome=RunOutcome.RUNNING).exists()
    assert worker.proc.poll() is None  # it carried on
    return worker
