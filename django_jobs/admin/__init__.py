"""The admin dashboard: JobAdmin (list, job page, actions, overview), JobRunAdmin, WorkerAdmin."""

from .history import JobRunAdmin, WorkerAdmin
from .jobs import JobAdmin
from .pauses import PauseAdmin

__all__ = ["JobAdmin", "JobRunAdmin", "PauseAdmin", "WorkerAdmin"]
