"""supervisord's log reads (C{readFile}, C{tailFile}) by seek, with a cap on what one call returns.

The admin answers in the reactor that also proxies traffic, so a read must cost what it returns,
not what the file holds: each call seeks to its offset and reads at most L{READ_CAP} bytes.  The
same functions serve a file and, for a supervisor without log files, the bytes of its tail
(wrapped in C{io.BytesIO}).
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

__all__ = ["READ_CAP", "readRange", "tailRange", "readFileRange", "tailFileRange"]

#: The most one read or tail call returns.  supervisord reads the whole remainder of the file for
#: C{readLog(offset, 0)}; here that call returns the first READ_CAP bytes from C{offset}, and a
#: negative offset the last READ_CAP bytes at most.  A client reads on from where it got to.
READ_CAP = 1 << 20


def _size(f: BinaryIO) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return f.seek(0, io.SEEK_END)


def readRange(f: BinaryIO, offset: int, length: int, cap: int = READ_CAP) -> bytes:
    """supervisord's C{readFile}: C{length} bytes from C{offset} (0: to the end); a negative
    C{offset} (with C{length} 0) reads that many bytes from the end.  At most C{cap} bytes.

    @raise ValueError: for a negative C{length}, or a negative C{offset} with a C{length}.
    """
    size = _size(f)
    if offset < 0:
        if length:
            raise ValueError("a negative offset needs length 0")
        end = size
        start = max(0, size + offset, end - cap)
    else:
        if length < 0:
            raise ValueError("length must not be negative")
        start = offset
        end = size if length == 0 else min(size, offset + length)
        end = min(end, start + cap)
    if start >= end:
        return b""
    f.seek(start)
    return f.read(end - start)


def tailRange(f: BinaryIO, offset: int, length: int, cap: int = READ_CAP) -> tuple[bytes, int, bool]:
    """supervisord's C{tailFile}: (bytes, next offset, overflow).  Up to C{length} (at most
    C{cap}) bytes from C{offset}; when more than that was written since C{offset}, the last
    C{length} bytes and C{overflow} true, as supervisord jumps to the end."""
    length = min(max(0, length), cap)
    size = _size(f)
    overflow = False
    if size > offset + length:
        overflow = True
        offset = size - 1
    if offset + length > size:
        if offset > size - 1:
            length = 0
        offset = size - length
    offset = max(0, offset)
    if length <= 0:
        return b"", size, overflow
    f.seek(offset)
    return f.read(length), size, overflow


def readFileRange(path: str, offset: int, length: int, cap: int = READ_CAP) -> bytes:
    """L{readRange} over the file at C{path} (opened for this call only)."""
    with open(path, "rb") as f:
        return readRange(f, offset, length, cap)


def tailFileRange(path: str, offset: int, length: int, cap: int = READ_CAP) -> tuple[bytes, int, bool]:
    """L{tailRange} over the file at C{path} (opened for this call only)."""
    with open(path, "rb") as f:
        return tailRange(f, offset, length, cap)
