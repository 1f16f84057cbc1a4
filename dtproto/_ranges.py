"""Cutting a file into byte ranges of whole lines, to validate them in parallel.

``dtproto validate --jobs N`` validates each range in its own process and
combines the reports in input order with :meth:`dtproto.ValidationReport.merge`;
the Dask integration does the same with its partitions.  Because every range
but the last ends right after a newline, each range's report counts its lines
from 1 and ``merge`` only has to shift them (docs/protocol.md §2: lines are
what LF separates).
"""

from __future__ import annotations

import os
from typing import IO, List, Tuple, Union

__all__ = ["line_ranges"]

_PROBE = 64 * 1024   # bytes read at a time while looking for the next newline

Source = Union[str, "os.PathLike[str]", IO[bytes]]


def line_ranges(source: Source, parts: int, *, min_bytes: int = 1) -> List[Tuple[int, int]]:
    """At most ``parts`` byte ranges ``(start, end)`` that cover ``source`` in order.

    ``source`` is a path or a seekable binary file (its position is moved).
    The ranges are about equally long, none shorter than ``min_bytes`` (so a
    small file gets fewer, down to one), and each one but the last ends right
    after a newline: no line is cut.  A line longer than a range simply makes
    that range longer (and the ranges fewer).  An empty file gives ``[(0, 0)]``.
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError("parts must be an int >= 1, not %r" % (parts,))
    if isinstance(source, (str, bytes, os.PathLike)):
        with open(source, "rb") as f:
            return _ranges(f, parts, max(min_bytes, 1))
    return _ranges(source, parts, max(min_bytes, 1))


def _ranges(f: IO[bytes], parts: int, min_bytes: int) -> List[Tuple[int, int]]:
    size = f.seek(0, os.SEEK_END)
    parts = max(1, min(parts, size // min_bytes))
    cuts = [0]
    for i in range(1, parts):
        pos = max(size * i // parts, cuts[-1])
        f.seek(pos)
        while True:
            block = f.read(_PROBE)
            if not block:
                pos = size
                break
            j = block.find(b"\n")
            if j >= 0:
                pos += j + 1
                break
            pos += len(block)
        if pos >= size:
            break
        cuts.append(pos)
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a] or [(0, size)]
