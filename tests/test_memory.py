"""No leaks: repeating the same work leaves no more live memory behind.

The same round of work (decode, validate, iter_decode, encode, Encoder calls,
error paths; realistic lines, escape-heavy lines, invalid lines, and more
distinct heads than the Cython head cache holds, so entries are evicted) runs
five times; after each round and a ``gc.collect()`` we count

* live Python memory blocks (``sys.getallocatedblocks()``): a missing DECREF
  or a record kept by mistake shows up as blocks that pile up round after
  round;
* the C heap in use (glibc ``mallinfo2``, where available): ``malloc``
  calls of the Cython core that nothing frees.

The bounded caches (the Cython core's 2-way head cache of 32,768 entries, the
reference's 16,384-entry caches) fill during the first two rounds, so later
rounds are compared with the second.  Not timed; the thresholds are far below
what a leak of one object per 100 lines gives and far above the handful of
blocks the interpreter itself may allocate in between.

``bench/leak_check.py`` does the same at 1M lines and reports RSS per round;
``tests/test_stream.py`` checks peak memory while streaming (another property).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import io
import sys
from typing import Any, Dict, List, Optional

import pytest

from dtproto import DecodeError, EncodeError
from dtproto._corpus import make_corpus, make_records

ROUNDS = 6
WARMUP = 3   # the bounded caches (heads seen once, then twice) settle over two rounds


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> Optional[Any]:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    if fn is not None:
        fn.restype = _Mallinfo2
    return fn


MALLINFO2 = _mallinfo2()


def _measure() -> Dict[str, int]:
    gc.collect()
    out = {"blocks": sys.getallocatedblocks()}
    if MALLINFO2 is not None:
        mi = MALLINFO2()
        out["c_heap"] = mi.uordblks + mi.hblkhd
    return out


def _unique_heads(n: int) -> bytes:
    return b"".join(b"mem.test.m%d,host=h-%d gauge,%d.5 1717243200000\n" % (i % 97, i, i)
                    for i in range(n))


@pytest.fixture(scope="module")
def data() -> Dict[str, Any]:
    recs = make_records(20_000, seed=11)
    return {
        "corpus": make_corpus(50_000, seed=11),
        "escape": make_corpus(5_000, seed=12, escape_heavy=True),
        "dirty": make_corpus(5_000, seed=13, invalid_ratio=0.05),
        "unique": _unique_heads(40_000),     # > 32,768 heads: the cache evicts
        "metrics": recs.metrics,
        "tuples": recs.tuples,
    }


def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _part(body: bytes, div: int) -> bytes:
    """The first 1/div of a body, cut at a line end."""
    return body if div == 1 else body[: body.rfind(b"\n", 0, len(body) // div) + 1]


def _round(impl: Any, d: Dict[str, Any], div: int) -> None:
    corpus, unique, escape, dirty = (_part(d[k], div) for k in
                                     ("corpus", "unique", "escape", "dirty"))
    for body in (corpus, escape, unique):
        assert impl.decode(body)
        impl.validate(body)
    report = impl.validate(_chunks(dirty, 4096), max_errors=10)
    assert report.lines_invalid > 0
    for _ in impl.iter_decode(io.BytesIO(corpus)):
        pass
    for _ in impl.iter_decode(_chunks(dirty, 1000), errors="skip"):
        pass
    with pytest.raises(DecodeError):
        impl.decode(dirty)
    for i in range(500 // div):
        with pytest.raises(DecodeError):
            impl.decode(b"my.metric,k=v gauge,%d.5x" % i)
    metrics = d["metrics"][: len(d["metrics"]) // div]
    assert impl.encode(metrics)
    enc = impl.Encoder()
    for i, (kind, key, dims, value, mn, mx, sm, cnt, ts) in enumerate(
            d["tuples"][: len(metrics)]):
        if kind == "gauge":
            enc.gauge(key, value, dims, ts)
        elif kind == "count":
            enc.count(key, value, dims, ts)
        else:
            enc.summary(key, mn, mx, sm, cnt, dims, ts)
        if i % 200 == 0:
            with pytest.raises(EncodeError):
                enc.gauge(key, float("inf"), dims, ts)
            enc.metadata(key, "count", description="d %d" % i, unit="Byte")
            enc.add(metrics[i % len(metrics)])
    assert enc.getvalue()
    enc.clear()


@pytest.fixture
def steady_caches(impl):
    """Pin the Cython head cache warm: adaptive, it fills its bounded slots over
    several rounds (cold stretches store one head in 128), which would read as
    growth here; pinned, it is full after the first round."""
    pin = getattr(impl, "_cache_adaptive", None)
    old = pin(False) if pin else None
    yield
    if pin:
        pin(old)


def test_repeated_work_leaves_nothing_behind(impl, data, steady_caches) -> None:
    div = 10 if impl.__name__.endswith("_py") else 1   # the reference: a tenth of the work
    rows: List[Dict[str, int]] = []
    for _ in range(ROUNDS):
        _round(impl, data, div)
        rows.append(_measure())
    settled = rows[WARMUP - 1]
    later = rows[WARMUP:]
    if settled["blocks"]:   # 0 with PYTHONMALLOC=malloc (the sanitizer run): nothing to count
        # a leak of one object per 100 lines would add hundreds of blocks per round
        grown = max(r["blocks"] for r in later) - settled["blocks"]
        assert grown <= 300, [r["blocks"] for r in rows]
        # while the caches settle: at most what the bounded caches can hold
        assert rows[1]["blocks"] - rows[0]["blocks"] <= 32_768 * 16, [r["blocks"] for r in rows]
    if settled.get("c_heap"):   # glibc, and no sanitizer runtime in the way
        grown = max(r["c_heap"] for r in rows[1:]) - rows[0]["c_heap"]
        assert grown <= 2_000_000, [r["c_heap"] for r in rows]
