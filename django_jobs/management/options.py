"""Argument types shared by the management commands: numbers within their bound, or a clear error.

The bounds and their wording come from django_jobs.validation, as for every other entry point.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django_jobs.validation import COUNT, DURATION, MAX_COUNT, MAX_DURATION, Bound


def bounded(option: str, bound: Bound) -> Callable[[str], Any]:
    """An argparse type: the text as a number within `bound`, or an error quoting the text."""
    convert: Callable[[str], Any] = _whole_number if bound.whole else float

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:  # not a number, or an int of more digits than Python reads
            value = None
        if value is None or not bound.accepts(value):
            raise argparse.ArgumentTypeError(f"{option} must be {bound.describe()}, not {text!r}.")
        return value

    return parse


def _whole_number(text: str) -> int:
    """int(), refusing what only looks like a whole number once converted ("+3", "1_000")."""
    value = int(text)
    if str(value) != text.strip():
        raise ValueError(text)
    return value


def positive_int(option: str) -> Callable[[str], Any]:
    return bounded(option, Bound(1, MAX_COUNT, whole=True))


def count(option: str) -> Callable[[str], Any]:
    return bounded(option, COUNT)


def seconds(option: str) -> Callable[[str], Any]:
    return bounded(option, DURATION)


def seconds_or_zero(option: str) -> Callable[[str], Any]:
    return bounded(option, Bound(0, MAX_DURATION, unit="seconds"))
