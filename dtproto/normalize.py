"""Normalization of arbitrary names and values into ones the server accepts.

This is what a *serializer* does to user input (docs/protocol.md §12); the decoder
never normalizes, it validates.  The rules follow the Java
dynatrace-metric-utils 2.5 normalizer (the reference of §12: single pass,
only the first character of a section is replaced, limits 255/100/255), with
three deliberate additions so that every output passes dtproto's strict
decoder:

* a metric key shorter than 3 characters after normalization, or starting
  with the reserved ``dt.`` prefix, is unusable: the function returns ``None``
  (no library enforces either rule, the server rejects both, §12.1 step 7);
* dimension values are *logical* values: truncated to 255 code points and
  with each run of invalid characters replaced by one ``_``, but not escaped
  and never treated as "already quoted" (escaping is the encoder's job, so
  the value decodes back to exactly what the function returned);
* metadata strings are logical values too (no quoting, see
  :func:`normalize_description`).

Every function is pure and safe to call on already-valid input: a valid name
is returned unchanged (the same object) after one regular-expression or
``str.isprintable`` check.  Results are memoized in bounded caches
(:data:`CACHE_SIZE` entries per function, cleared when full), so repeated
names cost one dictionary lookup; ``normalize_metric_key.cache_clear()``
empties a cache.

Nothing here logs.  Callers that want a report of what changed own a
:class:`NormalizationLog` and call :meth:`NormalizationLog.record`.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections import Counter, deque
import functools
from typing import Callable, Deque, Dict, List, NamedTuple, Optional, TypeVar, Union

from ._constants import (
    MAX_DESCRIPTION,
    MAX_DIMENSION_KEY,
    MAX_DIMENSION_VALUE,
    MAX_DISPLAY_NAME,
    MAX_METRIC_KEY,
    MAX_UNIT,
    MIN_METRIC_KEY,
    RESERVED_PREFIX,
    UNIT_CHARS,
)
from ._input import _text

__all__ = [
    "normalize_metric_key",
    "normalize_dimension_key",
    "normalize_dimension_value",
    "normalize_prefix",
    "normalize_prefixed_key",
    "join_prefix",
    "normalize_display_name",
    "normalize_description",
    "normalize_unit",
    "is_invalid_value_char",
    "read_oneagent_metadata",
    "ONEAGENT_INDIRECTION_FILE",
    "ONEAGENT_ALTERNATIVE_FILE",
    "Normalization",
    "NormalizationLog",
    "FIELD_METRIC_KEY",
    "FIELD_DIMENSION_KEY",
    "FIELD_DIMENSION_VALUE",
    "FIELD_DISPLAY_NAME",
    "FIELD_DESCRIPTION",
    "FIELD_UNIT",
    "CACHE_SIZE",
]

#: Entries per memoizing cache.  Measured on CPython 3.11: a hit in a plain
#: dict that is cleared when full costs ~95 ns per call, a hit in
#: ``functools.lru_cache`` ~130 ns (it relinks its LRU list on every hit).
#: Clearing loses the hot names once per CACHE_SIZE distinct misses, which
#: only matters for high-cardinality dirty input, where it costs one
#: recomputation per name.
CACHE_SIZE = 4096

_T = TypeVar("_T")


def _memoized(fn: Callable[[str], _T]) -> Callable[[str], _T]:
    """Bounded memo for a one-argument pure function; ``.cache_clear()`` empties it."""
    cache: Dict[str, _T] = {}

    def wrapper(s: str, _cache: Dict[str, _T] = cache, _fn: Callable[[str], _T] = fn) -> _T:
        if type(s) is not str:
            # A str subclass is normalized as its text, uncached: its own
            # __eq__/__hash__ could find another string's entry, and its
            # methods are not asked.  Anything else is the function's to refuse.
            return _fn(_text(s))
        try:
            return _cache[s]
        except KeyError:
            pass
        result = _fn(s)
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[s] = result
        return result

    functools.update_wrapper(wrapper, fn)
    wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
    wrapper.cache = cache  # type: ignore[attr-defined]
    return wrapper

# Field kinds used in :class:`Normalization` records and log counters.
FIELD_METRIC_KEY = "metric_key"
FIELD_DIMENSION_KEY = "dimension_key"
FIELD_DIMENSION_VALUE = "dimension_value"
FIELD_DISPLAY_NAME = "display_name"
FIELD_DESCRIPTION = "description"
FIELD_UNIT = "unit"

# Strict grammar of §3 as regular expressions: the fast "already valid" check.
# fullmatch (not match + "$", which also matches before a trailing LF).
_VALID_METRIC_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*").fullmatch
_VALID_DIMENSION_KEY = re.compile(r"[a-z_][a-z0-9_:-]*(?:\.[a-z_][a-z0-9_:-]*)*").fullmatch

_KEY_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_KEY_SECTION_START = _KEY_FIRST | frozenset("0123456789")
_KEY_CHARS = _KEY_SECTION_START | frozenset("-")
_DIM_START = frozenset("abcdefghijklmnopqrstuvwxyz_")
_DIM_CHARS = _DIM_START | frozenset("0123456789-:")

# Non-ASCII code points whose *simple* lowercase mapping (Java's
# Character.toLowerCase) is an ASCII letter.  Python's str.lower() uses the
# full mapping, which turns U+0130 into "i" + U+0307.
_SIMPLE_LOWER_TO_ASCII = {"\u0130": "i", "\u212a": "k"}

# Java's StringValueValidator.isInvalidCodePoint: categories Cc, Cf, Co, Cs,
# Zl, Zp and unassigned (Cn) -- except the "Supplemental Symbols and
# Pictographs" block, which older JDKs did not know yet and which Java keeps.
# Python's own Unicode database decides what is unassigned.
_INVALID_CATEGORIES = frozenset(["Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"])
_category = unicodedata.category


def is_invalid_value_char(ch: str) -> bool:
    """True if ``ch`` (one code point) is replaced in dimension values (§12.3 step 2)."""
    if _category(ch) in _INVALID_CATEGORIES:
        return not (_category(ch) == "Cn" and 0x1F900 <= ord(ch) <= 0x1F9FF)
    return False


def _java_truncate(s: str, limit: int) -> str:
    """The part of ``s`` Java's loop visits: code points starting below UTF-16 offset ``limit``.

    Java truncates keys to ``limit`` UTF-16 units (a supplementary character
    starting at the last unit is still read whole).  Only non-BMP characters
    make this differ from ``s[:limit]``.
    """
    if len(s) <= limit // 2 or (len(s) <= limit and s.isascii()):
        return s
    if s.isascii():
        return s[:limit]
    units = 0
    for i, ch in enumerate(s):
        if units >= limit:
            return s[:i]
        units += 2 if ord(ch) > 0xFFFF else 1
    return s


def _metric_key_java(key: str) -> Optional[str]:
    """Java 2.5 ``Normalizer.normalizeMetricKey`` without dtproto's extra rules."""
    if not key:
        return None
    s = _java_truncate(key, MAX_METRIC_KEY)
    if s[0] == ".":
        return None  # empty first section
    out: List[str] = []
    append = out.append
    last = len(s) - 1
    # The first character only (not the whole run, as the legacy libraries do)
    # is replaced; the following invalid run then merges into that "_".
    if s[0] in _KEY_FIRST:
        append(s[0])
        sanitized = False
    else:
        append("_")
        sanitized = True
    section_start = False
    for i in range(1, len(s)):
        ch = s[i]
        if section_start:
            if ch == ".":
                continue  # empty section: dropped
            append(".")
            if ch in _KEY_SECTION_START:
                append(ch)
                sanitized = False
            else:
                append("_")
                sanitized = True
            section_start = False
        elif ch == ".":
            if i != last:  # a trailing dot is dropped
                section_start = True
                sanitized = False
        elif ch in _KEY_CHARS:
            append(ch)
            sanitized = False
        elif not sanitized:
            append("_")
            sanitized = True
    return "".join(out)


def _usable_metric_key(key: str) -> bool:
    return MIN_METRIC_KEY <= len(key) <= MAX_METRIC_KEY and not key.startswith(RESERVED_PREFIX)


@_memoized
def normalize_metric_key(key: str) -> Optional[str]:
    """Normalize a metric key (docs/protocol.md §12.1, Java 2.5 rules).

    * The first 255 characters are kept (Java counts UTF-16 units; this only
      matters for supplementary characters, which are invalid anyway).
    * An empty key or one starting with ``.`` (empty first section) is unusable.
    * Empty later sections vanish (``a..b`` -> ``a.b``, ``a.`` -> ``a``).
    * Only the *first* character of the key is replaced by ``_`` if it is not
      ``[A-Za-z_]`` (``12case`` -> ``_2case``, ``000`` -> ``_00``); a later
      section may start with a digit and only its first character is replaced
      if it is not ``[A-Za-z0-9_]`` (``a.-b`` -> ``a._b``).
    * Every run of characters outside ``[A-Za-z0-9_-]`` becomes one ``_``
      (``mÄtric`` -> ``m_tric``, ``a,,,b  c`` -> ``a_b_c``).

    The result is what the official libraries produce, even where the server
    would still reject it: a key shorter than 3 characters (``"up"``) or one
    starting with the reserved ``dt.`` prefix.  Inventing names (padding)
    would be worse; :class:`dtproto.Encoder` with ``normalize=True`` drops
    such lines and records the drop.  :func:`is_usable_metric_key` tells.

    Returns:
        The normalized key (the same object if ``key`` was already valid), or
        ``None`` if no key can be made of it (empty, or starting with ``.``).
    """
    if _VALID_METRIC_KEY(key) is not None and len(key) <= MAX_METRIC_KEY:
        return key
    return _metric_key_java(key)


def is_usable_metric_key(key: Optional[str]) -> bool:
    """True when ``key`` (e.g. a normalized one) is accepted by the strict decoder."""
    return (key is not None and _VALID_METRIC_KEY(key) is not None
            and _usable_metric_key(key))


def _simple_lower(ch: str) -> str:
    # Only whether the result is ASCII matters: everything else becomes "_".
    if ch.isascii():
        return ch.lower()
    return _SIMPLE_LOWER_TO_ASCII.get(ch, ch)


@_memoized
def normalize_dimension_key(key: str) -> Optional[str]:
    """Normalize a dimension key (docs/protocol.md §12.2, Java 2.5 rules).

    The first 100 characters (UTF-16 units, as in Java) are lowercased per
    code point (simple case mapping, so ``İ`` -> ``i``), empty sections vanish
    (``.a.`` -> ``a``), the first character of each section is replaced by
    ``_`` unless it is ``[a-z_]`` (``---dim`` -> ``_--dim``, ``0tag`` ->
    ``_tag``) and each run of characters outside ``[a-z0-9_:-]`` becomes one
    ``_``.  The result always matches the strict grammar (1..100 characters).

    Returns:
        The normalized key (the same object if already valid), or ``None``
        if nothing is left (empty input, only dots): drop the dimension.
    """
    if len(key) <= MAX_DIMENSION_KEY and _VALID_DIMENSION_KEY(key) is not None:
        return key
    if not key:
        return None
    s = _java_truncate(key, MAX_DIMENSION_KEY)
    out: List[str] = []
    append = out.append
    last = len(s) - 1
    section_start = True
    sanitized = False
    for i, ch in enumerate(s):
        ch = _simple_lower(ch)
        if section_start:
            if ch == ".":
                continue  # leading dot or empty section
            if out:
                append(".")
            if ch in _DIM_START:
                append(ch)
                sanitized = False
            else:
                append("_")
                sanitized = True
            section_start = False
        elif ch == ".":
            if i != last:  # a trailing dot is dropped
                section_start = True
                sanitized = False
        elif ch in _DIM_CHARS:
            append(ch)
            sanitized = False
        elif not sanitized:
            append("_")
            sanitized = True
    return "".join(out) or None


def _replace_invalid_runs(s: str) -> str:
    out: List[str] = []
    append = out.append
    sanitized = False
    for ch in s:
        if is_invalid_value_char(ch):
            if not sanitized:
                append("_")
                sanitized = True
        else:
            append(ch)
            sanitized = False
    return "".join(out)


@_memoized
def normalize_dimension_value(value: str) -> str:
    """Normalize a dimension value to its *logical* form (docs/protocol.md §12.3).

    Each run of invalid characters (Unicode category C as Java defines it:
    Cc, Cf, Co, Cs, unassigned, plus Zl and Zp; this includes every control
    character the strict decoder rejects) becomes one ``_``; then the result
    is cut to 255 code points.  Replacing before cutting is Java's order, so
    ``"\\x00" * 300 + "abc"`` keeps ``"_abc"``.

    The value is **not** escaped and a value in double quotes is **not**
    treated as already quoted (Java 2.5 does both): the encoder escapes
    ``, = SP \\ "``, and the decoded line then yields exactly this string.
    The limit applies to the logical value, as the strict decoder counts it,
    so a trailing ``=`` is never lost to its escape (Java drops it).

    An empty value stays empty (``k=`` is valid, [A-6]); whether to emit it
    is the encoder's decision.

    Returns:
        The normalized value (the same object if nothing had to change).
    """
    if len(value) <= MAX_DIMENSION_VALUE and value.isprintable():
        # isprintable() is False for every character Java treats as invalid
        # (and for a few valid ones such as NBSP, which take the slow path).
        return value
    out = _replace_invalid_runs(value)
    if len(out) > MAX_DIMENSION_VALUE:
        out = out[:MAX_DIMENSION_VALUE]
    return value if out == value else out


# --- prefixes (§12.1 step 6) ---------------------------------------------------


def join_prefix(prefix: Optional[str], key: str) -> str:
    """``prefix + "." + key``, or ``key`` when there is no prefix (not normalized)."""
    prefix, key = _text(prefix), _text(key)
    if not prefix:
        return key
    return prefix + "." + key


def normalize_prefixed_key(prefix: Optional[str], key: str) -> Optional[str]:
    """Join ``prefix`` and ``key`` with ``.`` and normalize the whole (§12.1 step 6).

    A prefix ending in ``.`` works as expected (``"prefix."`` + ``"metric"``
    -> ``prefix.metric``: the empty section vanishes).  Returns ``None`` when
    the joined key is unusable (see :func:`normalize_metric_key`).
    """
    return normalize_metric_key(join_prefix(prefix, key))


def normalize_prefix(prefix: Optional[str]) -> Optional[str]:
    """Normalize a prefix once, e.g. when an encoder is constructed.

    Returns ``""`` for no prefix, ``None`` if no key can ever be valid with
    it (it starts with ``.`` or is the reserved ``dt``), else the prefix
    normalized with the metric-key rules (trailing dots removed, no
    length minimum).  For every key,
    ``normalize_prefixed_key(p, k) == normalize_metric_key(join_prefix(normalize_prefix(p), k))``
    as long as ``join_prefix(p, k)`` is at most 255 characters long, so an
    encoder may join the normalized prefix with an already valid key
    directly and only fall back to :func:`normalize_prefixed_key` on a miss.
    """
    prefix = _text(prefix)
    if not prefix:
        return ""
    # A trailing dot only announces the separator; a leading one makes every
    # joined key start with an empty section (unusable).
    out = _metric_key_java(prefix.rstrip(".") or prefix)
    if out is None or out == "dt" or out.startswith(RESERVED_PREFIX):
        return None
    return out


# --- metadata (§12.4, §9) -------------------------------------------------------


def _clean_meta_text(text: Optional[str], limit: int) -> Optional[str]:
    text = _text(text)
    if not text or text == '""':
        return None
    out: List[str] = []
    for ch in text:
        if ch == "\n":
            # Java writes LF as the two characters "\n" inside its quotes; the
            # strict decoder reads that back as backslash + "n" ([A-9]).
            out.append("\\n")
        elif ch.isprintable() or not is_invalid_value_char(ch):
            out.append(ch)
        # other invalid characters are removed, not replaced (Java metadata)
    cleaned = "".join(out)
    if not cleaned.strip():
        return None
    if len(cleaned) > limit:
        cleaned = cleaned[:limit]
    return cleaned


def normalize_display_name(name: Optional[str]) -> Optional[str]:
    """Clean a ``dt.meta.displayName`` value (§12.4); ``None`` = drop the property.

    Invalid characters (the dimension-value set) are removed, LF becomes the
    two characters ``\\n``, the result is cut to 300 code points.  Empty,
    blank or ``""`` input gives ``None``.  The value is logical: quoting or
    escaping it is the encoder's job.
    """
    return _clean_meta_text(name, MAX_DISPLAY_NAME)


def normalize_description(description: Optional[str]) -> Optional[str]:
    """Clean a ``dt.meta.description`` value (§12.4); ``None`` = drop the property.

    Same rules as :func:`normalize_display_name`, limit 65,535 code points.
    """
    return _clean_meta_text(description, MAX_DESCRIPTION)


def normalize_unit(unit: Optional[str]) -> Optional[str]:
    """Return ``unit`` if it matches ``[A-Za-z0-9%[]{}/_]{1,63}``, else ``None`` (§12.4).

    Units are validated, never rewritten (Java ``UnitValidator``).
    """
    unit = _text(unit)
    if not unit or len(unit) > MAX_UNIT:
        return None
    for ch in unit:
        if ch not in UNIT_CHARS:
            return None
    return unit


# --- OneAgent metadata enrichment (§12.5) ----------------------------------------

#: The "magic" indirection file.  OneAgent intercepts the opening of this
#: relative name and serves a one-line file holding the path of the real
#: ``key=value`` properties file.
ONEAGENT_INDIRECTION_FILE = "dt_metadata_e617c525669e072eebe3d0f08212e8f2.properties"
#: Read when the indirection file gives no name (Java 2.x; Kubernetes setups).
ONEAGENT_ALTERNATIVE_FILE = "/var/lib/dynatrace/enrichment/dt_metadata.properties"

PathLike = Union[str, "os.PathLike[str]"]


ONEAGENT_MAX_FILE_BYTES = 1 << 20  # OneAgent's files are a few hundred bytes


def _read_text(path: PathLike) -> Optional[str]:
    """A small regular file's text, or None: never blocks, never reads without bound.

    The indirection file names any path, so it may name a FIFO (an open that
    would block), a device (/dev/zero never ends) or a huge file: opened
    non-blocking, only a regular file of at most ONEAGENT_MAX_FILE_BYTES is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError, TypeError):
        # ValueError: a NUL in the path read from the indirection file.
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        size = 0
        while size <= ONEAGENT_MAX_FILE_BYTES:
            chunk = os.read(fd, ONEAGENT_MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > ONEAGENT_MAX_FILE_BYTES:
            return None
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_oneagent_metadata(
    path: Optional[PathLike] = None,
    *,
    alternative: Optional[PathLike] = ONEAGENT_ALTERNATIVE_FILE,
) -> Dict[str, str]:
    """Read OneAgent's host/process metadata as the official libraries do.

    Args:
        path: where the indirection file is: a directory holding
            :data:`ONEAGENT_INDIRECTION_FILE`, or the file itself.  ``None``
            (the default) opens the bare relative name, which is what the
            official libraries do and what OneAgent intercepts.
        alternative: the properties file to read when the indirection file is
            missing or names no file (Java 2.x behaviour); ``None`` disables it.

    The first line of the indirection file (stripped) is the path of the
    properties file.  Its lines are ``key=value``, split at the first ``=``;
    whitespace around key and value is stripped, blank lines and ``#``/``!``
    comments are skipped, and lines without ``=`` or with an empty key or
    value are ignored, as are unreadable files.  Later keys win.

    Returns:
        The raw (not yet normalized) pairs; ``{}`` if nothing could be read,
        which is normal when no OneAgent is installed.  The encoder adds them
        as static dimensions, normalizing the keys and values.
    """
    if path is None:
        indirection: PathLike = ONEAGENT_INDIRECTION_FILE
    elif os.path.isdir(path):
        indirection = os.path.join(path, ONEAGENT_INDIRECTION_FILE)
    else:
        indirection = path
    target: Optional[str] = None
    text = _read_text(indirection)
    if text:
        first = text.splitlines()[0].strip() if text.strip() else ""
        target = first or None
    if target is None:
        if alternative is None or not os.path.isfile(alternative):
            return {}
        target = os.fspath(alternative)
    content = _read_text(target)
    if content is None:
        return {}
    pairs: Dict[str, str] = {}
    for line in content.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        value = value.strip()
        if sep and key and value:
            pairs[key] = value
    return pairs


# --- change records ------------------------------------------------------------


class Normalization(NamedTuple):
    """One change made by normalization.

    Attributes:
        field: what was normalized: ``"metric_key"``, ``"dimension_key"``,
            ``"dimension_value"``, ``"display_name"``, ``"description"`` or
            ``"unit"``.
        original: the input as the caller gave it.
        normalized: the output, or ``None`` if the item was dropped.
    """

    field: str
    original: str
    normalized: Optional[str]


class NormalizationLog:
    """Counts normalization changes per field kind and keeps recent examples.

    Owned by an encoder, which calls :meth:`record` once per change (never a
    log line per record).  Memory is bounded: ``max_examples`` records at most.
    Not locked: share one log between threads only under the GIL's
    guarantees (counts may then be approximate).
    """

    __slots__ = ("changed", "dropped", "examples")

    def __init__(self, max_examples: int = 100) -> None:
        #: changes per field kind, drops included
        self.changed: Counter[str] = Counter()
        #: changes per field kind whose result was ``None`` (item dropped)
        self.dropped: Counter[str] = Counter()
        #: the most recent changes, oldest first
        self.examples: Deque[Normalization] = deque(maxlen=max_examples)

    def record(self, field: str, original: str, normalized: Optional[str]) -> None:
        """Note that ``original`` became ``normalized`` (``None`` = dropped)."""
        self.changed[field] += 1
        if normalized is None:
            self.dropped[field] += 1
        self.examples.append(Normalization(field, original, normalized))

    @property
    def total(self) -> int:
        """All changes recorded so far."""
        return sum(self.changed.values())

    def clear(self) -> None:
        """Forget all counts and examples."""
        self.changed.clear()
        self.dropped.clear()
        self.examples.clear()

    def __len__(self) -> int:
        return self.total

    def __repr__(self) -> str:
        return "NormalizationLog(changed=%r, dropped=%r, examples=%d)" % (
            dict(self.changed),
            dict(self.dropped),
            len(self.examples),
        )
