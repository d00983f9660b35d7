"""Live views: the JSON that the job list, the job page and the overview poll (static live.js).

Each answer holds only what is on the open page: the cells of the jobs whose ids the page
sends (at most one page of the list), or the overview's sections. Cells are HTML fragments
built by the same display functions as the page, so they are escaped exactly as the page is,
and the JSON escapes <, > and & again, so no browser can read the answer as HTML.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import update_wrapper
from typing import TYPE_CHECKING, Any

from django.contrib.admin.utils import display_for_field, display_for_value, lookup_field
from django.core.exceptions import FieldDoesNotExist
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import conditional_escape
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from ..models import Job
from . import display

if TYPE_CHECKING:
    from .jobs import JobAdmin

LIVE_SECONDS = 5  # how often the job list and the job page ask for their rows
OVERVIEW_LIVE_SECONDS = 10  # the overview counts every job: asked for less often
MAX_IDS = 200  # the longest page of the job list: "Show all" (list_max_show_all) lists 200

# The cells that change while a job waits and runs: list columns and job page fields.
LIVE_FIELDS = (
    # The list
    "state_column",
    "last_run_column",
    # Both
    "next_run",
    "failure_count",
    # The job page
    "state_display",
    "last_run",
    "last_duration",
    "locked_by",
    "attempts_display",
    "progress_detail",
    "last_started_at_display",
    "last_finished_at_display",
    "updated_at_display",
    "locked_until_display",
)

# json.dumps escapes none of these; as \u escapes they are the same JSON, and no HTML parser
# (a browser sniffing the type, an old proxy) finds a tag in the answer.
_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def json_response(payload: dict[str, Any], status: int = 200) -> HttpResponse:
    """JSON with <, > and & escaped, never cached, never sniffed as another type."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).translate(_JSON_ESCAPES)
    response = HttpResponse(text, status=status, content_type="application/json")
    response["X-Content-Type-Options"] = "nosniff"
    return response


def error(message: str, status: int) -> HttpResponse:
    return json_response({"error": message}, status=status)


def live_view(
    model_admin: JobAdmin, view: Callable[..., HttpResponse]
) -> Callable[..., HttpResponse]:
    """Wrap a JSON view: staff only, GET only, same-origin only; an error is JSON too.

    admin_view would send a user who is not staff to the login page; a script asking for
    JSON gets 403 instead. Only GET is answered, and a browser that says the request comes
    from another site (Sec-Fetch-Site) is refused, so another site cannot make a logged-in
    user's browser fetch it.
    """
    site = model_admin.admin_site
    inner = site.admin_view(view)  # never cached; CSRF does not apply to a GET

    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "GET":
            response = error(_("Only GET is allowed here."), 405)
            response["Allow"] = "GET"
            return response
        if not site.has_permission(request):
            return error(_("Log in as a staff user to see live updates."), 403)
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return error(_("Live updates are only sent to pages of this site."), 403)
        if not model_admin.has_view_or_change_permission(request):
            return error(_("You may not view jobs."), 403)
        return inner(request, *args, **kwargs)

    return never_cache(update_wrapper(wrapper, view))


def parse_ids(text: str) -> list[int] | None:
    """The ids of "1,2,3": at most MAX_IDS positive integers, or None when text is not that."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if len(parts) > MAX_IDS or not all(part.isascii() and part.isdigit() for part in parts):
        return None
    ids = [int(part) for part in parts]
    if any(not 0 < pk < 2**63 for pk in ids):
        return None
    return list(dict.fromkeys(ids))


def buttons_key(job: Job) -> str:
    """What the job page's buttons depend on: the stored state and whether it is enabled.

    The job page tells the user to reload when this changes, not when a waiting job merely
    becomes due.
    """
    return f"{job.state}/{'enabled' if job.enabled else 'disabled'}"


def cell(model_admin: JobAdmin, name: str, job: Job) -> str:
    """One cell as the list and the job page show it, escaped."""
    try:
        field, _attr, value = lookup_field(name, job, model_admin)
    except (AttributeError, FieldDoesNotExist):
        return display.EMPTY
    if field is None:
        shown = display_for_value(value, display.EMPTY)
    else:
        shown = display_for_field(value, field, display.EMPTY)
    return str(conditional_escape(shown))


def job_rows(model_admin: JobAdmin, request: HttpRequest) -> HttpResponse:
    """GET ?ids=1,2,3: the live cells of those jobs; ids no longer there are listed as gone."""
    ids = parse_ids(request.GET.get("ids", ""))
    if ids is None:
        return error(
            _("ids must be up to %(count)d job ids separated by commas, e.g. ids=12,13.")
            % {"count": MAX_IDS},
            400,
        )
    jobs = model_admin.get_queryset(request).filter(pk__in=ids).order_by()
    found = {job.pk: job for job in jobs}
    return json_response(
        {
            "jobs": [
                {
                    "id": pk,
                    "state": display.display_state(job),
                    "buttons": buttons_key(job),
                    "fields": {name: cell(model_admin, name, job) for name in LIVE_FIELDS},
                }
                for pk, job in found.items()
            ],
            "gone": [pk for pk in ids if pk not in found],
            "at": timezone.now().isoformat(),
        }
    )
