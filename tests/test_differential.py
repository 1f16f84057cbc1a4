"""Differential tests: the Cython core against the pure-Python reference.

For generated valid lines and byte-mutated lines, both implementations return
equal records of the same types or raise the same DecodeError (code, line,
column, reason, text); reports, encoded bytes, EncodeErrors and Encoder state
after an error are identical; each decodes what the other encodes.
"""

from __future__ import annotations

import collections
import gc
import math
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import strategies as S
from dtproto import DecodeError, EncodeError, Metadata, Metric, _corpus, _impl
from dtproto import _encode_py as enc_py
from encoder_memos import ESCAPED_VALUES, dims_of, fresh_escapes, fresh_memo
from stress_fuzz import FloatSub, StrSub

if _impl.env_flag("DTPROTO_NO_EXTENSIONS"):
    pytest.skip("DTPROTO_NO_EXTENSIONS is set: only the pure-Python implementation",
                allow_module_level=True)

pytestmark = pytest.mark.hypothesis

NOWS = [None, 1_700_000_000_000, 0]


@pytest.fixture(scope="module")
def both(py, cython_module):
    return py, cython_module


def _value_key(x):
    """Equality that also sees the sign of zero and the exact types."""
    if type(x) is float:
        return ("f", x, math.copysign(1.0, x))
    if type(x) in (tuple, Metric, Metadata):
        return (type(x).__name__, tuple(_value_key(v) for v in x))
    return (type(x).__name__, x)


def decode_outcome(mod, data, **kw):
    try:
        recs = mod.decode(data, **kw)
    except DecodeError as e:
        return ("error", type(e), e.code, e.line, e.column, e.reason, e.text, str(e), repr(e),
                e.args)
    except Exception as e:  # anything else is a bug in either implementation
        return ("crash", type(e), str(e))
    assert type(recs) is list
    return ("ok", [_value_key(r) for r in recs])


def stream_outcome(mod, chunks, **kw):
    out = []
    try:
        for r in mod.iter_decode(chunks, **kw):
            out.append(_value_key(r))
    except DecodeError as e:
        return out, (e.code, e.line, e.column, e.reason, e.text)
    return out, None


def report_state(r):
    return (r.lines_ok, r.lines_invalid, r.lines_total, r.warnings_total,
            [tuple(e) + (type(e.code),) for e in r.errors], [tuple(w) for w in r.warnings],
            sorted((k.value, v) for k, v in r.error_counts.items()), r.to_response(),
            type(r).__name__)


def encode_outcome(fn):
    try:
        out = fn()
    except EncodeError as e:
        return ("error", type(e), e.field, e.code, e.message, e.record, str(e))
    except Exception as e:
        return ("crash", type(e), str(e))
    return ("ok", type(out), out)


def same(py, c, fn):
    a, b = fn(py), fn(c)
    assert a == b
    assert "crash" not in (a[0] if isinstance(a, tuple) else "")
    return a


# ---------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------

@given(S.valid_lines(), st.sampled_from(NOWS))
def test_decode_valid_lines(both, case, now):
    py, c = both
    text, rec = case
    a = same(py, c, lambda m: decode_outcome(m, text.encode(), now_ms=now))
    if now is None:
        assert a == ("ok", [_value_key(rec)])


@given(st.one_of(S.mutated_lines(), S.any_lines()), st.sampled_from(NOWS))
def test_decode_mutated_lines(both, data, now):
    py, c = both
    same(py, c, lambda m: decode_outcome(m, data, now_ms=now))
    same(py, c, lambda m: decode_outcome(m, data + b"\r\n" + data, now_ms=now))


@given(st.one_of(S.bodies().map(lambda t: t[0]), S.mutated_bodies()))
def test_decode_bodies_all_input_types(both, body):
    py, c = both
    want = same(py, c, lambda m: decode_outcome(m, body))
    for data in (bytearray(body), memoryview(body)):
        assert decode_outcome(c, data) == want
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")
    same(py, c, lambda m: decode_outcome(m, text))


@given(st.binary(max_size=120))
def test_decode_random_bytes(both, data):
    py, c = both
    same(py, c, lambda m: decode_outcome(m, data))


@given(st.integers(0, 2**64 - 1), st.sampled_from(["data", "meta"]))
def test_decode_escapes_at_every_position(both, seed, which):
    """A backslash, a quote or an invalid byte inserted at each position in turn."""
    py, c = both
    r = random.Random(seed)
    text = (S.gen_data_line(r) if which == "data" else S.gen_metadata_line(r))[0].encode()
    ins = r.choice([b"\\", b'"', b"\xff", b"\\\xc3", b"=", b",", b" ", b"\t"])
    # every position of a window (the windows of many examples cover whole lines)
    start = r.randint(0, len(text))
    for pos in range(start, min(len(text), start + 40) + 1):
        data = text[:pos] + ins + text[pos:]
        assert decode_outcome(py, data) == decode_outcome(c, data), data


@pytest.mark.parametrize("token", ["key", "dimension key", "bare value", "quoted value"])
def test_tokens_across_16_byte_blocks(both, token):
    """Every token length from 0 to 50 with a stop byte at each position.

    The Cython scanners skip plain bytes 16 at a time (_blocks.h); the lengths
    and positions around 16, 32 and 48 and the line's end are where a block
    skipper can be off by one.
    """
    py, c = both
    fill = {"key": "a", "dimension key": "k", "bare value": "v", "quoted value": "q"}[token]
    stops = ["", ".", "-", ":", "A", "0", ",", "=", " ", "\t", '"', "\\", "\\ ", "\x7f",
             "\x01", "ü", "\xff", "#", "_", ".."]
    bodies = []
    for n in range(51):
        for stop in stops:
            for pos in sorted({0, n // 2, n}):
                t = fill * pos + stop + fill * (n - pos)
                if token == "key":
                    line = "m" + t + ",d=v gauge,1"
                elif token == "dimension key":
                    line = "m,k" + t + "=v 1"
                elif token == "bare value":
                    line = "m,k=" + t + ",e=f 1 1700000000000"
                else:
                    line = 'm,k="' + t + '" 1'
                bodies.append(line.encode("utf-8", "surrogateescape"))
    for tail in (b"", b"\n"):  # the line at the very end of the buffer, and not
        for data in bodies:
            assert decode_outcome(py, data + tail) == decode_outcome(c, data + tail), data
    body = b"\n".join(bodies)
    assert report_state(py.validate(body)) == report_state(c.validate(body))


def test_numbers_of_every_digit_count(both):
    """The Cython core converts a number of up to 7 + 7 digits with 8-byte
    words (dt_digits8) when 16 bytes remain in the line, else digit by
    digit: every digit count on each side of the point, every sign and what
    may follow, near the line's end and far from it, give the reference's
    double (sign of zero included) or its error."""
    py, c = both
    lines = []
    for li in range(10):
        for lf in range(-1, 10):
            for sign in ("", "-", "+"):
                digits = "".join(str((k * 7 + li) % 10) for k in range(li))
                if lf >= 0:
                    digits += "." + "".join(str((k * 3 + lf + 1) % 10) for k in range(lf))
                for after in ("", " 1700000000000", "e5", "E-2 1", ".5", ",x", "x", "0" * 9):
                    number = sign + digits + after
                    lines += ["abc gauge," + number, "abc " + number,
                              "abc count,delta=" + number + " 1",
                              "abc gauge,min=%s,max=9e9,sum=%s,count=2" % (number, number)]
    valid = 0
    for line in lines:
        data = line.encode()
        outcome = decode_outcome(py, data)
        assert outcome == decode_outcome(c, data), line
        valid += outcome[0] == "ok"
    assert valid > len(lines) // 3
    body = "\n".join(lines).encode()
    assert report_state(py.validate(body)) == report_state(c.validate(body))


def test_timestamps_of_every_digit_count(both):
    """The Cython core reads a timestamp of 9-16 digits that ends its line
    with two overlapping 8-byte words (dt_digits16_exact), else digit by
    digit: every width from 1 to 21 digits, the limits of int64, and a
    non-digit (including the bytes next to "0" and "9") at every position,
    at the line's end, before trailing blanks and before more text."""
    py, c = both
    stamps = ["1" * k for k in range(1, 22)] + ["0" * 13, "0" * 16 + "1", "9" * 16, "9" * 19,
                                                 str(2**63 - 1), str(2**63), "1700000000000"]
    for width in range(9, 17):
        digits = "".join(str((k * 7 + width) % 10) for k in range(width))
        stamps.append(digits)
        for pos in range(width):
            for bad in "/:a.-\xe9 ":
                stamps.append(digits[:pos] + bad + digits[pos + 1:])
    lines = ["m.k,d=v gauge,1 " + t + after for t in stamps for after in ("", " ", "\t", " x")]
    valid = 0
    for now in NOWS:
        for line in lines:
            data = line.encode()
            outcome = decode_outcome(py, data, now_ms=now)
            assert outcome == decode_outcome(c, data, now_ms=now), (line, now)
            valid += outcome[0] == "ok"
        body = "\n".join(lines).encode()
        assert (report_state(py.validate(body, now_ms=now))
                == report_state(c.validate(body, now_ms=now)))
    assert valid > 150  # most stamps hold a non-digit or fall outside the window


def test_cached_heads_with_a_quoted_space(both):
    """The head cache hashes a line up to its first SP; a head whose quoted
    value holds a space is cached whole and found only when the line holds
    that whole head followed by an SP.  Lines that share the part before the
    first SP, or the whole head followed by something else, are scanned."""
    py, c = both
    heads = ['abc,k="a b"', 'abc,k="a b",j=1', 'abc,k="a b c"', 'abc,k="a b"c', 'abc,k="a b',
             'abc,k="a b\\" c"', 'abc,k="a b",j="c d"', 'abc,k="a  b"', 'abc.n,k="a b"',
             'm,k="a b"']
    tails = [" gauge,1", " 2 1700000000000", "\tgauge,1", "  3", ",x=y 4", " gauge,min=1,max=2,sum=3,count=2",
             " count,delta=1", " bad", "", " ", "\t", '" 5']
    lines = [(h + t).encode() for h in heads for t in tails]
    r = random.Random(7)
    # every line many times, shuffled: heads are stored, hit, and shadowed
    body = b"\n".join(r.choice(lines) for _ in range(20_000)) + b"\n"
    assert report_state(py.validate(body)) == report_state(c.validate(body))
    for skip in ("raise", "skip"):
        assert (stream_outcome(py, [body], errors=skip)
                == stream_outcome(c, [body], errors=skip))
    valid = b"\n".join(line for line in lines if py.validate(line).lines_invalid == 0)
    valid = (valid + b"\n") * 3
    assert decode_outcome(py, valid) == decode_outcome(c, valid)


@given(st.integers(0, 2**64 - 1))
def test_decode_huge_and_edge_numbers(both, seed):
    py, c = both
    r = random.Random(seed)
    num = r.choice(["1e400", "-1e400", "9" * 400, "1e-400", "-0", "+.5e-3", "5.", "1.0E20",
                    "4.9e-324", "2.4703282292062327e-324", "1.7976931348623158e308",
                    "1.7976931348623157e308", "0x10", "1_0", "nan", "-Infinity", "1e+",
                    "." + "0" * 400 + "1", "1" + "0" * 308, "1" + "0" * 309,
                    S.gen_number_text(r)[0], repr(S.gen_float(r))])
    count = r.choice(["1", "0" * 30 + "1", "9223372036854775807", "9223372036854775808",
                      "-1", "1.0", ""])
    for line in ("abc " + num, "abc gauge," + num, "abc count,delta=" + num,
                 "abc gauge,min=%s,max=%s,sum=%s,count=%s" % (num, num, num, count),
                 "abc 1 " + r.choice([num, count])):
        assert decode_outcome(py, line) == decode_outcome(c, line), line


@given(st.one_of(S.bodies().map(lambda t: t[0]), S.mutated_bodies()), st.data())
def test_iter_decode_chunked(both, body, data):
    py, c = both
    chunks = data.draw(S.chunkings(body))
    assert stream_outcome(py, chunks) == stream_outcome(c, chunks)
    assert stream_outcome(py, chunks, errors="skip") == stream_outcome(c, chunks, errors="skip")


def test_over_long_lines(both):
    py, c = both
    for body in (b"x" * 250_000 + b"\nabc 1", b"abc 1\n" + "ü".encode() * 100_000,
                 b"#abc gauge dt.meta.description=" + b"d" * 49_969,
                 b"#abc gauge dt.meta.description=" + b"d" * 49_970,
                 b"abc 1 " + b" " * 49_994 + b"\r\n", b"abc 1 " + b" " * 49_995):
        chunks = [body[i:i + 4096] for i in range(0, len(body), 4096)]
        assert decode_outcome(py, body) == decode_outcome(c, body)
        assert stream_outcome(py, chunks) == stream_outcome(c, chunks)
        assert report_state(py.validate(chunks)) == report_state(c.validate(chunks))


# ---------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------

@given(st.one_of(S.bodies().map(lambda t: t[0]), S.mutated_bodies(), st.binary(max_size=80)),
       st.sampled_from(NOWS), st.sampled_from([None, 0, 1, 3, 10_000]))
def test_validate_reports(both, body, now, cap):
    py, c = both
    a = report_state(py.validate(body, now_ms=now, max_errors=cap, max_warnings=cap))
    b = report_state(c.validate(body, now_ms=now, max_errors=cap, max_warnings=cap))
    assert a == b


@given(st.one_of(S.bodies().map(lambda t: t[0]), S.mutated_bodies(), st.binary(max_size=80)),
       st.sampled_from(NOWS), st.sampled_from([None, 0, 1, 3]), st.sampled_from([None, 0, 1, 3]))
def test_validate_with_a_cap_for_each_kind_of_warning(both, body, now, renames, hints):
    """The CLI's segments: a cap of renames and one of hints (_validate_kinds)."""
    py, c = both
    a = report_state(py._validate_kinds(body, now, None, renames, hints))
    assert a == report_state(c._validate_kinds(body, now, None, renames, hints))


@given(st.one_of(S.bodies().map(lambda t: t[0]), S.mutated_bodies()), st.data())
def test_validate_chunked(both, body, data):
    py, c = both
    chunks = data.draw(S.chunkings(body))
    assert report_state(py.validate(chunks)) == report_state(c.validate(chunks))


@given(S.metric_keys(), st.sampled_from(["gauge", "count", "summary", "meta", "Count"]))
def test_classic_key(both, key, kind):
    py, c = both

    def outcome(m):
        try:
            return ("ok", m.classic_key(key, kind))
        except ValueError as e:
            return ("error", type(e))
    assert outcome(py) == outcome(c)


# ---------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------

@given(st.lists(S.records(), max_size=6))
def test_encode_equal_bytes_and_cross_round_trip(both, records):
    py, c = both
    a = py.encode(records)
    b = c.encode(records)
    assert type(b) is bytes and a == b
    for dec, enc in ((py, c), (c, py)):
        got = dec.decode(enc.encode(records))
        assert [_value_key(g) for g in got] == [_value_key(r) for r in records]


BAD_VALUES = [float("nan"), float("inf"), -float("inf"), 10**400, "1", None, True, 1j,
              2**63, -1, 1.5, b"x"]
BAD_STRINGS = ["", "ab", "a" * 256, "1ab", "dt.x", "K", "a.", "k" * 101, "v" * 256,
               "\x00", "a\tb", "\ud800", "bad unit", "x" * 301, 5, None, b"k", []]


def corrupt_record(r: random.Random, rec):
    """Replace one field of a valid record by an invalid value."""
    if type(rec) is Metadata:
        props = list(rec.properties)
        what = r.randrange(4)
        if what == 0:
            return Metadata(r.choice(BAD_STRINGS[:6] + [5]), rec.metric_type, props)
        if what == 1:
            return tuple.__new__(Metadata, (rec.key, r.choice(["summary", "GAUGE", None, 5]),
                                            tuple(props)))
        if what == 2:
            return Metadata(rec.key, rec.metric_type, ())
        props.insert(r.randint(0, len(props)), (r.choice(S.META_NAMES + ["dt.meta.x", "k"]),
                                                r.choice(BAD_STRINGS)))
        return tuple.__new__(Metadata, (rec.key, rec.metric_type, tuple(props)))
    fields = list(rec)
    what = r.randrange(6)
    if what == 0:
        fields[0] = r.choice(BAD_STRINGS)
    elif what == 1:
        dims = list(fields[1])
        bad = (r.choice(BAD_STRINGS), "v") if r.random() < 0.5 else ("k", r.choice(BAD_STRINGS))
        dims.insert(r.randint(0, len(dims)), bad)
        fields[1] = tuple(dims)
    elif what == 2:
        fields[1] = tuple(("k%d" % i, "v") for i in range(51))
    elif what == 3:
        fields[8] = r.choice(BAD_VALUES)
    elif what == 4 and rec.kind == "summary":
        i = r.choice([4, 5, 6, 7])
        fields[i] = r.choice(BAD_VALUES)
        if r.random() < 0.5:  # consistent types, inconsistent values
            fields[4:8] = r.choice([(3.0, 1.0, 4.0, 2), (0.0, 1.0, 0.0, 0), (2.0, 3.0, 2.0, 2)])
    else:
        fields[3] = r.choice(BAD_VALUES)
    return tuple.__new__(Metric, tuple(fields))


@given(st.lists(S.records(), min_size=1, max_size=4), st.integers(0, 2**64 - 1))
def test_encode_errors_equal(both, records, seed):
    py, c = both
    r = random.Random(seed)
    i = r.randrange(len(records))
    records[i] = corrupt_record(r, records[i])
    a = encode_outcome(lambda: py.encode(records))
    b = encode_outcome(lambda: c.encode(records))
    assert a == b
    assert a[0] in ("ok", "error")


class _Iter:
    """Marks dimensions to pass as a fresh one-shot iterator to each encoder."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __bool__(self):
        return bool(self.pairs)


def _apply(enc, op):
    name, args, kwargs = op
    args = tuple(iter(a.pairs) if type(a) is _Iter else a for a in args)
    return getattr(enc, name)(*args, **kwargs)


def _ops_for(r: random.Random, rec):
    """Encoder calls covering the option space: mapping/pairs/None dims, ts or not."""
    if type(rec) is Metadata:
        kw = {}
        for name, value in rec.properties:
            if name == "dt.meta.unit":
                kw["unit"] = value
            elif name == "dt.meta.description":
                kw["description"] = value
            else:
                kw["display_name"] = value
        return [("metadata", (rec.key, rec.metric_type), kw), ("add", (rec,), {})]
    dims = rec.dimensions
    try:
        as_dict = dict(dims)
    except TypeError:  # a corrupted, unhashable key
        as_dict = list(dims)
    dims = r.choice([dims, list(dims), as_dict, _Iter(dims)]) if dims else r.choice(
        [None, {}, [], ()])
    ts = rec.timestamp
    kw = {} if ts is None and r.random() < 0.5 else {"timestamp": ts}
    if rec.kind == "gauge":
        op = ("gauge", (rec.key, rec.value, dims), kw)
    elif rec.kind == "count":
        op = ("count", (rec.key, rec.value, dims), kw)
    else:
        op = ("summary", (rec.key, rec.min, rec.max, rec.sum, rec.count, dims), kw)
    return [op, ("add", (rec,), {})]


@given(st.lists(S.records(), min_size=1, max_size=6), st.integers(0, 2**64 - 1))
def test_encoder_state_after_errors_identical(both, records, seed):
    py, c = both
    r = random.Random(seed)
    encs = (py.Encoder(), c.Encoder())
    for rec in records:
        bad = r.random() < 0.4
        if bad:
            rec = corrupt_record(r, rec)
        for op in _ops_for(r, rec)[: r.randint(1, 2)]:
            outs = []
            for enc in encs:
                outs.append(encode_outcome(lambda: _apply(enc, op)))
            assert outs[0] == outs[1], op
            assert outs[0][0] in ("ok", "error")
            assert encs[0].getvalue() == encs[1].getvalue()
            assert (len(encs[0]), encs[0].lines) == (len(encs[1]), encs[1].lines)
        if r.random() < 0.1:
            for enc in encs:
                enc.clear()
    assert py.decode(encs[1].getvalue()) == c.decode(encs[0].getvalue())


@given(S.records())
def test_encoder_add_equals_encode(both, rec):
    py, c = both
    for m in (py, c):
        enc = m.Encoder()
        enc.add(rec)
        assert enc.getvalue() == py.encode([rec]) == c.encode([rec])


_OPTION_PREFIXES = [None, "app", "my app.", "x.", "0p", "Ünï.côde", "a" * 250]
_OPTION_DIMS = [None, {}, {"env": "prod"}, {"Bad Key": "v"}, {"host": "a b\u00e9"},
                {"k%d" % i: "v" for i in range(30)}, [("dup", "1"), ("dup", "2")]]


@given(st.lists(S.records(), min_size=1, max_size=5), st.integers(0, 2**64 - 1))
def test_encoder_options_identical(both, records, seed):
    """Encoder(prefix, default/static dimensions, normalize): same bytes, errors, log."""
    py, c = both
    r = random.Random(seed)
    options = {
        "prefix": r.choice(_OPTION_PREFIXES),
        "default_dimensions": r.choice(_OPTION_DIMS),
        "static_dimensions": r.choice(_OPTION_DIMS),
        "normalize": r.random() < 0.6,
    }
    built = []
    for m in (py, c):
        try:
            built.append(m.Encoder(**options))
        except (ValueError, TypeError) as e:
            built.append((type(e), str(e)))
    if not all(hasattr(e, "getvalue") for e in built):
        assert built[0] == built[1], options
        return
    encs = built
    for rec in records:
        if r.random() < 0.3:
            rec = corrupt_record(r, rec)
        for op in _ops_for(r, rec)[: r.randint(1, 2)]:
            outs = [encode_outcome(lambda enc=enc: _apply(enc, op)) for enc in encs]
            assert outs[0] == outs[1], (options, op)
            assert outs[0][0] in ("ok", "error")
            assert encs[0].getvalue() == encs[1].getvalue(), (options, op)
            assert encs[0].lines == encs[1].lines
    logs = [e.normalizations for e in encs]
    assert (logs[0].changed, logs[0].dropped) == (logs[1].changed, logs[1].dropped)
    assert list(logs[0].examples) == list(logs[1].examples)


def _line_sp_reference(q):
    n = q.find(b"\n")
    n = len(q) if n < 0 else n
    return n, q.find(b" ", 0, n)


def test_look_ahead_finds_the_line_and_its_first_space(both):
    """dt_line_sp, the look-ahead's one pass for the next line's LF and first
    SP (16-byte blocks, then memchr, then a byte loop for the last bytes):
    an LF and an SP at every pair of positions of buffers of 0 to 50 bytes,
    each order, and SPs only after the LF."""
    c = both[1]
    for size in range(51):
        base = bytearray(b"a" * size)
        assert c._line_sp(bytes(base)) == (size, -1)
        for i in range(size):
            for first, second in ((b"\n", b" "), (b" ", b"\n"), (b" ", b" "), (b"\n", b"\n")):
                for j in range(i, size):
                    q = bytearray(base)
                    q[i:i + 1] = first
                    q[j:j + 1] = second
                    assert c._line_sp(bytes(q)) == _line_sp_reference(bytes(q)), (bytes(q), i, j)


@given(st.binary(max_size=200).map(lambda b: b.replace(b"a", b" ").replace(b"b", b"\n")))
def test_look_ahead_on_any_bytes(both, q):
    assert both[1]._line_sp(q) == _line_sp_reference(q)


# The pure-Python Encoder's memos (of dimension texts, and of escaped values)
# write lines without the exact escaping; the Cython core has neither.  Lines
# met again and again, values to escape among plain, invalid and too long
# ones, as pairs and as dicts: every line or error from a memo is the C core's.

_MEMO_VALUES = ESCAPED_VALUES + [
    # one pair that joins to the text of two: a=x,b.c=x
    "x,b.c=x", "x,host=x"]


def _memo_calls(pair_lists, method):
    calls = []
    for pairs in pair_lists:
        dims = dims_of(pairs)
        if method == "summary":
            calls.append((method, ("a.b", 1.0, 2.0, 3.0, 2, dims, 1_700_000_000_000), {}))
        else:
            calls.append((method, ("a.b", 2.5, dims), {}))
    return calls * 3


def _memo_lines_alike(py, c, calls, memo, small):
    """Each call on a pure and a C Encoder; returns how many lines the pure
    one wrote from the memo under test (``small``: that memo starts again
    after a few values, or texts)."""
    hits = [0]
    with pytest.MonkeyPatch.context() as mp:
        if memo == "escapes":
            fresh_escapes(mp, 52 if small else None)  # 52: again after two values
            inner = enc_py._escaped_from_memo

            def counted(*args):
                out = inner(*args)
                hits[0] += out is not None
                return out

            mp.setattr(enc_py, "_escaped_from_memo", counted)
        else:
            fresh_memo(mp, 4 if small else None)  # 4: texts evict each other
            fresh_escapes(mp)   # emptied too (this also rests the memo of texts)
            mp.setattr(enc_py, "_memo_rest", iter(()))   # consulted again
        encs = (py.Encoder(), c.Encoder())
        for op in calls:
            outs = [encode_outcome(lambda: _apply(e, op)) for e in encs]
            assert outs[0] == outs[1], op
            assert encs[0].getvalue() == encs[1].getvalue(), op
        if memo == "texts":
            hits[0] = enc_py._memo_stat[0]
    return hits[0]


@given(st.lists(st.lists(st.tuples(st.sampled_from(["host", "a", "b.c"]),
                                   st.sampled_from(_MEMO_VALUES)),
                         min_size=1, max_size=4), min_size=1, max_size=12),
       st.sampled_from(["gauge", "count", "summary"]), st.sampled_from(["escapes", "texts"]),
       st.booleans())
@example(pair_lists=[[("a", "x"), ("b.c", "x")], [("a", "x,b.c=x")]], method="gauge",
         memo="texts", small=False)
@example(pair_lists=[[("a", "x,b.c=x")], [("a", "x"), ("b.c", "x")]], method="count",
         memo="texts", small=True)
def test_encoder_memo_lines_are_the_c_cores(both, pair_lists, method, memo, small):
    _memo_lines_alike(*both, _memo_calls(pair_lists, method), memo, small)


@pytest.mark.parametrize("memo", ["escapes", "texts"])
def test_encoder_memo_differential_reaches_the_memo(both, memo):
    """The property above does exercise the memos: on lines like its own,
    the pure Encoder writes lines from them."""
    pairs = [[("host", "G1 Old Gen"), ("a", "x")], [("b.c", 'say "hi"')],
             [("host", "ü c"), ("a", "a,b"), ("b.c", "x")],
             # two pairs, and one pair that joins to the same text
             [("a", "x"), ("b.c", "x")], [("a", "x,b.c=x")]]
    for method in ("gauge", "summary"):
        assert _memo_lines_alike(*both, _memo_calls(pairs, method), memo, False) > 0


class _Dict(dict):
    pass


_EARLY_VALUES = [1.5, -0.0, 0.0, 1e-7, 1e-5, 1e16, 1e17, 1e22, 2.5e-308, 5e-324,
                 float("nan"), float("inf"), float("-inf"), FloatSub(2.5), FloatSub("nan"), 3,
                 10**400, True, "1", None]
_EARLY_DIMS = [None, {}, {"host": "a"}, {"host": "a b,c"}, {"Bad Key": "v"},
               {"k%d" % i: "v" for i in range(51)}, {"k": "v" * 256}, [("host", "a")],
               {"k": 1}, {"k": "a\ud800"}, _Dict(host="a"), collections.OrderedDict(host="a"),
               {StrSub("host"): StrSub("a b")}]


@pytest.mark.parametrize("method", ["gauge", "count"])
def test_encoder_value_written_before_its_dimensions(both, method):
    """The C path formats an exact float before it reads the dimensions (its
    text is ready while their strings come from memory): every pairing of a
    good or bad value with good or bad dimensions and key gives the reference's
    line or error, and the same buffer."""
    encs = [m.Encoder() for m in both]
    for key in ("abc", "a b", StrSub("abc"), StrSub("a b"), "a.b\ud800"):
        for value in _EARLY_VALUES:
            for dims in _EARLY_DIMS:
                for ts in (None, 1_700_000_000_000, -1):
                    op = (method, (key, value, dims), {"timestamp": ts})
                    outs = [encode_outcome(lambda: _apply(e, op)) for e in encs]
                    assert outs[0] == outs[1], op
                    assert encs[0].getvalue() == encs[1].getvalue(), op
    assert encs[0].lines == encs[1].lines > 50


@pytest.mark.parametrize("lines", [40_000, 90_000])
def test_encoder_and_encode_through_many_doublings(both, lines):
    """An Encoder and encode() whose buffer grows past 4 MB, through many
    doublings (realloc moving the block), write what the reference writes."""
    recs = list(both[0].decode(_corpus.make_corpus(lines, seed=7, cardinality="unique")))
    outs = []
    for m in both:
        enc = m.Encoder()
        for r in recs:
            enc.add(r)
        body = enc.getvalue()
        assert body == m.encode(recs)
        outs.append(body)
    assert outs[0] == outs[1] and len(outs[0]) > 4 << 20


def test_dimensions_gathered_before_the_key_survive_a_collector_that_clears_them(both):
    """The C path reads a dict's items (borrowed) before it checks the metric
    key; a key that raises (a lone surrogate) allocates the exception, which
    may start the collector, whose callback here empties the dict: nothing
    read before is used after, the call fails as the reference's does and
    the buffer stays empty."""
    py, c = both
    encs = (py.Encoder(), c.Encoder())
    state = {}

    def clear_dims(phase, info):
        if phase == "start" and state.get("d") is not None:
            state["d"].clear()

    gc.callbacks.append(clear_dims)
    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        for i in range(300):
            outs = []
            for enc in encs:
                d = state["d"] = {"k%d" % j: "v" * 40 + str(i * 64 + j) for j in range(20)}
                for key in ("a.b\ud800", StrSub("a.b\ud800")):
                    outs.append(encode_outcome(lambda: enc.gauge(key, 1.5, d)))
                    assert outs[-1][0] == "error"
                assert len(enc) == 0
            assert outs[:2] == outs[2:]
    finally:
        gc.callbacks.remove(clear_dims)
        gc.set_threshold(*old)
        state.clear()
