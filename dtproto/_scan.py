"""The reference scanner: the line grammar of the strict profile, one rule at a time.

Part of the pure-Python reference (see ``dtproto._codec_py``), which *defines*
the behaviour the Cython core mirrors byte for byte and error for error.

* ``_scan_*`` functions form the exact scanner: one left-to-right pass over a
  line in which the first violation wins.  It is the only place that decides
  whether a line is valid and which error it gets (the Cython core hands every
  line it rejects to :func:`_scan_line` for the diagnosis).
* ``_fast_*`` functions are shortcuts for the common, valid case built on
  compiled regular expressions and ``str`` methods over whole heads and
  lines (never a character at a time), with a bounded cache of
  already-validated ``key,dims`` heads.  They return ``None`` whenever the
  line is not entirely ordinary, and the exact scanner takes over; they
  never raise and never accept what the scanner rejects
  (``tests/test_fastpath.py``, ``tests/test_decode.py::test_fast_path_agrees``).
* The ``*_problem`` validators hold each field rule once; the encoder
  (``dtproto._encode_py``) checks whole fields with the same functions.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, List, Optional, Tuple

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
# Unambiguous (digits, then optionally a point and digits): "[0-9]+\.?[0-9]*"
# would let the engine split a run of digits n ways, and a failing match of
# three such numbers (a summary) backtrack in O(n**3) on hostile input.
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
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

_head_cache: dict = {}      # "key,dims" wire text -> (key, dims), bounded
_heads_seen: set = set()    # hashes of heads seen once, bounded (see _remember_head)
_metric_keys: dict = {}     # metric keys already found valid, bounded
_dimension_keys: dict = {}  # dimension keys already found valid, bounded

# The grammar of ordinary lines as regular expressions (docs/protocol.md §3-§8).
# They only ever *accept*: a line they do not match goes to the exact scanner,
# which decides and diagnoses.  Loops are unrolled (``[^x]*(?:\\.[^x]*)*``) so
# the regex engine runs a character class over each run of plain characters.
_CTRL = "\\x00-\\x1f\\x7f\\ud800-\\udfff"    # controls and lone surrogates: never valid
_RX_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"   # _NUMBER_RE's grammar
_RX_KEY = r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*"
_RX_DKEY = r"[a-z_][a-z0-9_:-]*(?:\.[a-z_][a-z0-9_:-]*)*"
_RX_QUOTED_BODY = r'[^"\\%s]*(?:\\[^%s][^"\\%s]*)*' % (_CTRL, _CTRL, _CTRL)
_RX_BARE = r'[^,= "\\%s]*(?:\\[^%s][^,= "\\%s]*)*' % (_CTRL, _CTRL, _CTRL)
_RX_PAYLOAD = (
    r"(?:gauge,min=(%s),max=(%s),sum=(%s),count=([0-9]{1,19})"
    r"|count,delta=(%s)|(?:gauge,)?(%s))" % ((_RX_NUM,) * 5))
# A whole data line: (head), payload groups, (timestamp).  Blanks are runs of
# spaces (a TAB anywhere sends the line to the exact scanner); trailing blanks
# and one CR are allowed, as _prepare_line strips them.
_LINE_RE = re.compile(
    r'(%s(?:,%s=(?:"%s"|%s))*) +%s(?: +([0-9]{1,19}))?[ \t]*\r?\Z'
    % (_RX_KEY, _RX_DKEY, _RX_QUOTED_BODY, _RX_BARE, _RX_PAYLOAD))
# The dimensions of a head _LINE_RE matched: (key, quoted content, bare value).
_DIM_RE = re.compile(r',(%s)=(?:"(%s)"|(%s))' % (_RX_DKEY, _RX_QUOTED_BODY, _RX_BARE))
_UNESCAPE_RE = re.compile(r'\\([",= \\])')   # the escapes of ESCAPES; others stay literal
_METRIC_KEY_RE = re.compile(_RX_KEY + r"\Z")
_DIMENSION_KEY_RE = re.compile(_RX_DKEY + r"\Z")
# ",key=value" of a head without quotes, backslashes and blanks: the key's
# grammar and length (the lookahead), a value of at most 255 characters.
_PLAIN_DIM_RE = re.compile(r",(?=[^=]{1,%d}=)(%s)=([^,=]{0,%d})(?=,|\Z)"
                           % (MAX_DIMENSION_KEY, _RX_DKEY, MAX_DIMENSION_VALUE))
# What follows the head: blanks, payload groups, (timestamp), as in _LINE_RE.
_TAIL_RE = re.compile(r" +%s(?: +([0-9]{1,19}))?[ \t]*\r?\Z" % _RX_PAYLOAD)
_BAD_CHAR_RE = re.compile("[%s]" % _CTRL)
# A whole line without quotes and backslashes, for validate(): every rule of
# the head but the metric key's length and prefix is in the pattern (at most
# 50 dimensions, keys of at most 100 characters, values of at most 255), so
# nothing is extracted but the key and the payload.
_PLAIN_LINE_RE = re.compile(
    r'(%s)(?:,(?=[^=]{1,%d}=)%s=[^,= "\\%s]{0,%d}){0,%d} +%s(?: +([0-9]{1,19}))?[ \t]*\r?\Z'
    % (_RX_KEY, MAX_DIMENSION_KEY, _RX_DKEY, _CTRL, MAX_DIMENSION_VALUE, MAX_DIMENSIONS,
       _RX_PAYLOAD))
_valid_heads: dict = {}     # plain "key,dims" text -> key, for validate(); bounded


def _fast_metric_key(key: str) -> bool:
    if key in _metric_keys:
        return True
    if (_METRIC_KEY_RE.match(key) is None or not MIN_METRIC_KEY <= len(key) <= MAX_METRIC_KEY
            or key.startswith(RESERVED_PREFIX)):
        return False
    if len(_metric_keys) >= _CACHE_MAX:
        _metric_keys.clear()
    _metric_keys[key] = True
    return True


def _fast_dimension_key(key: str) -> bool:
    if key in _dimension_keys:
        return True
    if _DIMENSION_KEY_RE.match(key) is None or len(key) > MAX_DIMENSION_KEY:
        return False
    if len(_dimension_keys) >= _CACHE_MAX:
        _dimension_keys.clear()
    _dimension_keys[key] = True
    return True


def _remember_head(head: str, hd: tuple) -> tuple:
    """Cache a head the second time it is seen, return ``hd``.

    When series do not repeat, caching would only cost: every entry is a few
    tuples that outlive the line (and wake the garbage collector) and is
    never hit.  A head's first sighting only leaves its hash, an int the
    collector ignores.
    """
    h = hash(head)
    if h in _heads_seen:
        if len(_head_cache) >= _CACHE_MAX:
            _head_cache.clear()
        _head_cache[head] = hd
    else:
        if len(_heads_seen) >= _CACHE_MAX:
            _heads_seen.clear()
        _heads_seen.add(h)
    return hd


def _fast_plain_head(head: str) -> Optional[tuple]:
    """(key, dims) of a ``key,dims`` head without quotes, backslashes and blanks.

    Every value is its own wire text, so one regex finds the pairs and checks
    their grammar and lengths; ``str`` methods check what is left.
    """
    c = head.find(",")
    if c < 0:
        key = head
        dims: tuple = ()
    else:
        key = head[:c]
        pairs = _PLAIN_DIM_RE.findall(head, c)
        # Each match runs from a "," to the next "," or the end: as many
        # matches as commas means the pairs cover the whole head.
        n = len(pairs)
        if n > MAX_DIMENSIONS or head.count(",") != n:
            return None
        if not head.isprintable() and _BAD_CHAR_RE.search(head) is not None:
            return None
        dims = tuple(pairs)
    if key not in _metric_keys and not _fast_metric_key(key):
        return None
    return _remember_head(head, (key, dims))


def _fast_any_head(head: str) -> Optional[tuple]:
    """(key, dims) of a head ``_LINE_RE`` matched (quotes and escapes allowed)."""
    key, _, _ = head.partition(",")
    if not _fast_metric_key(key):
        return None
    dims = []
    for k, q, b in _DIM_RE.findall(head, len(key)):
        v = q or b
        if "\\" in v:
            v = _UNESCAPE_RE.sub(r"\1", v)
        if len(v) > MAX_DIMENSION_VALUE or not (k in _dimension_keys or _fast_dimension_key(k)):
            return None
        dims.append((k, v))
    if len(dims) > MAX_DIMENSIONS:
        return None
    return _remember_head(head, (key, tuple(dims)))


def _fast_record(hd: tuple, mn: Optional[str], mx: Optional[str], sm: Optional[str],
                 cnt: Optional[str], delta: Optional[str], value: Optional[str],
                 t: Optional[str], now_ms: Optional[int]) -> Optional[Metric]:
    """The record of a valid head and the payload groups of _RX_PAYLOAD, or None.

    The regex has checked the grammar of every number: what is left is
    finiteness, the int64 range, the summary's consistency and the window.
    """
    ts = None
    if t is not None:
        ts = int(t)
        if ts > MAX_INT64 or (
            now_ms is not None and not (now_ms - WINDOW_PAST_MS <= ts <= now_ms + WINDOW_FUTURE_MS)
        ):
            return None
    if value is not None:
        v = float(value)
        if v - v != 0.0:
            return None
        return _tuple_new(Metric, (hd[0], hd[1], KIND_GAUGE, v, None, None, None, None, ts))
    if delta is not None:
        v = float(delta)
        if v - v != 0.0:
            return None
        return _tuple_new(Metric, (hd[0], hd[1], KIND_COUNT, v, None, None, None, None, ts))
    fmn, fmx, fsm, icnt = float(mn), float(mx), float(sm), int(cnt)  # type: ignore[arg-type]
    if (fmn - fmn != 0.0 or fmx - fmx != 0.0 or fsm - fsm != 0.0 or icnt > MAX_INT64
            or _summary_problem(fmn, fmx, fsm, icnt) is not None):
        return None
    return _tuple_new(Metric, (hd[0], hd[1], KIND_SUMMARY, None, fmn, fmx, fsm, icnt, ts))


def _fast_line_re(s: str) -> Optional[tuple]:
    """(head, payload groups) of a line whose head holds quotes or backslashes: one
    regex over the whole line; None when it does not match."""
    m = _LINE_RE.match(s)
    if m is None:
        return None
    g = m.groups()
    hd = _head_cache.get(g[0])
    if hd is None:
        hd = _fast_any_head(g[0])
        if hd is None:
            return None
    return hd, g[1:]


def _fast_line(s: str, now_ms: Optional[int]) -> Optional[Metric]:
    """The record for an ordinary valid line, or None (then the scanner decides).

    Heads seen before come from a bounded cache; a new head is checked by
    regular expressions and ``str`` methods over whole fields, never a
    character at a time.
    """
    sp = s.find(" ")
    if sp < MIN_METRIC_KEY or len(s) > MAX_LINE_CHARS:
        return None
    hd = _head_cache.get(s[:sp])
    if hd is None:
        if '"' in s or "\\" in s:
            r = _fast_line_re(s)
            if r is None:
                return None
            return _fast_record(r[0], *r[1], now_ms)
        hd = _fast_plain_head(s[:sp])
        if hd is None:
            return None
    m = _TAIL_RE.match(s, sp)
    if m is None:
        return None
    return _fast_record(hd, *m.groups(), now_ms)


def _fast_check(s: str, now_ms: Optional[int]) -> Optional[Metric]:
    """For validate(): a record of an ordinary valid line, or None (then _fast_line).

    Only its key, kind and timestamp are meaningful: the dimensions of a
    line without quotes and backslashes are checked but not built.
    """
    if '"' in s or "\\" in s or len(s) > MAX_LINE_CHARS:
        return _fast_line(s, now_ms)
    sp = s.find(" ")
    key = _valid_heads.get(s[:sp])
    if key is None:
        m = _PLAIN_LINE_RE.match(s)
        if m is None:
            return None
        key = m.group(1)
        if key not in _metric_keys and not _fast_metric_key(key):
            return None
        if len(_valid_heads) >= _CACHE_MAX:
            _valid_heads.clear()
        _valid_heads[s[:sp]] = key      # keys and heads are str: nothing for the collector
        return _fast_record((key, ()), *m.groups()[1:], now_ms)
    m = _TAIL_RE.match(s, sp)
    if m is None:
        return None
    return _fast_record((key, ()), *m.groups(), now_ms)


# ---------------------------------------------------------------------------
# Block fast path: one regular expression over a range of whole lines.
# ---------------------------------------------------------------------------
# _BLOCK_RE matches every line of a range, so ``findall`` gives one row per
# line, in order, without splitting the text: either the groups of an
# ordinary valid line, or (last group) the text of any other line, which the
# per-line paths above and the exact scanner take.  Every limit that needs no
# arithmetic is written into the pattern, so an ordinary row needs no check
# of its own but a summary's consistency and the timestamp window:
#
# * the metric key 3..255 characters without ``dt.`` (lookaheads), dimension
#   keys of at most 100, at most 50 dimensions;
# * values of at most 255 code points: plain characters and the five escapes
#   of ESCAPES (one code point each once decoded); a value with any other
#   escape is left to the exact scanner;
# * numbers that cannot overflow (at most 200 digits before the point and
#   two in the exponent: below 10**299), timestamps of at most 18 digits or
#   19 starting with 0-8 (below 2**63), summary counts of at most 18 digits;
# * blanks in runs of at most 64, so a line the pattern takes is well under
#   MAX_LINE_CHARS.
#
# Alternatives never match the same text two ways (a value with an escape
# can only match the branch that requires one), so a line that fails costs
# time linear in its length.
_RX_FNUM = r"[+-]?(?:[0-9]{1,200}(?:\.[0-9]{0,200})?|\.[0-9]{1,200})(?:[eE][+-]?[0-9]{1,2})?"
_RX_FKEY = r"(?!dt\.)(?=[A-Za-z0-9_.-]{3,%d}[ ,])%s" % (MAX_METRIC_KEY, _RX_KEY)
_RX_FDKEY = r"(?=[a-z0-9_:.-]{1,%d}=)%s" % (MAX_DIMENSION_KEY, _RX_DKEY)
_RX_FVALUE = (
    r'(?:{p}{{0,{m}}}(?![\\])'                            # bare, no escape
    r'|"{q}{{0,{m}}}"'                                    # quoted, no escape
    r'|"(?=(?:{q}|{e}){{0,{m}}}")(?:{q}*{e})+{q}*"'       # quoted with escapes
    r'|(?=(?:{p}|{e}){{0,{m}}}[, ])(?:{p}*{e})+{p}*)'     # bare with escapes
).format(p='[^,= "\\\\%s]' % _CTRL, q='[^"\\\\%s]' % _CTRL, e=r'\\[",= \\]',
         m=MAX_DIMENSION_VALUE)
_RX_FDIMS = "(?:,%s=%s){0,%d}" % (_RX_FDKEY, _RX_FVALUE, MAX_DIMENSIONS)
_RX_FTS = "[0-9]{1,18}|[0-8][0-9]{18}"


def _block_re(dims: str, value: str, ts: str) -> "re.Pattern[str]":
    return re.compile(
        r"^(?:(%s)%s {1,64}(?:gauge,min=(%s),max=(%s),sum=(%s),count=([0-9]{1,18})"
        r"|count,delta=(%s)|(?:gauge,)?%s)(?: {1,64}%s)?[ \t]{0,64}\r?|.*)$"
        % (_RX_FKEY, dims, _RX_FNUM, _RX_FNUM, _RX_FNUM, _RX_FNUM, value, ts), re.M)


# decode: key, dimension text, min, max, sum, count, delta, value, timestamp.
_BLOCK_RE = _block_re("(%s)" % _RX_FDIMS, "(%s)" % _RX_FNUM, "(%s)" % _RX_FTS)
# validate: key, min, max, sum, count, delta, timestamp.  Without a
# window only a timestamp that may be before 1973 (fewer than 12 digits, a
# leading zero) or above 2**63-1 is captured; with one, every timestamp.
_CHECK_RE = _block_re(_RX_FDIMS, _RX_FNUM, "(?:[1-9][0-9]{11,17}|(%s))" % _RX_FTS)
_CHECK_WINDOW_RE = _block_re(_RX_FDIMS, _RX_FNUM, "(%s)" % _RX_FTS)
# The dimensions of a row: (key, value) where nothing is quoted or escaped, ...
_PLAIN_PAIRS = re.compile(r",([^=]*)=([^,]*)").findall
# ... (key, quoted content, bare value) otherwise.
_ANY_PAIRS = re.compile(r',([^=]*)=(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^,\\]*(?:\\.[^,\\]*)*))').findall
_dims_cache: dict = {}      # dimension text -> dims tuple, bounded
_BLOCK_STEP = 1 << 14       # characters per findall: its rows die young


def _row_dims(text: str) -> tuple:
    """The dimension pairs of a row's dimension text (the pattern checked it)
    with quotes or escapes (without, ``_PLAIN_PAIRS`` gives them)."""
    dims = []
    for k, q, b in _ANY_PAIRS(text):
        v = q or b
        if "\\" in v:
            v = _UNESCAPE_RE.sub(_group_1, v)
        dims.append((k, v))
    return tuple(dims)


def _group_1(m: "re.Match[str]") -> str:
    return m.group(1)


def _ranges(text: str, pos: int, end: int) -> Iterator[Tuple[int, int]]:
    """``(start, stop)`` of the ranges of whole lines of ``text[pos:end]``, each
    about _BLOCK_STEP characters, cut at an LF (which belongs to neither)."""
    while end - pos > _BLOCK_STEP:
        cut = text.find("\n", pos + _BLOCK_STEP, end)
        if cut < 0:
            break
        yield pos, cut
        pos = cut + 1
    yield pos, end


def _fast_rows(text: str, pos: int, end: int, now_ms: Optional[int]) -> Tuple[list, int]:
    """The records of the lines of ``text[pos:end]`` (no LF at ``end``), one
    per line, and how many are None: lines this path declines (blank, metadata,
    unusual or invalid), which the per-line paths take.
    """
    out: list = []
    append = out.append
    declined = 0
    cached = _dims_cache.get
    for key, dt, mn, mx, sm, cnt, delta, value, ts in _BLOCK_RE.findall(text, pos, end):
        if not key:
            append(None)
            declined += 1
            continue
        t = None
        if ts:
            t = int(ts)
            if now_ms is not None and not (
                    now_ms - WINDOW_PAST_MS <= t <= now_ms + WINDOW_FUTURE_MS):
                append(None)
                declined += 1
                continue
        if not dt:
            dims: tuple = ()
        else:
            dims = cached(dt)  # type: ignore[assignment]
            if dims is None:
                if '"' in dt or "\\" in dt:
                    dims = _row_dims(dt)
                else:
                    dims = tuple(_PLAIN_PAIRS(dt))
                # The tuple lives on in the record anyway: caching it costs
                # one dict entry, and a repeated series then shares it.
                if len(_dims_cache) >= _CACHE_MAX:
                    _dims_cache.clear()
                _dims_cache[dt] = dims
        if value:
            append(_tuple_new(Metric, (key, dims, KIND_GAUGE, float(value), None, None, None,
                                       None, t)))
        elif delta:
            append(_tuple_new(Metric, (key, dims, KIND_COUNT, float(delta), None, None, None,
                                       None, t)))
        else:
            fmn, fmx, fsm, icnt = float(mn), float(mx), float(sm), int(cnt)
            if _summary_problem(fmn, fmx, fsm, icnt) is not None:
                append(None)
                declined += 1
                continue
            append(_tuple_new(Metric, (key, dims, KIND_SUMMARY, None, fmn, fmx, fsm, icnt, t)))
    return out, declined


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
