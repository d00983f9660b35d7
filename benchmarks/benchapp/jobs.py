"""The benchmark's jobs: a no-op, and one that returns the moment it started."""

import time

from django_jobs import job


@job("bench-noop", max_attempts=1)
def noop(j):
    """Nothing: the cost measured is the queue's own."""


@job("bench-stamp", max_attempts=1)
def stamp(j):
    """Return time.time() at start, so latency = start - enqueue (same host, same clock)."""
    return time.time()
