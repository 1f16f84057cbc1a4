"""The reference scanner: the line grammar of the strict profile, one rule at a time.

Part of the pure-Python reference (see ``dtproto._codec_py``), which *defines*
the behaviour the Cython core mirrors byte for byte and error for error.

* ``_scan_*`` functions form the exact scanner: one left-to-right pass over a
  line in which the first violation wins.  It is the only place that decides
  whether a line is valid and which error it gets (the Cython core hands every
  line it rejects to :func:`_scan_line` for the diagnosis).
* ``_fast_*`` functions are shortcuts for the common, valid case built on
  ``str`` methods and a bounded cache of already-validated ``key,dims`` heads.
  They return ``None`` whenever the line is not entirely ordinary, and the
  exact scanner takes over; they never raise and never accept what the scanner
  rejects (``tests/test_decode.py::test_fast_path_agrees``).
* The ``*_problem`` validators hold each field rule once; the encoder
  (``dtproto._encode_py``) checks whole fields with the same functions.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional, Tuple

from ._constants import (
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
    MAX_LINE_CHARS,
    MAX_METRIC_KEY,
    MAX_TIMESTAMP_DIGITS,
    MAX_UNIT,
    META_DESCRIPTION,
    META_PROPERTIES,
    META_TYPES,
    META_UNIT,
    METRIC_KEY_CHARS,
    METRIC_KEY_FIRST,
    METRIC_KEY_SECTION_START,
    MIN_METRIC_KEY,
    NON_FINITE_WORDS,
    RESERVED_PREFIX,
    SUMMARY_FIELDS,
    SUMMARY_TOLERANCE,
    UNIT_CHARS,
    WINDOW_FUTURE_MS,
    WINDOW_PAST_MS,
)
from .errors import DecodeError, ErrorCode, reason_text
from .model import Metadata, Metric, Record

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


def _too_long_fault(marker: Any) -> Tuple[_LineFault, str]:
    raw = marker.head.decode("utf-8", "surrogateescape")
    return _LineFault(E.LINE_TOO_LONG, MAX_LINE_CHARS, None), raw
