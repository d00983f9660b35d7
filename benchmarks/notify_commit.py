#!/usr/bin/env python
"""Where now()'s NOTIFY goes: after the job's commit in a transaction of its own (what
django_jobs sends), or inside the job's transaction (what PgQueuer's and procrastinate's
triggers do), from 1, 4 and 8 callers at once (PostgreSQL).

    python benchmarks/notify_commit.py --database-url postgres://postgres@127.0.0.1:5432/bench_x

Each caller is a process of its own with its own connection in autocommit, as the workers
of a web server are, and sends now()'s own INSERT (the statement and values the app builds
for a no-op job) in one query string, one round trip each:

  - "after": INSERT; COMMIT; SELECT pg_notify(...): two transactions, as now() sends it;
  - "inside": INSERT; SELECT pg_notify(...): one implicit transaction.

A listener drains the notifications, as an idle worker does. The two forms alternate, the
rounds rotate, and each figure is calls per second over all callers (the first call of
each caller to the last). Prints one table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMS = {
    "after": "{insert}; COMMIT; SELECT pg_notify(%s, %s)",
    "inside": "{insert}; SELECT pg_notify(%s, %s)",
}


def statement(url: str) -> tuple[str, list[Any]]:
    """now()'s INSERT of a no-op job on the benchmark database, and its parameters."""
    from benchmarks import bench

    bench.setup(url)
    from django.db import connections

    from django_jobs.api import _job_fields
    from django_jobs.inserting import _plan
    from django_jobs.models import Job

    connection = connections["default"]
    connection.ensure_connection()
    fields = _job_fields("now", "bench-noop", None, priority=None, queue=None, max_attempts=None)
    plan = _plan(Job, connection)
    sql, inline = plan.statement(tuple(fields), connection)
    _, params = plan.values(fields, connection, inline)
    return sql, params


def caller(dsn: str, query: str, params: list[Any], calls: int, start: Any, out: Any) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(20):  # warm up
                psycopg.ClientCursor(conn).execute(query, params)
            start.wait()
            began = time.perf_counter()
            for _ in range(calls):
                psycopg.ClientCursor(conn).execute(query, params)
            out.put((began, time.perf_counter()))
    except BaseException as exc:
        out.put(exc)  # the parent fails at once, with the reason
        raise


def rate(dsn: str, query: str, params: list[Any], callers: int, calls: int) -> float:
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    processes = [
        context.Process(target=caller, args=(dsn, query, params, calls, start, out))
        for _ in range(callers)
    ]
    for process in processes:
        process.start()
    time.sleep(1.0)  # every caller connected and warmed up
    start.set()
    spans = [out.get(timeout=300) for _ in processes]
    for process in processes:
        process.join()
    for span in spans:
        if isinstance(span, BaseException):
            raise SystemExit(f"a caller failed: {span!r}")
    return callers * calls / (max(end for _, end in spans) - min(began for began, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=500, help="per caller (default 500)")
    parser.add_argument("--callers", default="1,4,8")
    args = parser.parse_args()
    insert, params = statement(args.database_url)

    import psycopg
    from django.db import connections

    from benchmarks import bench
    from django_jobs.notify import CHANNEL

    dsn = connections["default"].get_connection_params()
    dsn = psycopg.conninfo.make_conninfo(
        **{k: v for k, v in dsn.items() if k in ("host", "port", "dbname", "user", "password")}
    )
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            for _ in listener.notifies(timeout=0.2):
                pass

    threading.Thread(target=drain, daemon=True).start()
    figures: dict[tuple[str, int], list[float]] = {}
    counts = [int(n) for n in args.callers.split(",")]
    for number in range(args.rounds):
        order = list(FORMS) if number % 2 == 0 else list(reversed(FORMS))
        for callers in counts:
            for form in order:
                bench.reset()
                query = FORMS[form].format(insert=insert)
                figure = rate(dsn, query, [*params, CHANNEL, "default"], callers, args.calls)
                figures.setdefault((form, callers), []).append(figure)
    stop.set()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(
        "| callers at once | NOTIFY after the commit (now()), calls/s | inside the job's "
        "transaction, calls/s | after / inside (median) |"
    )
    print("|---|---|---|---|")
    for callers in counts:
        after, inside = figures[("after", callers)], figures[("inside", callers)]
        cells = [" / ".join(f"{x:,.0f}" for x in values) for values in (after, inside)]
        ratio = statistics.median(after) / statistics.median(inside)
        print(f"| {callers} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
