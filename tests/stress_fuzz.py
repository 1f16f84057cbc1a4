"""Seeded stress fuzzer: the Cython core against the pure-Python reference.

Not collected by pytest (the name does not start with ``test_``): run it as a
script, best under the sanitizer build (``bench/sanitize.sh`` does both)::

    python tests/stress_fuzz.py --seconds 60 --seed 1

For a fixed time budget it feeds generated input to both implementations:

* bodies for ``decode``, ``validate`` and ``iter_decode`` (as one buffer, as
  random chunkings, as a file object with short reads; ``errors`` raise and
  skip): random bytes, valid corpus lines (``dtproto._corpus.make_corpus``)
  mutated byte by byte, lines around the length limits, huge and odd numbers,
  invalid UTF-8, escape storms, CR/LF/blank-line mixes;
* random Python objects as arguments to every ``Encoder`` method and to
  ``encode`` (records with arbitrary fields included).

Each call must either succeed or raise ``DecodeError``, ``EncodeError`` or
``TypeError`` (the documented errors), and both implementations must agree:
equal records (types and the sign of zero included), or the same error (type,
code, line, column, reason, text / field, code, message, record index), equal
reports, equal bytes out and equal ``Encoder`` state after every call.

Every case is derived from ``(seed, iteration)``, so a failure prints a
command that replays exactly that case (``--replay SEED:ITERATION``).  The
exit status is 1 on any discrepancy or unexpected exception, 0 otherwise; a
sanitizer report aborts the process (non-zero status) by itself.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import re
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from dtproto import DecodeError, EncodeError, Metadata, Metric, _impl
from dtproto._constants import MAX_LINE_BYTES, MAX_LINE_CHARS, SECONDS_TIMESTAMP_BELOW
from dtproto._corpus import make_corpus

ALLOWED = (DecodeError, EncodeError, TypeError)
NOWS = [None, None, 1_700_000_000_000, 0, 1_717_243_200_000]


class Failure(Exception):
    """A discrepancy between the implementations or an undocumented exception."""


# --------------------------------------------------------------------------- outcomes

def value_key(x: Any) -> Any:
    """Equality that also sees exact types, the sign of zero and NaN."""
    t = type(x)
    if t is float:
        return ("f", "nan" if x != x else x, math.copysign(1.0, x))
    if t in (tuple, list, Metric, Metadata):
        return (t.__name__, tuple(value_key(v) for v in x))
    return (t.__name__, x)


def error_key(e: BaseException) -> Tuple[Any, ...]:
    if isinstance(e, DecodeError):
        return ("DecodeError", e.code, e.line, e.column, e.reason, e.text, str(e))
    if isinstance(e, EncodeError):  # messages may hold a repr with an address
        return ("EncodeError", e.field, e.code, scrub(e.message), e.record, scrub(str(e)))
    return (type(e).__name__, scrub(str(e)))


def scrub(text: str) -> str:
    return re.sub(r" at 0x[0-9a-fA-F]+", " at 0x?", text)


def check_allowed(e: BaseException, what: str, allowed: Tuple[type, ...] = ALLOWED) -> None:
    if not isinstance(e, allowed):
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        raise Failure("%s raised an undocumented %s: %s\n%s" % (what, type(e).__name__, e, tb))


def outcome(fn: Callable[[], Any], what: str,
            allowed: Tuple[type, ...] = ALLOWED) -> Tuple[Any, ...]:
    try:
        return ("ok", fn())
    except Failure:
        raise
    except Exception as e:  # noqa: BLE001  (checked right here)
        check_allowed(e, what, allowed)
        return ("error", error_key(e))


def first_difference(a: Any, b: Any, path: str = "") -> Tuple[str, Any, Any]:
    """Where two nested outcomes first differ (for a readable failure message)."""
    if type(a) is type(b) and isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, "%s[%d]" % (path, i))
        if len(a) != len(b):
            return path + " (length %d vs %d)" % (len(a), len(b)), a[len(b):], b[len(a):]
    return path, a, b


def report_key(r: Any) -> Tuple[Any, ...]:
    return (type(r).__name__, r.lines_ok, r.lines_invalid, r.lines_total, r.warnings_total,
            [tuple(e) for e in r.errors], [tuple(w) for w in r.warnings],
            sorted((str(k), v) for k, v in r.error_counts.items()), r.to_response())


def stream_key(it_fn: Callable[[], Any]) -> Tuple[Any, ...]:
    """Records yielded before the end or the error, and the error."""
    out: List[Any] = []
    try:
        for rec in it_fn():
            out.append(value_key(rec))
    except Failure:
        raise
    except Exception as e:  # noqa: BLE001
        check_allowed(e, "iter_decode")
        return ("error", out, error_key(e))
    return ("ok", out)


# --------------------------------------------------------------------------- inputs

INSERTS = [
    b" ", b"\t", b",", b"=", b'"', b"\\", b"#", b".", b"-", b"+", b"e", b"E", b"0", b"9",
    b"\r", b"\n", b"\r\n", b"\x00", b"\x7f", b"\x1f", b"\xff", b"\xc3", b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\x80",
    b"nan", b"NaN", b"inf", b"-Infinity", b"1e400", b"-1e309", b"1e-400", b"9" * 400,
    b"0x10", b"1_000", b"1,5", b"gauge,", b"count,", b"delta=", b"min=", b"max=", b"sum=",
    b"count=", b"\\\"", b"\\,", b"\\ ", b"\\=", b"\\n", b"dt.", b"dt.meta.unit=",
    b"dt.meta.displayName=", b"dt.meta.description=", b"A", b"_", b":", b"  ", b",k=v",
    b"9223372036854775807", b"9223372036854775808", b"18446744073709551616",
    b"99999999999999999999", b"\xc2\xa0", b"\xe2\x80\xa8", b"\\\\", b'""', b'"\\"',
]

NUMBER_TEXTS = [
    b"0", b"-0", b"+0", b"0.0", b"-0.0", b".5", b"5.", b"1e308", b"1.7976931348623157e308",
    b"1.7976931348623159e308", b"2e308", b"4.9e-324", b"2.4e-324", b"1e-400", b"-1e-400",
    b"1" * 30, b"9" * 400, b"0." + b"0" * 350 + b"1", b"1" + b"0" * 308 + b".0",
    b"123456789012345678901234567890e-10", b"1e+", b"1e", b"e5", b"1.2.3", b"--1", b"1e0400",
    b"0.1e-999999999999999999999", b"1e99999999999999999999", b"nan", b"inf", b"Infinity",
    b"0000000000000000000000001", b"9007199254740993", b"0.30000000000000004",
    b"2.2250738585072011e-308", b"2.2250738585072014e-308", b"1E5", b"1e05", b"-.5",
]

TIMESTAMPS = [
    b"0", b"1", b"1700000000000", b"1717243200000", b"9223372036854775807",
    b"9223372036854775808", b"99999999999999999999", b"-1", b"1.5", b"1e12", b"0x1",
    b"00000000000000000001", b"1" * 19, b"1" * 20, b"17172432000001717243200000",
]


class Inputs:
    """Byte generators; each takes a random.Random."""

    def __init__(self, seed: int) -> None:
        lines: List[bytes] = []
        for i, (n, heavy, invalid) in enumerate([(400, False, 0.0), (200, True, 0.0),
                                                  (200, False, 0.2), (100, True, 0.3)]):
            lines.extend(make_corpus(n, seed=seed + i, escape_heavy=heavy,
                                     invalid_ratio=invalid).split(b"\n")[:-1])
        lines.extend([
            b"#my.metric gauge dt.meta.displayName=\"My metric\",dt.meta.unit=MilliSecond",
            b"#my.count count dt.meta.description=a\\ description",
            b"a.b,k=v gauge,min=1,max=3,sum=4,count=2 1717243200000",
            b"a.b count,delta=5",
            b"x.count gauge,1",
        ])
        self.lines = lines
        self.generators: List[Tuple[int, Callable[[random.Random], bytes]]] = [
            # long lines cost ~100x a short body (the reference is slow on them)
            (16, self.random_bytes), (48, self.mutated_lines), (1, self.long_line),
            (12, self.huge_numbers), (12, self.invalid_utf8), (12, self.escape_storm),
            (8, self.line_breaks), (8, self.valid_lines),
        ]
        self.total_weight = sum(w for w, _ in self.generators)

    def body(self, r: random.Random) -> Tuple[str, bytes]:
        k = r.randrange(self.total_weight)
        for w, gen in self.generators:
            if k < w:
                return gen.__name__, gen(r)
            k -= w
        raise AssertionError

    def line(self, r: random.Random) -> bytes:
        return r.choice(self.lines)

    def mutate(self, r: random.Random, data: bytes, count: Optional[int] = None) -> bytes:
        for _ in range(count if count is not None else r.randint(1, 4)):
            op = r.randrange(9)
            n = len(data)
            pos = r.randint(0, n)
            if op <= 1:
                ins = r.choice(INSERTS) if op == 0 else bytes([r.randrange(256)])
                data = data[:pos] + ins + data[pos:]
            elif op == 2 and n:
                data = data[:pos] + data[pos + r.randint(1, 8):]
            elif op == 3 and n:
                p = min(pos, n - 1)
                data = data[:p] + bytes([r.randrange(256)]) + data[p + 1:]
            elif op == 4:
                data = data[:pos]
            elif op == 5 and n:
                p = min(pos, n - 1)
                data = data[:p] + bytes([data[p] ^ (1 << r.randrange(8))]) + data[p + 1:]
            elif op == 6 and n:
                a = r.randrange(n)
                b = min(n, a + r.randint(1, 40))
                data = data[:pos] + data[a:b] * r.randint(1, 4) + data[pos:]
            elif op == 7:
                data = data[:pos] + b"\\" + data[pos:]
            else:
                data = data[:pos] + r.choice(NUMBER_TEXTS) + data[pos:]
        return data

    # -- generators

    def random_bytes(self, r: random.Random) -> bytes:
        n = r.choice([0, 1, 2, 5, 20, 60, 200, 1000])
        if r.random() < 0.5:
            return r.randbytes(n)
        alphabet = b'abcxyz_.-:09 \t,="\\#\n\r\xc3\xa9\xff' + b"gauge count delta min max sum"
        return bytes(r.choice(alphabet) for _ in range(n))

    def valid_lines(self, r: random.Random) -> bytes:
        return b"\n".join(self.line(r) for _ in range(r.randint(1, 12))) + r.choice(
            [b"", b"\n", b"\r\n"])

    def mutated_lines(self, r: random.Random) -> bytes:
        lines = [self.line(r) for _ in range(r.randint(1, 6))]
        for _ in range(r.randint(1, 3)):
            i = r.randrange(len(lines))
            lines[i] = self.mutate(r, lines[i])
        return b"\n".join(lines) + r.choice([b"", b"\n", b"\r\n", b"\r"])

    def long_line(self, r: random.Random) -> bytes:
        """Lines around MAX_LINE_CHARS (code points) and MAX_LINE_BYTES (bytes)."""
        unit = r.choice([b"a", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\\,",
                         b"\xff"])
        head = b"my.metric,k=" if r.random() < 0.7 else b"m" * r.choice([3, 254, 255, 256])
        tail = r.choice([b" 1", b" gauge,1 1717243200000", b"", b" count,delta=1"])
        if r.random() < 0.05:
            target = MAX_LINE_BYTES + r.randint(-3, 10)   # the streaming cut-off
        else:
            target = MAX_LINE_CHARS + r.randint(-3, 3)    # the code point limit
        # the code point limit counts code points (an invalid byte is one), the
        # streaming cut-off bytes
        size = len(unit) if target > MAX_LINE_BYTES - 100 else len(
            unit.decode("utf-8", "surrogateescape"))
        line = head + unit * (max(0, target - len(head) - len(tail)) // size) + tail
        if r.random() < 0.3:
            line = self.mutate(r, line, 1)
        before = self.valid_lines(r) + b"\n" if r.random() < 0.5 else b""
        after = b"\n" + self.valid_lines(r) if r.random() < 0.5 else b""
        return before + line + after

    def huge_numbers(self, r: random.Random) -> bytes:
        key = r.choice([b"a.b", b"my.metric,k=v", b"x.count,a=b,c=d"])
        num = lambda: r.choice(NUMBER_TEXTS) if r.random() < 0.8 else (  # noqa: E731
            b"-" * r.randint(0, 1) + b"9" * r.randint(1, 2000))
        kind = r.randrange(4)
        if kind == 0:
            payload = r.choice([b"", b"gauge,"]) + num()
        elif kind == 1:
            payload = b"count,delta=" + num()
        elif kind == 2:
            payload = b"gauge,min=%s,max=%s,sum=%s,count=%s" % (num(), num(), num(),
                                                              r.choice(TIMESTAMPS))
        else:
            payload = b"gauge,min=1,max=1,sum=" + num() + b",count=" + r.choice(TIMESTAMPS)
        line = key + b" " + payload
        if r.random() < 0.6:
            line += b" " + r.choice(TIMESTAMPS)
        return line

    def invalid_utf8(self, r: random.Random) -> bytes:
        bad = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80",
               b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
               b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf8\x88\x80\x80\x80"]
        line = self.line(r)
        for _ in range(r.randint(1, 4)):
            pos = r.randint(0, len(line))
            line = line[:pos] + r.choice(bad) + line[pos:]
        return line

    def escape_storm(self, r: random.Random) -> bytes:
        pieces = [b"\\", b"\\\\", b'\\"', b'"', b"\\,", b"\\=", b"\\ ", b",", b"=", b" ",
                  b"a", b"\xc3\xa9", b"\\n", b"\\\xc3\xa9", b"\\\xff"]
        value = b"".join(r.choice(pieces) for _ in range(r.choice([1, 5, 50, 260, 1000])))
        if r.random() < 0.5:
            value = b'"' + value + b'"'
        key = r.choice([b"a.b,k=", b"a.b,k=v,l=", b"#a.b gauge dt.meta.description=",
                        b"#a.b count dt.meta.displayName="])
        tail = b"" if key.startswith(b"#") else r.choice([b" 1", b" gauge,1 0", b" ", b""])
        return key + value + tail

    def line_breaks(self, r: random.Random) -> bytes:
        seps = [b"\n", b"\r\n", b"\r", b"\n\n", b" \n", b"\t\r\n", b"\r\r\n", b"\\\n"]
        return b"".join(self.line(r) * r.randint(0, 1) + r.choice(seps)
                        for _ in range(r.randint(1, 8)))


def chunkings(r: random.Random, data: bytes) -> List[bytes]:
    """At most ~300 chunks: 1-byte, small, or random sizes, with empty chunks."""
    out: List[bytes] = []
    i = 0
    mode = r.randrange(4) if len(data) <= 300 else r.randrange(2, 4)
    while i < len(data):
        if mode == 0:
            k = 1
        elif mode == 1:
            k = r.randint(1, 8)
        elif mode == 2:
            k = r.randint(0, max(1, len(data) // 100))
        else:
            k = r.randint(0, max(1, len(data) // 2))
        if k == 0:
            out.append(b"")
            k = 1
        out.append(data[i:i + k])
        i += k
    return out


class SmallReads(io.RawIOBase):
    def __init__(self, data: bytes, size: int) -> None:
        self._buf = io.BytesIO(data)
        self._size = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        return self._buf.read(min(n, self._size) if n >= 0 else self._size)


# --------------------------------------------------------------------------- encoder args

KEYS = ["abc", "my.metric", "a.b.c-d_e", "x.count", "ab", "dt.x", "1abc", "a..b", "a" * 255,
        "a" * 256, "é.key", "a b", "", "cpu.usage", "_._", "a.b\x00"]
DIM_KEYS = ["k", "host", "dt.entity.host", "a:b", "K", "1k", "", "k" * 100, "k" * 101,
            "k=v", "_x", "a.b"]
DIM_VALUES = ["v", "", "ü", "a,b", "a=b", "a b", 'q"', "back\\slash", "x" * 255, "x" * 256,
              "\ud800", "\x00", "\n", "é" * 255, "tab\t", "\x7f", "end\\"]
FLOATS = [0.0, -0.0, 1.0, -1.5, 1e-300, 5e-324, 1.7976931348623157e308, 1e16, 1e15, 0.1,
          123456.789, 1e21, 1e22, 1e-7, float("nan"), float("inf"), -float("inf"),
          9007199254740993.0, 2.5e-5]
INTS = [0, 1, -1, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**400, 1_717_243_200_000,
        2**53, 2**53 - 1, -(2**53), -(2**53) - 1, 42]


class FloatSub(float):
    pass


class IntSub(int):
    pass


class StrSub(str):
    pass


class CaseBlind(str):
    """A str whose equality and hash ignore case: it equals (and hashes like)
    the lower-case strings of the pools, so any cache consulted by equality
    hands it their entries.  It must be read as its own text."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.lower())


class Items:
    """Not a dict, but has items()."""

    def __init__(self, pairs: List[Any]) -> None:
        self._pairs = pairs

    def items(self) -> Any:
        return list(self._pairs)


class Unhashable:
    __hash__ = None  # type: ignore[assignment]


def random_object(r: random.Random, depth: int = 0) -> Any:
    k = r.randrange(20 if depth < 2 else 14)
    if k == 0:
        return None
    if k == 1:
        return r.choice([True, False])
    if k == 2:
        return r.choice(INTS) if r.random() < 0.7 else r.randint(-10**6, 10**20)
    if k == 3:
        return r.choice(FLOATS) if r.random() < 0.7 else r.uniform(-1e6, 1e6)
    if k == 4:
        return r.choice(KEYS + DIM_KEYS + DIM_VALUES)
    if k == 5:
        return "".join(chr(r.choice([r.randrange(32, 127), r.randrange(0, 0x110000)]))
                       for _ in range(r.randint(0, 20)))
    if k == 6:
        return r.choice([b"abc", bytearray(b"x"), memoryview(b"a.b")])
    if k == 7:
        return r.choice([FloatSub(1.5), IntSub(7), StrSub("my.metric"), 1 + 2j,
                         CaseBlind("MY.METRIC"), CaseBlind("My.Metric"), CaseBlind("HOST")])
    if k == 8:
        return r.choice([Unhashable(), object(), [], {}, ()])
    if k == 9:
        return r.choice(["gauge", "count", "summary", "Gauge", ""])
    if k == 10:
        return float(r.choice(INTS[:6]))
    if k == 11:
        return r.randint(0, 2**63 - 1)
    if k == 12:
        return r.choice(KEYS)
    if k == 13:
        return r.choice(DIM_VALUES)
    if k == 14:
        return [random_object(r, depth + 1) for _ in range(r.randint(0, 3))]
    if k == 15:
        return tuple(random_object(r, depth + 1) for _ in range(r.randint(0, 3)))
    if k == 16:
        return random_dimensions(r, depth + 1)
    if k == 17:
        return random_record(r, depth + 1)
    if k == 18:
        d = {}
        for _ in range(r.randint(0, 3)):
            key = random_object(r, depth + 1) if r.random() < 0.2 else r.choice(DIM_KEYS)
            try:
                d[key] = random_object(r, depth + 1)
            except TypeError:  # an unhashable key
                pass
        return d
    return iter([random_object(r, depth + 1) for _ in range(r.randint(0, 2))])


def random_dimensions(r: random.Random, depth: int = 0) -> Any:
    def pair() -> Any:
        if r.random() < 0.85:
            return (r.choice(DIM_KEYS), r.choice(DIM_VALUES))
        return r.choice([(r.choice(DIM_KEYS),), ("k", "v", "w"), "kv", random_object(r, 2),
                         (CaseBlind(r.choice(DIM_KEYS).upper()), r.choice(DIM_VALUES)),
                         (r.choice(DIM_KEYS), CaseBlind(r.choice(DIM_VALUES).upper())),
                         [r.choice(DIM_KEYS), r.choice(DIM_VALUES)],
                         (random_object(r, 2), r.choice(DIM_VALUES)),
                         (r.choice(DIM_KEYS), random_object(r, 2))])
    n = r.choice([0, 1, 2, 3, 5, 49, 50, 51])
    pairs = [pair() for _ in range(n)]
    form = r.randrange(7)
    if form == 0:
        try:
            return dict(p for p in pairs if isinstance(p, tuple) and len(p) == 2
                        and not isinstance(p[0], (list, dict, Unhashable)))
        except TypeError:
            return {}
    if form == 1:
        return tuple(pairs)
    if form == 2:
        return pairs
    if form == 3:
        return iter(pairs)
    if form == 4:
        return Items(pairs)
    if form == 5:
        return None
    return random_object(r, depth + 1) if depth < 2 else ()


def no_inner_iterators(dims: Any) -> Any:
    """Dimensions whose pairs are not one-shot iterators (the dimensions may be one).

    The Cython encoder reads arguments once in C and, on an error, hands the
    same objects to the reference for the message: an iterator consumed by
    the first pass gives another (still documented) error.  Out of scope here.
    """
    if isinstance(dims, (tuple, list)):
        return type(dims)(reiterable(p) for p in dims)
    if type(dims) is type(iter([])):
        return iter([reiterable(p) for p in dims])
    if isinstance(dims, Items):
        return Items([reiterable(p) for p in dims._pairs])
    return dims


def reiterable(x: Any) -> Any:
    """A one-shot iterator as a list.

    Records hold tuples (Metric() makes one); a record built with
    tuple.__new__ around an iterator is out of contract: the Cython encoder
    reads it once in C and hands the same, now exhausted, record to the
    reference for the error message, so the reported field can differ.
    """
    return list(x) if type(x) is type(iter([])) else x


def random_record(r: random.Random, depth: int = 0) -> Any:
    k = r.randrange(10)
    if k <= 3:  # a valid-looking Metric built through the class
        kind = r.choice(["gauge", "count", "summary"])
        try:
            if kind == "summary":
                mn = r.choice(FLOATS[:6])
                return Metric(r.choice(KEYS), random_dimensions(r, 2) or (), kind, None, mn,
                              mn + 1, mn * 3 + 1, r.choice([1, 2, 3, 0, -1]),
                              r.choice([None, 1_717_243_200_000, -1, 2**63]))
            return Metric(r.choice(KEYS), random_dimensions(r, 2) or (), kind,
                          r.choice(FLOATS), timestamp=r.choice([None, 0, 2**63 - 1, 2**63]))
        except (TypeError, ValueError):
            return Metric("a.b", (), "gauge", 1.0)
    if k <= 5:  # any fields at all, through tuple.__new__ (what a careless caller can do)
        fields = [r.choice(KEYS), reiterable(random_dimensions(r, 2)), r.choice(
            ["gauge", "count", "summary", "x", None]), random_object(r, 2),
            random_object(r, 2), random_object(r, 2), random_object(r, 2),
            random_object(r, 2), random_object(r, 2)]
        for i in range(9):
            if r.random() < 0.6:
                fields[i] = [r.choice(KEYS), (("k", "v"),), "gauge", 1.0, None, None, None,
                             None, None][i]
        return tuple.__new__(Metric, fields)
    if k <= 7:
        props = [(r.choice(["dt.meta.displayName", "dt.meta.displayname", "dt.meta.unit",
                            "dt.meta.description", "dt.meta.x", "unit"]),
                  r.choice(DIM_VALUES + ["MilliSecond", "Byte/Second", "%", "a b", "x" * 300,
                                         "x" * 301]))
                 for _ in range(r.randint(0, 4))]
        return tuple.__new__(Metadata, (r.choice(KEYS), r.choice(["gauge", "count", "x"]),
                                        tuple(props)))
    return random_object(r, 2) if depth < 2 else None


def malformed_record(r: random.Random) -> Any:
    """A Metric or Metadata of the wrong shape (tuple.__new__ misuse): too few
    fields, or metadata properties that are not pairs."""
    cls = r.choice([Metric, Metadata])
    if cls is Metadata and r.random() < 0.5:
        props = [("dt.meta.unit", "Byte"), r.choice([("dt.meta.unit",), ("a", "b", "c"), "ab",
                                                     5, None, random_object(r, 2)])]
        r.shuffle(props)
        return tuple.__new__(Metadata, ("a.b", "gauge", tuple(props)))
    full = ["a.b", (("k", "v"),), "gauge", 1.0, None, None, None, None, None]
    if cls is Metadata:
        full = ["a.b", "gauge", (("dt.meta.unit", "Byte"),)]
    return tuple.__new__(cls, full[:r.randrange(len(full))])


ENCODER_METHODS = {
    "gauge": ["key", "value", "dimensions", "timestamp"],
    "count": ["key", "delta", "dimensions", "timestamp"],
    "summary": ["key", "min", "max", "sum", "count", "dimensions", "timestamp"],
    "metadata": ["key", "metric_type", "display_name", "description", "unit"],
    "add": ["record"],
}


def encoder_options(r: random.Random) -> Dict[str, Any]:
    """Mostly a plain Encoder(); sometimes prefix/default/static dimensions/normalize
    (a bad option is a ValueError or TypeError from the constructor)."""
    if r.random() < 0.6:
        return {}
    opts: Dict[str, Any] = {}
    if r.random() < 0.5:
        opts["prefix"] = r.choice(["app", "app.", "my.prefix", "", "1x", "a b", "dt", "é",
                                   None, 5, "x" * 250])
    for name in ("default_dimensions", "static_dimensions"):
        if r.random() < 0.4:
            opts[name] = reiterable(random_dimensions(r, 2))
    if r.random() < 0.5:
        opts["normalize"] = r.choice([True, False])
    return opts


REQUIRED = {"gauge": {"key", "value"}, "count": {"key", "delta"},
            "summary": {"key", "min", "max", "sum", "count"}, "metadata": {"key", "metric_type"},
            "add": {"record"}}


def encoder_call(r: random.Random) -> Tuple[str, List[Any], Dict[str, Any]]:
    """A method name and arguments; mostly plausible, sometimes anything."""
    name = r.choice(list(ENCODER_METHODS))
    values: List[Any] = []
    for param in ENCODER_METHODS[name]:
        wild = r.random() < 0.15
        if wild:
            v = random_object(r)
        elif param == "key":
            v = r.choice(KEYS)
        elif param in ("value", "delta", "min", "max", "sum"):
            v = r.choice(FLOATS) if r.random() < 0.8 else r.choice(INTS)
        elif param == "count":
            v = r.choice([1, 2, 3, 0, -1, 2**63 - 1, 2**63])
        elif param == "dimensions":
            v = random_dimensions(r)
        elif param == "timestamp":
            v = r.choice([None, None, 1_717_243_200_000, 0, -1, 2**63 - 1, 2**63, 1.5, True])
        elif param == "metric_type":
            v = r.choice(["gauge", "count", "summary"])
        elif param in ("display_name", "description", "unit"):
            v = r.choice([None, None, "My name", "MilliSecond", "a,b", "x" * 300, "x" * 301,
                          "%", "\ud800"])
        else:
            v = random_record(r)
        if param == "dimensions":
            v = no_inner_iterators(v)
        values.append(v)
    if name == "summary" and not any(isinstance(v, float) and v != v for v in values[1:4]):
        if r.random() < 0.5 and all(type(v) is float for v in values[1:4]):
            mn = values[1]
            values[2] = mn
            values[3] = mn * (values[4] if type(values[4]) is int and 0 < values[4] < 5 else 1)
    # required parameters are always given (positionally or by name); optional
    # ones sometimes left out
    params = ENCODER_METHODS[name]
    npos = r.randint(0, len(values))
    args = values[:npos]
    kwargs = {p: v for p, v in zip(params[npos:], values[npos:])
              if p in REQUIRED[name] or r.random() < 0.7}
    return name, args, kwargs


# --------------------------------------------------------------------------- one case

class Fuzzer:
    def __init__(self, seed: int) -> None:
        impls = _impl.available_implementations()
        if "cython" not in impls:
            raise SystemExit("the Cython core is not importable: %s" % _impl.extension_error())
        self.py = impls["python"]
        self.c = impls["cython"]
        self.seed = seed
        self.inputs = Inputs(seed)
        self.counts: Dict[str, int] = {}
        self.seconds: Dict[str, float] = {}

    def both(self, what: str, fn: Callable[[Any], Any]) -> Any:
        a = fn(self.py)
        b = fn(self.c)
        if a != b:
            where, x, y = first_difference(a, b)
            raise Failure("%s differs at %s\n  python: %s\n  cython: %s" % (
                what, where or "top", short(x), short(y)))
        return a

    def run_case(self, iteration: int) -> str:
        r = random.Random("%d:%d" % (self.seed, iteration))
        if r.random() < 0.25:
            self.encoder_case(r)
            return "encoder"
        if r.random() < 0.01:
            self.malformed_record_case(r)
            return "malformed_record"
        kind, body = self.inputs.body(r)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.body_case(r, body)
        return kind

    def body_case(self, r: random.Random, body: bytes) -> None:
        now = r.choice(NOWS)
        form = r.randrange(6)
        if form == 0:
            data: Any = bytearray(body)
        elif form == 1:
            data = memoryview(b"xx" + body + b"yy")[2:-2]
        elif form == 2:
            data = body.decode("utf-8", "surrogatepass" if r.random() < 0.5 else "replace") \
                if _utf8_ok(body) else body.decode("utf-8", "replace")
        else:
            data = body

        def dec(m: Any) -> Any:
            o = outcome(lambda: m.decode(data, now_ms=now), "decode")
            return (o[0], [value_key(x) for x in o[1]]) if o[0] == "ok" else o
        decoded = self.both("decode", dec)

        max_errors = r.choice([None, 0, 1, 3, 10_000])
        max_warnings = r.choice([None, 0, 2, 10_000])

        def val(m: Any) -> Any:
            o = outcome(lambda: m.validate(data, now_ms=now, max_errors=max_errors,
                                           max_warnings=max_warnings), "validate")
            return (o[0], report_key(o[1])) if o[0] == "ok" else o
        self.both("validate", val)

        if len(body) > 20_000 and r.random() < 0.7:
            return  # a long line: decode and validate only, most of the time
        chunks = chunkings(r, body)
        errors = r.choice(["raise", "skip"])
        read_size = r.choice([1, 3, 64, 1 << 20])
        self.both("iter_decode(chunks, errors=%r)" % errors,
                  lambda m: stream_key(lambda: m.iter_decode(iter(chunks), now_ms=now,
                                                             errors=errors)))
        self.both("iter_decode(file)",
                  lambda m: stream_key(lambda: m.iter_decode(SmallReads(body, read_size),
                                                             now_ms=now)))
        self.both(
            "validate(chunks)",
            lambda m: (lambda o: (o[0], report_key(o[1])) if o[0] == "ok" else o)(
                outcome(lambda: m.validate(iter(chunks), now_ms=now, max_errors=max_errors,
                                           max_warnings=max_warnings), "validate")))
        # a decoded body encodes, and both implementations decode that back equally
        if decoded[0] == "ok" and r.random() < 0.3:
            recs = self.py.decode(data, now_ms=now)
            out = self.both("encode(decoded)", lambda m: outcome(lambda: m.encode(recs),
                                                                  "encode"))
            if out[0] == "ok":
                self.both("decode(encode(decoded))",
                          lambda m: dec_plain(m, out[1]))

    def encoder_case(self, r: random.Random) -> None:
        case_seed = r.getrandbits(64)
        ncalls = r.randint(1, 12)

        def run(m: Any) -> Any:
            rr = random.Random(case_seed)   # the same fresh arguments for each implementation
            options = encoder_options(rr)
            made = outcome(lambda: m.Encoder(**options), "Encoder(**options)",
                           ALLOWED + (ValueError,))
            if made[0] != "ok":
                return [(scrub("Encoder(%s)" % short(options, 500)), made)], b""
            enc = made[1]
            trace: List[Any] = []
            for _ in range(ncalls):
                name, args, kwargs = encoder_call(rr)
                self.counts["Encoder." + name] = self.counts.get("Encoder." + name, 0) + 1
                call = describe_call(name, args, kwargs)   # before the call consumes iterators
                o = outcome(lambda: getattr(enc, name)(*args, **kwargs), "Encoder." + name)
                trace.append((call, o, enc.lines, len(enc)))
                if rr.random() < 0.05:
                    enc.clear()
            body = enc.getvalue()
            recs = [random_record(rr) for _ in range(rr.randint(0, 6))]
            call = scrub("encode(%s)" % short(recs, 2000))
            enc_out = outcome(lambda: m.encode(recs), "encode")
            trace.append((call, enc_out))
            return trace, body
        a, b = run(self.py), run(self.c)
        if a != b:
            ta, tb = a[0], b[0]
            i = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
            raise Failure("Encoder calls differ at call %d\n  call:   %s\n  python: %s\n"
                          "  cython: %s\n  bytes python: %s\n  bytes cython: %s" % (
                              i, (ta + [None])[i] and ta[i][0] if i < len(ta) else None,
                              short(ta[i][1:] if i < len(ta) else None),
                              short(tb[i][1:] if i < len(tb) else None),
                              short(a[1], 300), short(b[1], 300)))
        trace, body = a
        self.counts["encode"] = self.counts.get("encode", 0) + 1
        blobs = [body]
        encoded = trace[-1][1]
        if encoded[0] == "ok":
            blobs.append(encoded[1])
        for blob in blobs:
            # whatever an encoder wrote decodes, the same way in both implementations
            self.both("decode(encoded)", lambda m: dec_plain(m, blob))
            d = dec_plain(self.py, blob)
            if d[0] != "ok":
                raise Failure("the Encoder wrote a line the decoder rejects: %s\n%r" % (
                    short(d), blob[:300]))


    def malformed_record_case(self, r: random.Random) -> None:
        """Records of the wrong shape: IndexError, ValueError or TypeError (what tuple
        indexing and unpacking give) are accepted here; a read past the tuple (a sanitizer report),
        anything else, or a disagreement is not."""
        case_seed = r.getrandbits(64)
        self.counts["malformed_record"] = self.counts.get("malformed_record", 0) + 1

        def run(m: Any) -> Any:
            rr = random.Random(case_seed)
            recs = [random_record(rr) for _ in range(rr.randint(0, 3))]
            recs.insert(rr.randint(0, len(recs)), malformed_record(rr))
            out = []
            for fn in (lambda: m.encode(recs), lambda: m.Encoder().add(recs[-1])):
                try:
                    out.append(("ok", fn()))
                except (IndexError, ValueError, TypeError) as e:  # EncodeError: a ValueError
                    out.append(("error", error_key(e)))
            return out
        self.both("malformed records", run)


def describe_call(name: str, args: List[Any], kwargs: Dict[str, Any]) -> str:
    def show(x: Any) -> str:
        if type(x) is type(iter([])):
            return "iter(...)"
        if isinstance(x, Items):
            return "Items(%s)" % short(x._pairs, 300)
        return short(x, 300)
    parts = [show(a) for a in args] + ["%s=%s" % (k, show(v)) for k, v in kwargs.items()]
    return scrub("Encoder.%s(%s)" % (name, ", ".join(parts)))


def dec_plain(m: Any, data: bytes) -> Any:
    o = outcome(lambda: m.decode(data), "decode")
    return (o[0], [value_key(x) for x in o[1]]) if o[0] == "ok" else o


def _utf8_ok(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def short(x: Any, limit: int = 1500) -> str:
    s = repr(x)
    return s if len(s) <= limit else s[:limit] + "... (%d chars)" % len(s)


# --------------------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    ap.add_argument("--seed", type=int, default=1, help="master seed (default 1)")
    ap.add_argument("--max-iterations", type=int, default=0, help="stop after N cases (0: no cap)")
    ap.add_argument("--replay", metavar="SEED:ITERATION", help="run exactly one case and stop")
    ap.add_argument("--keep-going", action="store_true",
                    help="count discrepancies and go on (exit 1 at the end)")
    args = ap.parse_args(argv)

    if args.replay:
        seed_s, it_s = args.replay.split(":")
        fz = Fuzzer(int(seed_s))
        try:
            print(fz.run_case(int(it_s)), "ok")
            return 0
        except Failure as f:
            print("FAILURE:", f)
            return 1

    fz = Fuzzer(args.seed)
    start = time.perf_counter()
    deadline = start + args.seconds
    it = 0
    failures = 0
    next_report = start + 10
    while True:
        now = time.perf_counter()
        if now >= deadline or (args.max_iterations and it >= args.max_iterations):
            break
        try:
            kind = fz.run_case(it)
            t = time.perf_counter() - now
            fz.seconds[kind] = fz.seconds.get(kind, 0.0) + t
        except Failure as f:
            failures += 1
            print("FAILURE in case %d:%d (replay: python %s --replay %d:%d)\n%s\n" % (
                args.seed, it, os.path.basename(__file__), args.seed, it, f), flush=True)
            if not args.keep_going:
                break
        it += 1
        if now >= next_report:
            print("  %6.0f s  %8d cases  %7.1f cases/s" % (
                now - start, it, it / (now - start)), flush=True)
            next_report = now + 10
    elapsed = time.perf_counter() - start
    print("stress_fuzz: seed %d, %d cases in %.1f s (%.1f cases/s), %d failure(s)" % (
        args.seed, it, elapsed, it / elapsed if elapsed else 0.0, failures))
    print("  calls by kind: " + ", ".join("%s=%d" % kv for kv in sorted(fz.counts.items())))
    print("  seconds by case kind: " + ", ".join(
        "%s=%.1f" % kv for kv in sorted(fz.seconds.items())))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
