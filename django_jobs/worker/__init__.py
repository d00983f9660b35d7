"""The worker: the claim loop and heartbeat (process.py), running one job (executor.py) and
batching outcomes (outbox.py)."""

from .executor import Running, resolve, send_signal
from .process import Worker, default_worker_id

__all__ = ["Running", "Worker", "default_worker_id", "resolve", "send_signal"]
