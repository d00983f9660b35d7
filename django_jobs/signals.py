"""Signals sent by the worker; each gets sender=Job and the keyword arguments listed."""

from django.dispatch import Signal

job_started = Signal()  # job, run
job_succeeded = Signal()  # job, run, result
job_failed = Signal()  # job, run, exception, will_retry
# A recurring job's due run is late (alerts.py): sent once per late run in the whole cluster,
# by the worker that noticed it, on a thread of its own.
job_overdue = Signal()  # job, alert (alerts.Alert), reason
