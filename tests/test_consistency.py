"""One meaning for every input, one shape for every error (issue 10), for the
sender, the server and the CLI; plus the HTTP/1.0 endpoint regression.

Runs over whichever implementation is loaded (run once more with
DTPROTO_NO_EXTENSIONS=1 for the other one).
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional

import pytest

import dtproto
from dtproto import errors, sender as sender_mod
from dtproto.errors import (ConfigurationError, DeliveryError, InputReadError, SendError)
from dtproto.sender import Sender, SendResult
from dtproto.server import IngestServer

TOKEN = "dt0c01.CONSISTENCY.TOPSECRETVALUE"
PACKAGE_PARENT = str(pathlib.Path(dtproto.__file__).resolve().parent.parent)
HERE = pathlib.Path(__file__).resolve().parent


def cli(*args: Any, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    for k in ("DT_API_TOKEN", "DT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        e.pop(k, None)
    e["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "dtproto", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, env=e, cwd=str(HERE),
                          timeout=60)


# --------------------------------------------------------------------------- HTTP/1.0


class _Http10(http.server.BaseHTTPRequestHandler):
    """Default protocol_version (HTTP/1.0): answers and closes the connection."""

    content_length = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = body.count(b"\n")
        doc = json.dumps({"linesOk": n, "linesInvalid": 0, "error": None,
                          "warnings": None}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        if self.content_length:
            self.send_header("Content-Length", str(len(doc)))
        self.end_headers()
        self.wfile.write(doc)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("content_length", [False, True])
def test_http10_endpoint_that_closes_after_each_answer(content_length: bool) -> None:
    handler = type("H", (_Http10,), {"content_length": content_length})
    srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d/api/v2/metrics/ingest" % srv.server_port
        with Sender(url, TOKEN, retries=0, max_bytes=64) as s:
            for _ in range(3):   # every request on a new connection
                r = s.send(b"a.b 1\n" * 40)
                assert r.ok and r.lines_ok == 40 and len(r.requests) == 4, r.summary()
                assert all(q.history == [202] for q in r.requests)
    finally:
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------- blank lines


def test_sender_and_validate_agree_on_blank_lines() -> None:
    data = b"\x0b\n\x0c\n"
    report = dtproto.validate(data)
    assert (report.lines_ok, report.lines_invalid) == (0, 2)
    with IngestServer() as srv:
        with Sender(srv.url, TOKEN) as s:
            r = s.send(data)
            assert r.lines_skipped == 0 and not r.ok
            assert r.lines_invalid == 2 and [i.line for i in r.invalid_lines] == [1, 2]
            # Really blank: SP/HTAB after one CR is removed.  "\r\r" is not blank.
            r = s.send(b" \t\r\n\n\t\n")
            assert r.lines_skipped == 3 and r.ok and not r.requests
            r = s.send(b" \r\r\n")
            assert r.lines_skipped == 0 and r.lines_invalid == 1
    assert sender_mod.only_blank_lines(b" \t\r\n\n") is True
    assert sender_mod.only_blank_lines(b"\x0b\n") is False
    assert sender_mod.only_blank_lines(b"\r\r\n") is False


def test_dry_run_uses_the_same_blank_lines(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "vt.txt"
    f.write_bytes(b"\x0b\n\x0c\n")
    p = cli("send", "--dry-run", "--json", f)
    doc = json.loads(p.stdout)["files"][0]
    assert [c["sent"] for c in doc["chunks"]] == [True]
    assert doc["response"]["linesInvalid"] == 2


# --------------------------------------------------------------------------- token hygiene


def _values(obj: Any) -> Iterator[Any]:
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        yield from d.values()
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            yield getattr(obj, slot)


def test_token_is_never_visible() -> None:
    s = Sender("https://abc123.live.dynatrace.com/api/v2/metrics/ingest", TOKEN, proxy=False)
    seen: List[Any] = []
    for v in vars(s).values():
        seen.append(v)
        seen.extend(_values(v))
    for v in seen:
        assert v != TOKEN
        assert TOKEN not in repr(v)
        if isinstance(v, (str, bytes)):
            assert "TOPSECRET" not in str(v)
    assert "TOPSECRET" not in repr(s)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        pickle.dumps(s._token)
    with pytest.raises(ConfigurationError) as ei:
        Sender("http://example.invalid/api/v2/metrics/ingest", TOKEN)
    assert "TOPSECRET" not in str(ei.value) and "TOPSECRET" not in repr(ei.value.args)


def test_token_is_still_sent() -> None:
    with IngestServer(tokens=TOKEN) as srv:
        with Sender(srv.url, TOKEN) as s:
            assert s.send(b"a.b 1\n").ok
        assert srv.requests[-1].auth == "valid"


# --------------------------------------------------------------------------- server stats


def test_server_counts_invalid_lines_of_requests_without_a_valid_line() -> None:
    with IngestServer() as srv:
        assert srv.stats["lines_invalid"] == 0          # no KeyError before any request
        with Sender(srv.url, TOKEN, max_bytes=20) as s:
            r = s.send(b"bad line\n" * 5 + b"9x 1\n")
        assert r.lines_invalid == 6
        assert srv.stats["lines_invalid"] == 6
        assert srv.stats["lines_ok"] == 0 and srv.stats["lines_stored"] == 0
        srv.reset()
        assert srv.stats["lines_invalid"] == 0


def test_server_refuses_an_impossible_port() -> None:
    with pytest.raises(ValueError, match="0..65535"):
        IngestServer(port=99999)


# --------------------------------------------------------------------------- serve / argparse


def test_serve_names_the_real_problem() -> None:
    p = cli("serve", "--port", 99999)
    assert p.returncode == 2 and b"Traceback" not in p.stderr
    assert b"65535" in p.stderr
    p = cli("serve", "--port", 0, "--store", "/nonexistent/dir/x")
    assert p.returncode == 2 and b"Traceback" not in p.stderr
    assert b"--store" in p.stderr and b"No such file" in p.stderr
    assert b"cannot listen" not in p.stderr


def test_no_abbreviated_options(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "in.txt"
    f.write_bytes(b"a.b 1\n")
    p = cli("send", "--token", "x", "--url", "http://127.0.0.1:9/", f)
    assert p.returncode == 2 and b"unrecognized arguments: --token" in p.stderr
    p = cli("validate", "--max-err", "3", f)
    assert p.returncode == 2


# --------------------------------------------------------------------------- stopped_at


FAIL_AFTER_FIRST = "503:requests=" + "+".join(str(i) for i in range(2, 200))


def test_stopped_at_names_the_first_line_never_attempted() -> None:
    data = b"".join(b"a.b%d 1\n" % i for i in range(21))      # 7 or 8 bytes a line
    with IngestServer(faults=[FAIL_AFTER_FIRST]) as srv:
        # One request at a time: the server's first request is the first chunk.
        with Sender(srv.url, TOKEN, retries=0, max_bytes=40, concurrency=1) as s:
            with pytest.raises(DeliveryError) as ei:
                s.send(data)
    r = ei.value.result
    assert r.lines_ok == 5 and r.undelivered[0].first_line == 6
    last = r.undelivered[-1].last_line
    assert r.stopped_at == last + 1 == 11
    assert "never sent" in r.summary()
    # Everything attempted: None.
    with IngestServer(faults=["503:requests=1"]) as srv:
        with Sender(srv.url, TOKEN, retries=0) as s:
            with pytest.raises(DeliveryError) as ei:
                s.send(b"a.b 1\n")
    assert ei.value.result.stopped_at is None
    ok = SendResult()
    assert ok.stopped_at is None


def test_cli_reports_lines_never_sent_and_skipped_files(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "f21.txt"
    f.write_bytes(b"".join(b"a.b%d 1\n" % i for i in range(21)))
    g = tmp_path / "g.txt"
    g.write_bytes(b"x.y 1\n")
    with IngestServer(faults=[FAIL_AFTER_FIRST]) as srv:
        # One request at a time: the server's first request is the first chunk.
        one = ("--concurrency", 1, "--retries", 0, "--max-bytes", 40, "--url", srv.url)
        p = cli("send", "--json", *one, f, g)
        assert p.returncode == 1
        doc = json.loads(p.stdout)
        (d,) = doc["files"]
        assert d["stopped_at"] == 11 and d["lines_never_sent"] == 11
        assert doc["skipped_files"] == [str(g)]
        assert str(g).encode() in p.stderr and b"not sent" in p.stderr
        srv.reset()
        p = cli("send", *one, f, g)
        out = p.stdout.decode()
        assert "11 more lines never sent (lines 11-21)" in out
        assert "1 remaining file not sent" in p.stderr.decode()
        # The default (4 in flight): whichever chunk the server took first,
        # every line is stored, undelivered or never sent, exactly once.
        srv.reset()
        p = cli("send", "--json", "--retries", 0, "--max-bytes", 40, "--url", srv.url, f, g)
        assert p.returncode == 1
        (d,) = json.loads(p.stdout)["files"]
        undelivered = sum(u["lines"] for u in d["undelivered"])
        assert d["lines_ok"] == len(srv.accepted_lines) == 5
        assert d["lines_ok"] + undelivered + (d["lines_never_sent"] or 0) == 21


# --------------------------------------------------------------------------- errors


def test_errors_live_in_one_place() -> None:
    for name in ("ConfigurationError", "AuthenticationError", "MissingScopeError",
                 "EndpointNotFoundError", "PayloadTooLargeError", "DeliveryError",
                 "InputReadError"):
        cls = getattr(errors, name)
        assert cls.__module__ == "dtproto.errors"
        assert getattr(sender_mod, name) is cls
        assert getattr(dtproto, name) is cls, name
    assert dtproto.TimestampWarning is errors.TimestampWarning
    assert issubclass(errors.TimestampWarning, UserWarning)
    e = SendError("x")
    assert (e.result, e.ambiguous, e.unsent) == (None, False, None)
    assert issubclass(InputReadError, SendError)


def test_network_error_is_chained_and_refusal_named() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                                  # nothing listens there now
    s = Sender("http://127.0.0.1:%d/api/v2/metrics/ingest" % port, TOKEN, retries=1,
               backoff_base=0.001, backoff_cap=0.01)
    with pytest.raises(DeliveryError) as ei:
        s.send(b"a.b 1\n")
    assert isinstance(ei.value.__cause__, ConnectionRefusedError)
    assert "connection refused" in str(ei.value)
    p = cli("send", "--retries", 0, "--url", "http://127.0.0.1:%d/" % port,
            str(HERE.parent / "examples" / "metrics.txt"))
    assert p.returncode == 1
    out = p.stdout.decode()
    assert "connection refused" in out and "without an answer" in out


# --------------------------------------------------------------------------- messages


def test_cli_messages_name_cli_flags(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "in.txt"
    f.write_bytes(b"a.b 1\n")
    p = cli("send", "--url", "http://example.invalid/api/v2/metrics/ingest", f,
            env={"DT_API_TOKEN": TOKEN})
    assert p.returncode == 2 and b"--allow-insecure" in p.stderr
    assert b"allow_insecure" not in p.stderr and b"TOPSECRET" not in p.stderr
    p = cli("send", "--url", "http://127.0.0.1:9/metrics/ingest", f, env={"DT_API_TOKEN": "t"})
    assert p.returncode == 2 and b"token=None" not in p.stderr and b"DT_API_TOKEN" in p.stderr
    from dtproto.cli import _cli_text
    assert _cli_text("the server's limit is below max_bytes=1000; lower max_bytes") == \
        "the server's limit is below --max-bytes 1000; lower --max-bytes"
    for flag in ("--allow-insecure", "--ca-file", "--proxy", "--no-proxy"):
        assert flag.encode() in cli("send", "--help").stdout
    p = cli("send", "--ca-file", tmp_path / "none.pem", "--url", "https://x.invalid/", f)
    assert p.returncode == 2 and b"--ca-file" in p.stderr and b"Traceback" not in p.stderr


def test_saas_with_a_url_and_apps_urls_say_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match=r"Sender\(url"):
        Sender.saas("https://abc123.live.dynatrace.com", TOKEN)
    with pytest.raises(ConfigurationError, match=r"abc123\.live\.dynatrace\.com"):
        Sender("https://abc123.apps.dynatrace.com/api/v2/metrics/ingest", TOKEN)
    p = cli("send", "--url", "https://abc123.apps.dynatrace.com", "-",
            env={"DT_API_TOKEN": TOKEN})
    assert p.returncode == 2 and b"live.dynatrace.com" in p.stderr


def test_from_env_and_cli_read_the_same_variables(tmp_path: pathlib.Path) -> None:
    with IngestServer(tokens=TOKEN) as srv:
        base = srv.base_url
        env = {"DT_URL": base + "  ", "DT_API_TOKEN": " " + TOKEN + "\n"}
        with Sender.from_env(env) as s:
            assert s.url == srv.url
            assert s.send(b"a.b 1\n").ok
        f = tmp_path / "in.txt"
        f.write_bytes(b"a.b 1\n")
        p = cli("send", f, env=env)
        assert p.returncode == 0, p.stderr
        assert [r.auth for r in srv.requests] == ["valid", "valid"]
    with pytest.raises(ConfigurationError, match="DT_URL"):
        Sender.from_env({})
    p = cli("send", f)
    assert p.returncode == 2 and b"DT_URL" in p.stderr


def test_a_list_of_lines_means_the_same_to_sender_and_validate(tmp_path: pathlib.Path) -> None:
    lines = ["a.b 1", "c.d 2"]
    report = dtproto.validate(lines)
    assert (report.lines_ok, report.lines_invalid) == (2, 0)
    with IngestServer() as srv:
        with Sender(srv.url, None) as s:
            result = s.send(lines)
        assert result.ok and result.lines_ok == report.lines_ok
        assert srv.accepted_lines == [b"a.b 1", b"c.d 2"]


def test_a_path_means_the_file_to_sender_and_validate(tmp_path: pathlib.Path) -> None:
    import gzip

    body = b"a.b 1\nbad line\nc.d 2\n"
    plain = tmp_path / "m.txt"
    plain.write_bytes(body)
    packed = tmp_path / "m.txt.gz"
    packed.write_bytes(gzip.compress(body))
    with open(plain, "rb") as f:
        want = dtproto.validate(f)
    for path in (plain, packed):
        assert dtproto.validate(path) == want
        with IngestServer() as srv:
            with Sender(srv.url, None) as s:
                result = s.send(path)
            assert (result.lines_ok, result.lines_invalid) == (want.lines_ok, want.lines_invalid)
            assert [i.line for i in result.invalid_lines] == [e.line for e in want.errors]
