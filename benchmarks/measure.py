"""Helpers shared by the benchmark scripts (plain Python: the peer scripts run without Django)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


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


def w1_rows(
    name: str,
    jobs: int,
    times: list[float],
    launched: float,
    exited: float | None,
    worker_seconds: float,
    machine_seconds: float,
) -> list[tuple[str, str, str]]:
    """W1's rows, named alike by every script: `times` are the jobs' time.time() (sorted),
    `launched` before the first worker started, `exited` when the last one ended (None where
    the script does not wait for it), and the CPU seconds of the workers and of the machine."""
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
    ]
