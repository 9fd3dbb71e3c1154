"""Argument checks with Keras-style messages: what was expected, what was received, how to fix.

Every check names the argument, says what it accepts and shows the value received, e.g.

    `epochs` must be a whole number from 1 to 1000. Received: epochs=0.5

A value of the wrong kind (a float or a string where a whole number belongs) raises
`ArgumentTypeError`, which is both a `TypeError` and a `ValueError`: callers that catch either
keep working. A value of the right kind but out of range raises `ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any, TypeVar

T = TypeVar("T")


class ArgumentTypeError(TypeError, ValueError):
    """A value of the wrong kind: a `TypeError`, and a `ValueError` for callers catching that."""


def _bound_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def whole_number_phrase(low: int | None = None, high: int | None = None) -> str:
    """What a whole-number argument accepts, in words.

    Args:
        low: The smallest value accepted, or None.
        high: The largest value accepted, or None.

    Returns:
        E.g. "a whole number from 1 to 200", "a whole number >= 0" or "a whole number".

    Example:
    >>> whole_number_phrase(1, 200)
    'a whole number from 1 to 200'
    """
    return "a whole number" + _range_phrase(low, high)


def number_phrase(low: float | None = None, high: float | None = None) -> str:
    """What a number argument accepts, in words (bounds included).

    Example:
    >>> number_phrase(1e-6, 10.0)
    'a number from 1e-06 to 10'
    """
    return "a number" + _range_phrase(low, high)


def _range_phrase(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {_bound_text(low)} to {_bound_text(high)}"
    if low is not None:
        return f" >= {_bound_text(low)}"
    if high is not None:
        return f" <= {_bound_text(high)}"
    return ""


def _message(name: str, expected: str, value: Any, hint: str) -> str:
    message = f"`{name}` must be {expected}. Received: {name}={value!r}"
    return f"{message}. {hint}" if hint else message


def check_whole_number(
    name: str,
    value: Any,
    low: int | None = None,
    high: int | None = None,
    *,
    allow_none: bool = False,
    hint: str = "",
) -> int | None:
    """Checks a whole-number argument (Python or NumPy integer, not bool) in `[low, high]`.

    Args:
        name: The argument's name, for the message.
        value: The value received.
        low: The smallest value accepted, or None for no lower bound.
        high: The largest value accepted, or None for no upper bound.
        allow_none: Whether None is accepted (and returned).
        hint: A sentence added to the message, e.g. what the value means or a typical one.

    Returns:
        `value` as an `int` (None when `allow_none` and it is None).

    Raises:
        ArgumentTypeError: When `value` is not a whole number (a `TypeError` and `ValueError`).
        ValueError: When it is outside `[low, high]`.

    Example:
    >>> check_whole_number("epochs", 3, 1, 200)
    3
    >>> check_whole_number("epochs", 0.5, 1, 200)
    Traceback (most recent call last):
    ArgumentTypeError: `epochs` must be a whole number from 1 to 200. Received: epochs=0.5
    """
    if value is None and allow_none:
        return None
    expected = ("None or " if allow_none else "") + whole_number_phrase(low, high)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArgumentTypeError(_message(name, expected, value, hint))
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(_message(name, expected, value, hint))
    return number


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    hint: str = "",
) -> float:
    """Checks a finite real-number argument (int or float, not bool) in `[low, high]`.

    Args:
        name: The argument's name, for the message.
        value: The value received.
        low: The smallest value accepted, or None for no lower bound.
        high: The largest value accepted, or None for no upper bound.
        hint: A sentence added to the message, e.g. typical values.

    Returns:
        `value` as a `float`.

    Raises:
        ArgumentTypeError: When `value` is not a real number (a `TypeError` and `ValueError`).
        ValueError: When it is NaN, infinite or outside `[low, high]`.

    Example:
    >>> check_number("validation_fraction", 0.2, 0.0, 0.9)
    0.2
    """
    expected = number_phrase(low, high)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(_message(name, expected, value, hint))
    number = float(value)
    if (
        not math.isfinite(number)
        or (low is not None and number < low)
        or (high is not None and number > high)
    ):
        raise ValueError(_message(name, expected, value, hint))
    return number


def check_choice(what: str, value: T, choices: Iterable[T], *, hint: str = "") -> T:
    """Checks that a value is one of a fixed set, e.g. an optimizer or a plan name.

    Args:
        what: What the value names, for the message, e.g. "optimizer" or "bulk action".
        value: The value received.
        choices: The accepted values, in the order the message lists them.
        hint: A sentence added to the message.

    Returns:
        `value`.

    Raises:
        ValueError: When `value` is not one of `choices`, e.g. "Unknown optimizer 'adamax'.
            Expected one of ['adam', 'sgd']."

    Example:
    >>> check_choice("optimizer", "adam", ("adam", "sgd"))
    'adam'
    """
    options = list(choices)
    try:
        accepted = value in options
    except (TypeError, ValueError):  # e.g. an array: not one of the choices
        accepted = False
    if not accepted:
        message = f"Unknown {what} {value!r}. Expected one of {options}."
        raise ValueError(f"{message} {hint}" if hint else message)
    return value


__all__ = [
    "ArgumentTypeError",
    "check_choice",
    "check_number",
    "check_whole_number",
    "number_phrase",
    "whole_number_phrase",
]
