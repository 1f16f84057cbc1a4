"""The pure-Python fast paths against the exact scanner and the exact encoder.

The fast paths (``dtproto._scan._fast_line``, ``_fast_check`` and the
encoder's ``_fast_head``) are built on regular expressions and ``str``
methods; the exact scanner and ``_head`` are the readable definition.  A fast
path may decline (None: the exact code decides), but whatever it accepts must
be exactly what the exact code gives: the same record, the same head.  These
properties run over lines in the fast paths' own shape (single spaces, the
canonical summary order) with every kind of value -- escapes, quoted values,
unicode, 50 dimensions, values of 255 code points -- and over the same lines
mutated byte by byte.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strategies as S
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


def _check_line(line: str, now: Optional[int]) -> None:
    fast = _scan._fast_line(line, now)
    check = _scan._fast_check(line, now)
    if fast is None and check is None:
        return
    exact = _exact(line, now)
    assert not isinstance(exact, _scan._LineFault), (line, exact.code)  # never accept more
    if fast is not None:
        _same(fast, exact)
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
    taken = 0
    for line in _CORPUS:
        _check_line(line, now)
        taken += _scan._fast_line(line, now) is not None
    if now is None:
        assert taken == len(_CORPUS)


def test_cold_and_warm_caches_agree():
    """The same lines give the same records whether their heads are cached or not."""
    lines = _CORPUS[:500]
    _scan._head_cache.clear()
    _scan._heads_seen.clear()
    cold = [_scan._fast_line(line, None) for line in lines]
    warm = [_scan._fast_line(line, None) for line in lines * 2][len(lines):]
    assert cold == warm == [_scan._scan_line(line, None) for line in lines]


# ---------------------------------------------------------------------------
# The encoder: _fast_head is None or exactly _head.
# ---------------------------------------------------------------------------

def _head_or_error(key: Any, dims: Any) -> Any:
    try:
        return _enc._head(key, dims)
    except Exception as e:  # noqa: BLE001 (the error itself is _head's business)
        return type(e)


def _check_head(key: Any, dims: Any) -> None:
    fast = _enc._fast_head(key, dims)
    if fast is not None:
        assert fast == _head_or_error(key, dims)


@given(S.metrics(), st.booleans())
def test_fast_head_is_head(m, as_dict):
    dims = dict(m.dimensions) if as_dict else m.dimensions
    _check_head(m.key, dims)
    if len(m.dimensions) <= 50:
        assert _enc._fast_head(m.key, dims) == _enc._head(m.key, dims)


_ODD = st.one_of(st.text(max_size=8), st.sampled_from(["host", "a.b", "A", "x" * 101, "dt.x", ""]),
                 st.integers(), st.none(), st.binary(max_size=3))


@given(st.one_of(S.metric_keys(), _ODD),
       st.one_of(st.dictionaries(_ODD, _ODD, max_size=4),
                 st.lists(st.tuples(_ODD, _ODD), max_size=4).map(tuple),
                 st.lists(st.lists(_ODD, max_size=3), max_size=3).map(tuple)))
def test_fast_head_never_accepts_more(key, dims):
    _check_head(key, dims)


def test_encoder_skips_the_cache_when_series_do_not_repeat():
    """After a window of new series the encoder stops caching; the bytes are the same."""
    from dtproto._corpus import encoder_loop, make_records

    tuples = make_records(_enc._ADAPT_WINDOW + 2_000, seed=3, cardinality=UNIQUE).tuples
    enc = _enc.Encoder()
    for kind, key, dims, value, *_ in tuples:
        enc.gauge(key, 1.0, dims)
    assert enc._direct > 0
    plain = b"".join(_enc._record_line(_scan._tuple_new(Metric, (key, tuple(dims.items()), "gauge",
                                                                  1.0, None, None, None, None,
                                                                  None))).encode()
                     for kind, key, dims, value, *_ in tuples)
    assert enc.getvalue() == plain
    assert encoder_loop(_enc.Encoder, tuples)() == encoder_loop(_enc.Encoder, tuples)()
