"""``dtproto stats``: lines and series per metric key exact, estimates marked,
``--jobs`` the same counts, warnings against the limits.  Over both implementations."""

from __future__ import annotations

import gzip
import json
import random
from typing import Any, List

import pytest

from dtproto import Metric, _corpus, _impl, _stats
from dtproto.cli import main


@pytest.fixture
def use_impl(impl, monkeypatch):
    monkeypatch.setattr(_impl, "codec", impl)
    return impl


def expected(impl, buf):
    """lines and series per key, counted the obvious way."""
    lines, series, values = {}, {}, {}
    for r in impl.iter_decode(buf, errors="skip"):
        if type(r) is not Metric:
            continue
        lines[r.key] = lines.get(r.key, 0) + 1
        d = dict(r.dimensions)
        series.setdefault(r.key, set()).add(frozenset(d.items()))
        for k, v in d.items():
            values.setdefault(r.key, {}).setdefault(k, set()).add(v)
    return lines, {k: len(s) for k, s in series.items()}, {
        k: {dk: len(vs) for dk, vs in dv.items()} for k, dv in values.items()}


def run_json(capsys, *args):
    assert main(["stats", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def corpus() -> bytes:
    buf = _corpus.make_corpus(6_000, cardinality=_corpus.UNIQUE)
    buf += _corpus.make_corpus(6_000, invalid_ratio=0.05)
    # the same series with its dimensions in another order, and a duplicate key
    buf += b"a.b,x=1,y=2 1\na.b,y=2,x=1 2\na.b,x=1,y=2,x=3 3\n#a.b gauge dt.meta.unit=Byte\n\n"
    return buf


def test_lines_and_series_per_key_are_exact(use_impl, tmp_path, capsys):
    buf = corpus()
    path = tmp_path / "m.txt"
    path.write_bytes(buf)
    doc = run_json(capsys, str(path))
    (f,) = doc["files"]
    lines, series, values = expected(use_impl, buf)
    assert {m["key"]: m["lines"] for m in f["metrics"]} == lines
    assert {m["key"]: m["series"] for m in f["metrics"]} == series
    assert {m["key"]: m["dimensions"] for m in f["metrics"] if m["dimensions"]} == values
    assert series["a.b"] == 2
    assert not f["estimated"] and f["estimator"] is None
    assert f["lines"] == buf.count(b"\n")
    assert f["metadata_lines"] == 1
    assert f["data_lines"] == sum(lines.values())
    assert f["series"] == sum(series.values())
    assert f["top"] == [m["key"] for m in f["metrics"]][:10]
    assert [m["series"] for m in f["metrics"]] == sorted(series.values(), reverse=True)
    kinds = set().union(*(m["kinds"] for m in f["metrics"]))
    assert kinds == {"gauge", "count", "summary"}


def test_jobs_and_gzip_give_the_same_counts(use_impl, tmp_path, capsys, monkeypatch):
    from dtproto.cli import stats as cli_stats

    monkeypatch.setattr(cli_stats, "_MIN_JOB_BYTES", 1)
    buf = corpus()
    path = tmp_path / "m.txt"
    path.write_bytes(buf)
    gz = tmp_path / "m.txt.gz"
    gz.write_bytes(gzip.compress(buf))
    one = run_json(capsys, str(path))["files"][0]
    four = run_json(capsys, "--jobs", "4", str(path))["files"][0]
    zipped = run_json(capsys, str(gz))["files"][0]
    assert four["metrics"] == one["metrics"] and four["lines"] == one["lines"]
    assert zipped["metrics"] == one["metrics"]


def test_estimates_beyond_the_exact_limit_are_marked(use_impl, monkeypatch):
    monkeypatch.setattr(_stats, "EXACT_SERIES", 1_000)
    monkeypatch.setattr(_stats, "EXACT_FLOOR", 10)
    buf = _corpus.make_corpus(20_000, cardinality=_corpus.UNIQUE)
    st = _stats.FileStats()
    st.add_block(buf, use_impl)
    doc = st.to_dict("x")
    assert doc["estimated"] and doc["estimator"] == _stats.ESTIMATOR
    _, series, _ = expected(use_impl, buf)
    for m in doc["metrics"]:
        if m["series_estimated"]:
            assert abs(m["series"] - series[m["key"]]) <= max(3, 0.05 * series[m["key"]])
        else:
            assert m["series"] == series[m["key"]]
    assert sum(m["lines"] for m in doc["metrics"]) == 20_000


def _small_limits(monkeypatch):
    """The exact-count limits scaled down 1,000 times (EXACT_FLOOR 10)."""
    monkeypatch.setattr(_stats, "EXACT_SERIES", 2_000)
    monkeypatch.setattr(_stats, "EXACT_VALUES", 200)
    monkeypatch.setattr(_stats, "EXACT_VALUES_TOTAL", 2_000)
    monkeypatch.setattr(_stats, "EXACT_FLOOR", 10)


def _blocks_stats(impl, blocks):
    st = _stats.FileStats()
    for block in blocks:
        st.add_block(block, impl)
    return st


def _lines(key, ids, dim=b"id"):
    return b"".join(b"%s,%s=%d 1\n" % (key, dim, i) for i in ids)


def test_exact_or_estimated_does_not_depend_on_how_the_file_was_cut(use_impl, monkeypatch):
    """1,500 series of m.a, then 1,500 of m.b (a 2,000 limit): read in one
    pass, m.a used to become an estimate when m.b pushed the total over, and
    m.b stayed exact; two ranges merged made both estimates.  Now the rule
    is one of the counts: both are over the threshold that fits (1,000)."""
    _small_limits(monkeypatch)
    buf = _lines(b"m.a", range(1500)) + _lines(b"m.b", range(1500)) \
        + _lines(b"small.key", range(50)) + _lines(b"v.w", range(300), b"host")
    lines = buf.splitlines(keepends=True)
    docs = []
    for cuts in ([], [1500], [700, 2900], [1, 1499, 1500, 1501, 3000], list(range(97, 3350, 97))):
        edges = [0, *cuts, len(lines)]
        parts = [b"".join(lines[a:b]) for a, b in zip(edges, edges[1:])]
        docs.append(_blocks_stats(use_impl, parts).to_dict("f"))          # one pass, blocks
        merged = _blocks_stats(use_impl, parts[:1])
        for part in parts[1:]:
            merged.merge(_blocks_stats(use_impl, [part]))                  # ranges, merged
        docs.append(merged.to_dict("f"))
    docs.append(_blocks_stats(use_impl, [b"".join(reversed(lines))]).to_dict("f"))
    assert all(d == docs[0] for d in docs)
    by_key = {m["key"]: m for m in docs[0]["metrics"]}
    assert by_key["m.a"]["series_estimated"] and by_key["m.b"]["series_estimated"]
    assert not by_key["small.key"]["series_estimated"] and by_key["small.key"]["series"] == 50
    assert by_key["v.w"]["series"] == 300 and not by_key["v.w"]["series_estimated"]
    # dimension values: 200 at most per key, within 2,000 in all
    assert by_key["m.a"]["dimensions_estimated"] == ["id"]
    assert by_key["v.w"]["dimensions_estimated"] == ["host"]
    assert "dimensions_estimated" not in by_key["small.key"]


def test_a_block_walks_only_the_counts_it_touched(use_impl, monkeypatch):
    """Every key's counts were walked after every block: time quadratic in
    the input when most lines bring a new key.  A full walk (_fit) now runs
    only while a total is over its budget and its threshold can come down:
    a few times per file, not once per block."""
    walks: List[int] = []
    real_fit = _stats._fit

    def fit(counts: Any, limit: int, budget: int) -> int:
        walks.append(len(counts))
        return real_fit(counts, limit, budget)

    monkeypatch.setattr(_stats, "_fit", fit)
    st = _blocks_stats(use_impl, [_lines(b"k%d.m" % b, range(20)) for b in range(300)])
    assert walks == [] and len(st.metrics) == 300
    _small_limits(monkeypatch)
    blocks = [b"".join(b"k%d.m,id=%d 1\n" % (b * 40 + i, i) for i in range(40)) + _lines(
        b"big.m", range(b * 30, b * 30 + 30)) for b in range(300)]
    st = _blocks_stats(use_impl, blocks)
    # the thresholds came down 2,000 -> 10 (values 200 -> 10): 8 + 5 halvings
    assert 0 < len(walks) <= 2 * 14, len(walks)
    assert (st.series_limit, st.values_limit) == (10, 10)
    whole = _blocks_stats(use_impl, [b"".join(blocks)])
    assert st.to_dict("f") == whole.to_dict("f")


def test_jobs_give_the_same_estimates(use_impl, tmp_path, capsys, monkeypatch):
    import multiprocessing

    from dtproto.cli import stats as cli_stats

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the workers must inherit the scaled-down limits (fork)")

    _small_limits(monkeypatch)
    monkeypatch.setattr(cli_stats, "_MIN_JOB_BYTES", 1)
    monkeypatch.setattr(cli_stats, "_READ", 4096)          # blocks, as a large file is read
    path = tmp_path / "m.txt"
    path.write_bytes(_lines(b"m.a", range(1500)) + _lines(b"m.b", range(1500)))
    one = run_json(capsys, str(path))["files"][0]
    assert [m["series_estimated"] for m in one["metrics"]] == [True, True]
    for jobs in ("2", "3"):
        assert run_json(capsys, "--jobs", jobs, str(path))["files"][0] == one


def test_the_text_output_marks_estimated_dimension_values(use_impl, tmp_path, capsys,
                                                           monkeypatch):
    _small_limits(monkeypatch)
    monkeypatch.setattr(_stats, "LIMIT_SERIES_PER_METRIC", 100)
    path = tmp_path / "m.txt"
    path.write_bytes(_lines(b"v.w", range(300), b"host") + _lines(b"a.b", range(20)))
    assert main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("  v.w"))
    assert row.endswith("host (~%s values)" % format(
        run_json(capsys, str(path))["files"][0]["metrics"][0]["dimensions"]["host"], ","))
    assert "dimension host has" in out and "distinct values (estimated)" in out
    row = next(line for line in out.splitlines() if line.startswith("  a.b"))
    assert row.endswith("id (20 values)")


def test_hyperloglog_accuracy_and_merge():
    rng = random.Random(5)
    a, b, both = _stats.HyperLogLog(), _stats.HyperLogLog(), _stats.HyperLogLog()
    for i in range(200_000):
        h = rng.getrandbits(64)
        (a if i % 2 else b).add(h)
        both.add(h)
    a.merge(b)
    assert a.registers == both.registers
    assert abs(a.estimate() - 200_000) < 200_000 * 0.03
    small = _stats.HyperLogLog()
    for i in range(100):
        small.add(_stats.stable_hash(str(i)))
    assert abs(small.estimate() - 100) <= 2


def test_merge_of_ranges_equals_one_pass(use_impl):
    buf = corpus()
    cut = buf.index(b"\n", len(buf) // 2) + 1
    whole = _stats.FileStats()
    whole.add_block(buf, use_impl)
    left, right = _stats.FileStats(), _stats.FileStats()
    left.add_block(buf[:cut], use_impl)
    right.add_block(buf[cut:], use_impl)
    left.merge(right)
    assert left.to_dict("f") == whole.to_dict("f")


def test_warnings_against_the_limits(use_impl, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_stats, "LIMIT_SERIES_PER_METRIC", 10)
    monkeypatch.setattr(_stats, "LIMIT_METRIC_KEYS", 1)
    path = tmp_path / "m.txt"
    path.write_bytes(b"".join(b"a.b,id=%d 1\n" % i for i in range(20)) + b"c.d 1\n")
    f = run_json(capsys, str(path))["files"][0]
    assert any("a.b has 20 series" in w and "id has 20 distinct values" in w
               for w in f["warnings"])
    assert any("2 metric keys" in w for w in f["warnings"])
    assert main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: metric a.b has 20 series" in out
    assert "a.b" in out and "20" in out


def test_text_output_and_stdin(use_impl, capsys, monkeypatch):
    import io
    import sys

    class Stdin:
        buffer = io.BufferedReader(io.BytesIO(b"a.b,h=x 1\na.b,h=y 2\nbad\n"))

        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stdin", Stdin())
    assert main(["stats", "-"]) == 0
    out = capsys.readouterr().out
    assert "3 lines, 1 metric key, 2 series" in out
    assert "1 blank or invalid" in out


def test_a_file_that_cannot_be_read_does_not_stop_the_others(use_impl, capsys, tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(b"a.b,h=x 1\n")
    damaged = tmp_path / "bad.gz"
    damaged.write_bytes(gzip.compress(b"a.b,h=x 1\n" * 1000)[:40])
    missing = tmp_path / "missing.txt"
    args = [str(good), str(missing), str(damaged), str(good)]
    assert main(["stats", *args]) == 2
    cap = capsys.readouterr()
    assert cap.out.count("good.txt: 1 line, 1 metric key, 1 series") == 2
    assert "cannot open %s" % missing in cap.err and "cannot read %s" % damaged in cap.err
    assert main(["stats", "--json", *args]) == 2
    files = json.loads(capsys.readouterr().out)["files"]
    assert [("io_error" in f, f["file"]) for f in files] == [
        (False, str(good)), (True, str(missing)), (True, str(damaged)), (False, str(good))]


def test_text_table_lines_up_and_counts_values_in_words(use_impl, capsys, tmp_path):
    path = tmp_path / "m.txt"
    path.write_bytes(b"a.b,h=x 1\n")
    assert main(["stats", str(path)]) == 0
    head, row = capsys.readouterr().out.splitlines()[1:3]
    assert head.index("lines") + len("lines") == row.index("1 ") + 1   # right-aligned column
    assert row.endswith("h (1 value)")
