#!/usr/bin/env python
"""W1, W2 and enqueue of the peer library PgQueuer (PostgreSQL, asyncio, asyncpg); prints a table.

The same workloads as bench.py, for comparison on the same machine in the same run; the
rows carry bench.py's names, so the two tables read side by side.

Standalone (neither Django nor django_jobs), in a venv of its own:

    python3 -m venv /tmp/venv-pgqueuer
    /tmp/venv-pgqueuer/bin/pip install 'pgqueuer==1.6.*' asyncpg
    /tmp/venv-pgqueuer/bin/python benchmarks/peer_pgqueuer.py \\
        --database-url postgres://postgres@127.0.0.1:5432/bench_pgqueuer

How, as PgQueuer is used (written against pgqueuer 1.6.0, asyncpg 0.32, uvloop 0.23):
  - a worker is a separate process, this script's `worker` command: what `pgq run
    peer_pgqueuer:create_pgqueuer [options]` does, i.e. pgqueuer.run() (the function the CLI
    calls, with the same defaults) on uvloop, with the CLI's INFO logging (nothing per job).
    Not the CLI itself: with typer 0.29 (the latest on the mirror), `pgq run` of pgqueuer
    1.6.0 fails at start (AttributeError: 'str' object has no attribute 'name', in
    logconfig.setup_fancy_logger: the --log-level default reaches it as a string);
  - the factory builds a PgQueuer over one asyncpg connection (its quickstart) or, with
    `--pool`, over an asyncpg pool of 5 to 20 connections (its performance guide: "for
    high-throughput deployments, use a connection pool driver"; the worker then LISTENs on
    one connection while it claims and writes outcomes on others, at the same time). asyncpg
    prepares and caches every statement;
  - best settings for short jobs: the pool, and batch_size 100 (`--batch-size`). The guide
    says to raise batch_size (default 10) for jobs under a second, with no figure; 100 is
    the value of issue 13's first measurements. A worker claims up to batch_size jobs in one
    statement (an UPDATE of rows locked FOR UPDATE SKIP LOCKED, with their "picked" log
    rows), and its completion buffer writes up to batch_size outcomes in one statement (the
    rows deleted from the queue, "successful" rows added to the log), or what it holds every
    0.1 s. Every other setting is PgQueuer's default: durability "durable" (every table
    logged), heartbeat and dequeue timeouts 30 s, no concurrency limit, the schema of
    `pgq install` (Queries.install()). The 2-process drain is two such workers started
    together (PgQueuer has no process supervisor); "defaults" is the quickstart factory (one
    connection) with no option but drain mode;
  - the jobs are `async def` (PgQueuer 1.6 runs nothing else; django_jobs runs its plain
    functions in threads). `bench_noop` notes time.time() in a list in memory, which the
    factory writes to a file when the worker ends; `bench_stamp` (W2) appends
    "job id,time.time()" to a file as it starts.

Workloads and how each figure is taken:
  - W1 drain: `--jobs` (10,000) jobs enqueued in batches of 1,000, the tables VACUUM ANALYZEd,
    then workers in drain mode (they exit once the queue is empty and every outcome is
    written), with the best settings in 1 and in 2 processes, and with the defaults in 1.
    "launch" is time.time() before the first process is started; "last finish" the latest
    time.time() of the no-op jobs (the same as bench.py's last_finished_at: the end of the
    function, before its outcome is written), "first start" the earliest; "steady" is the
    middle 80 % of the jobs (10th to 90th percentile of their times), start-up and tail
    excluded; "exit" is when the last worker process ended (every outcome written). Each
    run checks that there were as many runs as jobs, that the log holds as many successes,
    and that the queue is empty.
    CPU per job: user + system time of the worker processes, and of the rest of the machine
    (PostgreSQL, mostly) while they ran, as bench.py takes it;
  - W2 latency: one idle worker (the best settings; it has run one warm-up job, then waits
    1 s); `--w2-jobs` (200) jobs enqueued one at a time `--gap` (20 ms) apart with
    Queries.enqueue() on an asyncpg connection in autocommit; the latency of each is the
    job's time.time() at its start minus the time.time() taken just before the call of
    enqueue(); p50, p95 (nearest rank) and max. Only "from the call": bench.py's second pass
    (from the commit of a transaction) is not made here;
  - enqueue: 2,000 Queries.enqueue() calls one at a time (autocommit: each is its own
    statement and commit, as now() in a web request), then 10,000 in batches of 1,000 (the
    list form of enqueue(): one statement per batch); jobs/s over each whole loop.

The database is the benchmark's own: its name must start with "bench" (its public schema is
dropped and PgQueuer's schema installed in it), and the script creates it if needed.
Figures are indicative: the workers, PostgreSQL and this script share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pgqueuer
import uvloop
from measure import (  # this script's folder
    cpu_model,
    create_postgresql_database,
    machine_cpu,
    ms,
    pct,
    w1_rows,
    wal_bytes,
    wal_position,
)
from pgqueuer import Job, PgQueuer, Queries
from pgqueuer.core import logconfig
from pgqueuer.types import QueueExecutionMode

HERE = Path(__file__).resolve().parent
TMP = Path(os.environ.get("TMPDIR", "/tmp"))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_pgqueuer"
URL_ENV = "BENCH_PGQUEUER_URL"
STAMPS_ENV = "BENCH_PGQUEUER_STAMPS"  # a folder: one file per worker process, one for W2
NOOP = "bench_noop"
STAMP = "bench_stamp"
WORKLOADS = ("w1", "w2", "enqueue")
BATCH_SIZE = 100  # the best settings' batch_size (PgQueuer's default is 10)
POOL_MIN, POOL_MAX = 5, 20  # the guide's example of an asyncpg pool
ENQUEUE_BATCH = 1000
Row = tuple[str, str, str]  # workload, metric, value


# The worker's factory (what `pgq run` would be given; see worker() at the end)


@contextlib.asynccontextmanager
async def create_pgqueuer(pooled: bool) -> AsyncIterator[PgQueuer]:
    """A PgQueuer with the two bench jobs: over one asyncpg connection (the quickstart's
    factory), or over an asyncpg pool of 5 to 20 (the performance guide's)."""
    stamps = Path(os.environ[STAMPS_ENV])
    url = os.environ[URL_ENV]
    if pooled:
        pool = await asyncpg.create_pool(url, min_size=POOL_MIN, max_size=POOL_MAX)
        pgq = PgQueuer.from_asyncpg_pool(pool)
        close = pool.close
    else:
        connection = await asyncpg.connect(url)
        pgq = PgQueuer.from_asyncpg_connection(connection)
        close = connection.close
    ran: list[float] = []

    @pgq.entrypoint(NOOP)
    async def noop(job: Job) -> None:
        ran.append(time.time())  # a no-op: its start is its end

    @pgq.entrypoint(STAMP)
    async def stamp(job: Job) -> None:
        started = time.time()
        with open(stamps / "w2.txt", "a") as out:
            out.write(f"{job.id},{started!r}\n")

    try:
        yield pgq
    finally:
        await close()
        if ran:
            (stamps / f"w1-{os.getpid()}.txt").write_text("\n".join(map(repr, ran)))


# Setting up


async def ensure_database(url: str) -> None:
    """Create the benchmark's database if needed (refusing names not its own); install
    PgQueuer's schema, fresh, in it."""
    create_postgresql_database(url, "PgQueuer")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        await Queries.from_asyncpg_connection(conn).install()  # what `pgq install` runs
    finally:
        await conn.close()


async def reset(queries: Queries) -> None:
    """Empty PgQueuer's tables and refresh the planner's statistics."""
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.clear_statistics_log()
    await analyze(queries)


async def analyze(queries: Queries) -> None:
    """What autovacuum/ANALYZE keep up to date on a real database."""
    settings = queries.qbe.settings
    for table in (settings.queue_table, settings.queue_table_log):
        await queries.driver.execute(f"VACUUM ANALYZE {table}")


async def enqueue_many(queries: Queries, count: int, batch: int = ENQUEUE_BATCH) -> None:
    """`count` no-op jobs, `batch` per statement (enqueue()'s list form)."""
    for first in range(0, count, batch):
        size = min(batch, count - first)
        await queries.enqueue([NOOP] * size, [None] * size, [0] * size)


# Worker processes


class Worker:
    """A worker process: this script's `worker` command, PgQueuer's run() on the factory."""

    def __init__(self, url: str, stamps: Path, *options: str) -> None:
        env = dict(os.environ)
        env[URL_ENV] = url
        env[STAMPS_ENV] = str(stamps)
        self.log = open(TMP / "bench-pgqueuer-worker.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / Path(__file__).name), "worker", *options],
            env=env,
            cwd=HERE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError("the worker exited; see bench-pgqueuer-worker.log")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self.log.close()
        return code


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def fresh_stamps() -> Path:
    stamps = TMP / "bench-pgqueuer-stamps"
    stamps.mkdir(exist_ok=True)
    for old in stamps.iterdir():
        old.unlink()
    return stamps


# Workloads


async def w1(
    url: str, queries: Queries, jobs: int, processes: int, options: tuple[str, ...], label: str
) -> list[Row]:
    """Drain `jobs` no-op jobs with `processes` workers in drain mode, started together."""
    await reset(queries)
    await enqueue_many(queries, jobs)
    await analyze(queries)
    stamps = fresh_stamps()
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_machine = machine_cpu()
    wal_at = wal_position(url)
    launched = time.time()
    workers = [Worker(url, stamps, "--mode", "drain", *options) for _ in range(processes)]
    codes = [worker.wait() for worker in workers]
    exited = time.time()
    machine_seconds = machine_cpu() - before_machine
    wal = wal_bytes(url, wal_at)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise RuntimeError(f"a worker exited with {codes}; see bench-pgqueuer-worker.log")
    worker_seconds = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    ran = sorted(
        float(line) for path in stamps.glob("w1-*.txt") for line in path.read_text().split()
    )
    settings = queries.qbe.settings
    left = await queries.driver.fetch(f"SELECT count(*) AS n FROM {settings.queue_table}")
    logged = await queries.driver.fetch(
        f"SELECT count(*) AS n FROM {settings.queue_table_log} WHERE status = 'successful'"
    )
    if len(ran) != jobs or left[0]["n"] or logged[0]["n"] != jobs:
        raise RuntimeError(
            f"{len(ran)} runs, {logged[0]['n']} successes logged and {left[0]['n']} jobs left,"
            f" for {jobs} jobs"
        )
    name = f"W1 drain {jobs:,}, {processes} process{'es' if processes > 1 else ''}, {label}"
    return w1_rows(name, jobs, ran, launched, exited, worker_seconds, machine_seconds, wal)


async def w2(
    url: str, queries: Queries, count: int, gap: float, options: tuple[str, ...], label: str
) -> list[Row]:
    """An idle worker; jobs enqueued one at a time `gap` apart: enqueue-to-start latency."""
    await reset(queries)
    stamps = fresh_stamps()
    out = stamps / "w2.txt"
    out.write_text("")

    def started() -> dict[int, float]:
        pairs = (line.split(",") for line in out.read_text().splitlines())
        return {int(job_id): float(at) for job_id, at in pairs}

    since: dict[int, float] = {}
    worker = Worker(url, stamps, *options)
    try:
        (warm_up,) = await queries.enqueue(STAMP, None)

        async def warmed_up() -> bool:
            worker.check_alive()
            return warm_up in started()

        await wait_until(warmed_up, 60, "the worker's warm-up job")
        await asyncio.sleep(1.0)  # idle: asleep, waiting for work
        start = time.monotonic()
        for i in range(count):
            delay = start + i * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            before = time.time()
            (job_id,) = await queries.enqueue(STAMP, None)
            since[job_id] = before

        async def done() -> bool:
            worker.check_alive()
            return len(started()) >= count + 1

        await wait_until(done, 60, "the jobs' stamps")
    finally:
        worker.stop()
    at = started()
    latencies = [at[job_id] - before for job_id, before in since.items()]
    name = f"W2 latency {label}, {count} jobs {gap * 1000:.0f} ms apart"
    metric = "from the call of enqueue() to start"
    return [
        (name, f"{metric}: p50", ms(pct(latencies, 50))),
        (name, f"{metric}: p95", ms(pct(latencies, 95))),
        (name, f"{metric}: max", ms(max(latencies))),
    ]


async def enqueue(queries: Queries, single: int, bulk: int) -> list[Row]:
    """enqueue() one at a time (autocommit), and in batches of 1,000."""
    await reset(queries)
    t = time.perf_counter()
    for _ in range(single):
        await queries.enqueue(NOOP, None)
    one_by_one = single / (time.perf_counter() - t)
    await reset(queries)
    t = time.perf_counter()
    await enqueue_many(queries, bulk)
    batched = bulk / (time.perf_counter() - t)
    name = f"Enqueue PgQueuer {pgqueuer.__version__}"
    return [
        (name, f"enqueue() x {single:,}, one at a time", f"{one_by_one:,.0f} jobs/s"),
        (name, f"enqueue() {bulk:,}, batches of {ENQUEUE_BATCH:,}", f"{batched:,.0f} jobs/s"),
    ]


# The report


async def machine(queries: Queries) -> list[str]:
    cpu = cpu_model()
    rows = await queries.driver.fetch("SELECT version() AS v")
    version = str(rows[0]["v"])
    return [
        f"machine: {platform.node()}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}",
        f"python {platform.python_version()}, pgqueuer {pgqueuer.__version__},"
        f" asyncpg {asyncpg.__version__}",
        f"database: postgresql {version.split(' on ')[0]}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


async def run(args: argparse.Namespace) -> None:
    await ensure_database(args.database_url)
    conn = await asyncpg.connect(args.database_url)
    queries = Queries.from_asyncpg_connection(conn)
    try:
        for line in await machine(queries):
            print(line, flush=True)
        print("\n| workload | metric | value |\n|---|---|---|", flush=True)
        url, jobs = args.database_url, args.jobs
        best = ("--pool", "--batch-size", str(args.batch_size))
        label = f"PgQueuer {pgqueuer.__version__}, asyncpg pool, batch_size {args.batch_size}"
        defaults = f"PgQueuer {pgqueuer.__version__} defaults (one connection, batch_size 10)"
        runs: dict[str, list[Callable[[], Awaitable[list[Row]]]]] = {
            "w1": [
                lambda: w1(url, queries, jobs, 1, best, label),
                lambda: w1(url, queries, jobs, 2, best, label),
                lambda: w1(url, queries, jobs, 1, (), defaults),
            ],
            "w2": [lambda: w2(url, queries, args.w2_jobs, args.gap, best, label)],
            "enqueue": [lambda: enqueue(queries, args.single, args.bulk)],
        }
        for name in args.workloads:
            for workload in runs[name]:
                for row in await workload():
                    print(f"| {row[0]} | {row[1]} | {row[2]} |", flush=True)
    finally:
        await conn.close()
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def worker(argv: list[str]) -> None:
    """What `pgq run peer_pgqueuer:create_pgqueuer [options]` does, through PgQueuer's run()
    (the CLI of pgqueuer 1.6.0 fails to start with typer 0.29: see the docstring)."""
    parser = argparse.ArgumentParser(prog="peer_pgqueuer.py worker")
    parser.add_argument("--pool", action="store_true", help="the factory with a pool")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--mode", choices=[mode.name for mode in QueueExecutionMode])
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}  # only what is given: the rest stays at run()'s defaults
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if args.mode is not None:
        options["mode"] = QueueExecutionMode[args.mode]
    logconfig.setup_fancy_logger(logconfig.LogLevel.INFO)  # as `pgq run` does by default
    uvloop.run(pgqueuer.run(functools.partial(create_pgqueuer, args.pool), **options))


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument(
        "-w", "--workloads", default=",".join(WORKLOADS), help="default: %(default)s"
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="W1 job count (default 10,000)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"batch_size of the best settings (default {BATCH_SIZE})",
    )
    parser.add_argument("--w2-jobs", type=int, default=200, help="W2 job count (default 200)")
    parser.add_argument(
        "--gap", type=float, default=0.020, help="W2: seconds between enqueues (default 0.020)"
    )
    parser.add_argument(
        "--single", type=int, default=2000, help="enqueue one at a time (default 2,000)"
    )
    parser.add_argument(
        "--bulk", type=int, default=10_000, help="enqueue in batches of 1,000 (default 10,000)"
    )
    # The event loop PgQueuer's CLI runs on (uvloop where installed), for the enqueues too.
    args = parser.parse_args()
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; use {', '.join(WORKLOADS)}")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
