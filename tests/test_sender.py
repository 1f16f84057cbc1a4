"""The Sender against the real local endpoint on loopback (no mocked HTTP)."""

from __future__ import annotations

import io
import logging
import pickle
import socket
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dtproto
from dtproto.errors import SendError
from dtproto.sender import (
    AuthenticationError,
    ConfigurationError,
    DeliveryError,
    EndpointNotFoundError,
    MissingScopeError,
    PayloadTooLargeError,
    Sender,
    _blocks,
    _chunk_stream,
    _Chunk,
    _Rejected,
    ingest_url,
)
from dtproto.server import Fault, IngestServer

# Every test here runs over both transports (the sync Sender and the
# AsyncSender), through the autouse fixture imported here.
from test_sender_transports import open_sender, sender_class, transport  # noqa: F401

TOKEN = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.SECRETPARTOFTHETOKEN0123456789"


@pytest.fixture
def srv():
    with IngestServer(tokens={TOKEN: ["metrics.ingest"], "readonly": ["metrics.read"]},
                      keep_bodies=True) as s:
        yield s


def sender(srv: IngestServer, **kw) -> Sender:
    """A sender with tiny backoff so retry tests stay fast."""
    opts = dict(backoff_base=0.001, backoff_cap=0.02, retry_budget=10.0,
                connect_timeout=2.0, read_timeout=5.0)
    opts.update(kw)
    token = opts.pop("token", TOKEN)
    url = opts.pop("url", srv.url)
    return open_sender(url, token, **opts)


def numbered(n: int, width: int = 0) -> bytes:
    """n distinct valid lines; line i (1-based) carries i=<i>."""
    pad = b"x" * width
    return b"".join(b"t.metric,i=%d,p=a%s gauge,%d\n" % (i, pad, i) for i in range(1, n + 1))


# --------------------------------------------------------------------------- chunking


def test_chunks_respect_max_bytes_and_never_split_lines(srv):
    data = b"".join(b"t.m,i=%d,pad=%s gauge,1\n" % (i, b"y" * (i % 37)) for i in range(1, 301))
    with sender(srv, max_bytes=400) as s:
        r = s.send(data)
    assert r.ok and r.lines_ok == 300
    bodies = [q.body for q in srv.requests]
    assert len(bodies) > 10
    assert all(len(b) <= 400 and b.endswith(b"\n") for b in bodies)
    # Up to 4 requests are in flight by default, so the server may see the
    # chunks in any order; in input order they are the input: nothing split or lost.
    bodies.sort(key=lambda b: int(b[b.index(b"i=") + 2:b.index(b",pad")]))
    assert b"".join(bodies) == data
    assert sorted(srv.accepted_lines) == sorted(data.splitlines())
    # Chunks are filled: each one plus the next line would not have fit.
    for b, nxt in zip(bodies, bodies[1:]):
        assert len(b) + len(nxt.split(b"\n", 1)[0]) + 1 > 400


def test_line_cap(srv):
    with sender(srv, max_lines=7) as s:
        r = s.send(numbered(50))
    assert r.lines_ok == 50
    assert sorted(q.body.count(b"\n") for q in srv.requests) == [1] + [7] * 7


def test_oneagent_endpoint_is_capped_at_1000_lines_and_linesvalid_is_read(srv):
    s = sender_class().oneagent("127.0.0.1", srv.port, backoff_base=0.001)
    assert s.max_lines == 1000
    with s:
        r = s.send(numbered(2500))
    assert r.lines_ok == 2500 and r.ok
    assert sorted(q.body.count(b"\n") for q in srv.requests) == [500, 1000, 1000]
    assert all(q.auth == "not-checked" for q in srv.requests)


def test_line_numbers_map_back_across_chunks(srv):
    lines = [b"t.m,i=%d gauge,1" % i for i in range(1, 121)]
    bad = {1, 17, 40, 41, 77, 119, 120}
    for i in bad:
        lines[i - 1] = b"bad key %d" % i
    for i in (5, 6, 60):                      # blank lines count as lines
        lines[i - 1] = b""
    lines[30] = lines[30] + b"\r"             # CRLF line
    lines[90] = b"t.m.counter,i=91 count,delta=1"   # accepted with a warning
    data = b"\n".join(lines) + b"\n"
    with sender(srv, max_bytes=300) as s:
        r = s.send(data)
    assert len(r.requests) > 5
    assert sorted(i.line for i in r.invalid_lines) == sorted(bad)
    assert r.lines_invalid == len(bad) and r.unreported_invalid == 0
    # The reason is the server's, for that very line.
    for inv in r.invalid_lines:
        assert inv.source == "server"
        expect = dtproto.validate(lines[inv.line - 1]).errors[0].message
        assert inv.reason == expect
    assert [(w.line, w.message) for w in r.warnings] == [
        (91, "metric key 't.m.counter' changed to 't.m.counter.count'")]
    assert r.lines_ok == 120 - len(bad) - 3


def test_partial_acceptance_is_returned_not_raised(srv):
    data = b"a.b 1\nbad key\nc.d 2\n"
    with sender(srv) as s:
        r = s.send(data)
    assert (r.lines_ok, r.lines_invalid, r.ok) == (2, 1, False)
    assert r.requests[0].status == 400 and r.requests[0].attempts == 1   # 400 never retried
    assert len(srv.requests) == 1
    assert srv.accepted_lines == [b"a.b 1", b"c.d 2"]


def test_server_count_kept_separate_from_truncated_list(srv):
    data = b"".join(b"bad key %d\n" % i for i in range(25)) + b"a.b 1\n"
    with sender(srv) as s:
        r = s.send(data)
    assert r.lines_invalid == 25
    assert len(r.invalid_lines) == 10 and r.unreported_invalid == 15
    assert [i.line for i in r.invalid_lines] == list(range(1, 11))


def test_oversized_line_is_rejected_with_its_number_and_never_sent(srv):
    big = b"t.big,pad=" + b"z" * 600 + b" 1"
    data = b"a.b 1\n" + big + b"\nc.d 2\n"
    with sender(srv, max_bytes=200) as s:
        r = s.send(data)
    assert [(i.line, i.source) for i in r.invalid_lines] == [(2, "client")]
    assert "613 bytes" in r.invalid_lines[0].reason
    assert r.lines_ok == 2 and r.lines_rejected_by_client == 1
    assert all(b"zzz" not in q.body for q in srv.requests)
    # The same when the long line arrives in many small pieces of a stream.
    pieces = [data[i:i + 7] for i in range(0, len(data), 7)]
    with sender(srv, max_bytes=200) as s:
        r2 = s.send(pieces)
    assert [(i.line, i.reason) for i in r2.invalid_lines] == [(2, r.invalid_lines[0].reason)]
    assert r2.lines_ok == 2


@pytest.mark.parametrize("body", [
    b" " * 100 + b"\na.b 1\n",                   # blank, longer than a request
    b" \t" * 60 + b"\r\na.b 1\n",                # SP and HTAB, CR before LF
    b"a.b 1\n" + b" " * 100,                     # last, no newline
    b"a.b 1\n" + b" " * 100 + b"\na.b 2\n",
    b" " * 100 + b"x\na.b 1\n",                  # not blank: rejected
    b" " * 50 + b"\r" + b" " * 50 + b"\na.b 1\n",  # a CR inside: not blank
    b"\x0b" + b" " * 100 + b"\na.b 1\n",          # VT is not blank
    b" " * 60_000 + b"\na.b 1\n",                # blank but longer than a line may be
], ids=range(8))
@pytest.mark.parametrize("pieces", [0, 7], ids=["whole", "7-byte pieces"])
def test_a_line_too_long_for_a_request_that_is_blank_is_skipped_as_validate_skips_it(
        srv, body, pieces):
    # Found by a red-team pass: it was reported invalid ("line too long for
    # one request") where validate() and the server skip it as blank.
    data = [body[i:i + pieces] for i in range(0, len(body), pieces)] if pieces else body
    before = len(srv.requests)
    with sender(srv, max_bytes=50) as s:
        r = s.send(data)
    v = dtproto.validate(body)
    assert (r.lines_ok, r.lines_invalid) == (v.lines_ok, v.lines_invalid)
    total = body.count(b"\n") + (not body.endswith(b"\n"))
    assert r.lines_ok + r.lines_invalid + r.lines_skipped == total
    assert all(len(q.body) <= 50 for q in list(srv.requests)[before:])


def test_chunker_memory_stays_bounded():
    block = numbered(2000)                    # ~60 KB, repeated lazily: ~60 MB in total

    def stream():
        for _ in range(1000):
            yield block

    tracemalloc.start()
    try:
        lines = 0
        for item in _chunk_stream(stream(), 1, 1_000_000, None):
            assert isinstance(item, _Chunk) and len(item.body) <= 1_000_000
            lines += item.lines
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == 2_000_000
    assert peak < 4_500_000                  # a few chunk-sized buffers, not the input


def test_chunker_last_line_without_newline_and_rejects_at_boundaries():
    out = list(_chunk_stream(_blocks(b"a 1\nb 2"), 1, 100, None))
    assert [(c.first_line, c.lines, c.body) for c in out] == [(1, 2, b"a 1\nb 2\n")]
    out = list(_chunk_stream(_blocks(b"x" * 50), 1, 10, None))
    assert len(out) == 1 and isinstance(out[0], _Rejected) and out[0].line == 1


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.one_of(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
                                st.just(None)), max_size=40),
       cuts=st.lists(st.integers(1, 9), min_size=1, max_size=5),
       max_bytes=st.integers(4, 40), max_lines=st.one_of(st.none(), st.integers(1, 6)))
def test_chunker_blanked_lines_stay_in_their_chunk(items, cuts, max_bytes, max_lines):
    """A _Blanked line (None here) is an empty line of the chunk holding its
    number, listed in its rejects; every line is in exactly one chunk or
    rejection, in order; no chunk is cut for it and none exceeds max_bytes."""
    from dtproto._send_core import _Blanked

    def blocks():
        k = 0
        for n, item in enumerate(items):
            if item is None:
                yield _Blanked("bad %d" % (n + 1))
                continue
            data = item + b"\n"
            while data:   # in pieces, as reads come
                step = cuts[k % len(cuts)]
                k += 1
                yield data[:step]
                data = data[step:]

    seen = []
    for out in _chunk_stream(blocks(), 1, max_bytes, max_lines):
        if isinstance(out, _Rejected):
            seen.append((out.line, "rejected"))
            assert items[out.line - 1] is not None and len(items[out.line - 1]) + 1 > max_bytes
            continue
        assert len(out.body) <= max_bytes and (max_lines is None or out.lines <= max_lines)
        lines = out.body.split(b"\n")[:-1]
        assert len(lines) == out.lines
        rejects = dict(out.rejects)
        for k, line in enumerate(lines, out.first_line):
            if k in rejects:
                assert items[k - 1] is None and line == b"" and rejects.pop(k) == "bad %d" % k
            else:
                assert items[k - 1] is not None and line == items[k - 1]
            seen.append((k, "chunk"))
        assert not rejects
    assert [k for k, _ in seen] == list(range(1, len(items) + 1))


def test_chunker_cuts_a_run_of_blanked_lines_at_max_bytes():
    """Each _Blanked line is a byte of the buffer: a run of them is cut at
    max_bytes like any bytes (it grew without bound until a data block)."""
    from dtproto._send_core import _Blanked

    read = []

    def blocks():
        for i in range(5_000):
            read.append(i)
            yield _Blanked("null")
        yield b"a.b 1\n"

    out = _chunk_stream(blocks(), 1, 1_000, None)
    first = next(out)
    assert (first.first_line, first.lines, len(first.rejects)) == (1, 1_000, 1_000)
    assert len(read) <= 1_001


def test_a_read_failure_keeps_the_client_rejections_read_before_it():
    """Lines the client rejected, still in the chunker when the input fails,
    are invalid (with their reasons), not undelivered (found by a review)."""
    def gen():
        yield dtproto.Metric.gauge("a.b", 1.0)
        yield dtproto.Metric.gauge("bad key", 2.0)
        yield dtproto.Metric.gauge("c.d", 3.0)
        yield "x.y 4"
        raise OSError("disk gone")

    with IngestServer(tokens={"t": ["metrics.ingest"]}) as srv:
        with open_sender(srv.url, "t") as s:
            with pytest.raises(dtproto.InputReadError) as ei:
                s.send(gen())
    r = ei.value.result
    assert [(i.line, i.source) for i in r.invalid_lines] == [(2, "client")]
    assert "cannot encode record" in r.invalid_lines[0].reason and r.lines_invalid == 1
    # line 4 (the str) was still being joined when the input failed: never
    # attempted, at stopped_at
    assert [(u.first_line, u.last_line, u.lines) for u in r.undelivered] == [(1, 3, 2)]
    assert r.stopped_at == 4 and r.input_error == "OSError: disk gone"


# --------------------------------------------------------------------------- inputs


def test_accepts_every_input_kind(srv):
    text = "a.b 1\nc.d 2\n"
    enc = dtproto.Encoder()
    enc.gauge("e.f", 3.0)
    records = [dtproto.Metric.gauge("g.h", 4.0), dtproto.Metric.gauge("1bad", 1.0),
               dtproto.Metric.gauge("i.j", 5.0)]
    cases = [
        (text, 2), (text.encode(), 2), (bytearray(text.encode()), 2),
        (memoryview(text.encode()), 2), (io.BytesIO(text.encode()), 2),
        (io.StringIO(text), 2), (["a.b 1", "c.d 2\n"], 2), ([b"a.b", b" 1\nc.d 2\n"], 2),
        (enc, 1), (dtproto.Metric.gauge("k.l", 1.0), 1),
    ]
    with sender(srv) as s:
        for data, ok in cases:
            r = s.send(data)
            assert r.ok and r.lines_ok == ok, data
        assert enc.lines == 1                         # send() leaves an Encoder alone
        r = s.send(records)
    # The record that cannot be encoded is a client-side rejection at its
    # position: an empty line of the one request, which it does not cut.
    assert r.lines_ok == 2
    assert [(i.line, i.source) for i in r.invalid_lines] == [(2, "client")]
    assert "cannot encode record" in r.invalid_lines[0].reason
    assert [(q.first_line, q.lines) for q in r.requests] == [(1, 3)]
    assert srv.requests[-1].body == b"g.h gauge,4\n\ni.j gauge,5\n"


def test_blank_only_input_sends_nothing(srv):
    with sender(srv) as s:
        r = s.send(b"\n\n  \n")
    assert r.requests == [] and r.lines_skipped == 3 and r.ok
    assert len(srv.requests) == 0


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(srv, status):
    srv.faults = [Fault(str(status), requests={1})]
    with sender(srv) as s:
        r = s.send(b"a.b 1\n")
    assert r.ok and r.requests[0].history == [status, 202] and r.requests[0].attempts == 2
    assert srv.accepted_lines == [b"a.b 1"]


def test_retry_after_is_honoured(srv):
    srv.faults = [Fault("429", requests={1}, retry_after=0.3)]
    with sender(srv, backoff_cap=5.0) as s:
        r = s.send(b"a.b 1\n")
    assert r.ok and r.requests[0].latency >= 0.3


def test_retry_after_is_capped(srv):
    srv.faults = [Fault("429", requests={1}, retry_after=60)]
    with sender(srv, backoff_cap=0.05) as s:
        t = time.perf_counter()
        r = s.send(b"a.b 1\n")
    assert r.ok and time.perf_counter() - t < 5


def test_retries_exhausted_raise_with_partial_result(srv):
    srv.faults = [Fault("503", requests={2, 3, 4})]
    # One request at a time, so that the server's requests 2..4 are the second chunk.
    with sender(srv, retries=2, max_bytes=12, concurrency=1) as s:     # two lines per chunk
        with pytest.raises(DeliveryError) as ei:
            s.send(b"a.b 1\nc.d 2\ne.f 3\ng.h 4\n")
    e = ei.value
    assert e.status == 503 and not e.ambiguous
    assert e.result.lines_ok == 2                     # first chunk was delivered
    [u] = e.result.undelivered
    assert (u.first_line, u.last_line, u.status) == (3, 4, 503)
    assert "gave up after 3 attempts" in u.reason
    assert len(srv.requests) == 4                     # 1 ok + 3 attempts; rest not read


def test_retry_budget_bounds_the_time(srv):
    srv.faults = [Fault("503", rate=1.0)]
    with sender(srv, retries=1000, backoff_base=0.05, backoff_cap=0.05, retry_budget=0.3) as s:
        t = time.perf_counter()
        with pytest.raises(DeliveryError, match="budget"):
            s.send(b"a.b 1\n")
    assert time.perf_counter() - t < 2


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def test_connection_refused_is_retried_then_raised():
    port = _free_port()
    s = open_sender("http://127.0.0.1:%d/api/v2/metrics/ingest" % port, TOKEN, retries=2,
               backoff_base=0.001, backoff_cap=0.01)
    with pytest.raises(DeliveryError) as ei:
        s.send(b"a.b 1\n")
    s.close()
    info = ei.value.result.requests[0]
    assert info.attempts == 3 and all("cannot connect" in h for h in info.history)
    assert ei.value.status is None and not ei.value.ambiguous


def _free_ipv6_port() -> int:
    try:
        with socket.socket(socket.AF_INET6) as sk:
            sk.bind(("::1", 0))
            return int(sk.getsockname()[1])
    except OSError:
        pytest.skip("no IPv6 loopback here")


@pytest.mark.parametrize("host,free_port", [("127.0.0.1", lambda: _free_port()),
                                            ("[::1]", lambda: _free_ipv6_port())],
                         ids=["ipv4", "ipv6"])
def test_a_refusing_proxy_is_named_not_the_endpoint(host, free_port):
    # An IPv6 proxy is connected to as [::1]:port by both transports (the
    # async one once made the URL http://::1:port, which aiohttp refused).
    port = free_port()
    s = open_sender("https://ingest.example.invalid/api/v2/metrics/ingest", TOKEN, retries=0,
                    proxy="http://%s:%d" % (host, port))
    with pytest.raises(DeliveryError) as ei:
        s.send(b"a.b 1\n")
    s.close()
    (reason,) = ei.value.result.requests[0].history
    assert reason.startswith("cannot connect to ingest.example.invalid:443 through the proxy "
                             "http://%s:%d: connection refused" % (host, port)), reason
    assert "check the proxy" in reason and "check the URL" not in reason
    if host != "127.0.0.1":
        return
    # without a proxy the endpoint is named, and the URL is what to check
    s = open_sender("http://127.0.0.1:%d/api/v2/metrics/ingest" % port, TOKEN, retries=0)
    with pytest.raises(DeliveryError) as ei:
        s.send(b"a.b 1\n")
    s.close()
    (reason,) = ei.value.result.requests[0].history
    assert reason.startswith("cannot connect to 127.0.0.1:%d: connection refused" % port)
    assert "check the URL" in reason and "proxy" not in reason


def test_drop_before_processing_with_retry_ambiguous_stores_exactly_once(srv):
    srv.faults = [Fault("drop-before", requests={1, 2})]
    with sender(srv, retry_ambiguous=True) as s:
        r = s.send(b"a.b 1\n")
    assert r.ok and r.requests[0].attempts == 3
    assert srv.accepted_lines == [b"a.b 1"]


def test_drop_after_storing_with_retry_ambiguous_duplicates(srv):
    # The documented risk: the server stored the chunk, the answer was lost,
    # the retry stores it again (a count,delta line is then counted twice).
    srv.faults = [Fault("drop-after", requests={1})]
    with sender(srv, retry_ambiguous=True) as s:
        r = s.send(b"c.d count,delta=5\n")
    assert r.ok
    assert srv.accepted_lines == [b"c.d count,delta=5"] * 2


@pytest.mark.parametrize("kind,stored", [("drop-after", 1), ("drop-before", 0)])
def test_ambiguous_failure_is_not_retried_by_default(srv, kind, stored):
    srv.faults = [Fault(kind, requests={1})]
    with sender(srv) as s:
        with pytest.raises(DeliveryError) as ei:
            s.send(b"c.d count,delta=5\n")
    e = ei.value
    assert e.ambiguous and e.result.undelivered[0].ambiguous
    assert "retry_ambiguous=False" in str(e)
    assert len(srv.requests) == 1
    assert len(srv.accepted_lines) == stored


def test_read_timeout_is_ambiguous(srv):
    srv.faults = [Fault("slow", requests={1}, delay=0.6)]
    with sender(srv, read_timeout=0.15) as s:
        with pytest.raises(DeliveryError, match="no response") as ei:
            s.send(b"a.b 1\n")
    assert ei.value.ambiguous


def test_stale_keepalive_connection_is_replaced_not_failed():
    with IngestServer(idle_timeout=0.1) as srv:
        with sender(srv) as s:
            assert s.send(b"a.b 1\n").ok
            time.sleep(0.4)                # the server closes the idle connection
            assert s.send(b"c.d 2\n").ok   # detected before writing: no ambiguity
        assert srv.accepted_lines == [b"a.b 1", b"c.d 2"]


# --------------------------------------------------------------------------- fatal statuses


@pytest.mark.parametrize("setup,exc,text", [
    ({"token": "wrong-token"}, AuthenticationError, "metrics.ingest"),
    ({"token": "readonly"}, MissingScopeError, "lacks the 'metrics.ingest' scope"),
    ({"fault": "404"}, EndpointNotFoundError, "wrong URL"),
    ({"fault": "405"}, EndpointNotFoundError, "wrong URL"),
    ({"fault": "413"}, PayloadTooLargeError, "lower max_bytes"),
    ({"fault": "400"}, DeliveryError, "without a ValidationResponse"),
])
def test_fatal_statuses_are_not_retried(srv, setup, exc, text):
    if "fault" in setup:
        srv.faults = [Fault(setup["fault"], rate=1.0)]
    with sender(srv, token=setup.get("token", TOKEN)) as s:
        with pytest.raises(exc, match=text) as ei:
            s.send(b"a.b 1\n")
    assert isinstance(ei.value, SendError)
    assert len(srv.requests) == 1
    assert ei.value.result.undelivered[0].lines == 1


@pytest.mark.parametrize("status", ["307", "408", "409", "415", "422"])
def test_other_statuses_are_not_retried_and_say_why(srv, status):
    srv.faults = [Fault(status, rate=1.0)]
    with sender(srv) as s:
        with pytest.raises(DeliveryError) as ei:
            s.send(b"a.b 1\n")
    assert len(srv.requests) == 1
    (u,) = ei.value.result.undelivered
    # the status and the server's words, never an empty reason
    assert u.reason.startswith("HTTP %s" % status) and "Injected fault" in u.reason, u.reason
    assert u.reason in str(ei.value)
    assert ("not followed" in u.reason) == status.startswith("3")


def test_real_404_on_a_wrong_path(srv):
    with sender(srv, url=srv.base_url + "/api/v1/metrics", check_url=False) as s:
        with pytest.raises(EndpointNotFoundError):
            s.send(b"a.b 1\n")


def test_real_413_from_the_server_limit():
    with IngestServer(max_body=100) as srv:
        with sender(srv, max_bytes=1000) as s:
            with pytest.raises(PayloadTooLargeError):
                s.send(numbered(20))
        assert len(srv.requests) == 1


# --------------------------------------------------------------------------- token hygiene


def test_retry_log_numbers_requests_as_the_result_does(srv, caplog):
    caplog.set_level(logging.DEBUG, logger="dtproto.sender")
    srv.faults = [Fault("503", requests=frozenset({2}))]
    # one request at a time: the fault's "request 2" is the server's second arrival
    with sender(srv, retries=1, max_lines=1, concurrency=1) as s:
        r = s.send(b"a.b 1\na.b 2\n")
    srv.faults = []
    assert r.lines_ok == 2
    assert [q.index for q in r.requests] == [0, 1]
    retried = [m for m in caplog.messages if "; retry 1 of 1" in m]
    # the second request (result index 1) is "request 2", as -v and the CLI say
    assert len(retried) == 1 and retried[0].startswith("request 2 (lines 2..2): "), retried


def test_token_never_in_repr_logs_or_errors(srv, caplog):
    caplog.set_level(logging.DEBUG)
    s = sender(srv, retries=1)
    assert TOKEN not in repr(s) and "token=<set>" in repr(s)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    errors = []
    srv.faults = [Fault("503", rate=1.0)]
    for tok in (TOKEN, "readonly"):
        with sender(srv, token=tok, retries=1) as t:
            try:
                t.send(b"a.b 1\nbad key\n")
            except SendError as e:
                errors.append(e)
    srv.faults = []
    with sender(srv, token="wrong" + TOKEN) as t:
        try:
            t.send(b"a.b 1\n")
        except SendError as e:
            errors.append(e)
    assert len(errors) == 3
    for e in errors:
        for text in (str(e), repr(e), e.body, repr(e.result), repr(e.args)):
            assert TOKEN not in text
    assert TOKEN not in caplog.text
    s.close()


@pytest.mark.parametrize("bad", [TOKEN[:20] + "\n" + TOKEN[20:], "a b", "tok\x00en", "tökén"])
def test_malformed_token_is_refused_without_echoing_it(bad):
    with pytest.raises(ConfigurationError) as ei:
        Sender("https://abc.live.dynatrace.com/api/v2/metrics/ingest", bad)
    assert bad.strip() not in str(ei.value)


# --------------------------------------------------------------------------- configuration


def test_url_helpers_and_checks():
    assert Sender.saas("abc123", TOKEN).url == "https://abc123.live.dynatrace.com/api/v2/metrics/ingest"
    assert Sender.managed("dt.example.com", "env1", TOKEN).url == \
        "https://dt.example.com/e/env1/api/v2/metrics/ingest"
    assert Sender.activegate("ag.example.com", "env1", TOKEN).url == \
        "https://ag.example.com:9999/e/env1/api/v2/metrics/ingest"
    assert Sender.oneagent().url == "http://localhost:14499/metrics/ingest"
    assert ingest_url("https://abc.live.dynatrace.com/") == \
        "https://abc.live.dynatrace.com/api/v2/metrics/ingest"
    with pytest.raises(ConfigurationError, match="Did you mean https://abc.live.dynatrace.com/api/v2"):
        Sender("https://abc.live.dynatrace.com", TOKEN)
    with pytest.raises(ConfigurationError, match="takes no API token"):
        Sender("http://localhost:14499/metrics/ingest", TOKEN)
    with pytest.raises(ConfigurationError, match="credentials in the URL"):
        Sender("https://u:p@abc.live.dynatrace.com/api/v2/metrics/ingest", TOKEN)
    with pytest.raises(ConfigurationError):
        Sender.saas("abc/../x", TOKEN)


def test_token_over_plain_http_to_a_remote_host(caplog):
    # Raised in the constructor: nothing is ever sent.
    with pytest.raises(ConfigurationError, match="plain HTTP"):
        Sender("http://metrics.example.com/api/v2/metrics/ingest", TOKEN)
    caplog.set_level(logging.WARNING, logger="dtproto.sender")
    Sender("http://metrics.example.com/api/v2/metrics/ingest", TOKEN, allow_insecure=True)
    assert "plain HTTP" in caplog.text
    # Loopback over HTTP is fine (the local endpoint).
    Sender("http://127.0.0.1:1/api/v2/metrics/ingest", TOKEN)
    Sender("http://[::1]:1/api/v2/metrics/ingest", TOKEN)
    Sender("http://LocalHost:1/api/v2/metrics/ingest", TOKEN)
    # A name under .localhost is resolved like any other name (DNS can send
    # it anywhere), so it is not taken for this machine.
    for host in ("evil.localhost", "localhost.example.com", "127.0.0.1.nip.io"):
        with pytest.raises(ConfigurationError, match="plain HTTP to " + host):
            Sender("http://%s:1/api/v2/metrics/ingest" % host, TOKEN)


def test_proxy_from_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    s = Sender("https://abc.live.dynatrace.com/api/v2/metrics/ingest", TOKEN)
    assert s._proxy is not None and s._proxy.hostname == "proxy.example.com"
    monkeypatch.setenv("NO_PROXY", "abc.live.dynatrace.com")
    assert Sender("https://abc.live.dynatrace.com/api/v2/metrics/ingest", TOKEN)._proxy is None
    # Loopback never goes through a proxy; a name under .localhost may not be
    # loopback, so it goes the way the environment says.
    assert Sender("http://127.0.0.1:1/api/v2/metrics/ingest", TOKEN)._proxy is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    monkeypatch.delenv("http_proxy", raising=False)
    assert Sender("http://localhost:1/api/v2/metrics/ingest", TOKEN)._proxy is None
    s = Sender("http://x.localhost:1/api/v2/metrics/ingest", TOKEN, allow_insecure=True)
    assert s._proxy is not None and s._proxy.hostname == "proxy.example.com"


@pytest.mark.parametrize("port", ["0", "99999", "abc", "-1"])
def test_a_url_port_that_cannot_be_connected_to_is_refused(port):
    """Port 0 is no port: it used to send the data and the token to port 80
    (or 443) while the URL said 0.  Out of range or not a number alike."""
    for url in ("http://127.0.0.1:%s/api/v2/metrics/ingest" % port,
                "https://abc.live.dynatrace.com:%s/api/v2/metrics/ingest" % port):
        with pytest.raises(ConfigurationError, match=r"^url has an invalid port: a port is a "
                                                     r"number within 1\.\.65535"):
            sender_class()(url, TOKEN)
    assert Sender("http://127.0.0.1:65535/api/v2/metrics/ingest", TOKEN).url.endswith(
        ":65535/api/v2/metrics/ingest")


def test_an_unpaired_ipv6_bracket_is_a_configuration_error():
    """urllib's bare ValueError("Invalid IPv6 URL") escaped the constructor
    and the URL helpers."""
    pytest.importorskip("aiohttp")
    from dtproto.aio import AsyncSender

    for cls in (Sender, AsyncSender):
        for build in (lambda: cls("https://[::1/api/v2/metrics/ingest", TOKEN),
                      lambda: cls("http://::1]:9/api/v2/metrics/ingest", TOKEN),
                      lambda: cls.managed("[::1", "env1", TOKEN),
                      lambda: cls.activegate("[fe80::1", "env1", TOKEN)):
            with pytest.raises(ConfigurationError, match=r"^url is not a valid URL \(Invalid "
                                                         r"IPv6 URL\); an IPv6 address goes in"):
                build()


def _no_proxy_env(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("proxy, why", [
    ("http://user:PROXYSECRET@127.0.0.1:99999", "its port is not valid"),
    ("http://user:PROXYSECRET@127.0.0.1:abc", "its port is not valid"),
    ("http://user:PROXYSECRET@127.0.0.1:0", "its port is not valid"),
    ("http://user:PROXYSECRET@[::1", "it cannot be parsed as a URL"),
    ("http://user:PROXYSECRET@", "it names no host"),
])
def test_a_proxy_url_that_cannot_be_used_is_refused_at_construction(monkeypatch, proxy, why):
    """Not at the first request (a ValueError from urllib there), and never
    with the URL in the message: it may hold credentials."""
    _no_proxy_env(monkeypatch)
    url = "https://abc.live.dynatrace.com/api/v2/metrics/ingest"
    with pytest.raises(ConfigurationError) as ei:
        sender_class()(url, TOKEN, proxy=proxy)
    text = str(ei.value)
    assert text.startswith("invalid proxy URL in proxy= (not shown") and why in text, text
    assert "PROXYSECRET" not in text
    # Given explicitly, it is refused even where no proxy is used (loopback).
    with pytest.raises(ConfigurationError, match="in proxy="):
        sender_class()("http://127.0.0.1:1/api/v2/metrics/ingest", TOKEN, proxy=proxy)
    # From the environment, the message names the variable it came from.
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, proxy)
        with pytest.raises(ConfigurationError) as ei:
            sender_class()(url, TOKEN)
        assert str(ei.value).startswith("invalid proxy URL in %s (not shown" % name)
        assert why in str(ei.value) and "PROXYSECRET" not in str(ei.value)
    # ... when it would be used: loopback and NO_PROXY never look at it.
    sender_class()("http://127.0.0.1:1/api/v2/metrics/ingest", TOKEN).close()
    monkeypatch.setenv("NO_PROXY", "abc.live.dynatrace.com")
    sender_class()(url, TOKEN).close()


def test_proxy_credentials_go_in_the_header_and_nowhere_else(monkeypatch):
    """The credentials of proxy= reach the proxy as Proxy-Authorization (both
    transports) and are not in vars(sender), its repr, or a pickle: they
    used to sit in vars(sender)['_proxy'], the parsed URL with its password."""
    import base64
    import threading

    _no_proxy_env(monkeypatch)
    heads: list = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)

    def serve() -> None:   # one request, answered as the API would
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(v for n, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                              if n.lower() == b"content-length"))
            while len(body) < length:
                body += conn.recv(65536)
            heads.append(head.decode("latin-1"))
            answer = b'{"linesOk":1,"linesInvalid":0,"error":null,"warnings":null}'
            conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(answer), answer))

    url = "http://metrics.example.com:8080/api/v2/metrics/ingest"
    proxy = "http://us%%40er:p%%3Ass-word@127.0.0.1:%d" % listener.getsockname()[1]
    try:
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with open_sender(url, TOKEN, proxy=proxy, allow_insecure=True, retries=0) as s:
            assert s.send(b"a.b 1\n").lines_ok == 1
        thread.join(10)
    finally:
        listener.close()
    [head] = heads
    assert head.startswith("POST http://metrics.example.com:8080/api/v2/metrics/ingest ")
    want = "Basic " + base64.b64encode(b"us@er:p:ss-word").decode()
    assert "\r\nproxy-authorization: %s" % want.lower() in head.lower()
    # an https:// endpoint: the credentials go on the CONNECT of the tunnel
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)

    def refuse_tunnel() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            heads.append(data.decode("latin-1"))
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    tls_proxy = "http://us%%40er:p%%3Ass-word@127.0.0.1:%d" % listener.getsockname()[1]
    try:
        thread = threading.Thread(target=refuse_tunnel, daemon=True)
        thread.start()
        with open_sender("https://metrics.example.com/api/v2/metrics/ingest", TOKEN,
                         proxy=tls_proxy, retries=0) as s:
            with pytest.raises(dtproto.DeliveryError):
                s.send(b"a.b 1\n")
        thread.join(10)
    finally:
        listener.close()
    assert heads[1].startswith("CONNECT metrics.example.com:443 ")
    assert "\r\nproxy-authorization: %s" % want.lower() in heads[1].lower()
    s = Sender(url, TOKEN, proxy=proxy, allow_insecure=True)
    shown = repr(vars(s)) + repr(s)
    assert "ss-word" not in shown and "us%40er" not in shown and want not in shown
    assert repr(s._proxy).startswith("<proxy http://127.0.0.1:") and "credentials" in shown
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s._proxy)


def test_a_proxy_variable_in_mixed_case_is_named_as_spelled(monkeypatch):
    """urllib reads a proxy variable whatever its case: a message names it as
    it is spelled, not "the system's proxy settings"."""
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("Https_Proxy", "http://user:PROXYSECRET@")
    with pytest.raises(ConfigurationError) as ei:
        sender_class()("https://abc.live.dynatrace.com/api/v2/metrics/ingest", TOKEN)
    assert str(ei.value).startswith("invalid proxy URL in Https_Proxy (not shown"), ei.value
    assert "PROXYSECRET" not in str(ei.value)


def test_a_usable_proxy_port_is_kept(monkeypatch):
    _no_proxy_env(monkeypatch)
    url = "https://abc.live.dynatrace.com/api/v2/metrics/ingest"
    assert Sender(url, TOKEN, proxy="http://p.example.com:3128")._proxy.port == 3128
    assert Sender(url, TOKEN, proxy="p.example.com")._proxy.port is None   # 80, http://


# --------------------------------------------------------------------------- transport


@pytest.mark.parametrize("concurrency", [1, 4])
def test_headers_gzip_and_keepalive(srv, concurrency):
    with sender(srv, gzip=True, max_bytes=2000, concurrency=concurrency) as s:
        r = s.send(numbered(600))
    assert r.ok and r.lines_ok == 600 and len(r.requests) > 8
    for q in srv.requests:
        assert q.content_type == "text/plain; charset=utf-8"
        assert q.content_encoding == "gzip"
        assert q.user_agent.startswith("dtproto/")
        assert q.wire_bytes < q.body_bytes <= 2000
    # Keep-alive: one connection per request in flight, reused.
    assert 1 <= len({q.client for q in srv.requests}) <= concurrency
    stored = srv.accepted_lines
    if concurrency == 1:
        assert stored == numbered(600).splitlines()
    else:
        assert sorted(stored) == sorted(numbered(600).splitlines())


def test_warning_lines_key_is_understood():
    with IngestServer(warnings_key="warningLines") as srv:
        with sender(srv, token=None) as s:
            r = s.send(b"a.b 1\nx.y count,delta=1\n")
    assert [(w.line, w.message) for w in r.warnings] == [
        (2, "metric key 'x.y' changed to 'x.y.count'")]


# --------------------------------------------------------------------------- batching


def test_batching_flushes_on_lines_bytes_and_close(srv):
    with sender(srv, flush_lines=10, flush_interval=None) as s:
        for i in range(25):
            s.add(dtproto.Metric.gauge("b.m", float(i), {"i": str(i)}))
        assert s.pending_lines == 5
        assert len(srv.requests) == 2
    # Leaving the block flushed the rest: nothing lost.
    assert len(srv.accepted_lines) == 25 and len(srv.requests) == 3
    assert s.totals.lines_ok == 25

    srv.reset()
    with sender(srv, flush_bytes=100, flush_interval=None) as s:
        for i in range(20):
            s.add("b.m,i=%d gauge,1" % i)            # ~17 bytes per line
        assert all(q.wire_bytes <= 100 for q in srv.requests)
    assert len(srv.accepted_lines) == 20


def test_batching_interval_is_checked_on_add(srv):
    with sender(srv, flush_interval=0.3) as s:
        s.add("a.b 1")
        assert len(srv.requests) == 0 and s.pending_lines == 1
        s._batch.last_flush -= 0.5                    # as if the interval had passed
        out = s.add("a.b 2")                          # the trigger fires inside add()
        assert out is not None and out.lines_ok == 2
        assert s.pending_lines == 0


def test_batching_interval_flushes_a_quiet_producer_by_itself(srv):
    with sender(srv, flush_interval=0.1) as s:
        s.add("a.b 1")
        s.add("a.b 2")
        assert s.pending_lines == 2 and len(srv.requests) == 0
        deadline = time.monotonic() + 5
        while s.pending_lines and time.monotonic() < deadline:
            time.sleep(0.01)                          # no call into the sender
        assert s.pending_lines == 0
        s.idle()                                      # the background flush has finished
        assert srv.accepted_lines == [b"a.b 1", b"a.b 2"] and len(srv.requests) == 1
        assert s.totals.lines_ok == 2


def test_background_flush_failure_is_raised_by_the_next_call(srv):
    srv.faults = [Fault("503", rate=1.0)]
    s = sender(srv, retries=0, flush_interval=0.05)
    s.add("a.b 1")
    deadline = time.monotonic() + 5
    while s.pending_lines and time.monotonic() < deadline:
        time.sleep(0.01)
    s.idle()                                          # the background flush has finished
    srv.faults = []
    with pytest.raises(DeliveryError) as ei:
        s.add("c.d 2")
    assert ei.value.unsent == b"a.b 1\nc.d 2\n"   # handed back, not lost, not queued
    assert s.pending_lines == 0
    s.close()
    assert srv.accepted_lines == []


def test_batching_line_numbers_run_across_flushes(srv):
    with sender(srv, flush_lines=3, flush_interval=None) as s:
        for line in ["a.b 1", "a.b 2", "a.b 3", "a.b 4", "bad key", "a.b 6", "a.b 7"]:
            s.add(line)
        enc = dtproto.Encoder()
        enc.gauge("e.f", 1.0)
        enc.gauge("e.f", 2.0)
        s.add(enc)
        assert enc.lines == 0                         # taken and cleared
    assert [i.line for i in s.totals.invalid_lines] == [5]
    assert s.totals.lines_ok == 8


def test_add_rejects_unencodable_record_immediately(srv):
    with sender(srv) as s:
        with pytest.raises(dtproto.EncodeError):
            s.add(dtproto.Metric.gauge("1bad", 1.0))
        assert s.pending_lines == 0


def test_exit_with_exception_still_flushes(srv):
    with pytest.raises(RuntimeError):
        with sender(srv, flush_interval=None) as s:
            s.add("a.b 1")
            raise RuntimeError("boom")
    assert srv.accepted_lines == [b"a.b 1"]


def test_failed_flush_raises_with_unsent_bytes(srv):
    srv.faults = [Fault("503", rate=1.0)]
    s = sender(srv, retries=1, flush_interval=None, max_bytes=12, flush_bytes=1000)
    s.add("a.b 1")
    s.add("c.d 2")
    with pytest.raises(DeliveryError) as ei:
        s.flush()
    assert ei.value.unsent == b"a.b 1\nc.d 2\n"
    assert ei.value.result.undelivered[0].first_line == 1
    srv.faults = []
    s.close()   # nothing left pending: the failed lines are the caller's (exc.unsent)
    assert srv.accepted_lines == []


@pytest.mark.parametrize("bad", ["https://m.example.com", "m.example.com/path", "u:pw@m.example.com",
                                 "m.example.com?x=1", "", "m example.com", "m.example.com\n"])
def test_url_helpers_refuse_what_is_not_a_host_name(bad: str) -> None:
    # a scheme there once built https://https//m.example.com/e/env1/... silently
    with pytest.raises(ConfigurationError, match="is not a host name"):
        Sender.managed(bad, "env1", TOKEN)
    with pytest.raises(ConfigurationError, match="is not a host name"):
        Sender.activegate(bad, "env1", TOKEN)
    with pytest.raises(ConfigurationError, match="is not a host name"):
        Sender.oneagent(bad)
    if "://" in bad:
        with pytest.raises(ConfigurationError, match="pass the host name alone"):
            Sender.managed(bad, "env1", TOKEN)
    assert Sender.managed("m.example.com:8443", "env1", TOKEN).url == \
        "https://m.example.com:8443/e/env1/api/v2/metrics/ingest"
