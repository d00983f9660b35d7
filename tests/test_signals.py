"""Signals and logging of a worker, run in-process (in pytest's main thread) with burst=True."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_jobs import now
from django_jobs.exceptions import UnknownJob
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from django_jobs.signals import job_failed, job_started, job_succeeded
from django_jobs.worker import Worker
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


class Received:
    """Collects every signal sent, from whichever worker thread sent it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def receiver(self, name: str):
        def receive(**kwargs: Any) -> None:
            # The job as the receiver sees it when it is called (the instance changes later).
            job = kwargs["job"]
            kwargs["seen"] = {"state": job.state, "locked_by": job.locked_by}
            with self._lock:
                self.calls.append((name, kwargs))

        return receive

    def of(self, name: str, job: Job) -> list[dict[str, Any]]:
        return [kw for n, kw in self.calls if n == name and kw["job"].pk == job.pk]


@pytest.fixture
def received() -> Iterator[Received]:
    got = Received()
    receivers = {
        job_started: got.receiver("started"),
        job_succeeded: got.receiver("succeeded"),
        job_failed: got.receiver("failed"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver, dispatch_uid=f"test-{id(receiver)}")
    yield got
    for signal, receiver in receivers.items():
        signal.disconnect(dispatch_uid=f"test-{id(receiver)}")


def run_worker(**options: Any) -> None:
    assert threading.current_thread() is threading.main_thread()
    options.setdefault("poll_interval", 0.2)
    assert Worker(burst=True, worker_id="signals", **options).run() == 0


def test_job_started_and_job_succeeded(received):
    job = now("sleep", {"seconds": 0})
    run_worker()

    (started,) = received.of("started", job)
    assert set(started) == {"signal", "sender", "job", "run", "seen"}
    assert started["seen"] == {"state": JobState.RUNNING, "locked_by": "signals"}
    assert started["sender"] is Job and started["signal"] is job_started
    assert started["job"].pk == job.pk and started["job"].attempt == 1
    assert isinstance(started["run"], JobRun) and started["run"].attempt == 1

    (succeeded,) = received.of("succeeded", job)
    assert set(succeeded) == {"signal", "sender", "job", "run", "result", "seen"}
    # The job as written, not as claimed.
    assert succeeded["seen"] == {"state": JobState.SUCCEEDED, "locked_by": None}
    assert succeeded["job"].result == {"slept": 0}
    assert succeeded["run"].outcome == RunOutcome.SUCCEEDED
    assert succeeded["sender"] is Job and succeeded["signal"] is job_succeeded
    assert succeeded["result"] == {"slept": 0}
    assert succeeded["run"].pk == started["run"].pk
    assert received.of("failed", job) == []
    # Sent after the outcome was written.
    assert JobRun.objects.get(pk=succeeded["run"].pk).outcome == RunOutcome.SUCCEEDED


def test_job_failed_says_whether_it_will_retry(received):
    job = now("always-fails")  # max_attempts=2, backoff 0.01 s
    run_worker()

    failures = received.of("failed", job)
    assert [f["will_retry"] for f in failures] == [True, False]
    # As written: due again after the first failure, failed for good after the second.
    assert [f["seen"]["state"] for f in failures] == [JobState.SCHEDULED, JobState.FAILED]
    assert failures[-1]["job"].last_error_class == "builtins.ValueError"
    assert failures[-1]["job"].failure_count == 2  # computed by the database, read on access
    for failure, attempt in zip(failures, (1, 2), strict=True):
        assert set(failure) == {
            "signal",
            "sender",
            "job",
            "run",
            "exception",
            "will_retry",
            "seen",
        }
        assert failure["sender"] is Job and failure["signal"] is job_failed
        assert isinstance(failure["exception"], ValueError)
        assert str(failure["exception"]) == "broken <script>alert(1)</script>"
        assert failure["run"].attempt == attempt
    assert len(received.of("started", job)) == 2
    assert received.of("succeeded", job) == []
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.attempts == 2


def test_an_unknown_job_sends_job_failed_without_job_started(received):
    ghost = Job.objects.create(name="ghost", next_run_at=timezone.now() - timedelta(seconds=1))
    run_worker()
    (failure,) = received.of("failed", ghost)
    assert isinstance(failure["exception"], UnknownJob)
    assert "No job named 'ghost' is registered" in str(failure["exception"])
    assert failure["will_retry"] is False
    assert received.of("started", ghost) == []


def test_a_failing_receiver_does_not_break_the_run(received, caplog):
    def broken_receiver(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    job_started.connect(broken_receiver, dispatch_uid="test-broken")
    job_succeeded.connect(broken_receiver, dispatch_uid="test-broken")
    try:
        job = now("record")
        run_worker()
    finally:
        job_started.disconnect(dispatch_uid="test-broken")
        job_succeeded.disconnect(dispatch_uid="test-broken")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert JobRun.objects.get(job=job).outcome == RunOutcome.SUCCEEDED
    # The other receivers still got their signals, and the error was logged.
    assert len(received.of("started", job)) == 1 and len(received.of("succeeded", job)) == 1
    errors = [
        r
        for r in caplog.records
        if r.name.startswith("django_jobs") and "receiver bug" in r.getMessage()
    ]
    assert len(errors) == 2
    assert all(r.levelno == logging.ERROR and f"record #{job.pk}" in r.getMessage() for r in errors)


def test_a_job_thread_closes_the_connections_its_jobs_open():
    # As around a request: the connection a job opened on its thread (CONN_MAX_AGE is 0
    # here) is closed once its run is over.
    from django.db import connections

    wrappers: dict[str, Any] = {}

    def keep(job: Job, **kwargs: Any) -> None:
        # On the job's thread, once its outcome is written (someone listens).
        wrappers[job.name] = connections["default"]

    job_succeeded.connect(keep, dispatch_uid="test-keep-connection")
    try:
        now("record")
        run_worker(concurrency=1)
        assert wrappers["record"].connection is None
        assert Execution.objects.count() == 1  # the job did open one
    finally:
        job_succeeded.disconnect(dispatch_uid="test-keep-connection")


def test_logging_goes_to_the_django_jobs_logger(caplog):
    caplog.set_level(logging.INFO, logger="django_jobs")
    ok = now("record")
    bad = now("always-fails")
    ghost = Job.objects.create(name="ghost", next_run_at=timezone.now() - timedelta(seconds=1))
    run_worker()

    records = caplog.records
    assert records
    assert all(r.name == "django_jobs" or r.name.startswith("django_jobs.") for r in records)
    messages = [(r.levelno, r.getMessage()) for r in records]

    def logged(level: int, text: str) -> bool:
        return any(lv == level and text in message for lv, message in messages)

    assert logged(logging.INFO, "Worker signals started")
    assert logged(logging.INFO, f"Job record #{ok.pk} succeeded in")
    assert logged(logging.WARNING, f"Job always-fails #{bad.pk} attempt 1/2 failed: ValueError")
    assert logged(logging.WARNING, f"Job always-fails #{bad.pk} attempt 2/2 failed: ValueError")
    assert logged(logging.ERROR, f"Job ghost #{ghost.pk} failed: No job named 'ghost'")
    assert logged(logging.INFO, "Worker signals: nothing is due; stopping (--burst).")
    assert logged(logging.INFO, "Worker signals stopped after")


def test_a_handler_on_the_django_jobs_logger_receives_the_records():
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Collect(level=logging.INFO)
    logger = logging.getLogger("django_jobs")
    logger.addHandler(handler)
    try:
        job = now("record")
        run_worker()
    finally:
        logger.removeHandler(handler)
    assert any(f"Job record #{job.pk} succeeded" in r.getMessage() for r in seen)
