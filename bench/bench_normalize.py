"""What ``Encoder(normalize=True)`` costs, on valid and on dirty names (issue 6).

Two ways to run it:

* ``pytest bench -k bench_normalize --benchmark-only`` — pytest-benchmark rows
  per implementation (``lines`` and ``bytes`` per round in ``extra_info``);
* ``python3 bench/bench_normalize.py [--lines N]`` — one process, best of N,
  a table of ratios: ``normalize=True`` against ``normalize=False`` on valid
  input (the requirement is at most 1.3x) and dynatrace-metric-utils (which
  always normalizes) on the same valid and dirty records.

"Dirty" records are the corpus records with names the server rejects, made
deterministically: upper case and spaces in metric keys, upper-case dimension
keys with spaces, zero-width joiners and control characters in values.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any, Callable, List

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
try:  # an installed dtproto wins; otherwise the checkout this script lives in
    import dtproto  # noqa: F401
except ImportError:
    sys.path.insert(1, os.path.dirname(_HERE))

import corpus as _corpus  # noqa: E402
from corpus import encoder_loop  # noqa: E402


def dirty(tuples: List[tuple]) -> List[tuple]:
    """The same data points with names that need normalizing."""
    out = []
    for kind, key, dims, value, mn, mx, sm, cnt, ts in tuples:
        key = key.replace(".", " .", 1).title()
        dims = {k.upper().replace("_", " "): v + "\u200d\t" for k, v in dims.items()}
        out.append((kind, key, dims, value, mn, mx, sm, cnt, ts))
    return out


def dmu_loop(tuples: List[tuple]) -> Callable[[], bytes]:
    from dynatrace.metric.utils import DynatraceMetricsFactory, DynatraceMetricsSerializer

    factory = DynatraceMetricsFactory()
    serialize = DynatraceMetricsSerializer(enrich_with_dynatrace_metadata=False).serialize

    def run() -> bytes:
        out = []
        for kind, key, dims, v, mn, mx, sm, cnt, ts in tuples:
            if kind == "gauge":
                m = factory.create_float_gauge(key, v, dims, ts)
            elif kind == "count":
                m = factory.create_float_counter_delta(key, v, dims, ts)
            else:
                m = factory.create_float_summary(key, mn, mx, sm, cnt, dims, ts)
            out.append(serialize(m))
        return "\n".join(out).encode("utf-8")
    return run


# --- pytest-benchmark ------------------------------------------------------------

def _bench(benchmark: Any, fn: Callable[[], bytes], n: int) -> None:
    out = benchmark(fn)
    benchmark.extra_info["lines"] = n
    benchmark.extra_info["bytes"] = len(out)


def test_encoder_valid_plain(benchmark: Any, impl: Any, records: Any) -> None:
    _bench(benchmark, encoder_loop(impl.Encoder, records.tuples), len(records.tuples))


def test_encoder_valid_normalize(benchmark: Any, impl: Any, records: Any) -> None:
    _bench(benchmark, encoder_loop(impl.Encoder, records.tuples, normalize=True),
           len(records.tuples))


def test_encoder_dirty_normalize(benchmark: Any, impl: Any, records: Any) -> None:
    tuples = dirty(records.tuples)
    _bench(benchmark, encoder_loop(impl.Encoder, tuples, normalize=True), len(tuples))


# --- side by side ------------------------------------------------------------------

def _best(fn: Callable[[], bytes], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: Any = None) -> int:
    import argparse

    from dtproto._impl import available_implementations

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--dmu-lines", type=int, default=20_000,
                    help="points for dynatrace-metric-utils (about 100 us each)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    tuples = _corpus.make_records(args.lines).tuples
    dirty_tuples = dirty(tuples)
    rows = []
    for name, mod in available_implementations().items():
        plain = _best(encoder_loop(mod.Encoder, tuples), args.repeat)
        norm = _best(encoder_loop(mod.Encoder, tuples, normalize=True), args.repeat)
        dirt = _best(encoder_loop(mod.Encoder, dirty_tuples, normalize=True), args.repeat)
        rows.append((name, plain, norm, dirt))
    print("| implementation | normalize=False, valid | normalize=True, valid | cost | "
          "normalize=True, dirty | needed |")
    print("|---|--:|--:|--:|--:|---|")
    for name, plain, norm, dirt in rows:
        print("| %s | %.0f lines/s | %.0f lines/s | %.2fx | %.0f lines/s | <= 1.3x: %s |" % (
            name, args.lines / plain, args.lines / norm, norm / plain, args.lines / dirt,
            "PASS" if norm / plain <= 1.3 else "FAIL"))
    try:
        k = min(args.dmu_lines, args.lines)
        valid = _best(dmu_loop(tuples[:k]), max(1, args.repeat // 2))
        dirt = _best(dmu_loop(dirty_tuples[:k]), max(1, args.repeat // 2))
        print("| dynatrace-metric-utils (always normalizes; first %d points) | | %.0f lines/s | "
              "| %.0f lines/s | |" % (k, k / valid, k / dirt))
    except ImportError:
        print("dynatrace-metric-utils: not installed (pip install '.[bench]')")
    print("\nCommand: python3 bench/bench_normalize.py --lines %d --repeat %d"
          % (args.lines, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
