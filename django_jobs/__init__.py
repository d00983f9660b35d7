"""django_jobs: scheduled and background jobs for Django, steered from the Django admin."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .registry import job

try:
    __version__ = version("django-dbjobs")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from .api import cancel, now, schedule, schedule_many
    from .pauses import pause, resume

__all__ = ["cancel", "job", "now", "pause", "resume", "schedule", "schedule_many"]


def __getattr__(name: str) -> Any:
    # The API imports the models, which cannot load before the app registry is ready.
    if name in {"cancel", "now", "schedule", "schedule_many"}:
        from . import api

        return getattr(api, name)
    if name in {"pause", "resume"}:
        from . import pauses

        return getattr(pauses, name)
    raise AttributeError(f"module 'django_jobs' has no attribute {name!r}")
