#!/usr/bin/env python
"""Benchmarks of django_jobs against one database; prints a table (not a test).

    python benchmarks/bench.py --database-url postgres://postgres@127.0.0.1:5432/bench_perf
    python benchmarks/bench.py --database-url sqlite:////tmp/django_jobs_bench/bench.sqlite3
    python benchmarks/bench.py --database-url mysql://root@127.0.0.1:3306/bench_perf -w w1,w2

Workloads (docs/performance.md says what each measures and why):
  w1       drain 10,000 no-op jobs with `runjobs --burst`, 1 process and 2 processes, and
           `runjobs --burst` with no other option on Django's default settings
  w2       an idle worker; 200 jobs scheduled one at a time 20 ms apart: enqueue-to-start
  w3       50 jobs scheduled for exact future instants: start minus due time
  w4       the time of one claim (batch of 10) with 10,000 and 1,000,000 jobs pending
  cycle    one pass of the claim loop (write a batch's outcomes, claim the next batch of 4,
           16, 32): the two one after the other, and together, alternating in one process
  enqueue  schedule() one at a time, and schedule_many() in batches of 1,000
  plans    PostgreSQL only: passes of the claim loop (outcomes of 10, claim of 10) on one
           connection with prepared statements off and on (OPTIONS["prepare_threshold"]),
           alternating: the server process's CPU and the worker's per job, and how the claim
           was planned (generic or custom plans); the server's CPU is read on this host only
  isolation  drain 1,000 no-op jobs with `runjobs --isolation thread` and `process`: jobs/s,
           CPU per job, and the memory of the worker with its children (docs/controls.md)
  walmap   PostgreSQL on this host only: drain the W1 jobs with 1 process after a CHECKPOINT
           and read the write-ahead log it wrote with pg_waldump: bytes per job, the record
           types, and the index entries written per job in each index (run as root or postgres)

The database is the benchmark's own: its name must start with "bench" (it is emptied at
every workload), and the script creates it if needed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measure import (  # noqa: E402
    cpu_model,
    machine_cpu,
    ms,
    pct,
    wait_until,
    wal_bytes,
    wal_position,
    wal_records,
    wal_rows,
)

WORKLOADS = ("w1", "w2", "w3", "w4", "cycle", "enqueue", "isolation", "walmap", "plans")
Row = tuple[str, str, str]  # workload, metric, value


# Setting up


def ensure_database(url: str) -> None:
    """Create the benchmark's database if it does not exist; refuse names not its own."""
    parsed = urlparse(url)
    if parsed.scheme.startswith("sqlite"):
        path = Path(parsed.path)
        if not path.name.startswith("bench"):
            sys.exit(f"The SQLite file must be named bench*, not {path.name!r}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    name = parsed.path.lstrip("/")
    if not name.startswith("bench"):
        sys.exit(f"The database name must start with 'bench' (it is emptied), not {name!r}.")
    if parsed.scheme.startswith("postgres"):
        import psycopg

        admin = parsed._replace(path="/postgres").geturl()
        with psycopg.connect(admin, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not found:
                conn.execute(f'CREATE DATABASE "{name}"')
    elif parsed.scheme.startswith("mysql"):
        import MySQLdb

        conn = MySQLdb.connect(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 3306,
            user=parsed.username or "root",
            password=parsed.password or "",
        )
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        conn.close()


def setup(url: str) -> None:
    os.environ["BENCH_DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    ensure_database(url)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def reset() -> None:
    """Empty the job tables and refresh the planner's statistics."""
    from django.core.management.color import no_style
    from django.db import connection

    from django_jobs.models import Job, JobRun, Worker

    tables = [m._meta.db_table for m in (JobRun, Job, Worker)]
    connection.ops.execute_sql_flush(connection.ops.sql_flush(no_style(), tables))
    analyze()


def analyze() -> None:
    """What autovacuum/ANALYZE keep up to date on a real database."""
    from django.db import connection

    from django_jobs.models import Job, JobRun

    with connection.cursor() as cursor:
        for model in (Job, JobRun):
            table = connection.ops.quote_name(model._meta.db_table)
            if connection.vendor == "postgresql":
                cursor.execute(f"VACUUM ANALYZE {table}")
            elif connection.vendor == "mysql":
                cursor.execute(f"ANALYZE TABLE {table}")
                cursor.fetchall()
            else:
                cursor.execute(f"ANALYZE {table}")


def fill(count: int, when: str = "now") -> None:
    """Add `count` pending no-op jobs: 10,000 through schedule_many, then doubled in SQL."""
    from django.db import connection

    from django_jobs import schedule_many
    from django_jobs.models import Job

    first = min(count, 10_000)
    schedule_many(((when, "bench-noop", None) for _ in range(first)), batch_size=5000)
    have = first
    table = connection.ops.quote_name(Job._meta.db_table)
    columns = ", ".join(
        connection.ops.quote_name(f.column or f.name)
        for f in Job._meta.concrete_fields
        if not f.primary_key
    )
    while have < count:
        more = min(have, count - have)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} "
                f"ORDER BY {connection.ops.quote_name('id')} LIMIT %s",
                [more],
            )
        have += more
    analyze()


# Worker processes


class Runjobs:
    """A `manage.py runjobs` process on the benchmark's settings."""

    def __init__(self, *args: str, django_defaults: bool = False) -> None:
        env = dict(os.environ)
        if django_defaults:
            env["BENCH_DJANGO_DEFAULTS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-runjobs.log", "ab")  # noqa: SIM115
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "runjobs", *args],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, workers: int = 1, timeout: float = 60) -> None:
        from django_jobs.models import Worker

        deadline = time.monotonic() + timeout
        while Worker.objects.count() < workers:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("runjobs did not start; see bench-runjobs.log")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()

    def wait(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        self.log.close()
        return code


# Workloads


def w1(jobs: int, concurrency: int) -> Iterator[Row]:
    """Drain `jobs` no-op jobs with runjobs --burst, 1 process and 2 processes."""
    from django.db.models import Max, Min

    from django_jobs.models import Job, JobRun, JobState

    # (processes, runjobs options): the best settings in 1 and 2 processes, then `runjobs` with
    # no option but --burst, on Django's default settings (BENCH_DJANGO_DEFAULTS).
    runs = [(1, ["--concurrency", str(concurrency)]), (2, ["--concurrency", str(concurrency)])]
    runs.append((1, []))
    for processes, options in runs:
        reset()
        fill(jobs)
        args = ["--burst", *options]
        if processes > 1:
            args += ["--processes", str(processes)]
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        before_machine = machine_cpu()
        wal_at = wal_position(os.environ["BENCH_DATABASE_URL"])
        worker = Runjobs(*args, django_defaults=not options)
        code = worker.wait()
        machine_seconds = machine_cpu() - before_machine
        wal = wal_bytes(os.environ["BENCH_DATABASE_URL"], wal_at)
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        if code != 0:
            raise RuntimeError(f"runjobs exited with {code}; see bench-runjobs.log")
        worker_seconds = (after_children.ru_utime + after_children.ru_stime) - (
            before_children.ru_utime + before_children.ru_stime
        )
        done = Job.objects.filter(state=JobState.SUCCEEDED).count()
        if done != jobs or JobRun.objects.count() != jobs:
            raise RuntimeError(f"{done} of {jobs} jobs succeeded")
        last = Job.objects.aggregate(t=Max("last_finished_at"))["t"].timestamp()
        first = JobRun.objects.aggregate(t=Min("started_at"))["t"].timestamp()
        wall = last - worker.started
        name = f"W1 drain {jobs:,}, {processes} process{'es' if processes > 1 else ''}"
        if not options:
            name += ", runjobs with no options on Django's default settings"
        yield name, "jobs/s (launch to last finish)", f"{jobs / wall:,.0f}"
        yield name, "wall time, launch to last finish", f"{wall:.2f} s"
        yield name, "jobs/s (first start to last finish)", f"{jobs / (last - first):,.0f}"
        # Steady: the middle 80 % of the jobs by their finish times, start-up and tail left
        # out (as peer_pgqueuer.py takes it).
        ends = sorted(
            t.timestamp()
            for t in Job.objects.values_list("last_finished_at", flat=True)
            if t is not None
        )
        low, high = pct(ends, 10), pct(ends, 90)
        middle = sum(1 for t in ends if low <= t <= high)
        yield name, "jobs/s (steady: the middle 80 % of the jobs)", f"{middle / (high - low):,.0f}"
        # CPU of the runjobs processes, and of everything else on the machine (the database
        # server, mostly) while they ran, per job.
        yield (
            name,
            "CPU per job: runjobs / rest of machine",
            (
                f"{worker_seconds / jobs * 1e6:.0f} µs / "
                f"{max(machine_seconds - worker_seconds, 0) / jobs * 1e6:.0f} µs"
            ),
        )
        yield from wal_rows(name, jobs, wal)


def walmap(jobs: int, concurrency: int) -> Iterator[Row]:
    """Where a drain's write-ahead log goes: record types, and index entries per index."""
    from django.db import connection

    url = os.environ["BENCH_DATABASE_URL"]
    name = f"WAL map, W1 drain {jobs:,}, 1 process"
    if connection.vendor != "postgresql":
        yield name, "skipped", "the write-ahead log is PostgreSQL's"
        return
    reset()
    fill(jobs)
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")  # every run starts with the same full-page images to write
    start = wal_position(url)
    code = Runjobs("--burst", "--concurrency", str(concurrency)).wait()
    end = wal_position(url)
    if code != 0 or start is None or end is None:
        raise RuntimeError(f"runjobs exited with {code}; see bench-runjobs.log")
    try:
        by_type, entries = wal_records(url, start, end)
    except RuntimeError as exc:
        yield name, "skipped", str(exc)
        return
    total = sum(size for _, size in by_type.values())
    yield name, "write-ahead log per job", f"{total / jobs:,.0f} B"
    for kind, (count, size) in sorted(by_type.items(), key=lambda item: -item[1][1])[:8]:
        yield name, f"{kind}: records / bytes per job", f"{count / jobs:.2f} / {size / jobs:,.0f} B"
    yield name, "index entries per job, every index", f"{sum(entries.values()) / jobs:.2f}"
    for relation, count in sorted(entries.items(), key=lambda item: -item[1]):
        if count >= jobs / 100:
            yield name, f"index entries per job: {relation}", f"{count / jobs:.2f}"


def tree_memory(root: int) -> int:
    """Proportional set size (bytes) of process `root` and all its descendants, from /proc:
    pages shared by forked children count once in all, not once per process as in RSS."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue  # it ended meanwhile
    return total


def isolation(jobs: int = 1000, concurrency: int = 4) -> Iterator[Row]:
    """Drain `jobs` no-op jobs in each isolation mode; the memory of the worker's process
    tree is sampled every 50 ms while it runs."""
    import threading

    from django_jobs.models import Job, JobState

    for mode in ("thread", "process"):
        reset()
        fill(jobs)
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        worker = Runjobs("--burst", "--concurrency", str(concurrency), "--isolation", mode)
        peak = [0]
        done = threading.Event()

        def sample(pid: int, peak: list[int], done: threading.Event) -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], tree_memory(pid))

        sampler = threading.Thread(target=sample, args=(worker.proc.pid, peak, done), daemon=True)
        sampler.start()
        code = worker.wait()
        done.set()
        sampler.join()
        wall = time.time() - worker.started
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        if code != 0 or Job.objects.filter(state=JobState.SUCCEEDED).count() != jobs:
            raise RuntimeError(f"the {mode} drain failed; see bench-runjobs.log")
        cpu = (after_children.ru_utime + after_children.ru_stime) - (
            before_children.ru_utime + before_children.ru_stime
        )
        name = f"isolation {mode}, {jobs:,} no-op jobs, --concurrency {concurrency}"
        yield name, "jobs/s (launch to exit)", f"{jobs / wall:,.0f}"
        yield name, "CPU per job (runjobs and its children)", f"{cpu / jobs * 1e3:.2f} ms"
        yield name, "peak memory (PSS) of runjobs and its children", f"{peak[0] / 2**20:,.0f} MiB"


def w2_with_floor() -> Iterator[Row]:
    """W2, then (on PostgreSQL) the same chain in bare SQL, the floor it is compared to."""
    from django.db import connection

    yield from w2()
    if connection.vendor == "postgresql":
        yield from w2_floor()


def w2(count: int = 200, gap: float = 0.020, concurrency: int = 4) -> Iterator[Row]:
    """An idle worker; jobs scheduled one at a time `gap` apart: enqueue-to-start latency.

    Twice: with now() on its own (autocommit), timed from the call; and with now() inside a
    transaction, timed from the commit (a callback registered before now()'s NOTIFY).
    """
    from django.db import transaction

    from django_jobs import now
    from django_jobs.models import Job, JobState

    def enqueue_alone() -> tuple[int, float]:
        before = time.time()
        return now("bench-stamp").pk, before

    def enqueue_in_transaction() -> tuple[int, float]:
        stamp: list[float] = []
        with transaction.atomic():
            transaction.on_commit(lambda: stamp.append(time.time()))
            job = now("bench-stamp")
        return job.pk, stamp[0]

    name = f"W2 latency, {count} jobs {gap * 1000:.0f} ms apart"
    for label, enqueue in (
        ("from the call of now()", enqueue_alone),
        ("from the commit of now() in a transaction", enqueue_in_transaction),
    ):
        reset()
        worker = Runjobs("--concurrency", str(concurrency))
        try:
            worker.wait_ready()
            time.sleep(1.0)  # idle: asleep, waiting for work
            since: dict[int, float] = {}
            start = time.monotonic()
            for i in range(count):
                delay = start + i * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pk, at = enqueue()
                since[pk] = at
            wait_until(
                lambda: Job.objects.filter(state=JobState.SUCCEEDED).count() == count,
                60,
                "W2 jobs",
            )
        finally:
            worker.stop()
        started: dict[int, float] = dict(Job.objects.values_list("pk", "result"))  # type: ignore[arg-type]
        latencies = [started[pk] - at for pk, at in since.items()]
        yield name, f"{label} to start: p50", ms(pct(latencies, 50))
        yield name, f"{label} to start: p95", ms(pct(latencies, 95))
        yield name, f"{label} to start: max", ms(max(latencies))


def _bare_listener(params: dict[str, Any], claim_sql: str, ready: Any, stamps: Any) -> None:
    """The W2 floor's worker: LISTEN, wait on the socket, run the claim statement, stamp."""
    import select

    import psycopg

    conn = psycopg.connect(**params, autocommit=True)
    conn.execute("LISTEN django_jobs")
    ready.put(True)
    while True:
        select.select([conn.pgconn.socket], [], [])
        payloads = [n.payload for n in conn.notifies(timeout=0)]
        if "stop" in payloads:
            return
        if payloads:
            with psycopg.ClientCursor(conn) as cursor:
                cursor.execute(claim_sql)
                cursor.fetchall()
            stamps.put(time.time())


def w2_floor(count: int = 200, gap: float = 0.020) -> Iterator[Row]:
    """W2's chain in bare psycopg (PostgreSQL): what this machine allows, with no Python
    framework around the statements.

    The same INSERT and NOTIFY the app sends for now(), and the worker's claim statement
    (captured from django_jobs), each in one round trip; the "job" starts when the claim's
    rows arrive, with no thread hand-off. Timed from the INSERT's call and from its commit.
    """
    import multiprocessing

    import psycopg
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_jobs import claiming, now

    reset()
    with CaptureQueriesContext(connection) as queries:
        now("bench-stamp")
        claiming.claim_and_start(worker_id="floor", queues=[], limit=1, lock_lifetime=30)
    insert_sql = next(q["sql"] for q in queries if q["sql"].startswith("INSERT"))
    notify_sql = next(q["sql"] for q in queries if "pg_notify" in q["sql"])
    claim_sql = queries[-1]["sql"]
    params = dict(connection.get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold", "pool"):
        params.pop(key, None)
    context = multiprocessing.get_context("spawn")
    ready, stamps = context.Queue(), context.Queue()
    child = context.Process(target=_bare_listener, args=(params, claim_sql, ready, stamps))
    child.start()
    ready.get(timeout=30)
    sender = psycopg.connect(**params, autocommit=True)
    from_call, from_commit = [], []
    try:
        with psycopg.ClientCursor(sender) as cursor:
            for _ in range(count):
                time.sleep(gap)
                called = time.time()
                cursor.execute(insert_sql)
                committed = time.time()
                cursor.execute(notify_sql)
                started = stamps.get(timeout=30)
                from_call.append(started - called)
                from_commit.append(started - committed)
            cursor.execute("SELECT pg_notify('django_jobs', 'stop')")
    finally:
        child.join(30)
        sender.close()
    name = f"W2 floor, bare SQL, {count} jobs {gap * 1000:.0f} ms apart"
    measured = (("from the INSERT's call", from_call), ("from its commit", from_commit))
    for label, latencies in measured:
        yield (
            name,
            f"{label} to the claim's rows: p50 / p95",
            f"{ms(pct(latencies, 50))} / {ms(pct(latencies, 95))}",
        )


def w3(count: int = 50, concurrency: int = 4) -> Iterator[Row]:
    """Jobs scheduled for exact future instants: start minus due time."""
    from django_jobs import schedule
    from django_jobs.models import Job, JobState

    reset()
    worker = Runjobs("--concurrency", str(concurrency))
    try:
        worker.wait_ready()
        time.sleep(1.0)
        base = time.time() + 3.0
        due: dict[int, float] = {}
        for i in range(count):
            at = base + i * 0.1 + random.uniform(0, 0.05)
            # Round to the millisecond: "12:00:00.123", as a user would write it.
            at = round(at, 3)
            due[schedule(datetime.fromtimestamp(at, UTC), "bench-stamp").pk] = at
        wait_until(
            lambda: Job.objects.filter(state=JobState.SUCCEEDED).count() == count, 60, "W3 jobs"
        )
    finally:
        worker.stop()
    started: dict[int, float] = dict(Job.objects.values_list("pk", "result"))  # type: ignore[arg-type]
    late = [started[pk] - at for pk, at in due.items()]
    name = f"W3 timing, {count} jobs at exact instants"
    yield name, "start minus due p50", ms(pct(late, 50))
    yield name, "start minus due p95", ms(pct(late, 95))
    yield name, "start minus due max", ms(max(late))


def w4(claims: int = 200, batch: int = 10) -> Iterator[Row]:
    """The time of one claim (with its run rows, as the worker does) by table size."""
    from django_jobs import claiming

    def measure() -> list[float]:
        times = []
        for i in range(claims + 1):
            t = time.perf_counter()
            got = claiming.claim_and_start(
                worker_id="bench", queues=[], limit=batch, lock_lifetime=30
            )
            elapsed = time.perf_counter() - t
            if i:  # the first one warms the caches up
                times.append(elapsed)
            if not got and fills_due:
                raise RuntimeError("nothing left to claim")
        return times

    results: dict[str, list[float]] = {}
    for pending in (10_000, 1_000_000):
        fills_due = True
        reset()
        fill(pending)
        results[f"{pending:,} due"] = measure()
    fills_due = False
    reset()
    fill(1_000_000, when="in 1 day")
    results["1,000,000 not yet due (idle poll)"] = measure()
    for label, times in results.items():
        name = f"W4 claim of {batch}, {label}"
        yield name, "p50 / mean", f"{ms(statistics.median(times))} / {ms(statistics.mean(times))}"


def cycle(cycles: int = 300, batches: Sequence[int] = (4, 16, 32)) -> Iterator[Row]:
    """One pass of the claim loop: write a batch's outcomes, claim the next batch. In
    alternation within one process, so the machine's drift falls on both alike: the two
    one after the other (finish_many(), then claim_batch(): two transactions), and the two
    together (claim_batch(finish=...): on PostgreSQL one pipeline and one transaction)."""
    from django_jobs import claiming

    def ended(result: claiming.ClaimResult) -> list[claiming.Outcome]:
        return [
            claiming.Outcome(job, run, finished_at=run.started_at) for job, run in result.claimed
        ]

    for batch in batches:
        reset()
        fill(batch * (2 * cycles + 2))
        options: dict[str, Any] = {
            "worker_id": "bench",
            "queues": [],
            "limit": batch,
            "lock_lifetime": 30,
            "limited": False,
        }
        held = ended(claiming.claim_batch(**options))
        times: dict[str, list[float]] = {"apart": [], "together": []}
        for i in range(2 * cycles):
            way = "together" if i % 2 else "apart"
            t = time.perf_counter()
            if way == "apart":
                claiming.finish_many(held)
                result = claiming.claim_batch(**options)
            else:
                result = claiming.claim_batch(**options, finish=held)
            times[way].append(time.perf_counter() - t)
            if len(result.claimed) != batch:
                raise RuntimeError("nothing left to claim")
            held = ended(result)
        apart, together = (statistics.median(times[k]) for k in ("apart", "together"))
        yield (
            f"Cycle, batches of {batch}",
            "p50: finish, then claim / both at once / ratio",
            f"{ms(apart)} / {ms(together)} / {together / apart:.2f}",
        )


def _process_cpu(pid: int) -> float | None:
    """User and system CPU seconds of process `pid` on this host (None if not here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plans(jobs: int = 10_000, batch: int = 10, rounds: int = 3) -> Iterator[Row]:
    """Passes of the claim loop on one connection, prepared statements off and on in turn."""
    from django.db import connection

    from django_jobs import claiming

    if connection.vendor != "postgresql":
        return
    options: dict[str, Any] = {"worker_id": "bench", "queues": [], "limit": batch}
    results: dict[str, list[tuple[float | None, float, float]]] = {"off": [], "on (5)": []}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(rounds):
        for label, threshold in (("off", None), ("on (5)", 5)):
            reset()
            fill(jobs)
            connection.close()
            connection.ensure_connection()
            connection.connection.prepare_threshold = threshold
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid = cursor.fetchone()[0]
            held: list[claiming.Outcome] = []
            done = 0
            server, worker, t = _process_cpu(pid), time.process_time(), time.perf_counter()
            while True:
                result = claiming.claim_batch(**options, lock_lifetime=30, finish=held)
                if not result.claimed:
                    break
                done += len(result.claimed)
                held = [claiming.Outcome(j, r, finished_at=r.started_at) for j, r in result.claimed]
            # (the last claim, which found nothing, wrote the last outcomes)
            wall, worker = time.perf_counter() - t, time.process_time() - worker
            after = _process_cpu(pid)
            used = None if server is None or after is None else after - server
            results[label].append((used, worker, wall))
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) "
                    "FROM pg_prepared_statements WHERE statement LIKE 'WITH claimed AS %%'"
                )
                counts[label] = cursor.fetchone()
            if done != jobs:
                raise RuntimeError(f"claimed {done} of {jobs} jobs")
    connection.close()
    for label, runs in results.items():
        name = f"Plans, prepared statements {label}, passes of {batch}"
        servers = [s for s, _, _ in runs if s is not None]
        each = "n/a (the server is on another host)"
        if servers:
            each = " / ".join(f"{s / jobs * 1e6:.0f}" for s in servers) + " µs"
        yield name, "server process CPU per job, each round", each
        yield (
            name,
            "worker CPU per job, each round",
            " / ".join(f"{w / jobs * 1e6:.0f}" for _, w, _ in runs) + " µs",
        )
        yield (
            name,
            "wall time per job, each round",
            " / ".join(f"{t / jobs * 1e6:.0f}" for _, _, t in runs) + " µs",
        )
        generic, custom = counts[label]
        yield name, "claims planned: generic / custom plans (last round)", f"{generic} / {custom}"


def enqueue(single: int = 2000, bulk: int = 10_000) -> Iterator[Row]:
    """schedule() one at a time (autocommit), and schedule_many() in batches of 1,000."""
    from django_jobs import now, schedule_many

    reset()
    t = time.perf_counter()
    for _ in range(single):
        now("bench-noop")
    yield (
        "Enqueue",
        f"now() x {single:,}, one at a time",
        f"{single / (time.perf_counter() - t):,.0f} jobs/s",
    )
    reset()
    t = time.perf_counter()
    schedule_many((("now", "bench-noop", None) for _ in range(bulk)), batch_size=1000)
    yield (
        "Enqueue",
        f"schedule_many() {bulk:,}, batches of 1,000",
        f"{bulk / (time.perf_counter() - t):,.0f} jobs/s",
    )


# The report


def machine() -> list[str]:
    from django import get_version
    from django.db import connection

    cpu = cpu_model()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
        else:
            cursor.execute("SELECT version()")
        version = cursor.fetchone()[0]
    return [
        f"machine: {platform.node()}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}",
        f"python {platform.python_version()}, django {get_version()}",
        f"database: {connection.vendor} {version.split(' on ')[0]}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


@contextmanager
def quiet_logs() -> Iterator[None]:
    import logging

    logger = logging.getLogger("django_jobs")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("-w", "--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--jobs", type=int, default=10_000, help="W1 job count")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="runjobs --concurrency for W1 (default 16)"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(wanted) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; use {', '.join(WORKLOADS)}")
    setup(args.database_url)
    header = machine()
    for line in header:
        print(line, flush=True)
    rows: list[Row] = []
    runners: dict[str, Callable[[], Iterator[Row]]] = {
        "w1": lambda: w1(args.jobs, args.concurrency),
        "w2": lambda: w2_with_floor(),
        "w3": w3,
        "w4": w4,
        "cycle": cycle,
        "enqueue": enqueue,
        "isolation": isolation,
        "walmap": lambda: walmap(args.jobs, args.concurrency),
        "plans": plans,
    }
    print("\n| workload | metric | value |\n|---|---|---|", flush=True)
    with quiet_logs():
        for name in wanted:
            for row in runners[name]():
                rows.append(row)
                print(f"| {row[0]} | {row[1]} | {row[2]} |", flush=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": header, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
