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
from itertools import chain, count as count_from
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

from ._constants import (
    CHANGED_KEY_WARNING,
    COUNT_SUFFIX,
    KIND_COUNT,
    KIND_GAUGE,
    SECONDS_TIMESTAMP_BELOW,
    SECONDS_TIMESTAMP_WARNING,
    VALIDATE_MAX_LISTED,
    WARNING_TIMESTAMP_SECONDS,
    WINDOW_FUTURE_MS,
    WINDOW_PAST_MS,
)
from . import _input
from ._encode_py import Encoder, encode
from ._input import TooLong as _TooLong, line_blocks as _stream_blocks
from ._scan import (_CHECK_RE, _CHECK_WINDOW_RE, _LineFault, _fast_check, _fast_line, _fast_rows,
                    _fault_to_error, _ranges, _scan_line, _summary_problem, _text_of,
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


_SLICE = 1 << 20


def _text_slices(buf: bytes) -> Iterator[Tuple[str, int]]:
    """``(text, end)`` for ~1 MB slices of ``buf``, cut after an LF; ``text[:end]``
    holds the slice's lines without the LF that ends the last one.

    A body of any size is turned into text a slice at a time, so memory stays
    bounded.  A slice boundary after an LF never splits a UTF-8 sequence.
    """
    n = len(buf)
    pos = 0
    while pos < n:
        cut = buf.find(b"\n", min(pos + _SLICE, n) - 1) if n - pos > _SLICE else -1
        cut = n if cut < 0 else cut + 1
        text = _text_of(buf[pos:cut])
        yield text, len(text) - 1 if text.endswith("\n") else len(text)
        pos = cut


def _records(lines: List[str], recs: List[Optional[Record]], first_lineno: int,
             now_ms: Optional[int], skip: bool) -> Iterator[Record]:
    """The records of ``lines``, given what the block path made of them
    (``recs``: a record, or None where it declined the line)."""
    for lineno, rec, raw in zip(count_from(first_lineno), recs, lines):
        if rec is None:
            if not raw:
                continue
            rec = _fast_line(raw, now_ms)
            if rec is None:
                try:
                    rec = _scan_line(raw, now_ms)
                except _LineFault as f:
                    if skip:
                        continue
                    raise _fault_to_error(f, raw, lineno) from None
                if rec is None:
                    continue
        yield rec


def _record_runs(buf: bytes, first_lineno: int, now_ms: Optional[int],
                 skip: bool) -> Iterator[Iterable[Record]]:
    """The records of a block of whole lines, a run (a range of lines) at a time.

    A range goes through the block path first; only a range where it
    declined a line is split into lines, for the per-line paths.
    """
    lineno = first_lineno
    for text, end in _text_slices(buf):
        for pos, stop in _ranges(text, 0, end):
            recs, declined = _fast_rows(text, pos, stop, now_ms)
            if not declined:
                yield recs
            else:
                yield _records(text[pos:stop].split("\n"), recs, lineno, now_ms, skip)
            lineno += len(recs)


def _decode_block(buf: bytes, first_lineno: int, now_ms: Optional[int],
                  skip: bool) -> Iterator[Record]:
    return chain.from_iterable(_record_runs(buf, first_lineno, now_ms, skip))


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
    out: List[Record] = []
    for run in _record_runs(_as_bytes(data), 1, _now(now_ms), False):
        out += run
    return out


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


def _validate_text(report: ValidationReport, text: str, end: int, first_lineno: int,
                   now_ms: Optional[int], max_errors: Optional[int],
                   max_renames: Optional[int], max_hints: Optional[int]) -> int:
    """Validate the lines of ``text[:end]`` into ``report``; the number of lines.

    Rows the block pattern takes need no per-line work but the warnings (and a
    summary's consistency, a timestamp's window); the others are split out
    and go through the per-line fast path and the exact scanner.
    """
    # Counts live in locals until the end: attribute writes per line would
    # cost more than the fast path's own checks.
    ok = 0
    warned = 0
    warnings = report.warnings
    # Each kind has its cap: renames (what the server reports) and dtproto's
    # hints, so that hints never crowd out a rename.
    hints = report._kept_hints
    renames = len(warnings) - hints
    rx = _CHECK_RE if now_ms is None else _CHECK_WINDOW_RE
    lineno = first_lineno - 1
    for pos, stop in _ranges(text, 0, end):
        first = lineno + 1
        lines = None
        for key, mn, mx, sm, cnt, delta, ts in rx.findall(text, pos, stop):
            lineno += 1
            t = None
            if key:
                if ts:
                    t = int(ts)
                    if now_ms is not None and not (
                            now_ms - WINDOW_PAST_MS <= t <= now_ms + WINDOW_FUTURE_MS):
                        key = ""
                if mn and key and _summary_problem(float(mn), float(mx), float(sm),
                                                   int(cnt)) is not None:
                    key = ""
                is_count = delta != ""
            if not key:
                if lines is None:
                    lines = text[pos:stop].split("\n")
                raw = lines[lineno - first]
                if not raw:
                    continue
                rec = _fast_check(raw, now_ms)
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
                key, is_count, t = rec[0], rec[2] == KIND_COUNT, rec[8]
            ok += 1
            # Metrics Classic renames (§4.1): a count without ".count", or a
            # gauge/summary with it, gets a warning.
            if key.endswith(COUNT_SUFFIX) != is_count:
                warned += 1
                if max_renames is None or renames < max_renames:
                    renames += 1
                    warnings.append(LineWarning(lineno, CHANGED_KEY_WARNING % (
                        key, classic_key(key, KIND_COUNT if is_count else KIND_GAUGE))))
            if t is not None and t < SECONDS_TIMESTAMP_BELOW:
                warned += 1
                if max_hints is None or hints < max_hints:
                    hints += 1
                    warnings.append(LineWarning(lineno, SECONDS_TIMESTAMP_WARNING % (t, t),
                                                WARNING_TIMESTAMP_SECONDS))
    report.lines_ok += ok
    report.warnings_total += warned
    report._kept_hints = hints
    return lineno - first_lineno + 1


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
        max_warnings: the same for the warnings of each kind (renames, and
            dtproto's timestamp-in-seconds hints: one never crowds out the other).

    Returns:
        A :class:`~dtproto.ValidationReport`; ``to_response()`` gives the
        ingest API's ValidationResponse for the same body.
    """
    return _validate_source(source, now_ms, max_errors, max_warnings, _validate_block)


def _validate_kinds(source: Any, now_ms: Optional[int], max_errors: Optional[int],
                    max_renames: Optional[int], max_hints: Optional[int]) -> ValidationReport:
    """:func:`validate` with a cap of its own for each kind of warning: for a
    caller that continues a report whose kinds have different rooms left
    (the CLI's segments), so that nothing is built for a kind already full."""
    return _validate_source(source, now_ms, max_errors, max_renames, _validate_block,
                            max_hints)


def _validate_block(report: ValidationReport, buf: bytes, first_lineno: int,
                    now_ms: Optional[int], max_errors: Optional[int],
                    max_renames: Optional[int], max_hints: Optional[int]) -> int:
    """Validate a block of whole lines into ``report``; the number of its last line."""
    lineno = first_lineno
    for text, end in _text_slices(buf):
        lineno += _validate_text(report, text, end, lineno, now_ms, max_errors, max_renames,
                                 max_hints)
    return lineno - 1


_SAME: Any = object()   # max_hints: the cap of the renames


def _validate_source(source: Any, now_ms: Any, max_errors: Any, max_warnings: Any,
                     validate_block: Any, max_hints: Any = _SAME) -> ValidationReport:
    """The stream loop of ``validate``, shared by both implementations.

    ``validate_block(report, block, first_lineno, now_ms, max_errors,
    max_renames, max_hints)`` counts a block of whole lines into the report
    and returns the number of its last line: the reference's or the Cython
    core's.  ``max_warnings`` caps the renames, and the hints too unless
    ``max_hints`` is given.
    """
    now_ms = _now(now_ms)
    max_errors = _limit(max_errors, "max_errors")
    max_warnings = _limit(max_warnings, "max_warnings")
    max_hints = max_warnings if max_hints is _SAME else _limit(max_hints, "max_warnings")
    report = ValidationReport()
    total = 0
    for lineno, block in _stream_blocks(source):
        if isinstance(block, _TooLong):
            f, raw = _too_long_fault(block)
            _add_error(report, f, raw, lineno, max_errors)
            total = lineno
            continue
        total = validate_block(report, block, lineno, now_ms, max_errors, max_warnings,
                               max_hints)
    report.lines_total = total
    return report
