#!/usr/bin/env python
"""The passes of `runjobs --burst` over no-op jobs: how many jobs each pass carries and how
much of the drain is the pass's round trip (the outcomes written and the next claim made).

    python benchmarks/passes.py --database-url postgres://postgres@127.0.0.1:5432/bench_x
    python benchmarks/passes.py --database-url ... --django-defaults
    python benchmarks/passes.py --database-url ... -- --concurrency 32

The worker runs in this process (`call_command("runjobs", "--burst", ...)`) with
claiming.claim_batch() wrapped to count and time its calls; a call with no free slot goes
nowhere near the database and is counted apart. --django-defaults runs it on Django's
default settings, as bench.py's "runjobs with no options" does. Prints one table, with the
worker's CPU time per job (user + system, all its threads): on a noisy machine a steadier
figure than its wall time for comparing two versions of the hot path.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--django-defaults", action="store_true")
    parser.add_argument("runjobs", nargs="*", help="options of runjobs, after --")
    args = parser.parse_args()
    if args.django_defaults:
        os.environ["BENCH_DJANGO_DEFAULTS"] = "1"

    from benchmarks import bench

    bench.setup(args.database_url)  # Django's setup happens here, with the settings above
    from django.core.management import call_command

    from django_jobs import claiming

    bench.reset()
    bench.fill(args.jobs)
    claim_batch = claiming.claim_batch
    carried: Counter[int] = Counter()
    idle = [0]
    spent = [0.0]

    def counted(**options: Any) -> claiming.ClaimResult:
        if options["limit"] <= 0 and not options.get("finish"):
            idle[0] += 1
            return claim_batch(**options)
        t = time.perf_counter()
        result = claim_batch(**options)
        spent[0] += time.perf_counter() - t
        carried[len(result.claimed)] += 1
        return result

    claiming.claim_batch = counted  # type: ignore[assignment]
    try:
        with bench.quiet_logs():
            t = time.perf_counter()
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            call_command("runjobs", "--burst", *args.runjobs)
            wall = time.perf_counter() - t
            used = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        claiming.claim_batch = claim_batch  # type: ignore[assignment]
    passes = sum(carried.values())
    jobs = sum(size * count for size, count in carried.items())
    settings = "Django's default settings" if args.django_defaults else "bench settings"
    options = " ".join(args.runjobs) or "no options"
    print(f"\n`runjobs --burst` ({options}), {settings}, {jobs:,} no-op jobs\n")
    print("| metric | value |\n|---|---|")
    print(f"| jobs/s (runjobs' call to its return) | {jobs / wall:,.0f} |")
    seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    print(f"| CPU per job, this process (user + system) | {seconds / jobs * 1e6:.0f} µs |")
    print(f"| passes that went to the database | {passes:,} |")
    print(f"| jobs claimed per pass, mean | {jobs / passes:.2f} |")
    common = ", ".join(f"{size}: {count:,}" for size, count in carried.most_common(5))
    print(f"| passes by jobs claimed (the 5 most common) | {common} |")
    print(f"| looks with no free slot (no query) | {idle[0]:,} |")
    print(f"| time per pass in claim_batch() | {spent[0] / passes * 1e3:.2f} ms |")
    print(f"| share of the drain in claim_batch() | {spent[0] / wall * 100:.0f} % |")


if __name__ == "__main__":
    main()
