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
