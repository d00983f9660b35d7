#!/usr/bin/env python
"""The SQL floor of W1: pgbench runs the bare claim and finish statements of a job queue on a
minimal queue table; prints a table of jobs/s.

    python benchmarks/floor/pgbench_floor.py \\
        --database-url postgres://postgres@127.0.0.1:5432/bench_floor

What a queue in PostgreSQL cannot beat on this machine on the day of the run, with no
library around the statements: `--jobs` (10,000) rows in a table with only what a claim
needs (id, state, due time, name, arguments; a partial index on the queued rows' due time),
VACUUM ANALYZEd, then `--clients` (8) pgbench clients, each transaction of claim.sql:
one statement claims N due rows (UPDATE of the rows locked FOR UPDATE SKIP LOCKED, their ids
returned), a second one deletes them (the jobs' outcomes): two commits per N jobs. N is 1
(a worker that claims one job at a time), 10 (a worker that claims in batches) and 100
(PgQueuer's best settings, batch_size 100).
Each is its own transaction (autocommit), as a worker's claim and outcome are, with the
server's synchronous_commit (on): every commit durable. The clients run enough transactions
between them to drain the table; jobs/s is the rows deleted over pgbench's own time (its tps,
without the connections' start-up). Only psycopg and the pgbench client are needed.

The database is the benchmark's own: its name must start with "bench" (its table floor_job is
dropped and created again), and the script creates it if needed.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import psycopg

HERE = Path(__file__).resolve().parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_floor"
SCRIPT = HERE / "claim.sql"
PER_CLAIM = (1, 10, 100)  # jobs per claim, one pgbench run each
TABLE = """
CREATE TABLE floor_job (
    id bigserial PRIMARY KEY,
    state text NOT NULL DEFAULT 'queued',
    due_at timestamptz NOT NULL DEFAULT now(),
    name text NOT NULL,
    args jsonb
);
CREATE INDEX floor_job_due ON floor_job (due_at, id) WHERE state = 'queued'
"""


def ensure_database(url: str) -> None:
    """Create the benchmark's database if needed (refusing names not its own)."""
    parsed = urlparse(url)
    if not parsed.scheme.startswith("postgres"):
        sys.exit(f"pgbench needs PostgreSQL, not {parsed.scheme!r}.")
    name = parsed.path.lstrip("/")
    if not name.startswith("bench"):
        sys.exit(f"The database name must start with 'bench' (it is emptied), not {name!r}.")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{name}"')


def fill(url: str, jobs: int) -> None:
    """A fresh floor_job table holding `jobs` due rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS floor_job")
        for statement in TABLE.split(";"):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO floor_job (name, args) SELECT 'bench-noop', NULL"
            " FROM generate_series(1, %s)",
            [jobs],
        )
        conn.execute("VACUUM ANALYZE floor_job")


def left(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM floor_job").fetchone()
    return row[0] if row else 0


def run(url: str, jobs: int, per_claim: int, clients: int) -> float:
    """Drain `jobs` rows with pgbench, `per_claim` per claim: jobs/s."""
    fill(url, jobs)
    parsed = urlparse(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    transactions = math.ceil(jobs / per_claim / clients)
    command = [
        "pgbench",
        "--no-vacuum",
        f"--host={parsed.hostname or '127.0.0.1'}",
        f"--port={parsed.port or 5432}",
        f"--username={parsed.username or 'postgres'}",
        f"--client={clients}",
        f"--jobs={min(clients, os.cpu_count() or 1)}",
        f"--transactions={transactions}",
        f"--file={SCRIPT}",
        f"--define=per_claim={per_claim}",
        parsed.path.lstrip("/"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench exited with {done.returncode}: {done.stderr.strip()}")
    tps = re.search(r"^tps = ([\d.]+)", done.stdout, re.MULTILINE)
    processed = re.search(r"actually processed: (\d+)", done.stdout)
    if not tps or not processed:
        raise RuntimeError(f"no tps in pgbench's output:\n{done.stdout}")
    deleted = jobs - left(url)
    if deleted != jobs:
        raise RuntimeError(f"{deleted} of {jobs} rows deleted")
    seconds = int(processed.group(1)) / float(tps.group(1))
    return deleted / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--jobs", type=int, default=10_000, help="rows drained (default 10,000)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    args = parser.parse_args()
    ensure_database(args.database_url)
    with psycopg.connect(args.database_url) as conn:
        row = conn.execute("SELECT version()").fetchone()
    print(f"database: postgresql {(row[0] if row else '?').split(' on ')[0]}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n| workload | metric | value |\n|---|---|---|", flush=True)
    for per_claim in PER_CLAIM:
        rate = run(args.database_url, args.jobs, per_claim, args.clients)
        name = f"W1 floor, pgbench, {args.jobs:,} rows, {args.clients} clients"
        metric = f"claim {per_claim} + delete, jobs/s"
        print(f"| {name} | {metric} | {rate:,.0f} |", flush=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
