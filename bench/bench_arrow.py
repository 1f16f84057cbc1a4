"""Columnar throughput: dtproto.arrow against dtproto.decode and the peers.

Decoding, on 300,000 lines where every line is its own series (plus a share
of escape-heavy lines with quoted values, gauge/count/summary, ~10% without
timestamp, one metadata line in the middle):

* ``decode_table`` (the loaded implementation, and each one available);
* ``dtproto.decode`` (records);
* line-protocol-parser's ``parse_line`` on the same data in InfluxDB form
  (adapter: ``dtproto._peers.lpp_decoder``).

Encoding (measured first, in a fresh process) a pandas DataFrame of 300,000 rows: ``key`` (30
metric keys), ``value`` (float64 of every magnitude: shares below 1e-4, above 1e16, integral,
17-digit), ``host`` (unique per row), ``region`` (with a space and a comma), ``ts`` (int64 epoch
ms); every row its own series.  Its text columns once as pandas makes them (``str``, Arrow-backed
from pandas 3) and once as ``object`` columns of Python strings:

* ``encode_table(df, key="key", value="value", dimensions=["host", "region"],
  timestamp="ts")`` and questdb's ``Buffer.dataframe`` on the same frame (``ts`` as
  datetime64, converted before the timing; adapter ``dtproto._peers.questdb_dataframe``),
  timed in alternation (each round: one of each, ``time.process_time``, so that other work on
  a shared machine weighs less), and their ratio;
* the same rows through ``dtproto.Encoder`` one by one.

GC on, one process, median of 5 (``--repeat``).  Run::

    python bench/bench_arrow.py [--lines N] [--repeat K] [--json]

Peers are optional (``pip install '.[bench,arrow]'``); a missing one is
listed as such.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dtproto  # noqa: E402
from dtproto import _corpus, _impl, _peers  # noqa: E402
from dtproto import arrow as A  # noqa: E402


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    gc.collect()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def decode_corpus(n: int) -> bytes:
    unique = _corpus.make_corpus(n - n // 10, cardinality=_corpus.UNIQUE)
    quoted = _corpus.make_corpus(n // 10 - 1, escape_heavy=True)
    lines = (unique + quoted).splitlines(keepends=True)
    random.Random(7).shuffle(lines)
    lines.insert(len(lines) // 2, b'#app.meta.key gauge dt.meta.displayName="A metric"\n')
    return b"".join(lines)


KEYS = ["app.%s.%s" % (a, b) for a in ("http", "db", "queue", "cache", "jvm", "host")
        for b in ("latency_ms", "requests", "errors", "bytes_in", "usage_percent")]


def number(rng: random.Random) -> float:
    x = rng.random()
    if x < 0.05:
        return rng.random() * 1e-6           # exponent form, small
    if x < 0.10:
        return rng.random() * 1e20           # exponent form, large
    if x < 0.30:
        return float(rng.randrange(100_000))  # integral
    return rng.uniform(-1e6, 1e6)           # 16-17 significant digits


def frame(n: int, text: str = "str") -> Any:
    """The encoding frame; ``text="object"`` makes its text columns object columns."""
    import pandas as pd

    rng = random.Random(3)
    df = pd.DataFrame({
        "key": [KEYS[rng.randrange(len(KEYS))] for _ in range(n)],
        "value": [number(rng) for _ in range(n)],
        "host": ["host-%07d" % i for i in range(n)],
        "region": [rng.choice(["eu-west-1", "us east 1", "ap,south"]) for _ in range(n)],
        "ts": [1_700_000_000_000 + i for i in range(n)],
    })
    if text == "object":
        for c in ("key", "host", "region"):
            df[c] = df[c].astype(object)
    return df


def paired(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple:
    """Median CPU seconds of a and of b, timed in alternation."""
    ta, tb = [], []
    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        a()
        ta.append(time.process_time() - t)
        gc.collect()
        t = time.process_time()
        b()
        tb.append(time.process_time() - t)
    return statistics.median(ta), statistics.median(tb)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    peers = _peers.load_peers()
    rows: Dict[str, Any] = {}
    n = args.lines

    try:
        import pandas as pd
    except ImportError as e:
        rows["encode: (pandas missing)"] = str(e)
    else:
        qname = "questdb %s Buffer.dataframe" % _peers.peer_version("questdb")
        for text in ("str", "object"):
            df = frame(n, text)

            def table(df: Any = df) -> bytes:
                return A.encode_table(df, key="key", value="value",
                                      dimensions=["host", "region"], timestamp="ts")

            label = "encode: encode_table (%s, %s columns)" % (dtproto.IMPLEMENTATION, text)
            if isinstance(peers["questdb"], str):
                rows[label] = (median_time(table, args.repeat), n)
                rows["encode: questdb Buffer.dataframe"] = peers["questdb"]
                continue
            qdf = df.copy()
            qdf["ts"] = pd.to_datetime(qdf["ts"], unit="ms", utc=True)
            run = _peers.questdb_dataframe(peers["questdb"], qdf, "key", ["host", "region"],
                                           "ts")
            table()
            run()
            te, tq = paired(table, run, args.repeat)
            rows[label] = (te, n)
            rows["encode: %s (%s columns)" % (qname, text)] = (tq, n)
            rows["encode: ratio encode_table / questdb (%s columns)" % text] = \
                "%.2fx questdb's speed" % (tq / te)

        df = frame(n)

        def encoder() -> bytes:
            enc = dtproto.Encoder()
            g = enc.gauge
            for k, v, h, r, t in zip(df["key"], df["value"], df["host"], df["region"],
                                     df["ts"]):
                g(k, v, {"host": h, "region": r}, int(t))
            return enc.getvalue()

        rows["encode: Encoder row by row (%s)" % dtproto.IMPLEMENTATION] = (
            median_time(encoder, args.repeat), n)

    buf = decode_corpus(n)
    lines = buf.count(b"\n")
    rows["decode: dtproto.decode (%s)" % dtproto.IMPLEMENTATION] = (
        median_time(lambda: dtproto.decode(buf), args.repeat), lines)
    # the Cython core first: the reference's caches would grow the heap the GC walks
    for name, codec in sorted(_impl.available_implementations().items(),
                              key=lambda kv: kv[0] != "cython"):
        path = "decode_columns" if hasattr(codec, "decode_columns") else "reference columns"
        rows["decode: decode_table (%s, %s)" % (name, path)] = (
            median_time(lambda: A.decode_table(buf, _codec=codec), args.repeat), lines)
    if isinstance(peers["lpp"], str):
        rows["decode: line-protocol-parser"] = peers["lpp"]
    else:
        data_only = b"".join(x for x in buf.splitlines(True) if not x.startswith(b"#"))
        run = _peers.lpp_decoder(peers["lpp"], _corpus.to_influx(data_only))
        rows["decode: line-protocol-parser %s" % _peers.peer_version("line-protocol-parser")] = (
            median_time(run, args.repeat), lines)

    if args.json:
        json.dump({k: (v if isinstance(v, str) else {"seconds": v[0], "rows": v[1],
                                                     "rows_per_s": v[1] / v[0]})
                   for k, v in rows.items()}, sys.stdout, indent=2)
        print()
        return 0
    print("%s lines/rows, median of %d, GC on; %s" % (format(n, ","), args.repeat,
                                                     _corpus.cpu_model()))
    for k, v in rows.items():
        if isinstance(v, str):
            print("  %-64s %s" % (k, v))
        else:
            print("  %-64s %8.3f s  %6.2f M rows/s" % (k, v[0], v[1] / v[0] / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
