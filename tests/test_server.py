"""The local ingest endpoint, over real loopback HTTP (``http.client``, no mocks)."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import socket
import threading
import time
from typing import Any, Dict, Optional, Tuple

import pytest

from dtproto._constants import SERVER_MAX_BODY_BYTES
from dtproto.server import Fault, IngestServer, parse_fault

TOKEN = "dt0c01.SERVERTEST.SECRET"


def post(url: str, body: bytes, token: Optional[str] = TOKEN, headers: Optional[Dict[str, str]] = None,
         method: str = "POST") -> Tuple[int, Dict[str, str], Any]:
    """One request on a fresh connection; returns (status, headers, parsed JSON or raw)."""
    parts = http.client.urlsplit(url)  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        h = {"Content-Type": "text/plain; charset=utf-8"}
        if token is not None:
            h["Authorization"] = "Api-Token " + token
        h.update(headers or {})
        conn.request(method, parts.path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = data
    return resp.status, hdrs, doc


@pytest.fixture
def srv():
    with IngestServer(tokens={TOKEN: ["metrics.ingest"], "readonly": ["metrics.read"]}) as s:
        yield s


def test_all_valid_answers_202_and_stores(srv):
    status, _, doc = post(srv.url, b"a.b 1\nc.d,k=v gauge,2\r\n\n")
    assert status == 202
    assert doc == {"linesOk": 2, "linesInvalid": 0, "error": None, "warnings": None}
    assert srv.accepted_lines == [b"a.b 1", b"c.d,k=v gauge,2"]
    rec = srv.requests[-1]
    assert (rec.number, rec.status, rec.auth, rec.lines_ok) == (1, 202, "valid", 2)


def test_partial_answers_400_with_line_numbers_and_stores_valid_lines(srv):
    body = b"a.b 1\n\nbad key\nc.d 2\n"
    status, _, doc = post(srv.url, body)
    assert status == 400
    assert doc["linesOk"] == 2 and doc["linesInvalid"] == 1
    assert doc["error"]["message"] == "1 invalid lines"
    assert [e["line"] for e in doc["error"]["invalidLines"]] == [3]   # blank line 2 counts
    assert srv.accepted_lines == [b"a.b 1", b"c.d 2"]


def test_error_list_is_truncated_like_the_real_api(srv):
    body = b"".join(b"bad key %d\n" % i for i in range(29))
    status, _, doc = post(srv.url, body)
    assert status == 400
    assert doc["linesInvalid"] == 29
    assert doc["error"]["message"] == "First 10 errors reported"
    assert len(doc["error"]["invalidLines"]) == 10


def test_max_reported_errors_none_lists_everything():
    with IngestServer(max_reported_errors=None) as s:
        _, _, doc = post(s.url, b"".join(b"bad key %d\n" % i for i in range(29)), token=None)
    assert doc["error"]["message"] == "29 invalid lines"
    assert [e["line"] for e in doc["error"]["invalidLines"]] == list(range(1, 30))


def test_empty_body_is_empty_request(srv):
    status, _, doc = post(srv.url, b"")
    assert status == 400
    assert doc["error"] == {"code": 400, "message": "empty request", "invalidLines": []}


def test_warnings_documented_and_observed_keys():
    for key in ("changedMetricKeys", "warningLines"):
        with IngestServer(warnings_key=key) as s:
            status, _, doc = post(s.url, b"x.y count,delta=1\n", token=None)
        assert status == 202
        assert doc["warnings"][key] == [{"line": 1, "warning": "metric key 'x.y' changed to 'x.y.count'"}]


@pytest.mark.parametrize("header,status,auth", [
    (None, 401, "none"),
    ("Api-Token nope", 401, "unknown"),
    ("Bearer " + TOKEN, 401, "bad-scheme"),
    ("Api-Token readonly", 403, "scope"),
    ("api-token " + TOKEN, 202, "valid"),     # scheme word is case-insensitive
    ("Api-token " + TOKEN, 202, "valid"),
])
def test_token_checks(srv, header, status, auth):
    h = {"Authorization": header} if header else {}
    got, _, doc = post(srv.url, b"a.b 1\n", token=None, headers=h)
    assert got == status
    if status in (401, 403):
        assert doc["error"]["code"] == status
        assert srv.accepted_lines == []
    assert srv.requests[-1].auth == auth


def test_managed_path_and_oneagent_form(srv):
    status, _, doc = post(srv.managed_url("abc12345"), b"a.b 1\n")
    assert status == 202 and doc["linesOk"] == 1
    # OneAgent form: no token needed, linesValid instead of linesOk.
    status, _, doc = post(srv.oneagent_url, b"a.b 1\nbad key\n", token=None)
    assert status == 400
    assert doc["linesValid"] == 1 and doc["linesInvalid"] == 1
    assert "linesOk" not in doc


def test_oneagent_line_limit(srv):
    body = b"a.b 1\n" * 1001
    status, _, _ = post(srv.oneagent_url, body, token=None)
    assert status == 413
    status, _, doc = post(srv.oneagent_url, b"a.b 1\n" * 1000, token=None)
    assert status == 202 and doc["linesValid"] == 1000


def test_unknown_path_404_and_wrong_method_405(srv):
    assert post(srv.base_url + "/api/v2/metrics", b"a.b 1\n")[0] == 404
    status, hdrs, _ = post(srv.url, b"", method="GET")
    assert status == 405 and hdrs["allow"] == "POST"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_every_other_method_gets_405_with_the_json_envelope(srv, method):
    for url in (srv.url, srv.oneagent_url, srv.managed_url("abc12345")):
        status, hdrs, doc = post(url, b"", method=method)
        assert (status, hdrs["allow"]) == (405, "POST"), (method, url)
        assert doc == {"error": {"code": 405, "message": "Method Not Allowed"}}
    status, hdrs, doc = post(srv.base_url + "/elsewhere", b"", method=method)
    assert status == 404 and "allow" not in hdrs
    assert doc["error"]["code"] == 404


def _raw(srv, request: bytes) -> Tuple[int, Dict[str, str], Any]:
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while True:  # the server closes the connection after these answers
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = dict((k.lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:]))
    return int(lines[0].split()[1]), hdrs, json.loads(body)


def test_what_http_server_refuses_itself_answers_json_too(srv):
    # A method nobody serves (http.server: 501), a request line it cannot read (400):
    # the JSON error envelope of every other answer, never an HTML page.
    status, hdrs, doc = _raw(srv, b"BREW /api/v2/metrics/ingest HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 501 and hdrs["content-type"].startswith("application/json")
    assert doc["error"]["code"] == 501 and "BREW" in doc["error"]["message"]
    assert hdrs["connection"] == "close"
    status, hdrs, doc = _raw(srv, b'POST /x HTTP/9"\x7f\r\n\r\n')
    assert status == 400 and doc["error"]["code"] == 400


def test_body_limit_413_and_connection_survives(srv):
    big = b"a.b 1\n" * (SERVER_MAX_BODY_BYTES // 6 + 1)
    assert len(big) > SERVER_MAX_BODY_BYTES
    status, _, doc = post(srv.url, big)
    assert status == 413 and doc["error"]["code"] == 413
    assert srv.accepted_lines == []
    # Exactly at the limit is fine.
    ok = b"a.b 1\n" * (SERVER_MAX_BODY_BYTES // 6)
    assert post(srv.url, ok)[0] == 202


def test_gzip_bodies(srv):
    body = b"a.b 1\nc.d 2\n"
    status, _, doc = post(srv.url, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert status == 202 and doc["linesOk"] == 2
    assert srv.requests[-1].content_encoding == "gzip"
    assert post(srv.url, b"not gzip", headers={"Content-Encoding": "gzip"})[0] == 400
    # A small gzip body that expands past the limit is refused, not inflated.
    bomb = gzip.compress(b"\n" * (SERVER_MAX_BODY_BYTES + 10))
    assert post(srv.url, bomb, headers={"Content-Encoding": "gzip"})[0] == 413


def test_validates_against_the_clock():
    now = 1_700_000_000_000
    with IngestServer(now_ms=now) as s:
        body = b"a.b 1 %d\na.b 1 %d\n" % (now, now - 2 * 3_600_000)
        status, _, doc = post(s.url, body, token=None)
    assert status == 400 and doc["linesOk"] == 1
    assert doc["error"]["invalidLines"][0]["line"] == 2
    # Without now_ms the real clock applies: a seconds timestamp is out of window.
    with IngestServer() as s:
        status, _, doc = post(s.url, b"a.b 1 %d\n" % int(time.time()), token=None)
    assert status == 400 and doc["error"]["invalidLines"][0]["error"].startswith("timestamp out of range")


def test_store_file_appends_accepted_lines(tmp_path):
    path = tmp_path / "store.txt"
    with IngestServer(store=path, keep=False) as s:
        post(s.url, b"a.b 1\nbad key\n", token=None)
        post(s.url, b"c.d 2\n", token=None)
        assert s.accepted_lines == []
    assert path.read_bytes() == b"a.b 1\nc.d 2\n"


def test_store_file_object():
    buf = io.BytesIO()
    with IngestServer(store=buf) as s:
        post(s.url, b"a.b 1\n", token=None)
    assert buf.getvalue() == b"a.b 1\n"


def test_status_faults_by_request_number_with_and_without_retry_after(srv):
    srv.faults = [Fault("429", requests={1}), Fault("429", requests={2}, retry_after=3),
                  Fault("503", requests={3})]
    s1, h1, d1 = post(srv.url, b"a.b 1\n")
    s2, h2, _ = post(srv.url, b"a.b 1\n")
    s3, _, d3 = post(srv.url, b"a.b 1\n")
    s4, _, _ = post(srv.url, b"a.b 1\n")
    assert (s1, s2, s3, s4) == (429, 429, 503, 202)
    assert "retry-after" not in h1 and h2["retry-after"] == "3"
    assert d1["error"]["code"] == 429 and d3["error"]["code"] == 503
    assert srv.accepted_lines == [b"a.b 1"]     # faults store nothing
    assert [r.fault for r in srv.requests] == ["429", "429+retry-after", "503", None]


def test_fault_rate_is_seeded_and_roughly_right():
    def run() -> list:
        with IngestServer(faults=[Fault("503", rate=0.3)], seed=7) as s:
            return [post(s.url, b"a.b 1\n", token=None)[0] for _ in range(60)]
    a, b = run(), run()
    assert a == b
    assert 5 <= a.count(503) <= 35


def _raw_request(url: str, body: bytes) -> bytes:
    parts = http.client.urlsplit(url)  # type: ignore[attr-defined]
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (parts.path.encode(), len(body)) + body)
        return sock.recv(65536)


def test_drop_before_stores_nothing_drop_after_stores():
    with IngestServer(faults=[Fault("drop-before", requests={1}),
                              Fault("drop-after", requests={2})]) as s:
        assert _raw_request(s.url, b"a.b 1\n") == b""     # closed without an answer
        assert s.accepted_lines == []
        assert _raw_request(s.url, b"c.d 2\n") == b""
        assert s.accepted_lines == [b"c.d 2"]
        assert [r.status for r in s.requests] == [None, None]
        assert s.stats["dropped"] == 2


def test_slow_fault_delays_the_answer():
    with IngestServer(faults=[Fault("slow", requests={1}, delay=0.3)]) as s:
        t = time.perf_counter()
        assert post(s.url, b"a.b 1\n", token=None)[0] == 202
        assert time.perf_counter() - t >= 0.3


def test_parse_fault():
    assert parse_fault("429:rate=0.05,retry_after=2") == Fault("429", rate=0.05, retry_after=2.0)
    assert parse_fault("drop-before:requests=3+7") == Fault("drop-before", requests=frozenset({3, 7}))
    assert parse_fault("slow:rate=0.1,delay=2").delay == 2.0
    with pytest.raises(ValueError):
        parse_fault("explode")
    with pytest.raises(ValueError):
        parse_fault("429:bogus=1")
    # a value that is not a number says which option and what it takes
    for spec, text in (("503:requests=x", "fault option requests='x': request numbers"),
                       ("429:rate=often", "fault option rate='often': a number of 0..1"),
                       ("slow:delay=", "fault option delay='': a number of seconds")):
        with pytest.raises(ValueError, match=text) as info:
            parse_fault(spec)
        assert "invalid literal" not in str(info.value) and "could not convert" not in str(info.value)


def test_keep_alive_many_requests_one_connection(srv):
    parts = http.client.urlsplit(srv.url)  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        for i in range(5):
            conn.request("POST", parts.path, body=b"a.b %d\n" % i,
                         headers={"Authorization": "Api-Token " + TOKEN})
            r = conn.getresponse()
            r.read()
            assert r.status == 202
    finally:
        conn.close()
    assert len({r.client for r in srv.requests}) == 1


def test_concurrent_clients_hold_load():
    with IngestServer() as s:
        errors = []

        def worker(k: int) -> None:
            try:
                for i in range(20):
                    st, _, doc = post(s.url, b"w.k%d,i=%d gauge,1\n" % (k, i) * 5, token=None)
                    assert st == 202 and doc["linesOk"] == 5
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(s.accepted_lines) == 8 * 20 * 5
        assert s.stats["requests"] == 160


def test_shutdown_is_idempotent_and_repr_has_no_token():
    s = IngestServer(tokens="very-secret-token").start()
    assert "very-secret-token" not in repr(s)
    s.shutdown()
    s.shutdown()


@pytest.mark.parametrize("cap", [None, 0, 3, 10])
@pytest.mark.parametrize("key", ["changedMetricKeys", "warningLines"])
@pytest.mark.parametrize("oneagent", [False, True])
def test_answer_is_the_reports_to_response(cap, key, oneagent):
    """The server answers ValidationReport.to_response() of the body, with its
    own cap, warnings key and form: no second derivation of the response."""
    import dtproto

    body = b"".join(b"bad key %d\nx.y count,delta=1\na.b 1\n" % i for i in range(6))
    with IngestServer(max_reported_errors=cap, warnings_key=key, now_ms=0) as s:
        status, _, doc = post(s.oneagent_url if oneagent else s.url, body, token=None)
    expected = dtproto.validate(body, now_ms=0, max_errors=None, max_warnings=None).to_response(
        max_reported_errors=cap, warnings_key=key, oneagent=oneagent)
    assert status == 400 and doc == expected
    if cap is not None:
        assert len(doc["error"]["invalidLines"]) == min(cap, 6)


def test_the_ingest_vocabulary_is_defined_once():
    from dtproto import _constants as K, server

    assert server.INGEST_SCOPE is K.INGEST_SCOPE
    with IngestServer() as s:
        assert s.url.endswith(K.INGEST_PATH) and s.oneagent_url.endswith(K.ONEAGENT_PATH)
        assert s.managed_url("abc").endswith(K.ENVIRONMENT_PREFIX + "abc" + K.INGEST_PATH)
    assert not hasattr(IngestServer, "_response")


def test_a_token_in_the_query_is_not_kept_in_the_request_log(caplog):
    """Clients may put a token in the query (``?api-token=...``): the records
    (and the ``dtproto serve`` log made of them) keep the names, not the values."""
    import logging

    caplog.set_level(logging.DEBUG, logger="dtproto")
    with IngestServer() as srv:
        for path in ("/api/v2/metrics/ingest?api-token=QSECRET", "/other?Api-Token=QSECRET&x=1"):
            parts = http.client.urlsplit(srv.url)  # type: ignore[attr-defined]
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            try:
                conn.request("POST", path, body=b"a.b 1\n")
                conn.getresponse().read()
            finally:
                conn.close()
        paths = [r.path for r in srv.requests]
        # A request line the server refuses is logged (DEBUG) with its query masked too
        parts = http.client.urlsplit(srv.url)  # type: ignore[attr-defined]
        import socket as _socket

        with _socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v2/metrics/ingest?api-token=QSECRET x HTTP/1.1\r\n\r\n")
            sock.recv(65536)
    assert paths == ["/api/v2/metrics/ingest?api-token=...", "/other?Api-Token=...&x=..."]
    assert "api-token=..." in caplog.text and "QSECRET" not in caplog.text


def test_a_long_request_line_is_clipped_in_the_log_but_the_status_stays(caplog):
    """Each part of a log line is clipped alone (clipping the whole line could
    cut what follows a long request line); the record is clipped too."""
    import logging
    import socket as _socket

    caplog.set_level(logging.DEBUG, logger="dtproto")
    with IngestServer() as srv:
        parts = http.client.urlsplit(srv.url)  # type: ignore[attr-defined]
        with _socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v2/metrics/ingest?" + b"x" * 5000 + b" x HTTP/1.1\r\n\r\n")
            sock.recv(65536)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request("POST", "/api/v2/metrics/ingest?" + "x" * 5000, body=b"a.b 1\n")
            assert conn.getresponse().read()
        finally:
            conn.close()
        (rec,) = srv.requests
    assert rec.path.endswith("... (5023 characters)") and len(rec.path) < 300
    lines = [r.getMessage() for r in caplog.records if "characters)" in r.getMessage()]
    assert lines and all(len(line) < 600 for line in lines), lines
    assert any(" code 400, message Bad request syntax " in line for line in lines), lines
