"""List filters whose choices are cheap to find on big tables.

Django's default filter on a CharField lists its values with SELECT DISTINCT over the whole
table; on a million rows that is a full scan on every page load. The name and queue filters
list the values the code declares and those that rows hold, found by skipping through an
index, one probe per value (admin/queues.py).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..conf import settings
from ..db import db_now_plus
from ..registry import registry
from ..states import FINISHED_STATES, RunOutcome
from .changelist import storable
from .display import FILTER_LABELS, state_q
from .queues import job_names, job_queues, registered_queues, run_names


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return list(FILTER_LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in FILTER_LABELS:
            return queryset.filter(state_q(value))
        return queryset


# How long ago a job finished, for "delete every failed job older than a week": (key, label,
# seconds). Fixed choices, so the filter costs no query to list them.
FINISHED_AGES = [
    ("1d", _("over a day ago"), 86_400),
    ("7d", _("over a week ago"), 7 * 86_400),
    ("30d", _("over 30 days ago"), 30 * 86_400),
]


class FinishedFilter(admin.SimpleListFilter):
    """Finished jobs (succeeded, failed, cancelled) that finished before an age, by the
    database's clock; any other value is ignored."""

    title = _("finished")
    parameter_name = "finished"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(key, label) for key, label, _seconds in FINISHED_AGES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        for key, _label, seconds in FINISHED_AGES:
            if self.value() == key:
                return queryset.filter(
                    state__in=sorted(FINISHED_STATES), last_finished_at__lt=db_now_plus(-seconds)
                )
        return queryset


class OutcomeFilter(admin.SimpleListFilter):
    """A run's outcome; a value that is no outcome is ignored, never sent to the database."""

    title = _("outcome")
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return list(RunOutcome.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in RunOutcome.values:
            return queryset.filter(outcome=value)
        return queryset


class _ValuesFilter(admin.SimpleListFilter):
    """Filter on a field by the values the code knows of, plus the one asked for."""

    field = ""

    def known_values(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = set(self.known_values())
        value = self.value()
        if value and storable(str(value)):
            values.add(str(value))
        return [(value, value) for value in sorted(values)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not storable(str(value)):
            return queryset.none()  # no row holds it; PostgreSQL would refuse the query
        return queryset.filter(**{self.field: value})


class NameFilter(_ValuesFilter):
    title = _("name")
    parameter_name = "name"
    field = "name"

    def known_values(self) -> list[str]:
        return sorted(set(registry.names()) | set(job_names(settings.DATABASE)))


class QueueFilter(_ValuesFilter):
    title = _("queue")
    parameter_name = "queue"
    field = "queue"

    def known_values(self) -> list[str]:
        return sorted(registered_queues() | set(job_queues(settings.DATABASE)))


class RunNameFilter(_ValuesFilter):
    title = _("job name")
    parameter_name = "job_name"
    field = "job_name"

    def known_values(self) -> list[str]:
        return sorted(set(registry.names()) | set(run_names(settings.DATABASE)))
