"""``dtproto bench``: codec throughput on a seeded corpus, per implementation
and of the peer libraries installed."""

from __future__ import annotations

import os
import sys
import time
import argparse
from typing import Any, Callable, List, Tuple

from ._common import EXIT_OK, UsageError, _n, _positive


def _best(fn: Callable[[], Any], repeat: int, budget: float = 1.0) -> Tuple[float, Any]:
    """(fastest time, last result) of up to ``repeat`` runs; stops repeating once
    ``budget`` seconds are spent."""
    import gc

    best = float("inf")
    spent = 0.0
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = min(best, dt)
        spent += dt
        if spent > budget:
            break
    return best, out


def _peers(tuples: list, data: bytes, slow_lines: int) -> List[Tuple[str, str, int, int, Any]]:
    """(name, operation, lines, input bytes or 0, callable) for every peer installed
    here, through the adapters bench/compare.py uses too (dtproto._peers).

    Encoders get their input objects built outside the timing; their MB/s
    counts the bytes they produce."""
    from .._corpus import to_influx
    from .._peers import (PEERS, dmu_encoder, load_peers, lpp_decoder, peer_version,
                          questdb_encoder, sdk_encoder)

    peers = load_peers()
    name = {key: "%s %s" % (dist, peer_version(dist)) for key, dist in PEERS}
    out: List[Tuple[str, str, int, int, Any]] = []
    if not isinstance(peers["dmu"], str):
        few = tuples[:slow_lines]
        out.append((name["dmu"], "encode", len(few), 0, dmu_encoder(peers["dmu"], few)))
    if not isinstance(peers["sdk"], str):
        out.append((name["sdk"], "encode", len(tuples), 0, sdk_encoder(peers["sdk"], tuples)))
    if not isinstance(peers["questdb"], str):
        out.append((name["questdb"] + " (ILP)", "encode", len(tuples), 0,
                    questdb_encoder(peers["questdb"], tuples, 1)))
    if not isinstance(peers["lpp"], str):
        influx = to_influx(data)
        out.append((name["lpp"] + " (ILP)", "decode", len(tuples), len(influx),
                    lpp_decoder(peers["lpp"], influx)))
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    import platform

    from .. import __version__
    from .._corpus import cpu_model, make_corpus, make_records
    from .._impl import available_implementations, extension_error

    if args.lines < 1:
        raise UsageError("--lines must be at least 1")
    out = sys.stdout
    t = time.perf_counter()
    data = make_corpus(args.lines, seed=args.seed, escape_heavy=args.escape_heavy)
    impls = available_implementations()
    records = make_records(args.lines, seed=args.seed, escape_heavy=args.escape_heavy)
    metrics = records.metrics       # equal to decode(data)
    mb = len(data) / 1e6
    out.write("dtproto %s bench: %s lines, %.1f MB (%s corpus, seed %d), best of %d "
              "(generated in %.1f s)\n" % (
                  __version__, _n(args.lines), mb, "escape-heavy" if args.escape_heavy
                  else "realistic", args.seed, args.repeat, time.perf_counter() - t))
    out.write("machine: %s, %d CPUs, %s %s\n" % (cpu_model(), os.cpu_count() or 1,
                                               platform.system(), platform.machine()))
    out.write("python: %s %s\n" % (platform.python_implementation(), platform.python_version()))
    if "cython" not in impls:
        out.write("cython core: not loaded (%s)\n" % extension_error())
    out.write("\n%-36s %-9s %12s %9s\n" % ("implementation", "operation", "lines/s", "MB/s"))
    out.flush()
    def row(name: str, op: str, lines: int, nbytes: int, fn: Callable[[], Any]) -> None:
        s, result = _best(fn, args.repeat)
        if not nbytes and isinstance(result, bytes):
            nbytes = len(result)      # an encoder: the bytes it produced
        out.write("%-36s %-9s %12s %9.1f\n" % (name, op, _n(int(lines / s)), nbytes / s / 1e6))
        out.flush()

    n = len(data)
    for name, codec in sorted(impls.items(), key=lambda kv: kv[0] != "cython"):
        label = "dtproto %s" % name
        row(label, "decode", args.lines, n, lambda c=codec: c.decode(data))
        row(label, "validate", args.lines, n, lambda c=codec: c.validate(data))
        row(label, "encode", args.lines, 0, lambda c=codec: c.encode(metrics))
    if not args.no_peers:
        for name, op, lines, nbytes, fn in _peers(records.tuples, data, args.slow_lines):
            row(name, op, lines, nbytes, fn)
    out.write("\nMB/s: bytes parsed or produced (ILP = InfluxDB line protocol, the same data "
              "points);\nencoders' input objects are built outside the timing.\n")
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """The ``bench`` subcommand of the ``dtproto`` parser."""
    p = sub.add_parser("bench", allow_abbrev=False, help="codec throughput on a seeded corpus",
                       description="Decode/validate/encode throughput per implementation, "
                                   "and of peer libraries that are installed.")
    p.add_argument("--lines", type=_positive, default=100_000, metavar="N",
                   help="corpus size (default 100,000 lines, ~13 MB)")
    p.add_argument("--seed", type=int, default=20240601, help="corpus seed")
    p.add_argument("--repeat", type=_positive, default=3, metavar="N",
                   help="best of N runs (fewer when a run takes over a second)")
    p.add_argument("--escape-heavy", action="store_true",
                   help="dimension values full of quotes, escapes and non-ASCII text")
    p.add_argument("--no-peers", action="store_true", help="skip peer libraries")
    p.add_argument("--slow-lines", type=_positive, default=10_000, metavar="N",
                   help="lines for dynatrace-metric-utils, ~200 us/line (default 10,000)")
    p.set_defaults(func=_cmd_bench, parser=p)
