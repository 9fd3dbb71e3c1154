"""An upload's bytes: refused unless bytes-like, and their size in words for messages.

Numbers and choices are checked by `models.validation` (`check_whole_number`, `check_number`,
`check_choice`); this module is only about the file content the upload modules receive.
"""

from __future__ import annotations


def human_size(num_bytes: float) -> str:
    """A byte count in words: GiB from 1 GiB up, MiB from 1 MiB up, else bytes.

    Args:
        num_bytes: A number of bytes.

    Returns:
        E.g. `"1.17 GiB"`, `"1.50 MiB"` or `"2,048 bytes"` (with thousands separators).

    Example:
    >>> human_size(3 * 1024 * 1024 // 2)
    '1.50 MiB'
    """
    if num_bytes >= 1024 * 1024 * 1024:
        return f"{num_bytes / (1024 * 1024 * 1024):.2f} GiB"
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
