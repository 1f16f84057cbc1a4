"""encode_table's column encoder (the Cython core's ``encode_columns``) against the pure paths.

For generated tables and frames, three encodings of the same rows must agree
byte for byte, with the same counts, the same TimestampWarning and the same
error (type, code, message, row):

* the Cython core's C loop (``_codec=_codec_c``);
* the pure vectorized path (``_codec=_codec_py``: Arrow compute kernels);
* ``Encoder`` fed row by row (``_rows=True``), the definition.

The frames cover nulls, escapes, non-ASCII, over-long values, controls,
invalid keys, wide frames, summaries, datetime timestamps, categoricals,
integers, chunked columns cut at different rows, and pandas object columns
(str, None, NaN, pd.NA, and other objects, which pyarrow converts instead).
The float formatter of the C loop is checked against the reference's
``_format_number`` over every binary exponent.
"""

from __future__ import annotations

import datetime
import math
import random
import struct
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")

from dtproto import EncodeError, ErrorCode, _impl  # noqa: E402
from dtproto import arrow as A  # noqa: E402
from dtproto._encode_py import _format_number  # noqa: E402
from dtproto.errors import TimestampWarning  # noqa: E402

PY = _impl.available_implementations()["python"]


@pytest.fixture(scope="module")
def c(impl):
    if not hasattr(impl, "encode_columns"):
        pytest.skip("%s has no encode_columns (the pure path is used)" % impl.__name__)
    return impl


# --------------------------------------------------------------------------- floats


def _floats(r: random.Random, n: int):
    for _ in range(n):
        yield struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0]
        yield r.random() * 10 ** r.randint(-30, 30)
        yield float(r.randrange(10 ** r.randint(1, 19)))
        yield round(r.uniform(-1e6, 1e6), r.randint(0, 12))


def test_format_float_is_format_number(c):
    r = random.Random(11)
    values = list(_floats(r, 20_000))
    for e in range(-1074, 1024):   # every binary exponent, and both neighbours
        v = 2.0 ** e
        values += [v, math.nextafter(v, 0), math.nextafter(v, math.inf)]
    for e in range(-324, 309):     # powers of ten and their neighbours
        v = float("1e%d" % e)
        values += [v, math.nextafter(v, 0), math.nextafter(v, math.inf), 9.999999999999999 * v]
    values += [0.0, 1e15, 1e16, 1e-4, 1e-5, 9007199254740993.0, 1.7976931348623157e308,
               2.2250738585072014e-308, 0.1, 1 / 3]
    for v in values:
        for x in (v, -v):
            if math.isinf(x) or math.isnan(x):
                assert c._format_float(x) is None
            else:
                assert c._format_float(x) == _format_number(x, "value"), repr(x)
    assert c._format_float(-0.0) == "-0" and c._format_float(0.0) == "0"


def test_format_float_short_decimals(c):
    """format_double's fast path for short decimals (k = 0..9 digits after the
    point, exact 64.64 fixed point) against the reference: the decimals
    themselves, their neighbours (which need more digits), values halfway
    between two k-decimals, and powers of two (a narrower interval below)."""
    r = random.Random(12)
    values = []
    for _ in range(20_000):
        k = r.randint(0, 11)
        m = r.randrange(1, 10 ** r.randint(1, 17))
        for v in (m / 10 ** k, (m + 0.5) / 10 ** k):
            values += [v, math.nextafter(v, 0), math.nextafter(v, math.inf)]
        e = r.randint(-12, 54)
        values += [2.0 ** e + d for d in (0.0, 2.0 ** (e - 53), -(2.0 ** (e - 54)))]
        values.append(float("%.*g" % (r.randint(1, 17), r.random() * 10 ** r.randint(-5, 16))))
    for v in values:
        for x in (v, -v):
            assert c._format_float(x) == _format_number(x, "value"), repr(x)


# --------------------------------------------------------------------------- frames

KEYS = ["a.b", "app.cpu.usage", "x_y", "c.d-e.f", "dt.reserved", "1bad", "a..b", "k" * 251]
TEXTS = ["h1", "a b", 'q"q', "x,y=z", "\\", "ü", "日本", "é=1", "", "tab\there", "\x7f",
         "x" * 255, "x" * 256, "ü" * 200, "ü" * 256, "emoji 😀", "\u0085"]


def _text(r: random.Random):
    if r.random() < 0.8:
        return r.choice(TEXTS[:9]) + str(r.randrange(100))
    return r.choice(TEXTS)


def _number(r: random.Random, bad: bool):
    x = r.random()
    if x < 0.1:
        return None
    if bad and x < 0.13:
        return r.choice([math.inf, -math.inf, math.nan])
    if x < 0.3:
        return float(r.randrange(-1000, 1000))
    if x < 0.4:
        return r.choice([1e16, 1e15, 1e-5, 2.5e-7, -0.0, 5e-324, 1e300, 123456789012345.6])
    return struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0] if x < 0.5 \
        and bad else r.uniform(-1e6, 1e6)


def _strings_array(r: random.Random, values, role: str):
    how = r.choice(["string", "large", "dict", "dict-large"] + (["int"] if role == "dim" else []))
    if how == "int":
        typ = r.choice([pa.int64(), pa.int8(), pa.uint32()])
        low = 0 if typ == pa.uint32() else -5
        return pa.array([None if v is None else r.randrange(low, 120) for v in values], typ)
    typ = pa.large_string() if how.endswith("large") else pa.string()
    arr = pa.array(values, typ)
    if how.startswith("dict"):
        arr = arr.dictionary_encode()
        if r.random() < 0.3:   # int8 indices
            arr = pa.DictionaryArray.from_arrays(arr.indices.cast(pa.int8()), arr.dictionary)
    return arr


def _chunked(r: random.Random, arr, n: int):
    """The column in random chunks (each column cut at its own rows)."""
    if n < 2 or r.random() < 0.5:
        return arr
    cuts = sorted(r.sample(range(1, n), r.randint(1, min(3, n - 1))))
    bounds = [0] + cuts + [n]
    return pa.chunked_array([arr.slice(a, b - a) for a, b in zip(bounds, bounds[1:])],
                            type=arr.type)


def gen_case(r: random.Random):
    """(table, encode_table options) for one generated case."""
    n = r.choice([0, 1, 2, 3, 5, 8, 13, 40])
    bad = r.random() < 0.3          # invalid input somewhere (an error is expected)
    cols = {}
    opts = {}
    kind = r.choice(["gauge", "gauge", "count", "summary"])
    opts["kind"] = kind
    keys = [r.choice(KEYS if bad else KEYS[:4]) for _ in range(n)]
    if r.random() < 0.7:
        cols["key"] = _strings_array(r, [None if bad and r.random() < 0.05 else k
                                         for k in keys], "key")
        opts["key"] = "key"
    else:
        opts["key"] = r.choice(KEYS[:4])
    wide = kind != "summary" and r.random() < 0.2
    if kind == "summary":
        mn = [r.uniform(-10, 10) for _ in range(n)]
        cnt = [r.randrange(0, 5) for _ in range(n)]
        mx = [m + r.uniform(0, 5) for m in mn]
        sm = [(a + b) / 2 * k for a, b, k in zip(mn, mx, cnt)]
        for i in range(n):
            if cnt[i] == 0:
                mn[i] = mx[i] = sm[i] = 0.0
            if bad and r.random() < 0.1:
                sm[i] = 1e9
        fields = {"min": mn, "max": mx, "sum": sm}
        for name, vals in fields.items():
            cols[name] = pa.array([None if r.random() < 0.05 else v for v in vals], pa.float64())
        cols["count"] = pa.array(cnt, pa.int64())
    elif wide:
        names = ["m.one", "m.two"] + (["dt.bad"] if bad else [])
        for name in names:
            cols[name] = pa.array([_number(r, bad) for _ in range(n)], pa.float64())
        opts["value"] = {"w." + name: name for name in names} if r.random() < 0.5 else names
        opts["key"] = None
        cols.pop("key", None)
    elif r.random() < 0.15:
        opts["value"] = r.choice([2.5, 7, -0.0, 1e20])
    else:
        vals = [_number(r, bad) for _ in range(n)]
        if r.random() < 0.2:
            vals = [None if v is None or math.isnan(v) or math.isinf(v) or abs(v) > 2**62
                    else int(v) for v in vals]
            cols["value"] = pa.array(vals, pa.int64())
        else:
            cols["value"] = pa.array(vals, pa.float64())
        opts["value"] = "value"
    ndims = r.choice([0, 1, 2, 3])
    dims = {}
    for j in range(ndims):
        name = "d%d" % j
        vals = [None if r.random() < 0.2 else (_text(r) if bad else r.choice(TEXTS[:9]) + str(i))
                for i in range(n)]
        cols[name] = _strings_array(r, vals, "dim")
        dims[r.choice(["host", "region", "a.b", "x-y"]) + str(j)] = name
    if dims:
        opts["dimensions"] = dims if r.random() < 0.5 else list(dims.values())
    if r.random() < 0.7:
        how = r.choice(["int", "int", "ms", "us", "ns", "s"])
        base = 1_700_000_000_000 if r.random() < 0.9 else 1_700_000
        stamps = [None if r.random() < 0.1 else base + r.randrange(10_000) for _ in range(n)]
        if bad and n and r.random() < 0.3:
            stamps[r.randrange(n)] = -5
        if how == "int":
            cols["ts"] = pa.array(stamps, pa.int64())
        else:
            per = {"s": 0.001, "ms": 1, "us": 1000, "ns": 1_000_000}[how]
            cols["ts"] = pa.array([None if s is None else int(s * per) for s in stamps],
                                  pa.timestamp(how, tz="UTC"))
        opts["timestamp"] = "ts"
    table = pa.table({k: _chunked(r, v, n) for k, v in cols.items()})
    return table, opts


def _as_pandas(r: random.Random, table):
    """The table as a pandas frame; string columns as object columns with some
    None/NaN/pd.NA for null (or, rarely, another object)."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({name: table.column(name).to_pylist() for name in table.column_names})
    for name in table.column_names:
        t = table.column(name).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            vals = [v if v is not None else r.choice([None, math.nan, pd.NA])
                    for v in table.column(name).to_pylist()]
            if vals and r.random() < 0.05:
                vals[r.randrange(len(vals))] = r.choice([5, b"x", 2.5])
            df[name] = pd.Series(vals, dtype=object)
        elif pa.types.is_timestamp(t):
            df[name] = pd.Series(table.column(name).to_pandas())
        elif pa.types.is_floating(t):
            df[name] = pd.Series(table.column(name).to_pylist(), dtype="float64")
        elif pa.types.is_integer(t):   # with nulls: ints and None (pyarrow makes int64)
            df[name] = pd.Series(table.column(name).to_pylist(),
                                 dtype=object if table.column(name).null_count else "int64")
    return df


def _run(data, opts, **kw):
    """(outcome, counts, warned): the body and its counts, or the error."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            out = A.encode_table(data, **opts, **kw)
            result = ("ok", bytes(out), out.lines, out.skipped_null, out.rows)
        except EncodeError as e:
            result = ("error", type(e), e.code, str(e), getattr(e, "record", None))
        except Exception as e:  # noqa: BLE001 (pyarrow's own errors: same for all three)
            result = ("other", type(e), str(e))
    return result, any(issubclass(w.category, TimestampWarning) for w in seen)


def _agree(c, data, opts):
    got = _run(data, opts, _codec=c)
    want_vector = _run(data, opts, _codec=PY)
    want_rows = _run(data, opts, _codec=PY, _rows=True)
    assert got[0] == want_vector[0]
    if want_vector[0][0] == "ok" or want_vector[0][-1] is not None:
        # a row's error, or none (a column of the wrong type is refused before
        # any row by the column paths, at its first value by the row path)
        assert got[0] == want_rows[0]
    # (before an error, the warning depends on how far each path got)
    if got[0][0] == "ok":
        assert got[1] == want_vector[1] == want_rows[1]
    return got


@pytest.mark.hypothesis
@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_column_encoder_is_the_encoder_on_generated_tables(c, seed):
    r = random.Random(seed)
    table, opts = gen_case(r)
    _agree(c, table, opts)


@pytest.mark.hypothesis
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_column_encoder_is_the_encoder_on_generated_pandas_frames(c, seed):
    r = random.Random(seed)
    table, opts = gen_case(r)
    _agree(c, _as_pandas(r, table), opts)


def test_the_c_loop_is_used_for_what_it_supports(c, monkeypatch):
    """The supported shapes do go through encode_columns (simplejson#72's lesson)."""
    pd = pytest.importorskip("pandas")
    calls = []
    real = c.encode_columns

    class Spy:
        Encoder = c.Encoder

        @staticmethod
        def encode_columns(*args):
            result = real(*args)
            calls.append(result[0])
            return result

    n = 50
    df = pd.DataFrame({
        "key": pd.Series(["a.b", "c.d"] * (n // 2), dtype=object),
        "value": [i / 7 for i in range(n)],
        "host": pd.Series(["h %d" % i for i in range(n)], dtype=object),
        "cat": pd.Categorical(["x", "y"] * (n // 2)),
        "num": list(range(n)),
        "ts": pd.to_datetime([1_700_000_000_000 + i for i in range(n)], unit="ms", utc=True),
    })
    shapes = [
        dict(key="key", value="value", dimensions=["host", "cat", "num"], timestamp="ts"),
        dict(key="k.k", value=1.5, kind="count"),
        dict(value={"m.v": "value", "m.n": "num"}, dimensions=["host"]),
    ]
    for opts in shapes:
        calls.clear()
        assert _run(df, opts, _codec=Spy) == _run(df, opts, _codec=PY, _rows=True)
        assert calls == [0], opts
        calls.clear()
        table = pa.Table.from_pandas(df, preserve_index=False)
        assert _run(table, opts, _codec=Spy)[0][0] == "ok"
        assert calls == [0], opts
    summ = pa.table({"k": ["s.a"], "min": [1.0], "max": [2.0], "sum": [3.0], "count": [2]})
    calls.clear()
    assert bytes(A.encode_table(summ, key="k", kind="summary", _codec=Spy)) == \
        b"s.a gauge,min=1,max=2,sum=3,count=2\n"
    assert calls == [0]


def test_object_columns_with_other_objects_are_converted_by_pyarrow(c):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"v": [1.0, 2.0, 3.0],
                       "h": pd.Series(["a", None, math.nan], dtype=object),
                       "n": pd.Series([1, 2, None], dtype=object)})
    assert _agree(c, df, dict(key="a.b", value="v", dimensions=["h", "n"]))[0][1] == \
        b"a.b,h=a,n=1 gauge,1\na.b,n=2 gauge,2\na.b gauge,3\n"
    mixed = df.assign(h=pd.Series(["a", 5, "c"], dtype=object))
    assert _agree(c, mixed, dict(key="a.b", value="v", dimensions=["h"]))[0][0] == "other"
    only_null = df.assign(h=pd.Series([None, None, None], dtype=object))   # left out
    assert _agree(c, only_null, dict(key="a.b", value="v", dimensions=["h"]))[0][1] == \
        b"a.b gauge,1\na.b gauge,2\na.b gauge,3\n"
    unused = df.assign(junk=pd.Series([object(), 1, "x"], dtype=object))
    assert _agree(c, unused, dict(key="a.b", value="v"))[0][0] == "ok"



def test_object_columns_of_a_view_are_read(c):
    """The object columns of a frame that is a strided view (``df.iloc[::-1]``,
    ``df.iloc[::2]``): the C loop reads a contiguous ndarray, and used to
    refuse these with ValueError: ndarray is not C-contiguous."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"key": pd.Series(["a.b", "c.d", "e.f"], dtype=object),
                       "value": [1.0, 2.0, 3.0],
                       "host": pd.Series(["x", "y", "z"], dtype=object)})
    opts = dict(key="key", value="value", dimensions=["host"])
    assert _agree(c, df.iloc[::-1], opts)[0][1] == \
        b"e.f,host=z gauge,3\nc.d,host=y gauge,2\na.b,host=x gauge,1\n"
    assert _agree(c, df.iloc[::2], opts)[0][1] == b"a.b,host=x gauge,1\ne.f,host=z gauge,3\n"


def test_a_malformed_string_array_is_refused_not_read_past(c):
    # offsets past the data, an index past the dictionary: the C loop stops at
    # that row (never reads out of bounds)
    raw = bytearray(struct.pack("<3i", 0, 1, 2))
    bad = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(raw), pa.py_buffer(b"ab")])
    raw[8:12] = struct.pack("<i", 1000)   # after pyarrow's validation (which tables repeat)
    v = pa.array([1.0, 2.0])
    status, _, lines, _, row, _ = c.encode_columns(
        [(2, [(bad, None)], [v])], [(b"a.b", 0, None)], [("h", 0)], -1, 0, 1, None)
    assert (status, row, lines) == (1, 1, 1)
    idx = pa.array([0, 7], pa.int32())      # a dictionary index out of range
    good = pa.array(["x"])
    assert c.encode_columns([(2, [(good, idx)], [v])], [(b"a.b", 0, None)], [("h", 0)], -1,
                            0, 1, None)[::4] == (1, 1)
    with pytest.raises(ValueError):         # buffers shorter than the stated length
        c.encode_columns([(3, [(good, None)], [v])], [(b"a.b", 0, None)], [("h", 0)], -1,
                         0, 1, None)


def _not_utf8(values):
    """A string array built from buffers, so pyarrow does not check its UTF-8."""
    data = b"".join(values)
    offsets = [0]
    for v in values:
        offsets.append(offsets[-1] + len(v))
    return pa.Array.from_buffers(pa.string(), len(values), [
        None, pa.py_buffer(struct.pack("<%di" % len(offsets), *offsets)), pa.py_buffer(data)])


@pytest.mark.parametrize("where", ["dimension", "key", "dictionary", "map"])
def test_invalid_utf8_is_an_error_for_its_row_in_every_path(c, where):
    """Not valid UTF-8 in a text column: EncodeError invalid_utf8 naming the first
    such row that is written (a row skipped for a null value is not read), the
    same in the C loop, the vector path and the row path (with options)."""
    texts = [b"ok", b"\xff\xfe", b"x\xc3", b"fine"]
    col = _not_utf8(texts)
    values = pa.array([1.0, None, 2.0, 3.0])   # row 1 is skipped: row 2 is the error
    if where == "dimension":
        t = pa.table({"v": values, "h": col})
        opts = dict(key="a.b", value="v", dimensions=["h"])
    elif where == "key":
        col = _not_utf8([b"a.b", b"a.\xff", b"a.\xc3", b"a.c"])
        t = pa.table({"v": values, "k": col})
        opts = dict(key="k", value="v")
    elif where == "dictionary":
        d = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), col)
        t = pa.table({"v": values, "h": d})
        opts = dict(key="a.b", value="v", dimensions=["h"])
    else:
        offsets = pa.array([0, 1, 2, 3, 4], pa.int32())
        m = pa.MapArray.from_arrays(offsets, pa.array(["h"] * 4), col)
        t = pa.table({"v": values, "m": m})
        opts = dict(key="a.b", value="v", dimensions="m")
    outcomes = set()
    for codec, extra in ((c, {}), (PY, {}), (PY, {"_rows": True}), (c, {"prefix": "p"})):
        with pytest.raises(EncodeError) as info:
            A.encode_table(t, **opts, **extra, _codec=codec)
        e = info.value
        outcomes.add((e.code, e.record))
    want_row = 1 if where == "map" else 2   # a map column is read whole
    assert outcomes == {(ErrorCode.INVALID_UTF8, want_row)}
    # without the bad rows, every path writes the same lines
    good = t.slice(3)
    assert bytes(A.encode_table(good, **opts, _codec=c)) == \
        bytes(A.encode_table(good, **opts, _codec=PY, _rows=True))


@pytest.mark.parametrize("field", ["timestamp", "count"])
def test_uint64_past_int64_is_the_rows_error_in_every_path(c, field):
    """A uint64 timestamp or summary count above 2**63-1: EncodeError for its
    row, the same by every route (the C loop hands such a column to the
    vector path, which used to let Arrow raise its own ArrowInvalid) and by
    the row path."""
    big = pa.array([1, 2, 2**64 - 1, 2**63, 3], pa.uint64())
    ok = pa.array([1_700_000_000_000, 2, 5, 7, 9], pa.uint64())
    n = big if field == "count" else pa.array([2] * 5, pa.uint64())
    t = pa.table({"mn": [1.0] * 5, "mx": [1.0] * 5, "sm": [float(x) for x in n.to_pylist()],
                  "n": n,
                  "ts": big if field == "timestamp" else ok})
    opts = dict(key="a.b", kind="summary", min="mn", max="mx", sum="sm", count="n",
                timestamp="ts")
    outcomes = set()
    for codec, extra in ((c, {}), (PY, {}), (PY, {"_rows": True})):
        with pytest.raises(EncodeError) as info, warnings.catch_warnings():
            warnings.simplefilter("ignore", TimestampWarning)
            A.encode_table(t, **opts, **extra, _codec=codec)
        outcomes.add((info.value.field, info.value.record, str(info.value)))
    assert len(outcomes) == 1, outcomes
    assert outcomes.pop()[:2] == (field, 2)
    # the rows before are written alike by every path
    good = t.slice(0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TimestampWarning)
        assert bytes(A.encode_table(good, **opts, _codec=c)) == \
            bytes(A.encode_table(good, **opts, _codec=PY)) == \
            bytes(A.encode_table(good, **opts, _codec=PY, _rows=True))


def test_large_frames_grow_the_body(c):
    n = 5_000
    r = random.Random(5)
    t = pa.table({"k": ["a.b%d" % (i % 30) for i in range(n)],
                  "v": [r.uniform(-1e9, 1e9) for _ in range(n)],
                  "h": ["h" * r.randrange(1, 200) for _ in range(n)],
                  "ts": [1_700_000_000_000 + i for i in range(n)]})
    opts = dict(key="k", value="v", dimensions=["h"], timestamp="ts")
    got = A.encode_table(t, **opts, _codec=c)
    assert bytes(got) == bytes(A.encode_table(t, **opts, _codec=PY, _rows=True))
    assert got.lines == n and got.rows == n


def test_naive_and_second_timestamps(c):
    t = pa.table({"v": [1.0, None], "ts": pa.array([5, 6], pa.int64())})
    got = _agree(c, t, dict(key="a.b", value="v", timestamp="ts"))
    assert got[1] is True      # the written line's stamp looks like seconds
    t = pa.table({"v": [1.0, None], "ts": pa.array([1_700_000_000_000, 6], pa.int64())})
    assert _agree(c, t, dict(key="a.b", value="v", timestamp="ts"))[1] is False
    naive = pa.table({"v": [1.0], "ts": pa.array([datetime.datetime(2024, 1, 1)],
                                                 pa.timestamp("ms"))})
    assert _agree(c, naive, dict(key="a.b", value="v", timestamp="ts"))[0][0] == "error"
