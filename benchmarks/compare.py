#!/usr/bin/env python
"""Issue 13's side-by-side run: django_jobs, PgQueuer, procrastinate and the SQL floor on one
PostgreSQL server, in alternating rounds; prints one merged table and the targets.

    .venv-py311/bin/python benchmarks/compare.py              # 2 rounds, 10,000 jobs in W1
    .venv-py311/bin/python benchmarks/compare.py --rounds 1 --jobs 2000

Each round runs, one after the other (the order rotates from round to round, so no library
always runs first or on a warmer machine):
  - django_jobs: bench.py -w w1,w2,enqueue --concurrency 32, with this interpreter (the
    project's; W2 on PostgreSQL also measures the bare-SQL W2 floor);
  - PgQueuer: peer_pgqueuer.py -w w1,w2,enqueue, in /tmp/venv-pgqueuer;
  - procrastinate: peer_procrastinate.py -w w1,w2,enqueue, in /tmp/venv-procrastinate;
  - the SQL floor: floor/pgbench_floor.py (pgbench, claim 1, 10 and 100, 8 clients).
Each on its own database (bench_compare_*; created if missing, emptied by its script). The
peers' venvs are made first where missing, with pip. Every run's whole output is kept in
--out, one file per round and library.

The merged table gives each figure as min-max over the rounds, one column per library. The
targets table gives each of issue 13's targets as django_jobs' figure over PgQueuer's in the
same round, the median over the rounds, and "met" or "missed". The script exits non-zero
only when a run failed, never on a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import cpu_model  # this script's folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432"
VENVS = {
    "PgQueuer": (
        Path("/tmp/venv-pgqueuer"),
        ["pgqueuer==1.6.*", "asyncpg", "uvloop"],
        "import pgqueuer, asyncpg, uvloop",
    ),
    "procrastinate": (
        Path("/tmp/venv-procrastinate"),
        ["procrastinate", "psycopg[binary]"],
        "import procrastinate, psycopg",
    ),
}
LIBRARIES = ("django_jobs", "PgQueuer", "procrastinate", "SQL floor")
# Whose rows a column reads: bench.py measures the W2 floor beside django_jobs' W2.
SOURCES = {"SQL floor": ("SQL floor", "django_jobs")}
Row = tuple[str, str, str]  # workload, metric, value
DASH, TIMES = "\u2013", "\u00d7"  # en dash (min-max, no figure), multiplication sign


# Running


def ensure_venv(library: str) -> Path:
    """The peer's interpreter; its venv made with pip where it is missing or broken."""
    venv, packages, probe = VENVS[library]
    python = venv / "bin" / "python"
    if python.exists():
        found = subprocess.run([python, "-c", probe], capture_output=True, check=False)
        if found.returncode == 0:
            return python
    print(f"making {venv} for {library}: pip install {' '.join(packages)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
    return python


def commands(args: argparse.Namespace, pythons: dict[str, Path]) -> dict[str, list[str]]:
    def url(name: str) -> str:
        return f"{args.server.rstrip('/')}/bench_compare_{name}"

    jobs = ["--jobs", str(args.jobs)]
    return {
        "django_jobs": [
            sys.executable,
            str(HERE / "bench.py"),
            f"--database-url={url('django_jobs')}",
            "-w",
            "w1,w2,enqueue",
            "--concurrency",
            "32",
            *jobs,
        ],
        "PgQueuer": [
            str(pythons["PgQueuer"]),
            str(HERE / "peer_pgqueuer.py"),
            f"--database-url={url('pgqueuer')}",
            "-w",
            "w1,w2,enqueue",
            *jobs,
        ],
        "procrastinate": [
            str(pythons["procrastinate"]),
            str(HERE / "peer_procrastinate.py"),
            f"--database-url={url('procrastinate')}",
            "-w",
            "w1,w2,enqueue",
            *jobs,
        ],
        "SQL floor": [
            sys.executable,
            str(HERE / "floor" / "pgbench_floor.py"),
            f"--database-url={url('floor')}",
            *jobs,
        ],
    }


def parse(output: str) -> list[Row]:
    """The rows of a script's markdown table (| workload | metric | value |)."""
    rows = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and line.startswith("|") and cells[0] not in ("workload", "---"):
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def run_one(library: str, command: list[str], log: Path) -> tuple[list[Row], str | None]:
    """Run one script, keep its output in `log`: its rows, and what went wrong if it failed."""
    started = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, check=False
        )
    output = log.read_text()
    took = time.monotonic() - started
    print(f"  {library}: {took:.0f} s, exit {done.returncode}, {log}", file=sys.stderr)
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-5:])
        return parse(output), f"{library} exited with {done.returncode} ({log}):\n{tail}"
    return parse(output), None


# Reading the rows


def number(text: str) -> float:
    found = re.search(r"-?[\d,]*\.?\d+", text)
    if not found:
        raise ValueError(f"no number in {text!r}")
    return float(found.group().replace(",", ""))


def processes(workload: str) -> int:
    found = re.search(r", (\d+) process", workload)
    return int(found.group(1)) if found else 0


def find(rows: list[Row], workload: Callable[[str], bool], metric: Callable[[str], bool]) -> str:
    for row in rows:
        if workload(row[0]) and metric(row[1]):
            return row[2]
    raise LookupError


def w1(count: int, defaults: bool, metric: str, part: int = 0) -> Callable[[list[Row]], float]:
    """A W1 figure: the run with `count` processes, best settings or defaults."""

    def get(rows: list[Row]) -> float:
        value = find(
            rows,
            lambda w: (
                w.startswith("W1 drain") and processes(w) == count and ("default" in w) == defaults
            ),
            lambda m: m.startswith(metric),
        )
        return number(value.split("/")[part])

    return get


def w2(percentile: str) -> Callable[[list[Row]], float]:
    def get(rows: list[Row]) -> float:
        return number(
            find(
                rows,
                lambda w: w.startswith("W2 latency"),
                lambda m: "from the call" in m and m.endswith(f": {percentile}"),
            )
        )

    return get


def w2_floor(part: int) -> Callable[[list[Row]], float]:
    """bench.py's bare-SQL W2 floor (p50 / p95 from the INSERT's call)."""

    def get(rows: list[Row]) -> float:
        value = find(rows, lambda w: w.startswith("W2 floor"), lambda m: "call" in m)
        return number(value.split("/")[part])

    return get


def enqueue(kind: str) -> Callable[[list[Row]], float]:
    def get(rows: list[Row]) -> float:
        return number(find(rows, lambda w: w.startswith("Enqueue"), lambda m: kind in m))

    return get


def floor(per_claim: int) -> Callable[[list[Row]], float]:
    def get(rows: list[Row]) -> float:
        return number(
            find(rows, lambda w: w.startswith("W1 floor"), lambda m: f"claim {per_claim} " in m)
        )

    return get


@dataclass
class Line:
    """One row of the merged table: how to read it from each library's rows."""

    label: str
    unit: str  # the cell's format: "rate" (jobs/s), "ms", "µs" or "B" (bytes)
    readers: dict[str, list[tuple[str, Callable[[list[Row]], float]]]]  # library: [(tag, get)]


def lines(jobs: int) -> list[Line]:
    best2, best1 = w1(2, False, "jobs/s (launch"), w1(1, False, "jobs/s (launch")
    peers = ("django_jobs", "PgQueuer", "procrastinate")

    def each(get: Callable[[list[Row]], float]) -> dict[str, list[tuple[str, Any]]]:
        return {library: [("", get)] for library in peers}

    w1_line = each(best2)
    w1_line["SQL floor"] = [(f"{n} per claim: ", floor(n)) for n in (1, 10, 100)]
    w2_p50, w2_p95 = each(w2("p50")), each(w2("p95"))
    w2_p50["SQL floor"] = [("", w2_floor(0))]
    w2_p95["SQL floor"] = [("", w2_floor(1))]
    return [
        Line(f"W1 drain {jobs:,}, 2 processes, jobs/s (launch → last finish)", "rate", w1_line),
        Line("W1 drain, 1 process, jobs/s", "rate", each(best1)),
        Line(
            "W1 drain, 1 process with the defaults, jobs/s",
            "rate",
            each(w1(1, True, "jobs/s (launch")),
        ),
        Line(
            "W1 steady, 2 processes, jobs/s (middle 80 %)",
            "rate",
            each(w1(2, False, "jobs/s (steady")),
        ),
        Line("W2 p50 from the call, ms", "ms", w2_p50),
        Line("W2 p95 from the call, ms", "ms", w2_p95),
        Line("enqueue one at a time (autocommit), jobs/s", "rate", each(enqueue("one at a time"))),
        Line("bulk enqueue, batches of 1,000, jobs/s", "rate", each(enqueue("batches of"))),
        Line(
            "CPU per job, W1 2 processes: workers, µs",
            "µs",
            each(w1(2, False, "CPU per job", 0)),
        ),
        Line(
            "CPU per job, W1 2 processes: rest of machine, µs",
            "µs",
            each(w1(2, False, "CPU per job", 1)),
        ),
        Line(
            "write-ahead log per job, W1 2 processes, bytes",
            "B",
            each(w1(2, False, "write-ahead log")),
        ),
    ]


# The report


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def span(values: list[float], unit: str) -> str:
    """min-max over the rounds (one figure where they agree or there is one round)."""
    if not values:
        return DASH
    low, high = fmt(min(values), unit), fmt(max(values), unit)
    return low if low == high else f"{low} {DASH} {high}"


def merged_table(results: list[dict[str, list[Row]]], jobs: int) -> list[str]:
    out = [
        "| same run, " + f"{len(results)} round{'s' if len(results) > 1 else ''}, min {DASH} max"
        " | " + " | ".join(LIBRARIES) + " |",
        "|---" * (len(LIBRARIES) + 1) + "|",
    ]
    for line in lines(jobs):
        cells = []
        for library in LIBRARIES:
            parts = []
            for tag, get in line.readers.get(library, []):
                values = []
                for result in results:
                    with contextlib.suppress(LookupError, ValueError, IndexError):
                        rows = [
                            r
                            for name in SOURCES.get(library, (library,))
                            for r in result.get(name, [])
                        ]
                        values.append(get(rows))
                if values:
                    parts.append(tag + span(values, line.unit))
            cells.append("; ".join(parts) if parts else DASH)
        out.append(f"| {line.label} | " + " | ".join(cells) + " |")
    return out


@dataclass
class Target:
    label: str
    ours: Callable[[list[Row]], float]
    theirs: Callable[[list[Row]], float]
    at_least: bool  # the ratio must be ≥ goal (throughput), else ≤ goal (latency)
    goal: float = 1.0
    stretch: float | None = None


TARGETS = [
    Target(
        "W1 drain, 2 processes (launch → last finish)",
        w1(2, False, "jobs/s (launch"),
        w1(2, False, "jobs/s (launch"),
        True,
        stretch=1.5,
    ),
    Target(
        "W1, `runjobs` with no options, 1 process, against PgQueuer's defaults",
        w1(1, True, "jobs/s (launch"),
        w1(1, True, "jobs/s (launch"),
        True,
    ),
    Target("W2 p50 from the call", w2("p50"), w2("p50"), False),
    Target("W2 p95 from the call", w2("p95"), w2("p95"), False),
    Target(
        "`now()` one at a time against `enqueue()` one at a time",
        enqueue("one at a time"),
        enqueue("one at a time"),
        True,
    ),
    Target(
        "`schedule_many()` against `enqueue()` of a list, batches of 1,000",
        enqueue("batches of"),
        enqueue("batches of"),
        True,
    ),
]


def ratios(results: list[dict[str, list[Row]]], target: Target, library: str) -> list[float]:
    found = []
    for result in results:
        with contextlib.suppress(LookupError, ValueError, ZeroDivisionError):
            found.append(target.ours(result[library]) / target.theirs(result["PgQueuer"]))
    return found


def targets_table(results: list[dict[str, list[Row]]]) -> list[str]:
    out = [
        "| issue 13's target | goal | django_jobs / PgQueuer, each round | median | met or missed "
        "| procrastinate / PgQueuer, median |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        sign = "≥" if target.at_least else "≤"
        goal = f"{sign} {target.goal:.1f}{TIMES}"
        if target.stretch:
            goal += f" (stretch {target.stretch:.1f}{TIMES})"
        ours = ratios(results, target, "django_jobs")
        theirs = ratios(results, target, "procrastinate")
        if ours:
            median = statistics.median(ours)
            met = median >= target.goal if target.at_least else median <= target.goal
            verdict = "**met**" if met else "missed"
            if met and target.stretch and median >= target.stretch:
                verdict += ", stretch met"
            each, middle = " / ".join(f"{r:.2f}{TIMES}" for r in ours), f"{median:.2f}{TIMES}"
        else:
            verdict, each, middle = "no figure", DASH, DASH
        other = f"{statistics.median(theirs):.2f}{TIMES}" if theirs else DASH
        out.append(f"| {target.label} | {goal} | {each} | {middle} | {verdict} | {other} |")
    return out


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help="PostgreSQL server (default %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="default 2")
    parser.add_argument("--jobs", type=int, default=10_000, help="W1 job count (default 10,000)")
    parser.add_argument(
        "--only",
        default=",".join(LIBRARIES),
        help="the libraries to run, comma-separated (default all: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "bench-compare",
        help="folder for each run's whole output (default %(default)s)",
    )
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(LIBRARIES)
    if unknown:
        parser.error(f"unknown libraries {sorted(unknown)}; use {', '.join(LIBRARIES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    pythons = {library: ensure_venv(library) for library in VENVS if library in only}
    scripts = commands(args, pythons)

    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores ({cpu_model()}),"
        f" Linux {platform.release()}"
    )
    print(f"load average at start: {load()}", flush=True)
    results: list[dict[str, list[Row]]] = []
    failures: list[str] = []
    headers: dict[str, list[str]] = {}
    for number_ in range(args.rounds):
        order = [only[(i + number_) % len(only)] for i in range(len(only))]
        print(f"round {number_ + 1} of {args.rounds}: {', '.join(order)}", file=sys.stderr)
        result: dict[str, list[Row]] = {}
        for library in order:
            slug = library.lower().replace(" ", "_")
            log = args.out / f"round{number_ + 1}-{slug}.txt"
            rows, failure = run_one(library, scripts[library], log)
            result[library] = rows
            if failure:
                failures.append(failure)
            headers.setdefault(
                library,
                [
                    line
                    for line in log.read_text().splitlines()
                    if line.startswith(("python ", "database:"))
                ],
            )
        results.append(result)
    for library in only:
        for line in headers.get(library, []):
            print(f"{library}: {line}")
    print()
    print("\n".join(merged_table(results, args.jobs)))
    print()
    print("\n".join(targets_table(results)))
    print(f"\nload average at end: {load()}")
    print(f"commands (outputs in {args.out}):")
    for library in only:
        print("  " + " ".join(scripts[library]))
    if failures:
        print("\n" + "\n\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
