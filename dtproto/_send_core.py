"""The I/O-free core of both senders (docs/protocol.md §10.4).

:class:`~dtproto.sender.Sender` (``http.client``, threads) and
:class:`~dtproto.aio.AsyncSender` (aiohttp, asyncio) are thin loops over this
module, in the way of h11/wsproto: it never touches a socket, a thread, an
event loop or a sleep.  It holds

* the results (:class:`SendResult` and its parts) and their accounting;
* the input adapters and the chunker (bodies of at most ``max_bytes`` that
  never split a line, with input line numbers);
* the configuration checks shared by both senders (URL, token, limits);
* response parsing (a ValidationResponse, distrusted: line numbers outside
  the request ignored, counts clamped);
* the retry policy of one chunk (:class:`_Delivery`: backoff with full jitter,
  ``Retry-After``, a time budget, ambiguous failures), the concurrency window
  (:class:`_Window`: AIMD on 429) and the session (:class:`_Session`: chunks
  started in input order, outcomes settled in input order, where to stop and
  ``stopped_at``).

The clock and the random source are passed in, so the policy is tested
without a network and without sleeping.
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import email.utils
import gzip as _gzip
import ipaddress
import json
import logging
import os
import random
import re
import ssl
import sys
import time
import urllib.parse
import urllib.request
import zlib
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Tuple, Type, TypeVar, Union)

from . import _input
from ._constants import (
    BLANK_CHARS,
    ENVIRONMENT_PREFIX,
    INGEST_PATH,
    INGEST_SCOPE,
    MAX_BODY_BYTES,
    MAX_LINE_CHARS,
    ONEAGENT_MAX_LINES,
    ONEAGENT_PATH,
    ONEAGENT_PORT,
    RESPONSE_EMPTY_REQUEST,
    RESPONSE_WARNINGS_KEY,
    RESPONSE_WARNINGS_KEY_SEEN,
    TOKEN_SCHEME,
)
from .errors import (
    AuthenticationError,
    ConfigurationError,
    DeliveryError,
    DtprotoError,
    EndpointNotFoundError,
    ErrorCode,
    InputReadError,
    MissingScopeError,
    PayloadTooLargeError,
    SendError,
    reason_text,
)
from .model import Metadata, Metric

log = logging.getLogger("dtproto.sender")

#: The attribute under which an exception that stopped a send or a flush
#: (KeyboardInterrupt, asyncio.CancelledError, an error of the caller's input
#: iterator, ...) carries the :class:`SendResult` of what happened before it:
#: ``getattr(exc, "dtproto_result", None)``.
INTERRUPTED_RESULT = "dtproto_result"

# INGEST_PATH (SaaS, Managed, ActiveGate), ONEAGENT_PATH and ONEAGENT_PORT (the
# OneAgent local API) come from dtproto._constants and are re-exported here.
# The API root of a base URL such as https://host/api/v2: INGEST_PATH without
# its "/metrics/ingest" tail (the OneAgent path).
_API_ROOT = INGEST_PATH[: -len(ONEAGENT_PATH)]
assert _API_ROOT + ONEAGENT_PATH == INGEST_PATH
URL_ENV = "DT_URL"
"""Environment variable with the ingest URL (or an environment base URL)."""
TOKEN_ENV = "DT_API_TOKEN"
"""Environment variable with the API token."""
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses that are retried (docs/protocol.md §10.4)."""

# How much input is read (or sliced) at a time.  Big enough that the per-block
# Python overhead vanishes, small enough to keep memory bounded.
_READ_BLOCK = 256 * 1024
# Records are encoded this many at a time: one encode() call per batch keeps
# the per-record overhead low without building the whole body in memory.
_RECORD_BATCH = 512
# Small str/bytes items of an iterable are joined into blocks of about this size.
_JOIN_BYTES = 64 * 1024
# Results keep at most this many per-line entries (counts stay exact).
_MAX_KEPT = 100_000
# Largest response body read.  The API's answers are small (a ValidationResponse
# lists at most 10 errors and a few warnings); more is a protocol error, and
# reading it would let a hostile or broken endpoint exhaust the client's memory.
MAX_RESPONSE_BYTES = 1 << 20
# How long a read() that keeps returning None (a non-blocking stream with no
# data yet) is waited for when the stream has no file descriptor to wait on.
# What a failing input raises while it is read (gzip raises all of these).
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)


# --------------------------------------------------------------------------- errors

# The exception classes live in dtproto.errors; they are imported above and
# stay importable from here.  ``_SendFailure`` is the old name of their base.
_SendFailure = SendError


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class InvalidLine:
    """A line that was not accepted, with its line number in the caller's input.

    Attributes:
        line: 1-based line number in the input of :meth:`Sender.send` (or in
            the sequence of lines added to the sender, for the batching API).
        reason: the server's reason text (``source == "server"``) or the
            client's (``source == "client"``, the line was never sent).
        source: ``"server"`` or ``"client"``.
        request: index into :attr:`SendResult.requests`, or ``None`` for a
            client-side rejection.
    """

    line: int
    reason: str
    source: str = "server"
    request: Optional[int] = None


@dataclass(frozen=True)
class WarnedLine:
    """A line the server accepted with a warning (e.g. a changed metric key)."""

    line: int
    message: str
    request: Optional[int] = None


@dataclass(frozen=True)
class Undelivered:
    """A range of input lines that were not delivered.

    Attributes:
        first_line, last_line: inclusive range of input line numbers.
        lines: number of lines of the range this entry accounts for: all of
            them, except (with ``validate=True``) those the client rejected,
            which are in :attr:`SendResult.invalid_lines` instead, so that
            every line is counted once.
        reason: why (last error seen).
        status: last HTTP status, or ``None`` when no response arrived.
        ambiguous: True when the server may have stored these lines anyway
            (timeout or dropped connection after the request was sent).
    """

    first_line: int
    last_line: int
    lines: int
    reason: str
    status: Optional[int] = None
    ambiguous: bool = False


@dataclass
class RequestInfo:
    """One chunk and what happened to it.

    Attributes:
        index: position in :attr:`SendResult.requests`.
        first_line: input line number of the chunk's first line.
        lines: lines in the chunk (blank lines included).
        bytes: uncompressed body size.
        wire_bytes: bytes actually sent (differs with gzip).
        status: final HTTP status, or ``None`` when no response arrived.
        attempts: requests made for this chunk (1 + retries).
        latency: seconds from the first attempt to the final answer,
            backoff included.
        history: one entry per attempt: the status, or an error description.
        lines_ok: the server's ``linesOk`` (or ``linesValid``).
        lines_invalid: the server's ``linesInvalid``.
    """

    index: int
    first_line: int
    lines: int
    bytes: int
    wire_bytes: int = 0
    status: Optional[int] = None
    attempts: int = 0
    latency: float = 0.0
    history: List[Union[int, str]] = field(default_factory=list)
    lines_ok: int = 0
    lines_invalid: int = 0


@dataclass
class SendResult:
    """What happened to the lines of one :meth:`Sender.send` or flush.

    Counters are exact; the per-line lists keep at most 100,000 entries each.

    Attributes:
        lines_ok: lines the server accepted (sum of ``linesOk``/``linesValid``).
        lines_invalid: lines the server rejected (sum of its ``linesInvalid``,
            the true count) plus lines rejected by the client.
        invalid_lines: rejected lines with input line numbers and reasons.
            The server lists at most 10 per request ("First 10 errors
            reported"), so this list can be shorter than ``lines_invalid``;
            :attr:`unreported_invalid` says by how much.
        warnings: lines accepted with a warning, with input line numbers.
        undelivered: line ranges that were not delivered, and why.
        requests: one :class:`RequestInfo` per chunk sent.
        lines_sent: lines in chunks that got a definitive answer (202/400),
            blank lines included (the server skips those and counts them in
            neither ``linesOk`` nor ``linesInvalid``).
        lines_skipped: lines of chunks made only of blank lines, which are
            not sent at all.
    """

    lines_ok: int = 0
    lines_invalid: int = 0
    invalid_lines: List[InvalidLine] = field(default_factory=list)
    warnings: List[WarnedLine] = field(default_factory=list)
    undelivered: List[Undelivered] = field(default_factory=list)
    requests: List[RequestInfo] = field(default_factory=list)
    lines_sent: int = 0
    lines_skipped: int = 0
    bytes_sent: int = 0
    #: Set when the input could not be read to its end (see
    #: :class:`InputReadError`): the result then covers only the lines before.
    input_error: Optional[str] = None
    #: Input line number of the first line never attempted, when the send
    #: stopped before the end of the input (a chunk failed for good, or the
    #: input failed to read); ``None`` when every line was attempted.  Every
    #: input line is then exactly one of: accepted, rejected (listed or
    #: counted), in an :attr:`undelivered` range, or at/after ``stopped_at``.
    stopped_at: Optional[int] = None

    @property
    def lines_not_delivered(self) -> int:
        """Number of lines in :attr:`undelivered` ranges."""
        return sum(u.lines for u in self.undelivered)

    @property
    def lines_rejected_by_client(self) -> int:
        """Lines never sent because they can never fit a request (or failed to encode)."""
        return sum(1 for i in self.invalid_lines if i.source == "client")

    @property
    def unreported_invalid(self) -> int:
        """Invalid lines the server counted but did not list (its list is capped at 10)."""
        return max(0, self.lines_invalid - len(self.invalid_lines))

    @property
    def ok(self) -> bool:
        """True when everything was delivered and no line was rejected."""
        return not self.undelivered and self.lines_invalid == 0 and self.input_error is None

    def merge(self, other: "SendResult") -> None:
        """Add ``other``'s counts and entries to this result (request indexes are shifted)."""
        shift = len(self.requests)
        self.lines_ok += other.lines_ok
        self.lines_invalid += other.lines_invalid
        self.lines_sent += other.lines_sent
        self.lines_skipped += other.lines_skipped
        self.bytes_sent += other.bytes_sent
        for r in other.requests:
            self.requests.append(dataclasses.replace(r, index=r.index + shift))
        room = _MAX_KEPT - len(self.invalid_lines)
        self.invalid_lines.extend(
            InvalidLine(i.line, i.reason, i.source, None if i.request is None else i.request + shift)
            for i in other.invalid_lines[: max(room, 0)]
        )
        room = _MAX_KEPT - len(self.warnings)
        self.warnings.extend(
            WarnedLine(w.line, w.message, None if w.request is None else w.request + shift)
            for w in other.warnings[: max(room, 0)]
        )
        self.undelivered.extend(other.undelivered)
        if other.input_error is not None and self.input_error is None:
            self.input_error = other.input_error
        if other.stopped_at is not None and self.stopped_at is None:
            self.stopped_at = other.stopped_at

    def summary(self) -> str:
        """One line for logs: counts only, never line content."""
        text = "%d lines ok, %d invalid, %d not delivered in %d requests (%d bytes)" % (
            self.lines_ok, self.lines_invalid, self.lines_not_delivered,
            len(self.requests), self.bytes_sent,
        )
        if self.invalid_lines:
            first = self.invalid_lines[0]
            text += "; first invalid: line %d: %s" % (first.line, first.reason[:200])
        if self.input_error is not None:
            text += "; input not read to its end: %s" % self.input_error[:200]
        if self.stopped_at is not None:
            text += "; stopped: lines from %d on were never sent" % self.stopped_at
        return text


# --------------------------------------------------------------------------- chunking

# Bytes a body made only of blank lines can hold: the blank characters, CR, LF.
_MAYBE_BLANK = BLANK_CHARS.encode("ascii") + b"\r\n"


def only_blank_lines(body: bytes) -> bool:
    """True when every line of ``body`` is blank as the codec defines it.

    Blank (docs/protocol.md §2): after the one CR before its LF is removed,
    the line is empty or holds only SP and HTAB.  VT, FF and other whitespace
    do not make a line blank: such a line is judged, and is invalid.  The
    final answer comes from the codec itself (``validate``), so the sender,
    the CLI's dry run and :func:`~dtproto.validate` cannot disagree.
    """
    if body.translate(None, _MAYBE_BLANK):
        return False       # a character no blank line holds: judged by the server
    from ._impl import codec
    report = codec.validate(body)
    return report.lines_ok == 0 and report.lines_invalid == 0



class _Reject:
    """Marker in the block stream: one line here is rejected by the client."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Blanked:
    """Marker in the block stream: one line here is rejected by the client,
    and goes as an empty line in its chunk.

    Unlike :class:`_Reject` it does not end the chunk: rejections spread
    through the input (a table's rows with a null value) would otherwise
    cut it into requests of a few lines each.  The server skips the empty
    line, so its line numbers still map back by the plain offset, as for
    the lines ``validate=True`` rejects.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _BadLine:
    """Marker in the block stream: the line in progress is invalid.

    Unlike :class:`_Reject` it may come in the middle of a line: the bytes of
    that line already in the stream, and those that follow up to its newline,
    are dropped, and the line is rejected with ``reason``.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Starve:
    """Marker in a block or item stream: no input is available *yet*.

    The asynchronous sender feeds the (synchronous) chunker from an async
    iterable: when its queue runs dry it yields this marker, which the
    chunker and :func:`_items` pass through, so the driver can ``await`` more
    input and resume the same generators.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<starve>"


_STARVE = _Starve()


class _ReadFailed(Exception):
    """The input failed while the chunker was reading it (carries its state)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause
        self.pending = b""     # bytes read and not yet cut into a chunk
        self.line = 0          # input line number of pending[0]
        self.skipping = False  # a line being discarded (too long or invalid) was cut short
        self.blanked: List[Tuple[int, str]] = []   # client rejections among pending's lines


def _guarded(blocks: Iterable[Any]) -> Iterator[Any]:
    """Re-raise a failure of the input as :class:`_ReadFailed`."""
    it = iter(blocks)
    while True:
        try:
            block = next(it)
        except StopIteration:
            return
        except _READ_ERRORS as exc:
            raise _ReadFailed(exc) from exc
        yield block


class _Chunk:
    """One request body: ``lines`` complete lines starting at input line
    ``first_line``; ``rejects``: (line, reason) of its lines the client
    rejected (:class:`_Blanked`), which are empty lines in ``body``."""

    __slots__ = ("body", "first_line", "lines", "rejects")

    def __init__(self, body: bytes, first_line: int, lines: int,
                 rejects: Sequence[Tuple[int, str]] = ()) -> None:
        self.body = body
        self.first_line = first_line
        self.lines = lines
        self.rejects = rejects


class _Rejected:
    """Chunker output: input line ``line`` is rejected without sending."""

    __slots__ = ("line", "reason")

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason


def _too_long(size: int, max_bytes: int) -> str:
    return "line too long for one request: %d bytes with its newline > max_bytes %d" % (
        size, max_bytes)


_BLANK_BYTES = BLANK_CHARS.encode("ascii")


def _skipped_blank(size: int, other: int, ends_cr: bool) -> Optional[bytes]:
    """A line too long for one request, which the chunker skipped without
    keeping it, as a blank line of its size, or None when it is not blank:
    ``size`` bytes without its LF, ``other`` of them neither SP nor HTAB, the
    last one CR or not.

    The codec decides (:func:`only_blank_lines`) on a line of the same length
    and shape: SP and HTAB count alike, and a line of them longer than a line
    may be is not blank but too long (so no more than that is ever built).
    Found by a red-team pass: a blank line longer than ``max_bytes`` was
    reported invalid, where validate() and the server skip it.
    """
    if other > 1 or (other == 1 and not ends_cr) or size > MAX_LINE_CHARS + 1:
        return None
    line = b" " * (size - other) + b"\r" * other + b"\n"
    return line if only_blank_lines(line) else None


def _chunk_stream(
    blocks: Iterable[Any], first_line: int, max_bytes: int, max_lines: Optional[int]
) -> Iterator[Union[_Chunk, _Rejected]]:
    """Cut a stream of byte blocks into request bodies at line boundaries.

    ``blocks`` yields bytes-like pieces of one continuous byte stream (cut
    anywhere) and :class:`_Reject` markers (which only occur at a line
    boundary).  Yields :class:`_Chunk` and :class:`_Rejected` in input order.

    All the work is done by ``bytes.find/rfind/count`` over a single
    ``bytearray``, so the per-line cost is C speed; only the per-chunk
    bookkeeping is Python.  Memory: the buffer never holds more than
    ``max_bytes`` plus one block, because a full chunk is cut as soon as one
    is available, and an oversized line is skipped without buffering it.
    """
    buf = bytearray()
    nl = 0                 # newlines in buf
    line = first_line      # input line number of buf[0]
    blanked: Deque[Tuple[int, str]] = deque()   # _Blanked lines in buf: (line, reason)
    skip_size = -1         # >= 0 while discarding a line: bytes seen so far
    skip_reason: Optional[str] = None   # why, when not "too long" (a _BadLine)
    skip_other = 0         # bytes of it that are neither SP nor HTAB (counted up to 2)
    skip_cr = False        # its last byte so far is CR

    def skip_seen(piece: Any) -> None:
        """Count a piece of the line being skipped (for _skipped_blank);
        with :func:`skipped`, the one way a line too long is judged, whole
        in the buffer or met piece by piece."""
        nonlocal skip_other, skip_cr
        if piece:
            if skip_other < 2:
                skip_other += len(bytes(piece).translate(None, _BLANK_BYTES))
            skip_cr = piece[-1] == 13

    def skipped(size: int) -> Union[_Chunk, _Rejected]:
        """The chunker's output for the line skipped, ``size`` bytes without
        its LF: a blank line (a chunk of it alone, which is never sent), or
        a rejection."""
        nonlocal skip_other, skip_cr
        blank = None if skip_reason else _skipped_blank(size, skip_other, skip_cr)
        skip_other, skip_cr = 0, False
        if blank is not None:
            return _Chunk(blank, line, 1)
        return _Rejected(line, skip_reason or _too_long(size + 1, max_bytes))

    def cut(final: bool) -> Iterator[Union[_Chunk, _Rejected]]:
        # Emits as many chunks as are complete.  With final=True the buffer
        # ends with a newline and is drained completely.
        nonlocal buf, nl, line, skip_size
        while buf:
            end = -1
            if max_lines and nl >= max_lines:
                # Line cap reached: the chunk ends after the max_lines-th line,
                # unless that is beyond max_bytes (then the byte cut below wins).
                pos = -1
                for _ in range(max_lines):
                    pos = buf.find(b"\n", pos + 1)
                if pos < max_bytes:
                    end = pos + 1
            if end < 0:
                if len(buf) <= max_bytes:
                    if not final:
                        return          # wait for more data: the chunk may still grow
                    end = len(buf)
                else:
                    i = buf.rfind(b"\n", 0, max_bytes)
                    if i < 0:
                        # The first line alone does not fit a request.
                        j = buf.find(b"\n", max_bytes)
                        if j < 0:
                            skip_size = len(buf)
                            skip_seen(buf)
                            buf = bytearray()
                            nl = 0
                            return
                        skip_seen(buf[:j])
                        yield skipped(j)
                        del buf[: j + 1]
                        nl -= 1
                        line += 1
                        continue
                    end = i + 1
            if end == len(buf):
                body = bytes(buf)
                n = nl
                buf = bytearray()
            else:
                with memoryview(buf) as view:   # one copy, not slice + copy
                    body = bytes(view[:end])
                n = body.count(b"\n")
                del buf[:end]   # bytearray deletes from the front in O(1) amortized
            nl -= n
            rejects: List[Tuple[int, str]] = []
            while blanked and blanked[0][0] < line + n:
                rejects.append(blanked.popleft())
            yield _Chunk(body, line, n, rejects)
            line += n

    try:
        for block in blocks:
            kind = type(block)
            if kind is _Starve:
                yield block      # type: ignore[misc]   (the driver awaits more input)
                continue
            if kind is _Reject:
                if skip_size >= 0:   # markers come at line boundaries: end the skipped line
                    yield skipped(skip_size)
                    line += 1
                    skip_size, skip_reason = -1, None
                if buf:
                    if buf[-1] != 10:
                        buf += b"\n"
                        nl += 1
                    yield from cut(True)
                yield _Rejected(line, block.reason)
                line += 1
                continue
            if kind is _Blanked:
                if skip_size >= 0:   # markers come at line boundaries: end the skipped line
                    yield skipped(skip_size)
                    line += 1
                    skip_size, skip_reason = -1, None
                if buf and buf[-1] != 10:
                    buf += b"\n"
                    nl += 1
                blanked.append((line + nl, block.reason))
                buf += b"\n"
                nl += 1
                if len(buf) > max_bytes or (max_lines and nl >= max_lines):
                    yield from cut(False)
                continue
            if kind is _BadLine:
                if skip_size < 0:
                    # Drop the start of the bad line; the complete lines before
                    # it go first, so that rejections stay in input order.
                    i = buf.rfind(b"\n") + 1
                    skip_size = len(buf) - i
                    del buf[i:]
                    if buf:
                        yield from cut(True)
                skip_reason = block.reason
                continue
            if not block:
                continue
            if skip_size >= 0:
                i = block.find(b"\n")
                if i < 0:
                    skip_size += len(block)
                    skip_seen(block)
                    continue
                skip_seen(memoryview(block)[:i])
                yield skipped(skip_size + i)
                line += 1
                skip_size, skip_reason = -1, None
                block = memoryview(block)[i + 1:]
                if not block:
                    continue
            start = len(buf)
            buf += block
            nl += buf.count(b"\n", start)
            if len(buf) > max_bytes or (max_lines and nl >= max_lines):
                yield from cut(False)
    except _ReadFailed as exc:
        exc.pending = bytes(buf)
        exc.line = line
        exc.blanked = list(blanked)
        exc.skipping = skip_size >= 0
        raise
    if skip_size >= 0:
        yield skipped(skip_size)
        line += 1
    if buf:
        if buf[-1] != 10:
            # The last line has no newline; adding one makes every chunk a
            # sequence of complete lines (the server treats both the same).
            buf += b"\n"
            nl += 1
        yield from cut(True)


def _next_line(items: Iterator[Any], line: int) -> Optional[int]:
    """``line`` if the chunk stream ``items`` holds anything more, else ``None``.

    Called after a chunk failed for good, to tell "stopped before the end"
    from "the failed chunk was the last": reads at most about one chunk more
    of the input, which is never sent.  An input that fails to read there
    still has lines after ``line``.
    """
    try:
        next(items)
    except StopIteration:
        return None
    except (_ReadFailed, *_READ_ERRORS):
        return line
    return line


def _is_encoder(obj: Any) -> bool:
    return hasattr(obj, "getvalue") and hasattr(obj, "clear") and not hasattr(obj, "read")


def _bad_text_reason(line: str, index: int) -> str:
    # The reason validate() gives for such a line: the character cannot be
    # UTF-8, so the line is invalid UTF-8 whatever else is wrong with it.
    return reason_text(ErrorCode.INVALID_UTF8, line, index + 1)


class _TextEncoder:
    """UTF-8 encoder for ``str`` input, fed piece by piece (cut anywhere).

    ``surrogateescape`` maps U+DC80..U+DCFF back to the bytes they stand for;
    any other lone surrogate cannot be encoded at all.  A line holding one is
    invalid (``invalid_utf8``, as :func:`~dtproto.validate` says): it becomes a
    :class:`_BadLine` marker, is never sent, and the rest still goes.  Only a
    piece that fails to encode takes the slow, line-by-line path.
    """

    __slots__ = ("in_bad_line",)

    def __init__(self) -> None:
        self.in_bad_line = False   # the line in progress is bad: drop up to its newline

    def encode(self, text: str) -> Iterator[Any]:
        if not self.in_bad_line:
            try:
                yield text.encode("utf-8", "surrogateescape")
                return
            except UnicodeEncodeError:
                pass
        segments = text.split("\n")
        last = len(segments) - 1
        run: List[bytes] = []
        for k, seg in enumerate(segments):
            ends = k < last
            if self.in_bad_line:
                if ends:
                    run.append(b"\n")   # ends the dropped line
                    self.in_bad_line = False
                continue
            try:
                b = seg.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as exc:
                if run:
                    yield b"".join(run)
                    run = []
                yield _BadLine(_bad_text_reason(seg, exc.start))
                if ends:
                    run.append(b"\n")
                else:
                    self.in_bad_line = True
                continue
            run.append(b + b"\n" if ends else b)
        if run:
            yield b"".join(run)


def _text_lines(text: str) -> Tuple[bytes, List[Tuple[int, str]]]:
    """``text`` (complete lines) as bytes, and its lines that cannot be UTF-8.

    Returns the bytes, where such a line is encoded with ``surrogatepass``
    (invalid UTF-8, the bytes validate() judges), and a list of
    ``(0-based line index, reason)`` for those lines.
    """
    try:
        return text.encode("utf-8", "surrogateescape"), []
    except UnicodeEncodeError:
        pass
    parts: List[bytes] = []
    bad: List[Tuple[int, str]] = []
    for k, seg in enumerate(text.split("\n")):
        try:
            parts.append(seg.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError as exc:
            bad.append((k, _bad_text_reason(seg, exc.start)))
            parts.append(seg.encode("utf-8", "surrogatepass"))
    return b"\n".join(parts), bad


def _with_rejects(body: bytes, rejects: List[Tuple[int, str]]) -> Iterator[Any]:
    """``body`` (complete lines) as blocks, with the lines at the 0-based
    indexes of ``rejects`` replaced by :class:`_Reject` markers."""
    view = memoryview(body)
    pos = 0
    line = 0
    for index, reason in rejects:
        start = pos
        if line < index:
            pos = _input.after_lfs(body, pos, index - line)
            line = index
        if pos > start:
            yield view[start:pos]
        yield _Reject(reason)
        pos = _input.after_lfs(body, pos, 1)
        line += 1
    if pos < len(body):
        yield view[pos:]


def _blocks(data: Any) -> Iterator[Any]:
    """Turn any supported input into a stream of byte blocks and markers
    (:class:`_Reject`, :class:`_BadLine`)."""
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        data = _input._plain_block(data)  # a subclass is its contents (its __len__ too)
    if isinstance(data, (bytes, bytearray)):
        view = memoryview(data)
        for i in range(0, len(view), _READ_BLOCK):
            yield view[i: i + _READ_BLOCK]
        return
    if isinstance(data, memoryview):
        view = data.cast("B")
        for i in range(0, len(view), _READ_BLOCK):
            yield view[i: i + _READ_BLOCK]
        return
    if isinstance(data, str):
        # Python str slices never split a code point, so slices encode independently.
        text = _TextEncoder()
        for i in range(0, len(data), _READ_BLOCK):
            yield from text.encode(data[i: i + _READ_BLOCK])
        return
    if hasattr(data, "__arrow_c_stream__"):   # a pyarrow Table, a pandas or Polars frame
        from .arrow import _row_stream         # (pip install dtproto[arrow]), a slice at a time
        for item in _row_stream(data):         # line n is row n - 1, then the metadata
            yield _Blanked(item) if isinstance(item, str) else item
        return
    if isinstance(data, (Metric, Metadata)):
        data = (data,)
    elif _is_encoder(data):
        yield data.getvalue()
        return
    if isinstance(data, os.PathLike):  # the file it names (gzip by its magic)
        with _input.open_path(data) as f:
            yield from _blocks(f)
        return
    if getattr(data, "read", None) is not None:
        # read_blocks waits for a non-blocking stream's None: not the end of input.
        text = _TextEncoder()
        for block in _input.read_blocks(data, _READ_BLOCK):
            if isinstance(block, str):    # a text file: encode as UTF-8
                yield from text.encode(block)
            else:
                yield block
        return
    yield from _items(data)


def _items(items: Iterable[Any]) -> Iterator[Any]:
    """An iterable of lines (``str``), byte chunks (bytes-like) and records."""
    from ._impl import codec

    encode = codec.encode
    parts: List[bytes] = []
    size = 0
    records: List[Any] = []
    at_line_start = True

    def encode_records() -> Iterator[Any]:
        # One encode() per batch; a record that cannot be encoded becomes a
        # client-side rejection at its own line number (an empty line of its
        # request: _Blanked), the rest still go.
        batch = records[:]
        records.clear()
        while batch:
            try:
                yield encode(batch)
                return
            except DtprotoError as exc:   # EncodeError names the failing record
                k = getattr(exc, "record", None)
                if not isinstance(k, int) or not 0 <= k < len(batch):
                    k = 0
                    try:
                        yield encode(batch[:1])
                        batch = batch[1:]
                        continue
                    except DtprotoError as exc1:
                        exc = exc1
                if k:
                    yield encode(batch[:k])
                yield _Blanked("cannot encode record: %s" % (exc,))
                batch = batch[k + 1:]
            except (TypeError, ValueError) as exc:
                k = 0
                if len(batch) > 1:   # find the culprit one by one
                    for k, rec in enumerate(batch):
                        try:
                            encode([rec])
                        except Exception:
                            break
                if k:
                    yield encode(batch[:k])
                yield _Blanked("cannot encode record: %s: %s" % (type(exc).__name__, exc))
                batch = batch[k + 1:]

    for item in items:
        if item is _STARVE:
            if records:
                yield from encode_records()
            if parts:
                yield b"".join(parts)
                parts.clear()
                size = 0
            yield item
            continue
        if isinstance(item, (Metric, Metadata)):
            if parts:
                yield b"".join(parts)
                parts.clear()
                size = 0
            if not at_line_start:
                yield b"\n"
                at_line_start = True
            records.append(item)
            if len(records) >= _RECORD_BATCH:
                yield from encode_records()
            continue
        if records:
            yield from encode_records()
        if isinstance(item, str):
            # A str item is one line (or several, if it contains newlines);
            # a subclass is its text (its encode() is not asked).
            item = _input._plain_block(item)
            try:
                b = item.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                # A line that cannot be UTF-8: rejected at its own position.
                if parts:
                    yield b"".join(parts)
                    parts.clear()
                    size = 0
                if not at_line_start:
                    yield b"\n"
                yield from _TextEncoder().encode(item if item.endswith("\n") else item + "\n")
                at_line_start = True
                continue
            if not at_line_start:
                b = b"\n" + b
            if not b.endswith(b"\n"):
                b += b"\n"
            at_line_start = True
        elif isinstance(item, (bytes, bytearray, memoryview)):
            # Bytes items are pieces of a byte stream (like file reads): they
            # are concatenated as they are.
            b = bytes(_input._plain_block(item))  # a subclass's __bytes__ is not asked
            if not b:
                continue
            at_line_start = b.endswith(b"\n")
        else:
            raise TypeError(
                "cannot send %s items: expected str lines, bytes chunks, Metric or Metadata"
                % type(item).__name__
            )
        parts.append(b)
        size += len(b)
        if size >= _JOIN_BYTES:
            yield b"".join(parts)
            parts.clear()
            size = 0
    if records:
        yield from encode_records()
    if parts:
        yield b"".join(parts)


# --------------------------------------------------------------------------- URLs


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback address.

    Names under ``.localhost`` are not: RFC 6761 reserves them for loopback,
    but the connection resolves them through the system's resolver, and
    where that asks DNS, ``x.localhost`` can name any host.  Counting it
    would send the token there over plain HTTP, past the proxy."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


AUTH_PREFIX = TOKEN_SCHEME + " "
"""What the ``Authorization`` header value starts with, before the token."""


def _safe_url(parts: urllib.parse.SplitResult) -> str:
    """The URL without credentials, query or fragment: safe for messages."""
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    netloc = host if parts.port is None else "%s:%d" % (host, parts.port)
    return "%s://%s%s" % (parts.scheme, netloc, parts.path)


def ingest_url(base_url: str) -> str:
    """Complete a base URL with the ingest path, if it has none.

    ``https://abc123.live.dynatrace.com`` becomes
    ``https://abc123.live.dynatrace.com/api/v2/metrics/ingest``;
    ``https://host/e/env`` becomes ``https://host/e/env/api/v2/metrics/ingest``;
    a URL that already ends with an ingest path is returned unchanged.
    """
    url = base_url.rstrip("/")
    path = urllib.parse.urlsplit(url).path
    if path.endswith(INGEST_PATH) or path == ONEAGENT_PATH:
        return url
    if path.endswith(_API_ROOT):
        return url + ONEAGENT_PATH
    return url + INGEST_PATH


def _connect_target(host: str, port: int, proxy: Optional["_Proxy"]) -> str:
    """Where a connection goes, for messages: ``host:port``, and the proxy it
    goes through (a refusal or an unknown name is then the proxy's)."""
    where = "%s:%d" % (host, port)
    return where if proxy is None else where + " through the proxy %s" % _safe_proxy(proxy)


def _connect_failure(where: str, exc: BaseException, refused: bool, proxy: bool) -> str:
    """The reason of a connection that could not be made (both transports)."""
    if refused:
        check = ("check the proxy (proxy=, or the proxy environment variables)" if proxy
                 else "check the URL, the port and that the endpoint is running")
        return ("cannot connect to %s: connection refused (nothing accepts connections "
                "there: %s); nothing was sent" % (where, check))
    return "cannot connect to %s: %s: %s" % (where, type(exc).__name__, exc)


def _safe_proxy(p: Any) -> str:
    """A proxy URL without its credentials."""
    host = p.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    try:
        port = p.port
    except ValueError:
        port = None
    return "%s://%s%s" % (p.scheme, host, "" if port is None else ":%d" % port)


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())



# --------------------------------------------------------------------------- sender

class _Attempt(Exception):
    """One failed attempt that produced no usable HTTP answer."""

    def __init__(self, message: str, ambiguous: bool, cause: Optional[BaseException] = None,
                 final: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.ambiguous = ambiguous
        #: The network error behind it, chained to the SendError in the end.
        self.cause = cause
        #: Not worth retrying (a refused connection: nothing listens there).
        self.final = final


# A JSON string escape: a surrogate pair, any other \uXXXX, or a short one.
_JSON_ESCAPE = re.compile(
    rb"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|\\u([0-9a-fA-F]{4})|\\([\"\\/bfnrt])")
_SHORT_UNESCAPED = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f",
                    b"n": b"\n", b"r": b"\r", b"t": b"\t"}


def _replace_json_spellings(data: bytes, token: bytes) -> bytes:
    """``data`` with ``token`` (UTF-8) replaced by ``<token>`` wherever it is
    written, as itself or inside a JSON string with any of its characters
    escaped (``\\uXXXX`` in either case, a surrogate pair, ``\\"``, ``\\/``...).

    The escapes are decoded into a copy that remembers where each escape
    came from; the token is found in the copy and replaced in ``data``.
    Linear in ``data`` (three integers an escape), and the token goes into
    no pattern (``re`` would keep a pattern holding it in its cache)."""
    data = data.replace(token, b"<token>")
    if b"\\" not in data:
        return data
    plain = bytearray()
    # for each escape: where its text starts in plain, and its span in data
    e_plain, e_start, e_end = array.array("q"), array.array("q"), array.array("q")
    e_len = bytearray()            # its text's length in plain (1..4 bytes)
    at = 0
    for m in _JSON_ESCAPE.finditer(data):
        plain += data[at:m.start()]
        hi, lo, unit, short = m.groups()
        if short is not None:
            text = _SHORT_UNESCAPED[short]
        else:
            code = (0x10000 + ((int(hi, 16) - 0xD800) << 10) + (int(lo, 16) - 0xDC00)
                    if hi is not None else int(unit, 16))
            text = chr(code).encode("utf-8", "surrogatepass")
        e_plain.append(len(plain))
        e_start.append(m.start())
        e_end.append(m.end())
        e_len.append(len(text))
        plain += text
        at = m.end()
    plain += data[at:]

    def where(p: int, after: bool) -> int:
        """Where byte ``p`` of plain lies in data: where it starts, or (after)
        where it ends; a byte of an escape's text is the whole escape."""
        k = bisect.bisect_right(e_plain, p) - 1
        if k < 0:
            return p + after
        off = p - e_plain[k]
        if off < e_len[k]:
            return e_end[k] if after else e_start[k]
        return e_end[k] + off - e_len[k] + after

    out = []
    at = 0
    i = plain.find(token)
    while i >= 0:
        begin = where(i, False)
        out.append(data[at:begin])
        out.append(b"<token>")
        at = where(i + len(token) - 1, True)
        i = plain.find(token, i + len(token))
    if not out:
        return data
    out.append(data[at:])
    return b"".join(out)


class _Secret:
    """Holds the API token out of sight: no ``__dict__`` (``vars()`` fails),
    a ``repr`` without it, and no pickling.  The value lives only in the
    closure of :meth:`reveal`'s function, which the request code calls."""

    __slots__ = ("_reveal",)

    def __init__(self, value: Optional[str]) -> None:
        def reveal() -> Optional[str]:
            return value

        self._reveal = reveal

    def reveal(self) -> Optional[str]:
        return self._reveal()

    def __bool__(self) -> bool:
        return self._reveal() is not None

    def masked(self, data: bytes) -> bytes:
        """``data`` (a server's answer) with the token, wherever it appears,
        replaced by ``<token>``: an endpoint or proxy that echoes the request's
        Authorization header in its error text would otherwise put the token
        into reasons, exceptions and the CLI's output.  Only for what is
        shown: the answer is parsed as it came (a token such as ``1000`` or
        ``null`` is also JSON).  Tokens shorter than 4 characters are left:
        masking them would garble any text."""
        value = self._reveal()
        if not value or len(value) < 4:
            return data
        # As it is, and as the raw answer may hold it inside a JSON string, where any
        # character can be spelled as an escape: '"' and '\\' always are,
        # '/' is by some servers, '<', '>' and '&' are by Go's encoder
        # (\u003c), and a server may escape anything else.
        return _replace_json_spellings(data, value.encode("utf-8", "surrogateescape"))

    def masked_text(self, text: str) -> str:
        """:meth:`masked` for a text taken from a parsed answer.  A token that
        is also a JSON number (``1e10``) may come back as that number, written
        another way (``10000000000.0``): that text is ``<token>`` too."""
        value = self._reveal()
        if not value or len(value) < 4:
            return text
        try:
            if float(text) == float(json.loads(value)):
                return "<token>"
        except (ValueError, TypeError, OverflowError):  # not both numbers
            pass
        return text.replace(value, "<token>")

    def __repr__(self) -> str:
        return "<token set>" if self else "<no token>"

    def __reduce__(self) -> Any:
        raise TypeError("the API token cannot be pickled or copied (it would be written out)")


def _version() -> str:
    try:
        from . import __version__
        return str(__version__)
    except Exception:  # during partial imports
        return "0"


def _host_name(host: str, what: str) -> str:
    """``host`` checked as the host part of a URL the helpers build (``domain``,
    ``host``): a URL, a path or credentials there would make another URL
    (``https://https//m.example.com/e/...``) instead of an error."""
    if not isinstance(host, str) or not host or any(
            c in host for c in "/?#@\\") or not host.isprintable() or " " in host:
        shown = host[:100] if isinstance(host, str) else type(host).__name__
        hint = "" if not isinstance(host, str) or "://" not in host else \
            "; pass the host name alone (such as 'm.example.com'), or use Sender(url, " \
            "token, ...) for a full URL"
        raise ConfigurationError("%s %r is not a host name%s" % (what, shown, hint))
    return host


def _env_id(environment_id: str) -> str:
    if isinstance(environment_id, str) and ("://" in environment_id or "." in environment_id):
        raise ConfigurationError(
            "%r is a URL or host name, not an environment ID (such as 'abc12345'); for a "
            "full URL use Sender(url, token, ...) instead (ingest_url() adds the API path)"
            % (environment_id[:100],))
    if (not isinstance(environment_id, str) or not environment_id
            or not all(c.isalnum() or c in "-_" for c in environment_id)):
        raise ConfigurationError("invalid environment id %r" % (str(environment_id)[:64],))
    return environment_id


def env_settings(environ: Optional[Dict[str, str]] = None) -> Tuple[Optional[str], Optional[str]]:
    """The ingest URL and API token from the environment: ``(url, token)``.

    ``DT_URL`` (:data:`URL_ENV`) is the ingest URL or an environment base URL
    (completed by :func:`ingest_url`); ``DT_API_TOKEN`` (:data:`TOKEN_ENV`)
    the token.  Surrounding whitespace is ignored; an empty variable counts as
    unset (``None``).  :meth:`Sender.from_env` and ``dtproto send`` both read
    them through this function.
    """
    env = os.environ if environ is None else environ
    url = (env.get(URL_ENV) or "").strip() or None
    token = (env.get(TOKEN_ENV) or "").strip() or None
    return (ingest_url(url) if url else None), token


def _is_count(value: Any) -> bool:
    """A JSON integer >= 0 (``bool`` is an ``int`` in Python, but not a count)."""
    return type(value) is int and value >= 0


def _text_field(value: Any, shown: Callable[[str], str] = str) -> str:
    # Only scalars: str() of a deeply nested list would recurse without bound.
    # ``shown`` runs before the cut, so no part of a token is left at its end.
    if isinstance(value, str):
        return shown(value)[:1000]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return shown(str(value))  # a token such as 123456789 comes back as a number
    return ""


def _brief(body: bytes) -> str:
    if not body:
        return ""
    text = body[:300].decode("utf-8", "replace").strip()
    return ": " + text if text else ""


# The reasons that quote a server's answer (_brief): "HTTP 503: <its body>",
# "HTTP 502 without a ValidationResponse: <its body>", "HTTP 200 with an
# unusable response (...): <its body>".  Kept here, beside the formats, so
# that a reader that must not rewrite the server's words (the CLI) can tell.
# A redirect is never followed (the Authorization header stays with its
# host): "HTTP 307 (a redirect, ...): <its body>".
_REDIRECT_NOTE = " (a redirect, not followed: give the final ingest URL)"
_QUOTES_SERVER = re.compile(r"HTTP \d+(?:%s)?(?:: | without a ValidationResponse: "
                            r"| with an unusable response \()" % re.escape(_REDIRECT_NOTE))


def _quotes_server(reason: str) -> bool:
    """Whether ``reason`` (an undelivered range's) quotes the server's answer."""
    return _QUOTES_SERVER.match(reason) is not None



# --------------------------------------------------------------------------- configuration

DEFAULT_CONCURRENCY = 4
"""Default number of requests in flight (see ``concurrency``; ``dtproto send`` too)."""
MAX_CONCURRENCY = 256
"""Upper bound of ``concurrency``: each request in flight holds a connection and a chunk."""


def _configure(
    s: Any,
    url: str,
    token: Optional[str],
    *,
    max_bytes: int = MAX_BODY_BYTES,
    max_lines: Optional[int] = None,
    gzip: bool = False,
    gzip_level: int = 6,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    retries: int = 3,
    backoff_base: float = 1.0,
    backoff_cap: float = 30.0,
    retry_budget: float = 120.0,
    retry_ambiguous: bool = False,
    verify: Union[bool, str] = True,
    ssl_context: Optional[ssl.SSLContext] = None,
    proxy: Union[bool, str] = True,
    user_agent: Optional[str] = None,
    flush_bytes: Optional[int] = None,
    flush_lines: Optional[int] = None,
    flush_interval: Optional[float] = 1.0,
    allow_insecure: bool = False,
    check_url: bool = True,
    on_flush: Optional[Callable[["SendResult"], None]] = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    validate: bool = False,
    now_ms: Optional[int] = None,
    on_request: Optional[Callable[["RequestInfo", int], None]] = None,
) -> None:
    """Check the options of a sender and set them on ``s`` (both senders take the same)."""
    if not isinstance(url, str):
        raise ConfigurationError("url must be a str")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.hostname   # noqa: B018  (a bracket without its pair raises only here, or above)
    except ValueError as exc:   # "Invalid IPv6 URL": urllib's own words, with what to fix
        raise ConfigurationError(
            "url is not a valid URL (%s); an IPv6 address goes in brackets, e.g. "
            "https://[::1]:9999%s" % (exc, INGEST_PATH)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "url must be an http:// or https:// URL with a host, e.g. "
            "https://{environment-id}.live.dynatrace.com%s" % INGEST_PATH
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            "credentials in the URL are not supported; pass the API token as token=")
    if not _has_valid_port(parts):
        raise ConfigurationError("url has an invalid port: %s (or none, for the scheme's "
                                 "default)" % _PORT_RULE)
    path = parts.path.rstrip("/") or "/"
    s._oneagent = path == ONEAGENT_PATH
    s.url = _safe_url(parts._replace(path=path))
    if check_url and not (path.endswith(INGEST_PATH) or s._oneagent):
        raise ConfigurationError(
            "%s is not a metric ingest URL: the path must end with %s (SaaS, "
            "Managed, ActiveGate) or be %s (OneAgent). Did you mean %s ?"
            % (s.url, INGEST_PATH, ONEAGENT_PATH, ingest_url(s.url))
        )
    host = (parts.hostname or "").lower().rstrip(".")
    if check_url and host.endswith(".apps.dynatrace.com"):
        raise ConfigurationError(
            "%s is the Dynatrace web UI, not the API: the metric ingest API of a SaaS "
            "environment lives on {environment-id}.live.dynatrace.com, e.g. %s"
            % (host, ingest_url("https://%s.live.dynatrace.com" % host.split(".")[0])))
    s._host = parts.hostname or ""
    s._https = parts.scheme == "https"
    s._port = parts.port or (443 if s._https else 80)
    s._path = path + ("?" + parts.query if parts.query else "")

    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ConfigurationError("token must be a non-empty str (token not shown)")
        token = token.strip()
        # Checked here because an HTTP library would otherwise raise an error
        # that quotes the whole header value, token included.
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0x7E for c in token):
            raise ConfigurationError(
                "token contains whitespace, control or non-ASCII characters (token not shown)")
        if s._oneagent:
            raise ConfigurationError(
                "the OneAgent local endpoint (%s) takes no API token; pass token=None "
                "(a token sent there is exposed to every local process for nothing)" % s.url)
        if not s._https and not _is_loopback(s._host):
            if not allow_insecure:
                raise ConfigurationError(
                    "refusing to send the API token over plain HTTP to %s; use https:// "
                    "or pass allow_insecure=True" % s._host)
            log.warning("sending the API token over plain HTTP to %s (allow_insecure=True)",
                        s._host)
    elif not s._oneagent:
        log.warning("no API token given for %s; the server will answer 401 unless a "
                    "proxy adds one", s.url)
    # Never an attribute holding the text: vars(), repr, pickle and
    # exception messages cannot show it (see _Secret).
    s._token = _Secret(token)

    if max_bytes < 2:
        raise ConfigurationError("max_bytes must be at least 2")
    if max_lines is not None and max_lines < 1:
        raise ConfigurationError("max_lines must be positive or None")
    if s._oneagent:
        max_lines = min(max_lines or ONEAGENT_MAX_LINES, ONEAGENT_MAX_LINES)
    if (isinstance(concurrency, bool) or not isinstance(concurrency, int)
            or not 1 <= concurrency <= MAX_CONCURRENCY):
        raise ConfigurationError("concurrency must be an int within 1..%d" % MAX_CONCURRENCY)
    if now_ms is not None and (isinstance(now_ms, bool) or not isinstance(now_ms, int)):
        raise ConfigurationError("now_ms must be an int (milliseconds since the epoch) or None")
    s.max_bytes = int(max_bytes)
    s.max_lines = max_lines
    s.gzip = bool(gzip)
    s.gzip_level = int(gzip_level)
    s.connect_timeout = float(connect_timeout)
    s.read_timeout = float(read_timeout)
    if connect_timeout <= 0 or read_timeout <= 0:
        raise ConfigurationError("timeouts must be positive (they are always set)")
    s.retries = int(retries)
    s.backoff_base = float(backoff_base)
    s.backoff_cap = float(backoff_cap)
    s.retry_budget = float(retry_budget)
    s.retry_ambiguous = bool(retry_ambiguous)
    s.concurrency = concurrency
    s.validate = bool(validate)
    s.now_ms = now_ms
    s.user_agent = user_agent or "dtproto/%s Python/%d.%d" % (
        _version(), sys.version_info[0], sys.version_info[1])
    s.flush_bytes = int(flush_bytes) if flush_bytes else s.max_bytes
    s.flush_lines = flush_lines if flush_lines is not None else s.max_lines
    if flush_interval is not None and not flush_interval > 0:
        raise ConfigurationError("flush_interval must be a positive number of seconds or None")
    s.flush_interval = flush_interval
    s.on_flush = on_flush
    if on_request is not None and not callable(on_request):
        raise ConfigurationError("on_request must be callable or None")
    s.on_request = on_request

    if ssl_context is not None:
        s._ssl = ssl_context
    elif verify is False:
        log.warning("TLS certificate verification is disabled (verify=False)")
        s._ssl = ssl._create_unverified_context()
    elif isinstance(verify, str):
        s._ssl = ssl.create_default_context(cafile=verify)
    else:
        s._ssl = ssl.create_default_context()
    s._proxy = _find_proxy(s._host, s._https, proxy)


_PORT_RULE = "a port is a number within 1..65535"


def _has_valid_port(parts: urllib.parse.SplitResult) -> bool:
    """Whether a URL names no port or one that can be connected to.

    urllib takes port 0, which no server listens on, and a connection given
    port 0 would go to the scheme's default port instead: refused, as a port
    that is not a number or is above 65535 (urllib's ValueError) is.
    """
    try:
        return parts.port != 0
    except ValueError:
        return False


class _Proxy:
    """The proxy a sender connects through: scheme, host and port in sight,
    its credentials (the ``Proxy-Authorization`` header they make) held as
    the token is (:class:`_Secret`), so that ``vars(sender)``, a ``repr`` or
    a pickle never shows them (a red-team pass found the parsed URL, with
    its password, in ``vars(sender)['_proxy']``)."""

    __slots__ = ("scheme", "hostname", "port", "_auth")

    def __init__(self, p: urllib.parse.SplitResult) -> None:
        import base64

        self.scheme = p.scheme
        self.hostname = p.hostname
        self.port = p.port
        header = None
        if p.username:
            cred = "%s:%s" % (urllib.parse.unquote(p.username),
                              urllib.parse.unquote(p.password or ""))
            header = "Basic " + base64.b64encode(cred.encode()).decode()
        self._auth = _Secret(header)

    def __repr__(self) -> str:
        return "<proxy %s%s>" % (_safe_proxy(self), " with credentials" if self._auth else "")

    def __reduce__(self) -> Any:
        raise TypeError("a proxy with its credentials cannot be pickled or copied")


def _find_proxy(host: str, https: bool, proxy: Union[bool, str]) -> Optional[_Proxy]:
    """The proxy to connect to ``host`` through (None: directly).

    A proxy URL that cannot be used is a :class:`ConfigurationError` here,
    before anything is sent: one given as ``proxy=`` always (even when the
    destination is loopback, which never uses it), one from the environment
    when it would be used.
    """
    if proxy is False:
        return None
    if proxy is True:
        if _is_loopback(host):
            return None
        scheme = "https" if https else "http"
        found = urllib.request.getproxies().get(scheme)
        if not found or urllib.request.proxy_bypass(host):
            return None
        return _Proxy(_proxy_url(found, _proxy_variable(scheme, found)))
    p = _proxy_url(proxy, "proxy=")
    return None if _is_loopback(host) else _Proxy(p)


def _proxy_variable(scheme: str, found: str) -> str:
    """Where ``urllib.request.getproxies()`` found the proxy ``found`` of
    ``scheme``, for messages: the environment variable (urllib prefers the
    lowercase one), else the system's settings (macOS, Windows)."""
    wanted = scheme + "_proxy"
    # urllib reads the variable in any case (Https_Proxy too), the
    # lowercase one first
    names = sorted((n for n in os.environ if n.lower() == wanted), key=lambda n: n != wanted)
    for name in names:
        if os.environ.get(name) == found:
            return name
    return "the system's proxy settings"


def _proxy_url(proxy: str, origin: str) -> urllib.parse.SplitResult:
    """The proxy URL ``proxy`` parsed and checked; a ConfigurationError says
    what is wrong and ``origin`` (``proxy=`` or where it was found), and at
    most the scheme, host and port of the URL (:func:`_safe_proxy`), never
    the URL itself: it may hold credentials."""
    def invalid(why: str) -> ConfigurationError:
        return ConfigurationError("invalid proxy URL in %s (not shown, it may hold "
                                  "credentials): %s" % (origin, why))

    try:
        p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    except ValueError:      # ('http://[::1'); urllib's message may quote the credentials
        raise invalid("it cannot be parsed as a URL") from None
    if not p.hostname:
        raise invalid("it names no host")
    if p.scheme.lower() != "http":
        # The request to the proxy is plain text: with an https:// proxy the
        # CONNECT request and its Proxy-Authorization credentials would cross
        # the link the user expects to be encrypted.  Refuse it.
        raise ConfigurationError(
            "unsupported proxy scheme %r in %s (proxy %s): only http:// proxies are supported "
            "(the request to the proxy, with its credentials, is not encrypted; the "
            "connection to the ingest endpoint is TLS through the proxy's tunnel). Use an "
            "http:// proxy URL, or proxy=False" % (p.scheme, origin, _safe_proxy(p)))
    if not _has_valid_port(p):
        raise invalid("its port is not valid: %s" % _PORT_RULE)
    return p


def _proxy_address(p: _Proxy) -> Tuple[str, int]:
    """The host and port to connect to for the proxy ``p`` (checked by
    :func:`_proxy_url`: an http:// URL, port 80 unless it names one)."""
    return p.hostname or "", p.port or 80


def _proxy_headers(p: Optional[_Proxy]) -> Dict[str, str]:
    header = None if p is None else p._auth.reveal()
    return {} if header is None else {"Proxy-Authorization": header}


def _sender_repr(s: Any) -> str:
    # The token is deliberately absent: only whether one is set.
    return "%s(%r, token=%s, max_bytes=%d, max_lines=%r, gzip=%r, concurrency=%d)" % (
        type(s).__name__, s.url, "<set>" if s._token else None, s.max_bytes, s.max_lines,
        s.gzip, s.concurrency)


# --------------------------------------------------------------------------- responses


class _Verdict:
    """A usable ValidationResponse, fitted to the chunk it answers."""

    __slots__ = ("ok", "bad", "listed", "warned")

    def __init__(self, ok: int, bad: int, listed: Dict[int, str],
                 warned: List[Tuple[int, str]]) -> None:
        self.ok = ok
        self.bad = bad
        self.listed = listed    # chunk line (1-based) -> reason
        self.warned = warned    # (chunk line, message)


def _parse_response(chunk: "_Chunk", index: int, status: int, body: bytes,
                    shown: Callable[[str], str] = str) -> Optional[_Verdict]:
    """The 2xx/400 answer ``body`` as a :class:`_Verdict`, or None when it is
    not a usable ValidationResponse; ``shown`` makes each text of it fit to
    show (masks the token).

    The answer is not trusted: line numbers outside the chunk are ignored,
    counts are clamped to the chunk's lines (a warning is logged for both),
    so no reported line lies outside the input and no count exceeds it.
    """
    try:
        doc = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    n = chunk.lines
    ok = doc.get("linesOk", doc.get("linesValid"))
    if not _is_count(ok):
        if status != 400 or ok is not None:
            return None   # a 2xx must say how many lines it accepted
        ok = 0
    bad = doc.get("linesInvalid", 0)
    if not _is_count(bad):
        bad = 0
    anomalies = 0
    listed: Dict[int, str] = {}
    err = doc.get("error")
    if isinstance(err, dict):
        items = err.get("invalidLines")
        for item in items if isinstance(items, list) else ():
            k = item.get("line") if isinstance(item, dict) else None
            if not (_is_count(k) and 1 <= k <= n):
                anomalies += 1
                continue
            if k not in listed:
                listed[k] = _text_field(item.get("error"), shown)
        if status == 400 and not listed and ok == 0 and bad == 0:
            # "empty request" for a non-blank chunk, or a 400 we do not understand.
            if err.get("message") != RESPONSE_EMPTY_REQUEST:
                return None
    elif status == 400:
        return None
    warned: List[Tuple[int, str]] = []
    warn = doc.get("warnings")
    if isinstance(warn, dict):
        items = warn.get(RESPONSE_WARNINGS_KEY)
        if items is None:
            items = warn.get(RESPONSE_WARNINGS_KEY_SEEN)   # what real responses use ([A-18])
        for item in items if isinstance(items, list) else ():
            k = item.get("line") if isinstance(item, dict) else None
            if not (_is_count(k) and 1 <= k <= n):
                anomalies += 1
                continue
            warned.append((k, _text_field(item.get("warning"), shown)))
    # Trust the count over the list, but never report fewer than listed,
    # nor more lines than the chunk has.
    bad = max(bad, len(listed))
    if bad > n or ok > n - min(bad, n):
        anomalies += 1
        bad = min(bad, n)
        ok = min(ok, n - bad)
    if anomalies:
        log.warning("request %d (lines %d..%d): the server's answer does not fit the "
                    "%d-line request (linesOk, linesInvalid or line numbers out of "
                    "range); %d impossible entries ignored or clamped", index + 1,
                    chunk.first_line, chunk.first_line + n - 1, n, anomalies)
    return _Verdict(ok, bad, listed, warned)


def _failure(s: Any, chunk: "_Chunk", status: Optional[int], body: bytes, reason: str,
             ambiguous: bool, cause: Optional[BaseException]) -> SendError:
    """The :class:`SendError` for a chunk that failed for good (not raised here)."""
    lines = "lines %d..%d" % (chunk.first_line, chunk.first_line + chunk.lines - 1)
    text = body.decode("utf-8", "replace")
    cls: type = DeliveryError
    if status == 401:
        cls = AuthenticationError
        msg = ("401 Unauthorized from %s: the API token is missing, unknown, expired or "
               "revoked; create a token with the '%s' scope and pass it as "
               "token=" % (s.url, INGEST_SCOPE))
    elif status == 403:
        cls = MissingScopeError
        msg = ("403 Forbidden from %s: the token lacks the '%s' scope "
               "(\"Ingest metrics\"); add that scope to the token" % (s.url, INGEST_SCOPE))
    elif status in (404, 405):
        cls = EndpointNotFoundError
        msg = ("%d from %s: wrong URL. Check the path (%s, or %s for OneAgent) and the "
               "environment ID; for the OneAgent local API, enable the Extension "
               "Execution Controller and the local HTTP Metric API"
               % (status, s.url, INGEST_PATH, ONEAGENT_PATH))
    elif status == 413:
        cls = PayloadTooLargeError
        msg = ("413 Payload Too Large from %s for a %d-byte body: the server's limit is "
               "below max_bytes=%d; lower max_bytes" % (s.url, len(chunk.body), s.max_bytes))
    else:
        msg = "%s not delivered: %s" % (lines, reason)
    if cls is not DeliveryError:
        msg = "%s (%s not delivered)" % (msg, lines)
    err = cls(msg, status, text, None, ambiguous)
    # (401/403/404/405/413: the explanation, not the bare status)
    err.reason = reason if cls is DeliveryError and reason else msg   # type: ignore[attr-defined]
    if cause is not None:
        err.__cause__ = cause
        err.__suppress_context__ = True
    return err


# --------------------------------------------------------------------------- policy


class _Window:
    """How many chunks may be in flight: AIMD between 1 and ``limit``.

    Throttling is per environment on the server (docs/protocol.md §10.2), so
    more requests after a 429 make things worse: a 429 halves the window (at
    least 1), each accepted request grows it back by one, up to ``limit``.
    """

    __slots__ = ("limit", "size", "throttles")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = limit
        self.throttles = 0

    def throttled(self) -> None:
        self.throttles += 1
        self.size = max(1, self.size // 2)

    def success(self) -> None:
        if self.size < self.limit:
            self.size += 1


class _Outcome:
    """What became of one chunk: a verdict, or the error that stopped it."""

    __slots__ = ("verdict", "error", "undelivered")

    def __init__(self, verdict: Optional[_Verdict], error: Optional[SendError],
                 undelivered: Optional[Undelivered]) -> None:
        self.verdict = verdict
        self.error = error
        self.undelivered = undelivered


class _Delivery:
    """The retry policy of one chunk, without I/O.

    The transport loop asks for :attr:`payload`, makes an attempt, and hands
    the answer to :meth:`on_response` or the failure to :meth:`on_failure`
    (or :meth:`on_fatal`): a number back means "sleep that long, then try
    again", ``None`` means done, and :attr:`outcome` says how.
    """

    def __init__(self, s: Any, chunk: "_Chunk", info: RequestInfo, window: _Window,
                 rng: random.Random, now: float, client_bad: int = 0) -> None:
        self.s = s
        self.chunk = chunk
        self.info = info
        self.window = window
        self.rng = rng
        self.start = now
        self.attempt = 0
        self.client_bad = client_bad       # lines of the chunk the client rejected (blanked)
        self.client_invalid: List[InvalidLine] = []
        payload = chunk.body
        if s.gzip:
            payload = _gzip.compress(payload, compresslevel=s.gzip_level, mtime=0)
        self.payload = payload
        info.wire_bytes = len(payload)
        self.outcome: Optional[_Outcome] = None
        self._status: Optional[int] = None
        self._body: Optional[bytes] = b""
        self._reason = ""
        self._ambiguous = False
        self._cause: Optional[BaseException] = None

    def begin(self) -> None:
        """An attempt starts."""
        self.info.attempts += 1

    def on_response(self, status: int, headers: Dict[str, str], body: Optional[bytes],
                    now: float) -> Optional[float]:
        """An HTTP answer (``headers`` with lowercase names; ``body`` None when
        it was over ``MAX_RESPONSE_BYTES``)."""
        self.info.history.append(status)
        self._status, self._body, self._ambiguous, self._cause = status, body, False, None
        if status not in RETRY_STATUSES:
            if 200 <= status < 300 or status == 400:
                self.window.success()
            else:
                # Not retried, and not a ValidationResponse: the status and
                # the server's words are the reason.
                self._reason = "HTTP %d%s%s" % (
                    status, _REDIRECT_NOTE if 300 <= status < 400 else "", self._brief(body))
            self._finish(now)
            return
        if status == 429:
            self.window.throttled()
        self._reason = "HTTP %d%s" % (status, self._brief(body))
        return self._next(now, _parse_retry_after(headers.get("retry-after")))

    def _brief(self, body: Optional[bytes]) -> str:
        """The start of an answer for a reason, the token masked (before it is cut)."""
        return _brief(self.s._token.masked(body or b""))

    def on_failure(self, exc: "_Attempt", now: float) -> Optional[float]:
        """An attempt that got no usable HTTP answer."""
        self.info.history.append(exc.message)
        self._status, self._body, self._reason = None, b"", exc.message
        self._ambiguous, self._cause = exc.ambiguous, exc.cause
        if exc.ambiguous and not self.s.retry_ambiguous:
            self._reason += ("; not retried because the server may have stored the lines "
                             "(retry_ambiguous=False)")
            self._finish(now)
            return
        if exc.final:
            self._finish(now)
            return
        return self._next(now, None)

    def on_fatal(self, exc: SendError, now: float) -> None:
        """A failure no retry can mend (TLS verification): the chunk stops here."""
        self.info.latency = now - self.start
        self.outcome = _Outcome(None, exc, self._range(str(exc), None, False))

    def on_interrupt(self, exc: BaseException, now: float) -> None:
        """The send stopped (``exc``) while this chunk was in flight: not
        delivered, and ambiguous once a request was begun (the server may
        have stored the lines, so they are not sent again)."""
        self.info.latency = now - self.start
        ambiguous = self.info.attempts > 0
        reason = "the send was interrupted (%s)%s" % (
            type(exc).__name__, " while its request was in flight: the server may have "
            "stored the lines" if ambiguous else "")
        err = _failure(self.s, self.chunk, None, b"", reason, ambiguous, None)
        self.outcome = _Outcome(None, err, self._range(reason, None, ambiguous))

    def _next(self, now: float, retry_after: Optional[float]) -> Optional[float]:
        s = self.s
        if self.attempt >= s.retries:
            self._reason += " (gave up after %d attempt%s)" % (
                self.info.attempts, "" if self.info.attempts == 1 else "s")
            self._finish(now)
            return
        if retry_after is not None:
            delay = min(retry_after, s.backoff_cap)
        else:
            delay = self.rng.uniform(0, min(s.backoff_cap, s.backoff_base * 2 ** self.attempt))
        if now - self.start + delay > s.retry_budget:
            self._reason += " (retry budget of %gs exhausted after %d attempt%s)" % (
                s.retry_budget, self.info.attempts, "" if self.info.attempts == 1 else "s")
            self._finish(now)
            return
        # A failed connection is said at once (not only in the final error),
        # so that waiting for the retries is never silent.
        chunk = self.chunk
        log.log(logging.WARNING if self._status is None else logging.DEBUG,
                "request %d (lines %d..%d): %s; retry %d of %d in %.3fs", self.info.index + 1,
                chunk.first_line, chunk.first_line + chunk.lines - 1, self.info.history[-1],
                self.attempt + 1, s.retries, delay)
        self.attempt += 1
        return delay

    def _range(self, reason: str, status: Optional[int], ambiguous: bool) -> Undelivered:
        c = self.chunk
        return Undelivered(c.first_line, c.first_line + c.lines - 1, c.lines - self.client_bad,
                           reason, status, ambiguous)

    def _finish(self, now: float) -> None:
        info = self.info
        info.latency = now - self.start
        status, body, reason = self._status, self._body, self._reason
        info.status = status
        ambiguous = self._ambiguous
        if status is not None and (200 <= status < 300 or status == 400):
            if body is None:
                reason = ("HTTP %d with a response body over %d bytes: not a ValidationResponse "
                          "(protocol error)" % (status, MAX_RESPONSE_BYTES))
            else:
                try:
                    verdict = _parse_response(self.chunk, info.index, status, body,
                                              self.s._token.masked_text)
                    if verdict is not None:
                        info.lines_ok, info.lines_invalid = verdict.ok, verdict.bad
                        self.outcome = _Outcome(verdict, None, None)
                        return None
                    reason = "HTTP %d without a ValidationResponse%s" % (status,
                                                                         self._brief(body))
                except Exception as exc:   # whatever a hostile answer provokes
                    reason = "HTTP %d with an unusable response (%s)%s" % (
                        status, type(exc).__name__, self._brief(body))
            # The server took the request, so it may have stored the lines; but
            # what it did with each of them is unknown: never count them as ok.
            ambiguous = True
        err = _failure(self.s, self.chunk, status, self.s._token.masked(body or b""), reason,
                       ambiguous, self._cause)
        self.outcome = _Outcome(None, err, self._range(err.reason, status,  # type: ignore[attr-defined]
                                                       ambiguous))
        return None


# --------------------------------------------------------------------------- session


class _Session:
    """One send: chunks started in input order, outcomes settled in input order.

    The driver (a transport loop) calls :meth:`next_delivery` while the
    window has room, runs each :class:`_Delivery` to its end (concurrently or
    not), hands it back with :meth:`complete`, and calls :meth:`finish` when
    nothing is in flight and :meth:`next_delivery` gave ``None``.  After a
    chunk failed for good no new chunk starts (:attr:`failed`).
    """

    def __init__(self, s: Any, blocks: Iterable[Any], first_line: int,
                 rng: random.Random, clock: Callable[[], float]) -> None:
        self.s = s
        self.rng = rng
        self.clock = clock
        self.result = SendResult()
        self.window = _Window(s.concurrency)
        self._items = _chunk_stream(_guarded(blocks), first_line, s.max_bytes, s.max_lines)
        # Entries in input order, settled from the front: a _Delivery (settled
        # once it has an outcome) or a client-side InvalidLine.
        self._queue: Deque[Any] = deque()
        self._next_line = first_line    # first line of the next item of the chunker
        self.in_flight = 0
        self.failed = False
        self.ended = False
        self.error: Optional[SendError] = None
        self._read_failed: Optional[_ReadFailed] = None

    # -- starting chunks

    def next_delivery(self) -> Union["_Delivery", _Starve, None]:
        """The next chunk to send, ``_STARVE`` when the async input must be
        awaited first, or ``None``: the input ended, failed, or a chunk failed."""
        if self.failed or self.ended:
            return None
        result = self.result
        while True:
            try:
                item = next(self._items)
            except StopIteration:
                self.ended = True
                return None
            except _ReadFailed as exc:
                self._read_failed = exc
                self.ended = True
                return None
            if item is _STARVE:
                return _STARVE
            if type(item) is _Rejected:
                self._next_line = item.line + 1
                result.lines_invalid += 1
                self._queue.append(InvalidLine(item.line, item.reason, "client"))
                self._settle()
                continue
            chunk: _Chunk = item
            # Nothing is counted, and _next_line (the first line not started)
            # does not move past the chunk, until it is queued: the checks and
            # gzip below take time, and an interrupt there leaves the chunk
            # "not started" (at stopped_at), not lost.
            client = [InvalidLine(k, reason, "client") for k, reason in chunk.rejects]
            if self.s.validate:
                chunk, checked = _validate_chunk(chunk, self.s.now_ms)
                if checked:   # the blanked lines are blank: none of them is here
                    client = sorted(client + checked, key=_line_of)
            if only_blank_lines(chunk.body):
                # Only blank lines (after the client's rejections): nothing to send.
                result.lines_invalid += len(client)
                result.lines_skipped += chunk.lines - len(client)
                self._queue.extend(client)
                self._next_line = chunk.first_line + chunk.lines
                self._settle()
                continue
            info = RequestInfo(len(result.requests), chunk.first_line, chunk.lines,
                               len(chunk.body))
            d = _Delivery(self.s, chunk, info, self.window, self.rng, self.clock(), len(client))
            d.client_invalid = client
            result.requests.append(info)
            result.lines_invalid += len(client)
            self._queue.append(d)
            self.in_flight += 1
            self._next_line = chunk.first_line + chunk.lines
            return d

    def room(self) -> bool:
        """True when one more chunk may start now."""
        return not self.failed and not self.ended and self.in_flight < self.window.size

    # -- finishing chunks

    def complete(self, d: "_Delivery") -> None:
        """``d`` has an outcome."""
        self.in_flight -= 1
        assert d.outcome is not None
        if d.outcome.error is not None:
            self.failed = True   # start nothing new; what is in flight finishes
        hook = self.s.on_request
        if hook is not None:
            # The sender's on_request: this request's RequestInfo (final) and
            # how many are still in flight.  It observes; it cannot stop the send.
            try:
                hook(d.info, self.in_flight)
            except Exception:
                log.exception("on_request raised (ignored)")
        self._settle()

    def _settle(self) -> None:
        q = self._queue
        result = self.result
        while q:
            entry = q[0]
            if type(entry) is InvalidLine:
                q.popleft()
                if len(result.invalid_lines) < _MAX_KEPT:
                    result.invalid_lines.append(entry)
                continue
            out = entry.outcome
            if out is None:
                return
            q.popleft()
            self._record(entry, out)

    def _record(self, d: "_Delivery", out: _Outcome) -> None:
        result = self.result
        info = d.info
        client = d.client_invalid
        if out.error is not None:
            result.undelivered.append(out.undelivered)
            if self.error is None:
                self.error = out.error
            for i in client:
                if len(result.invalid_lines) < _MAX_KEPT:
                    result.invalid_lines.append(i)
            return
        v = out.verdict
        assert v is not None
        base = d.chunk.first_line - 1
        server = [InvalidLine(base + k, r, "server", info.index) for k, r in v.listed.items()]
        entries = sorted(client + server, key=lambda i: i.line) if client else server
        room = max(0, _MAX_KEPT - len(result.invalid_lines))
        result.invalid_lines.extend(entries[:room])
        room = max(0, _MAX_KEPT - len(result.warnings))
        result.warnings.extend(WarnedLine(base + k, w, info.index) for k, w in v.warned[:room])
        result.lines_ok += v.ok
        result.lines_invalid += v.bad
        result.lines_sent += d.chunk.lines
        result.bytes_sent += info.wire_bytes

    def stop_line(self) -> Union[int, None, _Starve]:
        """After a failure: the first line never attempted, or None when the
        input holds nothing more (reads at most about one chunk more of it,
        which is never sent); ``_STARVE`` when the async input must be awaited."""
        try:
            item = next(self._items)
        except StopIteration:
            return None
        except _ReadFailed as exc:
            self._read_failed = exc   # finish() says it, as when it came first
            return self._next_line
        except _READ_ERRORS:
            return self._next_line
        if item is _STARVE:
            return _STARVE
        return self._next_line

    def interrupt(self, exc: BaseException) -> SendResult:
        """The result so far of a send that ``exc`` stopped: a KeyboardInterrupt,
        an asyncio cancellation, or any other exception that is not a chunk's
        failure (those end in :meth:`finish`).

        Chunks that finished count as they finished; a chunk still in flight
        is an :class:`Undelivered` range (ambiguous once its request was
        begun); the first line never started is ``stopped_at`` (no more
        input is read).  The result is attached to ``exc`` as
        ``exc.dtproto_result`` (see :data:`INTERRUPTED_RESULT`), so that the
        caller can still say what became of every line.
        """
        now = self.clock()
        for entry in self._queue:
            if type(entry) is not InvalidLine and entry.outcome is None:
                entry.on_interrupt(exc, now)
        self.in_flight = 0
        self._settle()
        result = self.result
        if not self.ended or self._read_failed is not None:
            result.stopped_at = self._next_line
        if getattr(exc, INTERRUPTED_RESULT, None) is None:
            try:
                setattr(exc, INTERRUPTED_RESULT, result)
            except (AttributeError, TypeError):  # an exception type that takes no attributes
                pass
        log.warning("send interrupted (%s): %s", type(exc).__name__, result.summary())
        return result

    def finish(self, stopped_at: Optional[int] = None) -> SendResult:
        """Return the result, or raise the first failure (in input order) with it."""
        assert self.in_flight == 0
        self._settle()
        result = self.result
        if self.error is not None:
            result.stopped_at = stopped_at
            if self._read_failed is not None:
                # The input failed too, after the lines of the failed chunk
                # were read: the lines read but never sent and the read error
                # are said as well (found by a red-team pass: with chunks in
                # flight they were counted nowhere and the error was lost).
                _note_read_failure(result, self._read_failed)
            err = self.error
            err.result = result
            log.info("send stopped: %s; %s", err, result.summary())
            raise err
        if self._read_failed is not None:
            _input_failed(result, self._read_failed)
        if result.requests or result.lines_invalid:
            log.info("sent to %s: %s", self.s.url, result.summary())
        return result


_line_of = attrgetter("line")


def _validate_chunk(chunk: "_Chunk", now_ms: Optional[int]) -> Tuple["_Chunk", List[InvalidLine]]:
    """Check every line of ``chunk`` with the codec; invalid lines become blank
    lines in the body (never sent, and the server's line numbers still map
    back by the plain offset) and come back as client-side rejections."""
    from ._impl import codec
    report = codec.validate(chunk.body, now_ms=now_ms, max_errors=None)
    if not report.lines_invalid:
        return chunk, []
    bad: Dict[int, str] = {}
    for e in report.errors:
        bad.setdefault(e.line, e.message)
    parts = chunk.body.split(b"\n")
    for k in bad:
        parts[k - 1] = b""
    base = chunk.first_line - 1
    return (_Chunk(b"\n".join(parts), chunk.first_line, chunk.lines, chunk.rejects),
            [InvalidLine(base + k, r, "client") for k, r in sorted(bad.items())])


def _input_failed(result: SendResult, exc: _ReadFailed) -> None:
    """Stop a send whose input failed: raise :class:`InputReadError` with
    the partial result (never a raw ``OSError`` that hides what was stored)."""
    text, where = _note_read_failure(result, exc)
    msg = "cannot read the input (%s); %s and after not delivered" % (text, where)
    log.info("send stopped: %s; %s", msg, result.summary())
    err = InputReadError(msg, None, "", result, False)
    err.unsent = exc.pending
    raise err from exc.cause


def _note_read_failure(result: SendResult, exc: _ReadFailed) -> Tuple[str, str]:
    """Put a read failure in ``result``: the lines read but not sent as
    undelivered, ``input_error``, and ``stopped_at`` after them.  Returns
    the error's text and which lines it names."""
    cause = exc.cause
    text = "%s: %s" % (type(cause).__name__, cause)
    pending = exc.pending
    lines = pending.count(b"\n")
    if pending and not pending.endswith(b"\n"):
        lines += 1
    if exc.skipping:
        lines += 1
    where = "line %d" % exc.line
    # The client's rejections among them are said as such (found by a
    # review: they were counted as undelivered, and their reasons lost).
    for k, reason in exc.blanked:
        result.lines_invalid += 1
        if len(result.invalid_lines) < _MAX_KEPT:
            result.invalid_lines.append(InvalidLine(k, reason, "client"))
    if lines:
        last = exc.line + lines - 1
        where = "lines %d..%d" % (exc.line, last)
        if lines > len(exc.blanked):
            result.undelivered.append(Undelivered(
                exc.line, last, lines - len(exc.blanked),
                "not sent: the input failed to read (%s)" % text))
    result.input_error = text
    # The lines after those read were never attempted (nor read).
    result.stopped_at = exc.line + lines
    return text, where


# --------------------------------------------------------------------------- batching


class _Batch:
    """The queue of the batching API (``add``/``flush``), shared by both senders."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.pending = bytearray()
        self.lines = 0
        self.rejects: List[Tuple[int, str]] = []   # (line index in the queue, reason)
        self.next_line = 1
        self.last_flush = clock()

    @staticmethod
    def encode(item: Any) -> Tuple[bytes, int, List[Tuple[int, str]]]:
        """``item`` as protocol bytes (complete lines), its line count, and its
        lines that cannot be UTF-8 (rejected by the client at the flush)."""
        bad: List[Tuple[int, str]] = []
        if isinstance(item, (Metric, Metadata)):
            from ._impl import codec
            data = codec.encode((item,))
            lines = 1
        elif isinstance(item, str):
            data, bad = _text_lines(_input._plain_block(item))  # a subclass is its text
            if not data.endswith(b"\n"):
                data += b"\n"
            lines = data.count(b"\n")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(_input._plain_block(item))  # a subclass's __bytes__ is not asked
            if not data.endswith(b"\n"):
                data += b"\n"
            lines = data.count(b"\n")
        elif _is_encoder(item):
            data = item.getvalue()
            item.clear()
            lines = data.count(b"\n")
            if data and not data.endswith(b"\n"):
                data += b"\n"
                lines += 1
        else:
            raise TypeError("cannot add %s: expected a Metric, Metadata, str, bytes or Encoder"
                            % type(item).__name__)
        return data, lines, bad

    def would_overflow(self, s: Any, size: int, lines: int) -> bool:
        return bool(self.pending) and (
            len(self.pending) + size > s.flush_bytes
            or bool(s.flush_lines and self.lines + lines > s.flush_lines))

    def put(self, data: bytes, lines: int, bad: List[Tuple[int, str]]) -> None:
        for k, reason in bad:
            self.rejects.append((self.lines + k, reason))
        self.pending += data
        self.lines += lines

    def due(self, s: Any) -> bool:
        return bool(self.pending) and (
            len(self.pending) >= s.flush_bytes
            or bool(s.flush_lines and self.lines >= s.flush_lines)
            or (s.flush_interval is not None
                and self.clock() - self.last_flush >= s.flush_interval))

    def take(self) -> Tuple[bytes, List[Tuple[int, str]], int]:
        """Hand the queue over: (body, rejects, first line number)."""
        body = bytes(self.pending)
        rejects = self.rejects
        first = self.next_line
        self.next_line += self.lines
        self.pending = bytearray()
        self.lines = 0
        self.rejects = []
        self.last_flush = self.clock()
        return body, rejects, first

    def restore(self, body: bytes, rejects: List[Tuple[int, str]], first: int,
                from_line: int) -> int:
        """Put the lines of a taken queue (:meth:`take`: ``body``, ``rejects``,
        ``first``) from line ``from_line`` on back at the front of the queue,
        for a flush that was interrupted before it started them; the lines
        queued since keep their numbers (they follow on).  Returns how many
        lines went back."""
        skip = max(from_line - first, 0)
        pos = 0
        for _ in range(skip):
            nl = body.find(b"\n", pos)
            if nl < 0:
                return 0
            pos = nl + 1
        tail = body[pos:]
        lines = tail.count(b"\n")
        if not lines:
            return 0
        self.rejects = ([(k - skip, r) for k, r in rejects if k >= skip]
                        + [(k + lines, r) for k, r in self.rejects])
        self.pending[:0] = tail
        self.lines += lines
        self.next_line = first + skip
        return lines

    def interrupted(self, s: Any, exc: BaseException, body: bytes,
                    rejects: List[Tuple[int, str]], first: int) -> None:
        """A flush of the batching API that ``exc`` stopped (both senders):
        what it did goes into ``s.totals``, and the lines it never started go
        back to the queue, so that the next flush (or close, or the exit
        flush) sends them.  A chunk that was in flight is not sent again: it
        is in ``totals.undelivered`` (ambiguous: the server may have stored it)."""
        result = getattr(exc, INTERRUPTED_RESULT, None)
        if result is None:   # stopped before the send began: all of it goes back
            self.restore(body, rejects, first, first)
            return
        back = 0
        if result.stopped_at is not None:
            back = self.restore(body, rejects, first, result.stopped_at)
        done = dataclasses.replace(result, stopped_at=None)  # those lines are queued again
        s.totals.merge(done)
        for u in result.undelivered:
            log.warning("lines %d..%d not delivered: %s", u.first_line, u.last_line, u.reason)
        if back:
            log.warning("flush interrupted (%s): %d lines queued again", type(exc).__name__, back)

    @staticmethod
    def blocks(body: bytes, rejects: List[Tuple[int, str]]) -> Iterable[Any]:
        return _with_rejects(body, rejects) if rejects else (body,)

    @staticmethod
    def unsent(body: bytes, first: int, result: Optional[SendResult]) -> Optional[bytes]:
        """The lines of ``body`` a failed flush did not deliver: its
        undelivered ranges and everything from ``stopped_at`` on."""
        if result is None or not (result.undelivered or result.stopped_at is not None):
            return None
        parts = body.split(b"\n")
        if parts and parts[-1] == b"":
            parts.pop()
        keep = [False] * len(parts)
        for u in result.undelivered:
            for k in range(max(u.first_line - first, 0), min(u.last_line - first + 1, len(parts))):
                keep[k] = True
        if result.stopped_at is not None:
            for k in range(max(result.stopped_at - first, 0), len(parts)):
                keep[k] = True
        return b"".join(p + b"\n" for p, k in zip(parts, keep) if k)


_S = TypeVar("_S", bound="_UrlHelpers")


class _UrlHelpers:
    """The URL helpers of both senders (``Sender.saas(...)``, ``AsyncSender.oneagent()``, ...),
    and the attributes :func:`_configure` sets on both, declared for type checkers."""

    # The options as checked and normalised by _configure (public: read them
    # to see what a sender was given; the token is never among them).
    url: str
    max_bytes: int
    max_lines: Optional[int]
    gzip: bool
    gzip_level: int
    connect_timeout: float
    read_timeout: float
    retries: int
    backoff_base: float
    backoff_cap: float
    retry_budget: float
    retry_ambiguous: bool
    concurrency: int
    validate: bool
    now_ms: Optional[int]
    user_agent: str
    flush_bytes: int
    flush_lines: Optional[int]
    flush_interval: Optional[float]
    on_flush: Optional[Callable[["SendResult"], None]]
    on_request: Optional[Callable[["RequestInfo", int], None]]
    # What the transports need: where to connect, TLS, proxy, the token.
    _oneagent: bool
    _host: str
    _https: bool
    _port: int
    _path: str
    _token: "_Secret"
    _ssl: ssl.SSLContext
    _proxy: Optional[_Proxy]

    if TYPE_CHECKING:  # each sender has its own; the helpers below call it
        def __init__(self, url: str, token: Optional[str] = None, **kwargs: Any) -> None: ...

    @classmethod
    def from_env(cls: Type[_S], environ: Optional[Dict[str, str]] = None, **kwargs: Any) -> _S:
        """Sender configured from ``DT_URL`` and ``DT_API_TOKEN`` (see :func:`env_settings`),
        the same variables ``dtproto send`` reads; ``kwargs`` go to the constructor."""
        url, token = env_settings(environ)
        if url is None:
            raise ConfigurationError(
                "%s is not set: set it to the ingest URL or the environment URL, e.g. "
                "https://{environment-id}.live.dynatrace.com" % URL_ENV)
        return cls(url, token, **kwargs)

    @classmethod
    def saas(cls: Type[_S], environment_id: str, token: str, **kwargs: Any) -> _S:
        """Sender for Dynatrace SaaS: ``https://{environment_id}.live.dynatrace.com/api/v2/metrics/ingest``."""
        return cls("https://%s.live.dynatrace.com%s" % (_env_id(environment_id), INGEST_PATH),
                   token, **kwargs)

    @classmethod
    def managed(cls: Type[_S], domain: str, environment_id: str, token: str, **kwargs: Any) -> _S:
        """Sender for Dynatrace Managed: ``https://{domain}/e/{environment_id}/api/v2/metrics/ingest``."""
        return cls("https://%s%s%s%s" % (_host_name(domain, "domain"), ENVIRONMENT_PREFIX,
                                          _env_id(environment_id), INGEST_PATH),
                   token, **kwargs)

    @classmethod
    def activegate(cls: Type[_S], host: str, environment_id: str, token: str, port: int = 9999,
                   **kwargs: Any) -> _S:
        """Sender for an Environment ActiveGate:
        ``https://{host}:{port}/e/{environment_id}/api/v2/metrics/ingest`` (port 9999)."""
        return cls("https://%s:%d%s%s%s" % (_host_name(host, "host"), port, ENVIRONMENT_PREFIX,
                                             _env_id(environment_id), INGEST_PATH),
                   token, **kwargs)

    @classmethod
    def oneagent(cls: Type[_S], host: str = "localhost", port: int = ONEAGENT_PORT,
                 **kwargs: Any) -> _S:
        """Sender for the OneAgent local API ``http://localhost:14499/metrics/ingest``:
        no token, at most 1,000 lines per request."""
        return cls("http://%s:%d%s" % (_host_name(host, "host"), port, ONEAGENT_PATH), None,
                   **kwargs)

