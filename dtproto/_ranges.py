"""Cutting a file into byte ranges of whole lines, to validate them in parallel.

``dtproto validate --jobs N`` validates each range in its own process and
combines the reports in input order with :meth:`dtproto.ValidationReport.merge`;
:mod:`dtproto.dask` does the same with its blocks (:func:`block_ranges`, the
same cut with a byte size instead of a count).  Because every range
but the last ends right after a newline, each range's report counts its lines
from 1 and ``merge`` only has to shift them (docs/protocol.md §2: lines are
what LF separates).
"""

from __future__ import annotations

import os
from typing import IO, Callable, Iterator, List, Tuple, Union

__all__ = ["line_ranges", "block_ranges", "Segments"]

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


def block_ranges(source: Source, blocksize: int) -> List[Tuple[int, int]]:
    """:func:`line_ranges` with as many parts as ``blocksize`` bytes fit the
    file (rounded up): ranges of at most about ``blocksize`` bytes, none cut
    inside a line (a longer line makes its range longer)."""
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError("blocksize must be an int >= 1, not %r" % (blocksize,))
    if isinstance(source, (str, bytes, os.PathLike)):
        with open(source, "rb") as f:
            return _by_size(f, blocksize)
    return _by_size(source, blocksize)


def _by_size(f: IO[bytes], blocksize: int) -> List[Tuple[int, int]]:
    size = f.seek(0, os.SEEK_END)
    return _ranges(f, max(1, -(-size // blocksize)), 1)


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


class Segments:
    """Cuts a byte stream into segments of whole lines, streaming.

    ``segment()`` yields the chunks of the next segment: at least ``size``
    bytes (unless the input ends), ending right after a newline, so no line
    straddles two segments.  A line longer than a segment is never
    buffered: its chunks pass through as they are read (the validator cuts
    over-long lines itself).  ``newlines`` counts the newlines handed out so
    far, which is the line-number offset of the next segment.  ``on_read``
    is called after every read (a progress bar).
    """

    def __init__(self, read: Callable[[int], bytes], on_read: Callable[[], None],
                 block: int = 1 << 20) -> None:
        self._read = read
        self._on_read = on_read
        self._block = block
        self._carry = b""
        self.eof = False
        self.newlines = 0
        self.bytes = 0

    def _next(self) -> bytes:
        if self._carry:
            chunk, self._carry = self._carry, b""
            return chunk
        chunk = self._read(self._block)
        self.bytes += len(chunk)
        self._on_read()
        return chunk

    def segment(self, size: int) -> Iterator[bytes]:
        got = 0
        chunk = self._next()
        while chunk:
            got += len(chunk)
            if got >= size:
                i = chunk.rfind(b"\n")
                if i >= 0:
                    self._carry = chunk[i + 1:]
                    self.newlines += chunk.count(b"\n", 0, i + 1)
                    yield chunk[: i + 1]
                    return
            self.newlines += chunk.count(b"\n")
            yield chunk
            chunk = self._next()
        self.eof = True
