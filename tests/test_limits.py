"""Cluster-wide concurrency, rate limits and lock keys: claims and real `runjobs` processes."""

from __future__ import annotations

import math
import os
import re
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from django_jobs import job, now, schedule, schedule_many
from django_jobs.exceptions import InvalidJobDefinition, InvalidOption
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from django_jobs.registry import registry
from tests.claiming_support import claim_jobs
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def intervals(path: Path) -> list[tuple[str, float, float]]:
    """The (label, start, end) lines the test jobs appended."""
    rows = []
    for line in path.read_text().splitlines():
        label, start, end = line.rsplit(" ", 2)
        rows.append((label, float(start), float(end)))
    return rows


def largest_overlap(spans: list[tuple[str, float, float]]) -> int:
    """The most spans open at one instant (an end before a start at the same instant)."""
    events = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    open_now = largest = 0
    for _, step in events:
        open_now += step
        largest = max(largest, open_now)
    return largest


def all_ended(name: str, count: int, state: str = JobState.SUCCEEDED):
    def ended() -> bool:
        return Job.objects.filter(name=name, state=state).count() == count

    ended.__name__ = f"{count} {name} jobs {state}"
    return ended


# Which rows are limited, and the bounds


def test_a_job_is_limited_when_its_definition_or_its_lock_key_says_so():
    assert now("capped").limited and now("rated").limited
    assert not now("record").limited
    assert now("record", lock_key="account:1").lock_key == "account:1"
    assert Job.objects.get(lock_key="account:1").limited
    many = schedule_many([("now", "record", {}), ("now", "keyed", {}, {"lock_key": "a"})])
    assert [(j.limited, j.lock_key) for j in many] == [(False, None), (True, "a")]


def test_rows_made_before_a_limit_was_declared_are_marked_at_worker_start():
    before = now("capped")
    Job.objects.filter(pk=before.pk).update(limited=False)
    plain = now("record")
    Job.objects.filter(pk=plain.pk).update(limited=True)
    keyed = now("record", lock_key="k")
    assert Job.objects.mark_limited() == 2
    assert Job.objects.get(pk=before.pk).limited
    assert not Job.objects.get(pk=plain.pk).limited
    assert Job.objects.get(pk=keyed.pk).limited  # its key still holds


@pytest.mark.parametrize("option", ["concurrency", "process_concurrency"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "3", True, 10_001])
def test_bad_concurrency_is_refused_quoting_it(option, value):
    with pytest.raises(InvalidJobDefinition, match=re.escape(f"Invalid {option}={value!r}")):
        job("limits-bad", **{option: value})
    assert "limits-bad" not in registry


@pytest.mark.parametrize(
    "value", ["", "100", "0/m", "100/ms", "1/0s", "2/2d", "10000000/s", "1/0.5s", 5, None, ["1/s"]]
)
def test_bad_rate_limit_is_refused_quoting_it(value):
    if value is None:
        return  # None is "no limit"
    with pytest.raises(InvalidJobDefinition, match=re.escape(f"Invalid rate_limit={value!r}")):
        job("limits-bad", rate_limit=value)


def test_rate_limits_in_their_accepted_forms():
    for text, count, period in [("100/m", 100, 60), ("20/2s", 20, 2), (" 5 / h", 5, 3600)]:
        job("limits-rate", rate_limit=text)(lambda j: None)
        limit = registry["limits-rate"].rate_limit
        assert (limit.count, limit.period) == (count, period)
        registry.unregister("limits-rate")


@pytest.mark.parametrize("value", ["", "k" * 256, "a\x00b", 42, b"key"])
def test_bad_lock_key_is_refused_quoting_it_everywhere(value):
    message = re.escape(f"Invalid lock_key={value!r}")
    with pytest.raises(InvalidOption, match=message):
        schedule("now", "record", lock_key=value)
    with pytest.raises(InvalidOption, match=message):
        now("record", lock_key=value)
    with pytest.raises(InvalidOption, match=message):
        schedule_many([("now", "record", {}, {"lock_key": value})])
    assert not Job.objects.exists()


def test_schedule_many_refuses_unknown_options():
    with pytest.raises(InvalidOption, match=re.escape("has the options {'unique_key': 'x'}")):
        schedule_many([("now", "record", {}, {"unique_key": "x"})])


# The claim


def test_a_claim_takes_no_more_than_the_cluster_concurrency_and_a_lapsed_lock_frees_a_slot():
    jobs = [now("capped") for _ in range(6)]
    other = now("record")
    first = claim_jobs("w1", limit=10)
    assert {j.name for j in first} == {"capped", "record"} and len(first) == 4
    assert claim_jobs("w2", limit=10) == []  # the three slots are held, by another worker too
    held = [j for j in first if j.name == "capped"]
    # The worker of one of them died: its lock expires, its slot comes back.
    Job.objects.filter(pk=held[0].pk).update(locked_until="2000-01-01T00:00:00Z")
    (again,) = claim_jobs("w2", limit=10)
    assert again.name == "capped" and again.pk not in {j.pk for j in held}
    assert other.pk in {j.pk for j in first} and len(jobs) == 6


def test_the_limits_hold_in_the_orm_only_claim_too(monkeypatch):
    """The compare-and-set claim (old SQLite, MongoDB later) claims limited groups alike."""
    from django_jobs.claiming import claims

    monkeypatch.setattr(claims, "claim_strategy", lambda connection: claims._claim_compare_and_set)
    for _ in range(5):
        now("capped")
    a1, a2 = now("record", lock_key="a"), now("record", lock_key="a")
    plain = now("record")
    claimed = claim_jobs("w1", limit=10)
    assert sorted(j.name for j in claimed) == ["capped"] * 3 + ["record"] * 2
    assert {a1.pk, plain.pk} <= {j.pk for j in claimed}
    assert claim_jobs("w2", limit=10) == []
    assert Job.objects.get(pk=a2.pk).state == JobState.SCHEDULED


def test_a_lock_key_runs_one_at_a_time_and_other_keys_beside_it():
    a1, a2 = now("keyed", lock_key="a"), now("keyed", lock_key="a")
    b1 = now("record", lock_key="b")
    c = now("keyed")  # no key: not held back at all
    a_other_name = now("record", lock_key="a")
    assert {j.pk for j in claim_jobs("w1", limit=10)} == {a1.pk, b1.pk, c.pk}
    assert claim_jobs("w2", limit=10) == []
    assert Job.objects.get(pk=a2.pk).state == JobState.SCHEDULED
    assert Job.objects.get(pk=a_other_name.pk).state == JobState.SCHEDULED


def test_a_rate_limit_holds_back_the_rest_and_says_when_the_next_may_start():
    from django_jobs.claiming import claim_batch

    for _ in range(25):
        now("rated")
    result = claim_batch(worker_id="w1", queues=None, limit=100, lock_lifetime=30)
    assert len(result.claimed) == 20 and result.retry_in is None
    result = claim_batch(worker_id="w2", queues=None, limit=100, lock_lifetime=30)
    assert result.claimed == [] and 0 < result.retry_in <= 2.01
    assert JobRun.objects.filter(job_name="rated").count() == 20  # none claimed and released


# Real workers


def test_four_workers_never_run_more_than_the_cluster_concurrency(start_worker, tmp_path):
    path = tmp_path / "spans.txt"
    schedule_many(("now", "capped", {"path": str(path), "seconds": 0.05}) for _ in range(200))
    for number in range(4):
        start_worker("--concurrency", "4", "--poll-interval", "0.2", "--worker-id", f"w{number}")
    wait_for(all_ended("capped", 200), timeout=90)
    spans = intervals(path)
    assert len(spans) == 200
    assert largest_overlap(spans) == 3
    assert JobRun.objects.filter(job_name="capped").count() == 200  # none claimed and released


def test_a_killed_worker_holds_its_slots_until_their_locks_expire(start_worker, tmp_path):
    path = tmp_path / "spans.txt"
    data = {"path": str(path), "seconds": 0.05}
    hung = [now("capped", {**data, "hang": True}) for _ in range(3)]
    doomed = start_worker("--concurrency", "4", "--lock-lifetime", "2", "--worker-id", "doomed")
    wait_for(lambda: Job.objects.filter(name="capped", state=JobState.RUNNING).count() == 3)
    rest = [now("capped", data) for _ in range(5)]
    time.sleep(0.5)  # it has a free thread, but all three slots: none of the rest starts
    assert not JobRun.objects.filter(job_id__in=[j.pk for j in rest]).exists()
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    expiry = min(Job.objects.filter(pk__in=[j.pk for j in hung]).values_list("locked_until"))[0]
    start_worker("--concurrency", "4", "--lock-lifetime", "3", "--worker-id", "survivor")
    wait_for(all_ended("capped", 8), timeout=60)
    survivor_starts = JobRun.objects.filter(worker_id="survivor").values_list("started_at")
    assert min(s for (s,) in survivor_starts) >= expiry  # not one start before a slot came back
    orphaned = JobRun.objects.filter(job_id__in=[j.pk for j in hung], outcome=RunOutcome.ORPHANED)
    assert orphaned.count() == 3  # then retried, and run
    assert largest_overlap(intervals(path)) <= 3


def test_a_rate_limit_holds_across_three_workers(start_worker):
    schedule_many(("now", "rated", {}) for _ in range(100))
    for number in range(3):
        start_worker("--concurrency", "4", "--poll-interval", "0.5", "--worker-id", f"r{number}")
    wait_for(all_ended("rated", 100), timeout=60)
    starts = sorted(JobRun.objects.filter(job_name="rated").values_list("started_at", flat=True))
    assert len(starts) == 100  # each started once: none claimed and released
    # No 2-second window holds more than 20 starts: the 21st start after any start is 2 s on.
    window = timedelta(seconds=2)
    assert all(later - first >= window for first, later in zip(starts, starts[20:], strict=False))
    # And the limit is used, not merely respected: 100 starts take about 4 windows.
    assert starts[-1] - starts[0] < timedelta(seconds=12)


def test_jobs_with_one_lock_key_never_overlap_and_other_keys_do(start_worker, tmp_path):
    path = tmp_path / "spans.txt"
    keys = ["a", "b", "c"]
    schedule_many(
        ("now", "keyed", {"path": str(path), "seconds": 0.1}, {"lock_key": keys[i % 3]})
        for i in range(30)
    )
    for number in range(3):
        start_worker("--concurrency", "3", "--poll-interval", "0.2", "--worker-id", f"k{number}")
    wait_for(all_ended("keyed", 30), timeout=60)
    spans = intervals(path)
    assert len(spans) == 30
    for key in keys:
        assert largest_overlap([s for s in spans if s[0] == key]) == 1, key
    assert largest_overlap(spans) >= 2  # other keys ran beside each other


def test_a_worker_without_limits_looks_for_lock_keys_once_a_poll_until_it_sees_one(monkeypatch):
    from django_jobs.worker import process

    monkeypatch.setattr(process.registry, "limited", lambda: [])
    worker = process.Worker(poll_interval=5)
    assert worker._look_for_limited()  # its first claim looks
    worker._limited_look_at = time.monotonic() + 5  # it looked, and found none
    assert not worker._look_for_limited()  # the ordinary claim alone until the next poll
    worker._limited_seen_at = time.monotonic()  # a look found a limited job
    assert worker._look_for_limited()  # so it looks at every claim for a while
    monkeypatch.setattr(process.registry, "limited", lambda: ["capped"])
    worker._limited_seen_at = -math.inf
    assert worker._look_for_limited()  # a worker that declares limits looks every time


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_worker_waiting_for_a_rate_window_sleeps_instead_of_spinning(start_worker):
    schedule_many(("now", "rated", {}) for _ in range(25))
    # It looks for due jobs every 0.2 s (about 12 ms of CPU each on SQLite under Python
    # 3.13), and the window must cap its sleep, never shorten it to nothing.
    worker = start_worker("--concurrency", "4", "--poll-interval", "0.2")
    wait_for(all_ended("rated", 20))
    before = cpu_seconds(worker.pid)
    time.sleep(1)  # the other 5 wait for the window, about 2 s after the first 20 started
    assert cpu_seconds(worker.pid) - before < 0.3  # a loop that claims and sleeps 0 burns ~1 s
    assert Job.objects.filter(name="rated", state=JobState.SCHEDULED).count() == 5
    wait_for(all_ended("rated", 25))
    assert JobRun.objects.filter(job_name="rated").count() == 25
