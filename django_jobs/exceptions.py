"""Exceptions raised by django_jobs."""


class JobsError(Exception):
    """Base class of every django_jobs error."""


class InvalidSchedule(JobsError, ValueError):
    """A cron expression, interval, timezone or "when" that cannot be used."""


class UnknownJob(JobsError, LookupError):
    """A job name with no registered definition."""


class InvalidJobData(JobsError, ValueError):
    """Job data that cannot be stored as JSON."""


class InvalidOption(JobsError, ValueError):
    """An option (priority, queue, unique key, attempts, lifetime, ...) outside its bound."""


class InvalidJobDefinition(InvalidOption):
    """A @job(...) declaration with a bad option."""


class JobNotFound(JobsError, LookupError):
    """No job has the id that was asked for (it finished and was purged, or never existed)."""


class JobStateError(JobsError):
    """A state change that the job's current state does not allow."""


class UnknownTask(UnknownJob):
    """A task row whose path is not a Task of Django's tasks framework, so it is never run."""


class WorkerLost(JobsError):
    """The worker running a job stopped renewing its lock; recorded on an orphaned run."""


class InvalidTaskArguments(InvalidJobData, TypeError):
    """Task arguments that cannot be stored as JSON (a TypeError, as Django's tasks raise)."""


class TasksUnavailable(JobsError, ImportError):
    """Neither django.tasks (Django 6) nor the django-tasks backport can be imported."""


class JobStopped(JobsError):
    """Raised by job.check_stop() (and in a job's process under --isolation process) once the
    job has passed its timeout or was cancelled: let it propagate, after cleaning up."""
