"""Argument checks shared by the upload and dataset modules: file bytes, integers, sizes."""

from __future__ import annotations

from numbers import Integral


def human_size(num_bytes: float) -> str:
    """A byte count in words: MiB from 1 MiB up, else bytes with thousands separators.

    Args:
        num_bytes: A number of bytes.

    Returns:
        E.g. `"1.50 MiB"` or `"2,048 bytes"`.

    Example:
    >>> human_size(3 * 1024 * 1024 // 2)
    '1.50 MiB'
    """
    if num_bytes >= 1024 * 1024:
        return f"{num_bytes / (1024 * 1024):.2f} MiB"
    return f"{int(num_bytes):,} bytes"


def checked_bytes(data: object, what: str) -> bytes:
    """An upload's content as `bytes`, refusing anything that is not bytes-like.

    Args:
        data: The file's content (`bytes`, `bytearray` or `memoryview`).
        what: The calling function's name, for the message.

    Returns:
        The content as `bytes`.

    Raises:
        TypeError: When `data` is not bytes-like (e.g. a file name).

    Example:
    >>> checked_bytes(bytearray(b"a,b"), "load_csv_dataset")
    b'a,b'
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} expects the file's bytes; received {type(data).__name__}.")
    return bytes(data)


def checked_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """An integer argument in `[low, high]` (`high` None: no upper bound); bools refused.

    Args:
        name: The argument's name, for the message.
        value: The value received.
        low: Smallest accepted value.
        high: Largest accepted value, or None.

    Returns:
        `value` as an `int`.

    Raises:
        ValueError: Naming the argument, the accepted range and the value received.

    Example:
    >>> checked_int("image_size", 64, 8, 256)
    64
    """
    too_high = high is not None and isinstance(value, Integral) and value > high
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low or too_high:
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be an integer >= {low}{upper}; received {value!r}.")
    return int(value)
