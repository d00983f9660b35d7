#!/usr/bin/env python
"""W2 latency of the peer library procrastinate (PostgreSQL, LISTEN/NOTIFY); prints a table.

The same measurement as w2() in bench.py, for comparison on the same machine and day: an
idle worker (4 concurrent jobs); `--jobs` jobs deferred one at a time `--gap` apart; the
latency of each is its task's first time.time() minus the time.time() taken just before
the call of defer(); p50, p95 (nearest rank) and max. Only "from the call": bench.py's
second pass (from the commit of a transaction) is not made here.

Standalone (neither Django nor django_jobs), in a venv of its own:

    python3 -m venv /tmp/venv-procrastinate
    /tmp/venv-procrastinate/bin/pip install procrastinate 'psycopg[binary]'
    /tmp/venv-procrastinate/bin/python benchmarks/peer_procrastinate.py \\
        --database-url postgres://postgres@127.0.0.1:5432/bench_procrastinate

How, as procrastinate is used by default (written against procrastinate 3.10.0):
  - the app has a PsycopgConnector; the script opens it synchronously (app.open(), a
    psycopg_pool.ConnectionPool, which checks each connection it lends with an empty
    query: procrastinate's own setting) and defers with the synchronous task.defer(n=i);
  - the worker is a separate process, `python -m procrastinate --app=peer_procrastinate.app
    worker --concurrency 4`, with every other setting at its default: listen_notify on
    (LISTEN procrastinate_any_queue_v1; a trigger on the jobs table NOTIFYs on insert),
    fetch_job_polling_interval 5 s (the fallback poll), INFO logging to a file;
  - the task is a plain (sync) function, run by the worker in a thread as procrastinate
    does for sync tasks (as django_jobs runs its jobs); procrastinate keeps no return
    values, so the task appends "n,start" to a file, matched to the defer times by n.

The database is the benchmark's own: its name must start with "bench" (its public schema is
dropped and procrastinate's schema applied to it), and the script creates it if needed.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import procrastinate
import psycopg
from measure import cpu_model, ms, pct, wait_until  # this script's folder

HERE = Path(__file__).resolve().parent
TMP = Path(os.environ.get("TMPDIR", "/tmp"))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_procrastinate"
URL_ENV = "BENCH_PROCRASTINATE_URL"
STAMPS_ENV = "BENCH_PROCRASTINATE_STAMPS"
TASK = "bench_stamp"
Row = tuple[str, str, str]  # workload, metric, value


# The app and the task (imported by the worker process as the module peer_procrastinate)


def stamp(n: int) -> None:
    """The job: note when it started, keyed by its argument."""
    started = time.time()
    with open(os.environ[STAMPS_ENV], "a") as stamps:
        stamps.write(f"{n},{started!r}\n")


def build_app(url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    app.task(name=TASK)(stamp)  # named: the script runs as __main__, the worker imports it
    return app


# What `procrastinate --app=peer_procrastinate.app worker` loads; the parent gives the URL.
if __name__ != "__main__":
    app = build_app(os.environ.get(URL_ENV, DEFAULT_URL))


# Setting up


def ensure_database(url: str) -> None:
    """Create the benchmark's database if needed (refusing names not its own); put
    procrastinate's schema, fresh, in it."""
    parsed = urlparse(url)
    if not parsed.scheme.startswith("postgres"):
        sys.exit(f"procrastinate needs PostgreSQL, not {parsed.scheme!r}.")
    name = parsed.path.lstrip("/")
    if not name.startswith("bench"):
        sys.exit(f"The database name must start with 'bench' (it is emptied), not {name!r}.")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    schema_app = build_app(url)
    with schema_app.open():
        schema_app.schema_manager.apply_schema()


class Worker:
    """A `procrastinate worker` process on the benchmark's database."""

    def __init__(self, url: str, stamps: Path, concurrency: int) -> None:
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
                "--concurrency",
                str(concurrency),
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
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


# The workload


def w2(url: str, count: int, gap: float, concurrency: int = 4) -> list[Row]:
    """An idle worker; jobs deferred one at a time `gap` apart: defer-to-start latency."""
    stamps = TMP / "bench-procrastinate-stamps.txt"
    stamps.write_text("")
    bench_app = build_app(url)
    task = bench_app.tasks[TASK]
    since: dict[int, float] = {}
    with bench_app.open():
        worker = Worker(url, stamps, concurrency)
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
                return len(stamps.read_text().splitlines()) >= count

            wait_until(done, 60, "the jobs' stamps")
        finally:
            worker.stop()
    started: dict[int, float] = {}
    for line in stamps.read_text().splitlines():
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
    parser.add_argument("--jobs", type=int, default=200, help="jobs deferred (default 200)")
    parser.add_argument(
        "--gap", type=float, default=0.020, help="seconds between defers (default 0.020)"
    )
    args = parser.parse_args()
    # procrastinate warns of an App made in __main__, for its tasks would be named __main__.*
    # there and otherwise in the worker; the task here has the same explicit name in both.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    ensure_database(args.database_url)
    for line in machine(args.database_url):
        print(line, flush=True)
    print("\n| workload | metric | value |\n|---|---|---|", flush=True)
    for row in w2(args.database_url, args.jobs, args.gap):
        print(f"| {row[0]} | {row[1]} | {row[2]} |", flush=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
