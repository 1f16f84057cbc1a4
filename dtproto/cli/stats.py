"""``dtproto stats``: what is in metric files, and how close it comes to the limits.

Per metric key: data lines, distinct series (key + dimension set, in any
order), distinct values per dimension key and the kinds seen; the top keys
by series; warnings against Dynatrace's cardinality limits (docs/protocol.md
§11).  Bounded memory: exact up to 2,000,000 series per file, beyond that
HyperLogLog estimates for the keys with the most series, marked as such
(``dtproto._stats``: which ones depends only on the counts).  ``--jobs N``
counts byte ranges of a regular file on N processes and merges their
states: the same counts.
Invalid lines are skipped (``dtproto validate`` says why).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Tuple

from .._constants import LIMIT_METRIC_KEYS, LIMIT_SERIES_CUSTOM, LIMIT_SERIES_PER_METRIC
from ._common import (EXIT_OK, EXIT_USAGE, UsageError, _err, _Input, _input_names, _n,
                      _open_input, _plural, _positive, _printable, _write_json, add_inputs)

_MIN_JOB_BYTES = 256 << 10
_READ = 1 << 20


def _count_source(chunks: Any) -> Any:
    import gc

    from .. import _impl
    from .._input import TooLong, line_blocks
    from .._stats import FileStats

    stats = FileStats()
    # The counts are sets and dicts that live to the end and hold no cycles:
    # the collector need not look at them again while counting.  Its passes
    # over them were most of the time of a file whose keys are all distinct
    # (1M keys: 35 s; 22 s frozen, 14 s with the collector off).  Not when
    # something froze objects already: unfreezing would let go of those too.
    freeze = gc.get_freeze_count() == 0
    try:
        for _, block in line_blocks(chunks):
            if isinstance(block, TooLong):
                stats.add_invalid()
            else:
                stats.add_block(block, _impl.codec)
                if freeze:
                    gc.freeze()
    finally:
        if freeze:
            gc.unfreeze()   # collected as usual again (this may run in a test's process)
    return stats


def _read_range(path: str, start: int, end: int) -> Any:
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            data = f.read(min(_READ, left))
            if not data:
                return
            left -= len(data)
            yield data


def _range_job(job: Tuple[str, int, int]) -> Any:
    return _count_source(_read_range(*job))


def _stats_of(inp: _Input, jobs: int) -> Any:
    if jobs > 1 and inp.path is not None and not inp.gzip and inp.size is not None:
        from .._ranges import line_ranges

        ranges = line_ranges(inp.path, jobs, min_bytes=_MIN_JOB_BYTES)
        if len(ranges) > 1:
            import multiprocessing

            with multiprocessing.Pool(len(ranges)) as pool:
                parts = pool.map(_range_job, [(inp.path, a, b) for a, b in ranges])
            total = parts[0]
            for part in parts[1:]:
                total.merge(part)
            return total

    def chunks() -> Any:
        while True:
            data = inp.read(_READ)
            if not data:
                return
            yield data

    return _count_source(chunks())


def _text(doc: Dict[str, Any], out: Any, top: int) -> None:
    est = " (estimated: %s)" % doc["estimator"] if doc["estimated"] else ""
    out.write("%s: %s, %s, %s%s\n" % (
        _printable(doc["file"]), _plural(doc["lines"], "line"),
        _plural(doc["metric_keys"], "metric key"), _plural(doc["series"], "series", "series"),
        est))
    if doc["metadata_lines"] or doc["other_lines"]:
        out.write("  %s, %s blank or invalid (dtproto validate says which)\n" % (
            _plural(doc["metadata_lines"], "metadata line"), _n(doc["other_lines"])))
    rows = doc["metrics"][:top]
    if rows:
        head = "top keys by series"
        width = min(60, max(len(head), max(len(r["key"]) for r in rows)))
        out.write("  %-*s %12s %12s  %-14s %s\n" % (width, head, "lines",
                                                   "series", "kinds",
                                                   "most distinct dimension"))
        for r in rows:
            worst = max(r["dimensions"].items(), key=lambda kv: kv[1], default=None)
            out.write("  %-*s %12s %12s  %-14s %s\n" % (
                width, _printable(r["key"]), _n(r["lines"]),
                ("~" if r["series_estimated"] else "") + _n(r["series"]),
                ",".join(r["kinds"]),
                "%s (%s%s)" % (_printable(worst[0]),
                               "~" if worst[0] in r.get("dimensions_estimated", ()) else "",
                               _plural(worst[1], "value")) if worst else "-"))
        if len(doc["metrics"]) > top:
            out.write("  ... %s more (--top N, or --json for all)\n"
                      % _n(len(doc["metrics"]) - top))
    for w in doc["warnings"]:
        out.write("  warning: %s\n" % _printable(w))


def _cmd_stats(args: argparse.Namespace) -> int:
    from .._stats import ESTIMATOR

    docs: List[Dict[str, Any]] = []
    rc = EXIT_OK
    for name in _input_names(args):
        # A file that cannot be opened is said (and is an entry of --json),
        # and the others are still counted, as validate does.
        inp = _open_input(name, docs if args.json else None)
        if inp is None:
            rc = EXIT_USAGE
            continue
        try:
            stats = _stats_of(inp, args.jobs)
        except UsageError as exc:   # it broke part-way (a damaged .gz): no counts for it
            _err(str(exc))
            if args.json:
                docs.append({"file": inp.name, "io_error": str(exc)})
            rc = EXIT_USAGE
            continue
        finally:
            inp.close()
        doc = stats.to_dict(inp.name, top=args.top)
        docs.append(doc)
        if not args.json:
            _text(doc, sys.stdout, args.top)
    if args.json:
        _write_json({
            "files": docs,
            "limits": {"series_per_metric": LIMIT_SERIES_PER_METRIC,
                       "series_custom_metrics": LIMIT_SERIES_CUSTOM,
                       "metric_keys": LIMIT_METRIC_KEYS, "period_days": 30},
            "estimator": ESTIMATOR,
        }, sys.stdout)
    return rc


def add_parser(sub: Any) -> None:
    """The ``stats`` subcommand of the ``dtproto`` parser."""
    p = sub.add_parser("stats", allow_abbrev=False,
                       help="cardinality per metric key: lines, series, dimension values",
                       description="Count per metric key its lines, distinct series and "
                                   "distinct values per dimension key, and warn about "
                                   "Dynatrace's cardinality limits.  Exact up to 2,000,000 "
                                   "series per file, beyond that HyperLogLog estimates "
                                   "(marked) for the keys with the most series.")
    add_inputs(p)
    p.add_argument("--json", action="store_true",
                   help='print {"files": [{"file", "lines", "series", "metrics": [{"key", '
                        '"lines", "series", "kinds", "dimensions": {...}}], "warnings"}]}')
    p.add_argument("--top", type=_positive, default=10, metavar="N",
                   help="keys listed as the top by series (default 10)")
    p.add_argument("-j", "--jobs", type=_positive, default=1, metavar="N",
                   help="count each (uncompressed, regular) file on N processes, split at "
                        "line boundaries; the counts are the same")
    p.set_defaults(func=_cmd_stats, parser=p)


__all__ = ["add_parser", "UsageError"]
