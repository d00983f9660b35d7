"""The worker's batched writes: claim_and_start() and finish_many(), on every database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from django_jobs import claiming
from django_jobs.claiming import Failure, Outcome, claim_and_start, finish_many, release
from django_jobs.models import Job, JobRun, JobState, RunOutcome

pytestmark = pytest.mark.django_db


def due(**fields) -> Job:
    fields.setdefault("next_run_at", timezone.now() - timedelta(seconds=1))
    fields.setdefault("name", "record")
    return Job.objects.create(**fields)


def claim(limit: int = 10, worker_id: str = "w1"):
    return claim_and_start(worker_id=worker_id, queues=[], limit=limit, lock_lifetime=30)


def test_a_claim_records_the_run_of_each_job_in_claim_order():
    low = due(priority=-10)
    first = due(next_run_at=timezone.now() - timedelta(minutes=5))
    second = due()
    claimed = claim()
    assert [job.pk for job, _ in claimed] == [first.pk, second.pk, low.pk]
    for job, run in claimed:
        assert job.state == JobState.RUNNING and job.attempts == 1 and job.lock_token
        stored = JobRun.objects.get(pk=run.pk)
        assert (stored.job_id, stored.attempt, stored.worker_id, stored.lock_token) == (
            job.pk,
            1,
            "w1",
            job.lock_token,
        )
        assert stored.outcome == RunOutcome.RUNNING and stored.error_class == ""
        assert run.job is job and run.started_at == stored.started_at
        assert Job.objects.get(pk=job.pk).locked_by == "w1"
    assert claim() == []


def test_a_claim_takes_at_most_its_limit_and_skips_future_and_disabled_jobs():
    for _ in range(5):
        due()
    due(next_run_at=timezone.now() + timedelta(hours=1))
    due(enabled=False)
    assert len(claim(limit=3)) == 3
    assert len(claim(limit=3)) == 2
    assert claim(limit=3) == []


def test_finish_many_writes_each_outcome_of_a_mixed_batch():
    ok, other, retried, failed = (due() for _ in range(4))
    recurring = due(schedule="every 5 minutes")
    Job.objects.filter(pk=failed.pk).update(max_attempts=1)
    claimed = dict((job.pk, (job, run)) for job, run in claim())
    start = timezone.now()
    outcomes = [
        Outcome(*claimed[ok.pk], result={"n": 1}),
        Outcome(*claimed[other.pk], result=[1, 2]),
        Outcome(
            *claimed[retried.pk],
            failure=Failure("ValueError: x", "tb", error_class="builtins.ValueError"),
            retry_delay=timedelta(minutes=1),
        ),
        Outcome(*claimed[failed.pk], failure=Failure("KeyError: y", "tb2")),
        Outcome(*claimed[recurring.pk], result=None),
    ]
    assert finish_many(outcomes) == [True] * 5

    ok.refresh_from_db(), other.refresh_from_db(), retried.refresh_from_db()
    failed.refresh_from_db(), recurring.refresh_from_db()
    assert (ok.state, ok.result, ok.lock_token) == (JobState.SUCCEEDED, {"n": 1}, None)
    assert (other.state, other.result) == (JobState.SUCCEEDED, [1, 2])
    assert ok.last_finished_at == outcomes[0].finished_at  # each row its own finish time
    assert other.last_finished_at == outcomes[1].finished_at
    assert retried.state == JobState.SCHEDULED and retried.failure_count == 1
    assert retried.next_run_at >= start + timedelta(seconds=59)
    assert retried.last_error == "ValueError: x"
    assert retried.last_error_class == "builtins.ValueError"
    assert failed.state == JobState.FAILED and failed.last_traceback == "tb2"
    assert failed.last_error_class == ""  # a failure that names no class
    assert recurring.state == JobState.SCHEDULED and recurring.attempts == 0
    assert recurring.next_run_at > start

    runs = {run.job_id: run for run in JobRun.objects.all()}
    assert runs[ok.pk].outcome == RunOutcome.SUCCEEDED
    assert runs[ok.pk].finished_at == outcomes[0].finished_at
    assert (runs[retried.pk].outcome, runs[retried.pk].error_class) == (
        RunOutcome.FAILED,
        "builtins.ValueError",
    )
    assert (runs[failed.pk].error, runs[failed.pk].traceback) == ("KeyError: y", "tb2")


def test_finish_many_writes_nothing_for_a_job_whose_lock_was_taken_over():
    kept, lost = due(), due()
    (job_a, run_a), (job_b, run_b) = claim()
    assert {job_a.pk, job_b.pk} == {kept.pk, lost.pk}
    mine = {job_a.pk: (job_a, run_a), job_b.pk: (job_b, run_b)}
    # The lock of `lost` expires, another worker recovers it and claims it again.
    Job.objects.filter(pk=lost.pk).update(locked_until=timezone.now() - timedelta(minutes=1))
    assert claiming.recover_stale() == 1
    ((again, again_run),) = claim(worker_id="w2")
    assert again.pk == lost.pk

    written = finish_many(
        [Outcome(*mine[kept.pk], result="mine"), Outcome(*mine[lost.pk], result="stale")]
    )
    assert written == [True, False]
    lost.refresh_from_db()
    assert (lost.state, lost.locked_by, lost.result) == (JobState.RUNNING, "w2", None)
    assert JobRun.objects.get(pk=mine[lost.pk][1].pk).outcome == RunOutcome.ORPHANED
    assert JobRun.objects.get(pk=again_run.pk).outcome == RunOutcome.RUNNING
    assert Job.objects.get(pk=kept.pk).result == "mine"


def test_finish_many_counts_failures_with_the_database_expression():
    job = due(max_attempts=5)
    Job.objects.filter(pk=job.pk).update(failure_count=F("failure_count") + 2)
    ((claimed, run),) = claim()
    finish_many([Outcome(claimed, run, failure=Failure("x"), retry_delay=timedelta(0))])
    assert Job.objects.get(pk=job.pk).failure_count == 3


def fail_and_retry(job: Job, error: str, error_class: str):
    """Claim `job`, fail its attempt with `error_class`, and make it due again."""
    ((claimed, run),) = claim()
    failure = Failure(error, "tb", error_class=error_class)
    assert finish_many([Outcome(claimed, run, failure=failure, retry_delay=timedelta(0))])
    Job.objects.filter(pk=job.pk).update(next_run_at=timezone.now() - timedelta(seconds=1))
    job.refresh_from_db()


def test_the_job_keeps_the_class_of_its_last_error_until_it_succeeds():
    job = due(max_attempts=3)
    fail_and_retry(job, "ValueError: x", "builtins.ValueError")
    assert (job.last_error, job.last_error_class) == ("ValueError: x", "builtins.ValueError")
    fail_and_retry(job, "KeyError: 'y'", "builtins.KeyError")
    assert (job.last_error, job.last_error_class) == ("KeyError: 'y'", "builtins.KeyError")

    ((claimed, run),) = claim()
    assert finish_many([Outcome(claimed, run, result="ok")]) == [True]
    job.refresh_from_db()
    assert (job.state, job.last_error, job.last_error_class) == (JobState.SUCCEEDED, "", "")


def test_a_lost_worker_clears_the_class_of_an_earlier_error():
    job = due(max_attempts=3)
    fail_and_retry(job, "ValueError: x", "builtins.ValueError")
    ((_, run),) = claim(worker_id="dead")
    Job.objects.filter(pk=job.pk).update(locked_until=timezone.now() - timedelta(minutes=1))
    assert claiming.recover_stale() == 1

    job.refresh_from_db()
    assert "dead" in job.last_error
    assert job.last_error_class == ""  # no exception was raised, as on the orphaned run
    assert JobRun.objects.get(pk=run.pk).error_class == ""


def test_release_can_discard_the_run_of_a_job_that_never_started():
    job = due()
    ((claimed, run),) = claim()
    assert release(claimed, run, reason="", discard_run=True)
    job.refresh_from_db()
    assert (job.state, job.attempts, job.lock_token) == (JobState.SCHEDULED, 0, None)
    assert not JobRun.objects.exists()


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="Only PostgreSQL refuses a NUL in a JSON string."
)
@pytest.mark.django_db(transaction=True)
def test_an_outcome_the_database_refuses_does_not_hold_back_the_others(caplog):
    from django_jobs.worker import Running, Worker

    good, bad = due(), due()
    worker = Worker(worker_id="w1")
    for job, run in claim():
        entry = Running(job, run)
        entry.outcome = Outcome(job, run, result="fine" if job.pk == good.pk else "nul\x00")
        worker._running[(job.pk, job.lock_token)] = entry
        worker._outbox.put(entry)
    worker._write_outcomes()

    assert Job.objects.get(pk=good.pk).state == JobState.SUCCEEDED
    # The refused one keeps its lock; it expires and the job is recovered.
    assert Job.objects.get(pk=bad.pk).state == JobState.RUNNING
    assert not worker._running and not worker._outbox
    assert f"Could not record the outcome of job record #{bad.pk}" in caplog.text


def _succeeded(claimed) -> list[Outcome]:
    return [Outcome(job, run, finished_at=run.started_at) for job, run in claimed]


@pytest.mark.django_db(transaction=True)
def test_outcomes_sent_with_a_claim_are_written_in_its_transaction():
    first, second = due(), due()
    ended = _succeeded(claim(limit=2))
    waiting = due()

    result = claiming.claim_batch(
        worker_id="w1", queues=[], limit=2, lock_lifetime=30, finish=ended
    )

    assert result.written == [True, True]
    assert [job.pk for job, _ in result.claimed] == [waiting.pk]
    for job in (first, second):
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED and job.lock_token is None
    assert set(JobRun.objects.values_list("job_id", "outcome")) == {
        (first.pk, RunOutcome.SUCCEEDED),
        (second.pk, RunOutcome.SUCCEEDED),
        (waiting.pk, RunOutcome.RUNNING),
    }
    if connection.vendor == "postgresql":
        # One transaction wrote both: the rows carry the same transaction id.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT xmin::text FROM django_jobs_job WHERE id = ANY(%s)",
                [[first.pk, second.pk, waiting.pk]],
            )
            assert len(cursor.fetchall()) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("limit", [5, 0], ids=["nothing-due", "no-free-slot"])
def test_outcomes_sent_with_a_claim_that_takes_nothing_are_still_written(limit):
    job = due()
    ended = _succeeded(claim())

    result = claiming.claim_batch(
        worker_id="w1", queues=[], limit=limit, lock_lifetime=30, finish=ended
    )

    assert result.claimed == [] and result.written == [True]
    assert Job.objects.get(pk=job.pk).state == JobState.SUCCEEDED


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="Only PostgreSQL refuses a NUL in a JSON string."
)
@pytest.mark.django_db(transaction=True)
def test_a_refused_outcome_sent_with_a_claim_rolls_the_claim_back_and_is_written_alone(caplog):
    good, bad = due(), due()
    worker = _worker_with_ended(2, lambda job: "fine" if job.pk == good.pk else "nul\x00")
    waiting = due()

    started = worker._write_and_claim()

    assert Job.objects.get(pk=good.pk).state == JobState.SUCCEEDED
    assert Job.objects.get(pk=bad.pk).state == JobState.RUNNING  # its lock expires later
    assert f"Could not record the outcome of job record #{bad.pk}" in caplog.text
    # The claim that went with the refused batch was rolled back with it; the claim made
    # after the outcomes were written one by one took the job, once.
    assert [job.pk for job in started] == [waiting.pk]
    assert JobRun.objects.filter(job_id=waiting.pk).count() == 1
    assert Job.objects.get(pk=waiting.pk).attempts == 1


@pytest.mark.django_db(transaction=True)
def test_the_claim_loop_fills_the_slots_its_written_outcomes_free():
    due(), due()
    worker = _worker_with_ended(2)
    waiting = [due(), due(), due()]

    started = worker._write_and_claim()

    # Both slots were busy until the outcomes were written: the claim took two, not none.
    assert [job.pk for job in started] == [job.pk for job in waiting[:2]]
    assert len(worker._running) == 2 and not worker._outbox
    assert Job.objects.filter(state=JobState.SUCCEEDED).count() == 2


def _worker_with_ended(concurrency: int = 10, result=lambda job: None):
    """A Worker (not started) whose claimed jobs have all ended and wait in its outbox, each
    with the result `result(job)`; its pool keeps what it is given instead of running it."""
    from django_jobs.worker import Running, Worker

    worker = Worker(worker_id="w1", concurrency=concurrency)
    for job, run in claim():
        entry = Running(job, run)
        entry.outcome = Outcome(job, run, result=result(job), finished_at=run.started_at)
        worker._running[(job.pk, job.lock_token)] = entry
        worker._outbox.put(entry)
    worker._pool = _NoThreads()
    return worker


class _NoThreads:
    """A pool that keeps what it is given: the tests look at the claimed jobs, not runs."""

    def __init__(self) -> None:
        self.items: list = []

    def submit(self, item, in_flight: int) -> None:
        self.items.append(item)


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="SQLite's group lock is its one write lock, which the outcomes wait for too.",
)
@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_never_waits_for_a_limited_claim_that_waits_for_its_group():
    """CI's chaos run saw it on MariaDB: a job whose own lock lasts 1 s lost it while its
    worker's heartbeat waited for the claim loop, whose claim of a limited job waited for
    that job's group lock; the job was recovered and ran twice."""
    import threading

    from django.db import connections

    from django_jobs.claiming.limits import Group, group_lock

    due()
    worker = _worker_with_ended(4)
    waiting = due(name="limited", limited=True)  # its definition says concurrency=1
    held, release = threading.Event(), threading.Event()

    def hold_the_group() -> None:  # another worker's claim of the group, on its connection
        try:
            with group_lock("default", Group("limited", None)):
                held.set()
                release.wait(30)
        finally:
            connections.close_all()

    started: list = []

    def claim_loop() -> None:
        try:
            started.extend(worker._write_and_claim())
        finally:
            connections.close_all()

    worker._register()  # its row, which each beat marks alive
    holder = threading.Thread(target=hold_the_group)
    holder.start()
    assert held.wait(10)
    loop = threading.Thread(target=claim_loop)
    loop.start()
    try:
        wait_until = timezone.now() + timedelta(seconds=10)
        while JobRun.objects.filter(outcome=RunOutcome.SUCCEEDED).count() < 1:
            assert timezone.now() < wait_until, "the outcome was not written"
        # The claim loop now waits for the group; a beat must not wait for it.
        beaten = threading.Event()

        def beat() -> None:
            try:
                worker.beat()
                beaten.set()
            finally:
                connections.close_all()

        threading.Thread(target=beat).start()
        assert beaten.wait(5), "the heartbeat waits for the claim loop"
    finally:
        release.set()
        holder.join(30)
        loop.join(30)
    assert [job.pk for job in started] == [waiting.pk]


# Claiming ahead (CLAIM_AHEAD): only while the worker's jobs are quick.


def _two_passes(worker) -> int:
    """The jobs the worker holds after two passes of its claim loop: on PostgreSQL the first
    claim rides with the outcomes' write, so it is made before those runs are judged."""
    worker._write_and_claim()
    worker._write_and_claim()
    return len(worker._running)


def _worker_ahead(ahead: int, runs_took: float):
    """A Worker of 2 threads whose 2 claimed runs ended `runs_took` seconds after their
    claim and wait to be written, `ahead` its CLAIM_AHEAD, and 10 more jobs due."""
    due(), due()
    worker = _worker_with_ended(2)
    for entry in worker._running.values():
        entry.ended = entry.started + runs_took
    worker.claim_ahead = ahead
    for _ in range(10):
        due()
    return worker


@pytest.mark.django_db(transaction=True)
def test_after_quick_runs_a_worker_claims_ahead_of_its_free_threads():
    worker = _worker_ahead(3, runs_took=0.001)
    assert _two_passes(worker) == 2 + 3
    assert len(worker._pool.items) == 5  # handed to the pool, whose queue holds them


@pytest.mark.parametrize(
    ("ahead", "run_took"),
    [(0, 0.001), (3, 0.5)],
    ids=["turned off", "the runs written last were long"],
)
@pytest.mark.django_db(transaction=True)
def test_no_claim_ahead_when_turned_off_or_after_a_long_run(ahead, run_took):
    worker = _worker_ahead(ahead, runs_took=run_took)
    assert _two_passes(worker) == 2


@pytest.mark.django_db(transaction=True)
def test_jobs_claimed_ahead_are_handed_back_when_every_thread_runs_long(start_worker, tmp_path):
    """A job claimed ahead waits for a free thread. When every thread turns out to run a long
    job, the jobs still waiting are handed back for other workers, not held behind it."""
    from django.db import transaction

    from django_jobs import now

    from .conftest import wait_for

    lines = tmp_path / "runs.txt"
    quick = {"path": str(lines)}
    first = start_worker("--concurrency", "1", "--worker-id", "first", "--lock-lifetime", "30")
    warm_up = [now("append-line", quick).pk for _ in range(2)]

    def warmed_up() -> bool:  # written: the worker now knows its runs are quick
        return Job.objects.filter(pk__in=warm_up, state=JobState.SUCCEEDED).count() == 2

    wait_for(warmed_up)
    with transaction.atomic():  # one commit: claimed in one pass, the long one first
        long = now("append-line", {**quick, "seconds": 6}, priority=10)
        waiting = [now("append-line", quick).pk for _ in range(4)]

    def long_started() -> bool:
        return Job.objects.filter(pk=long.pk, state=JobState.RUNNING).exists()

    def handed_back() -> bool:
        back = Job.objects.filter(
            pk__in=waiting, state=JobState.SCHEDULED, locked_by=None, attempts=0
        )
        runs = JobRun.objects.filter(job_id__in=waiting)
        return back.count() == len(waiting) and not runs.exists()

    wait_for(long_started)
    wait_for(handed_back, timeout=3)  # before: they waited the long job's 6 seconds
    assert "handed back" in first.output()
    start_worker("--concurrency", "2", "--worker-id", "second")

    def all_ran() -> bool:
        return Job.objects.filter(pk__in=[long.pk, *waiting], state=JobState.SUCCEEDED).count() == 5

    wait_for(all_ran, timeout=30)
    counts = [line.split()[0] for line in lines.read_text().splitlines()]
    assert sorted(counts) == sorted(str(pk) for pk in [*warm_up, long.pk, *waiting])
    assert JobRun.objects.get(job_id=long.pk).worker_id == "first"
    assert set(JobRun.objects.filter(job_id__in=waiting).values_list("worker_id", flat=True)) == {
        "second"
    }


@pytest.mark.django_db(transaction=True)
def test_no_claim_ahead_while_a_run_is_older_than_a_quick_one():
    import time

    from django_jobs.worker import process

    worker = _worker_ahead(3, runs_took=0.001)
    worker._write_and_claim()
    worker._write_and_claim()  # now it knows its runs are quick, and claims ahead
    held = len(worker._running)
    assert held == 5
    # One of its jobs has run for longer than a quick run: nothing more is claimed ahead,
    # even once the others end (a job claimed now might wait behind the long one).
    oldest, *others = worker._running.values()
    oldest.started = time.monotonic() - process.QUICK_RUN - 0.01
    for entry in others:
        entry.outcome = Outcome(entry.job, entry.run, result=None, finished_at=None)
        entry.ended = entry.started + 0.001
        worker._outbox.put(entry)
    worker._write_and_claim()
    worker._write_and_claim()
    assert len(worker._running) == 2  # the long one and one for the free thread
