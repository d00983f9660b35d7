"""The worker's writes: claim due jobs, extend locks, finish, release and recover them.

Every vendor-specific statement of the app lives in this package. PostgreSQL and MySQL/MariaDB
claim with SELECT ... FOR UPDATE SKIP LOCKED; SQLite (and later MongoDB) with a compare-and-set
UPDATE whose WHERE clause repeats the claimable condition. Every write after the claim matches
the claim's lock token, so a worker that lost its lock cannot overwrite the state a newer owner
wrote.

claims.py claims a batch per vendor; outcomes.py writes outcomes and hands jobs back;
limits.py holds the locks and counts of cluster-wide limits (concurrency, rate limits, lock
keys); recovery.py extends locks, beats the heartbeat and recovers the jobs of dead workers;
sql.py holds the raw SQL helpers they share.
"""

from ..notify import wake_workers
from .claims import CLAIM_ORDER, ClaimResult, claim_and_start, claim_batch, claimable
from .outcomes import (
    Failure,
    Finishing,
    Outcome,
    class_path,
    finish_many,
    next_slot,
    release,
    rides_with_claim,
)
from .recovery import (
    Extension,
    cancel_requests,
    delete_dead_workers,
    extend_locks,
    heartbeat,
    recover_stale,
)

__all__ = [
    "CLAIM_ORDER",
    "ClaimResult",
    "Extension",
    "Failure",
    "Finishing",
    "Outcome",
    "cancel_requests",
    "claim_and_start",
    "claim_batch",
    "claimable",
    "class_path",
    "delete_dead_workers",
    "extend_locks",
    "finish_many",
    "heartbeat",
    "next_slot",
    "recover_stale",
    "release",
    "rides_with_claim",
    "wake_workers",
]
