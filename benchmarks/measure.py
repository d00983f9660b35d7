"""Helpers shared by the benchmark scripts (plain Python: the peer scripts run without Django)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlparse


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" where there is none)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def machine_cpu() -> float:
    """Seconds of CPU (user + system, every core) the machine has spent since boot."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    ticks = sum(int(x) for x in fields[:3]) + sum(int(x) for x in fields[5:8])
    return ticks / os.sysconf("SC_CLK_TCK")


def wal_position(url: str) -> str | None:
    """The PostgreSQL server's write-ahead log position (None on another database)."""
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    return _psql(url, "SELECT pg_current_wal_lsn()")


def wal_bytes(url: str, since: str | None) -> int | None:
    """Bytes of write-ahead log the server wrote since `since` (every database on it)."""
    if since is None:
        return None
    return int(_psql(url, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{since}')"))


def create_postgresql_database(url: str, who: str) -> None:
    """Create the benchmark's PostgreSQL database at `url` if needed, refusing a name that is
    not the benchmark's own (it is emptied) and a server that is not PostgreSQL."""
    parsed = urlparse(url)
    if not parsed.scheme.startswith("postgres"):
        sys.exit(f"{who} needs PostgreSQL, not {parsed.scheme!r}.")
    name = parsed.path.lstrip("/")
    if not re.fullmatch(r"bench\w*", name):
        sys.exit(
            f"The database name must be bench followed by letters, digits or _ (it is "
            f"emptied), not {name!r}."
        )
    admin = parsed._replace(path="/postgres").geturl()
    if _psql(admin, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
        _psql(admin, f'CREATE DATABASE "{name}"')


def _psql(url: str, sql: str) -> str:
    done = subprocess.run(["psql", url, "-Atc", sql], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def w1_rows(
    name: str,
    jobs: int,
    times: list[float],
    launched: float,
    exited: float | None,
    worker_seconds: float,
    machine_seconds: float,
    wal: int | None = None,
) -> list[tuple[str, str, str]]:
    """W1's rows, named alike by every script: `times` are the jobs' time.time() (sorted),
    `launched` before the first worker started, `exited` when the last one ended (None where
    the script does not wait for it), the CPU seconds of the workers and of the machine, and
    the bytes of write-ahead log written meanwhile (PostgreSQL; None elsewhere)."""
    first, last = times[0], times[-1]
    low, high = pct(times, 10), pct(times, 90)
    middle = sum(1 for t in times if low <= t <= high)
    wall = last - launched
    return [
        (name, "jobs/s (launch to last finish)", f"{jobs / wall:,.0f}"),
        (
            (name, "wall time, launch to last finish", f"{wall:.2f} s")
            if exited is None
            else (
                name,
                "wall time, launch to last finish / to exit",
                f"{wall:.2f} s / {exited - launched:.2f} s",
            )
        ),
        (name, "jobs/s (first start to last finish)", f"{jobs / (last - first):,.0f}"),
        (name, "jobs/s (steady: the middle 80 % of the jobs)", f"{middle / (high - low):,.0f}"),
        (
            name,
            "CPU per job: workers / rest of machine",
            f"{worker_seconds / jobs * 1e6:.0f} µs / "
            f"{max(machine_seconds - worker_seconds, 0) / jobs * 1e6:.0f} µs",
        ),
        *wal_rows(name, jobs, wal),
    ]


def wal_rows(name: str, jobs: int, wal: int | None) -> list[tuple[str, str, str]]:
    """W1's write-ahead log per job: the database's writes, which CPU figures blur."""
    if wal is None:
        return []
    return [(name, "write-ahead log per job (the server's)", f"{wal / jobs:,.0f} B")]


def wal_records(url: str, start: str, end: str) -> tuple[dict[str, list[int]], dict[str, int]]:
    """The server's write-ahead log from `start` to `end`, read with pg_waldump: per record
    type ("Btree/INSERT_LEAF") its count and bytes, and per relation the index entries written
    (B-tree leaf and posting-list inserts). Needs the server's pg_wal directory (same host,
    run as root or postgres); raises RuntimeError saying what is missing."""
    major = int(_psql(url, "SHOW server_version_num")) // 10000
    tool = f"/usr/lib/postgresql/{major}/bin/pg_waldump"
    if not os.path.exists(tool):
        raise RuntimeError(f"{tool} not found (Debian's postgresql-{major} has it)")
    wal_dir = os.path.join(_psql(url, "SHOW data_directory"), "pg_wal")
    done = subprocess.run(
        [tool, "-p", wal_dir, "-s", start, "-e", end], capture_output=True, text=True
    )
    if not done.stdout:
        raise RuntimeError(f"pg_waldump read nothing: {done.stderr.strip()}")
    names = dict(
        line.split("|", 1)
        for line in _psql(
            url, "SELECT relfilenode || '|' || relname FROM pg_class WHERE relfilenode > 0"
        ).splitlines()
    )
    by_type: dict[str, list[int]] = {}
    entries: dict[str, int] = {}
    for line in done.stdout.splitlines():
        # rmgr: Btree len (rec/tot): 64/ 64, tx: 7, lsn: 0/1, prev 0/0, desc: INSERT_LEAF off 2,
        # blkref #0: rel 1663/16384/16500 blk 1
        try:
            rmgr = line.split("rmgr:", 1)[1].split()[0]
            total = int(line.split("len (rec/tot):", 1)[1].split(",")[0].split("/")[1])
            desc = line.split("desc:", 1)[1].split()[0]
        except (IndexError, ValueError):
            continue
        kind = f"{rmgr}/{desc}"
        count_bytes = by_type.setdefault(kind, [0, 0])
        count_bytes[0] += 1
        count_bytes[1] += total
        if kind in ("Btree/INSERT_LEAF", "Btree/INSERT_POST") and "rel " in line:
            node = line.split("rel ", 1)[1].split()[0].split("/")[-1]
            relation = names.get(node, node)
            entries[relation] = entries.get(relation, 0) + 1
    return by_type, entries
