#!/usr/bin/env python
"""W1, W2 and enqueue of the peer library procrastinate (PostgreSQL, LISTEN/NOTIFY); prints a
table.

The same workloads as bench.py and peer_pgqueuer.py, for comparison on the same machine in the
same run; the rows carry their names, so the tables read side by side.

Standalone (neither Django nor django_jobs), in a venv of its own:

    python3 -m venv /tmp/venv-procrastinate
    /tmp/venv-procrastinate/bin/pip install procrastinate 'psycopg[binary]'
    /tmp/venv-procrastinate/bin/python benchmarks/peer_procrastinate.py \\
        --database-url postgres://postgres@127.0.0.1:5432/bench_procrastinate

How, as procrastinate is used (written against procrastinate 3.10.0):
  - the app has a PsycopgConnector; the script opens it synchronously (app.open(), a
    psycopg_pool.ConnectionPool, which checks each connection it lends with an empty
    query: procrastinate's own setting) and defers with the synchronous task.defer() and
    task.batch_defer() (one INSERT for the whole list: "more efficient than deferring them
    one by one", its docstring says);
  - a worker is a separate process, `python -m procrastinate --app=peer_procrastinate.app
    worker [options]`, with every setting not named here at its default: listen_notify on
    (LISTEN procrastinate_any_queue_v1; a trigger on the jobs table NOTIFYs on insert),
    fetch_job_polling_interval 5 s (the fallback poll), delete_jobs "never" (finished jobs
    stay in the table with their events: the default, and what bench.py's django_jobs keeps
    too), INFO logging to a file;
  - best configuration for short jobs: `async def` tasks and `--concurrency 10` in each
    process, several processes. Procrastinate's "Execute multiple jobs at the same time"
    how-to says a worker takes one job at a time by default, that one way to more throughput
    is more workers "each using their own process", and that asynchronous tasks run
    concurrently in sub-workers (`--concurrency`, its example is 30); sync tasks run in
    threads (asgiref's sync_to_async), so async is its native, cheapest kind. Each
    sub-worker fetches one job per statement (procrastinate_fetch_job_v2) and finishes it with
    one more (procrastinate_finish_job), so on this 2-core machine concurrency beyond what
    keeps PostgreSQL busy only adds contention. With 2 processes draining 2,000 jobs, 10 was
    the fastest of 2, 4, 10 and 30 here (385, 251, 587 and 467 jobs/s on 2026-11-30, a
    loaded machine: indicative); 2 processes of it are W1's 2-process run. "defaults" is
    `worker --one-shot` with no other option (concurrency 1);
  - the W1 job `bench_noop` is an `async def` that notes time.time() in a list in memory,
    which the worker process writes to a file when it exits; the W2 job `bench_stamp` is a
    plain (sync) function, run in a thread as procrastinate does for sync tasks (as
    django_jobs runs its jobs), that appends "n,start" to a file, matched to the defer
    times by n.

Workloads and how each figure is taken:
  - W1 drain: `--jobs` (10,000) jobs deferred with batch_defer() in batches of 1,000, the
    tables VACUUM ANALYZEd, then workers started together with `--one-shot` (they exit once
    no job is left), the best configuration in 1 and in 2 processes, and the defaults in 1.
    "launch" is time.time() before the first process is started; "last finish" the latest
    time.time() of the no-op jobs, "first start" the earliest; "steady" is the middle 80 %
    of the jobs (10th to 90th percentile of their times); "exit" is when the last worker
    process ended (every outcome written). Each run checks that there were as many runs as
    jobs and as many jobs in status "succeeded". CPU per job: user + system time of the
    worker processes, and of the rest of the machine (PostgreSQL, mostly) while they ran,
    as bench.py takes it;
  - W2 latency: an idle worker (4 concurrent jobs); `--w2-jobs` (200) jobs deferred one at a
    time `--gap` (20 ms) apart; the latency of each is its task's first time.time() minus
    the time.time() taken just before the call of defer(); p50, p95 (nearest rank) and max.
    Only "from the call": bench.py's second pass (from the commit of a transaction) is not
    made here;
  - enqueue: 2,000 defer() calls one at a time (each its own statement and commit, as now()
    in a web request), then 10,000 with batch_defer() in batches of 1,000; jobs/s over each
    whole loop.

The database is the benchmark's own: its name must start with "bench" (its public schema is
dropped and procrastinate's schema applied to it), and the script creates it if needed.
Figures are indicative: the workers, PostgreSQL and this script share the machine's cores.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import procrastinate
import psycopg
from measure import (  # this script's folder
    cpu_model,
    create_postgresql_database,
    machine_cpu,
    ms,
    pct,
    w1_rows,
    wait_until,
    wal_bytes,
    wal_position,
)

HERE = Path(__file__).resolve().parent
TMP = Path(os.environ.get("TMPDIR", "/tmp"))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_procrastinate"
URL_ENV = "BENCH_PROCRASTINATE_URL"
STAMPS_ENV = "BENCH_PROCRASTINATE_STAMPS"  # a folder: one file per W1 worker, one for W2
NOOP = "bench_noop"
STAMP = "bench_stamp"
WORKLOADS = ("w1", "w2", "enqueue")
CONCURRENCY = 10  # async jobs at once per process in the best configuration (default 1)
ENQUEUE_BATCH = 1000
Row = tuple[str, str, str]  # workload, metric, value


# The app and its tasks (imported by the worker processes as the module peer_procrastinate)

ran: list[float] = []  # the W1 jobs' times in this worker process


async def noop() -> None:
    """The W1 job: a no-op that notes when it ran (its start is its end)."""
    ran.append(time.time())


def stamp(n: int) -> None:
    """The W2 job: note when it started, keyed by its argument."""
    started = time.time()
    with open(Path(os.environ[STAMPS_ENV]) / "w2.txt", "a") as stamps:
        stamps.write(f"{n},{started!r}\n")


def write_ran() -> None:
    if ran:
        (Path(os.environ[STAMPS_ENV]) / f"w1-{os.getpid()}.txt").write_text(
            "\n".join(map(repr, ran))
        )


def build_app(url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    # Named: the script runs as __main__, the worker imports it as peer_procrastinate.
    app.task(name=NOOP)(noop)
    app.task(name=STAMP)(stamp)
    return app


# What `procrastinate --app=peer_procrastinate.app worker` loads; the parent gives the URL.
if __name__ != "__main__":
    app = build_app(os.environ.get(URL_ENV, DEFAULT_URL))
    if STAMPS_ENV in os.environ:
        atexit.register(write_ran)


# Setting up


def ensure_database(url: str) -> None:
    """Create the benchmark's database if needed (refusing names not its own); put
    procrastinate's schema, fresh, in it."""
    create_postgresql_database(url, "procrastinate")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    schema_app = build_app(url)
    with schema_app.open():
        schema_app.schema_manager.apply_schema()


def reset(url: str) -> None:
    """Empty procrastinate's tables and refresh the planner's statistics."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs, procrastinate_workers CASCADE")
    analyze(url)


def analyze(url: str) -> None:
    """What autovacuum/ANALYZE keep up to date on a real database."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("procrastinate_jobs", "procrastinate_events"):
            conn.execute(f"VACUUM ANALYZE {table}")


def fresh_stamps() -> Path:
    stamps = TMP / "bench-procrastinate-stamps"
    stamps.mkdir(exist_ok=True)
    for old in stamps.iterdir():
        old.unlink()
    return stamps


class Worker:
    """A `procrastinate worker` process on the benchmark's database."""

    def __init__(self, url: str, stamps: Path, *options: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        env[URL_ENV] = url
        env[STAMPS_ENV] = str(stamps)
        self.log = open(TMP / "bench-procrastinate-worker.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "procrastinate",
                "--app=peer_procrastinate.app",
                "worker",
                *options,
            ],
            env=env,
            cwd=HERE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_listening(self, url: str, timeout: float = 60) -> None:
        """Until a session of the database has sent procrastinate's LISTEN."""
        with psycopg.connect(url, autocommit=True) as conn:

            def listening() -> bool:
                if self.proc.poll() is not None:
                    raise RuntimeError("the worker exited; see bench-procrastinate-worker.log")
                found = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query LIKE 'LISTEN %procrastinate%'"
                ).fetchone()
                return found is not None

            wait_until(listening, timeout, "the worker's LISTEN")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()

    def wait(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        self.log.close()
        return code


# Workloads


def defer_many(bench_app: procrastinate.App, count: int, batch: int = ENQUEUE_BATCH) -> None:
    """`count` no-op jobs, `batch` per statement (batch_defer())."""
    task = bench_app.tasks[NOOP]
    for first in range(0, count, batch):
        task.batch_defer(*({} for _ in range(min(batch, count - first))))


def w1(url: str, jobs: int, processes: int, options: tuple[str, ...], label: str) -> list[Row]:
    """Drain `jobs` no-op jobs with `processes` one-shot workers, started together."""
    reset(url)
    bench_app = build_app(url)
    with bench_app.open():
        defer_many(bench_app, jobs)
    analyze(url)
    stamps = fresh_stamps()
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_machine = machine_cpu()
    wal_at = wal_position(url)
    launched = time.time()
    workers = [Worker(url, stamps, "--one-shot", *options) for _ in range(processes)]
    codes = [worker.wait() for worker in workers]
    exited = time.time()
    machine_seconds = machine_cpu() - before_machine
    wal = wal_bytes(url, wal_at)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise RuntimeError(f"a worker exited with {codes}; see bench-procrastinate-worker.log")
    worker_seconds = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    ran_at = sorted(
        float(line) for path in stamps.glob("w1-*.txt") for line in path.read_text().split()
    )
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchone()
    succeeded = row[0] if row else 0
    if len(ran_at) != jobs or succeeded != jobs:
        raise RuntimeError(f"{len(ran_at)} runs and {succeeded} jobs succeeded, for {jobs} jobs")
    name = f"W1 drain {jobs:,}, {processes} process{'es' if processes > 1 else ''}, {label}"
    return w1_rows(name, jobs, ran_at, launched, exited, worker_seconds, machine_seconds, wal)


def w2(url: str, count: int, gap: float, concurrency: int = 4) -> list[Row]:
    """An idle worker; jobs deferred one at a time `gap` apart: defer-to-start latency."""
    reset(url)
    stamps = fresh_stamps()
    out = stamps / "w2.txt"
    out.write_text("")
    bench_app = build_app(url)
    task = bench_app.tasks[STAMP]
    since: dict[int, float] = {}
    with bench_app.open():
        worker = Worker(url, stamps, "--concurrency", str(concurrency))
        try:
            worker.wait_listening(url)
            time.sleep(1.0)  # idle: asleep, waiting for work
            start = time.monotonic()
            for i in range(count):
                delay = start + i * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                before = time.time()
                task.defer(n=i)
                since[i] = before

            def done() -> bool:
                return len(out.read_text().splitlines()) >= count

            wait_until(done, 60, "the jobs' stamps")
        finally:
            worker.stop()
    started: dict[int, float] = {}
    for line in out.read_text().splitlines():
        n, at = line.split(",")
        started[int(n)] = float(at)
    latencies = [started[n] - at for n, at in since.items()]
    name = f"W2 latency procrastinate {procrastinate.__version__}, {count} jobs"
    name += f" {gap * 1000:.0f} ms apart"
    label = "from the call of defer() to start"
    return [
        (name, f"{label}: p50", ms(pct(latencies, 50))),
        (name, f"{label}: p95", ms(pct(latencies, 95))),
        (name, f"{label}: max", ms(max(latencies))),
    ]


def enqueue(url: str, single: int, bulk: int) -> list[Row]:
    """defer() one at a time (each its own commit), and batch_defer() in batches of 1,000."""
    bench_app = build_app(url)
    task = bench_app.tasks[NOOP]
    with bench_app.open():
        reset(url)
        t = time.perf_counter()
        for _ in range(single):
            task.defer()
        one_by_one = single / (time.perf_counter() - t)
        reset(url)
        t = time.perf_counter()
        defer_many(bench_app, bulk)
        batched = bulk / (time.perf_counter() - t)
    name = f"Enqueue procrastinate {procrastinate.__version__}"
    return [
        (name, f"defer() x {single:,}, one at a time", f"{one_by_one:,.0f} jobs/s"),
        (
            name,
            f"batch_defer() {bulk:,}, batches of {ENQUEUE_BATCH:,}",
            f"{batched:,.0f} jobs/s",
        ),
    ]


# The report


def machine(url: str) -> list[str]:
    cpu = cpu_model()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version()").fetchone()
    version = row[0] if row else "?"
    return [
        f"machine: {platform.node()}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}",
        f"python {platform.python_version()}, procrastinate {procrastinate.__version__},"
        f" psycopg {psycopg.__version__}",
        f"database: postgresql {version.split(' on ')[0]}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument(
        "-w", "--workloads", default=",".join(WORKLOADS), help="default: %(default)s"
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="W1 job count (default 10,000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"--concurrency of the best configuration (default {CONCURRENCY})",
    )
    parser.add_argument("--w2-jobs", type=int, default=200, help="W2 job count (default 200)")
    parser.add_argument(
        "--gap", type=float, default=0.020, help="W2: seconds between defers (default 0.020)"
    )
    parser.add_argument(
        "--single", type=int, default=2000, help="defer() one at a time (default 2,000)"
    )
    parser.add_argument(
        "--bulk", type=int, default=10_000, help="batch_defer() in 1,000s (default 10,000)"
    )
    args = parser.parse_args()
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(wanted) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; use {', '.join(WORKLOADS)}")
    # procrastinate warns of an App made in __main__, for its tasks would be named __main__.*
    # there and otherwise in the worker; the tasks here have the same explicit names in both.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    url, jobs = args.database_url, args.jobs
    ensure_database(url)
    for line in machine(url):
        print(line, flush=True)
    print("\n| workload | metric | value |\n|---|---|---|", flush=True)
    version = procrastinate.__version__
    best = ("--concurrency", str(args.concurrency))
    label = f"procrastinate {version}, async jobs, --concurrency {args.concurrency}"
    defaults = f"procrastinate {version} defaults (worker --one-shot, concurrency 1)"
    runs: dict[str, list[Callable[[], list[Row]]]] = {
        "w1": [
            lambda: w1(url, jobs, 1, best, label),
            lambda: w1(url, jobs, 2, best, label),
            lambda: w1(url, jobs, 1, (), defaults),
        ],
        "w2": [lambda: w2(url, args.w2_jobs, args.gap)],
        "enqueue": [lambda: enqueue(url, args.single, args.bulk)],
    }
    for name in wanted:
        for workload in runs[name]:
            for row in workload():
                print(f"| {row[0]} | {row[1]} | {row[2]} |", flush=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
