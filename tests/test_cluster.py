"""`runjobs --processes N`: the supervisor, its children, restarts and signals."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter

import pytest
from django.core.management import CommandError, call_command

from django_jobs import cluster, now, schedule_many
from django_jobs.cluster import cpu_count
from django_jobs.models import Job, JobRun, JobState, RunOutcome, Worker
from tests.conftest import wait_for
from tests.testapp.models import Execution

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def workers_named(prefix: str) -> dict[str, int]:
    """worker_id -> pid of the live Worker rows whose id starts with `prefix`."""
    return dict(Worker.objects.filter(worker_id__startswith=prefix).values_list("worker_id", "pid"))


def test_two_processes_run_every_job_exactly_once(start_worker):
    schedule_many(("now", "record", {"i": i}) for i in range(400))
    supervisor = start_worker(
        "--processes", "2", "--burst", "--concurrency", "4", "--worker-id", "c"
    )
    assert supervisor.wait(timeout=300) == 0, supervisor.output()

    assert Execution.objects.count() == 400
    assert Execution.objects.values("job_id").distinct().count() == 400
    assert Job.objects.filter(state=JobState.SUCCEEDED).count() == 400
    assert JobRun.objects.filter(outcome=RunOutcome.SUCCEEDED).count() == 400
    # Two children, each a full worker with its own id, pid and Worker row.
    output = supervisor.output()
    assert "starting 2 worker processes" in output
    assert "Worker c-1 started" in output and "Worker c-2 started" in output
    pids = {int(pid) for pid in re.findall(r"Started worker process \d \(pid (\d+)\)", output)}
    assert len(pids) == 2 and supervisor.pid not in pids
    assert set(Execution.objects.values_list("worker_pid", flat=True)) <= pids
    assert not Worker.objects.exists()  # each child removed its row on the way out


def test_sigterm_stops_every_child_gracefully(start_worker):
    supervisor = start_worker("--processes", "2", "--worker-id", "grace", "--grace-period", "30")
    wait_for(lambda: len(workers_named("grace-")) == 2)
    job = now("sleep", {"seconds": 1.5})
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING).exists())

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0, supervisor.output()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED  # the running job finished first
    assert Execution.objects.filter(job_id=job.pk).count() == 1
    assert not Worker.objects.exists()
    output = supervisor.output()
    assert "SIGTERM received, stopping 2 worker process(es) gracefully" in output
    assert output.count("SIGTERM received, finishing running jobs") == 2  # one per child


def test_a_child_that_dies_is_replaced(start_worker):
    supervisor = start_worker("--processes", "2", "--worker-id", "kid", "--lock-lifetime", "2")
    wait_for(lambda: len(workers_named("kid-")) == 2)
    doomed = workers_named("kid-")["kid-1"]
    job = now("sleep", {"seconds": 0.5})
    os.kill(doomed, signal.SIGKILL)

    # A new kid-1 takes the slot (its Worker row now carries the new pid).
    wait_for(lambda: workers_named("kid-").get("kid-1") not in (None, doomed), timeout=30)
    assert "died (signal SIGKILL)" in supervisor.output()
    # Killed from outside, not crashed: replaced at once, without the crash back-off.
    assert "restarting it in 0.1s" in supervisor.output()
    # The cluster still works, whoever had the job when kid-1 died.
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(), 30)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0, supervisor.output()


def test_a_crash_loop_backs_off(start_worker):
    # Children that crash (SIGABRT, as a failed assertion in a C extension would), again and
    # again. (A child that cannot reach its database does not crash: it retries, see
    # test_trust.py.)
    supervisor = start_worker("--processes", "1", "--worker-id", "crashy")
    for _ in range(2):
        wait_for(lambda: "crashy-1" in workers_named("crashy-"), timeout=60)
        pid = workers_named("crashy-")["crashy-1"]
        Worker.objects.filter(worker_id="crashy-1").delete()
        os.kill(pid, signal.SIGABRT)
        wait_for(lambda p=pid: f"(pid {p}) died" in supervisor.output(), timeout=30)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0, supervisor.output()
    delays = re.findall(r"restarting it in ([\d.]+)s", supervisor.output())
    assert delays[:2] == ["1.0", "2.0"]  # doubling: a crash loop does not spin


def test_a_second_sigint_stops_the_children_at_once(start_worker):
    supervisor = start_worker("--processes", "1", "--worker-id", "hasty", "--grace-period", "60")
    wait_for(lambda: len(workers_named("hasty-")) == 1)
    job = now("sleep", {"seconds": 30})
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING).exists())
    supervisor.signal(signal.SIGINT)
    wait_for(lambda: "finishing running jobs" in supervisor.output(), timeout=10)
    supervisor.signal(signal.SIGINT)
    assert supervisor.wait(timeout=10) == 1
    assert "second interrupt" in supervisor.output()
    job.refresh_from_db()
    assert job.state == JobState.RUNNING  # left for the lock to expire and another to recover


def test_processes_auto_starts_one_per_core(start_worker):
    supervisor = start_worker("--processes", "auto", "--burst")
    assert supervisor.wait(timeout=120) == 0, supervisor.output()
    output = supervisor.output()
    assert f"starting {cpu_count()} worker processes" in output
    started = Counter(re.findall(r"Worker (\S+) started", output))
    assert len(started) == cpu_count()


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_bad_processes_are_refused(value):
    with pytest.raises(CommandError, match="--processes must be a whole number of 1 or more"):
        call_command("runjobs", "--processes", value)


def _sleeping_child(options, parent_pid, verbosity=1, metrics=False):
    """A child that only waits for a signal (forked with the stop signals blocked)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, cluster.STOP_SIGNALS)
    time.sleep(15)
    os._exit(0)


class _StopWhileForking:
    """The supervisor's fork lock, which stops the supervisor as it forks its first child.

    "pending": a SIGTERM to the supervisor's main thread, which waits (blocked) until the
    fork is done, as when the signal comes while the supervisor forks. "handled": the
    supervisor's handler runs at once, inside the fork, as when another of its threads (the
    metrics server's) takes the signal and Python runs the handler at the next instruction.
    """

    def __init__(self, supervisor: cluster.Supervisor, how: str) -> None:
        self.supervisor, self.how, self.sent = supervisor, how, False
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()
        if self.sent:
            return
        self.sent = True
        if self.how == "pending":
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        else:
            self.supervisor._on_signal(signal.SIGTERM, None)

    def __exit__(self, *exc_info) -> None:
        self._lock.release()


@pytest.mark.parametrize("how", ["pending", "handled"])
def test_a_stop_signal_that_comes_while_a_child_is_forked_stops_that_child_too(monkeypatch, how):
    # CI saw it: a SIGTERM that came while a killed child's replacement was forked stopped
    # the other children, but not the new one, so the supervisor waited for it for good.
    monkeypatch.setattr(cluster, "_child_main", _sleeping_child)
    supervisor = cluster.Supervisor(2, {})
    supervisor.fork_lock = _StopWhileForking(supervisor, how)  # type: ignore[assignment]
    started = time.monotonic()

    status = supervisor.run()

    assert time.monotonic() - started < 8, "the child forked during the stop was not stopped"
    assert status == 1  # the child ended by the forwarded SIGTERM (a real worker exits 0)
    assert all(slot.process is None for slot in supervisor.slots)
