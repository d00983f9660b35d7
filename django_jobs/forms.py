"""Admin forms: create a job, reschedule jobs (a new time, or a new schedule for recurring ones).

Validation is django_jobs.validation's (check_json, check_when, check_queue, ...) and
parse_when/parse_schedule's, as for the API, so a value the admin accepts is one that
django_jobs.api.schedule() accepts too, and any value it refuses is a form error, never a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

from . import api
from .conf import settings
from .exceptions import JobsError
from .models import Job
from .registry import registry
from .schedules import Schedule, get_timezone, parse_schedule, parse_when
from .validation import (
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MAX_PRIORITY,
    MAX_WHEN,
    MIN_JSON_INT,
    MIN_PRIORITY,
    MIN_WHEN,
    QUEUE_MAX_LENGTH,
    check_json,
    check_json_text,
    check_queue,
    check_when,
)

WHEN_HELP = _(
    '"now", "in 10 minutes" (seconds, minutes, hours, days or weeks), or a date and time such as '
    '"2026-12-01 09:00" (in the current timezone unless it has an offset, e.g. "+01:00").'
)
SCHEDULE_HELP = _(
    "A cron expression with 5 fields (minute hour day-of-month month day-of-week, e.g. "
    '"0 3 * * *") or an interval such as "every 5 minutes".'
)
TIMEZONE_HELP = _('The IANA timezone the schedule runs in, such as "Europe/Paris" or "UTC".')


def parse_admin_when(value: str) -> datetime:
    """parse_when(), plus a date and time without an offset, taken in the current timezone.

    Its errors speak of what can be typed in the form, never of Python types (the API's
    "an aware datetime, a timedelta") or of raw ISO instants.
    """
    now = timezone.now()
    try:
        return parse_when(value, now=now)
    except JobsError as exc:
        try:
            naive = parse_datetime(value.strip())
        except ValueError:
            naive = None
        if naive is None or timezone.is_aware(naive):
            raise _when_error(value, exc) from exc
    try:
        return check_when(timezone.make_aware(naive), value=value)
    except (JobsError, OverflowError, ValueError) as exc:
        raise _when_error(value, exc) from exc


def _when_error(value: str, exc: BaseException) -> ValidationError:
    """The form's error for a "when" it cannot use: out of range, or not understood."""
    if isinstance(exc, JobsError) and "outside the times" not in str(exc):
        return ValidationError(
            _('Cannot understand "%(value)s". Enter %(forms)s'),
            code="invalid",
            params={"value": value[:100], "forms": WHEN_HELP},
        )
    return ValidationError(
        _(
            '"%(value)s" is outside the times a job can be scheduled for, %(first)s to '
            "%(last)s (UTC); pick a time in that range."
        ),
        code="invalid",
        params={
            "value": value[:100],
            "first": MIN_WHEN.date().isoformat(),
            "last": MAX_WHEN.date().isoformat(),
        },
    )


class DataField(forms.JSONField):
    """A JSONField whose text is bounded before it is parsed, so no input makes the page fail.

    Django's JSONField lets RecursionError (deep nesting) and ValueError (an integer of more
    than 4300 digits) through, which would be a 500; here they are form errors.
    """

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value not in self.empty_values:
            try:
                check_json_text(value)
            except JobsError as exc:
                raise ValidationError(str(exc), code="invalid") from exc
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(
                _("data is nested more than %(depth)d levels deep; flatten it."),
                code="invalid",
                params={"depth": MAX_JSON_DEPTH},
            ) from None
        except ValueError:
            raise ValidationError(
                _(
                    "data holds an integer too long to read; integers must lie within "
                    "%(low)d and %(high)d. Store longer numbers as strings."
                ),
                code="invalid",
                params={"low": MIN_JSON_INT, "high": MAX_JSON_INT},
            ) from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Shown again after an error exactly as typed: parsing it again could recurse too
        # deep, and dumping it again could write lone surrogates the page cannot encode.
        if isinstance(data, str) and not self.disabled:
            return InvalidJSONInput(data)
        return super().bound_data(data, initial)


class CreateJobForm(forms.Form):
    """Schedule a registered job; the name is picked from the registry, never typed."""

    name = forms.ChoiceField(label=_("Job"), choices=())
    data = DataField(  # type: ignore[assignment]  # the metaclass takes it off the class
        label=_("Data"),
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        help_text=_('JSON passed to the job as job.data, e.g. {"email": "ada@example.com"}.'),
    )
    when = forms.CharField(label=_("When"), initial="now", max_length=100, help_text=WHEN_HELP)
    priority = forms.IntegerField(
        label=_("Priority"),
        required=False,
        min_value=MIN_PRIORITY,
        max_value=MAX_PRIORITY,
        help_text=_("From -100 to 100, higher runs first. Blank: the job's own priority."),
    )
    queue = forms.CharField(
        label=_("Queue"),
        required=False,
        max_length=QUEUE_MAX_LENGTH,
        help_text=_("Blank: the job's own queue."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].choices = [("", "---------")] + [  # type: ignore[attr-defined]
            (name, name) for name in registry.names()
        ]

    def clean_data(self) -> Any:
        data = self.cleaned_data.get("data")
        data = {} if data is None else data
        try:
            check_json(data)
        except JobsError as exc:
            raise ValidationError(str(exc), code="invalid") from exc
        return data

    def clean_when(self) -> datetime:
        return parse_admin_when(self.cleaned_data["when"])

    def clean_queue(self) -> str | None:
        queue = self.cleaned_data.get("queue") or None
        if queue is not None:
            try:
                check_queue(queue)
            except JobsError as exc:
                raise ValidationError(str(exc), code="invalid") from exc
        return queue

    def save(self) -> Job:
        """Schedule the job through the API; raises JobsError if the API refuses it."""
        data = self.cleaned_data
        return api.schedule(
            data["when"],
            data["name"],
            data["data"],
            priority=data.get("priority"),
            queue=data.get("queue"),
            using=settings.DATABASE,
        )


class RescheduleForm(forms.Form):
    """A new time for the next run; for recurring jobs, or a new schedule and timezone."""

    when = forms.CharField(label=_("New time"), required=False, max_length=100, help_text=WHEN_HELP)
    schedule = forms.CharField(
        label=_("New schedule"), required=False, max_length=200, help_text=SCHEDULE_HELP
    )
    timezone = forms.CharField(
        label=_("Timezone"), required=False, max_length=64, help_text=TIMEZONE_HELP
    )

    def __init__(self, *args: Any, recurring: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recurring = recurring
        if recurring:
            self.fields["when"].help_text = _(
                "Moves only the next run; the schedule goes on from there. %(help)s"
            ) % {"help": WHEN_HELP}
        else:
            del self.fields["schedule"], self.fields["timezone"]
            self.fields["when"].required = True

    def clean_when(self) -> datetime | None:
        value = self.cleaned_data.get("when", "").strip()
        return parse_admin_when(value) if value else None

    def clean_schedule(self) -> Schedule | None:
        value = self.cleaned_data.get("schedule", "").strip()
        if not value:
            return None
        try:
            return parse_schedule(value)
        except JobsError as exc:
            raise ValidationError(str(exc), code="invalid") from exc

    def clean_timezone(self) -> str:
        value = self.cleaned_data.get("timezone", "").strip()
        if value:
            try:
                get_timezone(value)
            except JobsError as exc:
                raise ValidationError(str(exc), code="invalid") from exc
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.recurring or self.errors:
            return data
        when, schedule = data.get("when"), data.get("schedule")
        if when is None and schedule is None:
            raise ValidationError(
                _("Enter a new time for the next run, or a new schedule."), code="required"
            )
        if when is not None and schedule is not None:
            raise ValidationError(
                _(
                    "Enter either a new time or a new schedule, not both: a new schedule "
                    "computes its own next run."
                ),
                code="invalid",
            )
        if schedule is not None and not data.get("timezone"):
            self.add_error("timezone", _("Enter the timezone of the new schedule."))
        return data

    def apply(self, job: Job) -> str:
        """Change the job through its model method; returns the admin log message."""
        data = self.cleaned_data
        schedule = data.get("schedule")
        if schedule is not None:
            job.change_schedule(schedule.expression, data["timezone"])
            return f"Changed the schedule to {schedule.expression!r} ({data['timezone']})."
        job.reschedule(data["when"])
        assert job.next_run_at is not None  # reschedule() reloaded the row
        return f"Rescheduled the next run to {job.next_run_at.isoformat()}."
