"""Argument types shared by the management commands: numbers checked with a clear error."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


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


def _whole_number(text: str) -> int:
    """int(), refusing what only looks like a whole number once converted ("+3", "1_000")."""
    value = int(text)
    if str(value) != text.strip():
        raise ValueError(text)
    return value


def positive_int(option: str) -> Callable[[str], Any]:
    return _number(option, _whole_number, lambda v: v > 0, "a whole number of 1 or more")


def count(option: str) -> Callable[[str], Any]:
    return _number(option, int, lambda v: v >= 0, "0 or more")


def seconds(option: str) -> Callable[[str], Any]:
    return _number(option, float, lambda v: v > 0, "a number of seconds above 0")


def seconds_or_zero(option: str) -> Callable[[str], Any]:
    return _number(option, float, lambda v: v >= 0, "a number of seconds of 0 or more")
