"""The shop's jobs. django_jobs imports this module at start-up, as the admin imports admin.py."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.mail import send_mail
from django.utils import timezone

from django_jobs import job

if TYPE_CHECKING:
    from django_jobs.models import Job

logger = logging.getLogger(__name__)


@job("send-welcome-email", priority="high", max_attempts=5)
def send_welcome_email(job: Job) -> None:
    """Scheduled by the sign-up view, ten minutes after a customer signs up."""
    send_mail(
        subject="Welcome to the shop!",
        message="Thanks for signing up. Your first order ships free.",
        from_email=None,  # DEFAULT_FROM_EMAIL
        recipient_list=[job.data["email"]],
    )
    logger.info("Sent the welcome email to %s (user %s).", job.data["email"], job.data["user_id"])


@job("monthly-billing", schedule="0 3 1 * *", timezone="Europe/Paris")
def monthly_billing(job: Job) -> None:
    """Bill every active customer at 03:00 Paris time on the first of each month."""
    customers = get_user_model().objects.filter(is_active=True, is_staff=False).order_by("pk")
    total = customers.count()
    if total == 0:
        job.set_progress(1.0, "No customers to bill.")
        return
    for done, customer in enumerate(customers.iterator(), start=1):
        # A real shop would charge the customer here.
        logger.info("Billed %s (%d of %d).", customer.get_username(), done, total)
        job.set_progress(done / total, f"Billed {done} of {total} customers")


@job("flaky-report", max_attempts=3)
def flaky_report(job: Job) -> None:
    """Fails on its first two attempts, then succeeds: watch the retries in the admin."""
    if job.attempt < 3:
        raise RuntimeError(f"The reporting service is unavailable (attempt {job.attempt} of 3).")
    logger.info("Report %r generated on attempt %d.", job.data.get("report"), job.attempt)


@job("cleanup-sessions", schedule="every 1 hour")
def cleanup_sessions(job: Job) -> None:
    """What `manage.py clearsessions` does for database-backed sessions, every hour."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    logger.info("Deleted %d expired sessions.", deleted)
