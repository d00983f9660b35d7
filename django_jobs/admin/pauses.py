"""The paused queues and job names: adding a row pauses, deleting it resumes.

Both go through django_jobs.pauses (the API), so the admin, `manage.py jobs` and code
pause alike, and resuming wakes idle workers at once. One permission, pause_jobs, guards
both; nobody edits a pause in place.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy

from ..conf import settings
from ..exceptions import JobsError
from ..models import Pause
from ..pauses import checked_target, pause_target, resume_target

PAUSE_PERMISSION = "django_jobs.pause_jobs"


class PauseForm(forms.ModelForm):
    class Meta:
        model = Pause
        fields = ["kind", "value", "reason"]
        help_texts = {
            "value": gettext_lazy(
                "The queue (e.g. emails), or the job name (e.g. send-welcome-email) whose "
                "jobs no worker may claim until resumed. Running jobs finish."
            ),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind, value = cleaned.get("kind"), cleaned.get("value")
        if kind and value is not None:
            try:
                checked_target(kind, value)
            except JobsError as exc:
                self.add_error("value", str(exc))
        return cleaned


@admin.register(Pause)
class PauseAdmin(admin.ModelAdmin):
    form = PauseForm
    list_display = ["kind", "value", "paused_display", "paused_by", "reason"]
    list_display_links = None
    actions = ["resume_selected"]

    class Media:
        css = {"all": ["django_jobs/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pause]:
        return super().get_queryset(request).using(settings.DATABASE)

    @admin.display(description=gettext_lazy("paused at"), ordering="paused_at")
    def paused_display(self, p: Pause) -> str:
        return timezone.localtime(p.paused_at).strftime("%Y-%m-%d %H:%M:%S %Z")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or request.user.has_perm(PAUSE_PERMISSION)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PAUSE_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # resuming is its own action, with its own permission

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PAUSE_PERMISSION)

    def save_model(self, request: HttpRequest, obj: Pause, form: Any, change: bool) -> None:
        made = pause_target(
            checked_target(obj.kind, obj.value),
            by=request.user.get_username(),
            reason=obj.reason,
            using=settings.DATABASE,
        )
        obj.pk, obj.paused_at, obj.paused_by = made.pk, made.paused_at, made.paused_by
        obj._state.adding, obj._state.db = False, settings.DATABASE

    @admin.action(description=gettext_lazy("Resume the selected"), permissions=["pause"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Pause]) -> None:
        resumed = [
            p
            for p in queryset
            if resume_target(checked_target(p.kind, p.value), using=settings.DATABASE)
        ]
        if resumed:
            self.log_deletions(request, cast(Any, resumed))  # rows gone; pks kept
            self.message_user(
                request,
                gettext("Resumed %s; idle workers were woken.") % ", ".join(map(str, resumed)),
            )
        else:
            self.message_user(request, gettext("Nothing was paused."), messages.WARNING)
