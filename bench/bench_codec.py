"""Codec throughput, one bench per operation and option, per implementation.

Run (pure-Python and Cython rows side by side)::

    python3 -m pytest bench --benchmark-only --benchmark-group-by=func
    DTPROTO_BENCH_LINES=1000000 python3 -m pytest bench --benchmark-only

Each bench runs ``DTPROTO_BENCH_ROUNDS`` rounds (default 5).  Every bench stores ``lines`` and ``bytes`` per round in ``extra_info``, plus
``lines_per_s`` and ``mb_per_s`` computed from the fastest round.  The
garbage collector stays enabled, as users run it.  Nothing here asserts on
time; the side-by-side peer comparison is ``bench/compare.py``.
"""

from __future__ import annotations

import io
import os
from collections import deque
from typing import Any, Callable, Optional

import pytest

from corpus import BASE_TS_MS, encoder_loop

# Fixed rounds (one call of the operation over the whole corpus each) rather
# than pytest-benchmark's calibration: every round already takes long enough
# to time, and a small DTPROTO_BENCH_LINES run stays quick.
# Default: 5 rounds, 3 for small smoke-test corpora.
_LINES = int(os.environ.get("DTPROTO_BENCH_LINES", "100000").replace("_", "") or 100_000)
ROUNDS = int(os.environ.get("DTPROTO_BENCH_ROUNDS") or (5 if _LINES >= 20_000 else 3))


def _run(benchmark: Any, fn: Callable[[], Any], lines: int, nbytes: Optional[int]) -> Any:
    """Time ``fn``; ``nbytes=None`` means "the size of what fn returns" (encoders)."""
    result = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1)
    if nbytes is None:
        nbytes = len(result)
    benchmark.extra_info["lines"] = lines
    benchmark.extra_info["bytes"] = nbytes
    stats = getattr(benchmark, "stats", None)
    best = getattr(getattr(stats, "stats", None), "min", None)
    if best:
        benchmark.extra_info["lines_per_s"] = round(lines / best)
        benchmark.extra_info["mb_per_s"] = round(nbytes / best / 1e6, 2)
    return result


# --- decode ---------------------------------------------------------------

def test_decode(benchmark, impl, corpus, n_lines):
    out = _run(benchmark, lambda: impl.decode(corpus), n_lines, len(corpus))
    assert len(out) == n_lines


def test_decode_str(benchmark, impl, corpus_str, corpus, n_lines):
    out = _run(benchmark, lambda: impl.decode(corpus_str), n_lines, len(corpus))
    assert len(out) == n_lines


def test_decode_now_ms(benchmark, impl, corpus, n_lines):
    """With the timestamp window check (``now_ms``) on."""
    out = _run(benchmark, lambda: impl.decode(corpus, now_ms=BASE_TS_MS), n_lines, len(corpus))
    assert len(out) == n_lines


def test_decode_escaped(benchmark, impl, escaped_corpus, n_lines):
    out = _run(benchmark, lambda: impl.decode(escaped_corpus), n_lines, len(escaped_corpus))
    assert len(out) == n_lines


# --- iter_decode ----------------------------------------------------------

def test_iter_decode(benchmark, impl, corpus, n_lines):
    """Streaming from a binary file object, records consumed one by one."""
    def run() -> int:
        sink = deque(impl.iter_decode(io.BytesIO(corpus)), maxlen=1)
        return len(sink)
    _run(benchmark, run, n_lines, len(corpus))


def test_iter_decode_chunks(benchmark, impl, corpus, n_lines):
    """An iterable of 64 KiB chunks: lines straddle chunk boundaries."""
    step = 1 << 16
    chunks = [corpus[i:i + step] for i in range(0, len(corpus), step)]
    _run(benchmark, lambda: deque(impl.iter_decode(chunks), maxlen=0), n_lines, len(corpus))


def test_iter_decode_skip_invalid(benchmark, impl, invalid_corpus, n_lines):
    """``errors="skip"`` over the corpus with 1% invalid lines."""
    def run() -> int:
        return sum(1 for _ in impl.iter_decode(io.BytesIO(invalid_corpus), errors="skip"))
    _run(benchmark, run, n_lines, len(invalid_corpus))


# --- validate -------------------------------------------------------------

def test_validate(benchmark, impl, corpus, n_lines):
    report = _run(benchmark, lambda: impl.validate(corpus), n_lines, len(corpus))
    assert report.lines_ok == n_lines and report.lines_invalid == 0


def test_validate_now_ms(benchmark, impl, corpus, n_lines):
    report = _run(benchmark, lambda: impl.validate(corpus, now_ms=BASE_TS_MS), n_lines,
                  len(corpus))
    assert report.lines_ok == n_lines


def test_validate_stream(benchmark, impl, corpus, n_lines):
    """From a binary file object (the bounded-memory path)."""
    report = _run(benchmark, lambda: impl.validate(io.BytesIO(corpus)), n_lines, len(corpus))
    assert report.lines_ok == n_lines


def test_validate_escaped(benchmark, impl, escaped_corpus, n_lines):
    report = _run(benchmark, lambda: impl.validate(escaped_corpus), n_lines,
                  len(escaped_corpus))
    assert report.lines_ok == n_lines


def test_validate_invalid(benchmark, impl, invalid_corpus, n_lines):
    """The error path: 1% invalid lines, each reported with line, column, code and message."""
    report = _run(benchmark, lambda: impl.validate(invalid_corpus), n_lines,
                  len(invalid_corpus))
    assert report.lines_invalid > 0 and report.lines_ok + report.lines_invalid == n_lines


# --- encode ---------------------------------------------------------------

def test_encode_records(benchmark, impl, records, n_lines):
    out = _run(benchmark, lambda: impl.encode(records.metrics), n_lines, None)
    assert out.count(b"\n") == n_lines


def test_encode_escaped_records(benchmark, impl, escaped_records, n_lines):
    out = _run(benchmark, lambda: impl.encode(escaped_records.metrics), n_lines, None)
    assert out.count(b"\n") == n_lines


def test_encoder_loop(benchmark, impl, records, n_lines):
    """``Encoder.gauge/count/summary`` per data point, dimensions as dicts."""
    out = _run(benchmark, lambda: encoder_loop(impl.Encoder, records.tuples)(), n_lines, None)
    assert out.count(b"\n") == n_lines


def test_encoder_loop_pairs(benchmark, impl, records, n_lines):
    """The same with dimensions as tuples of pairs (the decoder's form)."""
    tuples = [(t[0], t[1], m[1]) + t[3:] for t, m in zip(records.tuples, records.metrics)]
    out = _run(benchmark, lambda: encoder_loop(impl.Encoder, tuples)(), n_lines, None)
    assert out.count(b"\n") == n_lines


def test_encoder_escaped(benchmark, impl, escaped_records, n_lines):
    out = _run(benchmark, lambda: encoder_loop(impl.Encoder, escaped_records.tuples)(),
               n_lines, None)
    assert out.count(b"\n") == n_lines


# --- corpus sanity (not timed; skipped by --benchmark-only) ---------------

def test_corpus_is_what_records_say(impl, corpus, records, escaped_corpus, escaped_records):
    assert impl.decode(corpus) == records.metrics
    assert impl.decode(escaped_corpus) == escaped_records.metrics


def test_encode_round_trips(impl, records, escaped_records):
    for recs in (records, escaped_records):
        assert impl.decode(impl.encode(recs.metrics)) == recs.metrics
        assert impl.decode(encoder_loop(impl.Encoder, recs.tuples)()) == recs.metrics


def test_invalid_corpus_has_one_percent(impl, invalid_corpus, n_lines):
    report = impl.validate(invalid_corpus)
    assert report.lines_ok + report.lines_invalid == n_lines
    assert 0.005 * n_lines <= report.lines_invalid <= 0.02 * n_lines + 5
    assert len(report.error_counts) >= 8 or n_lines < 5_000


@pytest.mark.parametrize("escape_heavy", [False, True])
def test_corpus_is_deterministic(escape_heavy):
    from corpus import iter_corpus_chunks, make_corpus

    a = make_corpus(1_000, seed=7, escape_heavy=escape_heavy)
    assert a == make_corpus(1_000, seed=7, escape_heavy=escape_heavy)
    assert a != make_corpus(1_000, seed=7, escape_heavy=not escape_heavy)
    chunks = iter_corpus_chunks(seed=7, lines_per_chunk=300, escape_heavy=escape_heavy)
    assert b"".join(next(chunks) for _ in range(4)).startswith(a)
