"""Sender and local endpoint throughput on loopback (pytest-benchmark).

* ``test_chunker``: the sender's own work without HTTP (block reads, line
  boundaries, chunk cutting, bookkeeping).
* ``test_send_noop*``: ``Sender.send`` against a no-op endpoint that reads the
  body and answers a fixed 202, so the number is the sender's ceiling
  (encode + chunk + HTTP client + bookkeeping), not the server's.
* ``test_endpoint_*``: :class:`dtproto.server.IngestServer` validating and
  storing what the sender sends (accepted MB/s, requests/s for big and for
  one-line requests).
* ``test_send_in_flight``: ``Sender`` and ``AsyncSender`` at concurrency 1
  and 8 through an ``IngestServer`` taking 20 ms a request (14 requests).
  ``python bench/bench_sender.py`` runs the larger matrix (0/20/100 ms,
  concurrency 1/4/8/16) and the end-to-end pipeline as a script.

Each bench records ``lines``, ``bytes``, ``lines_per_s`` and ``MB_per_s`` in
``benchmark.extra_info``.  Run::

    pytest bench/bench_sender.py --benchmark-only -p no:cacheprovider
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

import dtproto
from dtproto.sender import Sender, _blocks, _chunk_stream
from dtproto.server import IngestServer

N_LINES = 200_000
_NOOP_BODY = b'{"linesOk":0,"linesInvalid":0,"error":null,"warnings":null}'


def _corpus(n: int) -> bytes:
    # ~100 bytes per line, the shape of typical host metrics.
    return b"".join(
        b"bench.cpu.usage%d,host=host-%04d,region=eu-west-%d,service=checkout gauge,%d.%03d\n"
        % (i % 40, i % 997, i % 3, i % 100, i % 1000) for i in range(n))


@pytest.fixture(scope="module")
def corpus() -> bytes:
    return _corpus(N_LINES)


class _NoopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.wfile.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(_NOOP_BODY), _NOOP_BODY))

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def noop_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoopHandler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield "http://127.0.0.1:%d/api/v2/metrics/ingest" % httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _record(benchmark: Any, lines: int, size: int) -> None:
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(lines=lines, bytes=size, lines_per_s=round(lines / mean),
                                MB_per_s=round(size / mean / 1e6, 1))


def test_chunker(benchmark: Any, corpus: bytes) -> None:
    def run() -> int:
        return sum(c.lines for c in _chunk_stream(_blocks(corpus), 1, 1_000_000, None))

    assert benchmark.pedantic(run, rounds=5, iterations=1) == N_LINES
    _record(benchmark, N_LINES, len(corpus))


def test_chunker_line_cap_1000(benchmark: Any, corpus: bytes) -> None:
    def run() -> int:
        return sum(c.lines for c in _chunk_stream(_blocks(corpus), 1, 1_000_000, 1000))

    assert benchmark.pedantic(run, rounds=5, iterations=1) == N_LINES
    _record(benchmark, N_LINES, len(corpus))


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_send_noop(benchmark: Any, corpus: bytes, noop_url: str, gzip: bool) -> None:
    with Sender(noop_url, "bench-token", gzip=gzip, gzip_level=1) as s:
        result = benchmark.pedantic(lambda: s.send(corpus), rounds=5, iterations=1)
    assert result.lines_sent == N_LINES
    _record(benchmark, N_LINES, len(corpus))
    benchmark.extra_info["requests"] = len(result.requests)


def test_send_noop_records(benchmark: Any, noop_url: str) -> None:
    n = N_LINES // 4
    records = [dtproto.Metric.gauge("bench.cpu.usage%d" % (i % 40), float(i % 100),
                                    {"host": "host-%04d" % (i % 997), "service": "checkout"})
               for i in range(n)]
    size = len(dtproto.encode(records))
    with Sender(noop_url, "bench-token") as s:
        result = benchmark.pedantic(lambda: s.send(records), rounds=3, iterations=1)
    assert result.lines_sent == n
    _record(benchmark, n, size)


def test_endpoint_accepts_big_requests(benchmark: Any, corpus: bytes) -> None:
    with IngestServer(tokens="bench-token", keep=False) as srv:
        with Sender(srv.url, "bench-token") as s:
            result = benchmark.pedantic(lambda: s.send(corpus), rounds=3, iterations=1)
        assert result.lines_ok == N_LINES and result.ok
        requests = len(result.requests)
    _record(benchmark, N_LINES, len(corpus))
    if benchmark.stats is not None:
        benchmark.extra_info["requests_per_s"] = round(requests / benchmark.stats.stats.mean, 1)


def test_endpoint_small_requests(benchmark: Any) -> None:
    n = 500
    line = b"bench.small,host=host-0001 gauge,1.5\n"
    with IngestServer(tokens="bench-token", keep=False, log_size=10) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        headers = {"Authorization": "Api-Token bench-token",
                   "Content-Type": "text/plain; charset=utf-8"}

        def run() -> None:
            for _ in range(n):
                conn.request("POST", "/api/v2/metrics/ingest", body=line, headers=headers)
                r = conn.getresponse()
                r.read()
                assert r.status == 202

        try:
            benchmark.pedantic(run, rounds=3, iterations=1)
        finally:
            conn.close()
    _record(benchmark, n, n * len(line))
    if benchmark.stats is not None:
        benchmark.extra_info["requests_per_s"] = round(n / benchmark.stats.stats.mean)


# --------------------------------------------------------------------------- requests in flight


_IN_FLIGHT_LATENCY = 0.02      # seconds the endpoint takes per request
_IN_FLIGHT_LINES = 16_000      # about 1.4 MB: 14 requests of _IN_FLIGHT_BYTES
_IN_FLIGHT_BYTES = 100_000


@pytest.fixture(scope="module")
def slow_endpoint() -> Iterator[IngestServer]:
    with IngestServer(tokens="bench-token", keep=False,
                      faults=["slow:rate=1,delay=%g" % _IN_FLIGHT_LATENCY]) as srv:
        yield srv


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("transport", ["sync", "async"])
def test_send_in_flight(benchmark: Any, slow_endpoint: IngestServer, transport: str,
                        concurrency: int) -> None:
    """14 requests of 100 kB through an endpoint taking 20 ms a request: one at
    a time (>= 0.28 s) against 8 in flight (about 2 x 20 ms plus the work)."""
    data = _corpus(_IN_FLIGHT_LINES)
    n = data.count(b"\n")
    opts = dict(concurrency=concurrency, max_bytes=_IN_FLIGHT_BYTES)
    if transport == "sync":
        sender = Sender(slow_endpoint.url, "bench-token", **opts)

        def run() -> Any:
            return sender.send(data)
    else:
        import asyncio

        from dtproto.aio import AsyncSender

        loop = asyncio.new_event_loop()
        sender = loop.run_until_complete(_make_async(AsyncSender, slow_endpoint.url, opts))

        def run() -> Any:
            return loop.run_until_complete(sender.send(data))
    try:
        result = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    finally:
        if transport == "sync":
            sender.close()
        else:
            loop.run_until_complete(sender.aclose())
            loop.close()
    assert result.ok and result.lines_ok == n and len(result.requests) > 8
    _record(benchmark, n, len(data))
    benchmark.extra_info.update(latency_ms=_IN_FLIGHT_LATENCY * 1000, concurrency=concurrency,
                                requests=len(result.requests))


async def _make_async(cls: Any, url: str, opts: Any) -> Any:
    return cls(url, "bench-token", **opts)


# --------------------------------------------------------------------------- requests in flight (script)


def _matrix(mb: int, latencies: Any, concurrencies: Any) -> None:
    """Seconds and MB/s to send ``mb`` MB through ``dtproto serve`` with
    ``latency`` per request, sync and async, at each concurrency."""
    import asyncio
    import time

    from dtproto.aio import AsyncSender

    corpus = _corpus(mb * 10_000)          # ~100 bytes a line
    size = len(corpus)
    n = corpus.count(b"\n")
    print("%.1f MB, %d lines, %d requests of <= 1 MB" % (size / 1e6, n, -(-size // 1_000_000)))
    print("| latency | concurrency | sync s | sync MB/s | async s | async MB/s |")
    print("|---|---|---|---|---|---|")
    for latency in latencies:
        faults = ["slow:rate=1,delay=%g" % latency] if latency else []
        for c in concurrencies:
            row = ["%d ms" % (latency * 1000), str(c)]
            with IngestServer(tokens="bench-token", keep=False, faults=faults) as srv:
                t = time.perf_counter()
                with Sender(srv.url, "bench-token", concurrency=c) as s:
                    r = s.send(corpus)
                took = time.perf_counter() - t
                assert r.ok and r.lines_ok == n
                row += ["%.2f" % took, "%.1f" % (size / 1e6 / took)]

                async def run() -> Any:
                    async with AsyncSender(srv.url, "bench-token", concurrency=c) as a:
                        return await a.send(corpus)
                t = time.perf_counter()
                r = asyncio.run(run())
                took = time.perf_counter() - t
                assert r.ok and r.lines_ok == n
                row += ["%.2f" % took, "%.1f" % (size / 1e6 / took)]
            print("| " + " | ".join(row) + " |", flush=True)


def _pipeline(n: int, concurrency: int) -> None:
    """Records -> Encoder -> Sender, end to end, lines/s; and the cost of validate=True."""
    import time

    records = [dtproto.Metric.gauge("bench.cpu.usage%d" % (i % 40), float(i % 100),
                                    {"host": "host-%04d" % (i % 997), "service": "checkout"})
               for i in range(n)]
    with IngestServer(tokens="bench-token", keep=False) as srv:
        t = time.perf_counter()
        with Sender(srv.url, "bench-token", concurrency=concurrency) as s:
            enc = dtproto.Encoder()
            for k in range(0, n, 10_000):
                for rec in records[k:k + 10_000]:
                    enc.add(rec)
                s.add(enc)
        took = time.perf_counter() - t
        assert s.totals.lines_ok == n
        print("pipeline records -> Encoder -> Sender(concurrency=%d): %d lines in %.2f s, "
              "%.0f lines/s" % (concurrency, n, took, n / took))
    corpus = _corpus(n)
    for validate in (False, True):
        with IngestServer(tokens="bench-token", keep=False) as srv:
            t = time.perf_counter()
            with Sender(srv.url, "bench-token", concurrency=concurrency, validate=validate) as s:
                s.send(corpus)
            print("send %d lines, validate=%s: %.2f s" % (n, validate, time.perf_counter() - t))
    from dtproto._impl import codec
    t = time.perf_counter()
    codec.validate(corpus, max_errors=None)
    print("validate() alone on the same %d lines: %.3f s" % (n, time.perf_counter() - t))


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="Sending through dtproto serve with injected latency")
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--latency", default="0,0.02,0.1", help="seconds per request, comma list")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--pipeline-lines", type=int, default=200_000)
    a = ap.parse_args()
    print("dtproto %s, implementation %s, Python %s" % (
        dtproto.__version__, dtproto.IMPLEMENTATION, sys.version.split()[0]))
    _matrix(a.mb, [float(x) for x in a.latency.split(",")],
            [int(x) for x in a.concurrency.split(",")])
    _pipeline(a.pipeline_lines, 8)
