"""Exceptions raised by django_jobs."""


class JobsError(Exception):
    """Base class of every django_jobs error."""


class InvalidSchedule(JobsError, ValueError):
    """A cron expression, interval, timezone or "when" that cannot be used."""


class UnknownJob(JobsError, LookupError):
    """A job name with no registered definition."""


class InvalidJobData(JobsError, ValueError):
    """Job data that cannot be stored as JSON."""


class InvalidJobDefinition(JobsError, ValueError):
    """A @job(...) declaration with a bad option."""


class JobStateError(JobsError):
    """A state change that the job's current state does not allow."""
