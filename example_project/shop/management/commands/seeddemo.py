"""Schedule a few jobs so the admin has something to show on the demo's first start."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from django_jobs import now, schedule

CUSTOMERS = [
    ("alice", "alice@example.com"),
    ("bob", "bob@example.com"),
    ("carol", "carol@example.com"),
]


class Command(BaseCommand):
    help = "Create demo customers and schedule demo jobs (a flaky report and welcome emails)."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        for i, (username, email) in enumerate(CUSTOMERS):
            user, created = User.objects.get_or_create(username=username, defaults={"email": email})
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            # One email due now, the others a few minutes apart.
            when = "now" if i == 0 else f"in {5 * i} minutes"
            schedule(when, "send-welcome-email", {"user_id": user.pk, "email": user.email})
        now("flaky-report", {"report": "daily-sales"})
        self.stdout.write(
            self.style.SUCCESS(
                f"Scheduled {len(CUSTOMERS)} welcome emails and one flaky-report job."
            )
        )
