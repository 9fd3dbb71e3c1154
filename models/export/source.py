"""Python source text for generated scripts: string literals, safe comments, wrapped calls."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

COMMENT_LIMIT = 160
LINE_LIMIT = 100  # the script is formatted as `ruff format --line-length 100` formats it
PATH_IMPORT = "from pathlib import Path"


@dataclass(frozen=True)
class CodeParts:
    """One part of a generated script: the import lines it needs and its own lines.

    Attributes:
        imports: Import statements, one a line (the script sorts and groups them).
        lines: The part's own source lines.
    """

    imports: list[str]
    lines: list[str]


def literal(text: str) -> str:
    """A double-quoted Python string literal for any text (untrusted names included).

    Example:
    >>> literal("conv 1")
    '"conv 1"'
    """
    return json.dumps(str(text), ensure_ascii=True)


def comment_text(text: Any) -> str:
    """Untrusted text made safe for one comment line: printable, one line, bounded.

    Example:
    >>> comment_text("my  model\\t(1)")
    'my model (1)'
    """
    cleaned = "".join(char if char.isprintable() else " " for char in str(text))
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > COMMENT_LIMIT:
        cleaned = cleaned[: COMMENT_LIMIT - 3] + "..."
    return cleaned


def number(value: float) -> str:
    """A float literal that reads back to the same value (repr is the shortest exact form).

    Example:
    >>> number(0.1 + 0.2)
    '0.30000000000000004'
    """
    return repr(float(value))


def shape_text(shape: Iterable[Any]) -> str:
    """A shape as a tuple literal: `(8, 8, 1)`, `(3,)`.

    Example:
    >>> shape_text([8, 8, 1])
    '(8, 8, 1)'
    """
    items = [str(int(size)) for size in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def count_text(value: int) -> str:
    """A parameter count with thousands separators: `14,453`."""
    return f"{int(value):,}"


def wrap_call(prefix: str, arguments: list[str], suffix: str = ")") -> list[str]:
    """`prefix` + arguments on one line when short, else one argument per line.

    Example:
    >>> wrap_call("f(", ["1", "2"])
    ['f(1, 2)']
    """
    one_line = f"{prefix}{', '.join(arguments)}{suffix}"
    if len(one_line) < LINE_LIMIT:
        return [one_line]
    return [prefix.rstrip(), *[f"    {argument}," for argument in arguments], suffix]


def list_lines(prefix: str, items: list[str], indent: str, suffix: str) -> list[str]:
    """A list literal as ruff/black format it: one line when it fits, else one item a line.

    Example:
    >>> list_lines("for name in ", ['"a"', '"b"'], "", ":")
    ['for name in ["a", "b"]:']
    """
    one_line = f"{indent}{prefix}[{', '.join(items)}]{suffix}"
    if len(one_line) <= LINE_LIMIT:
        return [one_line]
    return [f"{indent}{prefix}[", *[f"{indent}    {item}," for item in items], f"{indent}]{suffix}"]


def dict_lines(prefix: str, items: list[str]) -> list[str]:
    """A dict literal as ruff/black format it: one line when it fits, else one item a line.

    Args:
        prefix: What comes before the braces, e.g. "RATE_MULTIPLIERS = ".
        items: The items as source, e.g. `'"conv1/kernel": 0.5'`.

    Example:
    >>> dict_lines("RATES = ", ['"a": 0.5'])
    ['RATES = {"a": 0.5}']
    """
    one_line = f"{prefix}{{{', '.join(items)}}}"
    if len(one_line) <= LINE_LIMIT:
        return [one_line]
    return [f"{prefix}{{", *[f"    {item}," for item in items], "}"]
