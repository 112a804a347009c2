"""The one check every backend applies to a submitted file name."""

from __future__ import annotations

from pathlib import PurePosixPath


def safe_relative(name: str) -> PurePosixPath:
    """``name`` as a path that stays inside the code directory.

    Raises ``ValueError`` for an empty name, a NUL byte, an absolute path, or an empty,
    ``.`` or ``..`` part. Other odd names (backslashes, look-alike dots, control characters)
    are taken literally: a POSIX file system keeps them inside the directory.
    """
    path = PurePosixPath(name)
    if (
        not name
        or "\x00" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise ValueError(f"unsafe file name {name!r}: use a relative path without '..'")
    return path
