"""dtproto.arrow: decode_table / iter_batches / encode_table over both implementations.

* decode_table equals decode row by row, with the input line numbers;
* every line is accounted for (rows + metadata + skipped + blank == lines);
* iter_batches gives the same rows in bounded memory;
* the Cython ``decode_columns`` (when it exists) equals the reference contract;
* encode_table writes the Encoder's bytes (and raises its errors) for the
  same rows: property-tested, nulls, categoricals, integers, wide frames,
  summaries, datetime timestamps;
* a pandas DataFrame round trip gives back exactly its rows.
"""

from __future__ import annotations

import datetime
import math
import subprocess
import sys
import tracemalloc

import pytest
from conftest import NEUTRAL_DIR  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")
pc = pytest.importorskip("pyarrow.compute")

from dtproto import DecodeError, EncodeError, Metadata, Metric, _corpus  # noqa: E402
from dtproto import arrow as A  # noqa: E402

UTC = datetime.timezone.utc


def epoch_ms(ts):
    if ts is None:
        return None
    return (ts - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(milliseconds=1)


def row_tuple(row):
    return (row["key"], tuple(row["dimensions"]), row["kind"], row["value"], row["min"],
            row["max"], row["sum"], row["count"], epoch_ms(row["timestamp"]))


def body_with_everything() -> bytes:
    """Unique series, quoted values, all kinds, ~10% without timestamp, one metadata
    line in the middle, a blank line, CRLF."""
    lines = _corpus.make_corpus(3_000, cardinality=_corpus.UNIQUE).splitlines(keepends=True)
    lines += _corpus.make_corpus(2_000, escape_heavy=True).splitlines(keepends=True)
    mid = len(lines) // 2
    lines.insert(mid, b"#app.meta.key gauge dt.meta.unit=Byte,dt.meta.displayName=\"A b\"\n")
    lines.insert(10, b"\n")
    lines.insert(20, b"  \t\r\n")
    lines[30] = lines[30].rstrip(b"\n") + b"\r\n"
    return b"".join(lines)


# --------------------------------------------------------------------------- decoding


def test_decode_table_equals_decode_row_by_row(impl):
    buf = body_with_everything()
    table = A.decode_table(buf, _codec=impl)
    assert table.schema.remove_metadata() == A.SCHEMA
    records = impl.decode(buf)
    metrics = [r for r in records if type(r) is Metric]
    rows = table.to_pylist()
    assert [row_tuple(r) for r in rows] == [tuple(m) for m in metrics]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"gauge", "count", "summary"}
    assert any(r["timestamp"] is None for r in rows)
    # line numbers: the non-blank, non-metadata lines of the input
    pieces = buf.split(b"\n")
    expected = [i for i, p in enumerate(pieces, 1)
                if p.strip(b" \t\r") and not p.startswith(b"#")]
    assert table.column("line").to_pylist() == expected
    meta = A.metadata_of(table)
    assert [m for _, m in meta] == [r for r in records if type(r) is Metadata]
    assert pieces[meta[0][0] - 1].startswith(b"#app.meta.key")


def test_decode_tables_gives_the_metadata_as_a_table(impl):
    buf = b"a.b 1\n#a.b gauge dt.meta.unit=Byte\n\nc.d,x=y count,delta=2 1700000000000\n"
    out = A.decode_tables(buf, _codec=impl)
    assert out.lines == 4 and out.skipped == []
    assert out.data.column("line").to_pylist() == [1, 4]
    assert out.metadata.schema == A.METADATA_SCHEMA
    assert out.metadata.to_pylist() == [
        {"line": 2, "key": "a.b", "metric_type": "gauge", "properties": [("dt.meta.unit", "Byte")]}]


def test_schema_types():
    assert A.SCHEMA.field("key").type == pa.dictionary(pa.int32(), pa.string())
    assert A.SCHEMA.field("kind").type == pa.dictionary(pa.int8(), pa.string())
    assert A.SCHEMA.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert A.SCHEMA.field("dimensions").type == pa.map_(pa.string(), pa.string())
    assert A.SCHEMA.field("count").type == pa.int64()
    for name in ("value", "min", "max", "sum"):
        assert A.SCHEMA.field(name).type == pa.float64()


def test_nulls_follow_the_kind(impl):
    buf = b"a.b 1.5\nc.d count,delta=2\ne.f gauge,min=1,max=3,sum=4,count=2 1700000000000\n"
    rows = A.decode_table(buf, _codec=impl).to_pylist()
    assert [(r["value"], r["min"], r["count"]) for r in rows] == [
        (1.5, None, None), (2.0, None, None), (None, 1.0, 2)]
    assert rows[2]["timestamp"] == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_empty_and_blank_inputs(impl):
    for buf in (b"", b"\n\n", b"#a.b gauge dt.meta.unit=Byte\n"):
        t = A.decode_table(buf, _codec=impl)
        assert t.num_rows == 0 and t.schema.remove_metadata() == A.SCHEMA


def test_raise_names_the_line(impl):
    with pytest.raises(DecodeError) as e:
        A.decode_table(b"a.b 1\n\nbad\n", _codec=impl)
    assert e.value.line == 3
    reader = A.iter_batches([b"a.b 1\n" * 10, b"bad\n"], batch_lines=4, _codec=impl)
    with pytest.raises(DecodeError) as e:
        list(reader)
    assert e.value.line == 11


def test_skip_accounts_for_every_line(impl):
    buf = _corpus.make_corpus(4_000, invalid_ratio=0.1) + b"\n#x.y count dt.meta.unit=Byte\n"
    nlines = buf.count(b"\n")
    out = A.decode_tables(buf, errors="skip", _codec=impl)
    report = impl.validate(buf, max_errors=None)
    assert [e.line for e in out.skipped] == [e.line for e in report.errors]
    assert [e.code for e in out.skipped] == [e.code for e in report.errors]
    blank = sum(1 for p in buf.split(b"\n")[:nlines] if not p.strip(b" \t\r"))
    assert out.data.num_rows + out.metadata.num_rows + len(out.skipped) + blank == out.lines
    assert out.lines == nlines
    assert [row_tuple(r) for r in out.data.to_pylist()] == [
        tuple(r) for r in impl.iter_decode(buf, errors="skip") if type(r) is Metric]
    # the rows' line numbers are those of the valid data lines
    bad = {e.line for e in out.skipped}
    assert not bad & set(out.data.column("line").to_pylist())
    t = A.decode_table(buf, errors="skip", _codec=impl)
    assert A.metadata_of(t, "skipped") == out.skipped


def test_iter_batches_equals_decode_table(impl, tmp_path):
    buf = body_with_everything()
    path = tmp_path / "m.txt"
    path.write_bytes(buf)
    whole = A.decode_table(buf, _codec=impl)
    reader = A.iter_batches(path, batch_lines=777, _codec=impl)
    batches = list(reader)
    assert all(b.schema == A.SCHEMA for b in batches)
    assert all(b.num_rows <= 777 for b in batches)
    got = pa.Table.from_batches(batches)
    assert got.to_pylist() == whole.to_pylist()
    assert reader.lines == buf.count(b"\n")
    assert [m for m in reader.metadata] == A.metadata_of(whole)
    # chunks that cut lines anywhere
    chunks = [buf[i:i + 997] for i in range(0, len(buf), 997)]
    got = pa.Table.from_batches(list(A.iter_batches(chunks, batch_lines=500, _codec=impl)))
    assert got.to_pylist() == whole.to_pylist()


@pytest.mark.parametrize("batch_lines", [1, 2, 3, 64])
def test_iter_batches_cuts_at_any_batch_size(impl, batch_lines):
    """Small batches cut every slice many times (by position since a red-team
    pass found each cut recounting and copying the rest: quadratic)."""
    buf = (b"a.b 1\r\n\n" + b"c.d,k=v 2 1700000000000\n" * 40 + b"bad\n \n"
           + b"#a.b gauge dt.meta.unit=Byte\n" + b"e.f 3")   # no LF at the end
    nlines = buf.count(b"\n") + 1
    whole = A.decode_table(buf, errors="skip", _codec=impl)
    for source in (buf, [buf[i:i + 13] for i in range(0, len(buf), 13)]):
        reader = A.iter_batches(source, batch_lines=batch_lines, errors="skip", _codec=impl)
        batches = list(reader)
        assert all(b.num_rows <= batch_lines for b in batches)
        assert pa.Table.from_batches(batches, A.SCHEMA).to_pylist() == whole.to_pylist()
        assert reader.lines == nlines == 46
        assert reader.rows + len(reader.metadata) + reader.skipped_total + 2 == nlines
        assert [e.line for e in reader.skipped] == [43]


def test_iter_batches_skip_lists_and_counts(impl):
    buf = b"a.b 1\nbad\n" * 50 + b"x" * 300_000 + b"\nc.d 2\n"
    reader = A.iter_batches(buf, batch_lines=7, errors="skip", max_listed=5, _codec=impl)
    rows = sum(b.num_rows for b in reader)
    assert rows == 51
    assert reader.skipped_total == 51 and len(reader.skipped) == 5
    assert reader.skipped[0].line == 2
    assert rows + reader.skipped_total == reader.lines == 102


def test_iter_batches_bounded_memory(impl):
    chunk = _corpus.make_corpus(5_000)

    def source():
        for _ in range(40):          # 200,000 lines, about 27 MB
            yield chunk

    reader = A.iter_batches(source(), batch_lines=5_000, _codec=impl)
    # Python's allocations, and pyarrow's pool, where the Cython core puts
    # the columns: both hold a few batches' worth, not the input
    arrow_base = arrow_peak = pa.total_allocated_bytes()
    tracemalloc.start()
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rows == 200_000
    assert peak < 25_000_000, peak
    assert arrow_peak - arrow_base < 25_000_000, arrow_peak - arrow_base


def strings(table):
    return table.to_pylist() if hasattr(table, "to_pylist") else list(table)


def test_reference_columns_follow_the_contract(impl):
    buf = b"a.b,x=1,y=2 1 5\n\nbad\n#a.b gauge dt.meta.unit=Byte\ns.x gauge,min=1,max=2,sum=3,count=2\n"
    cols = A._decode_columns_py(buf, 10, None, True, _codec=impl)
    assert (cols["rows"], cols["lines"]) == (2, 5)
    assert list(cols["line"]) == [10, 14]
    assert [strings(cols["keys"])[i] for i in cols["key_index"]] == ["a.b", "s.x"]
    assert list(cols["kind"]) == [0, 2]
    assert list(cols["value"]) == [1.0, 0.0] and list(cols["count"]) == [0, 2]
    assert list(cols["timestamp"]) == [5, -1]
    assert list(cols["dim_offsets"]) == [0, 2, 2]
    assert strings(cols["dim_keys"]) == ["x", "y"]
    assert strings(cols["dim_values"]) == ["1", "2"]
    assert [n for n, _ in cols["metadata"]] == [13]
    assert [e.line for e in cols["skipped"]] == [12]
    assert cols["rows"] + len(cols["metadata"]) + len(cols["skipped"]) + 1 == cols["lines"]


def test_decode_columns_contract_matches_the_cython_core(impl):
    fn = getattr(impl, "decode_columns", None)
    if fn is None:
        pytest.skip("%s has no decode_columns (the reference contract is used)" % impl.__name__)
    buf = body_with_everything() + _corpus.make_corpus(500, invalid_ratio=0.2)
    for skip in (True,):
        want = A._decode_columns_py(buf, 7, None, skip, _codec=impl)
        got = fn(buf, 7, None, skip)
        assert set(got) == set(want)
        _assert_same_columns(got, want)


def _assert_same_columns(got, want):
    """Two decode_columns results describe the same rows, column by column."""
    for name in ("rows", "lines", "metadata", "skipped"):
        assert got[name] == want[name], name
    for name in ("line", "kind", "value", "min", "max", "sum", "count", "timestamp",
                 "dim_offsets"):
        assert list(memoryview(got[name])) == list(memoryview(want[name])), name
    gs, ws = strings(got["keys"]), strings(want["keys"])
    assert ([gs[i] for i in memoryview(got["key_index"])]
            == [ws[i] for i in memoryview(want["key_index"])])
    for name in ("dim_keys", "dim_values"):
        assert strings(got[name]) == strings(want[name]), name


# --------------------------------------------------------------------------- encoding


def encoder_rows(impl, rows, kind="gauge", **options):
    """What Encoder writes for rows of (key, value, dims dict, ts), nulls skipped."""
    enc = impl.Encoder(**options)
    for key, value, dims, ts in rows:
        if value is None:
            continue
        d = {k: v for k, v in dims.items() if v is not None}
        getattr(enc, kind)(key, value, d, ts)
    return enc.getvalue()


def test_pandas_round_trip_gives_back_the_rows(impl):
    pd = pytest.importorskip("pandas")
    n = 5_000
    df = pd.DataFrame({
        "key": ["app.cpu.usage" if i % 3 else "app.mem.used" for i in range(n)],
        "value": [i * 0.25 - 7.5 for i in range(n)],
        "host": ["host-%d" % i for i in range(n)],
        "region": [["eu west", 'us,"east"', "ap=1", "ä\\b"][i % 4] for i in range(n)],
        "ts": [1_700_000_000_000 + i for i in range(n)],
    })
    body = A.encode_table(df, key="key", value="value", dimensions=["host", "region"],
                          timestamp="ts", _codec=impl)
    assert body.lines == n and body.rows == n and body.skipped_null == 0
    back = A.decode_table(bytes(body), _codec=impl).to_pandas()
    assert list(back["key"].astype(str)) == list(df["key"])
    assert list(back["value"]) == list(df["value"])
    assert [dict(d) for d in back["dimensions"]] == [
        {"host": h, "region": r} for h, r in zip(df["host"], df["region"])]
    assert [list(map(tuple, d)) for d in back["dimensions"]][0] == [("host", "host-0"),
                                                                   ("region", "eu west")]
    assert [epoch_ms(t.to_pydatetime()) for t in back["timestamp"]] == list(df["ts"])
    assert bytes(body) == encoder_rows(impl, [
        (k, v, {"host": h, "region": r}, t)
        for k, v, h, r, t in zip(df["key"], df["value"], df["host"], df["region"], df["ts"])])


def test_polars_frame(impl):
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"key": ["a.b", "c.d"], "value": [1.0, None], "host": ["x", None],
                       "ts": [1_700_000_000_000, None]})
    body = A.encode_table(df, key="key", value="value", dimensions=["host"], timestamp="ts",
                          _codec=impl)
    assert bytes(body) == b"a.b,host=x gauge,1 1700000000000\n"
    assert body.skipped_null == 1 and body.lines == 1


def test_categoricals_integers_nulls_and_constants(impl):
    t = pa.table({
        "v": pa.array([1, 2, None, 4], pa.int64()),
        "cat": pa.array(["a b", None, "a b", "c"]).dictionary_encode(),
        "n": pa.array([7, None, 9, -1], pa.int32()),
    })
    body = A.encode_table(t, key="my.metric", value="v", dimensions={"cat": "cat", "num": "n"},
                          kind="count", _codec=impl)
    want = encoder_rows(impl, [("my.metric", 1, {"cat": "a b", "num": "7"}, None),
                               ("my.metric", 2, {}, None),
                               ("my.metric", None, {}, None),
                               ("my.metric", 4, {"cat": "c", "num": "-1"}, None)], kind="count")
    assert bytes(body) == want
    assert body.skipped_null == 1
    assert A.encode_table(t, key="k.k", value=2.5, _codec=impl) == b"k.k gauge,2.5\n" * 4




@pytest.mark.parametrize("distinct", [2, 100_002])   # (over 100,000: checked by Arrow kernels)
def test_a_null_in_a_key_categoricals_dictionary_is_a_null_key(impl, distinct):
    """A categorical key column whose dictionary holds a null: the rows pointing
    at it have a null key, refused for the first written one as the Encoder
    refuses None (the vector path raised a TypeError checking it, or passed
    it on a null mask)."""
    words = pa.array(["a.b", None] + ["k.k%d" % i for i in range(distinct - 2)])
    keys = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1, 0], pa.int32()), words)
    t = pa.table({"k": keys, "v": [1.0, None, 2.0, 3.0]})   # row 1 is skipped
    for extra in ({}, {"_rows": True}):
        with pytest.raises(EncodeError, match="metric key must be a str") as e:
            A.encode_table(t, key="k", value="v", _codec=impl, **extra)
        assert e.value.record == 2
        body = A.encode_table(t.filter(pa.array([True, True, False, True])), key="k",
                              value="v", _codec=impl, **extra)
        assert (bytes(body), body.lines, body.skipped_null) == \
            (b"a.b gauge,1\na.b gauge,3\n", 2, 1)


def test_a_dimension_column_of_nulls_only_is_left_out(impl):
    """A dimension column that is all null (a pandas object column of None, a
    Polars or Arrow null column) is left out, as a null is anywhere else:
    Arrow gives it the null type, which used to be refused as not a string."""
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    cols = {"key": ["a.b", "c.d"], "value": [1.0, 2.0], "host": ["x", "y"]}
    frames = [
        pd.DataFrame(cols).assign(none=pd.Series([None, None], dtype=object)),
        pl.DataFrame(cols).with_columns(pl.lit(None).alias("none")),
        pa.table(cols).append_column("none", pa.nulls(2)),
        pa.table(cols).append_column("none", pa.nulls(2).dictionary_encode()),
    ]
    want = b"a.b,host=x gauge,1\nc.d,host=y gauge,2\n"
    for frame in frames:
        for extra in ({}, {"_rows": True}):
            body = A.encode_table(frame, key="key", value="value",
                                  dimensions=["none", "host"], _codec=impl, **extra)
            assert bytes(body) == want, (type(frame), extra)
            assert body.lines == 2


def test_wide_frame_one_line_per_metric_row_major(impl):
    t = pa.table({"cpu": [1.0, None, 3.0], "mem": [10.0, 20.0, None], "host": ["a", "b", "c"]})
    body = A.encode_table(t, value={"host.cpu": "cpu", "host.mem": "mem"}, dimensions=["host"],
                          _codec=impl)
    assert bytes(body) == (b"host.cpu,host=a gauge,1\nhost.mem,host=a gauge,10\n"
                           b"host.mem,host=b gauge,20\nhost.cpu,host=c gauge,3\n")
    assert body.lines == 4 and body.skipped_null == 2
    assert A.encode_table(t.select(["cpu", "mem"]).rename_columns(["a.cpu", "a.mem"]),
                          value=["a.cpu", "a.mem"], _codec=impl).count(b"\n") == 4


def test_summaries_and_kind_column(impl):
    t = pa.table({"key": ["s.x", "s.y"], "min": [1.0, 0.0], "max": [3.0, 0.0],
                  "sum": [4.0, 0.0], "count": [2, 0]})
    body = A.encode_table(t, key="key", kind="summary", _codec=impl)
    enc = impl.Encoder()
    enc.summary("s.x", 1.0, 3.0, 4.0, 2)
    enc.summary("s.y", 0.0, 0.0, 0.0, 0)
    assert bytes(body) == enc.getvalue()
    bad = t.set_column(3, "sum", pa.array([100.0, 0.0]))
    with pytest.raises(EncodeError) as e:
        A.encode_table(bad, key="key", kind="summary", _codec=impl)
    assert e.value.record == 0



@pytest.mark.parametrize("summary_columns", [False, True])
def test_a_null_kind_is_its_rows_error_whatever_else_is_skipped(impl, summary_columns):
    """A null in a kind column is refused for its row ("kind must be one of
    ..., not None"), the first bad row named, by every path.  It used to
    vanish when another row was skipped for a null value (its line not
    written, yet counted in ``lines``), and a later bad row was named
    instead: comparing a null kind gave null masks, which hid the row."""
    cols = {"key": ["a.b", "a.b", "a.b", "1bad"], "value": [1.0, 2.0, None, 4.0],
            "kind": ["gauge", None, "gauge", "count"]}
    if summary_columns:   # the summary checks see the null kind too
        cols.update({"min": [None, 1.0, 1.0, None], "max": [None, 1.0, 1.0, None],
                     "sum": [None, 1.0, 1.0, None], "count": pa.array([None, 1, 1, None])})
    t = pa.table(cols)
    for table in (t, t.slice(0, 3)):   # with a later bad row, and without
        for extra in ({}, {"_rows": True}):
            with pytest.raises(EncodeError, match="kind must be one of .*not None") as e:
                A.encode_table(table, key="key", value="value", kind="kind", _codec=impl,
                               **extra)
            assert e.value.record == 1
    # a null kind whose value is null too is skipped, as the row path skips it
    quiet = pa.table({"key": ["a.b"] * 2, "value": [1.0, None], "kind": ["gauge", None]})
    for extra in ({}, {"_rows": True}):
        got = A.encode_table(quiet, key="key", value="value", kind="kind", _codec=impl,
                             **extra)
        assert (bytes(got), got.lines, got.skipped_null) == (b"a.b gauge,1\n", 1, 1)


def test_decoded_table_encodes_back_canonically(impl):
    buf = body_with_everything()
    table = A.decode_table(buf, _codec=impl)
    want = impl.encode([r for r in impl.decode(buf) if type(r) is Metric])
    got = b"".join(A.table_chunks(table, rows=1_000, _codec=impl))
    assert got == want


def test_datetime_timestamps(impl):
    pd = pytest.importorskip("pandas")
    ts = pd.to_datetime([1_700_000_000_123, 1_700_000_000_456], unit="ms", utc=True)
    df = pd.DataFrame({"v": [1.0, 2.0], "ts": ts})
    body = A.encode_table(df, key="a.b", value="v", timestamp="ts", _codec=impl)
    assert bytes(body) == b"a.b gauge,1 1700000000123\na.b gauge,2 1700000000456\n"
    naive = pd.DataFrame({"v": [1.0], "ts": pd.to_datetime([1_700_000_000_123], unit="ms")})
    with pytest.raises(EncodeError, match="naive"):
        A.encode_table(naive, key="a.b", value="v", timestamp="ts", _codec=impl)



def test_seconds_timestamps_past_int64_milliseconds(impl):
    """A ``timestamp[s, tz]`` whose milliseconds do not fit int64: Arrow's
    checked multiply raised its own ArrowInvalid for the whole table.  Now the
    row is skipped when its value is null, else its EncodeError (the value
    out of range, named exactly) by every path."""
    big = pa.array([1_700_000_000, 2**62, -(2**62), 1_700_000_001], pa.int64())
    t = pa.table({"v": [1.0, None, 3.0, 4.0], "ts": big.cast(pa.timestamp("s", tz="UTC"))})
    opts = dict(key="a.b", value="v", timestamp="ts")
    skipped = t.filter(pa.array([True, True, False, True]))
    for extra in ({}, {"_rows": True}):
        body = A.encode_table(skipped, **opts, _codec=impl, **extra)
        assert bytes(body) == b"a.b gauge,1 1700000000000\na.b gauge,4 1700000001000\n"
        assert (body.lines, body.skipped_null) == (2, 1)
        for table, row, ms in ((t, 2, -(2**62) * 1000),
                               (t.set_column(0, "v", pa.array([1.0] * 4)), 1, 2**62 * 1000)):
            with pytest.raises(EncodeError) as e:
                A.encode_table(table, **opts, _codec=impl, **extra)
            assert (e.value.field, e.value.record) == ("timestamp", row)
            assert str(ms) in str(e.value)


@pytest.mark.parametrize("column,value,code", [
    ("key", "dt.reserved", "reserved_prefix"),
    ("key", "1bad", "invalid_metric_key"),
    ("host", "a\x01b", "control_character"),
    ("host", "x" * 256, "dimension_value_too_long"),
    ("value", math.inf, "non_finite_number"),
])
def test_errors_are_the_encoders_with_the_row(impl, column, value, code):
    cols = {"key": ["a.b"] * 5, "value": [1.0] * 5, "host": ["h"] * 5}
    cols[column] = list(cols[column])
    cols[column][3] = value
    t = pa.table(cols)
    with pytest.raises(EncodeError) as e:
        A.encode_table(t, key="key", value="value", dimensions=["host"], _codec=impl)
    assert e.value.record == 3
    assert e.value.code.value == code
    row = t.slice(3, 1).to_pylist()[0]
    with pytest.raises(EncodeError) as ref:
        impl.Encoder().gauge(row["key"], row["value"], {"host": row["host"]})
    ref.value.record = 3
    assert str(ref.value) == str(e.value)


def test_options_as_the_encoder(impl):
    t = pa.table({"v": [1.0, 2.0], "host": ["a", "b"], "Bad Key": ["x", "y"]})
    opts = dict(prefix="my", default_dimensions={"env": "p"}, static_dimensions={"host": "s"},
                normalize=True)
    body = A.encode_table(t, key="cpu", value="v", dimensions=["host", "Bad Key"],
                          _codec=impl, **opts)
    want = encoder_rows(impl, [("cpu", 1.0, {"host": "a", "Bad Key": "x"}, None),
                               ("cpu", 2.0, {"host": "b", "Bad Key": "y"}, None)], **opts)
    assert bytes(body) == want
    assert body.normalizations.total > 0


class _FalsyText(str):
    def __bool__(self):
        return False


def test_a_prefix_is_read_as_the_encoder_reads_it(impl):
    """The options rule is the Encoder's (``_has_options``): a str subclass is
    its text whatever its ``__bool__`` says, a falsy non-str is refused."""
    t = pa.table({"v": [1.0], "host": ["a"]})
    body = A.encode_table(t, key="cpu", value="v", dimensions=["host"], _codec=impl,
                          prefix=_FalsyText("my"))
    assert bytes(body) == b"my.cpu,host=a gauge,1\n"
    for prefix in (0, b""):
        with pytest.raises(TypeError, match="prefix must be a str"):
            A.encode_table(t, key="cpu", value="v", dimensions=["host"], _codec=impl,
                           prefix=prefix)


names = st.sampled_from(["a.b", "c.d.e", "x_y", "dt.bad", "1x", "ab"])
dim_values = st.one_of(st.none(), st.text(max_size=8),
                       st.sampled_from(["a b", 'q"q', "x,y=z", "\\", "ü", "x" * 256]))
numbers = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-2**60, 2**60),
                    st.sampled_from([1e16, 1e15, 123456789012345.6, 1e-5, 2.5e-7, -0.0, 5e-324]))
stamps = st.one_of(st.none(), st.integers(0, 2**62), st.just(1_700_000_000_000))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(names, numbers, dim_values, dim_values, stamps), max_size=12),
       kind=st.sampled_from(["gauge", "count"]))
def test_encode_table_is_the_encoder_for_the_same_rows(impl, rows, kind):
    keys = [r[0] for r in rows]
    vals = [r[1] for r in rows]
    is_int = all(v is None or isinstance(v, int) for v in vals) and any(
        isinstance(v, int) for v in vals)
    vals = [v if v is None or is_int else float(v) for v in vals]
    t = pa.table({
        "key": pa.array(keys, pa.string()),
        "value": pa.array(vals, pa.int64() if is_int else pa.float64()),
        "h": pa.array([r[2] for r in rows], pa.string()),
        "r": pa.array([r[3] for r in rows], pa.string()).dictionary_encode(),
        "ts": pa.array([r[4] for r in rows], pa.int64()),
    })
    enc = impl.Encoder()
    want_error = None
    for i, (k, v, h, r, ts) in enumerate(zip(keys, vals, [r[2] for r in rows],
                                             [r[3] for r in rows], [r[4] for r in rows])):
        if v is None:
            continue
        try:
            getattr(enc, kind)(k, v, {d: x for d, x in (("h", h), ("r", r)) if x is not None},
                               ts)
        except EncodeError as e:
            e.record = i
            want_error = (i, str(e))
            break
    if want_error is not None:
        with pytest.raises(EncodeError) as e:
            A.encode_table(t, key="key", value="value", dimensions=["h", "r"], timestamp="ts",
                           kind=kind, _codec=impl)
        assert (e.value.record, str(e.value)) == want_error
    else:
        got = A.encode_table(t, key="key", value="value", dimensions=["h", "r"],
                             timestamp="ts", kind=kind, _codec=impl)
        assert bytes(got) == enc.getvalue()
        assert got.lines == enc.lines


def test_table_chunks_for_a_sender(impl):
    t = pa.table({"v": [None if i % 7 == 3 else float(i) for i in range(2_500)]})
    chunks = list(A.table_chunks(t, rows=1_000, key="a.b", value="v", _codec=impl))
    assert len(chunks) == 3
    nulls = sum(1 for i in range(2_500) if i % 7 == 3)
    # each chunk says what its slice left out: every row is a line or a counted null
    assert [c.rows for c in chunks] == [1_000, 1_000, 500]
    assert sum(c.skipped_null for c in chunks) == nulls
    assert b"".join(chunks).count(b"\n") == sum(c.lines for c in chunks) == 2_500 - nulls
    assert A.is_table(t) and not A.is_table(b"a.b 1\n")


def test_missing_pyarrow_says_how_to_install():
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "try:\n    import dtproto.arrow\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=NEUTRAL_DIR,
                         check=True).stdout
    assert "pip install dtproto[arrow]" in out
    code = "import sys; sys.modules['pyarrow'] = None\nimport dtproto; print('ok')\n"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=NEUTRAL_DIR,
                          check=True).stdout == "ok\n"


def test_a_table_is_sent_through_table_chunks(impl):
    from dtproto import Sender
    from dtproto.server import IngestServer

    t = pa.table({"v": [float(i) for i in range(3_000)], "host": ["h%d" % i for i in range(3_000)]})
    with IngestServer(tokens={"secret": ["metrics.ingest"]}) as srv:
        with Sender(srv.url, "secret") as s:
            result = s.send(A.table_chunks(t, rows=1_000, key="a.b", value="v",
                                           dimensions=["host"], _codec=impl))
    assert result.lines_ok == 3_000
    assert srv.accepted_lines[:2] == [b"a.b,host=h0 gauge,0", b"a.b,host=h1 gauge,1"]


def test_seconds_timestamps_warn_once(impl):
    from dtproto.errors import TimestampWarning

    t = pa.table({"v": [1.0, 2.0], "ts": [1_700_000_000, 1_700_000_001]})
    with pytest.warns(TimestampWarning):
        body = A.encode_table(t, key="a.b", value="v", timestamp="ts", _codec=impl)
    assert body == b"a.b gauge,1 1700000000\na.b gauge,2 1700000001\n"


def test_a_map_column_of_dimensions(impl):
    dims = pa.array([[("a", "1"), ("b", None)], [], [("x", "1"), ("y", "2"), ("x", "3")]],
                    pa.map_(pa.string(), pa.string()))
    t = pa.table({"v": [1.0, 2.0, 3.0], "d": dims})
    body = A.encode_table(t, key="k.k", value="v", dimensions="d", _codec=impl)
    # as Encoder's dict: a null value left out, a repeated key keeps its place, last value
    assert bytes(body) == encoder_rows(impl, [("k.k", 1.0, {"a": "1"}, None),
                                              ("k.k", 2.0, {}, None),
                                              ("k.k", 3.0, {"x": "3", "y": "2"}, None)])


def test_escaping_many_distinct_values(impl):
    n = 3_000
    vals = ['h %d,x="y"\\z=%d' % (i, i) for i in range(n)]
    t = pa.table({"v": [1.0] * n, "host": vals})
    body = A.encode_table(t, key="a.b", value="v", dimensions=["host"], _codec=impl)
    assert bytes(body) == encoder_rows(impl, [("a.b", 1.0, {"host": h}, None) for h in vals])
    back = A.decode_table(bytes(body), _codec=impl).column("dimensions").to_pylist()
    assert [d[0][1] for d in back] == vals


def test_senders_take_a_decoded_table_directly(impl):
    from dtproto import Sender
    from dtproto.server import IngestServer

    buf = body_with_everything()
    table = A.decode_table(buf, _codec=impl)
    with IngestServer(tokens={"secret": ["metrics.ingest"]}, now_ms=_corpus.BASE_TS_MS) as srv:
        with Sender(srv.url, "secret") as s:
            result = s.send(table)
            with pytest.raises(ValueError, match="needs its mapping"):
                s.send(pa.table({"v": [1.0]}))
    # the rows in order, then the metadata line decode_table kept in the schema
    assert result.lines_ok == table.num_rows + 1
    assert b"\n".join(srv.accepted_lines) + b"\n" == impl.encode(
        [r for r in impl.decode(buf) if type(r) is Metric]
        + [r for r in impl.decode(buf) if type(r) is Metadata])


def test_async_sender_takes_a_table(impl):
    pytest.importorskip("aiohttp")
    import asyncio

    from dtproto.aio import AsyncSender
    from dtproto.server import IngestServer

    table = A.decode_table(b"a.b,h=x 1\ne.f 3\nc.d count,delta=2\n#c.d count dt.meta.unit=Byte\n",
                           _codec=impl)
    table = _with_column(table, "value", [1.0, None, 2.0], pa.float64())   # row 1: no line

    async def go(url):
        async with AsyncSender(url, "secret") as s:
            return await s.send(table)

    with IngestServer(tokens={"secret": ["metrics.ingest"]}) as srv:
        result = asyncio.run(go(srv.url))
    assert (result.lines_ok, result.lines_invalid) == (3, 1)
    assert [(i.line, i.reason, i.source) for i in result.invalid_lines] == [
        (2, A.NULL_VALUE_REASON, "client")]
    assert srv.accepted_lines == [b"a.b,h=x gauge,1", b"c.d count,delta=2",
                                  b"#c.d count dt.meta.unit=Byte"]


@pytest.mark.hypothesis
@given(data=st.data())
def test_decode_columns_of_the_cython_core_equal_the_contract_on_generated_bodies(impl, data):
    """Mutated and valid bodies: the C columns equal the reference's, or both raise alike."""
    import strategies as S

    fn = getattr(impl, "decode_columns", None)
    if fn is None:
        pytest.skip("%s has no decode_columns" % impl.__name__)
    buf = data.draw(st.one_of(S.mutated_bodies(), S.bodies().map(lambda b: b[0])))
    first = data.draw(st.integers(1, 10**6))
    for skip in (False, True):
        try:
            want = A._decode_columns_py(buf, first, None, skip, _codec=impl)
        except DecodeError as e:
            with pytest.raises(DecodeError) as info:
                fn(buf, first, None, skip)
            assert (info.value.line, info.value.code, str(info.value)) == (e.line, e.code, str(e))
            continue
        _assert_same_columns(fn(buf, first, None, skip), want)


# --------------------------------------------------------------------------- sending a table

def _with_column(table, name, values, typ):
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, typ))


def _damaged_table(impl, n=600, seed=5):
    """decode_table of a body with metadata and blank lines, then rows made
    null-valued (gauge, count, summary field), given a bad key or an unknown
    kind, at random places."""
    import random

    rng = random.Random(seed)
    lines = _corpus.make_corpus(n, cardinality=_corpus.UNIQUE).splitlines(keepends=True)
    lines.insert(n // 3, b"#app.meta.key gauge dt.meta.unit=Byte\n")
    lines.insert(n // 2, b"\n")
    lines.insert(2 * n // 3, b"#app.other count dt.meta.displayName=\"Other\"\n")
    table = A.decode_table(b"".join(lines), _codec=impl)
    keys = table.column("key").cast(pa.string()).to_pylist()
    kinds = table.column("kind").cast(pa.string()).to_pylist()
    cols = {c: table.column(c).to_pylist() for c in ("value", "min", "max", "sum", "count")}
    for i in range(table.num_rows):
        r = rng.random()
        if r < 0.05:
            if kinds[i] == "summary":
                cols[rng.choice(["min", "max", "sum", "count"])][i] = None
            else:
                cols["value"][i] = None
        elif r < 0.08:
            keys[i] = "bad key %d" % i
        elif r < 0.10:
            kinds[i] = rng.choice(["histogram", None])
    table = _with_column(table, "key", keys, pa.string())
    table = _with_column(table, "kind", kinds, pa.string())
    for c in ("value", "min", "max", "sum"):
        table = _with_column(table, c, cols[c], pa.float64())
    return _with_column(table, "count", cols["count"], pa.int64())


def _row_by_row(impl, table):
    """The oracle: each row encoded alone, its line or why it gives none."""
    opts = dict(key="key", value="value", kind="kind", dimensions="dimensions",
                timestamp="timestamp", _codec=impl)
    out = []
    for i in range(table.num_rows):
        try:
            body = A.encode_table(table.slice(i, 1), **opts)
        except EncodeError as e:
            e.record = None
            out.append(A.ROW_ERROR_REASON % (e,))
            continue
        if body.lines:
            out.append(bytes(body))
        else:
            assert body.skipped_null == 1
            kind = table.column("kind")[i].as_py()
            out.append(A.NULL_SUMMARY_REASON if kind == "summary" else A.NULL_VALUE_REASON)
    return out


def _stream_lines(items):
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        else:
            out.extend(line + b"\n" for line in bytes(item).split(b"\n")[:-1])
    return out


@pytest.mark.parametrize("rows", [1, 7, 64, 100_000])
def test_a_table_for_a_sender_is_one_line_or_one_reason_per_row(impl, rows):
    """What a Sender reads from a table: row n is line n + 1 (its line, or the
    reason it has none), whatever the slice and the windows after errors;
    then the metadata lines."""
    import warnings

    table = _damaged_table(impl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _stream_lines(A._row_stream(table, rows=rows, _codec=impl))
        want = _row_by_row(impl, table)
    meta = [impl.encode([m]) for _, m in A.metadata_of(table)]
    assert len(meta) == 2
    assert got == want + meta
    reasons = [x for x in want if isinstance(x, str)]
    assert {A.NULL_VALUE_REASON, A.NULL_SUMMARY_REASON} <= set(reasons)
    assert any(r.startswith("cannot encode row: invalid metric key") for r in reasons)
    assert any("kind must be one of" in r for r in reasons)


def test_null_rows_are_those_encode_table_skips(impl):
    kinds = ["gauge", "count", "summary", None, "histogram"] * 6
    rng = __import__("random").Random(3)
    n = len(kinds)
    t = pa.table({
        "key": ["a.b"] * n, "kind": kinds,
        "value": [None if rng.random() < 0.5 else 1.0 for _ in range(n)],
        "min": [None if rng.random() < 0.2 else 1.0 for _ in range(n)],
        "max": [None if rng.random() < 0.2 else 2.0 for _ in range(n)],
        "sum": [None if rng.random() < 0.2 else 3.0 for _ in range(n)],
        "count": pa.array([None if rng.random() < 0.2 else 2 for _ in range(n)], pa.int64()),
        "timestamp": pa.array([None] * n, pa.int64()),
        "dimensions": pa.array([[]] * n, pa.map_(pa.string(), pa.string())),
    })
    want = [i for i, x in enumerate(_row_by_row(impl, t))
            if x in (A.NULL_VALUE_REASON, A.NULL_SUMMARY_REASON)]
    assert want and A._null_rows(t) == want


def _gauge_table(keys, values):
    n = len(keys)
    return pa.table({"key": keys, "kind": ["gauge"] * n, "value": pa.array(values, pa.float64()),
                     "timestamp": pa.array([None] * n, pa.int64()),
                     "dimensions": pa.array([[]] * n, pa.map_(pa.string(), pa.string()))})


def _row_stream_calls(monkeypatch, impl, table, rows):
    """_row_stream's items, and the rows of each encode_table call it made."""
    calls = []
    real = A.encode_table

    def counting(*a, **k):
        calls.append(a[0].num_rows)
        return real(*a, **k)

    monkeypatch.setattr(A, "encode_table", counting)
    return list(A._row_stream(table, rows=rows, _codec=impl)), calls


def test_an_all_bad_table_is_rejected_row_by_row_in_linear_time(impl, monkeypatch):
    n = 3_000
    got, calls = _row_stream_calls(monkeypatch, impl, _gauge_table(["bad key"] * n, [1.0] * n),
                                   1_000)
    assert len(got) == n and all(x.startswith("cannot encode row: ") for x in got)
    assert sum(calls) < 3 * n   # not the rest of the slice again for every bad row


@pytest.mark.parametrize("validate", [False, True])
def test_sending_a_table_accounts_for_every_row(impl, validate):
    """Each row is exactly one of: stored (as the server's log says), rejected
    by the server, rejected by the client (null, cannot encode), at its own
    line number; the metadata lines are sent after the rows.  A rejected row
    goes as an empty line in its request: it does not cut the requests."""
    import warnings

    from dtproto import Sender
    from dtproto.server import IngestServer

    table = _damaged_table(impl, n=1_500, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = _row_by_row(impl, table)
    meta = [impl.encode([m]) for _, m in A.metadata_of(table)]
    with IngestServer(tokens={"secret": ["metrics.ingest"]}, now_ms=_corpus.BASE_TS_MS) as srv:
        with Sender(srv.url, "secret", max_bytes=20_000, validate=validate) as s, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = s.send(table)
    n = table.num_rows + len(meta)
    assert sum(1 for x in want if isinstance(x, str)) > 100
    # full requests: the rejections did not cut them (one each would be > 100 requests)
    assert 3 < len(result.requests) <= result.bytes_sent // 15_000 + 1
    assert result.lines_ok + result.lines_invalid == n
    assert result.lines_ok == len(srv.accepted_lines)
    client = {i.line: i.reason for i in result.invalid_lines if i.source == "client"}
    assert client == {k + 1: x for k, x in enumerate(want) if isinstance(x, str)}
    server = {i.line for i in result.invalid_lines if i.source == "server"}
    assert not server & set(client) and result.unreported_invalid == 0
    sent = [x for k, x in enumerate(want + meta) if not isinstance(x, str) and k + 1 not in server]
    # requests in flight at once may be stored in any order
    assert sorted(x.rstrip(b"\n") for x in sent) == sorted(srv.accepted_lines)
    assert result.requests[-1].first_line + result.requests[-1].lines - 1 == n


def test_a_table_whose_request_fails_still_accounts_for_every_row(impl):
    """A request that fails for good: its rows are undelivered, except those
    the client rejected (counted once, as invalid); the rest of the table is
    at or after stopped_at."""
    import warnings

    from dtproto import DeliveryError, Sender
    from dtproto.server import IngestServer

    table = _damaged_table(impl, n=1_500, seed=12)
    with IngestServer(tokens={"secret": ["metrics.ingest"]}, now_ms=_corpus.BASE_TS_MS,
                      faults=["503:requests=2"]) as srv:
        with Sender(srv.url, "secret", max_bytes=20_000, retries=0, concurrency=1) as s, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(DeliveryError) as ei:
                s.send(table)
    r = ei.value.result
    [u] = r.undelivered
    assert u.first_line == r.requests[1].first_line and u.status == 503
    in_failed = [i for i in r.invalid_lines if u.first_line <= i.line <= u.last_line]
    assert in_failed and all(i.source == "client" for i in in_failed)
    assert u.lines == u.last_line - u.first_line + 1 - len(in_failed)
    assert r.stopped_at == u.last_line + 1
    assert r.lines_ok + r.lines_invalid + r.lines_not_delivered == r.stopped_at - 1
    assert r.lines_ok == len(srv.accepted_lines)


@pytest.mark.parametrize("kind_type", ["string", "large_string", "string_view", "dictionary"])
def test_a_table_for_a_sender_reads_every_kind_column_type(impl, kind_type):
    """Polars exports text as string_view, which has no compare kernel: the
    send of such a table raised (found by a review)."""
    if kind_type == "string_view" and not hasattr(pa, "string_view"):
        pytest.skip("pyarrow without string_view")
    table = _damaged_table(impl, n=300, seed=21)
    kinds = table.column("kind").cast(pa.string())
    typ = {"string": pa.string(), "large_string": pa.large_string(),
           "string_view": getattr(pa, "string_view", pa.string)(),
           "dictionary": pa.dictionary(pa.int8(), pa.string())}[kind_type]
    table = table.set_column(table.schema.get_field_index("kind"), "kind", kinds.cast(typ))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = _row_by_row(impl, table)
        assert _stream_lines(A._row_stream(table, rows=50, _codec=impl)) == want + [
            impl.encode([m]) for _, m in A.metadata_of(table)]


def test_null_rows_cost_no_call_each(impl, monkeypatch):
    """A window with null rows is encoded in one call and its lines cut around
    them (a call per run between nulls made 5% of nulls 40x slower)."""
    n = 20_000
    t = _gauge_table(["a.b"] * n, [None if i % 20 == 7 else float(i) for i in range(n)])
    items, calls = _row_stream_calls(monkeypatch, impl, t, 5_000)
    assert calls == [5_000] * 4
    assert _stream_lines(items) == [A.NULL_VALUE_REASON if i % 20 == 7 else b"a.b gauge,%d\n" % i
                   for i in range(n)]


@pytest.mark.parametrize("column, values, typ", [
    ("value", ["1", "2", "3"], pa.string()),
    ("dimensions", [["a", "b"], [], []], pa.list_(pa.string())),
    ("dimensions", [[[1, 2]], [], []], pa.list_(pa.list_(pa.int64()))),
])
def test_an_error_of_the_table_itself_is_raised_not_given_to_every_row(impl, column, values, typ):
    """An EncodeError naming no row is the table's (a column of the wrong
    type): raised, where each row was reported invalid with it, a call each."""
    t = A.decode_table(b"a.b 1\nc.d 2\ne.f 3\n", _codec=impl)
    t = t.set_column(t.schema.get_field_index(column), column, pa.array(values, typ))
    with pytest.raises(EncodeError) as ei:
        list(A._row_stream(t, _codec=impl))
    assert ei.value.record is None


def test_unreadable_schema_metadata_is_raised_before_any_row():
    t = A.decode_table(b"a.b 1\n#a.b gauge dt.meta.unit=Byte\n")
    meta = dict(t.schema.metadata)
    meta[b"dtproto.metadata"] = b'[[2, "a.b", "summary", []]]'
    t = t.replace_schema_metadata(meta)
    stream = A._row_stream(t)
    with pytest.raises(ValueError, match="metric_type"):
        next(stream)


# ------------------------------------------------------------------ pandas' spellings


def _spelled_by_pandas(table):
    """``table`` as pandas gives it back, then read by pyarrow: dimensions as
    ``list<list<string>>``, a summary count with a null as float64."""
    pd = pytest.importorskip("pandas")
    df = table.to_pandas()
    assert df["dimensions"].dtype == object and df["count"].dtype == float
    return df, pa.Table.from_pandas(df, preserve_index=False)


_DECODED = dict(key="key", value="value", kind="kind", dimensions="dimensions",
                timestamp="timestamp")


def test_decode_table_through_pandas_encodes_as_the_table(impl):
    """``decode_table(body).to_pandas()`` (and that frame read back into
    Arrow, and into Polars) encodes to the bytes of the table itself:
    pandas' lists of (key, value) tuples are read as the map they were, its
    float64 counts (an integer column with a null) as integers.  Both
    raised an EncodeError ("a dimension value must be a str")."""
    polars = pytest.importorskip("polars")
    table = A.decode_table(body_with_everything(), now_ms=_corpus.BASE_TS_MS, _codec=impl)
    want = A.encode_table(table, _codec=impl, **_DECODED)
    assert want.lines > 4_000 and b"count=" in want and b"\\ " in want
    df, from_pandas = _spelled_by_pandas(table)
    assert pa.types.is_list(from_pandas.schema.field("dimensions").type)
    for spelled in (df, from_pandas, polars.from_pandas(df), polars.from_arrow(table)):
        got = A.encode_table(spelled, _codec=impl, **_DECODED)
        assert bytes(got) == bytes(want)
        assert (got.lines, got.skipped_null, got.rows) == (want.lines, want.skipped_null,
                                                           want.rows)
    # slices, as a sender reads them, and the sender's own reading of the frame
    assert b"".join(A.encode_table(df.iloc[i:i + 333], _codec=impl, **_DECODED)
                    for i in range(0, len(df), 333)) == bytes(want)
    assert list(A._row_stream(df, rows=700, _codec=impl)) == \
        list(A._row_stream(table.replace_schema_metadata(None), rows=700, _codec=impl))


def test_a_frame_of_decode_table_sent_accounts_for_every_row(impl):
    """Sent as it comes back from pandas, every row is stored, as the table's are."""
    from dtproto import Sender
    from dtproto.server import IngestServer

    body = _corpus.make_corpus(2_000, cardinality=_corpus.UNIQUE)
    df, _ = _spelled_by_pandas(A.decode_table(body, _codec=impl))
    with IngestServer(tokens={"secret": ["metrics.ingest"]}, now_ms=_corpus.BASE_TS_MS) as srv:
        with Sender(srv.url, "secret", max_bytes=50_000) as s:
            result = s.send(df)
    assert result.lines_ok == len(df) == len(srv.accepted_lines)
    assert result.lines_invalid == 0 and len(result.requests) > 3


@pytest.mark.parametrize("pairs, row, code", [
    ([[("a", "x")], [("a", "x"), ("b", "y", "z")]], 1, "invalid_record"),
    ([[("a", "x")], [], [("b",)]], 2, "invalid_record"),
    ([[("a", "x"), None]], 0, "invalid_record"),
    ([[(None, "x")]], 0, "invalid_record"),
    ([[(1, 2)], [(3, 4)]], None, "invalid_dimension_key"),
], ids=["a-triple", "a-single", "a-null-pair", "a-null-key", "int-keys"])
def test_pairs_that_are_not_pairs_are_an_error_naming_the_row(impl, pairs, row, code):
    """A list-of-pairs dimensions column is read as a map only when every
    entry is a (key, value) pair with a key: else an EncodeError naming the
    row (or, for keys that are not text, the column)."""
    n = len(pairs)
    t = pa.table({"key": ["a.b"] * n, "value": [1.0] * n,
                  "dimensions": pa.array([None if p is None else [list(x) if x else x for x in p]
                                          for p in pairs])})
    with pytest.raises(EncodeError) as e:
        A.encode_table(t, key="key", value="value", dimensions="dimensions", _codec=impl)
    assert e.value.code == code and e.value.field == "dimensions"
    assert e.value.record == row
    if row is not None:   # sent: that row is the client's rejection, the others go
        t = t.append_column("kind", pa.array(["gauge"] * n)).append_column(
            "timestamp", pa.array([None] * n, pa.int64()))
        lines = _stream_lines(A._row_stream(t, _codec=impl))
        assert [i for i, x in enumerate(lines) if isinstance(x, str)] == [row]
        assert "pair" in lines[row]


def test_pairs_as_structs_a_null_row_and_values_as_integers(impl):
    """``list<struct<k, v>>`` reads like ``list<list<string>>``; a null row has
    no dimensions (as in a map column); integer values are written as text."""
    t = pa.table({
        "key": ["a.b"] * 3, "value": [1.0, 2.0, 3.0],
        "dimensions": pa.array([[{"k": "a", "v": 1}], None, [{"k": "b", "v": None}]],
                               pa.list_(pa.struct([("k", pa.string()), ("v", pa.int64())]))),
    })
    got = A.encode_table(t, key="key", value="value", dimensions="dimensions", _codec=impl)
    assert bytes(got) == b"a.b,a=1 gauge,1\na.b gauge,2\na.b gauge,3\n"


@pytest.mark.parametrize("count, ok", [([2.0, None], True), ([2.5, None], False),
                                       ([-1.0, None], False), ([float("nan"), None], False)])
def test_a_float_count_column_is_read_as_integers_only_when_whole(impl, count, ok):
    """pandas keeps an integer column with a missing value as float64: whole
    counts are read as the integers they were; any other float is the
    Encoder's error, as before."""
    t = pa.table({"key": ["a.b", "c.d"], "kind": ["summary", "gauge"], "value": [None, 1.0],
                  "min": [1.0, None], "max": [3.0, None], "sum": [4.0, None],
                  "count": pa.array(count, pa.float64())})
    if ok:
        got = A.encode_table(t, key="key", value="value", kind="kind", _codec=impl)
        assert bytes(got) == b"a.b gauge,min=1,max=3,sum=4,count=2\nc.d gauge,1\n"
    else:
        with pytest.raises(EncodeError):
            A.encode_table(t, key="key", value="value", kind="kind", _codec=impl)


def test_the_first_bad_row_is_the_error_whatever_is_wrong_with_it(impl):
    """A row whose dimension is not a pair is judged in row order with the
    rest: an invalid key on an earlier row is the error, then the pair."""
    t = pa.table({"key": ["a.b", "bad key", "a.b", "a.b"], "value": [1.0, 2.0, 3.0, 4.0],
                  "dimensions": pa.array([[["a", "x"]], [["a", "x"]], [["a", "x"]],
                                          [["a", "x", "y"]]])})
    with pytest.raises(EncodeError) as e:
        A.encode_table(t, key="key", value="value", dimensions="dimensions", _codec=impl)
    assert e.value.record == 1 and e.value.field != "dimensions"
    with pytest.raises(EncodeError) as e:
        A.encode_table(t.slice(2), key="key", value="value", dimensions="dimensions",
                       _codec=impl)
    assert e.value.record == 1 and e.value.field == "dimensions"


def test_a_frame_of_lines_without_dimensions_comes_back_through_pandas(impl):
    """No line with a dimension: pandas gives [] for every row, read as
    ``list<null>`` (``large_list<null>`` by Polars): no dimensions, not a
    column of the wrong type."""
    polars = pytest.importorskip("polars")
    table = A.decode_table(b"m.a gauge,1\nm.b count,delta=2\n", _codec=impl)
    df = table.to_pandas()
    for spelled in (df, pa.Table.from_pandas(df), polars.from_pandas(df)):
        assert bytes(A.encode_table(spelled, _codec=impl, **_DECODED)) == \
            b"m.a gauge,1\nm.b count,delta=2\n"
    assert _stream_lines(A._row_stream(df, _codec=impl)) == [b"m.a gauge,1\n",
                                                             b"m.b count,delta=2\n"]


def test_struct_pairs_named_key_and_value_are_read_by_name(impl):
    typ = pa.list_(pa.struct([("value", pa.string()), ("key", pa.string())]))
    t = pa.table({"key": ["m.x"], "value": [1.0],
                  "dimensions": pa.array([[{"key": "host", "value": "h1"}]], typ)})
    assert bytes(A.encode_table(t, key="key", value="value", dimensions="dimensions",
                                _codec=impl)) == b"m.x,host=h1 gauge,1\n"


def test_a_bad_pair_holding_invalid_utf8_is_its_rows_error(impl):
    """The row's error names the entry without decoding it (a UnicodeDecodeError
    escaped, and stopped a send)."""
    data = b"hostx\xffyzab"
    offs = pa.array([0, 4, 6, 7, 8, 10], pa.int32())
    strs = pa.Array.from_buffers(pa.string(), 5, [None, offs.buffers()[1], pa.py_buffer(data)])
    inner = pa.ListArray.from_arrays(pa.array([0, 3, 5], pa.int32()), strs)
    outer = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), inner)
    t = pa.table({"key": ["m.a", "m.b"], "value": [1.0, 2.0], "dimensions": outer})
    with pytest.raises(EncodeError) as e:
        A.encode_table(t, key="key", value="value", dimensions="dimensions", _codec=impl)
    assert (e.value.record, e.value.field, e.value.code) == (0, "dimensions", "invalid_record")


def test_a_float16_count_is_the_encoders_error(impl):
    t = pa.table({"key": ["a.b"], "min": [1.0], "max": [3.0], "sum": [4.0],
                  "count": pa.array([2], pa.float16())})
    with pytest.raises(EncodeError) as e:
        A.encode_table(t, key="key", kind="summary", _codec=impl)
    assert e.value.field == "count"
