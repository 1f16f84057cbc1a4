"""The local ingest endpoint against hostile clients (issue 9, items 8, 15, 16).

Multi-member gzip bodies are decoded whole or refused, never half-stored;
Content-Length is ``1*DIGIT`` and never ambiguous (RFC 9110 §8.6); fault
options that would break every request are refused when parsed.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import zlib
from typing import Any, Iterator, List, Tuple

import pytest

from dtproto.server import Fault, IngestServer, parse_fault


@pytest.fixture
def srv() -> Iterator[IngestServer]:
    with IngestServer() as s:
        yield s


def post_gzip(s: IngestServer, body: bytes) -> Tuple[int, Any]:
    conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
    try:
        conn.request("POST", "/api/v2/metrics/ingest", body=body,
                     headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(data) if data else None


def lines(prefix: bytes, n: int) -> bytes:
    return b"".join(b"%s,i=%d gauge,%d\n" % (prefix, i, i) for i in range(n))


# --------------------------------------------------------------------------- item 8


def test_multi_member_gzip_stores_every_member(srv: IngestServer) -> None:
    a, b, c = lines(b"a.m", 30), lines(b"b.m", 40), lines(b"c.m", 5)
    status, doc = post_gzip(srv, gzip.compress(a) + gzip.compress(b) + gzip.compress(c))
    assert status == 202, doc
    assert doc["linesOk"] == 75
    assert srv.accepted_lines == (a + b + c).splitlines()
    assert srv.requests[-1].body_bytes == len(a + b + c)


def test_multi_member_gzip_with_empty_members_and_a_line_across_members(srv: IngestServer) -> None:
    body = gzip.compress(b"") + gzip.compress(b"x.y 1\nsplit.") + gzip.compress(b"key 2\n")
    status, doc = post_gzip(srv, body)
    assert status == 202, doc
    assert srv.accepted_lines == [b"x.y 1", b"split.key 2"]


@pytest.mark.parametrize("tail", [b"garbage", b"\x00" * 8, b"\x1f", b"\x1f\x8b\x08\x00junk",
                                  gzip.compress(b"late.line 1\n")[:-4]],
                         ids=["text", "zeros", "half-magic", "bad-member", "truncated-member"])
def test_trailing_data_after_a_member_is_refused(srv: IngestServer, tail: bytes) -> None:
    status, doc = post_gzip(srv, gzip.compress(lines(b"a.m", 10)) + tail)
    assert status == 400, doc
    assert "gzip" in doc["error"]["message"]
    assert srv.accepted_lines == []      # never 202 with lines dropped, nor half stored


def test_gzip_members_of_every_size_decode_whole() -> None:
    """Members from empty to ~200 KB on the wire (the decoder feeds each in
    windows that double from 256 bytes, so that a body of many members is
    linear), in any order: the exact bytes, and damage anywhere refused."""
    import random
    from dtproto.server import _BadGzip, _gunzip

    r = random.Random(5)
    texts = [b"", b"a.b 1\n"] + [r.randbytes(n).hex().encode() for n in (100, 300, 5_000, 100_000)]
    members = [gzip.compress(t) for t in texts] * 3
    r.shuffle(members)
    body = b"".join(members)
    want = b"".join(gzip.decompress(m) for m in members)
    assert _gunzip(body, 10 * len(want)) == want
    assert _gunzip(gzip.compress(b"") * 20_000, 10) == b""
    for cut in (1, 17, len(body) // 3, len(body) - 1):
        with pytest.raises((EOFError, zlib.error, _BadGzip)):
            _gunzip(body[:cut], 10 * len(want))


def test_multi_member_gzip_keeps_the_size_bound() -> None:
    with IngestServer(max_body=100_000) as s:
        member = gzip.compress(b"a.b 1\n" * 10_000)        # 60,000 bytes each
        status, doc = post_gzip(s, member)
        assert status == 202, doc
        status, doc = post_gzip(s, member + member)         # 120,000 > 100,000
        assert status == 413, doc
        bomb = gzip.compress(b"\n" * 50_000_000)             # ~50 KB on the wire
        status, doc = post_gzip(s, member + bomb)
        assert status == 413, doc
        assert len(s.accepted_lines) == 10_000


# --------------------------------------------------------------------------- item 15


def raw_answers(s: IngestServer, req: bytes) -> bytes:
    """Send raw bytes on one connection; return all that comes back."""
    with socket.create_connection((s.host, s.port), timeout=10) as sock:
        sock.sendall(req)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def raw_exchange(s: IngestServer, req: bytes) -> List[bytes]:
    """Send raw bytes on one connection; return the status lines of every answer."""
    return [line for line in raw_answers(s, req).split(b"\r\n")
            if line.startswith(b"HTTP/1.1 ")]


def request(headers: bytes, body: bytes) -> bytes:
    return (b"POST /api/v2/metrics/ingest HTTP/1.1\r\nHost: x\r\n" + headers
            + b"Content-Type: text/plain\r\n\r\n" + body)


@pytest.mark.parametrize("value", [b"1_2", b"+5", b"-0", b"0x5", b"5.0", b"", b"\xd9\xa5",
                                   b"1e1", b"\r\n 12"],
                         ids=["underscore", "plus", "minus", "hex", "decimal", "empty",
                              "arabic-digit", "exponent", "folded"])
def test_content_length_must_be_digits(srv: IngestServer, value: bytes) -> None:
    # The body is what the bad length would cover, followed by what a desynced
    # parser would read as a second request.
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    status = raw_exchange(srv, request(b"Content-Length: " + value + b"\r\n",
                                       b"a.b 1\nc.d 2" + smuggled))
    assert status == [b"HTTP/1.1 400 Bad Request"], status
    assert srv.accepted_lines == []
    assert [r.path for r in srv.requests] == ["/api/v2/metrics/ingest"]


def test_conflicting_content_lengths_are_refused(srv: IngestServer) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    for headers in (b"Content-Length: 6\r\nContent-Length: 41\r\n",
                    b"Content-Length: 6, 41\r\n"):
        srv.reset()
        status = raw_exchange(srv, request(headers, b"a.b 1\n" + smuggled))
        assert status == [b"HTTP/1.1 400 Bad Request"], (headers, status)
        assert srv.accepted_lines == []
        assert [r.path for r in srv.requests] == ["/api/v2/metrics/ingest"]


def test_identical_duplicate_content_lengths_are_accepted(srv: IngestServer) -> None:
    for headers in (b"Content-Length: 6\r\nContent-Length: 6\r\n", b"Content-Length: 6, 6\r\n",
                    b"Content-Length:   6  \r\n", b"Content-Length: 006\r\n",
                    b"Content-Length: " + b"0" * 30 + b"6\r\n"):
        srv.reset()
        status = raw_exchange(srv, request(headers, b"a.b 1\n"))
        assert status == [b"HTTP/1.1 202 Accepted"], (headers, status)
        assert srv.accepted_lines == [b"a.b 1"]


def test_bad_content_length_on_other_paths_closes_the_connection(srv: IngestServer) -> None:
    status = raw_exchange(srv, b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"
                               b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == [b"HTTP/1.1 404 Not Found"], status
    assert [r.path for r in srv.requests] == ["/x"]


def test_huge_content_length_is_413_not_a_crash(srv: IngestServer) -> None:
    status = raw_exchange(srv, request(b"Content-Length: " + b"9" * 5000 + b"\r\n", b"a.b 1\n"))
    assert len(status) == 1 and status[0].startswith(b"HTTP/1.1 413 "), status


def test_huge_content_length_is_named_as_declared(srv: IngestServer) -> None:
    """Not as the clamp of 10^18 that stands for it inside the server."""
    data = raw_answers(srv, request(b"Content-Length: 99999999999999999999999\r\n", b"a.b 1\n"))
    assert b"Payload too large: 99999999999999999999999 bytes > 1048576" in data, data
    data = raw_answers(srv, request(b"Content-Length: " + b"9" * 5000 + b"\r\n", b"a.b 1\n"))
    assert b"Payload too large: " + b"9" * 256 + b"... (5000 characters) bytes" in data


@pytest.mark.parametrize("fields", [
    b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    b"Transfer-Encoding: identity, chunked\r\n",
    b"Transfer-Encoding: chunked\r\n"])
def test_every_transfer_encoding_field_counts(srv: IngestServer, fields: bytes) -> None:
    """A second Transfer-Encoding field saying chunked was not seen: the body
    read as empty ("empty request") and its chunks as the next request, so
    the line was neither stored nor reported.  Answered 411, as chunked is."""
    status = raw_exchange(srv, request(fields, b"6\r\na.b 1\n\r\n0\r\n\r\n"))
    assert status == [b"HTTP/1.1 411 Length Required"], status
    assert srv.accepted_lines == [] and [r.status for r in srv.requests] == [411]


def test_logged_paths_and_headers_are_clipped() -> None:
    """The last 10,000 records kept whole 64 KB paths and headers: gigabytes."""
    with IngestServer() as s:
        big = "x" * 60_000
        raw_exchange(s, b"POST /api/v2/metrics/ingest?" + big.encode()
                     + b" HTTP/1.1\r\nHost: x\r\nUser-Agent: " + big.encode()
                     + b"\r\nContent-Encoding: " + big.encode() + b"\r\nContent-Length: 6\r\n"
                     + b"Content-Type: " + big.encode() + b"\r\n\r\na.b 1\n")
        (rec,) = s.requests
        for field in (rec.path, rec.user_agent, rec.content_type, rec.content_encoding):
            assert len(field) < 300 and field.endswith(" characters)"), field[:300]
        assert rec.user_agent == "x" * 256 + "... (60000 characters)"


# --------------------------------------------------------------------------- item 16


@pytest.mark.parametrize("spec", ["slow:delay=-1", "slow:delay=nan", "slow:delay=inf",
                                  "slow:delay=1e300", "429:retry_after=nan",
                                  "429:retry_after=inf", "429:retry_after=-2",
                                  "503:requests=0", "429:rate=nan"])
def test_unusable_fault_options_are_refused_when_parsed(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(spec)


def test_unusable_fault_values_are_refused_by_fault() -> None:
    with pytest.raises(ValueError):
        Fault("slow", delay=-1)
    with pytest.raises(ValueError):
        Fault("429", retry_after=float("nan"))
    assert parse_fault("429:retry_after=2.5,rate=0.1,delay=0") == \
        Fault("429", rate=0.1, retry_after=2.5)


def test_requests_since_counts_what_the_bounded_log_dropped() -> None:
    with IngestServer(log_size=2) as s:
        for _ in range(5):
            conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
            conn.request("POST", "/api/v2/metrics/ingest", body=b"a.b 1\n")
            conn.getresponse().read()
            conn.close()
        seen, recs, missed = s.requests_since(0)
        assert (seen, len(recs), missed) == (5, 2, 3)
        assert [r.number for r in recs] == [4, 5]
        assert s.requests_since(seen) == (5, [], 0)
        seen, recs, missed = s.requests_since(4)
        assert ([r.number for r in recs], missed) == ([5], 0)


# --------------------------------------------------------------------------- slow and many clients


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _trickled(s: IngestServer, head: bytes, byte: bytes) -> bytes:
    """Send ``head``, then ``byte`` every 0.1 s (never idle for long) for up
    to 4 s or until the server closes; return all it answered."""
    import time

    with socket.create_connection((s.host, s.port), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(40):
            time.sleep(0.1)
            try:
                sock.sendall(byte)
            except (BrokenPipeError, ConnectionResetError):
                break
        return _read_all(sock)


def test_a_body_trickled_past_request_timeout_is_answered_408() -> None:
    """idle_timeout bounds each wait; request_timeout bounds the whole body
    (a red-team finding: a byte every 1.5 s held a thread for as long as the
    client liked).  Nothing of that request is stored."""
    with IngestServer(idle_timeout=5, request_timeout=0.6) as s:
        answer = _trickled(s, request(b"Content-Length: 40\r\n", b"a.b 1\n"), b"\n")
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"Connection: close" in answer
        assert s.accepted_lines == []
        # a request sent at once is still served
        status, doc = post_gzip(s, gzip.compress(b"a.b 1\n"))
        assert status == 202, doc


@pytest.mark.parametrize("path, length, status", [
    (b"/api/v2/metrics/ingest", 2_000_000, b"413"),   # refused, drained
    (b"/elsewhere", 40, b"404"),                       # not the endpoint, drained
])
def test_a_drained_body_trickled_past_request_timeout_ends_the_connection(
        path: bytes, length: int, status: bytes) -> None:
    """A body the endpoint refuses is read and dropped under the same
    deadline (a review finding: it was read with no overall bound)."""
    with IngestServer(idle_timeout=5, request_timeout=0.6, max_body=1_000_000) as s:
        answer = _trickled(s, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: %d\r\n\r\n" % length, b"x")
        assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
        assert b"Connection: close" in answer


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "soon"])
def test_request_timeout_must_be_a_positive_number_or_none(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        IngestServer(request_timeout=value)
    with IngestServer(request_timeout=None) as s:
        status, doc = post_gzip(s, gzip.compress(b"a.b 1\n"))
        assert status == 202, doc
