"""The database's clock for tests that bound a time the database wrote.

Every time django_jobs writes comes from the database's clock, and that clock is not
Python's: SQLite's reads as the last microsecond of its millisecond (see
django_jobs.db.sqlite_now_sql), so a time it wrote can be up to 1 ms past a
`timezone.now()` read just after. A bound on such a time is read from the same clock.
"""

from __future__ import annotations

from datetime import datetime

from django_jobs.db import DbNow
from django_jobs.models import Job


def db_time() -> datetime:
    """The database's current time, read through the job table (it needs one job row)."""
    clock = Job.objects.annotate(t=DbNow()).values_list("t", flat=True).first()
    assert clock is not None, "db_time() reads the clock through a job row: create one first"
    return clock
