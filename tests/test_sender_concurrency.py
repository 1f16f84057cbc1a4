"""Requests in flight (issue 11), over both transports: speed, faults, failure
with several chunks in flight, client-side validation, and the policy core
with a fake clock.

Every check counts lines: each input line carries its number (``i=<n>``), so
what the endpoint stored maps back to input lines, and every input line must
be exactly one of accepted, rejected, undelivered, or at/after ``stopped_at``.
"""

from __future__ import annotations

import collections
import random
import re
import time
from typing import Dict, List, Set

import pytest

from dtproto import _send_core as core
from dtproto.errors import SendError
from dtproto.server import Fault, IngestServer

from test_sender_transports import open_sender, transport  # noqa: F401

TOKEN = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.SECRETPARTOFTHETOKEN0123456789"
FAST = dict(backoff_base=0.001, backoff_cap=0.02, retry_budget=30.0, connect_timeout=2.0,
            read_timeout=5.0, flush_interval=None)


def numbered(n: int, pad: int = 0) -> bytes:
    x = b"x" * pad
    return b"".join(b"c.m,i=%d,p=a%s gauge,%d\n" % (i, x, i) for i in range(1, n + 1))


def stored_numbers(srv: IngestServer) -> List[int]:
    return [int(re.search(rb"i=(\d+)", line).group(1)) for line in srv.accepted_lines]


def undelivered_numbers(result) -> Set[int]:
    out: Set[int] = set()
    for u in result.undelivered:
        out.update(range(u.first_line, u.last_line + 1))
    return out


def assert_exactly_once(srv: IngestServer, n: int) -> None:
    counts = collections.Counter(stored_numbers(srv))
    assert sorted(counts) == list(range(1, n + 1))
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1][:10]


def assert_accounted(result, n: int, stored: List[int]) -> None:
    """Every input line exactly one of: accepted, rejected, undelivered, >= stopped_at."""
    accepted = set(stored)
    assert len(accepted) == len(stored) == result.lines_ok
    rejected = {i.line for i in result.invalid_lines}
    assert len(rejected) == result.lines_invalid            # all listed here
    undelivered = undelivered_numbers(result)
    assert sum(u.lines for u in result.undelivered) == len(undelivered)
    later = set(range(result.stopped_at, n + 1)) if result.stopped_at else set()
    parts = [accepted, rejected, undelivered, later]
    assert sum(len(p) for p in parts) == n                  # no line twice ...
    assert set().union(*parts) == set(range(1, n + 1))     # ... and none missing


# --------------------------------------------------------------------------- must-show 1


def test_requests_in_flight_are_faster_and_store_every_line_once(transport):
    n = 2000
    data = numbered(n, pad=20)          # ~90 KB: 16 chunks of 6 KB
    took: Dict[int, float] = {}
    with IngestServer(faults=["slow:rate=1,delay=0.1"]) as srv:
        for c in (1, 8):
            srv.reset()
            with open_sender(srv.url, TOKEN, concurrency=c, max_bytes=6000, **FAST) as s:
                t = time.monotonic()
                r = s.send(data)
                took[c] = time.monotonic() - t
            assert r.ok and r.lines_ok == n and len(r.requests) == 16
            assert [q.first_line for q in r.requests] == sorted(q.first_line for q in r.requests)
            assert_exactly_once(srv, n)
    # 16 requests of 100 ms: about 1.6 s one at a time, about 0.2 s with 8 in
    # flight.  Timing on shared machines is noisy: the speed-up itself is
    # measured in bench/bench_sender.py; here only that it is one.
    assert took[8] < took[1], took


# --------------------------------------------------------------------------- must-show 2


FAULTS_25 = [
    Fault("429", rate=0.07),
    Fault("429", rate=0.06, retry_after=0.01),
    Fault("503", rate=0.07),
    Fault("drop-before", rate=0.07),   # connection closed before anything was stored
]


def test_faults_on_a_quarter_of_requests_store_every_line_once(transport):
    n = 6000
    with IngestServer(faults=list(FAULTS_25), seed=11) as srv:
        with open_sender(srv.url, TOKEN, concurrency=8, retry_ambiguous=True, retries=12,
                         max_bytes=4000, **FAST) as s:
            r = s.send(numbered(n))
        faulted = [q for q in srv.requests if q.status != 202]
    assert r.ok and r.lines_ok == n and not r.undelivered and r.stopped_at is None
    assert len(faulted) > len(srv.requests) * 0.1                  # the faults did happen
    assert any(q.attempts > 1 for q in r.requests)
    assert_exactly_once(srv, n)
    assert_accounted(r, n, stored_numbers(srv))


def test_a_429_shrinks_the_window_and_successes_grow_it_back():
    w = core._Window(8)
    w.throttled()
    assert w.size == 4
    w.throttled(), w.throttled(), w.throttled(), w.throttled()
    assert w.size == 1                                             # at least 1
    for _ in range(3):
        w.success()
    assert w.size == 4
    for _ in range(10):
        w.success()
    assert w.size == 8                                             # up to N


class _Opts:
    retries = 3
    backoff_base = 1.0
    backoff_cap = 30.0
    retry_budget = 120.0
    retry_ambiguous = False
    gzip = False
    url = "http://x/api/v2/metrics/ingest"
    max_bytes = 1000
    _token = core._Secret(None)


def _delivery(window=None, now=0.0):
    chunk = core._Chunk(b"a.b 1\nc.d 2\n", 1, 2)
    info = core.RequestInfo(0, 1, 2, 12)
    return core._Delivery(_Opts(), chunk, info, window or core._Window(4),
                          random.Random(1), now)


def test_retry_after_is_honoured_per_request_and_429_throttles():
    w = core._Window(4)
    d = _delivery(w)
    d.begin()
    assert d.on_response(429, {"retry-after": "7"}, b"", 0.0) == 7.0
    assert w.size == 2
    d.begin()
    assert d.on_response(503, {"retry-after": "100"}, b"", 7.0) == 30.0   # capped
    d.begin()
    assert d.on_response(202, {}, b'{"linesOk": 2, "linesInvalid": 0}', 40.0) is None
    assert w.size == 3 and d.outcome.verdict.ok == 2 and d.info.history == [429, 503, 202]
    # Without Retry-After: full jitter below the ceiling.
    d2 = _delivery(w)
    d2.begin()
    delay = d2.on_response(429, {}, b"", 0.0)
    assert 0.0 <= delay <= 1.0


def test_ambiguous_failure_is_final_unless_allowed():
    d = _delivery()
    d.begin()
    assert d.on_failure(core._Attempt("dropped", ambiguous=True), 0.0) is None
    assert d.outcome.error is not None and d.outcome.undelivered.ambiguous
    _Opts.retry_ambiguous = True
    try:
        d = _delivery()
        d.begin()
        assert d.on_failure(core._Attempt("dropped", ambiguous=True), 0.0) is not None
    finally:
        _Opts.retry_ambiguous = False


# --------------------------------------------------------------------------- must-show 3


def test_failure_with_several_in_flight_accounts_for_every_line(transport):
    n = 4000
    with IngestServer(faults=["drop-before:requests=3"]) as srv:
        with open_sender(srv.url, TOKEN, concurrency=8, max_bytes=3000) as s:
            with pytest.raises(SendError) as ei:
                s.send(numbered(n))
        stored = stored_numbers(srv)
    e = ei.value
    r = e.result
    assert e.ambiguous and r.undelivered and all(u.ambiguous for u in r.undelivered)
    assert r.stopped_at is not None and r.stopped_at <= n
    assert not set(stored) & undelivered_numbers(r)                # never both
    assert_accounted(r, n, stored)
    # The send stopped early: the input has 35 chunks, and the 3rd request failed.
    assert len(r.requests) < 35 and r.lines_ok < n


def test_retries_exhausted_on_several_chunks_in_flight(transport):
    n = 3000
    with IngestServer(faults=["503:rate=0.5"], seed=3) as srv:
        with open_sender(srv.url, TOKEN, concurrency=6, retries=0, max_bytes=2000,
                         **FAST) as s:
            with pytest.raises(SendError) as ei:
                s.send(numbered(n))
        stored = stored_numbers(srv)
    r = ei.value.result
    assert not any(u.ambiguous for u in r.undelivered)
    assert_accounted(r, n, stored)


# --------------------------------------------------------------------------- must-show 4


def test_client_side_validation_lists_every_invalid_line(transport):
    n = 10_000
    lines = numbered(n).split(b"\n")[:-1]
    bad = set(range(7, n + 1, 100))                                # 1 %
    kinds = [b"1bad.key,i=%d gauge,1", b"c.m,i=%d gauge,nope", b"c.m,i=%d count,5",
             b"c.m,i=%d,k.1=v gauge,1"]
    for k, i in enumerate(sorted(bad)):
        lines[i - 1] = kinds[k % len(kinds)] % i
    data = b"\n".join(lines) + b"\n"
    with IngestServer(keep_bodies=True) as srv:
        with open_sender(srv.url, TOKEN, concurrency=4, validate=True, max_bytes=20_000,
                         **FAST) as s:
            r = s.send(data)
        sent = b"".join(q.body for q in srv.requests)
        assert sum(q.lines_invalid for q in srv.requests) == 0     # none of them sent
    assert sorted(i.line for i in r.invalid_lines) == sorted(bad)
    assert all(i.source == "client" and i.request is None for i in r.invalid_lines)
    assert r.lines_invalid == len(bad) and r.unreported_invalid == 0
    assert r.lines_ok == n - len(bad)
    for i in bad:
        assert (b"i=%d " % i) not in sent and (b"i=%d," % i) not in sent
    assert_exactly_once_valid(srv, n, bad)
    assert_accounted(r, n, stored_numbers(srv))
    # The reasons are the codec's, for that very line.
    import dtproto
    for inv in r.invalid_lines[:8]:
        assert inv.reason == dtproto.validate(lines[inv.line - 1]).errors[0].message


def assert_exactly_once_valid(srv: IngestServer, n: int, bad: Set[int]) -> None:
    counts = collections.Counter(stored_numbers(srv))
    assert sorted(counts) == sorted(set(range(1, n + 1)) - bad)
    assert set(counts.values()) == {1}


def test_validation_applies_the_timestamp_window_only_with_now(transport):
    data = b"a.b 1 1000\nc.d 2\n"
    with IngestServer(now_ms=1000) as srv:
        with open_sender(srv.url, TOKEN, validate=True, **FAST) as s:
            assert s.send(data).lines_ok == 2                      # no clock: not checked
        with open_sender(srv.url, TOKEN, validate=True, now_ms=10 ** 13, **FAST) as s:
            r = s.send(data)
    assert [(i.line, i.source) for i in r.invalid_lines] == [(1, "client")]
    assert r.lines_ok == 1


def test_chunk_of_only_invalid_lines_is_not_sent(transport):
    with IngestServer() as srv:
        with open_sender(srv.url, TOKEN, validate=True, max_bytes=20, **FAST) as s:
            r = s.send(b"bad key 1\nbad key 2\na.b 1\n")
        assert len(srv.requests) == 1
    assert [i.line for i in r.invalid_lines] == [1, 2] and r.lines_ok == 1


# --------------------------------------------------------------------------- defaults, on_request, send -v


def test_the_default_is_four_requests_in_flight_in_the_library_and_the_cli(transport):
    from dtproto.cli import build_parser

    assert core.DEFAULT_CONCURRENCY == 4
    args = build_parser().parse_args(["send", "f.txt", "--url", "http://127.0.0.1:1"])
    assert args.concurrency == core.DEFAULT_CONCURRENCY
    # 8 chunks through 150 ms per request: one at a time takes 1.2 s, four 0.3 s.
    with IngestServer(faults=[Fault("slow", rate=1.0, delay=0.15)]) as srv:
        with open_sender(srv.url, None, max_lines=100, **FAST) as s:
            assert s.concurrency == 4
            t = time.perf_counter()
            r = s.send(numbered(800))
            elapsed = time.perf_counter() - t
        assert r.ok and len(r.requests) == 8
        assert_exactly_once(srv, 800)
    assert elapsed < 0.9, elapsed


def test_on_request_sees_each_request_as_it_completes_with_the_number_in_flight(transport):
    seen = []
    # First match wins: the server's third request is answered 429, the others slowly.
    with IngestServer(faults=[Fault("429", requests={3}, retry_after=0),
                              Fault("slow", rate=1.0, delay=0.05)]) as srv:
        with open_sender(srv.url, None, max_lines=10, concurrency=4,
                         on_request=lambda q, n: seen.append((q.index, q.status, q.attempts,
                                                              n)), **FAST) as s:
            r = s.send(numbered(100))
    assert r.ok and len(r.requests) == 10
    assert sorted(i for i, *_ in seen) == list(range(10))      # each request once
    assert all(status == 202 for _, status, _, _ in seen)
    assert sum(a for _, _, a, _ in seen) == 11                  # the 429 was retried
    assert all(0 <= n < 4 for *_, n in seen)
    assert max(n for *_, n in seen) >= 1                        # others were still in flight
    assert seen[-1][3] == 0                                     # the last: none left


def test_on_request_that_raises_does_not_stop_the_send(transport, caplog):
    def boom(q, n):
        raise RuntimeError("display broke")

    with IngestServer() as srv:
        with open_sender(srv.url, None, max_lines=10, on_request=boom, **FAST) as s:
            r = s.send(numbered(30))
    assert r.ok and r.lines_ok == 30
    assert "on_request raised" in caplog.text
    with pytest.raises(core.ConfigurationError):
        open_sender("http://127.0.0.1:1/api/v2/metrics/ingest", None, on_request=42)


def test_send_verbose_shows_requests_in_flight_never_the_token(tmp_path, monkeypatch, capsys):
    from dtproto.cli import main

    f = tmp_path / "m.txt"
    f.write_bytes(numbered(60))
    monkeypatch.setenv("DT_API_TOKEN", TOKEN)
    with IngestServer(tokens=TOKEN, faults=[Fault("slow", rate=1.0, delay=0.05)]) as srv:
        rc = main(["send", str(f), "--url", srv.url, "--max-lines", "10", "--concurrency", "3",
                   "-v"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    live = [line for line in err.splitlines() if " in flight" in line]
    assert len(live) == 6                      # one per request, as it completed
    for line in live:
        assert re.match(r"dtproto: request \d: lines \d+-\d+, [\d,]+ bytes: 202 after 1 attempt, "
                        r"[\d.]+ ms; [0-2] in flight$", line), line
    assert live[-1].endswith("; 0 in flight")
    assert re.search(r"at most [23] requests in flight at once", out)
    assert "request 6: lines 51-60" in out
    assert TOKEN not in out + err and "SECRETPART" not in out + err
