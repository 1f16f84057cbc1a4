#!/usr/bin/env python3
"""Throughput by series cardinality: both implementations and the peers, side by side.

Usage (from the repository root)::

    v/bin/python bench/cardinality.py                       # 300,000 lines, every level
    v/bin/python bench/cardinality.py --lines 100000 --repeat 3 --markdown sweep.md
    v/bin/python bench/cardinality.py --levels 1000 unique --only python
    v/bin/python bench/cardinality.py --levels unique --kind gauge   # an Encoder.gauge loop

Caches make repeated series cheap; real pipelines (pod names, container ids,
request attributes) carry 10^5..10^6 distinct series, where every cache
misses.  This script measures the same corpus shape at 1,000, 30,000 and
100,000 series and with every line its own series (``--levels``).

The corpus (``dtproto._corpus``, ``cardinality=``): the 33 metrics of the
standard corpus, ~60% gauge (a fifth of them bare numbers), ~25% count
(half of the count keys without ``.count``: a ``changed_metric_key``
warning each), ~15% summary; 3-4 dimensions, one of them holding an id
unique to its series; 10% of the series with a quoted value, 5% with a bare
value with backslash escapes (spaces, commas, quotes, non-ASCII); a
millisecond timestamp on 90% of the lines.

How it measures: each level runs in a new process of its own (this script
again, reporting its rates through a file; ``--one-process`` runs them all
here, one after the other).  In one process the last level pays for what
the levels before it left behind: with every line unique, last in one
process against a process of its own, every contender ran 3-28% slower
(``bytes.count``, which reads no object, 9%), the Cython ``Encoder`` most
(1,891,106 against 2,633,831 lines/s; Intel Xeon, 2 cores), so a level's
figures depended on its place in the list.  Per level, the corpus, its records
and its InfluxDB form are built first and held; then ``--repeat`` rounds time every contender once
each (a slow spell of a shared host hits all of them, not the one whose
repeats it covered), in an order shuffled for each round from ``--seed``
(in a fixed order the pure-Python ``Encoder``, timed right after pure
``decode``, ran at two thirds of the speed it had on its first 30,000
points, timed elsewhere in the same rounds: 253,783 against 381,798 lines/s
at 1,000 series; shuffled, 392,109 and 392,496), with the garbage collector enabled
(``gc.collect()`` before each run, outside the timing), and each
contender's median counts.  Ratios are lines/s over lines/s of two
contenders on the same data in the same process.  dynatrace-metric-utils
(~30 us a point) encodes the first ``--slow-lines`` points, and so does the
pure-Python ``Encoder`` it is compared with: the whole level's points
touch ten times the memory, which alone made the same ``Encoder`` ~20%
slower a point (a ratio of 8.5x instead of 10.6x, measured side by side).  The reference
parsers (a naive ``str.split`` parser, a validating regex parser) are those
of ``bench/compare.py``; the peers' adapters are ``dtproto._peers``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
try:  # an installed dtproto wins; otherwise the checkout this script lives in
    import dtproto  # noqa: F401
except ImportError:
    sys.path.insert(1, os.path.dirname(_HERE))

from compare import naive_split_parse, regex_parse  # noqa: E402

from dtproto import _corpus  # noqa: E402
from dtproto._peers import (PEERS, dmu_encoder, load_peers, lpp_decoder,  # noqa: E402
                            peer_version, questdb_encoder, sdk_encoder)

perf_counter = time.perf_counter


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call, after a collection outside the timing; freeing the
    result counts (a pipeline frees what it decoded, too)."""
    gc.collect()
    t0 = perf_counter()
    fn()
    return perf_counter() - t0


def _level(text: str) -> Any:
    return _corpus.UNIQUE if text == _corpus.UNIQUE else int(text)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", _HERE, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", _HERE, "status", "--porcelain", "--", "dtproto",
                                "csrc"], capture_output=True, text=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


# (row label, ours, theirs, floor or None)
RATIOS = [
    ("pure Python `validate` / naive `str.split` parser", ("python", "validate"), "naive", 1.0),
    ("pure Python `decode` / validating regex parser", ("python", "decode"), "regex", 1.2),
    ("pure Python `Encoder` / dt-extensions-sdk", ("python", "Encoder"), "sdk", 0.7),
    ("pure Python `Encoder` / dynatrace-metric-utils", ("python", "Encoder", "slow"), "dmu",
     10.0),
    ("Cython `validate` / `bytes.count(b\"\\n\")`", ("cython", "validate"), "count", 0.35),
    ("Cython `decode` / line-protocol-parser", ("cython", "decode"), "lpp", 5.0),
    ("Cython `Encoder` / questdb `Buffer.row`", ("cython", "Encoder"), "questdb", 2.5),
    ("Cython `decode` / pure Python `decode`", ("cython", "decode"), ("python", "decode"), None),
]


class _LoopOnly:
    """An encoder that encodes nothing: its methods are ``"".format``, a C
    function that takes any arguments and returns an empty string, so
    ``encoder_loop(_LoopOnly, ...)`` times the loop that feeds every
    ``Encoder`` row (unpacking each point, choosing the method, calling it),
    the part of those rows that no encoder can make faster.  An upper bound:
    ``str.format`` packs its arguments into a tuple and starts its parser,
    which a vectorcall method (ours, Cython's) does not, ~40 ns a call."""

    gauge = count = summary = "".format

    def getvalue(self) -> bytes:
        return b""


def encoder_rows(tuples: List[tuple], kind: Optional[str]) -> List[tuple]:
    """The points the ``Encoder`` rows encode: all of them, or those of one ``kind``.

    Picked out of the level's list, as a loop over one kind of metric sees
    its points: the other rows skipped, these the same objects where they lie
    (copies would be fresh and contiguous in memory, which flatters).
    """
    if kind is None:
        return tuples
    return [t for t in tuples if t[0] == kind]


def measure_level(level: Any, args: argparse.Namespace, impls: Dict[str, Any],
                  peers: Dict[str, Any]) -> Dict[Any, float]:
    """lines/s of every contender at one level, in this process: the level's
    data is built and held here, and freed before returning."""
    n, R = args.lines, args.repeat
    label = _corpus.cardinality_label(level)
    print("%s: generating ..." % label, flush=True)
    data = _corpus.make_corpus(n, seed=args.seed, cardinality=level)
    tuples = _corpus.make_records(n, seed=args.seed, cardinality=level).tuples
    tuples = encoder_rows(tuples, args.kind)
    m = len(tuples)  # the Encoder rows' lines
    r: Dict[Any, float] = {}

    # Every contender first, then the rounds: each round times each contender
    # once, so a slow spell of a shared host lands on all of them alike
    # instead of on the one whose repeats it happened to cover, and in an
    # order of its own, so that what one contender leaves behind (freed
    # memory, a cold cache) does not always land on the one after it.
    jobs: List[Tuple[Any, Callable[[], Any], int]] = []
    for impl, codec in impls.items():
        report = codec.validate(data)
        assert report.lines_ok == n and report.lines_invalid == 0, report
        jobs.append(((impl, "validate"), (lambda c=codec: c.validate(data)), n))
        jobs.append(((impl, "decode"), (lambda c=codec: c.decode(data)), n))
        jobs.append(((impl, "Encoder"), _corpus.encoder_loop(codec.Encoder, tuples), m))
    if "python" in impls:
        jobs.append(("naive", lambda: naive_split_parse(data), n))
        jobs.append(("regex", lambda: regex_parse(data), n))
        if not isinstance(peers["sdk"], str):
            jobs.append(("sdk", sdk_encoder(peers["sdk"], tuples), m))
        if not isinstance(peers["dmu"], str):
            k = min(args.slow_lines, m)
            jobs.append(("dmu", dmu_encoder(peers["dmu"], tuples[:k]), k))
            # the same points as dynatrace-metric-utils (see the docstring)
            jobs.append((("python", "Encoder", "slow"),
                         _corpus.encoder_loop(impls["python"].Encoder, tuples[:k]), k))
    jobs.append(("loop", _corpus.encoder_loop(_LoopOnly, tuples), m))
    influx = None
    if "cython" in impls:
        jobs.append(("count", lambda: data.count(b"\n"), n))
        if not isinstance(peers["lpp"], str):
            influx = _corpus.to_influx(data)
            jobs.append(("lpp", lpp_decoder(peers["lpp"], influx), n))
        if not isinstance(peers["questdb"], str):
            jobs.append(("questdb", questdb_encoder(peers["questdb"], tuples), m))
    if not m:   # --kind with no point of that kind at this level: nothing to time
        print("  no %s points at this level: the Encoder rows are left out" % args.kind)
        jobs = [job for job in jobs if job[2]]
    times: Dict[Any, List[float]] = {name: [] for name, _, _ in jobs}
    order = random.Random(args.seed)
    for _ in range(R):
        for name, fn, _lines in order.sample(jobs, len(jobs)):
            times[name].append(timed(fn))
    for name, _fn, lines in jobs:
        secs = statistics.median(times[name])
        r[name] = lines / secs
        print("  %-40s %12s lines/s %8.1f MB/s" % (
            name if isinstance(name, str) else " ".join(name), "{:,.0f}".format(r[name]),
            len(data) * lines / n / secs / 1e6), flush=True)
    del jobs, influx
    warned = impls[next(iter(impls))].validate(data).warnings_total
    print("  %s lines with a warning" % "{:,}".format(warned), flush=True)
    del data, tuples
    gc.collect()
    return r


def _level_in_new_process(level: Any, args: argparse.Namespace) -> Dict[Any, float]:
    """measure_level in a new interpreter running this script, which reports
    its rates through a file: a level's figures then do not depend on what
    the levels before it left behind (measured: up to 28% slower at the last
    level; the README's performance section).  A failed worker raises
    CalledProcessError."""
    cmd = [sys.executable, os.path.abspath(__file__), "--levels", str(level),
           "--lines", str(args.lines), "--repeat", str(args.repeat),
           "--slow-lines", str(args.slow_lines), "--seed", str(args.seed)]
    if args.only:
        cmd += ["--only", args.only]
    if args.kind:
        cmd += ["--kind", args.kind]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rates.json")
        subprocess.run(cmd + ["--rates-out", out], check=True)
        with open(out, encoding="utf-8") as f:
            return {tuple(k) if isinstance(k, list) else k: v for k, v in json.load(f)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=300_000, help="lines per level (default 300,000)")
    ap.add_argument("--levels", nargs="+", default=["1000", "30000", "100000", "unique"],
                    help="series counts, or 'unique' (default: 1000 30000 100000 unique)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per contender; the median counts")
    ap.add_argument("--slow-lines", type=int, default=30_000,
                    help="points given to dynatrace-metric-utils (default 30,000)")
    ap.add_argument("--only", choices=["python", "cython"], help="one implementation only")
    ap.add_argument("--kind", choices=["gauge", "count", "summary"],
                    help="the Encoder rows encode only the points of this kind, picked out of "
                         "the level's records where they lie (validate and decode: every line)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    ap.add_argument("--seed", type=int, default=_corpus.DEFAULT_SEED)
    ap.add_argument("--one-process", action="store_true",
                    help="run every level in this process, one after the other (default: each "
                         "level in a new process of its own)")
    ap.add_argument("--rates-out", metavar="FILE", help=argparse.SUPPRESS)  # a level's worker
    args = ap.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    if args.rates_out and len(args.levels) != 1:
        ap.error("--rates-out reports one level")

    import dtproto
    from dtproto._impl import available_implementations

    impls = available_implementations()
    if args.only:
        impls = {k: v for k, v in impls.items() if k == args.only}
    peers = load_peers()
    levels = [_level(x) for x in args.levels]
    n, R = args.lines, args.repeat
    header = [
        "Machine: %s, %d cores, %s; Python %s; dtproto %s at commit %s; implementations: %s."
        % (_corpus.cpu_model(), os.cpu_count() or 0, platform.system(), platform.python_version(),
           dtproto.__version__, _git_commit(), ", ".join(impls)),
        "Corpus: dtproto._corpus with cardinality=, seed %d, %s lines per level: ~60%% gauge, "
        "~25%% count (half without `.count`: warned), ~15%% summary; 3-4 dimensions, one an id "
        "per series; 10%% of series with a quoted value, 5%% with escapes; timestamps on 90%%.%s"
        % (args.seed, "{:,}".format(n),
           " Encoder rows: the %s points only, picked out of each level's records." % args.kind
           if args.kind else ""),
        "Timing: %s holding the level's data, GC on, median of %d rounds (each "
        "round times every contender once, in an order shuffled per round); ratios are "
        "lines/s over lines/s. Command: `v/bin/python bench/cardinality.py %s`"
        % ("all levels in one process, one after the other, each"
           if args.one_process else "each level in a process of its own",
           R, " ".join(argv)),
        "Peers: " + ", ".join("%s %s" % (dist, peer_version(dist)
                                        if not isinstance(peers[key], str) else "not installed")
                              for key, dist in PEERS),
    ]
    if not args.rates_out:
        print("\n".join(header), flush=True)

    rates: Dict[Any, Dict[Any, float]] = {}
    failed = None
    for level in levels:
        if args.one_process or len(levels) == 1:
            rates[level] = measure_level(level, args, impls, peers)
            continue
        try:
            rates[level] = _level_in_new_process(level, args)
        except subprocess.CalledProcessError as e:
            # the levels measured so far are still printed
            failed = "%s: the worker failed (exit status %s)" % (
                _corpus.cardinality_label(level), e.returncode)
            print(failed, file=sys.stderr, flush=True)
            break
    levels = [lv for lv in levels if lv in rates]
    if args.rates_out:
        with open(args.rates_out, "w", encoding="utf-8") as f:
            json.dump([[list(k) if isinstance(k, tuple) else k, v]
                       for k, v in rates[levels[0]].items()], f)
        return 0

    labels = [_corpus.cardinality_label(lv) for lv in levels]
    out = list(header) + ["", "| ratio (floor) | " + " | ".join(labels) + " |",
                          "|---|" + "--:|" * len(levels)]
    for text, ours, theirs, floor in RATIOS:
        cells = []
        for lv in levels:
            a, b = rates[lv].get(ours), rates[lv].get(theirs)
            cells.append("" if a is None or b is None else "%.2f×" % (a / b))
        if any(cells):
            out.append("| %s%s | %s |" % (text, "" if floor is None else " (≥ %g×)" % floor,
                                           " | ".join(cells)))
    out += ["", "| lines/s | " + " | ".join(labels) + " |", "|---|" + "--:|" * len(levels)]
    names = {"naive": "naive `str.split` parser", "regex": "validating regex parser",
             "sdk": "dt-extensions-sdk `Metric.to_mint_line`",
             "dmu": "dynatrace-metric-utils (first %s points)" % "{:,}".format(args.slow_lines),
             ("python", "Encoder", "slow"):
                 "pure Python `Encoder` (first %s points)" % "{:,}".format(args.slow_lines),
             "count": "`bytes.count(b\"\\n\")`", "lpp": "line-protocol-parser (InfluxDB form)",
             "questdb": "questdb `Buffer.row`",
             "loop": "the loop feeding the `Encoder`s alone (nothing encoded; an upper bound)"}
    keys: List[Any] = [(i, op) for i in impls for op in ("validate", "decode", "Encoder")]
    keys += [k for k in names if any(k in rates[lv] for lv in levels)]
    for key in keys:
        label = names.get(key) or "%s `%s`" % (
            "pure Python" if key[0] == "python" else "Cython", key[1])
        out.append("| %s | %s |" % (label, " | ".join(
            "{:,.0f}".format(rates[lv][key]) if key in rates[lv] else "" for lv in levels)))
    table = "\n".join(out) + "\n"
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
