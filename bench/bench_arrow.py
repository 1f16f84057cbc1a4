"""Columnar throughput: dtproto.arrow against dtproto.decode and the peers.

Decoding, on 300,000 lines where every line is its own series (plus a share
of escape-heavy lines with quoted values, gauge/count/summary, ~10% without
timestamp, one metadata line in the middle), on 300,000 short lines of the
same kinds (``short_corpus``: ~85 bytes, an id and a host dimension), and on
300,000 lines of 1,000 series repeating (``dtproto._corpus``), where ``decode``'s
head cache makes records cheap:

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


def short_corpus(n: int) -> bytes:
    """Short lines (~85 bytes), every line its own series: ``host`` (977 values), a
    ``pod`` id, ``region``; a tenth with a quoted ``route`` holding a space; 60%
    gauge, 25% count (half without ``.count``), 15% summary; ~10% without
    timestamp; one metadata line in the middle."""
    r = random.Random(1)
    out = []
    for i in range(n - 1):
        key = "app.req%d.latency" % (i % 50)
        dims = "host=h-%d,pod=p-%08x,region=%s" % (i % 977, i * 2654435761 % 2**32,
                                                  "eu" if i % 2 else "us")
        if r.random() < 0.1:
            dims += ',route="/api/v1/x y %d"' % (i % 100)
        kind = r.random()
        if kind < 0.6:
            line = "%s,%s gauge,%.3f" % (key, dims, r.random() * 100)
        elif kind < 0.85:
            line = "%s%s,%s count,delta=%d" % (key, ".count" if r.random() < 0.5 else "", dims,
                                               r.randrange(100))
        else:
            a = r.randrange(10)
            b = a + r.randrange(10)
            line = "%s,%s gauge,min=%d,max=%d,sum=%d,count=2" % (key, dims, a, b, a + b)
        if r.random() < 0.9:
            line += " %d" % (1_700_000_000_000 + i)
        out.append(line)
    out.insert(len(out) // 2, '#app.meta.key gauge dt.meta.displayName="A metric"')
    return ("\n".join(out) + "\n").encode()


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

    impls = sorted(_impl.available_implementations().items(),
                   key=lambda kv: kv[0] != "cython")
    for label, buf in (("", decode_corpus(n)), (" (short lines)", short_corpus(n)),
                       (" (1,000 series)", _corpus.make_corpus(n, cardinality=1000))):
        lines = buf.count(b"\n")
        t_dec = median_time(lambda: dtproto.decode(buf), args.repeat)
        rows["decode%s: dtproto.decode (%s)" % (label, dtproto.IMPLEMENTATION)] = (t_dec, lines)
        # the Cython core first: the reference's caches would grow the heap the GC walks;
        # the reference columns (seconds a run) on the first corpus only
        t_tab = None
        for name, codec in impls[:1] if label else impls:
            path = "decode_columns" if hasattr(codec, "decode_columns") else "reference columns"
            t = median_time(lambda: A.decode_table(buf, _codec=codec), args.repeat)
            rows["decode%s: decode_table (%s, %s)" % (label, name, path)] = (t, lines)
            if t_tab is None:
                t_tab = t
        if isinstance(peers["lpp"], str):
            rows["decode%s: line-protocol-parser" % label] = peers["lpp"]
            continue
        data_only = b"".join(x for x in buf.splitlines(True) if not x.startswith(b"#"))
        run = _peers.lpp_decoder(peers["lpp"], _corpus.to_influx(data_only))
        t_lpp = median_time(run, args.repeat)
        rows["decode%s: line-protocol-parser %s" % (
            label, _peers.peer_version("line-protocol-parser"))] = (t_lpp, lines)
        rows["decode%s: ratio decode_table / decode, / line-protocol-parser" % label] = \
            "%.2fx, %.1fx" % (t_dec / t_tab, t_lpp / t_tab)

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
