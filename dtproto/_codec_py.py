"""Pure-Python reference implementation of the Dynatrace metric line protocol.

This package's pure-Python half *defines* the behaviour; the Cython core
(``csrc/_codec_c.pyx``) mirrors it and must agree with it byte for byte and
error for error (``tests/test_differential.py``).  Its rooms:

* ``dtproto._scan``: the line grammar (exact scanner, fast path, validators);
* ``dtproto._encode_py``: the encoder, its options and canonical lines;
* ``dtproto._input``: what each kind of input object means as a byte stream;
* this module: the drivers, ``decode``/``iter_decode``/``validate``, over
  blocks of whole lines;
* ``dtproto._reference``: the small interface the Cython core uses.

Input of any form is turned into UTF-8 bytes first (``str`` with
``surrogatepass``), then into text with ``surrogateescape``: an undecodable
byte becomes one lone surrogate, which is invalid wherever it appears.
"""

from __future__ import annotations

import sys
from itertools import compress
from typing import Any, Iterator, List, Optional, Tuple, Union

from ._constants import (
    CHANGED_KEY_WARNING,
    COUNT_SUFFIX,
    KIND_COUNT,
    SECONDS_TIMESTAMP_BELOW,
    SECONDS_TIMESTAMP_WARNING,
    VALIDATE_MAX_LISTED,
    WARNING_TIMESTAMP_SECONDS,
)
from . import _input
from ._encode_py import Encoder, encode
from ._input import TooLong as _TooLong, line_blocks as _stream_blocks
from ._scan import (_LineFault, _fast_check, _fast_line, _fault_to_error, _scan_line, _text_of,
                    _too_long_fault, classic_key)
from .model import Metadata, Record
from .report import LineError, LineWarning, ValidationReport

__all__ = [
    "decode",
    "iter_decode",
    "validate",
    "encode",
    "Encoder",
    "classic_key",
]

# ---------------------------------------------------------------------------
# Bodies and streams.
# ---------------------------------------------------------------------------

BytesLike = Union[bytes, bytearray, memoryview]
Source = Union[BytesLike, str, Any]


def _now(now_ms: Any) -> Optional[int]:
    """``now_ms`` as an int (floats are truncated), or None for no window."""
    if now_ms is None:
        return None
    if isinstance(now_ms, bool) or not isinstance(now_ms, (int, float)):
        raise TypeError("now_ms must be epoch milliseconds (int), not %s"
                        % type(now_ms).__name__)
    return int(now_ms)


_as_bytes = _input.as_bytes


def _limit(value: Any, name: str) -> Optional[int]:
    """``max_errors``/``max_warnings``: None (no limit) or an int >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int >= 0 or None, not %s" % (name, type(value).__name__))
    value = int.__index__(value)
    if value < 0:
        raise ValueError("%s must be >= 0 or None, not %d" % (name, value))
    return min(value, sys.maxsize)


def _lines_of(buf: bytes) -> List[str]:
    lines = _text_of(buf).split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


_SLICE = 1 << 20


def _line_slices(buf: bytes, first_lineno: int) -> Iterator[Tuple[int, List[str]]]:
    """``(number of the first line, lines)`` for ~1 MB slices of ``buf``, cut after an LF.

    A body of any size is split into strings a slice at a time, so memory
    stays bounded: 100 MB of LFs would otherwise be 100 million strings.
    A slice boundary after an LF never splits a UTF-8 sequence.
    """
    n = len(buf)
    if n <= _SLICE:
        yield first_lineno, _lines_of(buf)
        return
    pos = 0
    lineno = first_lineno
    while pos < n:
        end = buf.find(b"\n", min(pos + _SLICE, n) - 1)
        end = n if end < 0 else end + 1
        lines = _lines_of(buf[pos:end])
        yield lineno, lines
        lineno += len(lines)
        pos = end


def _records(lines: List[str], first_lineno: int, now_ms: Optional[int],
             skip: bool) -> Iterator[Record]:
    # compress() drops empty lines (the commonest blank ones) at C speed;
    # every other line keeps its own number.
    for lineno, raw in compress(enumerate(lines, first_lineno), lines):
        rec = _fast_line(raw, now_ms)
        if rec is not None:
            yield rec
            continue
        try:
            rec = _scan_line(raw, now_ms)
        except _LineFault as f:
            if skip:
                continue
            raise _fault_to_error(f, raw, lineno) from None
        if rec is not None:
            yield rec


def _decode_block(buf: bytes, first_lineno: int, now_ms: Optional[int],
                  skip: bool) -> Iterator[Record]:
    for lineno, lines in _line_slices(buf, first_lineno):
        yield from _records(lines, lineno, now_ms, skip)


def decode(data: Union[BytesLike, str], *, now_ms: Optional[int] = None) -> List[Record]:
    """Decode a whole request body into records.

    Args:
        data: ``bytes``, ``bytearray``, ``memoryview`` or ``str`` holding one
            or more lines separated by LF (a CR before LF is ignored).
        now_ms: "now" in epoch milliseconds. When given, timestamps outside
            ``now - 1 h .. now + 10 min`` (inclusive) are invalid; when
            ``None`` no window is applied.

    Returns:
        A list of :class:`~dtproto.Metric` and :class:`~dtproto.Metadata`,
        one per non-blank line, in input order.

    Raises:
        DecodeError: at the first invalid line, with its 1-based ``line``,
            ``column``, ``code`` and ``reason``.
    """
    return list(_decode_block(_as_bytes(data), 1, _now(now_ms), False))


def iter_decode(
    source: Any, *, now_ms: Optional[int] = None, errors: str = "raise"
) -> Iterator[Record]:
    """Decode records from a stream with bounded memory.

    Args:
        source: a binary file object (anything with ``read(n)``), an iterable
            of byte chunks (lines may straddle chunk boundaries), or a whole
            ``bytes``/``str`` body.
        now_ms: see :func:`decode`.
        errors: ``"raise"`` (the default) raises :class:`DecodeError` at the
            first invalid line; ``"skip"`` skips invalid lines.

    Yields:
        Records in input order, exactly as :func:`decode` would return them.
    """
    if errors not in ("raise", "skip"):
        raise ValueError("errors must be 'raise' or 'skip', not %r" % (errors,))
    # Arguments are checked now, not on the first next(): a generator function
    # would defer the ValueError above to the first iteration.
    return _iter_records(source, _now(now_ms), errors == "skip")


def _iter_records(source: Any, now_ms: Optional[int], skip: bool) -> Iterator[Record]:
    return _records_of_source(source, now_ms, skip, _decode_block)


def _records_of_source(source: Any, now_ms: Optional[int], skip: bool,
                       decode_block: Any) -> Iterator[Record]:
    """The stream loop of ``iter_decode``, shared by both implementations.

    ``decode_block(block, first_lineno, now_ms, skip)`` yields the records of a
    block of whole lines: the reference's or the Cython core's.
    """
    for lineno, block in _stream_blocks(source):
        if isinstance(block, _TooLong):
            if not skip:
                f, raw = _too_long_fault(block)
                raise _fault_to_error(f, raw, lineno)
            continue
        yield from decode_block(block, lineno, now_ms, skip)


def _validate_lines(report: ValidationReport, lines: List[str], first_lineno: int,
                    now_ms: Optional[int], max_errors: Optional[int],
                    max_warnings: Optional[int]) -> None:
    # Counts live in locals until the end: attribute writes per line would
    # cost more than the fast path's own checks.
    ok = 0
    warned = 0
    warnings = report.warnings
    fast = _fast_check
    for lineno, raw in compress(enumerate(lines, first_lineno), lines):
        rec = fast(raw, now_ms)
        if rec is None:
            try:
                rec = _scan_line(raw, now_ms)
            except _LineFault as f:
                _add_error(report, f, raw, lineno, max_errors)
                continue
            if rec is None:
                continue
            if type(rec) is Metadata:
                ok += 1
                continue
        ok += 1
        # Metrics Classic renames (§4.1): a count without ".count", or a
        # gauge/summary with it, gets a warning.
        if rec[0].endswith(COUNT_SUFFIX) != (rec[2] == KIND_COUNT):
            warned += 1
            if max_warnings is None or len(warnings) < max_warnings:
                key = rec[0]
                warnings.append(LineWarning(
                    lineno, CHANGED_KEY_WARNING % (key, classic_key(key, rec[2]))
                ))
        ts = rec[8]
        if ts is not None and ts < SECONDS_TIMESTAMP_BELOW:
            warned += 1
            if max_warnings is None or len(warnings) < max_warnings:
                warnings.append(LineWarning(lineno, SECONDS_TIMESTAMP_WARNING % (ts, ts),
                                            WARNING_TIMESTAMP_SECONDS))
    report.lines_ok += ok
    report.warnings_total += warned


def _add_error(report: ValidationReport, f: _LineFault, raw: str, lineno: int,
               max_errors: Optional[int]) -> None:
    report.lines_invalid += 1
    report.error_counts[f.code] = report.error_counts.get(f.code, 0) + 1
    if max_errors is None or len(report.errors) < max_errors:
        err = _fault_to_error(f, raw, lineno)
        report.errors.append(LineError(lineno, err.column, err.code, err.reason, err.text))


def validate(
    source: Any,
    *,
    now_ms: Optional[int] = None,
    max_errors: Optional[int] = VALIDATE_MAX_LISTED,
    max_warnings: Optional[int] = VALIDATE_MAX_LISTED,
) -> ValidationReport:
    """Validate a body or a stream the way the ingest API would; never raises for content.

    Args:
        source: as for :func:`decode` (a whole body) or :func:`iter_decode`
            (a binary file or an iterable of byte chunks), read with bounded memory.
        now_ms: see :func:`decode`.
        max_errors: keep at most this many :class:`~dtproto.report.LineError`
            entries (``None``: all).  Counts stay exact either way.
        max_warnings: the same for warnings.

    Returns:
        A :class:`~dtproto.ValidationReport`; ``to_response()`` gives the
        ingest API's ValidationResponse for the same body.
    """
    return _validate_source(source, now_ms, max_errors, max_warnings, _validate_block)


def _validate_block(report: ValidationReport, buf: bytes, first_lineno: int,
                    now_ms: Optional[int], max_errors: Optional[int],
                    max_warnings: Optional[int]) -> int:
    """Validate a block of whole lines into ``report``; the number of its last line."""
    last = first_lineno - 1
    for first, lines in _line_slices(buf, first_lineno):
        _validate_lines(report, lines, first, now_ms, max_errors, max_warnings)
        last = first + len(lines) - 1
    return last


def _validate_source(source: Any, now_ms: Any, max_errors: Any, max_warnings: Any,
                     validate_block: Any) -> ValidationReport:
    """The stream loop of ``validate``, shared by both implementations.

    ``validate_block(report, block, first_lineno, now_ms, max_errors,
    max_warnings)`` counts a block of whole lines into the report and returns
    the number of its last line: the reference's or the Cython core's.
    """
    now_ms = _now(now_ms)
    max_errors = _limit(max_errors, "max_errors")
    max_warnings = _limit(max_warnings, "max_warnings")
    report = ValidationReport()
    total = 0
    for lineno, block in _stream_blocks(source):
        if isinstance(block, _TooLong):
            f, raw = _too_long_fault(block)
            _add_error(report, f, raw, lineno, max_errors)
            total = lineno
            continue
        total = validate_block(report, block, lineno, now_ms, max_errors, max_warnings)
    report.lines_total = total
    return report
