"""The reference encoder: canonical lines, the Encoder and its options.

Part of the pure-Python reference (see ``dtproto._codec_py``).  Every field is
checked with the scanner's own validators (``dtproto._scan``), so what the
encoder writes is exactly what the decoder accepts; the Cython core lets this
module name every error it finds (docs/protocol.md §13).
"""

from __future__ import annotations

import datetime
import os
import re
import sys
import warnings as _warnings
from itertools import chain, islice, repeat
from marshal import dumps as _marshal
from operator import itemgetter
from typing import Any, Iterable, Iterator, Optional, Tuple

from ._constants import (
    ESCAPED_BY_ENCODER,
    KIND_COUNT,
    KIND_GAUGE,
    MAX_DESCRIPTION,
    MAX_DIMENSION_PAIRS_MERGED,
    MAX_DIMENSION_VALUE,
    MAX_DIMENSIONS,
    MAX_DISPLAY_NAME,
    MAX_INT64,
    MAX_LINE_CHARS,
    META_DESCRIPTION,
    META_DISPLAY_NAME,
    META_PROPERTIES,
    META_TYPES,
    META_UNIT,
    SECONDS_TIMESTAMP_BELOW,
    SUMMARY_TOLERANCE,
)
from ._scan import (E, _BAD_CHAR_RE, _CACHE_MAX, _CTRL, _dimension_key_problem,
                    _fast_dimension_key, _fast_metric_key, _metric_key_problem, _metric_keys,
                    _summary_problem, _unit_ok, _value_char_problem)
from ._input import _text
from .errors import EncodeError, ErrorCode, TimestampWarning, reason_text
from .model import Metadata, Metric, Record, as_dimensions

__all__ = ["Encoder", "encode"]

# ---------------------------------------------------------------------------
# Encoding (docs/protocol.md §13: the canonical strict form).
# ---------------------------------------------------------------------------

_ESCAPE_TABLE = str.maketrans({c: "\\" + c for c in ESCAPED_BY_ENCODER})
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


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


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
    key = _text(key)
    if type(key) is not str:
        raise EncodeError("the metric key must be a str, not %s" % type(key).__name__,
                          "key", E.INVALID_METRIC_KEY)
    if key in _valid_keys:
        return key
    problem = _metric_key_problem(key)
    if problem is not None:
        code, off, extra = problem
        raise _encode_error(code, "key", key, off, extra)
    if len(_valid_keys) >= _CACHE_MAX:
        _valid_keys.clear()
    _valid_keys[key] = True
    return key


def _escape_value(value: Any, field: str, max_len: Optional[int]) -> str:
    value = _text(value)
    if type(value) is not str:
        raise EncodeError("a value must be a str, not %s" % type(value).__name__, field,
                          E.INVALID_RECORD)
    problem = _value_char_problem(value)
    if problem is not None:
        code, off, extra = problem
        raise _encode_error(code, field, value, off, extra)
    if max_len is not None and str.__len__(value) > max_len:  # a subclass cannot say otherwise
        raise _encode_error(E.DIMENSION_VALUE_TOO_LONG, field, value, 0, str.__len__(value))
    return str.translate(value, _ESCAPE_TABLE)


def _dimension_segment(key: Any, value: Any, index: int) -> str:
    """``,key=value`` escaped; ``key`` and ``value`` as :func:`_dimension_pairs`
    reads them (a ``str`` subclass already its text)."""
    if type(key) is str and type(value) is str:  # only a str's equality is its text's
        seg = _dim_segments.get((key, value))
        if seg is not None:
            return seg
    field = "dimensions[%d]" % index
    if type(key) is not str:
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
    """``count`` is None when the pairs were not counted to their end."""
    text = "%d > %d" % (count, MAX_DIMENSIONS) if count is not None \
        else "more than %d" % MAX_DIMENSIONS
    return EncodeError("too many dimensions: " + text, "dimensions", E.TOO_MANY_DIMENSIONS)


def _dimension_pairs(dimensions: Any, limit: Optional[int]) -> Iterator[Tuple[int, Any, Any]]:
    """``(index, key, value)`` of a mapping or an iterable of pairs: the one reading of
    ``dimensions`` for every encoder path, with its errors (field ``dimensions[i]``).

    More than ``limit`` pairs raise at the first one too many, before the rest
    is looked at (a hostile million-entry mapping costs nothing).
    """
    if type(dimensions) is dict:
        # One state of it (_snapshot) when it can be written at all.  A huge
        # dict is never copied (no memory in proportion to it): past the limit
        # only the pairs up to the first one too many are read, and with
        # options (no limit: normalization may merge or drop pairs) it is read
        # as it goes, until the merged pairs pass 50.
        if len(dimensions) <= MAX_DIMENSIONS:
            items: Iterable[Any] = _snapshot(dimensions).items()
        elif limit is not None:
            items = tuple(islice(dimensions.items(), limit + 1))
        else:
            items = dimensions.items()
    elif isinstance(dimensions, dict) or hasattr(dimensions, "items"):
        items = dimensions.items()
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
        yield index, _text(k), _text(v)


def _head(key: Any, dimensions: Any) -> str:
    head = _check_metric_key(key)
    # "is not None", never the truth of the caller's object: a numpy array
    # of pairs has none, and a container that says it is empty (its own
    # __bool__ or __len__) is read by its pairs, as the Cython core reads it.
    if dimensions is not None:
        head += "".join([_dimension_segment(k, v, i)
                         for i, k, v in _dimension_pairs(dimensions, MAX_DIMENSIONS)])
    return head


_heads: dict = {}           # (key, dimension pairs) -> validated "key,dims" text, bounded
_heads_seen: set = set()    # hashes of cache keys seen once (see _cached_head), bounded
_INF = float("inf")
# The dimensions of a head as "k=v,k=v" (dimension keys already known valid):
# exactly n pairs with values of at most 255 characters of which none is
# escaped or invalid.  Exactly n: a value holding "," and "=" would look like
# one pair more.  Compiled for each n when first needed.
_PLAIN_PAIR = r'[a-z0-9_:.-]+=[^,= "\\%s]{0,%d}' % (_CTRL, MAX_DIMENSION_VALUE)
_plain_dims_res: list = [None] * (MAX_DIMENSIONS + 1)


def _plain_dims_re(n: int) -> Any:
    rx = _plain_dims_res[n] = re.compile(r"%s(?:,%s){%d}\Z" % (_PLAIN_PAIR, _PLAIN_PAIR, n - 1))
    return rx


_templates: dict = {}       # valid dimension keys joined by NUL -> their _template, bounded
# The Encoder's memo of the joined dimensions (_joined_dims) it has checked:
# the text of n pairs -> (n, the text to write): the text itself when it was
# plain, its escaped form otherwise.  A dict lookup hashes the text once (a
# str keeps its hash, so the admission below reuses it) and reads one tuple,
# so a reader never sees half an entry.  A hit skips the check (a join,
# an encode and a translate of the values) and, for a text that needs
# escapes, the escaping.
#
# A text is kept only when it has exactly n "=" and n - 1 ",": then no value
# holds either, the text splits into pairs one way only, and the text with n
# determines the pairs.  (A plain text always qualifies.  "a=x,b=y,c=z" is
# both {"a": "x,b=y", "c": "z"} and {"a": "x", "b": "y,c=z"}, escaped
# differently, so it is never kept.)  An entry holds its n and a hit must
# match it: {"a": "x,b=y"} joins to the text kept for {"a": "x", "b": "y"}.
#
# A text is let in the second time it is seen: the first time leaves 8 bits
# of its hash in _memo_seen, at a place given by 14 others (one text in 256
# finds its bits there already and gets in at once), so one-off series do
# not evict the ones that repeat.  Everything an entry holds follows from
# the text alone: a text that reads one way has one escaped form, the same
# whether _escaped_dims escaped the text or _escaped_from_memo put kept
# values in (both from exactly what the text was joined from), so no
# reading of the pairs can put a wrong one there.  The memo starts again
# empty before it would hold more than _MEMO_MAX texts or _MEMO_CHARS
# characters of them, and a text longer
# than _MEMO_TEXT_MAX is not kept.  (Threads inserting at once can each add
# one text past those caps before one of them clears, and the count of
# characters can miss an update: what holds whatever the timing is _MEMO_MAX
# entries, and one more per thread inserting at that moment, of at most
# _MEMO_TEXT_MAX characters each, and their escaped forms, at most twice as
# long.)
#
# A miss costs ~13% of a line (the hash of the text, the lookup, the
# admission: 29,400 instructions a line of unique series against 26,000
# with the memo resting), so the memo is only used while it pays: every _MEMO_WINDOW misses, fewer hits than misses
# send it to rest for _MEMO_REST lines, after which it is tried again.
# Series that never repeat then pay the memo's miss on one line in
# seventeen.  Resting is an iterator that yields _MEMO_REST times
# (_memo_rest): one step of it a line, and no int to allocate.
_MEMO_MAX = 16384
_MEMO_CHARS = 1 << 22
_MEMO_TEXT_MAX = 1024
_MEMO_SEEN_MASK = 16383
_MEMO_WINDOW = 4096
_MEMO_REST = 16 * _MEMO_WINDOW
_memo: dict = {}
_memo_get = _memo.get
_memo_seen = bytearray(_MEMO_SEEN_MASK + 1)
# [hits, misses] of the current window, characters of the texts kept: a
# list, whose items are cheaper to update than module globals.
_memo_stat = [0, 0, 0]
_memo_rest = repeat(True, 0)  # exhausted: the memo is consulted


def _memo_judge() -> None:
    """Rest the memo when the last _MEMO_WINDOW misses came with fewer hits."""
    global _memo_rest
    stat = _memo_stat
    if stat[0] < stat[1]:
        _memo_rest = repeat(True, _MEMO_REST)
    stat[0] = stat[1] = 0


# The places of the values in a _template: a slice built once (``[1::2]``
# builds one each time, ~1% of a line).
_VALUES = slice(1, None, 2)
_first = itemgetter(0)
_second = itemgetter(1)
# Bytes the encoder's hot path looks for in the values of a line: every byte
# that separates fields (SP "," "="), ends the line (LF) or may never appear
# in a value unescaped ("\\" '"', the controls).  UTF-8 gives them no other
# meaning: every byte of a multi-byte sequence is >= 0x80.
_CONTROLS = bytes(range(0x20)) + b"\x7f"
_MARKS = _CONTROLS + b' ,="\\'
# A translation that turns every _MARKS byte into 0xFF (which never occurs in
# UTF-8) and every other byte into 0x00: ``255 in values.translate(_MARKED)``
# is one pass and a memchr.  Looking at the values alone costs a join and an
# encode; counting the marks of the whole line against the separators it
# should hold (``len(line) - len(line.translate(None, _MARKS))``) cost 2,457
# instructions a unique-series line (10% of it): bytes.translate's loop with
# deletions is ~4 times that of a plain table, and the line is twice as long.
_MARKED = bytes(0xFF if b in _MARKS else 0 for b in range(256))


def _fast_head(key: Any, dimensions: Any) -> Optional[str]:
    """The head of an ordinary series, checked and escaped a whole field at a time.

    ``key`` an exact ``str``; ``dimensions`` None or a tuple of pairs of
    ``str`` (read as text: no method of a subclass is asked; its callers get
    a dict's pairs from :func:`_read_once`).  None for
    anything else or anything invalid: :func:`_head` decides and names the
    error.  The rules are the scanner's (see :func:`_fast_dims`).
    """
    if type(key) is not str or (key not in _metric_keys and not _fast_metric_key(key)):
        return None
    if dimensions is None:
        return key
    dims = _fast_dims(dimensions)
    return None if dims is None else key + dims


def _fast_dims(dimensions: Any) -> Optional[str]:
    """``,k=v,...`` (escaped) of a tuple of pairs, "" for none; None for
    anything else or anything invalid.

    The pairs are joined first, in one call (:func:`_joined_dims`), and one
    regex over the joined text finds that no value needs an escape, holds a
    control or a lone surrogate or is longer than 255 characters.  Only when
    it does are the values looked at again.
    """
    text = _joined_dims(dimensions)
    if not text:
        return text
    n = len(dimensions)
    if (_plain_dims_res[n] or _plain_dims_re(n)).match(text) is not None:
        return "," + text
    if _BAD_CHAR_RE.search(text) is not None:
        return None
    text = _escaped_dims(text, n, *_texts_of(dimensions))  # type: ignore[assignment]
    return None if text is None else "," + text


def _joined_dims(dimensions: Any) -> Optional[str]:
    """``k=v,...`` of a tuple of pairs as given (no value checked or escaped
    yet), "" for none; None for anything else, more than 50 pairs, a name or
    value that is not a ``str`` or a dimension key that is not valid.

    The values are joined into the template of their keys (:func:`_template`),
    found by the keys' text: ``str.join`` reads a ``str`` subclass as its
    characters and asks it nothing, so a key is never taken for another one
    that its ``__eq__`` claims to equal.  (:meth:`Encoder._point` joins
    a dict the same way.)
    """
    if type(dimensions) is not tuple or len(dimensions) > MAX_DIMENSIONS \
            or not _pairs_of_two(dimensions):
        return None
    try:
        kt = "\0".join(map(_first, dimensions))  # TypeError: a key that is not a str
        parts = (_templates.get(kt) or _template(kt, len(dimensions)))[:]
        # ValueError: the template of another number of keys (a key holding
        # NUL joins like two keys; it is invalid, the exact helpers say so)
        parts[_VALUES] = map(_second, dimensions)
        return "".join(parts)  # TypeError: a value that is not a str
    except Exception:  # no template (TypeError), ...
        return None  # the exact helpers read the pairs again and decide


def _template(kt: str, n: int) -> Optional[list]:
    """``["k1=", None, ",k2=", None, ...]`` for the values of the n dimension
    keys whose text joined by NUL is ``kt``, cached by ``kt``; None when a
    key is not valid (the scanner's regex, :func:`_fast_dimension_key`) or
    there are more than 50 (a caller's dict can grow between the Encoder's
    check of its length and its copy: only the copy's keys count)."""
    if not n:
        return []
    if n > MAX_DIMENSIONS:
        return None
    ks = kt.split("\0")
    if len(ks) != n:
        return None  # a key holds NUL: invalid
    parts: list = []
    for k in ks:
        if not _fast_dimension_key(k):
            return None
        parts += ("," + k + "=" if parts else k + "=", None)
    if len(_templates) >= _CACHE_MAX:
        _templates.clear()
    _templates[kt] = parts
    return parts


def _reads_one_way(dims: str, n: int) -> bool:
    """Whether joined dimensions ``dims`` of n pairs split into pairs one way
    only: exactly n "=" and n - 1 ",", so no value holds either."""
    return dims.count("=") == n and dims.count(",") == n - 1


def _escaped_dims(dims: str, n: int, keys: str, values: tuple) -> Optional[str]:
    """``dims``, n joined pairs known free of controls and lone surrogates,
    with its values escaped; None when a value is longer than 255 characters.

    ``keys`` (the valid dimension keys joined by NUL) and ``values`` (a tuple
    of ``str``) are what ``dims`` was joined from, as they were read then:
    both immutable, so nothing another thread or a collection's callback does
    to the caller's pairs (or to the Encoder's copy of a dict) can make the
    escaped text differ from the text that was checked.

    With exactly n "=" and n - 1 "," no value holds either: the text splits
    into pairs one way only, and escaping its spaces, quotes and backslashes
    escapes exactly the values (valid keys hold none of them).  The result
    then follows from the text alone, which is what lets the Encoder's memo
    keep it.  A text that reads more than one way ("a=x,b=y,c=z" is both
    {"a": "x,b=y", "c": "z"} and {"a": "x", "b": "y,c=z"}) has its values
    escaped as the pairs give them (all five characters, ``str.replace`` on
    the values joined by NUL: ``str.translate`` with _ESCAPE_TABLE made the
    lines with a value to escape 27% dearer, 41,050 -> 52,329 instructions).
    """
    if _reads_one_way(dims, n):
        if len(dims) > MAX_DIMENSION_VALUE and max(
                len(p) - p.index("=") for p in dims.split(",")) > MAX_DIMENSION_VALUE + 1:
            return None
        return dims.replace("\\", "\\\\").replace('"', '\\"').replace(" ", "\\ ")
    if max(map(str.__len__, values)) > MAX_DIMENSION_VALUE:
        return None
    # All values escaped in one pass, NUL between them: no value holds a control.
    escaped = ("\0".join(values).replace("\\", "\\\\").replace('"', '\\"')
               .replace(" ", "\\ ").replace(",", "\\,").replace("=", "\\=").split("\0"))
    # str.join reads a str subclass as its characters and asks it nothing
    return ",".join(map("=".join, zip(keys.split("\0"), escaped)))


def _texts_of(pairs: tuple) -> Tuple[str, tuple]:
    """The keys joined by NUL and the values of a tuple of exact 2-tuples
    (:func:`_escaped_dims`' reading of what :func:`_joined_dims` joined)."""
    return "\0".join(map(_first, pairs)), tuple(map(_second, pairs))


_STR_ONLY = {str}
_TUPLE_ONLY = {tuple}
_NO_PAIRS = ((), ())  # the keys and values of no pairs
_from_iterable = chain.from_iterable


if sorted(ESCAPED_BY_ENCODER) != sorted('\\" ,='):  # what _escaped_dims escapes
    raise ImportError("_escaped_dims does not escape exactly ESCAPED_BY_ENCODER")


# The escaped text of dimension values that needed an escape, by value:
# values that need one (a user agent, "G1 Old Gen", a city and its
# country) come from a few texts even when the series never repeat, and
# escaping the joined text of every such line made it twice the cost of a
# plain one (40,400 against 21,600 instructions).  Only exact ``str`` values
# are looked up (a subclass's hash and equality are its own; the lookup
# would be a second reading of the value) and only values of a line that
# _escaped_dims accepted are kept: printable, at most MAX_DIMENSION_VALUE
# characters.  Cleared when full.  (Threads learning at once can each add
# the values of one line, at most MAX_DIMENSIONS, past the cap before one
# of them clears: bounded all the same, each value at most 255 characters
# and its escape 510.)
_ESCAPES_MAX = 4096
_escapes: dict = {}
_escapes_get = _escapes.get


def _learn_escapes(values: tuple) -> None:
    """Keep the escaped text of each value of ``values`` that needs an escape.

    ``values``: the exact reading of a line's values that :func:`_escaped_dims`
    accepted (printable, none too long).
    """
    if len(_escapes) > _ESCAPES_MAX - MAX_DIMENSIONS:
        _escapes.clear()
    for v in values:
        if type(v) is str:
            e = str.translate(v, _ESCAPE_TABLE)  # as _escape_value escapes a value
            if len(e) != len(v):
                _escapes[v] = e


def _escaped_from_memo(keys: str, values: tuple, dims: str, extra: int) -> Optional[str]:
    """``dims`` with its values escaped from :data:`_escapes`, or None.

    ``dims`` was joined from the valid keys ``keys`` (joined by NUL) and
    ``values``, which hold ``extra`` _MARKS bytes.
    A kept value holds no control, so its marks are the characters its
    escape doubles: ``len(escaped) - len(value)``.  When the kept values
    account for all ``extra`` marks, every other value holds none, so it
    needs no escape and the text is complete.  None (some value is not kept,
    or not a ``str``, or the text is long enough for a value to be too long):
    :func:`_escaped_dims` decides.  Whatever another thread does to the memo
    meanwhile, a value read from it or not changes the count, never the
    meaning.
    """
    if len(dims) > MAX_DIMENSION_VALUE or not _STR_ONLY.issuperset(map(type, values)):
        return None
    parts = _templates.get(keys)
    if parts is None:
        return None
    parts = parts[:]
    parts[_VALUES] = map(_escapes_get, values, values)
    out = "".join(parts)
    return out if len(out) - len(dims) == extra else None


def _read_once(dimensions: Any) -> Any:
    """A dict's pairs as a tuple, read once; anything else as it is.

    The cache key and the head are then worked out from the same pairs,
    whatever another thread does to the dict meanwhile (read twice, a change
    in between stored one content's head under the other content's key).
    """
    if type(dimensions) is dict and len(dimensions) <= MAX_DIMENSIONS:
        return tuple(_snapshot(dimensions).items())
    return dimensions


def _snapshot(dimensions: dict) -> dict:
    """A private copy of a dict, taken in one C call that runs no Python code.

    Reading the caller's dict item by item (``tuple(d.items())`` included)
    allocates on the way, an allocation can start the garbage collector, and
    its finalizers can run Python code, switch threads and change the dict
    half read.  ``dict.copy()`` has read every item before it allocates a
    tracked object; what is read from the copy is one state of the dict.
    """
    return dimensions.copy()


def _series_key(key: Any, pairs: Any) -> Optional[tuple]:
    """The key of a series in the head caches, or None (not cached: the exact
    helpers read it): ``(key, marshal.dumps(pairs, 0))`` for an exact ``str``
    key and ``pairs`` None or an exact tuple of at most 50 items
    (:func:`_read_once`).

    marshal writes the type, length and characters of exact built-in
    objects without asking them anything, and raises ValueError for other
    objects, except those that export a buffer (a ``bytes`` subclass,
    ``numpy.str_``): those it writes as bytes.  No stored key holds such a
    record (:func:`_only_text` is checked before an entry is kept), and
    marshal's output parses one way only, so a hit means exact tuples of
    exact ``str`` with exactly the cached content: a ``str`` subclass with
    its own equality (case-insensitive, say) can never find another series'
    head, as it did when tuples of the caller's objects were compared.
    Version 0 writes no back-references and no interned flag: how objects
    are shared or interned does not change the key.
    """
    if type(key) is not str:
        return None
    if pairs is None:
        return (key, None)
    if type(pairs) is not tuple or len(pairs) > MAX_DIMENSIONS:
        return None  # a hostile size is refused by the exact helpers, uncached
    try:
        return (key, _marshal(pairs, 0))
    except ValueError:  # an object marshal does not take (a subclass, an iterator, ...)
        return None


def _only_text(pairs: Any) -> bool:
    """Whether ``pairs`` (None or a tuple) holds exact 2-tuples of exact
    ``str`` only: what a cache entry's key may describe (see :func:`_series_key`)."""
    return pairs is None or (_pairs_of_two(pairs)
                             and _STR_ONLY.issuperset(map(type, _from_iterable(pairs))))


def _pairs_of_two(dimensions: tuple) -> bool:
    """Every item of ``dimensions`` an exact 2-tuple, read without asking it
    anything (a subclass's ``__len__``/``__getitem__``/``__iter__`` could say
    something else than the ``k, v = pair`` of the exact helpers)."""
    return _TUPLE_ONLY.issuperset(map(type, dimensions)) and set(map(len, dimensions)) <= {2}


def _cached_head(key: Any, dimensions: Any) -> str:
    """_head through a bounded cache, for dimensions given as a dict or a tuple.

    Pipelines repeat a few thousand series: a hit costs one marshal of the
    pairs and one lookup (:func:`_series_key`) instead of validating and
    escaping every dimension again.  Only successful results are cached, so
    every error still comes from _head.
    """
    pairs = _read_once(dimensions)
    ck = _series_key(key, pairs)
    if ck is None:
        return _head(key, pairs)
    head = _heads.get(ck)
    if head is None:
        head = _fast_head(key, pairs) or _head(key, pairs)
        _remember_head(ck, head, pairs)
    return head


def _remember_head(ck: Any, head: str, pairs: Any) -> bool:
    """Cache a head the second time its series is seen.

    When series never repeat, entries would only cost: each is a few tuples
    that outlive the call (and wake the garbage collector) and is never hit.
    A first sighting only leaves the hash, an int the collector ignores.
    """
    h = hash(ck)
    if h in _heads_seen:
        if not _only_text(pairs):
            return False
        if len(_heads) >= _CACHE_MAX:
            _heads.clear()
        _heads[ck] = head
        return True
    if len(_heads_seen) >= _CACHE_MAX:
        _heads_seen.clear()
    _heads_seen.add(h)
    return False


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
    metric_type = _text(metric_type)
    if type(metric_type) is not str or metric_type not in META_TYPES:
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
        name = _text(name)
        value = _text(value)
        if type(name) is not str or name not in META_PROPERTIES:
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
        prefix = _text(prefix)  # a str subclass is its text: its endswith/__add__ are not asked
        if prefix is not None and type(prefix) is not str:
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
        k = _text(k)  # configured dimensions come here unread (as_dimensions)
        v = _text(v)
        field = "dimensions" if index is None else "dimensions[%d]" % index
        if not self.normalize:
            if index is not None:  # errors name the caller's own index, as without options
                _dimension_segment(k, v, index)
            return k, v
        from . import normalize as N

        if type(k) is not str:
            raise EncodeError("a dimension key must be a str, not %s" % type(k).__name__,
                              field + ".key", E.INVALID_DIMENSION_KEY)
        if type(v) is not str:
            raise EncodeError("a value must be a str, not %s" % type(v).__name__,
                              field + ".value", E.INVALID_RECORD)
        nk = N.normalize_dimension_key(k)
        if nk != k and changes is not None:
            changes.append((N.FIELD_DIMENSION_KEY, k, nk))
        nv = N.normalize_dimension_value(v)
        if nv != v and nk is not None and changes is not None:
            changes.append((N.FIELD_DIMENSION_VALUE, v, nv))
        return nk, nv

    def head(self, key: Any, dimensions: Any, ck: Any = False) -> Optional[str]:
        """The validated ``key,dims`` text of a line, or None when it is dropped.

        Raises EncodeError as the plain encoder does for what normalization
        does not cover (or for everything when ``normalize`` is off).
        ``ck``: the line's :func:`_series_key` when the caller has it, with
        ``dimensions`` then as :func:`_read_once` gave them.
        """
        if ck is False:
            dimensions = _read_once(dimensions)
            ck = _series_key(key, dimensions)
        if ck is not None:
            hit = self._cache.get(ck)
            if hit is not None:
                for change in hit[1]:  # every line's changes are counted
                    self.log.record(*change)
                return hit[0]
        changes: list = []
        head = self._head(key, dimensions, changes)
        for change in changes:
            self.log.record(*change)
        if ck is not None and _only_text(dimensions):
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[ck] = (head, tuple(changes))
        return head

    def _key(self, key: Any, changes: list) -> Any:
        """The prefixed (and, with ``normalize``, normalized) key; None: drop the line."""
        key = _text(key)
        full = self.prefix + "." + key if self.prefix and type(key) is str else key
        if not self.normalize:
            return full
        from . import normalize as N

        if type(key) is not str:
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
        if dimensions is not None:   # (as in _head: read by its pairs)
            for i, k, v in _dimension_pairs(dimensions, None):
                if i == MAX_DIMENSION_PAIRS_MERGED:
                    raise EncodeError("too many dimensions: more than %d pairs given"
                                      % MAX_DIMENSION_PAIRS_MERGED, "dimensions",
                                      E.TOO_MANY_DIMENSIONS)
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
            value = _text(value)
            fixed = fn(value) if type(value) is str else None
            if fixed != value:
                self.log.record(field, value, fixed)
            out.append(fixed)
        if out[1] is None and out[2] is None and out[3] is None:
            return None
        return tuple(out)


def _has_options(prefix: Any, default_dimensions: Any, static_dimensions: Any,
                 normalize: Any, oneagent_enrichment: Any) -> bool:
    """Whether an Encoder built with these arguments needs :class:`_Options`
    (both implementations and ``arrow.encode_table`` ask this).  A prefix
    counts unless it is None or empty text: its truth is not asked (a ``str``
    subclass is its text, whatever its ``__bool__`` says; any other object is
    refused by :class:`_Options` instead of being taken for "no prefix")."""
    prefix = _text(prefix)
    return ((prefix is not None and (type(prefix) is not str or prefix != ""))
            or bool(default_dimensions) or bool(static_dimensions) or bool(normalize)
            or bool(oneagent_enrichment))


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

    # _tally: (the buffer, bytes counted, lines in them), for :attr:`lines`:
    # every line ends with the only LF it holds, so the lines are counted
    # when asked, not one by one in the hot loop (that was 1.3% of a line).
    __slots__ = ("_buf", "_tally", "_opts", "_log")

    def __init__(self, prefix: Optional[str] = None, default_dimensions: Any = None,
                 static_dimensions: Any = None, normalize: bool = False,
                 oneagent_enrichment: bool = False) -> None:
        self._buf = bytearray()
        self._tally = (self._buf, 0, 0)
        self._opts: Optional[_Options] = None
        self._log: Any = None
        if _has_options(prefix, default_dimensions, static_dimensions, normalize,
                        oneagent_enrichment):
            self._opts = _Options(prefix, default_dimensions, static_dimensions, normalize,
                                  oneagent_enrichment)

    def _sibling(self) -> "Encoder":
        """An empty encoder sharing this one's options (and normalization log).

        The Cython core lets the reference write a line with options into a
        sibling private to that call: concurrent calls never share a buffer.
        """
        sibling = Encoder.__new__(Encoder)
        sibling._buf = bytearray()
        sibling._tally = (sibling._buf, 0, 0)
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

    def _head_of(self, key: Any, dimensions: Any) -> Optional[str]:
        """The line's ``key,dims`` text; None when normalization drops it.

        Valid, repeated series stay cheap: a cache hit is one :func:`_series_key`
        and one lookup.
        """
        if self._opts is None:
            return _cached_head(key, dimensions)
        pairs = _read_once(dimensions)
        ck = _series_key(key, pairs)
        hit = None if ck is None else self._opts._cache.get(ck)
        if hit is not None and not hit[1]:
            return hit[0]
        return self._opts.head(key, pairs, ck)  # records the changes, if any

    def _point(self, payload: str, key: Any, value: Any, dimensions: Any,
               timestamp: Any, text: Optional[str] = None) -> bool:
        """Append ``key[,dims]payload text[ timestamp]`` and LF when the line
        is of the common case; False (nothing appended) if not: the exact
        helpers then decide and name the error.  The hot loop of every
        exporter, in one frame (a Python call is ~3% of a line).

        The common case: a plain encoder, a valid ``str`` key, dimensions
        None, a dict or a tuple of pairs of ``str``, no timestamp or an int
        one from 1973 on, and for gauge and count (``text`` None) a finite
        float ``value``, written here; :meth:`summary` checks its numbers
        and key and passes their ``text``.  No line of the common case can
        exceed MAX_LINE_CHARS: 50 dimensions of keys <= 100 and escaped
        values <= 510 characters and a key <= 255 are about 31,000.

        A dict is copied and joined here, and so is a tuple of exact
        2-tuples (anything else: not taken here).
        While the memo (:data:`_memo`) is consulted, a text of dimensions
        found there with the same n is written unchecked, and a text checked
        here is kept the second time it is seen.  Dimensions checked here:
        one ``translate`` of their values (the keys are valid) finds any
        _MARKS byte, which means a value needs an escape (the values' own
        text, :data:`_escapes`, :func:`_escaped_dims`) or is invalid.  A
        line without dimensions holds no mark that is not a separator.
        """
        if text is None:
            if not (self._opts is None and type(value) is float
                    and type(key) is str and (key in _metric_keys or _fast_metric_key(key))):
                return False
            if value.is_integer() and -1e16 < value < 1e16 and value:
                # repr() of these is their digits and ".0" (from 1e16 on it
                # has an exponent; zero keeps its sign): most counters and
                # gauges, and "%d" is a third cheaper than repr() and a slice
                # (is_integer() is False for inf and nan: these are finite)
                text = "%d" % value
            elif value - value != 0.0:
                return False  # inf or nan: the exact helpers name the error
            else:
                text = repr(value)
                if text[-2:] == ".0":
                    text = text[:-2]
                elif "e" in text:
                    text = _format_number(value, "value")
        # The keys and the values, each as a tuple read once: everything
        # below reads these (and only these), so nothing another thread or a
        # collection's callback does to the caller's pairs meanwhile can make
        # the text written differ from the text checked.
        if type(dimensions) is dict:
            if len(dimensions) > MAX_DIMENSIONS:
                return False  # never copied: the exact helpers refuse it unread
            # One private copy (_snapshot, called inline: a call is 1% of a
            # line): another thread can change the caller's dict between any
            # two bytecodes, and a count of pairs read after the text was
            # joined let a value holding "," and "=" through unescaped.
            # (A copy that grew past MAX_DIMENSIONS meanwhile has no
            # _template: the join below fails and the exact helpers decide.)
            dimensions = dimensions.copy()
            ks = tuple(dimensions)
            vs = tuple(dimensions.values())
        elif dimensions is None:
            ks = vs = ()
        elif type(dimensions) is tuple and len(dimensions) <= MAX_DIMENSIONS \
                and _pairs_of_two(dimensions):
            # exact 2-tuples in an exact tuple: nothing in them can change,
            # and zip asks none of them anything
            ks, vs = zip(*dimensions) if dimensions else _NO_PAIRS
        else:
            return False
        if vs:
            try:
                # Joined into the template of their keys (as _joined_dims
                # joins): joining a tuple of the keys is ~400 instructions
                # cheaper than joining the dict itself, which str.join first
                # copies into a list.
                kt = "\0".join(ks)  # TypeError: a key that is not a str
                parts = (_templates.get(kt) or _template(kt, len(ks)))[:]
                parts[_VALUES] = vs  # ValueError: another number of keys (see _joined_dims)
                dims = "".join(parts)  # TypeError: a value that is not a str
            except Exception:  # the exact helpers decide and name the error
                return False
        else:
            dims = ""  # (n and kt are only read when there are dimensions)
        # The line's end, " <timestamp>" or none, is written by the one
        # f-string that writes the line (a text of it alone is one more
        # allocation a line): ``sep`` and ``ts`` are "" without one.
        if timestamp is None:
            sep = ts = ""
        elif type(timestamp) is int and SECONDS_TIMESTAMP_BELOW <= timestamp <= MAX_INT64:
            sep = " "
            ts = timestamp
        else:
            return False
        if not dims:
            # A valid key, the payload, a formatted number and an int hold
            # no mark and no non-ASCII character: nothing to check.
            self._buf += f"{key}{payload}{text}{sep}{ts}\n".encode()
            return True
        n = len(vs)  # not the copy's len(): it is what was joined
        consulted = False
        # for/else: FOR_ITER is the cheapest way to ask an iterator
        for _ in _memo_rest:
            break  # resting: one of its _MEMO_REST lines
        else:
            consulted = True
            stat = _memo_stat
            hit = _memo_get(dims)
            if hit is not None and hit[0] == n:
                stat[0] += 1
                # a checked text and a valid (ASCII) key: it encodes
                self._buf += f"{key},{hit[1]}{payload}{text}{sep}{ts}\n".encode()
                return True
            stat[1] += 1
            if stat[1] >= _MEMO_WINDOW:
                _memo_judge()
        # The values, as bytes with each _MARKS byte turned into 0xFF: the
        # keys are valid and the rest of the line is ours, so a mark in the
        # values is all there is to find.
        try:
            marked = "".join(vs).encode().translate(_MARKED)
        except UnicodeEncodeError:  # a lone surrogate
            return False
        out = dims
        if 255 in marked or len(dims) > MAX_DIMENSION_VALUE:
            # a value needs an escape, holds a control or may be too long.
            extra = marked.count(255)
            out = None
            if len(dims) <= MAX_DIMENSION_VALUE:  # no value can be too long
                # The values' spaces, quotes and backslashes escaped in the
                # text: when that adds exactly ``extra`` characters, the
                # values' marks are those characters and nothing else (a
                # control, a "," or "=" is a mark that is not escaped here),
                # so the text reads one way and this is its escaped form
                # (_escaped_dims writes the same).
                out = dims.replace("\\", "\\\\").replace('"', '\\"').replace(" ", "\\ ")
                if len(out) - len(dims) != extra:
                    out = None
            if out is None:
                out = _escaped_from_memo(kt, vs, dims, extra)  # type: ignore[assignment]
            if out is None:
                # isprintable() is False for every control, and for many other
                # characters a value may hold (private-use, unassigned, format,
                # separators other than the space): the exact helpers take those.
                # (A line the kept escapes account for may hold such characters
                # too: they are valid in a value, and the only invalid ones,
                # the controls and lone surrogates, are marks or fail to
                # encode above.)
                if not dims.isprintable():
                    return False
                out = _escaped_dims(dims, n, kt, vs)  # type: ignore[assignment]
                if out is None:
                    return False
                if out is not dims:
                    _learn_escapes(vs)
        # a valid (ASCII) key and values that encode: the line encodes
        data = f"{key},{out}{payload}{text}{sep}{ts}\n".encode()
        if consulted and len(dims) <= _MEMO_TEXT_MAX:
            # The str keeps the hash the lookup computed.  Cut to 22 bits
            # once: each operation on the full 64-bit hash allocates.
            h = hash(dims) & 0x3FFFFF
            place = h & _MEMO_SEEN_MASK
            h >>= 14
            if _memo_seen[place] != h:
                _memo_seen[place] = h  # the first sighting
            elif out is dims or _reads_one_way(dims, n):
                # the second, and a text that reads one way: all of the
                # entry follows from the text checked (its one escaped form)
                if len(_memo) >= _MEMO_MAX or stat[2] + len(dims) > _MEMO_CHARS:
                    _memo.clear()
                    stat[2] = 0
                stat[2] += len(dims)
                _memo[dims] = (n, out)
        self._buf += data
        return True

    def gauge(self, key: str, value: float, dimensions: Any = None,
              timestamp: Optional[int] = None) -> None:
        """Append ``key,dims gauge,<value> [timestamp]``."""
        if not self._point(" gauge,", key, value, dimensions, timestamp):
            self._exact_point("gauge,", key, value, dimensions, timestamp)

    def count(self, key: str, delta: float, dimensions: Any = None,
              timestamp: Optional[int] = None) -> None:
        """Append ``key,dims count,delta=<delta> [timestamp]``."""
        if not self._point(" count,delta=", key, delta, dimensions, timestamp):
            self._exact_point("count,delta=", key, delta, dimensions, timestamp)

    def _exact_point(self, payload: str, key: Any, value: Any, dimensions: Any,
                     timestamp: Any) -> None:
        """A gauge or count line by the exact helpers, which name every error."""
        head = self._head_of(key, dimensions)
        if head is not None:
            self._append(_finish(head, payload + _format_number(value, "value"), timestamp))

    def summary(self, key: str, min: float, max: float, sum: float, count: int,
                dimensions: Any = None, timestamp: Optional[int] = None) -> None:
        """Append ``key,dims gauge,min=..,max=..,sum=..,count=.. [timestamp]``.

        The fields must be consistent as the server checks them (§7.3).
        """
        # The common case, as in _point: finite floats that are consistent
        # (a finite min <= max rules out every non-finite sum the tolerance
        # checks do not reject), a count from 1 up.
        if (self._opts is None and type(min) is float and type(max) is float
                and type(sum) is float and type(count) is int and 0 < count <= MAX_INT64
                and -_INF < min <= max < _INF
                and type(key) is str and (key in _metric_keys or _fast_metric_key(key))):
            avg = sum / count
            # One text for the four numbers: each float is followed by ",",
            # so ".0," can only be the end of one, and the count (an int)
            # holds neither "." nor "e".
            nums = f"{min!r},max={max!r},sum={sum!r},count={count}".replace(".0,", ",")
            if ("e" not in nums and min - avg <= SUMMARY_TOLERANCE
                    and avg - max <= SUMMARY_TOLERANCE):
                if self._point(" gauge,min=", key, None, dimensions, timestamp, nums):
                    return
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
        buf = bytearray()
        self._buf = buf
        self._tally = (buf, 0, 0)

    @property
    def lines(self) -> int:
        """Number of lines in the buffer."""
        # Only the bytes appended since the last call are counted.  The tally
        # names its buffer: after clear() (from another thread, say) a tally
        # of the old buffer is not continued.
        buf = self._buf
        tally = self._tally
        start, n = (tally[1], tally[2]) if tally[0] is buf else (0, 0)
        end = len(buf)
        n += buf.count(b"\n", start, end)
        self._tally = (buf, end, n)
        return n

    def __len__(self) -> int:
        """Size of the buffer in bytes."""
        return len(self._buf)

    def __repr__(self) -> str:
        return "<Encoder lines=%d bytes=%d>" % (self.lines, len(self._buf))


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
