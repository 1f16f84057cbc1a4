"""``dtproto load``: a load generator for sizing pipelines.

Realistic lines (the corpus generator's metrics, dimensions and data-point
mix, at ``--series`` distinct series, timestamps of now) are sent at
``--rate`` lines per second for ``--duration`` seconds through the
concurrent :class:`~dtproto.sender.Sender`.  It reports what was achieved:
lines/s and MB/s, request latency p50/p90/p99 (each request from its first
attempt to its final answer, retries and backoff included), 429s and
retries; live on stderr when it is a terminal, and as JSON with ``--json``.

Requests carry what a batching producer would send: ``--rate`` x
``--interval`` lines (the longest a line waits), at most ``--max-bytes``.
Lines are generated on schedule; when the endpoint cannot keep up, the
generator falls behind (``lines_behind``) and catches up as soon as a
request slot frees, like a buffering pipeline, so the achieved rate is
what the endpoint sustains.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from ._common import (EXIT_INVALID, EXIT_OK, UsageError, _count, _err, _log_to_stderr, _n,
                      _plural, _positive, _printable, _seconds, _write_json)

MAX_SERIES = 1_000_000
# The pool of lines cycled through holds at least this many (values repeat
# after it; series repeat after --series lines).
_MIN_POOL = 20_000
# Generation stops this long after --duration (timer slack for the last block).
_GRACE = 0.25
# The share of a request's byte budget the lines are sized for: lines vary
# in length, so a request of the average size could overflow --max-bytes.
_FILL = 0.85


# --------------------------------------------------------------------------- lines


def _payload(kind: str, gen: str, rnd: Callable[[], float]) -> str:
    """A data point of a series (the corpus generator's mix: consistent summaries)."""
    from .._corpus import _format, _value

    if kind == "gauge":
        v = _format(_value(gen, rnd))
        return v if rnd() < 0.2 else "gauge," + v
    if kind == "count":
        return "count,delta=" + _format(float(int(1 + 200 * rnd() ** 3)))
    cnt = 1 + int(1000 * rnd() ** 2)
    a = _value(gen, rnd)
    if cnt == 1:
        return "gauge,min=%s,max=%s,sum=%s,count=1" % (_format(a), _format(a), _format(a))
    b = _value(gen, rnd)
    mn, mx = (a, b) if a <= b else (b, a)
    if mx - mn < 0.01:
        mx = round(mn + 1.0, 3)
    sm = round((mn + (mx - mn) * (0.1 + 0.8 * rnd())) * cnt, 3)
    return "gauge,min=%s,max=%s,sum=%s,count=%d" % (_format(mn), _format(mx), _format(sm), cnt)


def series_heads(series: int, seed: int) -> List[Any]:
    """``series`` distinct series of the corpus generator: its table's, and
    beyond its size the same ones with an ``instance`` dimension."""
    from .._corpus import _series_table

    table = _series_table(seed, False)
    n = len(table)
    out = []
    for k in range(series):
        s = table[k % n]
        head = s.head if k < n else "%s,instance=%d" % (s.head, k // n)
        out.append((head, s.kind, s.gen))
    return out


def line_pool(series: int, seed: int) -> List[str]:
    """Lines without timestamp or newline, series in round-robin order:
    line ``i`` is of series ``i % series``."""
    import random

    heads = series_heads(series, seed)
    rnd = random.Random(seed).random
    rounds = max(1, math.ceil(_MIN_POOL / series))
    return [h + " " + _payload(kind, gen, rnd) for _ in range(rounds) for h, kind, gen in heads]


class LineBlocks:
    """Blocks of protocol lines from a pool, with timestamps of now.

    Series come round-robin, so within a block a series repeats only after
    all the others; each pass through the series gets a timestamp of its
    own (now, now - 1 ms, ...), so no series has two points with the same
    timestamp in one request.
    """

    def __init__(self, pool: List[str], series: int,
                 now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.pool = pool
        self.series = series
        self.now_ms = now_ms
        self.pos = 0

    def take(self, n: int) -> bytes:
        pool, series = self.pool, self.series
        segments = []
        while n > 0:
            start = self.pos
            # a segment ends at the end of a pass through the series or of the pool
            end = min(start + n, (start // series + 1) * series, len(pool))
            segments.append((start, end))
            n -= end - start
            self.pos = 0 if end == len(pool) else end
        now = self.now_ms()
        parts = []
        last = len(segments) - 1
        for j, (a, b) in enumerate(segments):
            sep = " %d\n" % (now - (last - j))
            parts.append(sep.join(pool[a:b]))
            parts.append(sep)
        return "".join(parts).encode("utf-8")


# --------------------------------------------------------------------------- pacing and figures


def percentile(values: List[float], p: float) -> Optional[float]:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[k - 1]


class Stats:
    """What the requests did, fed by the sender's ``on_request``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.end: Optional[float] = None
        self.latencies: List[float] = []
        self.requests = 0
        self.lines = 0          # lines in the requests answered
        self.bytes = 0          # their uncompressed bodies
        self.wire_bytes = 0
        self.statuses: Dict[str, int] = {}
        self.throttled = 0      # 429 answers (retried ones included)
        self.retries = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.generated = 0      # lines handed to the sender
        self.target = 0         # lines due by now (the schedule)

    def on_request(self, info: Any, in_flight: int) -> None:
        self.requests += 1
        self.latencies.append(info.latency)
        self.lines += info.lines
        self.bytes += info.bytes
        self.wire_bytes += info.wire_bytes
        key = str(info.status) if info.status is not None else "no answer"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        self.throttled += sum(1 for h in info.history if h == 429)
        self.retries += max(0, info.attempts - 1)
        self.in_flight = in_flight
        self.max_in_flight = max(self.max_in_flight, in_flight + 1)

    def elapsed(self) -> float:
        return max((self.end if self.end is not None else self.clock()) - self.start, 1e-9)

    def latency_ms(self) -> Dict[str, Optional[float]]:
        out: Dict[str, Optional[float]] = {}
        for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
            v = percentile(self.latencies, p)
            out[name] = None if v is None else round(v * 1000, 2)
        return out

    def status_text(self, rate: int) -> str:
        t = self.elapsed()
        lat = self.latency_ms()
        return ("%5.1f s  %s lines/s (target %s)  %.2f MB/s  %d in flight  p50 %s  p99 %s  "
                "429s %s  retries %s" % (
                    t, _n(int(self.lines / t)), _n(rate), self.bytes / t / 1e6, self.in_flight,
                    _ms(lat["p50"]), _ms(lat["p99"]), _n(self.throttled), _n(self.retries)))


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else "%.1f ms" % v


class _Live:
    """One status line on stderr, redrawn at most 4 times a second, only on a terminal."""

    def __init__(self, stats: Stats, rate: int, enabled: Optional[bool] = None) -> None:
        if enabled is None:
            try:
                enabled = sys.stderr is not None and sys.stderr.isatty()
            except (OSError, ValueError):
                enabled = False
        self.enabled = enabled
        self.stats = stats
        self.rate = rate
        self._last = 0.0
        self._width = 0

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        text = "load: " + self.stats.status_text(self.rate)
        self._width = max(self._width, len(text))
        self._write("\r" + text.ljust(self._width))

    def close(self) -> None:
        if self.enabled and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0

    def _write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            self.enabled = False


class PacedSource:
    """A file-like input for :meth:`Sender.send`: ``read()`` hands out the
    next block of ``per_request`` lines when the schedule (``rate`` lines/s
    from the first read) says it is due, and ends after ``duration`` seconds
    (``rate * duration`` lines at most)."""

    def __init__(self, blocks: LineBlocks, rate: int, duration: float, per_request: int,
                 stats: Stats, live: Optional[_Live] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.blocks = blocks
        self.rate = rate
        self.duration = duration
        self.per_request = per_request
        self.total = max(1, int(rate * duration))
        self.stats = stats
        self.live = live
        self.clock = clock
        self.sleep = sleep
        self.start: Optional[float] = None
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        if self.start is None:
            self.start = self.clock()
            self.stats.start = self.start
        end = self.start + self.duration
        while True:
            n = min(self.per_request, self.total - self.sent)
            now = self.clock()
            self.stats.target = min(self.total, int((now - self.start) * self.rate))
            if self.live is not None:
                self.live.update()
            if n <= 0 or now >= end + _GRACE:
                return b""   # done, or out of time: what was not generated is behind
            # a block is due when its last line is (a producer's batch is full)
            due = self.start + (self.sent + n) / self.rate
            if due <= now:
                break
            self.sleep(min(due - now, 0.1))
        self.sent += n
        self.stats.generated = self.sent
        return self.blocks.take(n)

    def readable(self) -> bool:
        return True


def _line_bytes(line: str) -> int:
    """The bytes a pool line takes in a request: with " <13-digit timestamp>" and LF."""
    return len(line.encode("utf-8")) + 15


def per_request_lines(rate: int, interval: float, max_bytes: int, pool: List[str]) -> int:
    """Lines per request: ``rate * interval``, at most what fits ``max_bytes``
    (sized on the pool's mean line, timestamp included, with a margin)."""
    sample = pool[: 2000]
    mean = sum(_line_bytes(x) for x in sample) / len(sample)
    fit = max(1, int(max_bytes * _FILL / mean))
    return max(1, min(int(rate * interval), fit))


# --------------------------------------------------------------------------- command


def _cmd_load(args: argparse.Namespace) -> int:
    from .. import sender as _sender
    from .send import _cli_text, connection_options, new_sender, sender_url

    url = sender_url(args)
    if url is None:
        raise UsageError("load needs --url or %s (e.g. the URL 'dtproto serve' prints)"
                         % _sender.URL_ENV)
    if args.series > MAX_SERIES:
        raise UsageError("--series must be at most %s" % _n(MAX_SERIES))
    _log_to_stderr(_cli_text)
    pool = line_pool(args.series, args.seed)
    sizes = [_line_bytes(x) for x in pool]
    if args.max_bytes < min(sizes):
        # The sender refuses a line that does not fit a request (invalid,
        # never sent): with none fitting, a load test of nothing.
        raise UsageError("--max-bytes %s is below the shortest generated line (%s bytes with "
                         "its timestamp and newline)" % (_n(args.max_bytes), _n(min(sizes))))
    if args.max_bytes < max(sizes):
        _err("--max-bytes %s: the generated lines longer than that (up to %s bytes) are "
             "refused as too long and counted invalid, never sent"
             % (_n(args.max_bytes), _n(max(sizes))))
    per_request = per_request_lines(args.rate, args.interval, args.max_bytes, pool)
    stats = Stats()
    live = _Live(stats, args.rate)

    def on_request(info: Any, attempt: int) -> None:
        stats.on_request(info, attempt)
        live.update()

    sender = new_sender(args, url, max_bytes=args.max_bytes, max_lines=per_request,
                        flush_interval=None, on_request=on_request, **connection_options(args))
    source = PacedSource(LineBlocks(pool, args.series), args.rate, args.duration, per_request,
                         stats, live)
    error = None
    result = None
    with sender:
        try:
            result = sender.send(source)
        except _sender.SendError as exc:
            result = exc.result
            error = _cli_text(str(exc))
        finally:
            stats.end = time.monotonic()
            live.close()
    doc = _report(args, sender.url, per_request, stats, result, error)
    if args.json:
        _write_json(doc, sys.stdout)
    else:
        _human(doc)
    if error is not None:
        _err("load stopped: %s" % error)
    return EXIT_OK if doc["ok"] else EXIT_INVALID


def _report(args: argparse.Namespace, url: str, per_request: int, stats: Stats, result: Any,
            error: Optional[str]) -> Dict[str, Any]:
    t = stats.elapsed()
    lines_ok = result.lines_ok if result is not None else 0
    lines_invalid = result.lines_invalid if result is not None else 0
    undelivered = sum(u.lines for u in result.undelivered) if result is not None else 0
    return {
        "url": url,
        "target": {"rate": args.rate, "series": args.series, "duration": args.duration,
                   "concurrency": args.concurrency, "lines_per_request": per_request,
                   "max_bytes": args.max_bytes, "interval": args.interval, "gzip": args.gzip},
        "elapsed_s": round(t, 3),
        "lines_generated": stats.generated,
        "lines_behind": max(0, int(args.rate * args.duration) - stats.generated),
        "lines_sent": stats.lines,
        "lines_ok": lines_ok,
        "lines_invalid": lines_invalid,
        "lines_not_delivered": undelivered,
        "requests": stats.requests,
        "bytes_sent": stats.bytes,
        "wire_bytes_sent": stats.wire_bytes,
        "lines_per_s": round(stats.lines / t, 1),
        "lines_ok_per_s": round(lines_ok / t, 1),
        "mb_per_s": round(stats.bytes / t / 1e6, 3),
        "latency_ms": stats.latency_ms(),
        "statuses": dict(sorted(stats.statuses.items())),
        "throttled_429": stats.throttled,
        "retries": stats.retries,
        "max_in_flight": stats.max_in_flight,
        "error": error,
        "ok": error is None and lines_invalid == 0 and undelivered == 0,
    }


def _human(doc: Dict[str, Any]) -> None:
    out = sys.stdout
    tg = doc["target"]
    lat = doc["latency_ms"]
    out.write("load -> %s: %s lines/s for %g s, %s series, %d in flight, %s lines a request\n" % (
        _printable(doc["url"]), _n(tg["rate"]), tg["duration"], _n(tg["series"]),
        tg["concurrency"], _n(tg["lines_per_request"])))
    out.write("  achieved: %s lines/s, %.2f MB/s over %.2f s (%s, %s lines)\n" % (
        _n(int(doc["lines_per_s"])), doc["mb_per_s"], doc["elapsed_s"],
        _plural(doc["requests"], "request"), _n(doc["lines_sent"])))
    out.write("  latency: p50 %s, p90 %s, p99 %s, max %s\n" % (
        _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["max"])))
    out.write("  %s ok, %s invalid, %s not delivered; %s 429s, %s retries; at most %d in flight\n"
              % (_n(doc["lines_ok"]), _n(doc["lines_invalid"]), _n(doc["lines_not_delivered"]),
                 _n(doc["throttled_429"]), _n(doc["retries"]), doc["max_in_flight"]))
    if doc["lines_behind"]:
        out.write("  %s lines behind the schedule when the time was up: the endpoint (or this "
                  "machine) did not keep up with the rate\n" % _n(doc["lines_behind"]))
    if doc["error"]:
        out.write("  stopped: %s\n" % _printable(doc["error"]))


def add_parser(sub: Any) -> None:
    """The ``load`` subcommand of the ``dtproto`` parser."""
    from .send import add_connection_args

    p = sub.add_parser(
        "load", allow_abbrev=False, help="send generated lines at a target rate (sizing)",
        description="Send realistic generated lines (the corpus generator's metrics at "
                    "--series distinct series, timestamps of now) at --rate lines/s for "
                    "--duration seconds with the concurrent sender, and report the lines/s "
                    "and MB/s achieved, request latency p50/p90/p99, 429s and retries (live on "
                    "stderr when it is a terminal). The URL comes from --url or DT_URL, the "
                    "API token from --token-file or DT_API_TOKEN. Try it against "
                    "'dtproto serve'.",
        epilog="Exit codes: 0 every line accepted, 1 rejected or undelivered lines, "
               "2 usage error.")
    p.add_argument("--url", metavar="URL",
                   help="ingest URL or environment base URL (default: $DT_URL)")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the API token from FILE (default: $DT_API_TOKEN)")
    p.add_argument("--rate", type=_positive, required=True, metavar="N",
                   help="target lines per second")
    p.add_argument("--series", type=_positive, default=1000, metavar="S",
                   help="distinct series (metric key + dimensions), up to 1,000,000 "
                        "(default 1,000)")
    p.add_argument("--duration", type=_seconds, default=10.0, metavar="T",
                   help="seconds of load (default 10)")
    p.add_argument("--concurrency", type=_positive, default=4, metavar="N",
                   help="requests in flight at once (default 4, as send)")
    p.add_argument("--interval", type=_seconds, default=1.0, metavar="S",
                   help="a request holds the lines of S seconds (rate x S), as a producer "
                        "flushing every S seconds would send them (default 1), at most "
                        "--max-bytes")
    p.add_argument("--max-bytes", type=_positive, default=1_000_000, metavar="N",
                   help="uncompressed bytes per request at most (default 1,000,000)")
    p.add_argument("--gzip", action="store_true", help="gzip request bodies")
    p.add_argument("--retries", type=_count, default=3, metavar="N",
                   help="retries per request on 429, 5xx and connection errors (default 3)")
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                   help="read timeout in seconds (default 30)")
    add_connection_args(p)
    p.add_argument("--seed", type=int, default=20240601, help="seed of the generated lines")
    p.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    p.set_defaults(func=_cmd_load, parser=p)
