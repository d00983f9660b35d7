"""Signals sent by the worker; each gets sender=Job and the keyword arguments listed."""

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("django_jobs.worker")

job_started = Signal()  # job, run
job_succeeded = Signal()  # job, run, result
job_failed = Signal()  # job, run, exception, will_retry
# A recurring job's due run is late (alerts.py): sent once per late run in the whole cluster,
# by the worker that noticed it, on a thread of its own.
job_overdue = Signal()  # job, alert (alerts.Alert), reason


def send_signal(signal: Signal, **kwargs: Any) -> None:
    """Send a job signal; a receiver that raises is logged and cannot break the run.

    With a plain send(), a failing job_started receiver would leave the job running until its
    lock expired and then record it as orphaned. send_robust() logs the traceback to
    "django.dispatch"; this says which job it was.
    """
    if not signal.receivers:
        return  # the common case, checked first: a worker sends three a run
    for receiver, response in signal.send_robust(sender=_sender(), **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "Receiver %s of a django_jobs signal raised %s: %s (job %s).",
                getattr(receiver, "__qualname__", receiver),
                type(response).__name__,
                response,
                kwargs.get("job"),
            )


def _sender() -> Any:
    """Job, the sender of every job signal (the models load after this module)."""
    from .models import Job

    return Job
