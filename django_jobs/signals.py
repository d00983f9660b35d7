"""Signals sent by the worker; each gets sender=Job and the keyword arguments listed."""

from django.dispatch import Signal

job_started = Signal()  # job, run
job_succeeded = Signal()  # job, run, result
job_failed = Signal()  # job, run, exception, will_retry
