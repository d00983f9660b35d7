"""Argument types shared by the management commands: numbers within their bound, or a clear error.

The bounds and their wording come from django_jobs.validation, as for every other entry point.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from django_jobs.validation import Bound


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


# jobstatus's options, whose messages its tests and users know; they refuse NaN and infinity.


def count(option: str) -> Callable[[str], Any]:
    return _number(option, int, lambda v: v >= 0, "0 or more")


def seconds(option: str) -> Callable[[str], Any]:
    return _number(option, float, lambda v: 0 < v < math.inf, "a number of seconds above 0")


def _number(
    option: str, convert: Callable[[str], Any], accept: Callable[[Any], bool], requirement: str
) -> Callable[[str], Any]:
    """An argparse type: `convert` the text and check it, or say what `option` requires."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{option} must be {requirement}, not {text!r}.")
        return value

    return parse
