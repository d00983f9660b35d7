"""Tasks of Django's tasks framework (django.tasks, or the django-tasks backport on Django 5.2)."""

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task


@task
def add(a, b):
    return a + b


@task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task
def fail(message):
    raise ValueError(message)


@task
async def async_add(a, b):
    return a + b


@task(takes_context=True)
def attempt_number(context, succeed_on):
    """Fail until attempt `succeed_on`, then report what the context said."""
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails on purpose")
    return {
        "attempt": context.attempt,
        "id": context.task_result.id,
        "worker_ids": context.task_result.worker_ids,
    }


@task(queue_name="emails", priority=5)
def send_email(to):
    return f"sent to {to}"


def plain(value):
    """Not a task: a row naming this path must never run it."""
    raise AssertionError("a plain function was run as a task")


# A Task whose module path ("...tasks.plain") imports the plain function, not this Task.
misnamed = task(plain)


@task
def exit_now(code):
    """End the way a script would: sys.exit() raises SystemExit."""
    import sys

    sys.exit(code)
