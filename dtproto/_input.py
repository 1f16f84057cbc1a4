"""The one reading of an input: what each kind of object means as a stream of lines.

Used by ``decode``/``iter_decode``/``validate`` of both implementations, by
the sender and by the command line, so the same object means the same thing
everywhere:

* ``bytes``, ``bytearray``, ``memoryview``: a whole body.
* ``str``: a whole body, encoded as UTF-8 (a lone surrogate becomes bytes that
  are invalid UTF-8, so its line is invalid, exactly as the same bytes are).
* an ``os.PathLike`` (``pathlib.Path``): the file it names, read in binary;
  a gzip file (it starts with the gzip magic, which no metric line can) is
  decompressed.  A plain ``str`` is never taken as a path: it is a body.
* anything with ``read(n)``: a file, binary or text, read in blocks.  A read
  that returns ``None`` (a non-blocking stream with no data yet) is waited
  for, never taken as the end.
* any other iterable: its items, where a bytes-like item is a *piece of a
  byte stream* (lines may straddle items: what a socket or an HTTP body
  gives) and a ``str`` item is *one or more whole lines* (a missing final LF
  is implied: what ``str.splitlines()`` or a list of lines gives).  So
  ``validate(["a.b 1", "c.d 2"])`` is two lines.
"""

from __future__ import annotations

import errno
import os
import select
import time
from typing import Any, BinaryIO, Iterator, Optional, Tuple, Union

from ._constants import MAX_LINE_BYTES

__all__ = ["READ_BLOCK", "NO_DATA_WAIT", "GZIP_MAGIC", "as_bytes", "open_path", "sniff_gzip",
           "wait_for_data", "read_blocks", "byte_chunks", "TooLong", "line_blocks"]

READ_BLOCK = 1 << 20      # bytes (or characters) asked of read() at a time
NO_DATA_WAIT = 30.0       # seconds a non-blocking stream without a descriptor may stay empty
GZIP_MAGIC = b"\x1f\x8b"

BytesLike = Union[bytes, bytearray, memoryview]


def as_bytes(data: Any) -> bytes:
    """A whole body as exact ``bytes`` (``str`` as UTF-8, lone surrogates kept
    as invalid bytes).

    A subclass is read as its contents, with the base type's own functions:
    the Cython core reads the buffer, and a subclass's ``encode``, ``split``
    or ``__len__`` must not give the pure decoder another body (nor may a
    ``bytes`` subclass reach the Cython core, which takes exact ``bytes``).
    """
    t = type(data)
    if t is bytes:
        return data
    if issubclass(t, str):
        # surrogatepass: a lone surrogate becomes bytes that are invalid UTF-8,
        # so str and bytes input are judged the same way.
        return str.encode(data, "utf-8", "surrogatepass")
    if issubclass(t, (bytes, bytearray, memoryview)):
        return bytes(memoryview(data))
    raise TypeError(
        "expected bytes, bytearray, memoryview or str, not %s" % type(data).__name__
    )


class _HeadThenRest:
    """A byte stream whose first bytes were read to look at them: ``head``,
    then the rest of ``stream`` (which it closes)."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self._head = head
        self._stream = stream

    def _take(self, n: Optional[int], read: Any) -> Any:
        head = self._head
        if not head:
            return read(n)
        if n is None or n < 0:
            self._head = b""
            rest = read(n)
            return head if rest is None else head + rest
        self._head = head[n:]
        return head[:n]   # a short read: every reader here asks again

    def read(self, n: Optional[int] = -1) -> Any:
        return self._take(n, self._stream.read)

    def read1(self, n: Optional[int] = -1) -> Any:
        return self._take(n, getattr(self._stream, "read1", self._stream.read))

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "_HeadThenRest":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def sniff_gzip(stream: Any) -> Tuple[bool, Any]:
    """Whether a binary ``stream`` (with ``peek``) starts with the gzip magic,
    and the stream to read it from: ``stream`` itself, or one that gives the
    bytes looked at back first.

    ``peek(2)`` on a pipe gives what the writer sent so far, which may be one
    byte: a body that starts with the first byte of the magic then waits
    for the second (read, not peeked), so gzip is told by the bytes, not by
    how they arrived.
    """
    head = bytes(stream.peek(2)[:2])
    if head != GZIP_MAGIC[:1]:
        return head == GZIP_MAGIC, stream
    head = b""   # one byte so far, the magic's first: read (not peek) two
    while len(head) < 2:
        more = stream.read(2 - len(head))
        if not more:   # the end (a read that would block waits in the caller's stream)
            break
        head += bytes(more)
    return head == GZIP_MAGIC, _HeadThenRest(head, stream)


class _GzipOfFile:
    """The decompressed bytes of an opened gzip file, which it closes with itself."""

    def __init__(self, file: Any, stream: Any) -> None:
        import gzip  # only for gzip files: "import dtproto" stays light

        self._file = file
        self._gzip = gzip.GzipFile(fileobj=stream, mode="rb")

    def read(self, n: int = -1) -> bytes:
        return self._gzip.read(n)

    def read1(self, n: int = -1) -> bytes:
        return self._gzip.read1(n)

    def close(self) -> None:
        try:
            self._gzip.close()
        finally:
            self._file.close()

    def __enter__(self) -> "_GzipOfFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def open_path(path: "os.PathLike[Any]") -> BinaryIO:
    """Open a file for reading as a byte stream; gzip files are decompressed.

    The file is opened once and read once (a FIFO or a process substitution
    cannot be opened again): its first bytes tell gzip (:func:`sniff_gzip`).
    """
    f: Any = open(path, "rb")
    try:
        gz, stream = sniff_gzip(f)
        return _GzipOfFile(f, stream) if gz else stream  # type: ignore[return-value]
    except BaseException:
        f.close()
        raise


def wait_for_data(stream: Any, waited: float) -> float:
    """Wait a little for a non-blocking stream whose ``read()`` returned ``None``.

    Returns the time waited so far.  A stream with a file descriptor is waited
    for as a blocking read would; one without is polled, and after
    ``NO_DATA_WAIT`` seconds without data ``BlockingIOError`` says so: the
    input was not read to its end, and nothing may report it as complete.
    """
    fd = -1
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        pass
    if fd >= 0:
        try:
            if not select.select([fd], [], [], 1.0)[0]:
                return 0.0    # no data yet: keep waiting, as a blocking read would
        except (OSError, ValueError):
            pass
        # Readable, yet read() gave None: count it, so this cannot spin forever.
    if waited >= NO_DATA_WAIT:
        raise BlockingIOError(
            errno.EAGAIN, "read() returned no data (None: a non-blocking stream) for %gs; "
            "the input was not read to its end" % NO_DATA_WAIT)
    pause = min(0.05, 0.001 + waited / 4)
    time.sleep(pause)
    return waited + pause


def read_blocks(stream: Any, size: int = READ_BLOCK) -> Iterator[Any]:
    """What ``stream.read(size)`` gives until the end: bytes-like or ``str`` blocks.

    ``None`` (no data yet) is waited for; only an empty block is the end.
    """
    read = stream.read
    waited = 0.0
    while True:
        block = read(size)
        if block is None:
            waited = wait_for_data(stream, waited)
            continue
        waited = 0.0
        block = _plain_block(block)
        if not len(block):
            return
        yield block


def _text(x: Any) -> Any:
    """``x`` itself, or the text of a ``str`` subclass as an exact ``str``.

    A ``str`` subclass is its characters, as the C core reads it: no method
    of it is asked (``__eq__``, ``__hash__``, ``__len__``, ``__add__``, ...).
    Every path that looks a name or a value up in a cache, compares it or
    builds text from it reads it through here first: a subclass whose
    equality is case-insensitive (or lies) would otherwise find another
    series' entry.  ``str.__str__`` copies the characters without calling the
    subclass; anything that is not a ``str`` is returned as it is (and
    refused by the caller).
    """
    if type(x) is str or not issubclass(type(x), str):
        return x
    return str.__str__(x)


def _plain_block(block: Any) -> Any:
    """``block`` as an exact ``str``, ``bytes``, ``bytearray`` or ``memoryview``:
    a subclass becomes its contents, so no method of it is asked (a block
    whose ``__len__`` said 0 would end the stream with lines unread)."""
    t = type(block)
    if t is bytes or t is str or t is bytearray or t is memoryview:
        return block
    if issubclass(t, str):
        return _text(block)
    return bytes(memoryview(block))  # TypeError: not a str nor bytes-like


def byte_chunks(source: Any) -> Iterator[bytes]:
    """``source`` as consecutive pieces of one byte stream (see the module docstring)."""
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        yield as_bytes(source)
        return
    if isinstance(source, os.PathLike):
        with open_path(source) as f:
            for block in read_blocks(f):
                yield as_bytes(block)
        return
    if getattr(source, "read", None) is not None:
        # A text file's blocks are pieces of its text (a str slice never
        # splits a code point), not lines.
        for block in read_blocks(source):
            yield as_bytes(block)
        return
    try:
        items = iter(source)
    except TypeError:
        raise TypeError(
            "expected bytes, str, a path, a file or an iterable of byte chunks or lines, "
            "not %s" % type(source).__name__) from None
    at_line_start = True
    for item in items:
        if isinstance(item, str):
            data = as_bytes(item)
            if not at_line_start:
                yield b"\n"   # a line is whole: it ends what a byte chunk left open
            yield data if data.endswith(b"\n") else data + b"\n"
            at_line_start = True
        elif isinstance(item, (bytes, bytearray, memoryview)):
            data = as_bytes(item)
            if data:
                yield data
                at_line_start = data.endswith(b"\n")
        else:
            raise TypeError(
                "an iterable source holds byte chunks (bytes) or lines (str), not %s"
                % type(item).__name__)


class TooLong:
    """A line cut short by the streaming reader: it is over MAX_LINE_BYTES."""

    __slots__ = ("head",)

    def __init__(self, head: bytes) -> None:
        self.head = head


def line_blocks(source: Any) -> Iterator[Tuple[int, Any]]:
    """Split a stream into (first line number, block) with bounded memory.

    A block is either ``bytes`` holding whole lines, or a ``TooLong`` marker
    for one line that exceeds MAX_LINE_BYTES (it cannot be valid, and only its
    beginning is kept for the error message).
    """
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        # A whole body is one block: no copy, no line count.  Its over-long
        # lines get the same error as the cut-off ones of a stream.
        buf = as_bytes(source)
        if buf:
            yield 1, buf
        return
    lineno = 1
    # The line begun and not ended yet.  A bytearray, and only the new chunk
    # searched for LF: a line arriving in many small pieces (a socket, a
    # hostile iterable of one-byte chunks) costs time in proportion to its
    # length, where joining and searching it again for every piece was
    # quadratic (0.6 s for one 200 KB line in 1-byte pieces).
    carry = bytearray()
    skipping: Optional[TooLong] = None  # inside an over-long line
    for chunk in byte_chunks(source):
        if not chunk:
            continue
        if skipping is not None:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            yield lineno, skipping
            lineno += 1
            skipping = None
            chunk = chunk[nl + 1:]
        cut = chunk.rfind(b"\n")
        if cut < 0:
            carry += chunk
        else:
            if carry:
                carry += memoryview(chunk)[: cut + 1]
                block = bytes(carry)
            else:
                block = chunk if cut + 1 == len(chunk) else chunk[: cut + 1]
            carry = bytearray(memoryview(chunk)[cut + 1:])
            yield lineno, block
            lineno += block.count(b"\n")
        if len(carry) > MAX_LINE_BYTES:
            skipping = TooLong(bytes(carry[:MAX_LINE_BYTES]))
            carry = bytearray()
    if skipping is not None:
        yield lineno, skipping
    elif carry:
        yield lineno, bytes(carry)


def after_lfs(buf: Any, pos: int, n: int) -> int:
    """The position just after the n-th LF of ``buf`` from ``pos`` on (n >= 1,
    and ``buf`` holds that many: ValueError if not).

    Counted at C speed: a window that doubles until it holds the n-th LF,
    then halved down to a few LFs, which ``index`` steps over.  Work is
    linear in the bytes passed over, whether n is 1 or 65,536 (one ``index``
    a line made iter_batches' default batch size 45% slower).  Used by
    dtproto.arrow (cutting batches) and the sender (finding rejected lines).
    """
    span = 4096
    while True:
        k = buf.count(b"\n", pos, pos + span)
        if k >= n:
            break
        if pos + span >= len(buf):
            raise ValueError("fewer than %d LFs left" % n)
        n -= k
        pos += span
        span *= 2
    while n > 32 and span > 64:   # the n-th LF is in buf[pos:pos + span]
        half = span // 2
        k = buf.count(b"\n", pos, pos + half)
        if k >= n:
            span = half
        else:
            n -= k
            pos += half
            span -= half
    for _ in range(n):
        pos = buf.index(b"\n", pos) + 1
    return pos
