"""Create a job from the admin: a registered name from a list, JSON data, when, priority, queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.test import Client
from django.utils import timezone

from django_jobs.models import Job
from django_jobs.registry import registry
from tests.clock_support import db_time

from .admin_support import XSS, XSS_ESCAPED, add_url, client_for, job_url, make_user, messages_of

pytestmark = pytest.mark.django_db


def post(client: Client, **fields: str) -> object:
    data = {"name": "record", "data": "{}", "when": "now", "priority": "", "queue": ""}
    data.update(fields)
    return client.post(add_url(), data)


def errors_of(response: object) -> dict[str, list[str]]:
    form = response.context["form"]  # type: ignore[attr-defined]
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


def test_form_offers_the_registered_jobs_only(admin_client: Client) -> None:
    response = admin_client.get(add_url())
    choices = [value for value, _label in response.context["form"].fields["name"].choices]
    assert choices == ["", *registry.names()]
    html = response.content.decode()
    assert '<select name="name"' in html
    assert 'value="now"' in html


def test_create_a_job(admin_client: Client) -> None:
    before = timezone.now()
    response = post(
        admin_client,
        name="sleep",
        data='{"seconds": 2, "to": ["a@example.com"]}',
        when="in 10 minutes",
        priority="7",
        queue="emails",
    )
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == job_url(job)
    assert (job.name, job.data, job.priority, job.queue) == (
        "sleep",
        {"seconds": 2, "to": ["a@example.com"]},
        7,
        "emails",
    )
    assert before + timedelta(minutes=10) <= job.next_run_at <= db_time() + timedelta(minutes=10)
    entry = LogEntry.objects.get()
    assert (entry.action_flag, entry.object_id, entry.change_message) == (
        ADDITION,
        str(job.pk),
        "Scheduled from the admin.",
    )
    followed = admin_client.get(job_url(job))
    assert followed.status_code == 200


def test_blank_priority_and_queue_take_the_jobs_own(admin_client: Client) -> None:
    post(admin_client, name="fail-twice", data="")
    job = Job.objects.get()
    definition = registry["fail-twice"]
    assert (job.priority, job.queue, job.max_attempts, job.data) == (
        definition.priority,
        definition.queue,
        definition.max_attempts,
        {},
    )
    assert job.is_due


def test_success_message(admin_client: Client) -> None:
    response = admin_client.post(
        add_url(),
        {"name": "record", "data": "{}", "when": "2030-01-01T00:00:00+00:00"},
        follow=True,
    )
    (message,) = messages_of(response)
    assert message.startswith("Scheduled record #") and "2030" in message


@pytest.mark.parametrize(
    ("fields", "field", "error"),
    [
        ({"name": "os.system"}, "name", "Select a valid choice. os.system is not one of"),
        ({"name": ""}, "name", "This field is required."),
        ({"data": "{'a': 1}"}, "data", "Enter a valid JSON."),
        ({"data": '{"a": NaN}'}, "data", "data['a'] is nan, which JSON cannot store."),
        ({"when": "next tuesday"}, "when", 'Cannot understand "next tuesday".'),
        ({"when": ""}, "when", "This field is required."),
        ({"priority": "101"}, "priority", "less than or equal to 100"),
        ({"priority": "high"}, "priority", "Enter a whole number."),
        ({"queue": "q" * 101}, "queue", "at most 100 characters"),
    ],
)
def test_bad_input_is_a_clear_error(
    admin_client: Client, fields: dict[str, str], field: str, error: str
) -> None:
    response = post(admin_client, **fields)
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert error in " ".join(errors_of(response)[field])
    assert not Job.objects.exists()
    assert not LogEntry.objects.exists()


def test_bad_input_is_shown_escaped(admin_client: Client) -> None:
    response = post(admin_client, name=XSS, when=XSS, data=XSS, queue=XSS)
    html = response.content.decode()  # type: ignore[attr-defined]
    assert "<script>alert" not in html
    assert XSS_ESCAPED in html


def test_data_is_shown_escaped_on_the_new_jobs_page(admin_client: Client) -> None:
    post(admin_client, data=f'{{"html": "{XSS}"}}'.replace("'", "\\u0027"))
    job = Job.objects.get()
    assert job.data == {"html": XSS}
    html = admin_client.get(job_url(job)).content.decode()
    assert "<script>alert" not in html


def test_permissions(client: Client) -> None:
    assert client.get(add_url()).status_code == 302
    assert post(client).status_code == 302  # type: ignore[attr-defined]
    viewer = client_for(make_user("viewer", "view_job"))
    assert viewer.get(add_url()).status_code == 403
    assert post(viewer).status_code == 403  # type: ignore[attr-defined]
    assert not Job.objects.exists()
    adder = client_for(make_user("adder", "view_job", "add_job"))
    assert post(adder).status_code == 302  # type: ignore[attr-defined]
    assert Job.objects.count() == 1


def test_csrf_is_required() -> None:
    client = client_for(make_user("root", is_superuser=True), enforce_csrf_checks=True)
    assert post(client).status_code == 403  # type: ignore[attr-defined]
    assert not Job.objects.exists()
