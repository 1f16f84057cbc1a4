"""The pure-Python fast paths against the exact scanner and the exact encoder.

The fast paths (``dtproto._scan._fast_line``, ``_fast_check``, the block
path of ``decode``/``validate`` and the encoder's ``_fast_head``) are built
on regular expressions and ``str`` methods; the exact scanner and ``_head``
are the readable definition.  A fast
path may decline (None: the exact code decides), but whatever it accepts must
be exactly what the exact code gives: the same record, the same head.  These
properties run over lines in the fast paths' own shape (single spaces, the
canonical summary order) with every kind of value -- escapes, quoted values,
unicode, 50 dimensions, values of 255 code points -- and over the same lines
mutated byte by byte.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strategies as S
from encoder_memos import ESCAPED_VALUES, dims_of, fresh_escapes, fresh_memo
from dtproto import Metric, _scan
from dtproto import _encode_py as _enc
from dtproto._corpus import UNIQUE, make_corpus

NOW = 1_700_000_000_000
NOWS = [None, NOW, 0]


def gen_fast_line(r: S.R) -> Tuple[str, Metric]:
    """A valid line in the fast paths' shape, with any dimension values."""
    m = S.gen_metric(r)
    if r.randrange(8) == 0:  # at the limits: 50 dimensions, 255 code points
        n = r.choice([50, 50, 49])
        value = "".join(r.choice("ab,= \\\"ü😀\u00a0漢") for _ in range(r.choice([255, 254, 3])))
        dims = tuple(("k%d" % (i % 9), value if i % 5 == 0 else "v") for i in range(n))
        m = _scan._tuple_new(Metric, (m[0], dims) + tuple(m[2:]))
    head = m.key + "".join("," + k + "=" + S.wire_value(r, v) for k, v in m.dimensions)
    if m.kind == "summary":
        payload = "gauge,min=%s,max=%s,sum=%s,count=%d" % (
            S.wire_number(r, m.min), S.wire_number(r, m.max), S.wire_number(r, m.sum), m.count)
    elif m.kind == "count":
        payload = "count,delta=" + S.wire_number(r, m.value)
    else:
        payload = r.choice(["", "gauge,"]) + S.wire_number(r, m.value)
    line = head + " " + payload
    if m.timestamp is not None:
        line += " %d" % m.timestamp
    return line + r.choice(["", "", "", "\r", " "]), m


def gen_fast_or_mutated(r: S.R) -> str:
    line, _ = gen_fast_line(r)
    if r.randrange(3) == 0:
        return line
    data = S.mutate(r, line.encode("utf-8")).replace(b"\n", b"")
    return _scan._text_of(data)


_CORPUS = [line for c in (1_000, UNIQUE)
           for line in make_corpus(3_000, seed=5, cardinality=c).decode().split("\n") if line]


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b) is Metric
    assert tuple(a) == tuple(b)
    for x, y in zip(a[3:7], b[3:7]):  # signs of zero survive
        assert (x is None and y is None) or math.copysign(1, x) == math.copysign(1, y)


def _exact(line: str, now: Optional[int]) -> Any:
    try:
        return _scan._scan_line(line, now)
    except _scan._LineFault as f:
        return f


def _block(line: str, now: Optional[int]) -> Optional[Metric]:
    """What decode()'s block path makes of a one-line text: a record or None."""
    recs, declined = _scan._fast_rows(line, 0, len(line), now)
    assert len(recs) == 1 and declined == (recs[0] is None)
    return recs[0]  # type: ignore[no-any-return]


def _check_line(line: str, now: Optional[int]) -> None:
    fast = _scan._fast_line(line, now)
    check = _scan._fast_check(line, now)
    block = _block(line, now)
    if fast is None and check is None and block is None:
        return
    exact = _exact(line, now)
    assert not isinstance(exact, _scan._LineFault), (line, exact.code)  # never accept more
    if fast is not None:
        _same(fast, exact)
    if block is not None:
        _same(block, exact)
    if check is not None:  # validate() needs the key, kind and timestamp only
        assert (check[0], check[2:]) == (exact[0], exact[2:])


@given(S.seeded(gen_fast_line), st.sampled_from(NOWS))
def test_fast_line_takes_and_agrees_on_valid_lines(case, now):
    line, m = case
    _check_line(line, now)
    if now is None:
        # Every line of this shape is ordinary: the fast path must take it.
        fast = _scan._fast_line(line, None)
        assert fast is not None, line
        _same(fast, m)
        assert _scan._fast_check(line, None) is not None, line


@given(S.seeded(gen_fast_or_mutated), st.sampled_from(NOWS))
def test_fast_paths_never_accept_more_than_the_scanner(line, now):
    _check_line(line, now)


@given(st.one_of(S.any_lines(), S.mutated_lines()), st.sampled_from(NOWS))
def test_fast_paths_agree_on_any_line(data, now):
    for line in _scan._text_of(data).split("\n"):
        _check_line(line, now)
        _check_line(line + "\r", now)


@pytest.mark.parametrize("now", NOWS)
def test_fast_paths_take_every_corpus_line(now):
    taken = block = 0
    for line in _CORPUS:
        _check_line(line, now)
        taken += _scan._fast_line(line, now) is not None
        block += _block(line, now) is not None
    if now is None:
        assert taken == block == len(_CORPUS)


def test_cold_and_warm_caches_agree():
    """The same lines give the same records whether their heads are cached or not."""
    lines = _CORPUS[:500]
    _scan._head_cache.clear()
    _scan._heads_seen.clear()
    cold = [_scan._fast_line(line, None) for line in lines]
    warm = [_scan._fast_line(line, None) for line in lines * 2][len(lines):]
    assert cold == warm == [_scan._scan_line(line, None) for line in lines]
    _scan._dims_cache.clear()
    text = "\n".join(lines)
    cold = _scan._fast_rows(text, 0, len(text), None)[0]
    twice = text + "\n" + text
    warm = _scan._fast_rows(twice, 0, len(twice), None)[0][len(lines):]
    assert cold == warm == [_scan._scan_line(line, None) for line in lines]


# ---------------------------------------------------------------------------
# The drivers: decode() and validate() over bodies, block path included, are
# exactly the exact scanner applied line by line.
# ---------------------------------------------------------------------------

def _reference(lines: List[str], now: Optional[int]) -> Tuple[Any, Any]:
    """(records or the first error, ValidationReport) of ``lines`` by the exact scanner."""
    from dtproto._constants import (SECONDS_TIMESTAMP_BELOW, SECONDS_TIMESTAMP_WARNING,
                                    WARNING_TIMESTAMP_SECONDS)
    from dtproto.report import LineWarning, ValidationReport

    report = ValidationReport()
    records: list = []
    first_error = None
    for lineno, raw in enumerate(lines, 1):
        if not raw:
            continue
        rec = _exact(raw, now)
        if isinstance(rec, _scan._LineFault):
            err = _scan._fault_to_error(rec, raw, lineno)
            first_error = first_error or err
            report.lines_invalid += 1
            report.error_counts[err.code] = report.error_counts.get(err.code, 0) + 1
            report.errors.append((lineno, err.column, err.code, err.reason, err.text))
            continue
        if rec is None:
            continue
        records.append(rec)
        report.lines_ok += 1
        if type(rec) is not Metric:
            continue
        if rec.key.endswith(".count") != (rec.kind == "count"):
            report.warnings.append(LineWarning(lineno, "metric key '%s' changed to '%s'" % (
                rec.key, _scan.classic_key(rec.key, rec.kind))))
        if rec.timestamp is not None and rec.timestamp < SECONDS_TIMESTAMP_BELOW:
            report.warnings.append(LineWarning(
                lineno, SECONDS_TIMESTAMP_WARNING % (rec.timestamp, rec.timestamp),
                WARNING_TIMESTAMP_SECONDS))
    report.warnings_total = len(report.warnings)
    report.lines_total = len(lines)
    return (first_error if first_error is not None else records), report


def _check_body(lines: List[str], now: Optional[int], final_lf: bool) -> None:
    from dtproto import _codec_py

    raw = ("\n".join(lines) + ("\n" if final_lf else "")).encode("utf-8", "surrogatepass")
    # The lines as the drivers see them (a lone surrogate comes back as the
    # surrogate escapes of its bytes; a final LF ends the last line).
    lines = _scan._text_of(raw).split("\n")
    if lines[-1] == "":
        lines.pop()
    want, want_report = _reference(lines, now)
    try:
        got: Any = _codec_py.decode(raw, now_ms=now)
    except Exception as e:  # noqa: BLE001
        got = e
    if isinstance(want, list):
        assert isinstance(got, list), got
        assert len(got) == len(want)
        for a, b in zip(got, want):
            if type(b) is Metric:
                _same(a, b)
            else:
                assert a == b
    else:
        assert (got.line, got.column, got.code, got.reason) == (
            want.line, want.column, want.code, want.reason)
    skipped = list(_codec_py.iter_decode(raw, now_ms=now, errors="skip"))
    valid = [r for r in (_exact(x, now) for x in lines if x)
             if r is not None and not isinstance(r, _scan._LineFault)]
    assert skipped == valid
    report = _codec_py.validate(raw, now_ms=now, max_errors=None, max_warnings=None)
    assert (report.lines_ok, report.lines_invalid, report.error_counts, report.lines_total) == (
        want_report.lines_ok, want_report.lines_invalid, want_report.error_counts,
        want_report.lines_total)
    assert [tuple(e) for e in report.errors] == want_report.errors
    assert report.warnings == want_report.warnings
    assert report.warnings_total == want_report.warnings_total


def gen_body_lines(r: S.R) -> List[str]:
    out = []
    for _ in range(r.randint(1, 6)):
        k = r.randrange(10)
        if k < 5:
            out.append(gen_fast_line(r)[0])
        elif k < 8:
            out.append(gen_fast_or_mutated(r))
        elif k < 9:
            out.append(r.choice(["", " ", "\r", "#abc gauge dt.meta.unit=ms", "abc 1 5",
                                 "abc.count 1 5", "abc count,delta=1 99999999999"]))
        else:
            out.append(r.choice(_CORPUS))
    return out


@given(S.seeded(gen_body_lines), st.sampled_from(NOWS), st.booleans())
def test_drivers_are_the_exact_scanner_line_by_line(lines, now, final_lf):
    _check_body(lines, now, final_lf)


@pytest.mark.parametrize("step, slice_bytes", [(1, 1), (40, 300), (1 << 16, 1 << 20)])
def test_line_numbers_across_ranges_and_slices(monkeypatch, step, slice_bytes):
    """Ranges of the block path and byte slices of the body, of any size, cut
    only at line ends: every line keeps its number."""
    from dtproto import _codec_py

    monkeypatch.setattr(_scan, "_BLOCK_STEP", step)
    monkeypatch.setattr(_codec_py, "_SLICE", slice_bytes)
    lines = list(_CORPUS[:60])
    for i, extra in ((0, ""), (7, "bad line"), (8, ""), (20, " "), (21, "abc 1 5"),
                     (33, "#abc gauge dt.meta.unit=ms"), (40, "abc,k=v\\x 1"), (59, "x y")):
        lines.insert(i, extra)
    for final_lf in (False, True):
        _check_body(lines, None, final_lf)
        _check_body(lines + [""], NOW, final_lf)


@pytest.mark.parametrize("line", [
    "abc" + ",k=v" * 50 + ",k=v 1",
    "abc" + ",k=" + "a" * 30_000 + " 1",
    "abc" + ",k=" + "a\\," * 10_000 + " 1",
    "abc" + ",k=\"" + "a\\\"" * 10_000 + " 1",
    "abc" + ",k=" + ("a\\," * 100 + ",k=") * 50 + " 1 x",
    "abc" + ",k=\"" + ("a, " * 80 + "\",k=\"") * 50 + "\" 1 x",
    "abc" + "." + "a" * 30_000 + " 1",
    "abc" + ",k" * 20_000 + " 1",
    "abc 1" + " " * 40_000 + "x",
    "abc gauge,min=%s,max=%s,sum=%s,count=1 x" % (("1" * 10_000,) * 3),
])
def test_block_patterns_fail_in_linear_time(line):
    """Lines a block pattern almost takes: a pattern that could match a
    value two ways would take exponential time on these."""
    import time

    body = "\n".join([line] * 3).encode()
    t0 = time.process_time()
    for now in (None, NOW):
        _scan._fast_rows(body.decode(), 0, len(body), now)
        _scan._CHECK_RE.findall(body.decode())
    assert time.process_time() - t0 < 2.0


# ---------------------------------------------------------------------------
# The encoder: _fast_head is None or exactly _head.
# ---------------------------------------------------------------------------

def _head_or_error(key: Any, dims: Any) -> Any:
    try:
        return _enc._head(key, dims)
    except Exception as e:  # noqa: BLE001 (the error itself is _head's business)
        return type(e)


def _check_head(key: Any, dims: Any) -> None:
    fast = _enc._fast_head(key, _enc._read_once(dims))  # as its callers give a dict
    if fast is not None:
        assert fast == _head_or_error(key, dims)


@given(S.metrics(), st.booleans())
def test_fast_head_is_head(m, as_dict):
    dims = dict(m.dimensions) if as_dict else m.dimensions
    _check_head(m.key, dims)
    if len(m.dimensions) <= 50:
        # a dict reaches _fast_head as its callers give it, read by _read_once
        pairs = _enc._read_once(dims)
        assert _enc._fast_head(m.key, pairs) == _enc._head(m.key, dims)


_ODD = st.one_of(st.text(max_size=8), st.sampled_from(["host", "a.b", "A", "x" * 101, "dt.x", ""]),
                 st.integers(), st.none(), st.binary(max_size=3))


@given(st.one_of(S.metric_keys(), _ODD),
       st.one_of(st.dictionaries(_ODD, _ODD, max_size=4),
                 st.lists(st.tuples(_ODD, _ODD), max_size=4).map(tuple),
                 st.lists(st.lists(_ODD, max_size=3), max_size=3).map(tuple)))
def test_fast_head_never_accepts_more(key, dims):
    _check_head(key, dims)


def test_encoder_fast_paths_write_what_encode_writes():
    """gauge/count/summary on every-line-unique series (the fast paths) give
    exactly the bytes of encode() on the same records (the general path)."""
    from dtproto._corpus import encoder_loop, make_records

    recs = make_records(5_000, seed=3, cardinality=UNIQUE)
    assert encoder_loop(_enc.Encoder, recs.tuples)() == _enc.encode(recs.metrics)


def _general_line(method: str, args: tuple) -> Any:
    """What the general helpers (the exact _head, _finish) make of a call: the
    line's bytes, or the EncodeError's (code, field)."""
    from dtproto.errors import EncodeError

    try:
        if method == "summary":
            key, mn, mx, sm, cnt, dims, ts = args
            payload = _enc._summary_payload(mn, mx, sm, cnt)
        else:
            key, value, dims, ts = args
            payload = ("gauge," if method == "gauge" else "count,delta=") + \
                _enc._format_number(value, "value")
        return _enc._finish(_enc._head(key, dims), payload, ts).encode()
    except EncodeError as e:
        return (e.code, e.field)


def _encoder_line(method: str, args: tuple) -> Any:
    from dtproto.errors import EncodeError

    enc = _enc.Encoder()
    try:
        getattr(enc, method)(*args)
    except EncodeError as e:
        assert enc.getvalue() == b"" and enc.lines == 0
        return (e.code, e.field)
    return enc.getvalue()


# Around the integral-float shortcut of Encoder._point ("%d" instead of repr):
# the signed zeros, the last integers below 1e16 and the first above, 2**53
# and its neighbours, the extremes.
_INTEGRAL_EDGES = [0.0, -0.0, 1.0, -1.0, 7.0, 1e15, -1e15, 9999999999999998.0,
                   -9999999999999998.0, 1e16, -1e16, 1.0000000000000002e16, 2.0 ** 53,
                   2.0 ** 53 + 2, -(2.0 ** 53), 1e22, 1.7976931348623157e308, 0.5, -2.5,
                   5e-324, 123456789.0, 4294967296.0]


@pytest.mark.parametrize("method", ["gauge", "count"])
@pytest.mark.parametrize("value", _INTEGRAL_EDGES + [math.nextafter(x, d) for x in
                                                      (1e16, -1e16, 1.0, 0.0)
                                                      for d in (0.0, math.inf, -math.inf)])
def test_integral_values_are_written_as_repr_would(method, value):
    for dims in (None, {"k": "v"}, (("k", "v"),)):
        args = ("a.b", value, dims, None)
        assert _encoder_line(method, args) == _general_line(method, args), value


@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["gauge", "count"]))
def test_any_finite_value_is_written_as_repr_would(value, method):
    args = ("a.b", value, {"k": "v"}, 1_700_000_000_000)
    assert _encoder_line(method, args) == _general_line(method, args)


_VALUES = st.one_of(st.text(max_size=6), st.sampled_from(
    ["a b", "x,y=z", 'q"\\', "ü 😀", "\x00", "\x7f", "\ud800", "a" * 255, "a" * 256, "\\ " * 128,
     "\\", "=", ",k=v"]))


@given(S.metrics(), st.booleans(), st.sampled_from(["gauge", "count", "summary"]),
       st.lists(st.tuples(st.sampled_from(["k", "a.b", "x" * 100, "x" * 101, "K", "dt.x", ""]),
                          _VALUES), max_size=4),
       st.sampled_from([None, 1_700_000_000_000, 5, -1, 2**63, True, 1.5]))
def test_encoder_fast_paths_are_the_general_path(m, as_dict, method, extra, ts):
    """gauge/count/summary: the bytes the general helpers would write, or
    their error, for valid and invalid dimensions, values and timestamps."""
    import warnings

    dims: Any = tuple(m.dimensions) + tuple(extra)
    if as_dict:
        dims = dict(dims)
    if method == "summary":
        s = (m.min, m.max, m.sum, m.count) if m.kind == "summary" else (1.0, 2.0, 3.0, 2)
        args: tuple = (m.key,) + s + (dims, ts)
    else:
        args = (m.key, m.value if m.value is not None else 1.5, dims, ts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _encoder_line(method, args) == _general_line(method, args)


# Dimensions whose joined text ("k=v,...") reads alike: the same text from
# other pairs, from fewer pairs, plain and escaped.  The Encoder's memo
# (_enc._memo) keeps checked texts, so a text met again must still give its
# own pairs' line.
_ALIKE = [
    {"a": "x,b=y", "c": "z"}, {"a": "x", "b": "y,c=z"}, {"a": "x", "b": "y", "c": "z"},
    {"a": "x,b=y,c=z"}, {"a": "b", "c": "d"}, {"a": "b,c=d"}, {"a": "b c"}, {"a": "b\\ c"},
    {"a": 'q"'}, {"a": "=", "b": ","}, {"a": "=,b=,"}, {"a": "x", "b": "y\x00"},
    {"a": "x" * 255, "b": "y"}, {"a": "x" * 256}, {"a": "\ud800"}, {"a": "ü c"},
]


def _alike_lines(calls: List[Tuple[str, tuple]]) -> None:
    """One Encoder makes every call in turn; each line (or error) is the general path's."""
    from dtproto.errors import EncodeError

    enc = _enc.Encoder()
    for method, args in calls:
        before = enc.getvalue()
        try:
            getattr(enc, method)(*args)
        except EncodeError as e:
            assert (e.code, e.field) == _general_line(method, args), (method, args)
            assert enc.getvalue() == before
        else:
            assert enc.getvalue()[len(before):] == _general_line(method, args), (method, args)


def _alike_call(dims: Any, ts: Optional[int], method: str) -> Tuple[str, tuple]:
    if method == "summary":
        return method, ("a.b", 1.0, 2.0, 3.0, 2, dims, ts)
    return method, ("a.b", 2.5, dims, ts)


@pytest.mark.parametrize("small", [None, 64])
def test_encoder_memo_tells_apart_texts_that_read_alike(monkeypatch, small):
    """The alike dimensions in turn, each met three times, as a dict and as
    pairs; with the memo shrunk to 64 entries, texts also evict each other."""
    fresh_memo(monkeypatch, small)
    calls = []
    for i, d in enumerate(_ALIKE + _ALIKE[::-1] + _ALIKE):
        dims = d if i % 2 else tuple(d.items())
        calls.append(_alike_call(dims, None if i % 3 else NOW, ["gauge", "count", "summary"][i % 3]))
    _alike_lines(calls)
    assert _enc._memo_stat[0] > 0  # the third sightings were hits


def test_encoder_memo_rests_while_series_do_not_repeat(monkeypatch):
    """Unique series send the memo to rest after a window of misses; after
    the rest it is consulted again and hits on series that repeat.  Every
    line is the general path's all along."""
    from dtproto._corpus import encoder_loop, make_records

    monkeypatch.setattr(_enc, "_MEMO_WINDOW", 64)
    monkeypatch.setattr(_enc, "_MEMO_REST", 256)
    fresh_memo(monkeypatch, None)
    unique = make_records(200, seed=5, cardinality=UNIQUE)
    repeated = make_records(600, seed=5, cardinality=10)
    for recs in (unique, repeated):
        assert encoder_loop(_enc.Encoder, recs.tuples)() == _enc.encode(recs.metrics)
        if recs is unique:
            assert _enc._memo_rest.__length_hint__() > 0  # resting
    assert _enc._memo_rest.__length_hint__() == 0  # tried again,
    assert _enc._memo_stat[0] > 0  # and it pays


@given(st.lists(st.lists(st.tuples(st.sampled_from("abc"),
                                   st.sampled_from(["x", "y", "z", ",", "=", " ", "x,b=y", "y,c=z",
                                                    "b=", ",c", "\\", "\x01"])),
                         min_size=1, max_size=4), min_size=1, max_size=30),
       st.sampled_from([None, 4]))
def test_encoder_memo_is_never_another_series(pair_lists, small):
    """Any sequence of dimensions built from a few keys and values that
    rejoin into one another's text: one Encoder writes each line the general
    path writes (with 4 entries, evictions too)."""
    calls = [_alike_call(tuple(pairs), None, "gauge") for pairs in pair_lists]
    with pytest.MonkeyPatch.context() as mp:
        fresh_memo(mp, small)
        _alike_lines(calls * 3)  # a text is let in the second time, hit the third


def test_encoder_memo_is_bounded_whatever_the_texts(monkeypatch):
    """The memo never holds more than _MEMO_MAX texts or _MEMO_CHARS
    characters of them, and never a text longer than _MEMO_TEXT_MAX (texts
    of 1 to 15 valid pairs of up to 200 characters, 10 to 3,059 characters
    in all, each met three times); the lines stay the general path's."""
    fresh_memo(monkeypatch, None)
    monkeypatch.setattr(_enc, "_MEMO_MAX", 50)
    monkeypatch.setattr(_enc, "_MEMO_CHARS", 2_000)
    longest = _enc._MEMO_TEXT_MAX
    for pairs, size in ((1, 8), (1, 200), (4, 200), (5, 200), (6, 200), (15, 200)):
        for i in range(60):
            dims = {"k%d" % j: ("%d-" % i + "v" * size)[:size] for j in range(pairs)}
            _alike_lines([_alike_call(dims, None, "gauge")] * 3)
            kept = list(map(len, _enc._memo))
            assert len(kept) <= 50 and sum(kept) <= 2_000
            assert max(kept, default=0) <= longest
    assert _enc._memo_stat[0] > 0  # the third sightings of the short texts were hits
    assert max(map(len, _enc._memo), default=0) > 0


class _Alias(str):
    """A value that hashes and compares as "G1,Old Gen": a memo looking it
    up by equality would write that text's escape (for "G2,Old Gen", with as
    many marks, even the count of marks would agree)."""

    def __hash__(self) -> int:
        return hash("G1,Old Gen")

    def __eq__(self, other: Any) -> bool:
        return True

    def __ne__(self, other: Any) -> bool:
        return False


@given(st.lists(st.lists(st.tuples(st.sampled_from(["host", "a", "b.c"]),
                                   st.sampled_from(ESCAPED_VALUES)),
                         min_size=1, max_size=4), min_size=1, max_size=20),
       st.sampled_from([None, 52]), st.sampled_from(["gauge", "count", "summary"]))
def test_encoder_escape_memo_gives_the_general_line(pair_lists, most, method):
    """Values to escape (and plain, invalid, too long ones) in any mix, as
    pairs and as dicts, each line met three times with values kept and
    evicted (52: the memo starts again after two values): every line, or
    error, is the general path's."""
    calls = []
    for pairs in pair_lists:
        calls.append(_alike_call(dims_of(pairs), NOW, method))
    with pytest.MonkeyPatch.context() as mp:
        kept = fresh_escapes(mp, most)
        _alike_lines(calls * 3)
        assert len(kept) <= (most or _enc._ESCAPES_MAX)
        # only values that needed an escape, each with its own escape
        for value, escaped in kept.items():
            assert type(value) is str and escaped != value
            assert escaped == _enc._escape_value(value, "v", _enc.MAX_DIMENSION_VALUE)


# Characters around the one-pass escape of a line's values: the three it
# escapes, the two that make a text read more than one way, controls, a
# valid character that is not printable, a non-ASCII one, a lone surrogate.
_ESCAPE_ALPHABET = st.sampled_from(list(' "\\,=\t\x7f\x1fab\u2028\u00e9\ud800'))


@given(st.lists(st.tuples(st.sampled_from(["host", "a", "b.c", "k:d"]),
                          st.one_of(st.text(_ESCAPE_ALPHABET, max_size=6),
                                    st.builds(lambda c, n: c * n, _ESCAPE_ALPHABET,
                                              st.integers(250, 258)))),
                min_size=1, max_size=4),
       st.booleans(), st.sampled_from([None, NOW]),
       st.sampled_from(["gauge", "count", "summary"]))
def test_encoder_escapes_a_lines_values_in_one_pass_only_when_exact(pairs, as_dict, ts, method):
    """With both memos resting or empty, a line whose values' marks are only
    spaces, quotes and backslashes is escaped from its own text in one pass
    (the count of marks must equal the escapes added); any other mark (a
    control, a "," or "=", a value of 256 characters) leaves it to the
    general path.  Every line or error is the general path's."""
    dims = dict(pairs) if as_dict else tuple(pairs)
    with pytest.MonkeyPatch.context() as mp:
        fresh_escapes(mp)
        _alike_lines([_alike_call(dims, ts, method)] * 2)


def test_encoder_escape_memo_counts_every_mark_of_the_line(monkeypatch):
    """A kept value beside a value with a mark of its own (an escape, a
    control): the kept escape accounts for its own marks only, so the line
    goes to the exact helpers, which escape both or refuse the control.
    (The kept values hold a ",": a line whose values' marks are only
    spaces, quotes and backslashes is escaped from its own text and never
    asks the memo.)"""
    kept = fresh_escapes(monkeypatch)
    _alike_lines([_alike_call({"a": "G1,Old Gen"}, None, "gauge")])
    assert kept == {"G1,Old Gen": "G1\\,Old\\ Gen"}
    _alike_lines([_alike_call(d, None, "gauge") for d in (
        {"a": "G1,Old Gen", "b": "x y"}, {"a": "G1,Old Gen", "b": "x\ty"},
        {"a": "G1,Old Gen", "b": "x,b=y"}, {"a": "G1,Old Gen", "b": "G1,Old Gen"},
        {"a": "G1,Old Gen", "b": "v" * 256}, {"a": "x y", "b": "G1,Old Gen"})])
    assert "x y" in kept and "x\ty" not in kept and "v" * 256 not in kept


def test_encoder_escape_memo_is_bounded(monkeypatch):
    """Values to escape that never repeat: the memo starts again before it
    holds more than _ESCAPES_MAX values; the lines stay the general path's."""
    kept = fresh_escapes(monkeypatch, 60)
    for i in range(200):
        _alike_lines([_alike_call({"a": "v%d,x" % i, "b": "w%d y" % i}, None, "gauge")] * 2)
        assert len(kept) <= 60
    assert kept


def test_encoder_escape_memo_reads_a_str_subclass_as_its_text(monkeypatch):
    """A value of a str subclass that hashes and compares as a kept value is
    written as its own text: the memo is only asked about exact str."""
    kept = fresh_escapes(monkeypatch)
    _alike_lines([_alike_call({"a": "G1,Old Gen"}, None, "gauge")] * 2)
    assert "G1,Old Gen" in kept
    for dims in ({"a": _Alias("G2,Old Gen")}, (("a", _Alias("G2,Old Gen")),)):
        enc = _enc.Encoder()
        enc.gauge("a.b", 2.5, dims)
        assert enc.getvalue() == b"a.b,a=G2\\,Old\\ Gen gauge,2.5\n"


def test_encoder_escape_memo_emptied_mid_line_changes_nothing(monkeypatch):
    """Another thread (or a collection's callback) empties the memo while a
    line reads it: the line is written from the exact escape all the same."""
    import sys

    kept = fresh_escapes(monkeypatch)
    dims = {"a": "G1,Old Gen", "b": "id-1", "c": 'say "hi"'}
    _alike_lines([_alike_call(dims, None, "gauge")])
    assert len(kept) == 2
    code = _enc._escaped_from_memo.__code__
    fired = []

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None

        def lines(frame, event, arg):
            if event == "line" and "parts" in frame.f_locals and not fired:
                kept.clear()
                fired.append(1)
            return lines
        return lines

    sys.settrace(tracer)
    try:
        _alike_lines([_alike_call(dict(dims, b="id-2"), None, "gauge")])
    finally:
        sys.settrace(None)
    assert fired


def test_encoder_lines_count_only_new_bytes_of_their_own_buffer():
    """``lines`` counts the LFs appended since it was last asked, and never
    continues a tally of another buffer: a reader's tally written after a
    clear() (from another thread) names the old buffer and is not used."""
    enc = _enc.Encoder()
    for i in range(3):
        enc.gauge("a.b", 1.0, {"k": str(i)})
    assert enc.lines == 3
    assert enc._tally[1:] == (len(enc), 3)  # what was counted, and up to where
    stale = enc._tally
    enc.clear()
    enc.gauge("a.b", 1.0)
    enc._tally = stale  # the reader's write, landing after clear()
    assert enc.lines == 1 and enc._tally[1] == len(enc)
    enc.count("a.b", 2.0)
    assert enc.lines == 2 and enc._tally == (enc._buf, len(enc), 2)

    class Counting(bytearray):  # records the ranges counted
        def count(self, *args: Any) -> int:
            ranges.append(args[1:])
            return super().count(*args)

    ranges: list = []
    enc._buf = Counting()
    enc._tally = (enc._buf, 0, 0)
    enc.gauge("a.b", 1.0)
    first = len(enc)
    assert enc.lines == 1
    enc.gauge("a.b", 2.0)
    assert enc.lines == 2 and ranges == [(0, first), (first, len(enc))]


class _Flip:
    """A pair whose value is ``first`` when first read and ``then`` after."""

    def __init__(self, first: str = "x y", then: str = "EVIL") -> None:
        self.reads = 0
        self.first, self.then = first, then

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> str:
        if i == 0:
            return "a"
        if i == 1:
            self.reads += 1
            return self.first if self.reads == 1 else self.then
        raise IndexError(i)


class _Short(str):
    """A value that says it is one character long."""

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("small", [None, 64])
def test_encoder_memo_keeps_only_what_it_checked(monkeypatch, small):
    """What the memo keeps comes from the text the Encoder checked, never from
    reading the pairs again: a pair that answers differently the second time
    and a value that lies about its length write their own lines (or fail)
    and leave nothing that changes the lines of ordinary calls after them."""
    from dtproto.errors import EncodeError

    fresh_memo(monkeypatch, small)
    for _ in range(3):
        enc = _enc.Encoder()
        enc.gauge("m.k", 1.5, (_Flip(),))
        assert enc.getvalue() in (b"m.k,a=x\\ y gauge,1.5\n", b"m.k,a=EVIL gauge,1.5\n")
        with pytest.raises(EncodeError):
            _enc.Encoder().gauge("m.k", 1.5, {"a": _Short("x" * 300)})
        # a text that reads two ways is escaped from a second reading, used
        # only when it joins to the text checked: never a control written
        enc = _enc.Encoder()
        try:
            enc.gauge("m.k", 1.5, (_Flip("x,y", "x\x00y"),))
        except EncodeError:
            assert enc.getvalue() == b""
        else:
            assert enc.getvalue() == b"m.k,a=x\\,y gauge,1.5\n"
    for method, args in [("gauge", ("m.k", 1.5, {"a": "x y"}, None)),
                         ("gauge", ("m.k", 1.5, {"a": "x" * 300}, None)),
                         ("gauge", ("m.k", 1.5, {"a": "x" * 255}, None))]:
        for _ in range(3):
            assert _encoder_line(method, args) == _general_line(method, args)


def test_encoder_takes_a_pair_that_is_a_mapping_as_the_exact_path_does():
    """A dimension pair that is a dict of two keys unpacks to its keys (as
    ``k, v = pair`` does in the exact path and in the Cython core); the fast
    path used to raise KeyError on ``pair[0]``."""
    for method, args in [("gauge", ("m.k", 1.0, ({"x": 1, "y": 2},), None)),
                         ("count", ("m.k", 1.0, (("a", "b"), {"x": 1, "y": 2}), None))]:
        assert _encoder_line(method, args) == _general_line(method, args) == \
            b"m.k," + (b"a=b,x=y" if len(args[2]) == 2 else b"x=y") + \
            (b" gauge,1\n" if method == "gauge" else b" count,delta=1\n")
