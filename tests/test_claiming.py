"""Claiming against the real database: order, filters, concurrency, lock fencing and recovery."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from django_jobs import now, schedule
from django_jobs.claiming import (
    Failure,
    Outcome,
    claims,
    extend_locks,
    finish_many,
    recover_stale,
    release,
)
from django_jobs.models import (
    RECURRING_KEY_PREFIX,
    DbNow,
    Job,
    JobRun,
    JobState,
    RunOutcome,
    db_now_plus,
)
from django_jobs.worker import Worker
from tests.claiming_support import LOCK, claim_jobs, finish
from tests.clock_support import db_time
from tests.conftest import row_held
from tests.testapp.models import Execution


def due(name: str = "record", seconds_ago: float = 1, **options) -> Job:
    """A job already due by the database's clock (SQLite's clock has millisecond resolution)."""
    return schedule(timedelta(seconds=-seconds_ago), name, **options)


def expire(job: Job) -> None:
    """Make the lock of `job` expire, by the database's clock, as if its worker had died."""
    Job.objects.filter(pk=job.pk).update(locked_until=db_now_plus(-5))


def recurring(schedule_text: str, next_run_at: datetime, **fields) -> Job:
    return Job.objects.create(
        name="monthly",
        schedule=schedule_text,
        timezone="UTC",
        next_run_at=next_run_at,
        unique_key=RECURRING_KEY_PREFIX + "monthly",
        **fields,
    )


def top_of_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# What a claim takes


@pytest.mark.django_db
def test_claim_locks_the_job_for_this_worker():
    job = due()
    (claimed,) = claim_jobs("w1")
    assert claimed.pk == job.pk
    assert claimed.state == JobState.RUNNING
    assert claimed.locked_by == "w1"
    assert len(claimed.lock_token) == 32
    assert claimed.attempts == 1 and claimed.attempt == 1
    assert claimed.last_started_at is not None
    assert claimed.locked_until > timezone.now() + timedelta(seconds=LOCK - 10)
    # Nothing is left to claim, for this worker or another.
    assert claim_jobs("w1") == []
    assert claim_jobs("w2") == []


@pytest.mark.django_db
def test_each_claim_writes_a_fresh_token():
    due(), due()
    first = claim_jobs("w1", limit=1)[0]
    second = claim_jobs("w1", limit=1)[0]
    assert first.lock_token != second.lock_token


@pytest.mark.django_db
def test_claim_order_is_priority_then_due_time(claim_path):
    low_early = due(seconds_ago=30, priority="low")
    normal_late = due(seconds_ago=5)
    normal_early = due(seconds_ago=20)
    high_late = due(seconds_ago=2, priority="high")
    high_early = due(seconds_ago=10, priority=50)
    expected = [high_early.pk, high_late.pk, normal_early.pk, normal_late.pk, low_early.pk]

    claimed = claim_jobs(limit=100)
    assert [j.pk for j in claimed] == expected
    # Claiming one at a time follows the same order.
    for job in claimed:
        assert release(job, None, reason="")
    assert [claim_jobs(limit=1)[0].pk for _ in expected] == expected


@pytest.mark.django_db
def test_limit(claim_path):
    for _ in range(5):
        due()
    assert len(claim_jobs(limit=2)) == 2
    assert claim_jobs(limit=0) == []
    assert claim_jobs(limit=-1) == []
    assert len(claim_jobs(limit=10)) == 3
    assert Job.objects.running().count() == 5


@pytest.mark.django_db
def test_queues_filter():
    a, b, default = due(queue="a"), due(queue="b"), due()
    assert [j.pk for j in claim_jobs(queues=["b"])] == [b.pk]
    assert claim_jobs(queues=["nothing-here"]) == []
    assert {j.pk for j in claim_jobs(queues=None)} == {a.pk, default.pk}


@pytest.mark.django_db
def test_queues_filter_with_several_queues():
    a, b, _ = due(queue="a"), due(queue="b"), due()
    assert {j.pk for j in claim_jobs(queues=["a", "b"])} == {a.pk, b.pk}


@pytest.mark.django_db
def test_excluded_names_are_left():
    due("sleep"), due("record")
    assert [j.name for j in claim_jobs(exclude_names=["sleep"])] == ["record"]


@pytest.mark.django_db
def test_disabled_future_and_finished_jobs_are_not_claimed(claim_path):
    disabled = due()
    disabled.disable()
    schedule("in 1 hour", "record")
    schedule(timedelta(seconds=30), "record")
    failed = due()
    (claimed,) = claim_jobs()
    assert claimed.pk == failed.pk
    finish(claimed, None, failure=Failure("x", retry=False))
    assert Job.objects.get(pk=failed.pk).state == JobState.FAILED

    assert claim_jobs() == []
    disabled.enable()
    assert [j.pk for j in claim_jobs()] == [disabled.pk]


@pytest.fixture(params=["native", "compare-and-set"])
def claim_path(request, monkeypatch):
    """Run a test with this database's own claim, and with the ORM-only compare-and-set one."""
    if request.param == "compare-and-set":
        monkeypatch.setattr(
            claims, "claim_strategy", lambda connection: claims._claim_compare_and_set
        )
    return request.param


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_take_the_same_job(claim_path):
    jobs = 120
    threads_count = 4
    ids = {j.pk for j in (due() for _ in range(jobs))}
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def claimer(worker_id: str) -> None:
        mine: list[int] = []
        claimed[worker_id] = mine
        try:
            start.wait()
            while True:
                got = claim_jobs(worker_id, limit=3)
                mine.extend(j.pk for j in got)
                # A compare-and-set claim can come back empty when other workers won every
                # row it picked, so "empty" means nothing is due any more.
                if not got and not Job.objects.due().exists():
                    return
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(f"t{n}",)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors

    counts = Counter(pk for mine in claimed.values() for pk in mine)
    assert set(counts) == ids
    assert set(counts.values()) == {1}, [pk for pk, n in counts.items() if n > 1]
    # The database agrees on who holds what.
    for worker_id, mine in claimed.items():
        assert set(Job.objects.filter(locked_by=worker_id).values_list("pk", flat=True)) == set(
            mine
        )
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_a_row_locked_by_another_transaction_is_skipped_not_waited_for():
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("SQLite claims with compare-and-set; it has no row locks to skip.")
    busy, free = due(priority="high"), due()
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            table = other.ops.quote_name(Job._meta.db_table)
            cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [busy.pk])
        # The other transaction holds the higher-priority row: this claim takes the next one.
        assert [j.pk for j in claim_jobs(limit=2)] == [free.pk]
        other.rollback()
    finally:
        other.close()
    assert [j.pk for j in claim_jobs(limit=2)] == [busy.pk]


# Lock expiry, the heartbeat and the fencing token


@pytest.mark.django_db
def test_lock_expiry_is_judged_by_the_database_clock(monkeypatch):
    job = due()
    (claimed,) = claim_jobs(lock_lifetime=60)
    assert not Job.objects.stale().exists()
    assert db_time() < claimed.locked_until

    # This host's clock running an hour fast changes nothing: the lock is the database's.
    fast = timezone.now() + timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: fast)
    assert not Job.objects.stale().exists()
    assert recover_stale() == 0
    monkeypatch.undo()

    expire(job)
    assert list(Job.objects.stale()) == [job]
    assert recover_stale() == 1
    assert not Job.objects.stale().exists()


@pytest.mark.django_db
def test_a_time_the_database_wrote_compares_equal_to_itself_read_back():
    # SQLite compares times as text: its clock's "…:05.123" was not equal to the same instant
    # written by Django ("…:05.123000"), nor to anything later within that millisecond.
    job = due()
    Job.objects.filter(pk=job.pk).update(next_run_at=DbNow(), locked_until=db_now_plus(30))
    job.refresh_from_db()
    assert Job.objects.filter(pk=job.pk, next_run_at=job.next_run_at).exists()
    assert Job.objects.filter(pk=job.pk, locked_until=job.locked_until).exists()
    assert Job.objects.filter(pk=job.pk, next_run_at__gte=job.next_run_at).exists()


@pytest.mark.django_db
def test_extend_locks_pushes_the_expiry_back():
    due(), due()
    jobs = claim_jobs(lock_lifetime=5)
    for job in jobs:
        expire(job)
    assert Job.objects.stale().count() == 2
    assert extend_locks(jobs, 60) == (set(), set())
    assert not Job.objects.stale().exists()
    for row in Job.objects.all():
        assert row.locked_until > db_time() + timedelta(seconds=50)
    assert extend_locks([], 60) == (set(), set())


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite has no row locks.")
@pytest.mark.django_db(transaction=True)
def test_extend_locks_skips_a_row_another_transaction_holds_and_extends_the_others():
    due(), due()
    held_job, free_job = claim_jobs(lock_lifetime=5)
    for job in (held_job, free_job):
        expire(job)
    with row_held(Job.objects.filter(pk=held_job.pk)):
        # It returns at once: the held row is left for the next beat, neither extended nor
        # lost; the other is extended.
        assert extend_locks([held_job, free_job], 60) == (set(), {held_job.pk})
        assert list(Job.objects.stale().values_list("pk", flat=True)) == [held_job.pk]
    assert extend_locks([held_job, free_job], 60) == (set(), set())
    assert not Job.objects.stale().exists()


@pytest.mark.django_db
def test_an_owner_that_lost_its_lock_writes_nothing():
    job = due("sleep")  # max_attempts=3, so recovery hands it out again
    (old,) = claim_jobs("old")
    old_run = old.run
    expire(old)
    assert recover_stale() == 1
    (new,) = claim_jobs("new")
    assert new.pk == job.pk and new.lock_token != old.lock_token
    new_run = new.run
    assert new.set_progress(0.5, "half way")

    def snapshot():
        row = Job.objects.get(pk=job.pk)
        return (
            row.state,
            row.locked_by,
            row.lock_token,
            row.locked_until,
            row.attempts,
            row.progress,
            row.progress_message,
            row.result,
            row.last_error,
        )

    before = snapshot()
    assert finish(old, old_run, result={"stale": True}) is False
    assert finish(old, old_run, failure=Failure("late failure"), retry_delay=timedelta(0)) is False
    assert old.set_progress(0.9, "from the past") is False
    assert extend_locks([old], 3600).lost == {old.pk}
    assert release(old, old_run, reason="old worker stopping") is False
    assert snapshot() == before
    # A heartbeat holding both extends only the lock it still owns.
    assert extend_locks([old, new], LOCK) == ({old.pk}, set())
    # The old run stays as recovery recorded it.
    old_run.refresh_from_db()
    assert old_run.outcome == RunOutcome.ORPHANED

    # The new owner's writes go through.
    assert finish(new, new_run, result={"ok": True})
    row = Job.objects.get(pk=job.pk)
    assert row.state == JobState.SUCCEEDED and row.result == {"ok": True}
    assert row.progress == 1.0
    new_run.refresh_from_db()
    assert new_run.outcome == RunOutcome.SUCCEEDED


# Recovery of jobs whose worker died


@pytest.mark.django_db
def test_recover_stale_records_an_orphaned_run_and_retries():
    job = due("sleep")
    (claimed,) = claim_jobs("dead-worker")
    run = claimed.run
    expire(claimed)

    assert recover_stale() == 1
    run.refresh_from_db()
    assert run.outcome == RunOutcome.ORPHANED
    assert run.finished_at is not None
    assert "dead-worker" in run.error
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED
    assert (job.locked_by, job.lock_token, job.locked_until) == (None, None, None)
    assert job.attempts == 1  # the lost attempt counts
    assert job.failure_count == 1
    assert "dead-worker" in job.last_error
    assert recover_stale() == 0  # nothing is recovered twice

    # Due at once: the next claim is attempt 2.
    (again,) = claim_jobs("rescuer")
    assert again.attempts == 2
    assert again.run.attempt == 2


@pytest.mark.django_db
def test_a_second_finish_at_the_same_instant_is_not_written():
    # CI saw it on SQLite: two finishes of one claim within a millisecond, and the second
    # reported written, since the check of a batch that matched fewer rows compared finish
    # times. Whether a row still matches its claim is now read, not guessed.
    due("sleep")
    (claimed,) = claim_jobs()
    at = db_time()
    first = Outcome(claimed, claimed.run, result={"n": 1}, finished_at=at)
    assert finish_many([first]) == [True]
    again = Outcome(claimed, claimed.run, result={"n": 2}, finished_at=at)
    assert finish_many([again]) == [False]
    assert Job.objects.get(pk=claimed.pk).result == {"n": 1}


@pytest.mark.django_db
def test_a_batch_writes_the_outcomes_still_held_and_not_the_lost_one():
    due("sleep"), due("sleep")
    kept, lost = claim_jobs("w1")
    Job.objects.filter(pk=lost.pk).update(lock_token="taken-over")  # recovered and reclaimed
    outcomes = [Outcome(job, job.run, result={"pk": job.pk}) for job in (kept, lost)]
    assert finish_many(outcomes) == [True, False]
    assert Job.objects.get(pk=kept.pk).state == JobState.SUCCEEDED
    row = Job.objects.get(pk=lost.pk)
    assert (row.state, row.lock_token, row.result) == (JobState.RUNNING, "taken-over", None)


@pytest.mark.django_db
def test_recover_stale_fails_the_job_when_attempts_are_exhausted():
    job = due("record", unique_key="only-once")  # max_attempts=1
    (claimed,) = claim_jobs("dead-worker")
    expire(claimed)
    assert recover_stale() == 1
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.next_run_at is None
    assert job.unique_key is None
    assert "dead-worker" in job.last_error
    assert claim_jobs() == []
    assert JobRun.objects.get().outcome == RunOutcome.ORPHANED


@pytest.mark.django_db
def test_recover_stale_gives_an_exhausted_recurring_job_its_next_slot():
    slot = top_of_hour(timezone.now())
    job = recurring("0 * * * *", slot, max_attempts=1)
    (claimed,) = claim_jobs("dead-worker")
    expire(claimed)
    assert recover_stale() == 1
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED
    assert job.next_run_at == slot + timedelta(hours=1)
    assert job.attempts == 0
    assert job.unique_key == RECURRING_KEY_PREFIX + "monthly"


@pytest.mark.django_db
def test_recover_stale_leaves_live_locks_alone():
    due(), due()
    claim_jobs(lock_lifetime=60)
    assert recover_stale() == 0
    assert Job.objects.running().count() == 2


# release and finish


@pytest.mark.django_db
def test_release_hands_the_job_back_without_counting_the_attempt():
    job = due("sleep")
    (claimed,) = claim_jobs("stopping")
    run = claimed.run
    assert release(claimed, run, reason="worker stopping")
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED
    assert job.attempts == 0
    assert (job.locked_by, job.lock_token, job.locked_until) == (None, None, None)
    run.refresh_from_db()
    assert run.outcome == RunOutcome.INTERRUPTED and run.error == "worker stopping"
    # Due again at once, as attempt 1.
    (again,) = claim_jobs("other")
    assert again.attempts == 1
    assert release(claimed, None, reason="twice") is False


@pytest.mark.django_db
def test_finish_success_of_a_one_off_job():
    job = due("sleep", unique_key="k")
    (claimed,) = claim_jobs()
    run = claimed.run
    assert finish(claimed, run, result={"n": 3})
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert job.result == {"n": 3}
    assert (job.next_run_at, job.unique_key, job.lock_token, job.locked_by) == (None,) * 4
    assert job.last_finished_at is not None and job.progress is None
    run.refresh_from_db()
    assert run.outcome == RunOutcome.SUCCEEDED and run.duration >= timedelta(0)
    assert finish(claimed, run) is False  # a second finish finds no running claim


@pytest.mark.django_db
def test_finish_failure_retries_after_the_delay_while_attempts_remain():
    job = due("sleep")  # max_attempts=3
    (claimed,) = claim_jobs()
    run = claimed.run
    before = db_time()  # the retry's due time comes from the database's clock
    assert finish(
        claimed, run, failure=Failure("Boom: no", "Traceback..."), retry_delay=timedelta(minutes=5)
    )
    after = db_time()  # both bounds by the same clock: SQLite's reads as the last microsecond
    # of its millisecond (db.sqlite_now_sql()), up to 1 ms past Python's timezone.now()
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED
    assert before + timedelta(minutes=5) <= job.next_run_at <= after + timedelta(minutes=5)
    assert job.attempts == 1 and job.failure_count == 1
    assert (job.last_error, job.last_traceback) == ("Boom: no", "Traceback...")
    run.refresh_from_db()
    assert (run.outcome, run.error) == (RunOutcome.FAILED, "Boom: no")
    assert claim_jobs() == []  # not due before the delay


@pytest.mark.django_db
def test_finish_failure_without_retry_fails_at_once():
    job = due("sleep")
    (claimed,) = claim_jobs()
    assert finish(claimed, None, failure=Failure("bad", retry=False), retry_delay=timedelta(0))
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.attempts == 1
    # No retry delay means no retry either.
    other = due("sleep")
    (claimed,) = claim_jobs()
    assert finish(claimed, None, failure=Failure("bad"))
    other.refresh_from_db()
    assert other.state == JobState.FAILED


@pytest.mark.django_db
def test_finish_of_a_recurring_job_schedules_the_next_slot():
    slot = top_of_hour(timezone.now())
    job = recurring("0 * * * *", slot)
    (claimed,) = claim_jobs()
    assert finish(claimed, claimed.run, result="ok")
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED
    assert job.next_run_at == slot + timedelta(hours=1)
    assert job.attempts == 0 and job.result == "ok"
    assert job.unique_key == RECURRING_KEY_PREFIX + "monthly"


@pytest.mark.django_db
def test_a_failing_recurring_job_still_gets_its_next_run():
    slot = top_of_hour(timezone.now())
    job = recurring("0 * * * *", slot, max_attempts=1)
    (claimed,) = claim_jobs()
    assert finish(claimed, None, failure=Failure("ValueError: x"), retry_delay=timedelta(1))
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED
    assert job.next_run_at == slot + timedelta(hours=1)
    assert job.attempts == 0 and job.failure_count == 1
    assert job.last_error == "ValueError: x"


@pytest.mark.django_db
def test_a_recurring_retry_never_passes_the_next_slot():
    slot = top_of_hour(timezone.now())
    job = recurring("0 * * * *", slot, max_attempts=3)
    (claimed,) = claim_jobs()
    assert finish(claimed, None, failure=Failure("x"), retry_delay=timedelta(days=1))
    job.refresh_from_db()
    assert job.next_run_at == slot + timedelta(hours=1)
    assert job.attempts == 1  # a retry keeps counting

    Job.objects.filter(pk=job.pk).update(next_run_at=slot)
    (claimed,) = claim_jobs()
    before = db_time()
    assert finish(claimed, None, failure=Failure("x"), retry_delay=timedelta(seconds=2))
    after = db_time()  # by the database's clock, as the retry's time (see above)
    job.refresh_from_db()
    assert before + timedelta(seconds=2) <= job.next_run_at <= after + timedelta(seconds=2)


# Through a real worker


@pytest.mark.django_db(transaction=True)
def test_a_row_with_no_registered_definition_fails_and_blocks_nothing():
    ghost = Job.objects.create(name="x", priority=100, next_run_at=timezone.now() - timedelta(1))
    ok = due("record")
    later = now("record")

    assert Worker(burst=True, worker_id="ghostbuster", poll_interval=0.05).run() == 0

    ghost.refresh_from_db()
    assert ghost.state == JobState.FAILED
    assert ghost.last_error.startswith("No job named 'x' is registered, so it was not run.")
    assert "record" in ghost.last_error  # the registered names are listed
    assert ghost.attempts == 1  # failed at once, though it had 3 attempts
    run = JobRun.objects.get(job=ghost)
    assert run.outcome == RunOutcome.FAILED and run.error == ghost.last_error
    for job in (ok, later):
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED
    assert set(Execution.objects.values_list("job_id", flat=True)) == {ok.pk, later.pk}


# What a claim reads back


@pytest.mark.django_db
def test_a_claimed_job_reads_its_data_and_times_as_they_were_written():
    """The claim's rows come back in binary on PostgreSQL (claiming/sql.py: fetch_all):
    JSON still reaches JSONField as text, and every time is the same aware instant."""
    data = {"email": "ada@example.com", "name": "Zoë ✓", "nested": {"a": [1, 2.5, None, True]}}
    job = due(data=data)
    stored = Job.objects.get(pk=job.pk)
    [claimed] = claim_jobs()
    assert not hasattr(claimed, "decode_error")
    assert claimed.data == data
    assert claimed.next_run_at == stored.next_run_at
    assert claimed.next_run_at.utcoffset() == timedelta(0)
    assert claimed.created_at == stored.created_at
    assert claimed.last_started_at is not None and claimed.locked_until > claimed.last_started_at
    assert claimed.run.started_at == claimed.last_started_at
    assert finish(claimed, claimed.run, result={"sent": ["ada@example.com"], "n": 1})
    assert Job.objects.get(pk=job.pk).result == {"sent": ["ada@example.com"], "n": 1}


@pytest.mark.django_db
def test_a_claim_sends_post_init_for_its_jobs_only_when_someone_listens():
    """Claimed rows skip Model.__init__ (claiming/sql.py: from_row) unless a pre_init or
    post_init receiver would see the instance; either way they act as loaded instances."""
    from django.db.models.signals import post_init

    due()
    [quiet] = claim_jobs()
    assert quiet._state.db == "default" and quiet._state.adding is False
    quiet.refresh_from_db()
    assert quiet.state == JobState.RUNNING
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.pk)

    post_init.connect(receiver, sender=Job)
    try:
        job = due()
        seen.clear()
        [claimed] = claim_jobs()
    finally:
        post_init.disconnect(receiver, sender=Job)
    assert claimed.pk == job.pk and seen == [job.pk]


@pytest.mark.django_db
def test_a_claimed_run_is_built_as_loaded_and_its_job_key_still_acts_as_a_foreign_key():
    """A claim's runs skip Model.__init__ like its jobs (their job_id's descriptor only drops
    a cached job, which a new instance has not): each is the row as stored, its job cached;
    a post_init receiver for JobRun still sees every one."""
    from django.db.models.signals import post_init

    job = due()
    [claimed] = claim_jobs()
    run = claimed.run
    assert run._state.db == "default" and run._state.adding is False
    stored = JobRun.objects.get(pk=run.pk)
    fields = [f.attname for f in JobRun._meta.concrete_fields]
    assert {a: getattr(run, a) for a in fields} == {a: getattr(stored, a) for a in fields}
    job_field = JobRun._meta.get_field("job")
    assert job_field.is_cached(run) and run.job is claimed and run.job_id == job.pk
    run.job_id = job.pk  # the same key keeps the cached job, as Django's descriptor does
    assert job_field.is_cached(run)
    run.job_id = job.pk + 1  # another key drops it
    assert not job_field.is_cached(run)
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    post_init.connect(receiver, sender=JobRun)
    try:
        due()
        [claimed] = claim_jobs()
    finally:
        post_init.disconnect(receiver, sender=JobRun)
    # The run itself (SQLite and MariaDB make it before its row is inserted: no key yet).
    assert seen == [claimed.run] and seen[0] is claimed.run


@pytest.mark.django_db
@pytest.mark.skipif(
    connection.vendor != "mysql",
    reason="Handler_read_rnd_next (rows read by table scans) is MySQL's and MariaDB's; the "
    "other databases read the claimed rows back from the claim's own RETURNING.",
)
def test_a_claim_on_mariadb_reads_the_claimed_rows_by_key_not_by_scanning_the_table():
    later = timezone.now() + timedelta(days=1)
    Job.objects.bulk_create(Job(name="record", next_run_at=later) for _ in range(2000))
    old = Job.objects.create(name="record", state=JobState.SUCCEEDED, next_run_at=None)
    JobRun.objects.bulk_create(
        JobRun(job=old, job_name="record", worker_id="w0", lock_token=f"t{n}", attempt=1)
        for n in range(2000)
    )
    due = [now("record") for _ in range(5)]

    def rows_scanned() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read_rnd_next'")
            return int(cursor.fetchone()[1])

    before = rows_scanned()
    claimed = claim_jobs(limit=10)
    scanned = rows_scanned() - before
    assert sorted(job.pk for job in claimed) == sorted(job.pk for job in due)
    # The claim finds due rows through the claim index and reads them (and their new runs'
    # ids) back by key: a scan of either table would make every claim cost its size.
    assert scanned < 100, f"the claim read {scanned} rows by table scans"
