"""Hypothesis strategies for the line protocol (docs/protocol.md §3–§9).

Everything here is written from the specification, not from the codec: the
generators produce *valid* records together with the many wire forms a
decoder must accept for them (quoted or bare values, every escape, ``gauge,``
prefix or bare number, SP/TAB separators, CRLF, blank lines), and mutators
that turn valid lines into corrupt ones.

Generation is driven by a seeded :class:`random.Random` drawn from
Hypothesis (``gen_*`` functions take it as ``r``): building a line out of
dozens of fine-grained Hypothesis draws is two orders of magnitude slower,
and the suite must stay fast.  Each ``gen_*`` has a strategy wrapper of the
same name without the prefix.  Edge cases are over-represented on purpose.

Valid-record generators return model objects (:class:`dtproto.Metric`,
:class:`dtproto.Metadata`); line generators return ``(text, record)`` where
``record`` is what a strict decoder must return for ``text``.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any, Callable, List, Optional, Tuple

from hypothesis import strategies as st

from dtproto import Metadata, Metric

UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"

MAX_INT64 = 2**63 - 1
TOLERANCE = 1e-6

R = random.Random


def seeded(fn: Callable[..., Any], *args: Any) -> st.SearchStrategy:
    """A strategy calling ``fn(random.Random(seed), *args)`` for a drawn seed."""
    return st.integers(0, 2**64 - 1).map(lambda seed: fn(random.Random(seed), *args))


def _pick(r: R, *weighted: Tuple[int, Any]) -> Any:
    total = sum(w for w, _ in weighted)
    x = r.randrange(total)
    for w, v in weighted:
        if x < w:
            return v
        x -= w
    raise AssertionError


# --- keys (§4, §5) --------------------------------------------------------------

MK_FIRST = UPPER + LOWER + "_"
MK_START = UPPER + LOWER + DIGITS + "_"
MK_CHARS = UPPER + LOWER + DIGITS + "_-"

_FIXED_KEYS = ["abc", "a.b", "A_B", "_._", "x.1m", "system.load.average.1m", "my.dt.foo",
               "dtx.y", "DT.x", "dt_x", "a-b.c-d", "queue_count", "jvm.buffer.count",
               "n.count", "count.x", "a.Count", "_--", "a.0.0"]


def _section(r: R, start: str, max_rest: int) -> str:
    return r.choice(start) + "".join(r.choice(MK_CHARS) for _ in range(r.randint(0, max_rest)))


def gen_metric_key(r: R) -> str:
    """A valid metric key: 3..255 characters, never starting with ``dt.``."""
    while True:
        mode = r.randrange(10)
        if mode == 0:
            key = r.choice(_FIXED_KEYS)
        elif mode == 1:  # near the upper limit
            n = r.choice([255, 255, 254, r.randint(200, 255)])
            chars = [r.choice(MK_FIRST)] + [r.choice(MK_CHARS) for _ in range(n - 1)]
            for _ in range(r.randint(0, 3)):
                pos = r.randint(2, n - 3)
                if chars[pos - 1] != "." and chars[pos + 1] not in ".-":
                    chars[pos] = "."
            key = "".join(chars)
        elif mode == 2:  # exactly 3
            key = r.choice(MK_FIRST) + r.choice(MK_CHARS + ".") + r.choice(MK_CHARS)
            if key[1] == "." and key[2] == "-":
                continue
        else:
            sections = [_section(r, MK_FIRST, 12)]
            sections += [_section(r, MK_START, 8) for _ in range(r.randint(0, 4))]
            key = ".".join(sections)
        if 3 <= len(key) <= 255 and not key.startswith("dt."):
            return key


DK_START = LOWER + "_"
DK_CHARS = LOWER + DIGITS + "_-:"


def gen_dimension_key(r: R) -> str:
    """A valid dimension key: 1..100 characters, sections start with [a-z_]."""
    mode = r.randrange(12)
    if mode == 0:
        n = r.choice([100, 99, 1])
        return r.choice(DK_START) + "".join(r.choice(DK_CHARS) for _ in range(n - 1))
    if mode == 1:
        return r.choice(["k", "_", "dt.entity.host", "dt.metrics.source", "dt.meta.unit",
                         "a:b", "a-b", "a.b.c", "x_1:2-3", "k"])
    sections = []
    for _ in range(r.randint(1, 4)):
        sections.append(r.choice(DK_START)
                        + "".join(r.choice(DK_CHARS) for _ in range(r.randint(0, 8))))
    return ".".join(sections)[:100].rstrip(".")


# --- dimension values (§6) ------------------------------------------------------

# Pieces a decoded value is made of: any Unicode scalar but controls and
# surrogates ([A-10]).  Specials and escape-looking text are over-represented.
VALUE_PIECES = [",", "=", " ", "\\", '"', "\\n", "\\t", "\\x", "\\\\", "\\u", "\u00a0", "ü",
                "漢", "😀", "\u200d", "\ufeff", "\U0010fffd", "\u0085", "\u2028", "#", "a", "Z",
                "0", ".", "-", "'", "é", "\\\"", "\\,", "\\ "]


def _random_scalar(r: R) -> str:
    while True:
        cp = _pick(r, (4, r.randint(0x20, 0x7E)), (2, r.randint(0xA0, 0x7FF)),
                   (2, r.randint(0x800, 0xFFFF)), (1, r.randint(0x10000, 0x10FFFF)))
        if not (0xD800 <= cp <= 0xDFFF) and cp != 0x7F:
            return chr(cp)


def gen_dimension_value(r: R, max_len: int = 255) -> str:
    """A decoded value: 0..max_len code points, no control characters."""
    mode = r.randrange(16)
    if mode == 0:
        return ""
    if mode == 1:  # at or near the limit, counted in code points
        n = r.choice([max_len, max_len, max_len - 1, r.randint(0, max_len)])
        return "".join(r.choice("a,= \\\"ü😀\u00a0漢") for _ in range(n))
    out = []
    for _ in range(r.randint(1, 12)):
        out.append(r.choice(VALUE_PIECES) if r.random() < 0.5 else _random_scalar(r))
    return "".join(out)[:max_len]


# The escapes of §6.3 that decode to one character.
ESCAPES = {'"': '"', "\\": "\\", ",": ",", "=": "=", " ": " "}


def wire_value(r: R, value: str, quoted: Optional[bool] = None) -> str:
    """One of the many wire forms of the decoded ``value`` (quoted or bare).

    A backslash followed by a character X that is not an escape target may be
    written raw (``\\X`` is kept literally, [A-9]) or escaped as ``\\\\X``.
    Inside quotes ``,`` ``=`` and SP may be written raw or escaped.
    """
    if quoted is None:
        quoted = r.random() < 0.5
    out: List[str] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            nxt = value[i + 1] if i + 1 < n else ""
            if nxt and nxt not in ESCAPES and r.random() < 0.5:
                out.append("\\" + nxt)  # unknown escape kept literally
                i += 2
                continue
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c in ",= ":
            out.append(c if quoted and r.random() < 0.5 else "\\" + c)
        else:
            out.append(c)
        i += 1
    text = "".join(out)
    return '"' + text + '"' if quoted else text


# --- numbers (§7.1) -------------------------------------------------------------

SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e20, 1e-5, 1e16, 1e15, 9999999999999998.0,
                  123456789.0, 0.1, 0.3, 1 / 3, 5e-324, -5e-324, 2.2250738585072014e-308,
                  1.7976931348623157e308, -1.7976931348623157e308, 2.0**53, 2.0**53 + 2,
                  2.0**63, 1e22, 1e23, 1e21, 1e-7, 123.456]


def gen_float(r: R) -> float:
    """Any finite double, edge values over-represented."""
    mode = r.randrange(6)
    if mode == 0:
        return r.choice(SPECIAL_FLOATS)
    if mode == 1:  # any bit pattern (subnormals, huge, tiny)
        while True:
            x = struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(x):
                return x
    if mode == 2:
        return float(r.randint(-(10**6), 10**6))
    if mode == 3:
        return float(r.randint(-(2**62), 2**62))
    if mode == 4:
        return round(r.uniform(-1000, 1000), r.randint(0, 6))
    return r.uniform(-1e9, 1e9)


def gen_number_text(r: R) -> Tuple[str, float]:
    """(text, value): number texts from the §3/§7.1 grammar with finite values.

    Covers ``+1``, ``.5``, ``5.``, leading zeros, ``1e3``, ``1.0E20``,
    ``1.0e+20``, very long mantissas, huge and tiny (underflowing) exponents.
    """
    while True:
        sign = r.choice(["", "", "-", "+"])
        intpart = "".join(r.choice(DIGITS) for _ in range(r.choice([0, 1, 1, 2, 5, 17, 25])))
        frac: Optional[str] = None
        if r.random() < 0.6:
            frac = "".join(r.choice(DIGITS) for _ in range(r.choice([0, 1, 3, 17, 30])))
        if not intpart and not frac:
            continue
        text = sign + intpart + ("" if frac is None else "." + frac)
        if r.random() < 0.5:
            exp = r.choice([0, 1, 3, 20, 300, 308, 309, 320, 330, 400])
            text += r.choice("eE") + r.choice(["", "+", "-"]) + str(exp).zfill(r.randint(1, 4))
        value = float(text)
        if math.isfinite(value):
            return text, value


def wire_number(r: R, value: float) -> str:
    """A wire text that parses back to exactly ``value`` (sign of zero included)."""
    text = repr(value)
    neg = text.startswith("-")
    body = text[1:] if neg else text
    form = r.randrange(8)
    if form == 1 and body.endswith(".0"):
        body = body[:-2]                       # integral without ".0"
    elif form == 2 and "e" in body:
        mant, exp = body.split("e")
        if "." not in mant:
            mant += ".0"
        body = mant + "E" + exp.lstrip("+")   # Java style 1.0E20
    elif form == 3 and "e" not in body:
        body = "00" + body                     # leading zeros
    elif form == 4:
        body = "%.17e" % abs(value)
    elif form == 5 and body.startswith("0."):
        body = body[1:]                        # .5
    elif form == 6 and body.endswith(".0"):
        body = body[:-1]                       # 5.
    sign = "-" if neg else r.choice(["", "", "+"])
    text = sign + body
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)
    return text


# --- summaries (§7.3) -----------------------------------------------------------

def summary_consistent(mn: float, mx: float, sm: float, cnt: int) -> bool:
    """The server's checks, restated from §7.3 (independent of the codec)."""
    if not (math.isfinite(mn) and math.isfinite(mx) and math.isfinite(sm)):
        return False
    if mn > mx:
        return False
    if cnt == 0:
        return mn == 0 and mx == 0 and sm == 0
    avg = sm / cnt
    return mn - avg <= TOLERANCE and avg - mx <= TOLERANCE


def gen_summary(r: R) -> Tuple[float, float, float, int]:
    """Consistent (min, max, sum, count)."""
    if r.randrange(10) == 0:
        return (r.choice([0.0, -0.0]), r.choice([0.0, -0.0]), r.choice([0.0, -0.0]), 0)
    if r.randrange(6) == 0:  # at the tolerance edge: avg = min - 1e-6 (approximately)
        mn = float(r.randint(-100, 100))
        return (mn, mn + r.choice([0.0, 1.0]), mn - 5e-7, 1)
    bound = r.choice([1e3, 1e9, 1e15, 1e100])
    a, b = r.uniform(-bound, bound), r.uniform(-bound, bound)
    mn, mx = min(a, b), max(a, b)
    if r.random() < 0.2:
        mx = mn
    cnt = r.choice([1, 1, 2, 3, 10, r.randint(1, 1000), r.randint(1, MAX_INT64), MAX_INT64])
    sm = (mn + (mx - mn) * r.random()) * cnt
    if not summary_consistent(mn, mx, sm, cnt):
        sm = mn * cnt
    if not summary_consistent(mn, mx, sm, cnt):
        return (1.0, 1.0, 1.0, 1)
    return mn, mx, sm, cnt


def gen_timestamp(r: R) -> int:
    mode = r.randrange(5)
    if mode == 0:
        return r.choice([0, 1, MAX_INT64, 10**18, 1_700_000_000_000])
    if mode == 1:
        return r.randint(0, MAX_INT64)
    return r.randint(1_600_000_000_000, 1_900_000_000_000)


# --- records ----------------------------------------------------------------------

def gen_dimensions(r: R) -> Tuple[Tuple[str, str], ...]:
    mode = r.randrange(25)
    if mode == 0:  # at the limit, with duplicate keys (kept in order)
        n = r.choice([50, 49, 50])
        return tuple(("k%d" % (i % 7), "v%d" % i) for i in range(n))
    if mode == 1:
        k = gen_dimension_key(r)
        return ((k, "1"), (k, "2"), (k, ""))
    return tuple((gen_dimension_key(r), gen_dimension_value(r)) for _ in range(r.choice(
        [0, 0, 1, 1, 2, 3, 5])))


def gen_metric(r: R) -> Metric:
    key = gen_metric_key(r)
    dims = gen_dimensions(r)
    ts = gen_timestamp(r) if r.random() < 0.5 else None
    kind = r.choice(["gauge", "gauge", "count", "summary"])
    if kind == "summary":
        mn, mx, sm, cnt = gen_summary(r)
        return Metric(key, dims, "summary", None, mn, mx, sm, cnt, ts)
    return Metric(key, dims, kind, gen_float(r), timestamp=ts)


UNIT_CHARS = UPPER + LOWER + DIGITS + "%[]{}/_"
META_NAMES = ["dt.meta.displayName", "dt.meta.displayname", "dt.meta.description",
              "dt.meta.unit"]


def gen_metadata(r: R) -> Metadata:
    key = gen_metric_key(r)
    mtype = r.choice(["gauge", "count"])
    props = []
    for _ in range(r.choice([1, 1, 2, 3, 4])):
        name = r.choice(META_NAMES)
        if name == "dt.meta.unit":
            n = r.choice([1, 2, 5, 63, r.randint(1, 63)])
            value = "".join(r.choice(UNIT_CHARS) for _ in range(n))
        else:
            value = gen_dimension_value(r, 300 if "display" in name else 400)
            if r.randrange(20) == 0:
                value = "x" * (300 if "display" in name else 1000)
        props.append((name, value))
    return Metadata(key, mtype, tuple(props))


def gen_record(r: R) -> Any:
    return gen_metadata(r) if r.randrange(5) == 0 else gen_metric(r)


# --- lines as text -----------------------------------------------------------------

def separator(r: R, after_bare_value: bool = False) -> str:
    """1+ SP/HTAB ([A-15]); after a bare value the first one must be SP."""
    sep = r.choice([" ", " ", " ", " ", "\t", "  ", " \t", "\t ", "   "])
    if after_bare_value and sep[0] == "\t":
        sep = " " + sep
    return sep


def gen_data_line(r: R, m: Optional[Metric] = None) -> Tuple[str, Metric]:
    """(line, record) for a data line in a varied but valid wire form."""
    if m is None:
        m = gen_metric(r)
    head = m.key
    last_bare = False
    for k, v in m.dimensions:
        wv = wire_value(r, v)
        head += "," + k + "=" + wv
        last_bare = not wv.startswith('"')
    if m.kind == "gauge":
        num = wire_number(r, m.value)
        payload = ("gauge," + num) if r.random() < 0.5 else num
    elif m.kind == "count":
        payload = "count,delta=" + wire_number(r, m.value)
    else:
        fields = [
            "min=" + wire_number(r, m.min),
            "max=" + wire_number(r, m.max),
            "sum=" + wire_number(r, m.sum),
            "count=" + "0" * r.choice([0, 0, 0, 1, 25]) + str(m.count),
        ]
        if r.randrange(4) == 0:
            r.shuffle(fields)  # any order
        payload = "gauge," + ",".join(fields)
    line = head + separator(r, after_bare_value=last_bare) + payload
    if m.timestamp is not None:
        line += separator(r) + str(m.timestamp)
    if r.randrange(6) == 0:
        line += r.choice([" ", "\t", "  \t"])  # trailing blanks
    return line, m


def gen_metadata_line(r: R, md: Optional[Metadata] = None) -> Tuple[str, Metadata]:
    if md is None:
        md = gen_metadata(r)
    out = ""
    for i, (name, value) in enumerate(md.properties):
        if i:
            out += r.choice([",", ", "])
        out += name + "=" + wire_value(r, value)
    line = "#" + md.key + separator(r) + md.metric_type + separator(r) + out
    if r.randrange(6) == 0:
        line += r.choice([" ", "\t"])
    return line, md


def gen_valid_line(r: R) -> Tuple[str, Any]:
    """(line, record) for one valid line, data or metadata."""
    return gen_metadata_line(r) if r.randrange(5) == 0 else gen_data_line(r)


BLANKS = ["", " ", "\t", " \t ", "    "]


def gen_body(r: R, max_lines: int = 8) -> Tuple[bytes, list]:
    """(body, records): valid lines with blank lines, LF or CRLF, optional final LF."""
    items = [gen_valid_line(r) for _ in range(r.randint(0, max_lines))]
    lines: List[str] = []
    for text, _rec in items:
        while r.randrange(5) == 0:
            lines.append(r.choice(BLANKS))
        lines.append(text)
    out = "".join(text + r.choice(["\n", "\n", "\r\n"]) for text in lines)
    if out and r.random() < 0.5:
        out = out[:-1]  # no final LF (maybe a final CR: stripped too)
        if out.endswith("\r") and r.random() < 0.5:
            out = out[:-1]
    return out.encode("utf-8"), [rec for _t, rec in items]


def gen_plain_line(r: R) -> Tuple[str, Metric]:
    """An ordinary line (bare simple values, single SP): the decoder's fast path."""
    key = r.choice(["abc", "my.metric", "cpu.usage", "a.b.c-d_e", "queue_count", "x.count"])
    dims = tuple((r.choice(["k", "host", "dt.entity.host", "a:b"]),
                  r.choice(["v", "", "ü", "HOST-1", "a.b", "x" * 255]))
                 for _ in range(r.choice([0, 1, 2, 3])))
    ts = r.choice([None, r.randint(0, MAX_INT64), 1_700_000_000_000])
    kind = r.choice(["gauge", "count", "summary"])
    if kind == "summary":
        mn, mx, sm, cnt = gen_summary(r)
        m = Metric(key, dims, kind, None, mn, mx, sm, cnt, ts)
        payload = "gauge,min=%r,max=%r,sum=%r,count=%d" % (mn, mx, sm, cnt)
    else:
        v = gen_float(r)
        m = Metric(key, dims, kind, v, timestamp=ts)
        num = wire_number(r, v)
        if kind == "count":
            payload = "count,delta=" + num
        else:
            payload = r.choice(["", "gauge,"]) + num
    line = key + "".join(",%s=%s" % kv for kv in dims) + " " + payload
    if ts is not None:
        line += " %d" % ts
    return line, m


# --- mutators (corrupt lines) ---------------------------------------------------

INSERTS = [
    b" ", b"\t", b",", b"=", b'"', b"\\", b"#", b".", b"-", b"+", b"e", b"E", b"0", b"9",
    b"\r", b"\x00", b"\x7f", b"\x1f", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\xc0\xaf", b"\xe2\x82", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\x80", b"nan", b"inf",
    b"-Infinity", b"1e400", b"-1e309", b"9" * 400, b"0x10", b"1_000", b"1,5", b"gauge,",
    b"count,", b"delta=", b"min=", b"max=", b"sum=", b"count=", b"\\\"", b"\\,", b"\\ ",
    b"\\n", b"dt.", b"A", b"Z", b"_", b":", b"  ", b",k=v", b"9223372036854775808",
    b"99999999999999999999", b"\xc2\xa0", b"\xe2\x80\xa8", b"\\\\",
]


def mutate(r: R, data: bytes, count: Optional[int] = None) -> bytes:
    """Apply 1..3 byte-level mutations to ``data``.

    Insert a byte string (specials, escapes, non-UTF-8, huge numbers,
    keywords), delete, replace or flip a byte into non-UTF-8, truncate, or put
    a backslash at a random position.
    """
    for _ in range(count if count is not None else r.randint(1, 3)):
        op = r.randrange(7)
        n = len(data)
        pos = r.randint(0, n)
        if op <= 1:
            ins = r.choice(INSERTS) if op == 0 else bytes([r.randrange(256)])
            data = data[:pos] + ins + data[pos:]
        elif op == 2 and n:
            pos = min(pos, n - 1)
            data = data[:pos] + data[pos + 1:]
        elif op == 3 and n:
            pos = min(pos, n - 1)
            data = data[:pos] + bytes([r.randrange(256)]) + data[pos + 1:]
        elif op == 4:
            data = data[:pos]
        elif op == 5 and n:
            pos = min(pos, n - 1)
            data = data[:pos] + bytes([data[pos] | 0x80]) + data[pos + 1:]
        else:
            data = data[:pos] + b"\\" + data[pos:]
    return data


def gen_mutated_line(r: R) -> bytes:
    """A valid line (as UTF-8 bytes) mutated byte by byte; no LF."""
    text, _rec = gen_valid_line(r)
    return mutate(r, text.encode("utf-8")).replace(b"\n", b"")


def gen_mutated_body(r: R) -> bytes:
    """A body of valid lines in which some lines are mutated."""
    body, _recs = gen_body(r, max_lines=6)
    lines = body.split(b"\n")
    for _ in range(r.randint(0, 3)):
        i = r.randrange(len(lines))
        lines[i] = mutate(r, lines[i])
    return b"\n".join(lines)


def gen_any_line(r: R) -> bytes:
    """A valid, mutated or random line (no LF), as bytes."""
    mode = r.randrange(7)
    if mode == 0:
        return gen_valid_line(r)[0].encode("utf-8")
    if mode == 5:
        return gen_plain_line(r)[0].encode("utf-8")
    if mode == 6:
        return mutate(r, gen_plain_line(r)[0].encode("utf-8"), 1).replace(b"\n", b"")
    if mode == 4:
        return bytes(r.randrange(256) for _ in range(r.randint(0, 40))).replace(b"\n", b"")
    return gen_mutated_line(r)


# --- strategy wrappers --------------------------------------------------------------

def metric_keys() -> st.SearchStrategy[str]:
    return seeded(gen_metric_key)


def dimension_keys() -> st.SearchStrategy[str]:
    return seeded(gen_dimension_key)


def dimension_values(max_len: int = 255) -> st.SearchStrategy[str]:
    return seeded(gen_dimension_value, max_len)


def finite_floats() -> st.SearchStrategy[float]:
    return st.one_of(st.floats(allow_nan=False, allow_infinity=False), seeded(gen_float))


def number_texts() -> st.SearchStrategy[Tuple[str, float]]:
    return seeded(gen_number_text)


def summaries() -> st.SearchStrategy[Tuple[float, float, float, int]]:
    return seeded(gen_summary)


def timestamps() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, MAX_INT64), seeded(gen_timestamp))


def metrics() -> st.SearchStrategy[Metric]:
    return seeded(gen_metric)


def metadata_records() -> st.SearchStrategy[Metadata]:
    return seeded(gen_metadata)


def records() -> st.SearchStrategy[Any]:
    return seeded(gen_record)


def data_lines() -> st.SearchStrategy[Tuple[str, Metric]]:
    return seeded(gen_data_line)


def metadata_lines() -> st.SearchStrategy[Tuple[str, Metadata]]:
    return seeded(gen_metadata_line)


def valid_lines() -> st.SearchStrategy[Tuple[str, Any]]:
    return seeded(gen_valid_line)


def bodies(max_lines: int = 8) -> st.SearchStrategy[Tuple[bytes, list]]:
    return seeded(gen_body, max_lines)


def plain_lines() -> st.SearchStrategy[Tuple[str, Metric]]:
    return seeded(gen_plain_line)


def mutated_lines() -> st.SearchStrategy[bytes]:
    return seeded(gen_mutated_line)


def mutated_bodies() -> st.SearchStrategy[bytes]:
    return seeded(gen_mutated_body)


def any_lines() -> st.SearchStrategy[bytes]:
    return st.one_of(seeded(gen_any_line), st.binary(max_size=30))


def chunkings(data: bytes) -> st.SearchStrategy[List[bytes]]:
    """``data`` cut into chunks at random positions (empty chunks included)."""
    return st.lists(st.integers(0, len(data)), max_size=12).map(
        lambda cuts: [data[a:b] for a, b in zip([0] + sorted(cuts), sorted(cuts) + [len(data)])]
    )
