"""Pure-Python reference implementation of the Dynatrace metric line protocol.

This module *defines* the behaviour; the Cython core (``csrc/_codec_c.pyx``)
mirrors it function by function and must agree with it byte for byte and
error for error (``tests/test_differential.py``).

Structure:

* ``_scan_*`` functions form the exact scanner: one left-to-right pass over a
  line in which the first violation wins.  It is the only place that decides
  whether a line is valid and which error it gets.
* ``_fast_*`` functions are shortcuts for the common, valid case built on
  ``str`` methods and a bounded cache of already-validated ``key,dims`` heads.
  They return ``None`` whenever the line is not entirely ordinary, and the
  exact scanner takes over; they never raise and never accept what the scanner
  rejects (``tests/test_decode.py::test_fast_path_agrees``).
* Input of any form is turned into UTF-8 bytes first (``str`` with
  ``surrogatepass``), then into text with ``surrogateescape``: an undecodable
  byte becomes one lone surrogate, which is invalid wherever it appears.
"""

from __future__ import annotations

import datetime
import re
import sys
import warnings as _warnings
from itertools import compress
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

from ._constants import (
    CHANGED_KEY_WARNING,
    COUNT_SUFFIX,
    DIMENSION_KEY_CHARS,
    DIMENSION_KEY_SECTION_START,
    ESCAPES,
    GAUGE_SUFFIX,
    KIND_COUNT,
    KIND_GAUGE,
    KIND_SUMMARY,
    MAX_DESCRIPTION,
    MAX_DIMENSION_KEY,
    MAX_DIMENSION_VALUE,
    MAX_DIMENSIONS,
    MAX_DISPLAY_NAME,
    MAX_INT64,
    MAX_LINE_BYTES,
    MAX_LINE_CHARS,
    MAX_METRIC_KEY,
    MAX_TIMESTAMP_DIGITS,
    MAX_UNIT,
    META_DESCRIPTION,
    META_DISPLAY_NAME,
    META_PROPERTIES,
    META_TYPES,
    META_UNIT,
    METRIC_KEY_CHARS,
    METRIC_KEY_FIRST,
    METRIC_KEY_SECTION_START,
    MIN_METRIC_KEY,
    NON_FINITE_WORDS,
    RESERVED_PREFIX,
    SECONDS_TIMESTAMP_BELOW,
    SECONDS_TIMESTAMP_WARNING,
    SUMMARY_FIELDS,
    SUMMARY_TOLERANCE,
    UNIT_CHARS,
    WARNING_TIMESTAMP_SECONDS,
    WINDOW_FUTURE_MS,
    WINDOW_PAST_MS,
)
from . import _input
from .errors import DecodeError, EncodeError, ErrorCode, TimestampWarning, reason_text
from .model import Metadata, Metric, Record, as_dimensions
from .report import LineError, LineWarning, ValidationReport

__all__ = [
    "decode",
    "iter_decode",
    "validate",
    "encode",
    "Encoder",
    "classic_key",
]

E = ErrorCode
_tuple_new = tuple.__new__
_CHUNK = 1 << 20           # bytes read per step when streaming
_CACHE_MAX = 16_384        # bounded caches: hostile input cannot grow memory
_TEXT_CHARS = 100          # DecodeError.text is truncated to this many characters


class _LineFault(Exception):
    """Internal: the scanner found the first violation of a line."""

    __slots__ = ("code", "index", "extra")

    def __init__(self, code: ErrorCode, index: int, extra: Any = None) -> None:
        self.code = code
        self.index = index          # 0-based code-point index within the line
        self.extra = extra


# ---------------------------------------------------------------------------
# Field validators: one definition of each rule, used by the scanner (which
# first finds where the field ends) and by the encoder (whole field).
# Each returns None or (code, offset within the field, extra).
# ---------------------------------------------------------------------------

def _metric_key_problem(key: str) -> Optional[Tuple[ErrorCode, int, Any]]:
    """Rules of §4: sections of [A-Za-z0-9_-], first char [A-Za-z_], 3..255, no ``dt.``."""
    n = len(key)
    if n == 0:
        return (E.MISSING_METRIC_KEY, 0, None)
    section_start = True
    first_section = True
    for i in range(n):
        c = key[i]
        if section_start:
            if c in (METRIC_KEY_FIRST if first_section else METRIC_KEY_SECTION_START):
                section_start = False
            else:
                return (E.INVALID_METRIC_KEY, i, None)
        elif c == ".":
            section_start = True
            first_section = False
        elif c not in METRIC_KEY_CHARS:
            return (E.INVALID_METRIC_KEY, i, None)
    if section_start:  # trailing dot: the empty section ends at the terminator
        return (E.INVALID_METRIC_KEY, n, None)
    if n < MIN_METRIC_KEY or n > MAX_METRIC_KEY:
        return (E.METRIC_KEY_LENGTH, 0, n)
    if key.startswith(RESERVED_PREFIX):
        return (E.RESERVED_PREFIX, 0, None)
    return None


def _dimension_key_problem(key: str) -> Optional[Tuple[ErrorCode, int, Any]]:
    """Rules of §5: sections of [a-z0-9_:-] starting with [a-z_], 1..100 chars."""
    n = len(key)
    if n == 0:
        return (E.EMPTY_DIMENSION_KEY, 0, None)
    section_start = True
    for i in range(n):
        c = key[i]
        if section_start:
            if c in DIMENSION_KEY_SECTION_START:
                section_start = False
            else:
                return (E.INVALID_DIMENSION_KEY, i, None)
        elif c == ".":
            section_start = True
        elif c not in DIMENSION_KEY_CHARS:
            return (E.INVALID_DIMENSION_KEY, i, None)
    if section_start:
        return (E.INVALID_DIMENSION_KEY, n, None)
    if n > MAX_DIMENSION_KEY:
        return (E.DIMENSION_KEY_TOO_LONG, 0, n)
    return None


def _value_char_problem(value: str) -> Optional[Tuple[ErrorCode, int, Any]]:
    """A decoded value may hold any Unicode scalar but controls ([A-10])."""
    for i, c in enumerate(value):
        if c < " " or c == "\x7f":
            return (E.CONTROL_CHARACTER, i, None)
        if "\ud800" <= c <= "\udfff":
            return (E.INVALID_UTF8, i, None)
    return None


def _summary_problem(mn: float, mx: float, sm: float, cnt: int) -> Optional[ErrorCode]:
    """Consistency of a summary (§7.3), in the server's order of checks."""
    if mn > mx:
        return E.SUMMARY_MIN_GT_MAX
    if cnt == 0:
        if mn != 0.0 or mx != 0.0 or sm != 0.0:
            return E.SUMMARY_COUNT_ZERO
        return None
    avg = sm / cnt
    if mn - avg > SUMMARY_TOLERANCE or avg - mx > SUMMARY_TOLERANCE:
        return E.SUMMARY_INCONSISTENT
    return None


def _unit_ok(unit: str) -> bool:
    if not 1 <= len(unit) <= MAX_UNIT:
        return False
    for c in unit:
        if c not in UNIT_CHARS:
            return False
    return True


# ---------------------------------------------------------------------------
# Numbers (§7.1): grammar first, then a correctly rounded conversion.
# ---------------------------------------------------------------------------

# ASCII digits only: ``\d`` would accept other scripts' digits, as float() does.
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_INF = float("inf")


def _scan_number(s: str, a: int, b: int) -> float:
    """Parse ``s[a:b]`` as a finite double or raise the scanner fault."""
    t = s[a:b]
    if _NUMBER_RE.match(t) is None:
        w = t[1:] if t[:1] in ("+", "-") else t
        if w.lower() in NON_FINITE_WORDS:
            raise _LineFault(E.NON_FINITE_NUMBER, a)
        raise _LineFault(E.INVALID_NUMBER, a)
    v = float(t)
    if v == _INF or v == -_INF:
        raise _LineFault(E.NON_FINITE_NUMBER, a)
    return v


def _is_digits(t: str) -> bool:
    return t.isascii() and t.isdigit()


def _scan_uint(s: str, a: int, b: int, invalid: ErrorCode, overflow: ErrorCode,
               any_width: bool = False) -> int:
    """``1*19DIGIT`` not above 2**63-1 (timestamps, §8).

    With ``any_width``: ``1*DIGIT`` not above 2**63-1 (summary counts, §7.3),
    so leading zeros do not count toward the 19 digits.
    """
    t = s[a:b]
    if not _is_digits(t):
        raise _LineFault(invalid, a)
    if any_width:
        t = t.lstrip("0") or "0"
    if len(t) > MAX_TIMESTAMP_DIGITS:
        raise _LineFault(overflow, a)
    v = int(t)
    if v > MAX_INT64:
        raise _LineFault(overflow, a)
    return v


# ---------------------------------------------------------------------------
# The exact scanner.
# ---------------------------------------------------------------------------

def _token_end(s: str, i: int, n: int, stops: str) -> int:
    while i < n and s[i] not in stops:
        i += 1
    return i


def _skip_separators(s: str, i: int, n: int) -> int:
    while i < n and (s[i] == " " or s[i] == "\t"):
        i += 1
    return i


def _scan_metric_key(s: str, i: int, n: int) -> Tuple[str, int]:
    """The key runs to the first ``,``, SP or HTAB; returns (key, end index)."""
    j = _token_end(s, i, n, ", \t")
    key = s[i:j]
    problem = _metric_key_problem(key)
    if problem is not None:
        code, off, extra = problem
        raise _LineFault(code, i + off, extra)
    return key, j


def _scan_dimension_key(s: str, i: int, n: int) -> Tuple[str, int]:
    """A dimension key runs to ``=``; returns (key, index of ``=``)."""
    j = _token_end(s, i, n, "=, \t")
    key = s[i:j]
    problem = _dimension_key_problem(key)
    if problem is not None:
        # The key's own rules come before the check for "=": a complete but
        # too long key is reported as too long even when "=" is missing.
        code, off, extra = problem
        raise _LineFault(code, i + off, extra)
    if j >= n or s[j] != "=":
        raise _LineFault(E.DIMENSION_WITHOUT_VALUE, j)
    return key, j


def _scan_escape(s: str, i: int, n: int) -> str:
    """The decoded text of the escape at ``s[i] == "\\"`` (§6.3, [A-9])."""
    if i + 1 >= n:
        raise _LineFault(E.DANGLING_ESCAPE, i)
    d = s[i + 1]
    if d < " " or d == "\x7f":
        raise _LineFault(E.CONTROL_CHARACTER, i + 1)
    if "\ud800" <= d <= "\udfff":
        raise _LineFault(E.INVALID_UTF8, i + 1)
    return ESCAPES.get(d, s[i:i + 2])


def _scan_value(s: str, i: int, n: int, max_len: Optional[int]) -> Tuple[str, int]:
    """A quoted or bare value starting at ``i`` (§6); returns (decoded, end index).

    The end index points at the terminator: ``,``, SP, HTAB (after a closing
    quote only) or the end of the line.
    """
    start = i
    parts: List[str] = []
    if i < n and s[i] == '"':
        i += 1
        seg = i
        while True:
            if i >= n:
                raise _LineFault(E.UNTERMINATED_QUOTED_VALUE, start)
            c = s[i]
            if c == '"':
                break
            if c == "\\":
                parts.append(s[seg:i])
                parts.append(_scan_escape(s, i, n))
                i += 2
                seg = i
                continue
            if c < " " or c == "\x7f":
                raise _LineFault(E.CONTROL_CHARACTER, i)
            if "\ud800" <= c <= "\udfff":
                raise _LineFault(E.INVALID_UTF8, i)
            i += 1
        parts.append(s[seg:i])
        i += 1  # the closing quote
        if i < n and s[i] not in ", \t":
            raise _LineFault(E.GARBAGE_AFTER_QUOTED_VALUE, i)
    else:
        seg = i
        while i < n:
            c = s[i]
            if c == "," or c == " ":
                break
            if c == "\\":
                parts.append(s[seg:i])
                parts.append(_scan_escape(s, i, n))
                i += 2
                seg = i
                continue
            if c == "=" or c == '"':
                raise _LineFault(E.UNESCAPED_SPECIAL, i)
            if c < " " or c == "\x7f":  # HTAB included: only SP ends a bare value
                raise _LineFault(E.CONTROL_CHARACTER, i)
            if "\ud800" <= c <= "\udfff":
                raise _LineFault(E.INVALID_UTF8, i)
            i += 1
        parts.append(s[seg:i])
    value = "".join(parts) if len(parts) > 1 else parts[0]
    if max_len is not None and len(value) > max_len:
        raise _LineFault(E.DIMENSION_VALUE_TOO_LONG, start, len(value))
    return value, i


def _scan_payload(s: str, i: int, j: int) -> tuple:
    """The payload token ``s[i:j]`` → (kind, value, min, max, sum, count)."""
    if s.startswith("gauge,", i, j):
        r = i + 6
        if s.find("=", r, j) < 0:
            return (KIND_GAUGE, _scan_number(s, r, j), None, None, None, None)
        return _scan_summary(s, i, r, j)
    if s.startswith("count,", i, j):
        r = i + 6
        if not s.startswith("delta=", r, j):
            raise _LineFault(E.COUNT_REQUIRES_DELTA, r)
        return (KIND_COUNT, _scan_number(s, r + 6, j), None, None, None, None)
    token = s[i:j]
    if token == KIND_GAUGE or token == KIND_COUNT:
        raise _LineFault(E.MISSING_DATA_POINT, j)
    c = token[0]
    if ("a" <= c <= "z" or "A" <= c <= "Z") and token.lower() not in NON_FINITE_WORDS:
        raise _LineFault(E.INVALID_PAYLOAD, i)
    return (KIND_GAUGE, _scan_number(s, i, j), None, None, None, None)


def _scan_summary(s: str, payload_start: int, r: int, j: int) -> tuple:
    """``gauge,min=..,max=..,sum=..,count=..``: each field once, any order [A-12]."""
    fields: dict = {}
    p = r
    while True:
        q = s.find(",", p, j)
        if q < 0:
            q = j
        eq = s.find("=", p, q)
        if eq < 0:
            raise _LineFault(E.INVALID_SUMMARY_FIELD, p)
        name = s[p:eq]
        if name not in SUMMARY_FIELDS or name in fields:
            raise _LineFault(E.INVALID_SUMMARY_FIELD, p)
        if name == "count":
            fields[name] = _scan_uint(
                s, eq + 1, q, E.SUMMARY_COUNT_NOT_INTEGER, E.SUMMARY_COUNT_OVERFLOW, True
            )
        else:
            fields[name] = _scan_number(s, eq + 1, q)
        if q >= j:
            break
        p = q + 1
    if len(fields) != 4:
        raise _LineFault(E.INCOMPLETE_SUMMARY, payload_start)
    mn, mx, sm, cnt = fields["min"], fields["max"], fields["sum"], fields["count"]
    problem = _summary_problem(mn, mx, sm, cnt)
    if problem is not None:
        raise _LineFault(problem, payload_start, (mn, mx, sm, cnt))
    return (KIND_SUMMARY, None, mn, mx, sm, cnt)


def _scan_data_line(s: str, n: int, now_ms: Optional[int]) -> Metric:
    key, i = _scan_metric_key(s, 0, n)
    dims: List[Tuple[str, str]] = []
    if i < n and s[i] == ",":
        i += 1
        while True:
            if len(dims) == MAX_DIMENSIONS:
                raise _LineFault(E.TOO_MANY_DIMENSIONS, i)
            dkey, i = _scan_dimension_key(s, i, n)
            value, i = _scan_value(s, i + 1, n, MAX_DIMENSION_VALUE)
            dims.append((dkey, value))
            if i < n and s[i] == ",":
                i += 1
                continue
            break
    if i >= n:
        raise _LineFault(E.MISSING_PAYLOAD, n)
    i = _skip_separators(s, i, n)
    j = _token_end(s, i, n, " \t")
    kind, value, mn, mx, sm, cnt = _scan_payload(s, i, j)
    ts = None
    i = _skip_separators(s, j, n)
    if i < n:
        j = _token_end(s, i, n, " \t")
        ts = _scan_uint(s, i, j, E.INVALID_TIMESTAMP, E.INVALID_TIMESTAMP)
        if now_ms is not None and not (
            now_ms - WINDOW_PAST_MS <= ts <= now_ms + WINDOW_FUTURE_MS
        ):
            raise _LineFault(E.TIMESTAMP_OUT_OF_RANGE, i)
        i = _skip_separators(s, j, n)
        if i < n:
            raise _LineFault(E.UNEXPECTED_TRAILING, i)
    return _tuple_new(Metric, (key, tuple(dims), kind, value, mn, mx, sm, cnt, ts))


def _scan_metadata_line(s: str, n: int) -> Metadata:
    """``#<key> <gauge|count> dt.meta.<name>=<value>[,[SP]dt.meta.<name>=<value>...]`` (§9)."""
    key, i = _scan_metric_key(s, 1, n)
    if i >= n or s[i] == ",":
        raise _LineFault(E.INVALID_METADATA_LINE, i)
    i = _skip_separators(s, i, n)
    j = _token_end(s, i, n, " \t")
    metric_type = s[i:j]
    if metric_type not in META_TYPES or j >= n:
        raise _LineFault(E.INVALID_METADATA_LINE, i if metric_type not in META_TYPES else j)
    i = _skip_separators(s, j, n)
    props: List[Tuple[str, str]] = []
    while True:
        j = _token_end(s, i, n, "=, \t")
        if j >= n or s[j] != "=" or j == i:
            raise _LineFault(E.INVALID_METADATA_LINE, j if j > i else i)
        name = s[i:j]
        if name not in META_PROPERTIES:
            raise _LineFault(E.UNKNOWN_METADATA_PROPERTY, i)
        vstart = j + 1
        value, i = _scan_value(s, vstart, n, None)
        if name == META_UNIT:
            if not _unit_ok(value):
                raise _LineFault(E.INVALID_UNIT, vstart)
        elif name == META_DESCRIPTION:
            if len(value) > MAX_DESCRIPTION:
                raise _LineFault(E.DESCRIPTION_LENGTH, vstart, len(value))
        elif len(value) > MAX_DISPLAY_NAME:
            raise _LineFault(E.DISPLAY_NAME_LENGTH, vstart, len(value))
        props.append((name, value))
        if i >= n:
            break
        if s[i] == ",":
            i += 1
            if i < n and s[i] == " ":
                i += 1
            continue
        raise _LineFault(E.UNEXPECTED_TRAILING, _skip_separators(s, i, n))
    return _tuple_new(Metadata, (key, metric_type, tuple(props)))


def _prepare_line(raw: str) -> Optional[str]:
    """Strip the line terminator's CR and trailing blanks; None for a blank line.

    Raises the fault for a line that is too long or starts with a blank.
    """
    line = raw[:-1] if raw.endswith("\r") else raw
    if len(line) > MAX_LINE_CHARS:
        raise _LineFault(E.LINE_TOO_LONG, MAX_LINE_CHARS, len(line))
    s = line.rstrip(" \t")
    if not s:
        return None
    if s[-1] == "\\" and len(s) < len(line):
        # "\" + SP (or HTAB) is an escape (§6.3), not a trailing blank:
        # after an odd run of backslashes the first blank belongs to the value.
        k = len(s) - 1
        while k > 0 and s[k - 1] == "\\":
            k -= 1
        if (len(s) - k) % 2:
            s = line[: len(s) + 1]
    c = s[0]
    if c == " " or c == "\t":
        raise _LineFault(E.LEADING_WHITESPACE, 0)
    return s


def _scan_line(raw: str, now_ms: Optional[int]) -> Optional[Record]:
    """Exact scan of one line: the record, None for a blank line, or _LineFault."""
    s = _prepare_line(raw)
    if s is None:
        return None
    if s[0] == "#":
        return _scan_metadata_line(s, len(s))
    return _scan_data_line(s, len(s), now_ms)


# ---------------------------------------------------------------------------
# Fast path for ordinary valid lines.
# ---------------------------------------------------------------------------

_head_cache: dict = {}


def _fast_number(t: str) -> Optional[float]:
    # float() accepts exactly the §7.1 grammar once the text is ASCII, has no
    # "_" and no surrounding whitespace, and the result is finite ("nan",
    # "inf" and overflow all give non-finite values).
    try:
        v = float(t)
    except ValueError:
        return None
    if v - v != 0.0 or not t.isascii() or "_" in t or t[0] <= " " or t[-1] <= " ":
        return None
    return v


def _fast_head(head: str) -> Optional[tuple]:
    """(key, dims) for an ordinary ``key,dims`` head, cached; None otherwise."""
    hd = _head_cache.get(head)
    if hd is not None:
        return hd
    if '"' in head or "\\" in head or "\t" in head or len(head) > MAX_LINE_CHARS:
        return None
    try:
        rec = _scan_data_line(head + " 0", len(head) + 2, None)
    except _LineFault:
        return None
    hd = (rec[0], rec[1])
    if len(_head_cache) >= _CACHE_MAX:
        _head_cache.clear()
    _head_cache[head] = hd
    return hd


def _fast_line(s: str, now_ms: Optional[int]) -> Optional[Metric]:
    """The record for an ordinary valid line, or None (then the scanner decides)."""
    sp = s.find(" ")
    if sp < MIN_METRIC_KEY or len(s) > MAX_LINE_CHARS:
        return None
    hd = _fast_head(s[:sp])
    if hd is None:
        return None
    parts = s[sp + 1:].split(" ")
    np = len(parts)
    ts = None
    if np == 2:
        t = parts[1]
        if not (0 < len(t) <= MAX_TIMESTAMP_DIGITS and t.isascii() and t.isdigit()):
            return None
        ts = int(t)
        if ts > MAX_INT64 or (
            now_ms is not None
            and not (now_ms - WINDOW_PAST_MS <= ts <= now_ms + WINDOW_FUTURE_MS)
        ):
            return None
    elif np != 1:
        return None
    p = parts[0]
    if p.startswith("gauge,"):
        body = p[6:]
        if "=" not in body:
            v = _fast_number(body)
            if v is None:
                return None
            return _tuple_new(Metric, (hd[0], hd[1], KIND_GAUGE, v, None, None, None, None, ts))
        f = body.split(",")
        if len(f) != 4:
            return None
        a, b, c, d = f
        if not (
            a.startswith("min=") and b.startswith("max=") and c.startswith("sum=")
            and d.startswith("count=")
        ):
            return None
        mn = _fast_number(a[4:])
        mx = _fast_number(b[4:])
        sm = _fast_number(c[4:])
        ct = d[6:]
        if mn is None or mx is None or sm is None or not (
            0 < len(ct) <= MAX_TIMESTAMP_DIGITS and ct.isascii() and ct.isdigit()
        ):
            return None
        cnt = int(ct)
        if cnt > MAX_INT64 or _summary_problem(mn, mx, sm, cnt) is not None:
            return None
        return _tuple_new(Metric, (hd[0], hd[1], KIND_SUMMARY, None, mn, mx, sm, cnt, ts))
    if p.startswith("count,delta="):
        v = _fast_number(p[12:])
        if v is None:
            return None
        return _tuple_new(Metric, (hd[0], hd[1], KIND_COUNT, v, None, None, None, None, ts))
    if not p or not ("0" <= p[0] <= "9" or p[0] in "+-."):
        return None
    v = _fast_number(p)
    if v is None:
        return None
    return _tuple_new(Metric, (hd[0], hd[1], KIND_GAUGE, v, None, None, None, None, ts))


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


def _text_of(buf: bytes) -> str:
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError:
        return buf.decode("utf-8", "surrogateescape")


def _fault_to_error(f: _LineFault, raw: str, lineno: int) -> DecodeError:
    line = raw[:-1] if raw.endswith("\r") else raw
    column = f.index + 1
    return DecodeError(
        f.code, reason_text(f.code, line, column, f.extra), lineno, column, line[:_TEXT_CHARS]
    )


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


def _body_records(buf: bytes, first_lineno: int, now_ms: Optional[int],
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
    return list(_body_records(_as_bytes(data), 1, _now(now_ms), False))


class _TooLong:
    """A line cut short by the streaming reader: it is over MAX_LINE_BYTES."""

    __slots__ = ("head",)

    def __init__(self, head: bytes) -> None:
        self.head = head


def _stream_blocks(source: Any) -> Iterator[Tuple[int, Any]]:
    """Split a stream into (first line number, block) with bounded memory.

    A block is either ``bytes`` holding whole lines, or a ``_TooLong`` marker
    for one line that exceeds MAX_LINE_BYTES (it cannot be valid, and only its
    beginning is kept for the error message).
    """
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        # A whole body is one block: no copy, no line count.  Its over-long
        # lines get the same error as the cut-off ones of a stream.
        buf = _as_bytes(source)
        if buf:
            yield 1, buf
        return
    lineno = 1
    carry = b""
    skipping: Optional[_TooLong] = None  # inside an over-long line
    for chunk in _input.byte_chunks(source):
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
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
        else:
            block = data[: cut + 1]
            carry = data[cut + 1:]
            yield lineno, block
            lineno += block.count(b"\n")
        if len(carry) > MAX_LINE_BYTES:
            skipping = _TooLong(carry[:MAX_LINE_BYTES])
            carry = b""
    if skipping is not None:
        yield lineno, skipping
    elif carry:
        yield lineno, carry


def _too_long_fault(marker: _TooLong) -> Tuple[_LineFault, str]:
    raw = marker.head.decode("utf-8", "surrogateescape")
    return _LineFault(E.LINE_TOO_LONG, MAX_LINE_CHARS, None), raw


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
    for lineno, block in _stream_blocks(source):
        if isinstance(block, _TooLong):
            if not skip:
                f, raw = _too_long_fault(block)
                raise _fault_to_error(f, raw, lineno)
            continue
        yield from _body_records(block, lineno, now_ms, skip)


def classic_key(key: str, kind: str) -> str:
    """The key Metrics Classic stores a data point under (docs/protocol.md §4.1).

    ``count`` data points get ``.count`` appended unless the key already ends
    with it; gauges and summaries whose key ends with ``.count`` get
    ``.gauge`` appended; anything else is unchanged.  The match is literal and
    case-sensitive ([A-23]).
    """
    if kind == KIND_COUNT:
        return key if key.endswith(COUNT_SUFFIX) else key + COUNT_SUFFIX
    if kind == KIND_GAUGE or kind == KIND_SUMMARY:
        return key + GAUGE_SUFFIX if key.endswith(COUNT_SUFFIX) else key
    raise ValueError("kind must be 'gauge', 'count' or 'summary', not %r" % (kind,))


def _validate_lines(report: ValidationReport, lines: List[str], first_lineno: int,
                    now_ms: Optional[int], max_errors: Optional[int],
                    max_warnings: Optional[int]) -> None:
    # Counts live in locals until the end: attribute writes per line would
    # cost more than the fast path's own checks.
    ok = 0
    warned = 0
    warnings = report.warnings
    fast = _fast_line
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
    max_errors: Optional[int] = 10_000,
    max_warnings: Optional[int] = 10_000,
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
        for first, lines in _line_slices(block, lineno):
            _validate_lines(report, lines, first, now_ms, max_errors, max_warnings)
            total = first + len(lines) - 1
    report.lines_total = total
    return report


# ---------------------------------------------------------------------------
# Encoding (docs/protocol.md §13: the canonical strict form).
# ---------------------------------------------------------------------------

_ESCAPE_TABLE = str.maketrans({c: "\\" + c for c in ',= \\"'})
_valid_keys: dict = {}      # metric key -> True, bounded
_dim_segments: dict = {}    # (key, value) -> ",key=escaped", bounded


def _encode_error(code: ErrorCode, field: str, text: str, offset: int = 0,
                  extra: Any = None) -> EncodeError:
    return EncodeError(reason_text(code, text, offset + 1, extra), field, code)


def _int_text(v: int) -> str:
    """An int for a message: its digits, or its size when they would be absurd
    (Python refuses ``str()`` of an int of more than 4,300 digits)."""
    if v.bit_length() <= 256:
        return str(v)
    return "<%d-bit-int>" % v.bit_length()


def _number_value(x: Any, field: str) -> float:
    """The value of an int or float argument, as a float.

    Read from the object itself, as the Cython core reads it: a subclass's
    ``__float__``/``__index__``/``__str__`` is never asked, so no subclass can
    make the two implementations (or the text and the checks) disagree.
    """
    if type(x) is float:
        return x  # type: ignore[no-any-return]
    if isinstance(x, float):
        return float.__float__(x)
    if isinstance(x, int) and not isinstance(x, bool):
        try:
            return int.__float__(x)
        except OverflowError:
            raise _encode_error(E.NON_FINITE_NUMBER, field, _int_text(int.__index__(x))) from None
    raise EncodeError("a number is required, not %s" % type(x).__name__, field,
                      E.INVALID_NUMBER)


def _format_number(x: Any, field: str) -> str:
    """Shortest round-trip text with a decimal point before any exponent (docs/protocol.md §13)."""
    v = _number_value(x, field)
    if v - v != 0.0:
        raise _encode_error(E.NON_FINITE_NUMBER, field, repr(v))
    r = repr(v)
    if r.endswith(".0"):
        return r[:-2]
    e = r.find("e")
    if e < 0:
        return r
    mant = r[:e]
    if "." not in mant:
        mant += ".0"
    exp = r[e + 1:]
    return mant + "E" + (exp[1:] if exp[0] == "+" else exp)


def _check_int(x: Any, field: str, code: ErrorCode) -> str:
    """An int (not bool) in 0..2**63-1 as decimal text, read from the object itself."""
    if type(x) is not int and not (isinstance(x, int) and not isinstance(x, bool)):
        raise EncodeError("an integer is required, not %s" % type(x).__name__, field, code)
    v = int.__index__(x)
    if v < 0 or v > MAX_INT64:
        raise EncodeError("%s %s not in 0..%d" % (field, _int_text(v), MAX_INT64), field, code)
    return str(v)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MILLISECOND = datetime.timedelta(milliseconds=1)


def _timestamp_value(ts: Any) -> Any:
    """A ``datetime`` timestamp as epoch milliseconds (exact); anything else unchanged.

    A naive datetime has no time zone, so no instant: it is refused rather
    than guessed (local time and UTC are both common).
    """
    if isinstance(ts, datetime.datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise EncodeError("a naive datetime has no time zone; give it one, e.g. "
                              "tzinfo=datetime.timezone.utc", "timestamp", E.INVALID_TIMESTAMP)
        return (ts - _EPOCH) // _MILLISECOND
    return ts


_PACKAGE_DIR = __file__[: -len("_codec_py.py")]


def _warn_seconds() -> None:
    # Point the warning at the caller's line, whichever implementation and
    # however many dtproto frames (the Cython core has none) lie between.
    level = 1
    frame: Any = sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    _warnings.warn(
        "a timestamp before 1973 as epoch milliseconds looks like seconds: the API wants "
        "milliseconds (int(time.time() * 1000), not int(time.time()))",
        TimestampWarning, stacklevel=level)


def _timestamp_text(ts: Any) -> str:
    """Check and format a timestamp (int ms or aware datetime); warn if it looks like seconds."""
    ts = _timestamp_value(ts)
    text = _check_int(ts, "timestamp", E.INVALID_TIMESTAMP)
    if int.__index__(ts) < SECONDS_TIMESTAMP_BELOW:
        _warn_seconds()
    return text


def _check_metric_key(key: Any) -> str:
    try:
        if _valid_keys.get(key) is not None:
            return key
    except TypeError:  # unhashable, so not a str: rejected just below
        pass
    if not isinstance(key, str):
        raise EncodeError("the metric key must be a str, not %s" % type(key).__name__,
                          "key", E.INVALID_METRIC_KEY)
    problem = _metric_key_problem(key)
    if problem is not None:
        code, off, extra = problem
        raise _encode_error(code, "key", key, off, extra)
    if len(_valid_keys) >= _CACHE_MAX:
        _valid_keys.clear()
    _valid_keys[key] = True
    return key


def _escape_value(value: Any, field: str, max_len: Optional[int]) -> str:
    if not isinstance(value, str):
        raise EncodeError("a value must be a str, not %s" % type(value).__name__, field,
                          E.INVALID_RECORD)
    problem = _value_char_problem(value)
    if problem is not None:
        code, off, extra = problem
        raise _encode_error(code, field, value, off, extra)
    if max_len is not None and len(value) > max_len:
        raise _encode_error(E.DIMENSION_VALUE_TOO_LONG, field, value, 0, len(value))
    return value.translate(_ESCAPE_TABLE)


def _dimension_segment(key: Any, value: Any, index: int) -> str:
    try:
        seg = _dim_segments.get((key, value))
    except TypeError:  # unhashable: validated below and rejected
        seg = None
    if seg is not None:
        return seg
    field = "dimensions[%d]" % index
    if not isinstance(key, str):
        raise EncodeError("a dimension key must be a str, not %s" % type(key).__name__,
                          field + ".key", E.INVALID_DIMENSION_KEY)
    problem = _dimension_key_problem(key)
    if problem is not None:
        code, off, extra = problem
        raise _encode_error(code, field + ".key", key, off, extra)
    seg = "," + key + "=" + _escape_value(value, field + ".value", MAX_DIMENSION_VALUE)
    if len(_dim_segments) >= _CACHE_MAX:
        _dim_segments.clear()
    _dim_segments[(key, value)] = seg
    return seg


def _too_many_dimensions(count: Optional[int]) -> EncodeError:
    text = "%d" % count if count is not None else "more than %d" % MAX_DIMENSIONS
    return EncodeError("too many dimensions: %s > %d" % (text, MAX_DIMENSIONS),
                       "dimensions", E.TOO_MANY_DIMENSIONS)


def _dimension_pairs(dimensions: Any, limit: Optional[int]) -> Iterator[Tuple[int, Any, Any]]:
    """``(index, key, value)`` of a mapping or an iterable of pairs: the one reading of
    ``dimensions`` for every encoder path, with its errors (field ``dimensions[i]``).

    More than ``limit`` pairs raise at the first one too many, before the rest
    is looked at (a hostile million-entry mapping costs nothing).
    """
    if isinstance(dimensions, dict) or hasattr(dimensions, "items"):
        items: Iterable[Any] = dimensions.items()
    else:
        items = dimensions
    try:
        it = iter(items)
    except TypeError:
        raise EncodeError("dimensions must be a mapping or an iterable of (key, value) pairs",
                          "dimensions", E.INVALID_RECORD) from None
    for index, pair in enumerate(it):
        if limit is not None and index == limit:
            try:
                count: Optional[int] = len(dimensions)
            except TypeError:  # an iterator: not counted to its end (it may never end)
                count = None
            raise _too_many_dimensions(count)
        try:
            k, v = pair
        except (TypeError, ValueError):
            raise EncodeError("a dimension must be a (key, value) pair",
                              "dimensions[%d]" % index, E.INVALID_RECORD) from None
        yield index, k, v


def _head(key: Any, dimensions: Any) -> str:
    head = _check_metric_key(key)
    if dimensions:
        head += "".join([_dimension_segment(k, v, i)
                         for i, k, v in _dimension_pairs(dimensions, MAX_DIMENSIONS)])
    return head


_heads: dict = {}           # (key, dimension pairs) -> validated "key,dims" text, bounded


def _cached_head(key: Any, dimensions: Any) -> str:
    """_head through a bounded cache, for dimensions given as a dict or a tuple.

    Pipelines repeat a few thousand series: a hit costs one tuple hash instead
    of validating and escaping every dimension again.  Only successful results
    are cached, so every error still comes from _head.
    """
    t = type(dimensions)
    if dimensions is not None and (t is dict or t is tuple) and len(dimensions) > MAX_DIMENSIONS:
        return _head(key, dimensions)  # refused: no cache key of a hostile size
    if t is dict:
        dk: Any = tuple(dimensions.items())
    elif t is tuple or dimensions is None:
        dk = dimensions
    else:
        return _head(key, dimensions)
    ck = (key, dk)
    try:
        head = _heads.get(ck)
    except TypeError:  # something unhashable: not valid anyway, _head says why
        return _head(key, dimensions)
    if head is None:
        head = _head(key, dimensions)
        if len(_heads) >= _CACHE_MAX:
            _heads.clear()
        _heads[ck] = head
    return head


def _finish(head: str, payload: str, timestamp: Any) -> str:
    if timestamp is None:
        line = head + " " + payload + "\n"
    else:
        line = head + " " + payload + " " + _timestamp_text(timestamp) + "\n"
    if len(line) > MAX_LINE_CHARS + 1:
        raise EncodeError("line too long: %d > %d characters" % (len(line) - 1, MAX_LINE_CHARS),
                          "line", E.LINE_TOO_LONG)
    return line


def _summary_payload(mn: Any, mx: Any, sm: Any, cnt: Any) -> str:
    tmn = _format_number(mn, "min")
    tmx = _format_number(mx, "max")
    tsm = _format_number(sm, "sum")
    tcnt = _check_int(cnt, "count", E.SUMMARY_COUNT_NOT_INTEGER)
    fmn, fmx, fsm = _number_value(mn, "min"), _number_value(mx, "max"), _number_value(sm, "sum")
    icnt = int.__index__(cnt)
    problem = _summary_problem(fmn, fmx, fsm, icnt)
    if problem is not None:
        raise EncodeError(reason_text(problem, "", 1, (fmn, fmx, fsm, icnt)), "sum", problem)
    return "gauge,min=" + tmn + ",max=" + tmx + ",sum=" + tsm + ",count=" + tcnt


def _metadata_line(key: Any, metric_type: Any, properties: Iterable[Any]) -> str:
    key = _check_metric_key(key)
    if not isinstance(metric_type, str) or metric_type not in META_TYPES:
        raise EncodeError("metric_type must be 'gauge' or 'count', not %r" % (metric_type,),
                          "metric_type", E.INVALID_METADATA_LINE)
    parts = []
    try:
        properties = list(properties)
    except TypeError:
        raise EncodeError("metadata properties must be (name, value) pairs", "properties",
                          E.INVALID_METADATA_LINE) from None
    for i, prop in enumerate(properties):
        field = "properties[%d]" % i
        try:
            name, value = prop
        except (TypeError, ValueError):
            raise EncodeError("a metadata property must be a (name, value) pair", field,
                              E.INVALID_METADATA_LINE) from None
        if not isinstance(name, str) or name not in META_PROPERTIES:
            raise EncodeError("unknown metadata property: %r" % (name,), field,
                              E.UNKNOWN_METADATA_PROPERTY)
        text = _escape_value(value, field, None)
        if name == META_UNIT:
            if not _unit_ok(value):
                raise _encode_error(E.INVALID_UNIT, field, value)
        elif name == META_DESCRIPTION:
            if len(value) > MAX_DESCRIPTION:
                raise _encode_error(E.DESCRIPTION_LENGTH, field, value, 0, len(value))
        elif len(value) > MAX_DISPLAY_NAME:
            raise _encode_error(E.DISPLAY_NAME_LENGTH, field, value, 0, len(value))
        parts.append(name + "=" + text)
    if not parts:
        raise EncodeError("a metadata line needs at least one property", "properties",
                          E.INVALID_METADATA_LINE)
    return _finish("#" + key + " " + metric_type, ",".join(parts), None)


class _Options:
    """What ``Encoder(prefix=..., default_dimensions=..., static_dimensions=...,
    normalize=..., oneagent_enrichment=...)`` does to each line (issue 6).

    Shared by both implementations: the Cython encoder calls :meth:`head` for
    anything its C fast path does not cover, so prefixing, precedence and
    normalization have one definition.

    * The prefix is joined with ``.``; with ``normalize`` the joined key is
      normalized as a whole (docs/protocol.md §12.1 step 6).
    * Dimension precedence: default < per line < static (OneAgent metadata
      joins the static ones), decided after key normalization; the 50-dimension
      limit is counted after merging.
    * With ``normalize``, names are normalized instead of rejected; a line
      whose key cannot be made acceptable is dropped.  Every change is recorded
      in :attr:`log` (counts per field and recent examples).
    """

    __slots__ = ("prefix", "default", "static", "normalize", "log", "_cache")


    def __init__(self, prefix: Optional[str], default_dimensions: Any,
                 static_dimensions: Any, normalize: bool, oneagent_enrichment: bool) -> None:
        from . import normalize as N  # only encoders with options pay for it

        self.normalize = bool(normalize)
        self.log = N.NormalizationLog()
        self._cache: dict = {}
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError("prefix must be a str, not %s" % type(prefix).__name__)
        if self.normalize:
            p = N.normalize_prefix(prefix)
            if p is None:
                raise ValueError("prefix %r can never give a valid metric key" % (prefix,))
            self.prefix = p
        else:
            # A trailing "." only announces the separator.
            self.prefix = prefix[:-1] if prefix and prefix.endswith(".") else (prefix or "")
        self.default = self._dimensions(default_dimensions, "default_dimensions")
        static = self._dimensions(static_dimensions, "static_dimensions")
        if oneagent_enrichment:
            static.update(self._dimensions(N.read_oneagent_metadata(), "oneagent metadata"))
        self.static = static

    def _dimensions(self, dims: Any, what: str) -> dict:
        """Configured dimensions, normalized (or checked) once."""
        out: dict = {}
        for k, v in as_dimensions(dims):
            try:
                k, v = self._dimension(k, v, None)
            except EncodeError as e:
                raise ValueError("%s: %s" % (what, e)) from None
            if k is not None:
                out[k] = v
        return out

    def _dimension(self, k: Any, v: Any, changes: Optional[list],
                   index: Optional[int] = None) -> Tuple[Any, Any]:
        field = "dimensions" if index is None else "dimensions[%d]" % index
        if not self.normalize:
            if index is not None:  # errors name the caller's own index, as without options
                _dimension_segment(k, v, index)
            return k, v
        from . import normalize as N

        if not isinstance(k, str):
            raise EncodeError("a dimension key must be a str, not %s" % type(k).__name__,
                              field + ".key", E.INVALID_DIMENSION_KEY)
        if not isinstance(v, str):
            raise EncodeError("a value must be a str, not %s" % type(v).__name__,
                              field + ".value", E.INVALID_RECORD)
        nk = N.normalize_dimension_key(k)
        if nk != k and changes is not None:
            changes.append((N.FIELD_DIMENSION_KEY, k, nk))
        nv = N.normalize_dimension_value(v)
        if nv != v and nk is not None and changes is not None:
            changes.append((N.FIELD_DIMENSION_VALUE, v, nv))
        return nk, nv

    def head(self, key: Any, dimensions: Any) -> Optional[str]:
        """The validated ``key,dims`` text of a line, or None when it is dropped.

        Raises EncodeError as the plain encoder does for what normalization
        does not cover (or for everything when ``normalize`` is off).
        """
        t = type(dimensions)
        ck: Any = None
        if dimensions is not None and (t is dict or t is tuple) \
                and len(dimensions) > MAX_DIMENSIONS:
            pass  # refused below (or merged down by normalization): never a cache key
        elif t is dict:
            ck = (key, tuple(dimensions.items()))
        elif t is tuple or dimensions is None:
            ck = (key, dimensions)
        if ck is not None:
            try:
                hit = self._cache.get(ck)
            except TypeError:
                ck = hit = None
            if hit is not None:
                for change in hit[1]:  # every line's changes are counted
                    self.log.record(*change)
                return hit[0]
        changes: list = []
        head = self._head(key, dimensions, changes)
        for change in changes:
            self.log.record(*change)
        if ck is not None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[ck] = (head, tuple(changes))
        return head

    def _key(self, key: Any, changes: list) -> Any:
        """The prefixed (and, with ``normalize``, normalized) key; None: drop the line."""
        full = self.prefix + "." + key if self.prefix and isinstance(key, str) else key
        if not self.normalize:
            return full
        from . import normalize as N

        if not isinstance(key, str):
            raise EncodeError("the metric key must be a str, not %s" % type(key).__name__,
                              "key", E.INVALID_METRIC_KEY)
        if _metric_key_problem(full) is None:
            return full
        nk = N.normalize_metric_key(full)
        if not N.is_usable_metric_key(nk):
            nk = None  # still rejected by the server (too short, dt.): dropped
        changes.append((N.FIELD_METRIC_KEY, full, nk))
        return nk

    def _head(self, key: Any, dimensions: Any, changes: list) -> Optional[str]:
        full = self._key(key, changes)
        if full is None:
            return None
        merged = dict(self.default)
        if dimensions:
            for i, k, v in _dimension_pairs(dimensions, None):
                k, v = self._dimension(k, v, changes, i)
                if k is not None:
                    merged[k] = v
                    # Merging only adds: past the limit it can never fit again.
                    if len(merged) > MAX_DIMENSIONS:
                        raise _too_many_dimensions(None)
        merged.update(self.static)
        # Normalized names are valid; what can still fail (more than 50
        # dimensions after merging, a bad name without normalize) raises.
        return _head(full, tuple(merged.items()))

    def metadata(self, key: Any, display_name: Optional[str], description: Optional[str],
                 unit: Optional[str]) -> Optional[tuple]:
        """Prefix and (with ``normalize``) clean a metadata line's parts (§12.4).

        Returns None when the line is dropped: its key cannot be saved, or no
        property is left.
        """
        changes: list = []
        full = self._key(key, changes)
        for change in changes:
            self.log.record(*change)
        if not self.normalize:
            return full, display_name, description, unit
        if full is None:
            return None
        from . import normalize as N

        out = [full]
        for field, fn, value in (
            (N.FIELD_DISPLAY_NAME, N.normalize_display_name, display_name),
            (N.FIELD_DESCRIPTION, N.normalize_description, description),
            (N.FIELD_UNIT, N.normalize_unit, unit),
        ):
            if value is None:
                out.append(None)
                continue
            fixed = fn(value) if isinstance(value, str) else None
            if fixed != value:
                self.log.record(field, value, fixed)
            out.append(fixed)
        if out[1] is None and out[2] is None and out[3] is None:
            return None
        return tuple(out)


class Encoder:
    """A reusable buffer of encoded lines for hot loops.

    Every method validates its input like the decoder would and appends one
    canonical line (docs/protocol.md §13) terminated by LF.  A call that raises
    :class:`~dtproto.EncodeError` leaves the buffer exactly as it was.

    ``dimensions`` accept a mapping or an iterable of ``(key, value)`` pairs.

    Options (all off by default; see docs/protocol.md §12):

    * ``prefix``: joined to every metric key with ``.``.
    * ``default_dimensions`` / ``static_dimensions``: merged into every line
      with the precedence default < per line < static; at most 50 in all.
    * ``normalize``: turn invalid names into valid ones the way the official
      dynatrace-metric-utils (Java 2.5) do, instead of raising; a line whose
      key cannot be saved is dropped.  Every change is counted in
      :attr:`normalizations`.
    * ``oneagent_enrichment``: add the OneAgent host metadata
      (``dt_metadata_e617c525669e072eebe3d0f08212e8f2.properties``) as static
      dimensions; no OneAgent, no extra dimensions.
    """

    __slots__ = ("_buf", "_lines", "_opts", "_log")

    def __init__(self, prefix: Optional[str] = None, default_dimensions: Any = None,
                 static_dimensions: Any = None, normalize: bool = False,
                 oneagent_enrichment: bool = False) -> None:
        self._buf = bytearray()
        self._lines = 0
        self._opts: Optional[_Options] = None
        self._log: Any = None
        if prefix or default_dimensions or static_dimensions or normalize or oneagent_enrichment:
            self._opts = _Options(prefix, default_dimensions, static_dimensions, normalize,
                                  oneagent_enrichment)

    def _sibling(self) -> "Encoder":
        """An empty encoder sharing this one's options (and normalization log).

        The Cython core lets the reference write a line with options into a
        sibling private to that call: concurrent calls never share a buffer.
        """
        sibling = Encoder.__new__(Encoder)
        sibling._buf = bytearray()
        sibling._lines = 0
        sibling._opts = self._opts
        sibling._log = None
        return sibling

    @property
    def normalizations(self) -> Any:
        """The :class:`~dtproto.normalize.NormalizationLog` of this encoder (changes made)."""
        if self._opts is not None:
            return self._opts.log
        if self._log is None:  # a plain encoder never normalizes: always empty
            from .normalize import NormalizationLog

            self._log = NormalizationLog()
        return self._log

    def _append(self, line: str) -> None:
        # The line is complete before it touches the buffer: atomic per line.
        self._buf += line.encode("utf-8")
        self._lines += 1

    def _head_of(self, key: Any, dimensions: Any) -> Optional[str]:
        """The line's ``key,dims`` text from a cache; None when normalization drops it.

        Valid, repeated series must stay cheap: a hit is one tuple hash.
        """
        t = type(dimensions)
        if dimensions is not None and (t is dict or t is tuple) and len(dimensions) > MAX_DIMENSIONS:
            return self._opts.head(key, dimensions) if self._opts is not None \
                else _head(key, dimensions)
        ck = (key, tuple(dimensions.items()) if t is dict else dimensions)
        if self._opts is None:
            try:
                return _heads[ck]
            except (KeyError, TypeError):
                return _cached_head(key, dimensions)
        try:
            hit = self._opts._cache[ck]
        except (KeyError, TypeError):
            hit = None
        if hit is not None and not hit[1]:
            return hit[0]
        return self._opts.head(key, dimensions)  # records the changes, if any

    def _single(self, payload: str, key: Any, value: Any, dimensions: Any,
                timestamp: Any) -> None:
        """A gauge or count line: the hot loop of every exporter.

        The common case (cached head, finite float, int timestamp) is inlined;
        anything else goes to the general helpers, which produce every error.
        """
        head = self._head_of(key, dimensions)
        if head is None:
            return
        if type(value) is float and value - value == 0.0:
            text = repr(value)
            if text[-2:] == ".0":
                text = text[:-2]
            elif "e" in text:
                text = _format_number(value, "value")
        else:
            text = _format_number(value, "value")
        if timestamp is None:
            line = head + payload + text + "\n"
        elif type(timestamp) is int and SECONDS_TIMESTAMP_BELOW <= timestamp <= MAX_INT64:
            line = head + payload + text + " " + str(timestamp) + "\n"
        else:
            line = _finish(head, payload[1:] + text, timestamp)
        if len(line) > MAX_LINE_CHARS + 1:
            line = _finish(head, payload[1:] + text, timestamp)
        self._buf += line.encode("utf-8")
        self._lines += 1

    def gauge(self, key: str, value: float, dimensions: Any = None,
              timestamp: Optional[int] = None) -> None:
        """Append ``key,dims gauge,<value> [timestamp]``."""
        self._single(" gauge,", key, value, dimensions, timestamp)

    def count(self, key: str, delta: float, dimensions: Any = None,
              timestamp: Optional[int] = None) -> None:
        """Append ``key,dims count,delta=<delta> [timestamp]``."""
        self._single(" count,delta=", key, delta, dimensions, timestamp)

    def summary(self, key: str, min: float, max: float, sum: float, count: int,
                dimensions: Any = None, timestamp: Optional[int] = None) -> None:
        """Append ``key,dims gauge,min=..,max=..,sum=..,count=.. [timestamp]``.

        The fields must be consistent as the server checks them (§7.3).
        """
        head = self._head_of(key, dimensions)
        if head is not None:
            self._append(_finish(head, _summary_payload(min, max, sum, count), timestamp))

    def metadata(self, key: str, metric_type: str, display_name: Optional[str] = None,
                 description: Optional[str] = None, unit: Optional[str] = None) -> None:
        """Append ``#key type dt.meta.description=..,dt.meta.unit=..,dt.meta.displayName=..``.

        Properties are written in the official Java library's order; at least
        one must be given.
        """
        if self._opts is not None:
            fixed = self._opts.metadata(key, display_name, description, unit)
            if fixed is None:
                return
            key, display_name, description, unit = fixed
        props = []
        if description is not None:
            props.append((META_DESCRIPTION, description))
        if unit is not None:
            props.append((META_UNIT, unit))
        if display_name is not None:
            props.append((META_DISPLAY_NAME, display_name))
        self._append(_metadata_line(key, metric_type, props))

    def add(self, record: Record) -> None:
        """Append a :class:`~dtproto.Metric` or :class:`~dtproto.Metadata`."""
        t = type(record)
        if self._opts is None or (t is not Metric and t is not Metadata):
            self._append(_record_line(record))
        elif t is Metadata:
            self.metadata(record[0], record[1], record.display_name, record.description,
                          record.unit)
        elif record[2] == KIND_GAUGE:
            self.gauge(record[0], record[3], record[1], record[8])
        elif record[2] == KIND_COUNT:
            self.count(record[0], record[3], record[1], record[8])
        else:
            self.summary(record[0], record[4], record[5], record[6], record[7], record[1],
                         record[8])

    def getvalue(self) -> bytes:
        """The encoded lines so far, as ``bytes``."""
        return bytes(self._buf)

    def clear(self) -> None:
        """Forget every line."""
        self._buf = bytearray()
        self._lines = 0

    @property
    def lines(self) -> int:
        """Number of lines in the buffer."""
        return self._lines

    def __len__(self) -> int:
        """Size of the buffer in bytes."""
        return len(self._buf)

    def __repr__(self) -> str:
        return "<Encoder lines=%d bytes=%d>" % (self._lines, len(self._buf))


def _record_line(record: Any) -> str:
    t = type(record)
    if t is Metric:
        kind = record[2]
        head = _cached_head(record[0], record[1])
        if kind == KIND_GAUGE:
            payload = "gauge," + _format_number(record[3], "value")
        elif kind == KIND_COUNT:
            payload = "count,delta=" + _format_number(record[3], "value")
        else:
            payload = _summary_payload(record[4], record[5], record[6], record[7])
        return _finish(head, payload, record[8])
    if t is Metadata:
        return _metadata_line(record[0], record[1], record[2])
    raise EncodeError("expected a Metric or Metadata, not %s" % t.__name__, "record",
                      E.INVALID_RECORD)


def encode(records: Iterable[Record]) -> bytes:
    """Encode records into a body of canonical lines, each ending with LF.

    Raises:
        EncodeError: for any record the decoder would reject; its ``record``
            attribute is the 0-based index and ``field`` names the field.
    """
    out = []
    for index, record in enumerate(records):
        try:
            out.append(_record_line(record))
        except EncodeError as e:
            e.record = index
            raise
    return "".join(out).encode("utf-8")

