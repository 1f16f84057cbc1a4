"""A thin, streaming HTTP sender for ``POST /api/v2/metrics/ingest`` (docs/protocol.md §10).

Pure Python on the standard library (``http.client``); no runtime dependency.

What it guarantees:

* **Chunking.** Input is streamed into request bodies of at most ``max_bytes``
  (default 1,000,000 bytes, *uncompressed*) and at most ``max_lines`` lines
  (off by default; forced to 1,000 for the OneAgent local endpoint).  A chunk
  always ends at a line boundary, so no line is ever split.  Memory stays
  bounded by about one chunk plus one read block, whatever the input size.
* **Line numbers.** Every line the server rejects or warns about is reported
  with its line number in *your* input (1-based).  The server numbers lines
  1-based within each request body, counting blank and metadata lines
  (docs/protocol.md §10.3); the sender forwards blank lines unchanged, so the
  mapping is ``input_line = first_line_of_chunk + server_line - 1``.
* **Oversized lines.** A line whose bytes plus its newline exceed
  ``max_bytes`` can never be delivered: it is reported as rejected by the
  client (``InvalidLine.source == "client"``) with its line number and is
  never sent.
* **Retries.** 429, 500, 502, 503, 504 and connection failures are retried
  with exponential backoff and full jitter; ``Retry-After`` is honoured up to
  the backoff cap; a per-request time budget bounds the whole thing.  400,
  401, 403, 404, 405 and 413 are never retried.
* **Exactly once, or said so.** A failure *after* the whole request was
  handed to the network (a read timeout, or the connection dropped before a
  response arrived) is *ambiguous*: the server may already have stored the
  lines.  Re-sending then can duplicate ``count,delta`` lines (and add extra
  gauge samples), so it is only done with ``retry_ambiguous=True``.  By
  default such a chunk is reported as not delivered, with
  ``Undelivered.ambiguous == True``.
* **No silent loss.** A chunk that cannot be delivered stops the send and
  raises a :class:`~dtproto.errors.SendError` subclass whose ``result``
  attribute holds everything known so far (what was accepted, rejected,
  and which input lines were not delivered, and why).
* **Untrusted answers.**  Each answer is read up to ``MAX_RESPONSE_BYTES``
  and must be complete within ``read_timeout``; an answer that is not a
  usable ValidationResponse stops the send with a ``SendError`` (the lines
  may be stored: ``ambiguous``).  Line numbers outside the request are
  ignored and counts are clamped to it.
* **Token hygiene.** The API token is never part of a ``repr``, a log record
  or an exception message.

Nothing here starts a thread: the batching API (:meth:`Sender.add`) checks
its flush triggers when you call it.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import functools
import gzip as _gzip
import http.client
import io
import ipaddress
import json
import logging
import os
import random
import select
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import _input
from ._constants import BLANK_CHARS, MAX_BODY_BYTES, ONEAGENT_MAX_LINES
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

__all__ = [
    "Sender",
    "SendResult",
    "RequestInfo",
    "InvalidLine",
    "WarnedLine",
    "Undelivered",
    "ConfigurationError",
    "AuthenticationError",
    "MissingScopeError",
    "EndpointNotFoundError",
    "PayloadTooLargeError",
    "DeliveryError",
    "InputReadError",
    "ingest_url",
    "INGEST_PATH",
    "ONEAGENT_PATH",
    "ONEAGENT_PORT",
    "RETRY_STATUSES",
    "URL_ENV",
    "TOKEN_ENV",
    "env_settings",
    "MAX_RESPONSE_BYTES",
]

log = logging.getLogger("dtproto.sender")

INGEST_PATH = "/api/v2/metrics/ingest"
"""Path of the metric ingest API (SaaS, Managed, ActiveGate)."""
ONEAGENT_PATH = "/metrics/ingest"
"""Path of the OneAgent local ingest API."""
ONEAGENT_PORT = 14499
"""Default port of the OneAgent local ingest API."""
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
        lines: number of lines in the range.
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


class _BadLine:
    """Marker in the block stream: the line in progress is invalid.

    Unlike :class:`_Reject` it may come in the middle of a line: the bytes of
    that line already in the stream, and those that follow up to its newline,
    are dropped, and the line is rejected with ``reason``.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _ReadFailed(Exception):
    """The input failed while the chunker was reading it (carries its state)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause
        self.pending = b""     # bytes read and not yet cut into a chunk
        self.line = 0          # input line number of pending[0]
        self.skipping = False  # a line being discarded (too long or invalid) was cut short


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
    """One request body: ``lines`` complete lines starting at input line ``first_line``."""

    __slots__ = ("body", "first_line", "lines")

    def __init__(self, body: bytes, first_line: int, lines: int) -> None:
        self.body = body
        self.first_line = first_line
        self.lines = lines


class _Rejected:
    """Chunker output: input line ``line`` is rejected without sending."""

    __slots__ = ("line", "reason")

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason


def _too_long(size: int, max_bytes: int) -> str:
    return "line too long for one request: %d bytes with its newline > max_bytes %d" % (
        size, max_bytes)


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
    skip_size = -1         # >= 0 while discarding a line: bytes seen so far
    skip_reason: Optional[str] = None   # why, when not "too long" (a _BadLine)

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
                            buf = bytearray()
                            nl = 0
                            return
                        yield _Rejected(line, _too_long(j + 1, max_bytes))
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
            yield _Chunk(body, line, n)
            line += n

    try:
        for block in blocks:
            kind = type(block)
            if kind is _Reject:
                if skip_size >= 0:   # markers come at line boundaries: end the skipped line
                    yield _Rejected(line, skip_reason or _too_long(skip_size + 1, max_bytes))
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
                    continue
                yield _Rejected(line, skip_reason or _too_long(skip_size + i + 1, max_bytes))
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
        exc.skipping = skip_size >= 0
        raise
    if skip_size >= 0:
        yield _Rejected(line, skip_reason or _too_long(skip_size + 1, max_bytes))
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
        while line < index:
            pos = body.index(b"\n", pos) + 1
            line += 1
        if pos > start:
            yield view[start:pos]
        yield _Reject(reason)
        pos = body.index(b"\n", pos) + 1
        line += 1
    if pos < len(body):
        yield view[pos:]


def _blocks(data: Any) -> Iterator[Any]:
    """Turn any supported input into a stream of byte blocks and markers
    (:class:`_Reject`, :class:`_BadLine`)."""
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
        # client-side rejection at its own line number, the rest still go.
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
                yield _Reject("cannot encode record: %s" % (exc,))
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
                yield _Reject("cannot encode record: %s: %s" % (type(exc).__name__, exc))
                batch = batch[k + 1:]

    for item in items:
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
            # A str item is one line (or several, if it contains newlines).
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
            b = bytes(item)
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
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    if path.endswith("/api/v2"):
        return url + "/metrics/ingest"
    return url + INGEST_PATH


def _safe_proxy(p: urllib.parse.SplitResult) -> str:
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


class _Deadline:
    """The absolute time (``time.monotonic()``) by which the answer must be read."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: Optional[float] = None


class _DeadlineReader(io.RawIOBase):
    """Raw reader over a socket that gives every ``recv`` only the time left.

    ``http.client`` has one timeout per socket operation, so a server that
    trickles its answer a byte at a time would never time out.  With this
    reader under the response, status line, headers and body together must
    arrive before the deadline.
    """

    def __init__(self, sock: Any, raw: Any, deadline: _Deadline) -> None:
        super().__init__()
        self._sock = sock
        # The socket's own raw reader (from makefile): it keeps the socket
        # open while the response is read, even after the connection object
        # closed it ("Connection: close").
        self._raw = raw
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> Optional[int]:
        at = self._deadline.at
        if at is not None:
            left = at - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self._sock.settimeout(left)
        return self._raw.readinto(b)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """An ``HTTPResponse`` that reads through a :class:`_DeadlineReader`."""

    def __init__(self, sock: Any, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        raw = self.fp.detach()   # type: ignore[attr-defined]
        self.fp = io.BufferedReader(_DeadlineReader(sock, raw, deadline))


def _read_answer(resp: http.client.HTTPResponse) -> Optional[bytes]:
    """The response body, or None when it is larger than MAX_RESPONSE_BYTES.

    Memory stays bounded whatever the server sends (a huge Content-Length, an
    endless chunked body); the deadline of the reader bounds the time.
    """
    if resp.length is not None and resp.length > MAX_RESPONSE_BYTES:
        return None
    data = resp.read(MAX_RESPONSE_BYTES + 1)
    if len(data) > MAX_RESPONSE_BYTES:
        return None
    if resp.length:   # the connection closed before Content-Length bytes came
        raise http.client.IncompleteRead(data, resp.length)
    return data


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

    def __repr__(self) -> str:
        return "<token set>" if self else "<no token>"

    def __reduce__(self) -> Any:
        raise TypeError("the API token cannot be pickled or copied (it would be written out)")


def _close_quietly(resp: Optional[http.client.HTTPResponse]) -> None:
    # A response given up on: release its socket now, not whenever the
    # garbage collector finds it (an exception chain can keep it alive).
    if resp is not None:
        try:
            resp.close()
        except Exception:
            pass


def _version() -> str:
    try:
        from . import __version__
        return str(__version__)
    except Exception:  # during partial imports
        return "0"


class Sender:
    """Stream protocol lines to a Dynatrace ingest endpoint.

    Two ways to use it:

    * ``send(data)``: send a whole input (bytes, str, a binary or text file,
      an iterable, an :class:`~dtproto.Encoder`, records) and get a
      :class:`SendResult`; line numbers in the result are 1-based positions
      in ``data``.
    * Batching: ``with Sender(...) as s: s.add(...)``.  Lines accumulate and
      are flushed when a trigger fires (bytes, lines, interval), on
      :meth:`flush` and on :meth:`close` / leaving the ``with`` block, so
      nothing is lost at exit.  Triggers are checked **inside** :meth:`add`;
      there is no background thread, so an idle sender does not flush by
      itself: call :meth:`flush` when you stop producing.  Line numbers
      count every line added since the sender was created.

    Failures are never swallowed: a 400 comes back in the result (per-line
    reasons mapped to input lines); anything that leaves lines undelivered
    raises a :class:`~dtproto.errors.SendError` subclass carrying the partial
    :class:`SendResult` as ``exc.result``.

    A Sender holds one keep-alive connection and is not thread-safe; use one
    per thread.

    Args:
        url: the full ingest URL, e.g.
            ``https://{env}.live.dynatrace.com/api/v2/metrics/ingest``,
            ``https://{host}:9999/e/{env}/api/v2/metrics/ingest`` or
            ``http://localhost:14499/metrics/ingest`` (OneAgent).  See the
            :meth:`saas`, :meth:`managed`, :meth:`activegate` and
            :meth:`oneagent` helpers and :func:`ingest_url`.
        token: API token with the ``metrics.ingest`` scope (not for OneAgent).
        max_bytes: upper bound of each uncompressed request body.  Default
            1,000,000 (the documented "1 MB", read conservatively).
        max_lines: upper bound of lines per request; ``None`` means no line
            cap (bytes govern).  The OneAgent endpoint forces at most 1,000.
        gzip: compress bodies (``Content-Encoding: gzip``).  The public API
            does not document gzip; the local endpoint accepts it.
        gzip_level: compression level 1..9.
        connect_timeout: seconds to establish the connection (TLS included).
        read_timeout: seconds to send the body, and then for the whole answer
            (status line, headers and body) to arrive: a server that trickles
            its answer is abandoned at this deadline (an ambiguous failure).
        retries: retries per chunk after the first attempt (default 3).
        backoff_base: first backoff ceiling in seconds (default 1); attempt
            ``n`` sleeps ``uniform(0, min(backoff_cap, backoff_base * 2**n))``
            ("full jitter").
        backoff_cap: largest sleep, also the cap for ``Retry-After`` (default 30).
        retry_budget: seconds one chunk may take from its first attempt to its
            last, backoff included (default 120); no retry starts that would
            end beyond it.
        retry_ambiguous: re-send a chunk after an *ambiguous* failure (read
            timeout, or connection dropped after the request was fully sent).
            The server may have stored that chunk already, so this can store
            ``count,delta`` lines twice (double counting) and gauge lines
            twice.  Default ``False``: such a chunk is reported as
            undelivered with ``ambiguous=True`` and the send stops.  Set it
            to ``True`` when duplicates are acceptable or impossible (e.g. the
            receiver is known to drop connections before processing).
        verify: TLS verification: ``True`` (system CAs), a path to a CA bundle,
            or ``False`` (not recommended; logged as a warning).
        ssl_context: a ready :class:`ssl.SSLContext` (overrides ``verify``).
        proxy: ``True`` (default) to honour ``HTTPS_PROXY``/``HTTP_PROXY`` and
            ``NO_PROXY`` from the environment, ``False`` for none, or a proxy
            URL.  Loopback destinations never use a proxy.  Only ``http://``
            proxies are supported (``https://`` ones raise
            :class:`ConfigurationError`: their credentials would otherwise
            travel in clear).
        user_agent: ``User-Agent`` header; default ``dtproto/<version> Python/<x.y>``.
        flush_bytes: batching trigger: flush when this many bytes are pending
            (default ``max_bytes``; a line that would overflow it flushes first).
        flush_lines: batching trigger: flush when this many lines are pending
            (default ``max_lines``, i.e. off except for OneAgent).
        flush_interval: batching trigger: on ``add``, flush if this many
            seconds passed since the last flush (default 1.0; ``None`` = off).
        allow_insecure: allow sending a token over plain HTTP to a host that is
            not loopback (otherwise :class:`ConfigurationError`); logged as a warning.
        check_url: reject URLs whose path is not an ingest path (default True).
        on_flush: optional callback called with the :class:`SendResult` of
            every successful flush of the batching API.

    Raises:
        ConfigurationError: bad URL, a token for the OneAgent endpoint, a token
            over plain HTTP to a remote host, a malformed token, a proxy that
            is not ``http://``.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
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
        on_flush: Optional[Callable[[SendResult], None]] = None,
    ) -> None:
        if not isinstance(url, str):
            raise ConfigurationError("url must be a str")
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                "url must be an http:// or https:// URL with a host, e.g. "
                "https://{environment-id}.live.dynatrace.com%s" % INGEST_PATH
            )
        if parts.username or parts.password:
            raise ConfigurationError(
                "credentials in the URL are not supported; pass the API token as token=")
        try:
            parts.port
        except ValueError as exc:
            raise ConfigurationError("invalid port in url: %s" % exc) from None
        path = parts.path.rstrip("/") or "/"
        self._oneagent = path == ONEAGENT_PATH
        self.url = _safe_url(parts._replace(path=path))
        if check_url and not (path.endswith(INGEST_PATH) or self._oneagent):
            raise ConfigurationError(
                "%s is not a metric ingest URL: the path must end with %s (SaaS, "
                "Managed, ActiveGate) or be %s (OneAgent). Did you mean %s ?"
                % (self.url, INGEST_PATH, ONEAGENT_PATH, ingest_url(self.url))
            )
        host = (parts.hostname or "").lower().rstrip(".")
        if check_url and host.endswith(".apps.dynatrace.com"):
            raise ConfigurationError(
                "%s is the Dynatrace web UI, not the API: the metric ingest API of a SaaS "
                "environment lives on {environment-id}.live.dynatrace.com, e.g. %s"
                % (host, ingest_url("https://%s.live.dynatrace.com" % host.split(".")[0])))
        self._host = parts.hostname or ""
        self._https = parts.scheme == "https"
        self._port = parts.port or (443 if self._https else 80)
        self._path = path + ("?" + parts.query if parts.query else "")

        if token is not None:
            if not isinstance(token, str) or not token.strip():
                raise ConfigurationError("token must be a non-empty str (token not shown)")
            token = token.strip()
            # Checked here because http.client would otherwise raise an error
            # that quotes the whole header value, token included.
            if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0x7E for c in token):
                raise ConfigurationError(
                    "token contains whitespace, control or non-ASCII characters (token not shown)")
            if self._oneagent:
                raise ConfigurationError(
                    "the OneAgent local endpoint (%s) takes no API token; pass token=None "
                    "(a token sent there is exposed to every local process for nothing)"
                    % self.url
                )
            if not self._https and not _is_loopback(self._host):
                if not allow_insecure:
                    raise ConfigurationError(
                        "refusing to send the API token over plain HTTP to %s; use https:// "
                        "or pass allow_insecure=True" % self._host
                    )
                log.warning("sending the API token over plain HTTP to %s (allow_insecure=True)",
                            self._host)
        elif not self._oneagent:
            log.warning("no API token given for %s; the server will answer 401 unless a "
                        "proxy adds one", self.url)
        # Never an attribute holding the text: vars(), repr, pickle and
        # exception messages cannot show it (see _Secret).
        self._token = _Secret(token)

        if max_bytes < 2:
            raise ConfigurationError("max_bytes must be at least 2")
        if max_lines is not None and max_lines < 1:
            raise ConfigurationError("max_lines must be positive or None")
        if self._oneagent:
            max_lines = min(max_lines or ONEAGENT_MAX_LINES, ONEAGENT_MAX_LINES)
        self.max_bytes = int(max_bytes)
        self.max_lines = max_lines
        self.gzip = bool(gzip)
        self.gzip_level = int(gzip_level)
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ConfigurationError("timeouts must be positive (they are always set)")
        self.retries = int(retries)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.retry_budget = float(retry_budget)
        self.retry_ambiguous = bool(retry_ambiguous)
        self.user_agent = user_agent or "dtproto/%s Python/%d.%d" % (
            _version(), sys.version_info[0], sys.version_info[1])
        self.flush_bytes = int(flush_bytes) if flush_bytes else self.max_bytes
        self.flush_lines = flush_lines if flush_lines is not None else self.max_lines
        self.flush_interval = flush_interval
        self.on_flush = on_flush

        if ssl_context is not None:
            self._ssl = ssl_context
        elif verify is False:
            log.warning("TLS certificate verification is disabled (verify=False)")
            self._ssl = ssl._create_unverified_context()
        elif isinstance(verify, str):
            self._ssl = ssl.create_default_context(cafile=verify)
        else:
            self._ssl = ssl.create_default_context()

        self._proxy = self._find_proxy(proxy)
        self._conn: Optional[http.client.HTTPConnection] = None
        self._deadline = _Deadline()
        self._rng = random.Random()
        self._closed = False
        # Batching state.
        self._pending = bytearray()
        self._pending_lines = 0
        self._pending_rejects: List[Tuple[int, str]] = []   # (line index in the queue, reason)
        self._next_line = 1
        self._last_flush = time.monotonic()
        #: Cumulative :class:`SendResult` of every flush of the batching API.
        self.totals = SendResult()

    # ---------------------------------------------------------------- helpers for URLs

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None, **kwargs: Any) -> "Sender":
        """Sender configured from ``DT_URL`` and ``DT_API_TOKEN`` (see :func:`env_settings`),
        the same variables ``dtproto send`` reads; ``kwargs`` go to the constructor."""
        url, token = env_settings(environ)
        if url is None:
            raise ConfigurationError(
                "%s is not set: set it to the ingest URL or the environment URL, e.g. "
                "https://{environment-id}.live.dynatrace.com" % URL_ENV)
        return cls(url, token, **kwargs)

    @classmethod
    def saas(cls, environment_id: str, token: str, **kwargs: Any) -> "Sender":
        """Sender for Dynatrace SaaS: ``https://{environment_id}.live.dynatrace.com/api/v2/metrics/ingest``."""
        return cls("https://%s.live.dynatrace.com%s" % (_env_id(environment_id), INGEST_PATH),
                   token, **kwargs)

    @classmethod
    def managed(cls, domain: str, environment_id: str, token: str, **kwargs: Any) -> "Sender":
        """Sender for Dynatrace Managed: ``https://{domain}/e/{environment_id}/api/v2/metrics/ingest``."""
        return cls("https://%s/e/%s%s" % (domain, _env_id(environment_id), INGEST_PATH),
                   token, **kwargs)

    @classmethod
    def activegate(cls, host: str, environment_id: str, token: str, port: int = 9999,
                   **kwargs: Any) -> "Sender":
        """Sender for an Environment ActiveGate:
        ``https://{host}:{port}/e/{environment_id}/api/v2/metrics/ingest`` (port 9999)."""
        return cls("https://%s:%d/e/%s%s" % (host, port, _env_id(environment_id), INGEST_PATH),
                   token, **kwargs)

    @classmethod
    def oneagent(cls, host: str = "localhost", port: int = ONEAGENT_PORT,
                 **kwargs: Any) -> "Sender":
        """Sender for the OneAgent local API ``http://localhost:14499/metrics/ingest``:
        no token, at most 1,000 lines per request."""
        return cls("http://%s:%d%s" % (host, port, ONEAGENT_PATH), None, **kwargs)

    def __repr__(self) -> str:
        # The token is deliberately absent: only whether one is set.
        return "Sender(%r, token=%s, max_bytes=%d, max_lines=%r, gzip=%r)" % (
            self.url, "<set>" if self._token else None, self.max_bytes, self.max_lines,
            self.gzip)

    def __reduce__(self) -> Any:
        # Pickling (and copy.copy) would write the token out; refuse rather
        # than leak it.  Build a new Sender in the other process instead.
        raise TypeError("a Sender cannot be pickled or copied (it holds a token and a "
                        "connection); create one where it is used, e.g. Sender.from_env()")

    # ---------------------------------------------------------------- transport

    def _find_proxy(self, proxy: Union[bool, str]) -> Optional[urllib.parse.SplitResult]:
        if proxy is False or _is_loopback(self._host):
            return None
        if proxy is True:
            scheme = "https" if self._https else "http"
            found = urllib.request.getproxies().get(scheme)
            if not found or urllib.request.proxy_bypass(self._host):
                return None
            proxy = found
        p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if not p.hostname:
            raise ConfigurationError("invalid proxy URL (not shown, it may hold credentials)")
        if p.scheme.lower() != "http":
            # http.client speaks plain text to the proxy: with an https:// proxy
            # the CONNECT request and its Proxy-Authorization credentials would
            # cross the link the user expects to be encrypted.  Refuse it.
            raise ConfigurationError(
                "unsupported proxy scheme %r (proxy %s): only http:// proxies are supported "
                "(the request to the proxy, with its credentials, is not encrypted; the "
                "connection to the ingest endpoint is TLS through the proxy's tunnel). Use an "
                "http:// proxy URL, or proxy=False" % (p.scheme, _safe_proxy(p)))
        return p

    def _proxy_headers(self) -> Dict[str, str]:
        p = self._proxy
        if p is None or not p.username:
            return {}
        cred = "%s:%s" % (urllib.parse.unquote(p.username), urllib.parse.unquote(p.password or ""))
        return {"Proxy-Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # A pooled connection the server closed while idle is readable
            # (EOF): detect that before writing, so a stale keep-alive
            # connection never turns into an ambiguous failure (urllib3 does
            # the same check).
            try:
                readable = select.select([conn.sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [True]
            if not readable:
                return conn
            conn.close()
        elif conn is not None:
            conn.close()
        self._conn = None
        p = self._proxy
        if p is not None:
            host, port = p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
        else:
            host, port = self._host, self._port
        if self._https:
            conn = http.client.HTTPSConnection(host, port, timeout=self.connect_timeout,
                                               context=self._ssl)
            if p is not None:
                conn.set_tunnel(self._host, self._port, headers=self._proxy_headers())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        conn.response_class = functools.partial(_Response, deadline=self._deadline)  # type: ignore[assignment]
        conn.connect()
        # Separate read timeout: http.client has a single timeout, which was
        # the connect timeout until now.
        if conn.sock is not None:
            conn.sock.settimeout(self.read_timeout)
            try:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _attempt(self, payload: bytes) -> Tuple[int, Dict[str, str], Optional[bytes]]:
        """One POST; returns (status, headers, body) or raises :class:`_Attempt`.

        ``body`` is None when the answer was larger than ``MAX_RESPONSE_BYTES``
        (a protocol error; the connection is dropped).
        """
        where = "%s:%d" % (self._host, self._port)
        self._deadline.at = None
        try:
            conn = self._connection()
        except ssl.SSLCertVerificationError as exc:
            self._drop_connection()
            raise DeliveryError(
                "TLS certificate verification failed for %s: %s (pass verify='/path/to/ca.pem' "
                "for a private CA)" % (where, exc.verify_message or exc)) from exc
        except ConnectionRefusedError as exc:
            self._drop_connection()
            raise _Attempt("cannot connect to %s: connection refused (nothing accepts "
                           "connections there: check the URL, the port and that the endpoint "
                           "is running); nothing was sent" % where, ambiguous=False,
                           cause=exc) from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            raise _Attempt("cannot connect to %s: %s: %s" % (where, type(exc).__name__, exc),
                           ambiguous=False, cause=exc) from None
        target = self._path
        if self._proxy is not None and not self._https:
            target = "http://%s:%d%s" % (self._host, self._port, self._path)
        try:
            if conn.sock is not None:
                conn.sock.settimeout(self.read_timeout)   # the previous answer's deadline
            conn.putrequest("POST", target, skip_accept_encoding=True)
            conn.putheader("Content-Type", "text/plain; charset=utf-8")
            conn.putheader("Accept", "application/json")
            conn.putheader("User-Agent", self.user_agent)
            if self._token:
                # No local variable: a traceback's frames must not hold the token.
                conn.putheader("Authorization", "Api-Token " + (self._token.reveal() or ""))
            if self.gzip:
                conn.putheader("Content-Encoding", "gzip")
            if self._proxy is not None and not self._https:
                for k, v in self._proxy_headers().items():
                    conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(payload)))
            conn.endheaders(payload)
        except (OSError, http.client.HTTPException) as exc:
            # The request did not leave completely, so the server cannot have
            # processed it: retrying is safe.  The server may still have
            # answered early (e.g. 413 before reading the body); use that.
            early = self._early_response(conn)
            if early is not None:
                return early
            self._drop_connection()
            raise _Attempt("connection failed while sending to %s: %s: %s"
                           % (where, type(exc).__name__, exc), ambiguous=False,
                           cause=exc) from None
        # From here on the whole answer (status, headers, body) must arrive
        # within read_timeout: a server trickling it byte by byte is abandoned.
        self._deadline.at = time.monotonic() + self.read_timeout
        resp = None
        try:
            resp = conn.getresponse()
            data = _read_answer(resp)
        except socket.timeout as exc:
            self._drop_connection()
            _close_quietly(resp)
            if resp is None:
                raise _Attempt("no response from %s within read_timeout=%gs after the request "
                               "was sent" % (where, self.read_timeout), ambiguous=True,
                               cause=exc) from None
            raise _Attempt("HTTP %d from %s, but the response was not complete within "
                           "read_timeout=%gs after the request was sent"
                           % (resp.status, where, self.read_timeout), ambiguous=True,
                           cause=exc) from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            _close_quietly(resp)
            raise _Attempt("connection to %s dropped after the request was sent (%s: %s)"
                           % (where, type(exc).__name__, exc), ambiguous=True,
                           cause=exc) from None
        finally:
            self._deadline.at = None
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if data is None or resp.will_close:
            self._drop_connection()
            _close_quietly(resp)
        return resp.status, headers, data

    def _early_response(self, conn: http.client.HTTPConnection) -> Optional[Tuple[int, Dict[str, str], Optional[bytes]]]:
        try:
            if conn.sock is None:
                return None
            self._deadline.at = time.monotonic() + min(1.0, self.read_timeout)
            resp = conn.getresponse()
            data = _read_answer(resp)
        except Exception:
            return None
        finally:
            self._deadline.at = None
        headers = {k.lower(): v for k, v in resp.getheaders()}
        self._drop_connection()
        return resp.status, headers, data

    # ---------------------------------------------------------------- one chunk

    def _deliver(self, chunk: _Chunk, result: SendResult) -> None:
        """Send one chunk with retries; record the outcome in ``result``.

        Raises a :class:`_SendFailure` subclass (with ``result`` attached)
        when the chunk cannot be delivered.
        """
        payload = chunk.body
        if self.gzip:
            payload = _gzip.compress(payload, compresslevel=self.gzip_level, mtime=0)
        info = RequestInfo(len(result.requests), chunk.first_line, chunk.lines, len(chunk.body),
                           len(payload))
        result.requests.append(info)
        start = time.monotonic()
        status: Optional[int] = None
        body = b""
        reason = ""
        ambiguous = False
        cause: Optional[BaseException] = None
        attempt = 0
        while True:
            info.attempts += 1
            retry_after: Optional[float] = None
            try:
                status, headers, body = self._attempt(payload)
            except _Attempt as exc:
                status, body, reason, ambiguous = None, b"", exc.message, exc.ambiguous
                cause = exc.cause
                info.history.append(exc.message)
                retryable = (not exc.ambiguous or self.retry_ambiguous) and not exc.final
                if exc.ambiguous and not self.retry_ambiguous:
                    reason += ("; not retried because the server may have stored the lines "
                               "(retry_ambiguous=False)")
            except _SendFailure as exc:
                info.latency = time.monotonic() - start
                self._undelivered(result, chunk, str(exc), None, False)
                exc.result = result
                raise
            else:
                info.history.append(status)
                ambiguous = False
                cause = None
                if status in RETRY_STATUSES:
                    retryable = True
                    retry_after = _parse_retry_after(headers.get("retry-after"))
                    reason = "HTTP %d%s" % (status, _brief(body))
                else:
                    break
            if not retryable:
                break
            if attempt >= self.retries:
                reason += " (gave up after %d attempts)" % info.attempts
                break
            if retry_after is not None:
                delay = min(retry_after, self.backoff_cap)
            else:
                delay = self._rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt))
            if time.monotonic() - start + delay > self.retry_budget:
                reason += " (retry budget of %gs exhausted after %d attempts)" % (
                    self.retry_budget, info.attempts)
                break
            # A failed connection is said at once (not only in the final error),
            # so that waiting for the retries is never silent.
            log.log(logging.WARNING if status is None else logging.DEBUG,
                    "request %d (lines %d..%d): %s; retry %d of %d in %.3fs", info.index,
                    chunk.first_line, chunk.first_line + chunk.lines - 1, info.history[-1],
                    attempt + 1, self.retries, delay)
            time.sleep(delay)
            attempt += 1
        info.latency = time.monotonic() - start
        info.status = status
        if status is not None and (200 <= status < 300 or status == 400):
            if body is None:
                reason = ("HTTP %d with a response body over %d bytes: not a ValidationResponse "
                          "(protocol error)" % (status, MAX_RESPONSE_BYTES))
            else:
                try:
                    if self._record_response(chunk, info, status, body, result):
                        return
                    reason = "HTTP %d without a ValidationResponse%s" % (status, _brief(body))
                except Exception as exc:   # whatever a hostile answer provokes
                    reason = "HTTP %d with an unusable response (%s)%s" % (
                        status, type(exc).__name__, _brief(body))
            # The server took the request, so it may have stored the lines; but
            # what it did with each of them is unknown: never count them as ok.
            ambiguous = True
        self._fail(result, chunk, status, body or b"", reason, ambiguous, cause)

    def _record_response(self, chunk: _Chunk, info: RequestInfo, status: int, body: bytes,
                         result: SendResult) -> bool:
        """Record a 2xx/400 ValidationResponse in ``result``.

        Returns False (and records nothing) when ``body`` is not a usable
        ValidationResponse.  The answer is not trusted: line numbers outside
        the chunk are ignored, counts are clamped to the chunk's lines (a
        warning is logged for both), so no reported line lies outside the
        input and no count exceeds it.
        """
        try:
            doc = json.loads(body) if body else None
        except (ValueError, RecursionError):
            return False
        if not isinstance(doc, dict):
            return False
        n = chunk.lines
        ok = doc.get("linesOk", doc.get("linesValid"))
        if not _is_count(ok):
            if status != 400 or ok is not None:
                return False   # a 2xx must say how many lines it accepted
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
                    listed[k] = _text_field(item.get("error"))
            if status == 400 and not listed and ok == 0 and bad == 0:
                # "empty request" for a non-blank chunk, or a 400 we do not understand.
                if err.get("message") != "empty request":
                    return False
        elif status == 400:
            return False
        warned: List[Tuple[int, str]] = []
        warn = doc.get("warnings")
        if isinstance(warn, dict):
            items = warn.get("changedMetricKeys")
            if items is None:
                items = warn.get("warningLines")   # what real responses use ([A-18])
            for item in items if isinstance(items, list) else ():
                k = item.get("line") if isinstance(item, dict) else None
                if not (_is_count(k) and 1 <= k <= n):
                    anomalies += 1
                    continue
                warned.append((k, _text_field(item.get("warning"))))
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
                        "range); %d impossible entries ignored or clamped", info.index,
                        chunk.first_line, chunk.first_line + n - 1, n, anomalies)
        info.lines_ok = ok
        info.lines_invalid = bad
        base = chunk.first_line - 1
        room = max(0, _MAX_KEPT - len(result.invalid_lines))
        result.invalid_lines.extend(
            InvalidLine(base + k, r, "server", info.index) for k, r in list(listed.items())[:room])
        room = max(0, _MAX_KEPT - len(result.warnings))
        result.warnings.extend(WarnedLine(base + k, w, info.index) for k, w in warned[:room])
        result.lines_ok += info.lines_ok
        result.lines_invalid += info.lines_invalid
        result.lines_sent += chunk.lines
        result.bytes_sent += info.wire_bytes
        return True

    def _undelivered(self, result: SendResult, chunk: _Chunk, reason: str,
                     status: Optional[int], ambiguous: bool) -> None:
        result.undelivered.append(Undelivered(
            chunk.first_line, chunk.first_line + chunk.lines - 1, chunk.lines, reason,
            status, ambiguous))

    def _fail(self, result: SendResult, chunk: _Chunk, status: Optional[int], body: bytes,
              reason: str, ambiguous: bool, cause: Optional[BaseException] = None) -> None:
        lines = "lines %d..%d" % (chunk.first_line, chunk.first_line + chunk.lines - 1)
        text = body.decode("utf-8", "replace")
        cls: type = DeliveryError
        if status == 401:
            cls = AuthenticationError
            msg = ("401 Unauthorized from %s: the API token is missing, unknown, expired or "
                   "revoked; create a token with the 'metrics.ingest' scope and pass it as "
                   "token=" % self.url)
        elif status == 403:
            cls = MissingScopeError
            msg = ("403 Forbidden from %s: the token lacks the 'metrics.ingest' scope "
                   "(\"Ingest metrics\"); add that scope to the token" % self.url)
        elif status in (404, 405):
            cls = EndpointNotFoundError
            msg = ("%d from %s: wrong URL. Check the path (%s, or %s for OneAgent) and the "
                   "environment ID; for the OneAgent local API, enable the Extension "
                   "Execution Controller and the local HTTP Metric API"
                   % (status, self.url, INGEST_PATH, ONEAGENT_PATH))
        elif status == 413:
            cls = PayloadTooLargeError
            msg = ("413 Payload Too Large from %s for a %d-byte body: the server's limit is "
                   "below max_bytes=%d; lower max_bytes" % (self.url, len(chunk.body),
                                                             self.max_bytes))
        else:
            msg = "%s not delivered: %s" % (lines, reason)
        if cls is not DeliveryError:
            msg = "%s (%s not delivered)" % (msg, lines)
        self._undelivered(result, chunk, reason or msg, status, ambiguous)
        log.info("send stopped: %s; %s", msg, result.summary())
        raise cls(msg, status, text, result, ambiguous) from cause

    # ---------------------------------------------------------------- public API

    def send(self, data: Any) -> SendResult:
        """Send ``data`` in chunks and return what happened to every line.

        ``data`` may be: ``bytes``/``bytearray``/``memoryview`` or ``str``
        (protocol text); a binary or text file object (read in blocks); an
        :class:`~dtproto.Encoder` (its content; it is not cleared); a
        :class:`~dtproto.Metric`/:class:`~dtproto.Metadata`; or an iterable
        whose items are ``str`` (each one line; a missing newline is added),
        bytes-like (pieces of a byte stream, concatenated as they are, like
        file reads) or records (encoded in batches; a record that cannot be
        encoded is reported as a client-side invalid line at its position and
        the others still go).

        Line numbers in the result are 1-based positions in ``data``, blank
        lines included.  Blank lines are forwarded unchanged (the server
        skips them), so server line numbers map back by a plain offset.  A
        ``str`` line with a lone surrogate (which no UTF-8 can hold) is
        rejected by the client as ``invalid UTF-8`` and the others still go.
        A file whose ``read()`` returns ``None`` (non-blocking, no data yet) is
        waited for, not taken as ended.

        Returns:
            :class:`SendResult`.  ``result.ok`` is True when every line was
            delivered and accepted.

        Raises:
            AuthenticationError, MissingScopeError, EndpointNotFoundError,
            PayloadTooLargeError, DeliveryError: a chunk could not be
            delivered, or its answer could not be used (not a
            ValidationResponse, over ``MAX_RESPONSE_BYTES``, not complete
            within ``read_timeout``).  The send stops there (later input is
            not read); ``exc.result`` holds the partial result, whose
            ``undelivered`` names the failed line range.
            InputReadError: ``data`` failed to read part-way (``__cause__`` is
                the ``OSError``, ``EOFError``, ... of the input); ``exc.result``
                holds what happened to the lines before, ``exc.unsent`` the
                bytes read but not delivered.
        """
        self._check_open()
        return self._send_blocks(_blocks(data), 1)

    def _send_blocks(self, blocks: Iterable[Any], first_line: int) -> SendResult:
        result = SendResult()
        items = _chunk_stream(_guarded(blocks), first_line, self.max_bytes, self.max_lines)
        try:
            for item in items:
                if type(item) is _Rejected:
                    result.lines_invalid += 1
                    if len(result.invalid_lines) < _MAX_KEPT:
                        result.invalid_lines.append(InvalidLine(item.line, item.reason, "client"))
                    continue
                body = item.body
                if only_blank_lines(body):
                    result.lines_skipped += item.lines   # only blank lines: nothing to send
                    continue
                try:
                    self._deliver(item, result)
                except SendError:
                    result.stopped_at = _next_line(items, item.first_line + item.lines)
                    raise
        except _ReadFailed as exc:
            self._input_failed(result, exc)
        if result.requests or result.lines_invalid:
            log.info("sent to %s: %s", self.url, result.summary())
        return result

    def _input_failed(self, result: SendResult, exc: _ReadFailed) -> None:
        """Stop a send whose input failed: raise :class:`InputReadError` with
        the partial result (never a raw ``OSError`` that hides what was stored)."""
        cause = exc.cause
        text = "%s: %s" % (type(cause).__name__, cause)
        pending = exc.pending
        lines = pending.count(b"\n")
        if pending and not pending.endswith(b"\n"):
            lines += 1
        if exc.skipping:
            lines += 1
        where = "line %d" % exc.line
        if lines:
            last = exc.line + lines - 1
            where = "lines %d..%d" % (exc.line, last)
            result.undelivered.append(Undelivered(
                exc.line, last, lines, "not sent: the input failed to read (%s)" % text))
        result.input_error = text
        # The lines after those read were never attempted (nor read).
        result.stopped_at = exc.line + lines
        msg = "cannot read the input (%s); %s and after not delivered" % (text, where)
        log.info("send stopped: %s; %s", msg, result.summary())
        err = InputReadError(msg, None, "", result, False)
        err.unsent = pending
        raise err from cause

    def add(self, item: Any) -> Optional[SendResult]:
        """Queue one record, or protocol text, for the next flush.

        ``item`` is a :class:`~dtproto.Metric`/:class:`~dtproto.Metadata`
        (encoded now: an :class:`~dtproto.EncodeError` is raised here and
        nothing is queued), ``str`` or bytes-like protocol text (one or more
        lines; a missing final newline is added; a ``str`` line with a lone
        surrogate is rejected by the client as ``invalid UTF-8`` at the
        flush), or an :class:`~dtproto.Encoder` (its content is taken and
        the encoder is cleared).

        Flush triggers are checked here, not by a timer: before queueing, if
        the item would push the pending bytes past ``flush_bytes`` or the
        pending lines past ``flush_lines``; after queueing, if either limit is
        reached or ``flush_interval`` seconds passed since the last flush.

        Returns:
            The :class:`SendResult` of a flush this call triggered, else ``None``.

        Raises:
            The errors of :meth:`flush`, when a triggered flush fails.  If it
            ran *before* ``item`` was queued, ``item`` is not queued: its
            bytes end ``exc.unsent``, after the lines of the failed flush.
        """
        self._check_open()
        bad: List[Tuple[int, str]] = []
        if isinstance(item, (Metric, Metadata)):
            from ._impl import codec
            data = codec.encode((item,))
            lines = 1
        elif isinstance(item, str):
            # A line that cannot be UTF-8 is queued as it is and rejected
            # (client-side, at its line number) when flushed.
            data, bad = _text_lines(item)
            if not data.endswith(b"\n"):
                data += b"\n"
            lines = data.count(b"\n")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
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
        if not data:
            return None
        out: Optional[SendResult] = None
        if self._pending and (
            len(self._pending) + len(data) > self.flush_bytes
            or (self.flush_lines and self._pending_lines + lines > self.flush_lines)
        ):
            try:
                out = self.flush()
            except _SendFailure as exc:
                # The item was not queued: it goes back to the caller with the
                # other lines that were not delivered.
                exc.unsent = (exc.unsent or b"") + data
                raise
        for k, reason in bad:
            self._pending_rejects.append((self._pending_lines + k, reason))
        self._pending += data
        self._pending_lines += lines
        if (
            len(self._pending) >= self.flush_bytes
            or (self.flush_lines and self._pending_lines >= self.flush_lines)
            or (self.flush_interval is not None
                and time.monotonic() - self._last_flush >= self.flush_interval)
        ):
            r = self.flush()
            if out is None:
                out = r
            else:
                out.merge(r)
        return out

    @property
    def pending_bytes(self) -> int:
        """Bytes queued by :meth:`add` and not flushed yet."""
        return len(self._pending)

    @property
    def pending_lines(self) -> int:
        """Lines queued by :meth:`add` and not flushed yet."""
        return self._pending_lines

    def flush(self) -> SendResult:
        """Send everything queued by :meth:`add` now.

        The queue is handed over to the send first, so a failed flush does not
        send the same lines again on the next one.

        Returns:
            The :class:`SendResult` of this flush (also merged into :attr:`totals`).

        Raises:
            The errors of :meth:`send`; ``exc.unsent`` then holds the bytes
            from the failed chunk on (not delivered, or — if
            ``exc.ambiguous`` — possibly delivered), so they can be re-sent
            or saved, and ``exc.result`` their line numbers.
        """
        body = bytes(self._pending)
        rejects = self._pending_rejects
        first = self._next_line
        self._next_line += self._pending_lines
        self._pending = bytearray()
        self._pending_lines = 0
        self._pending_rejects = []
        self._last_flush = time.monotonic()
        if not body:
            return SendResult()
        try:
            result = self._send_blocks(_with_rejects(body, rejects) if rejects else (body,),
                                       first)
        except _SendFailure as exc:
            if exc.result is not None:
                if exc.result.undelivered:
                    # Offset of the failed chunk's first line within body.
                    skip = exc.result.undelivered[-1].first_line - first
                    pos = 0
                    for _ in range(skip):
                        pos = body.index(b"\n", pos) + 1
                    exc.unsent = body[pos:]
                self.totals.merge(exc.result)
            raise
        self.totals.merge(result)
        if self.on_flush is not None:
            self.on_flush(result)
        return result

    def close(self) -> SendResult:
        """Flush what is queued, then close the connection. Idempotent.

        Returns:
            The :class:`SendResult` of the final flush.
        """
        if self._closed:
            return SendResult()
        try:
            return self.flush()
        finally:
            self._closed = True
            self._drop_connection()

    def _check_open(self) -> None:
        if self._closed:
            raise DtprotoError("this Sender is closed")

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # Flush even when the block raised: queued lines are not dropped.  If
        # the flush fails too, its error propagates with the block's error as
        # its __context__.
        self.close()


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


def _text_field(value: Any) -> str:
    # Only scalars: str() of a deeply nested list would recurse without bound.
    if isinstance(value, str):
        return value[:1000]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def _brief(body: bytes) -> str:
    if not body:
        return ""
    text = body[:300].decode("utf-8", "replace").strip()
    return ": " + text if text else ""
