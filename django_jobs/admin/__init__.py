"""The admin dashboard: JobAdmin (list, job page, actions, overview), JobRunAdmin, WorkerAdmin."""

from .history import JobRunAdmin, WorkerAdmin
from .jobs import JobAdmin

__all__ = ["JobAdmin", "JobRunAdmin", "WorkerAdmin"]
