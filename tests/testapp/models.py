from django.db import models


class Execution(models.Model):
    """One row per job execution; the unique constraint catches a job run twice."""

    job_id = models.BigIntegerField()
    attempt = models.PositiveIntegerField()
    worker_pid = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job_id", "attempt"], name="execution_once")]

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.attempt}"


class ChaosExecution(models.Model):
    """One execution of the "chaos" job (tests/chaos/chaos.py), timed by the database's clock.

    The chaos script compares executions of one job on this clock alone, since its workers'
    own clocks disagree on purpose (one runs 10 minutes ahead, another 10 minutes behind).
    """

    job_id = models.BigIntegerField(db_index=True)
    attempt = models.PositiveIntegerField()
    lock_token = models.CharField(max_length=32)
    worker_pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()  # the database's clock
    finished_at = models.DateTimeField(null=True)  # the database's clock; None: never ended
    host_started_at = models.DateTimeField()  # the worker's own clock, to show its skew

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.attempt} in pid {self.worker_pid}"
