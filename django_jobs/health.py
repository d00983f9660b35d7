"""The health of the workers and the queue, for `manage.py jobstatus` and probes.

Every age is judged by the database's clock, like the locks, so a probe on a host with a
skewed clock reports the same as one on the database's host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Min
from django.utils import timezone

from .models import Job, JobState, Worker, db_now_plus


@dataclass
class Health:
    """What a probe needs to know, and the problems that make it fail."""

    live_workers: list[Worker] = field(default_factory=list)
    stale_workers: int = 0
    due: int = 0
    late: int = 0
    oldest_due_at: datetime | None = None
    running: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def check_health(
    *,
    max_heartbeat_age: float | None,
    max_lateness: float,
    min_workers: int = 1,
    hostname: str | None = None,
    queues: Sequence[str] = (),
    using: str = "default",
) -> Health:
    """Count live workers and late jobs; a problem for each limit that is not met."""
    workers = Worker.objects.using(using)
    if hostname:
        workers = workers.filter(hostname=hostname)
    health = Health()
    if max_heartbeat_age is None:
        # Each worker row carries its own expiry, from the lock lifetime it runs with.
        alive, dead = workers.alive(), workers.dead()
    else:
        alive = workers.filter(last_heartbeat_at__gte=db_now_plus(-max_heartbeat_age))
        dead = workers.filter(last_heartbeat_at__lt=db_now_plus(-max_heartbeat_age))
    health.live_workers = list(alive.order_by("hostname", "pid"))
    health.stale_workers = dead.count()
    jobs = Job.objects.using(using)
    if queues:
        jobs = jobs.filter(queue__in=list(queues))
    due = jobs.due()
    health.due = due.count()
    health.late = due.filter(next_run_at__lt=db_now_plus(-max_lateness)).count()
    health.oldest_due_at = due.aggregate(oldest=Min("next_run_at"))["oldest"]
    health.running = jobs.filter(state=JobState.RUNNING).count()
    health.failed = jobs.filter(state=JobState.FAILED).count()
    where = f" on {hostname}" if hostname else ""
    if len(health.live_workers) < min_workers:
        live = (
            "a live worker's heartbeat has not expired"
            if max_heartbeat_age is None
            else f"a live worker has a heartbeat less than {max_heartbeat_age:g}s old"
        )
        health.problems.append(
            f"{len(health.live_workers)} live worker(s){where}, fewer than {min_workers} ({live})."
        )
    if health.late:
        health.problems.append(
            f"{health.late} due job(s) waiting longer than {max_lateness:g}s (the workers do "
            "not keep up, or serve other queues)."
        )
    return health


def lateness(health: Health) -> float | None:
    """Seconds the oldest due job has waited, by this host's clock (for display)."""
    if health.oldest_due_at is None:
        return None
    return max(0.0, (timezone.now() - health.oldest_due_at).total_seconds())
