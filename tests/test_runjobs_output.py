"""What `runjobs` prints: the banner, failures, a line per job at -v 2, summaries, -v 0.

The subprocesses run on tests.settings_nologging (a new project: no LOGGING), except where a
test checks that a project's LOGGING takes over (tests.settings).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db import connection

from django_jobs import notify, now
from django_jobs.conf import settings as jobs_settings
from django_jobs.worker import report
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture
def start_new_project_worker(
    transactional_db: None, worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `runjobs` subprocesses whose settings have no LOGGING."""
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.settings_nologging"}
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(list(args), env, tmp_path / f"quiet-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def run(start: Callable[..., WorkerProcess], *args: str) -> str:
    """Run a burst worker named "talk" to its end; its output."""
    worker = start("--burst", "--poll-interval", "0.1", "--worker-id", "talk", *args)
    assert worker.wait(timeout=120) == 0, worker.output()
    return worker.output()


def schedule_some() -> tuple[list[int], int]:
    """Three jobs that succeed and one that fails twice (its two attempts)."""
    oks = [now("record").pk for _ in range(3)]
    return oks, now("always-fails").pk


def lines(output: str, pattern: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(pattern, line)]


def test_a_new_project_gets_the_banner_failures_and_a_summary(start_new_project_worker):
    _, bad = schedule_some()
    output = run(start_new_project_worker)

    # The banner, once, in the console format: time, level, message.
    banner = lines(output, "Worker talk started")
    assert len(banner) == 1, output
    assert re.match(rf"{TIMESTAMP} INFO +Worker talk started: pid \d+, ", banner[0]), banner
    vendor, name = connection.vendor, connection.settings_dict["NAME"]
    assert f"queues *, concurrency 10, database {vendor} 'default' ({name}" in banner[0]
    if jobs_settings.NOTIFY and notify.supported("default"):
        assert "wake-up LISTEN/NOTIFY" in banner[0]
    else:
        assert "wake-up polling every 0.1s" in banner[0]
    assert "lock lifetime 30s" in banner[0]
    password = connection.settings_dict.get("PASSWORD")
    assert not password or password not in output
    # Failed attempts, always; no line per success at the default verbosity.
    assert re.search(
        rf"{TIMESTAMP} WARNING +Job always-fails #{bad} attempt 1/2 failed: ValueError: .*"
        r"\(after [\d.]+s; retry in 0.01s\)\.",
        output,
    ), output
    assert f"Job always-fails #{bad} attempt 2/2 failed" in output
    assert "no attempts left" in output
    assert "succeeded in" not in output
    # The summary when it stops.
    assert re.search(
        r"INFO +Worker talk stopped after 5 job\(s\) in [\d.]+s: "
        r"3 succeeded, 1 failed, 1 retried\.",
        output,
    ), output


def test_verbosity_2_prints_one_line_per_finished_job(start_new_project_worker):
    oks, bad = schedule_some()
    output = run(start_new_project_worker, "-v", "2")

    for pk in oks:
        found = lines(output, rf"Job record #{pk} succeeded in [\d.]+s \(attempt 1/1\)\.$")
        assert len(found) == 1, output
        assert re.match(rf"{TIMESTAMP} INFO ", found[0])
    assert len(lines(output, rf"Job always-fails #{bad} attempt \d/2 failed")) == 2
    # Five runs ended, five lines; each banner and summary line once.
    assert len(lines(output, r"(INFO|WARNING) +Job ")) == 5, output
    assert len(lines(output, "Worker talk started")) == 1
    assert len(lines(output, "Worker talk stopped after")) == 1


def test_verbosity_0_prints_only_warnings_and_errors(start_new_project_worker):
    _, bad = schedule_some()
    output = run(start_new_project_worker, "-v", "0")

    assert "started" not in output and "succeeded in" not in output
    assert "stopped after" not in output
    assert " INFO " not in output
    assert len(lines(output, rf"WARNING +Job always-fails #{bad} attempt")) == 2, output


def test_a_project_logging_takes_over_without_doubled_lines(start_worker):
    """tests.settings sends django_jobs to its own StreamHandler (message only, no time)."""
    oks, bad = schedule_some()
    worker = start_worker("--burst", "--poll-interval", "0.1", "--worker-id", "talk", "-v", "2")
    assert worker.wait(timeout=120) == 0, worker.output()
    output = worker.output()

    assert len(lines(output, "Worker talk started")) == 1, output
    assert output.count("Worker talk started") == 1
    assert not re.search(TIMESTAMP, output)  # runjobs added no console handler of its own
    for pk in oks:
        assert len(lines(output, rf"^Job record #{pk} succeeded in")) == 1, output
    assert len(lines(output, rf"^Job always-fails #{bad} attempt")) == 2
    assert len(lines(output, r"^Worker talk stopped after 5 job\(s\)")) == 1


def test_the_project_logging_at_info_gets_no_line_per_success(start_worker):
    """Its django_jobs logger is at INFO: -v 1 keeps the per-job lines off all the same."""
    now("record")
    worker = start_worker("--burst", "--poll-interval", "0.1", "--worker-id", "talk")
    assert worker.wait(timeout=120) == 0, worker.output()
    output = worker.output()
    assert "Worker talk started" in output and "succeeded in" not in output
    assert "Worker talk stopped after 1 job(s)" in output


def test_cluster_mode_prints_the_supervisor_line_and_each_child_banner(start_new_project_worker):
    for _ in range(6):
        now("record")
    supervisor = start_new_project_worker(
        "--processes", "2", "--burst", "--poll-interval", "0.1", "--worker-id", "cl"
    )
    assert supervisor.wait(timeout=120) == 0, supervisor.output()
    output = supervisor.output()

    assert len(lines(output, r"Supervisor \d+ starting 2 worker processes")) == 1, output
    assert "queues *, concurrency 10 each." in output
    for number in (1, 2):
        assert len(lines(output, f"Worker cl-{number} started: process {number} of 2, ")) == 1
        assert len(lines(output, f"Worker cl-{number} stopped after")) == 1
    assert "succeeded in" not in output


def entry(failed: bool = False, retrying: bool = False) -> SimpleNamespace:
    failure = SimpleNamespace(error="boom") if failed else None
    return SimpleNamespace(outcome=SimpleNamespace(failure=failure), retrying=retrying)


def test_a_summary_every_period_with_jobs_in_it(caplog):
    caplog.set_level(logging.INFO, logger="django_jobs")
    tally = report.Tally("sum", every=60)
    start = tally.window_started
    tally.add([entry(), entry(), entry(failed=True), entry(failed=True, retrying=True)])  # type: ignore[list-item]
    tally.tick(start + 30)
    assert not caplog.records  # not a minute yet
    tally.tick(start + 61)
    assert [r.getMessage() for r in caplog.records] == [
        "Worker sum: 2 succeeded, 1 failed, 1 retried in the last minute."
    ]
    caplog.clear()
    tally.tick(start + 125)  # a minute with nothing run: no line
    assert not caplog.records
    tally.add([entry()])  # type: ignore[list-item]
    tally.stopped()
    assert "Worker sum stopped after 5 job(s) in " in caplog.records[-1].getMessage()
    assert caplog.records[-1].getMessage().endswith(": 3 succeeded, 1 failed, 1 retried.")


def test_configure_logging_fills_in_levels_and_undoes_them():
    base, jobs = logging.getLogger("django_jobs"), logging.getLogger("django_jobs.jobs")
    saved = base.level, jobs.level
    base.setLevel(logging.NOTSET)
    jobs.setLevel(logging.NOTSET)
    try:
        undo = report.configure_logging(2)
        assert base.level == logging.INFO and jobs.level == logging.INFO
        undo()
        assert base.level == logging.NOTSET and jobs.level == logging.NOTSET
        undo = report.configure_logging(0)
        assert base.level == logging.WARNING and jobs.level == logging.WARNING
        undo()
        # A level the project set stays.
        jobs.setLevel(logging.ERROR)
        undo = report.configure_logging(2)
        assert jobs.level == logging.ERROR
        undo()
        assert jobs.level == logging.ERROR
    finally:
        base.setLevel(saved[0])
        jobs.setLevel(saved[1])


def test_a_console_handler_only_where_no_handler_would_print():
    root, base = logging.getLogger(), logging.getLogger("django_jobs")
    child = logging.getLogger("django_jobs.claiming")
    saved = root.handlers[:], base.handlers[:], child.handlers[:]
    root.handlers[:], base.handlers[:], child.handlers[:] = [], [], []
    try:

        def console_handlers() -> list[logging.Handler]:
            return [h for h in base.handlers if isinstance(h, report.ConsoleHandler)]

        undo = report.configure_logging(1)
        assert len(console_handlers()) == 1  # nothing would print: runjobs adds its own
        undo()
        assert console_handlers() == []
        for configured in (root, base, child):  # a handler anywhere on the way: none added
            configured.addHandler(logging.NullHandler())
            undo = report.configure_logging(1)
            assert console_handlers() == []
            undo()
            configured.handlers.clear()
    finally:
        root.handlers[:], base.handlers[:], child.handlers[:] = saved
