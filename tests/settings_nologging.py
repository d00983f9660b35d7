"""The test settings without LOGGING: a new project's runjobs, as `startproject` leaves it."""

from tests.settings import *  # noqa: F403

del LOGGING  # noqa: F821
