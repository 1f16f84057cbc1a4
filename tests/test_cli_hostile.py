"""The ``dtproto`` command line against hostile or broken inputs, outputs and peers.

Regression tests for issue 9 (items 3, 9, 10, 13, 16): every failure is a
message on stderr and exit code 2, never a traceback; nothing a peer or an
input controls reaches the terminal raw; partial work is reported.  Commands
run in a subprocess, as in ``test_cli.py``.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

import dtproto
from dtproto import cli
from dtproto.cli import send as cli_send, serve as cli_serve, validate as cli_validate
from dtproto._corpus import make_corpus
from dtproto.server import IngestServer

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
SAMPLE = EXAMPLES / "metrics.txt"
PACKAGE_PARENT = str(pathlib.Path(dtproto.__file__).resolve().parent.parent)
HERE = pathlib.Path(__file__).resolve().parent
TOKEN = {"DT_API_TOKEN": "t0ken"}
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX file descriptors")

# What must never reach a terminal raw: ESC, BEL, CR, C1 CSI (UTF-8), RLO (UTF-8).
RAW_CONTROLS = [b"\x1b", b"\x07", b"\r", b"\xc2\x9b", b"\xe2\x80\xae"]


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("DT_API_TOKEN", None)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run(*args: Any, input: Optional[bytes] = None, env: Optional[Dict[str, str]] = None,
        stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE,
        timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dtproto", *map(str, args)], input=input,
        stdin=None if input is not None else stdin, stdout=stdout, stderr=subprocess.PIPE,
        env=_env(env), cwd=str(HERE), timeout=timeout)


def run_sh(redirects: str, *args: Any, env: Optional[Dict[str, str]] = None
           ) -> subprocess.CompletedProcess:
    """Run dtproto under /bin/sh with shell redirections (``<&-``, ``>&-``...)."""
    cmd = " ".join(["exec", _quote(sys.executable), "-m", "dtproto"]
                   + [_quote(str(a)) for a in args] + [redirects])
    return subprocess.run(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(env),
                          cwd=str(HERE), timeout=60)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def assert_clean_failure(p: subprocess.CompletedProcess, *needles: bytes) -> None:
    """Exit 2 with a ``dtproto:`` message, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    assert b"dtproto" in p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)


@pytest.fixture
def srv() -> Iterator[IngestServer]:
    with IngestServer() as s:
        yield s


def _numbered_lines(n: int) -> bytes:
    # No timestamps: valid whatever the clock, so every delivered line is stored.
    return b"".join(b"hostile.test,i=%d gauge,%d\n" % (i, i) for i in range(n))


@pytest.fixture(scope="module")
def damaged_gz(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A .gz whose deflate data is damaged: zlib.error, not an OSError."""
    gz = bytearray(gzip.compress(_numbered_lines(2000)))
    gz[10:18] = b"\xff" * 8          # the first deflate block: an invalid block type
    path = tmp_path_factory.mktemp("gz") / "damaged.txt.gz"
    path.write_bytes(bytes(gz))
    return path


@pytest.fixture(scope="module")
def truncated_gz(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    gz = gzip.compress(_numbered_lines(60_000), compresslevel=1)
    path = tmp_path_factory.mktemp("gz") / "truncated.txt.gz"
    path.write_bytes(gz[: len(gz) * 2 // 3])
    return path


# --------------------------------------------------------------------------- item 3


@pytest.mark.parametrize("args", [
    ["validate"], ["validate", "--jobs", "2"], ["validate", "--json"],
    ["send", "--dry-run"], ["send", "--dry-run", "--json"],
], ids=lambda a: " ".join(a))
def test_damaged_gzip_is_an_io_error(damaged_gz: pathlib.Path, args: List[str]) -> None:
    p = run(*args, damaged_gz)
    assert_clean_failure(p, b"cannot read " + str(damaged_gz).encode())


def test_damaged_gzip_send_is_an_io_error(damaged_gz: pathlib.Path, srv: IngestServer) -> None:
    p = run("send", damaged_gz, "--url", srv.url, env=TOKEN)
    assert_clean_failure(p, b"cannot read ")
    assert srv.accepted_lines == []


def test_damaged_gzip_on_stdin(damaged_gz: pathlib.Path) -> None:
    p = run("validate", "-", input=damaged_gz.read_bytes())
    assert_clean_failure(p, b"cannot read <stdin>")


# --------------------------------------------------------------------------- item 9


@posix_only
def _validate_json_of_a_pipe(nonblocking: bool) -> Any:
    """``dtproto validate --json -q -`` reading a pipe, and the pipe's write end."""
    r, w = os.pipe()
    os.set_blocking(r, not nonblocking)   # shared with the child: its stdin's mode
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dtproto", "validate", "--json", "-q",
                                 "-"], stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env(), cwd=str(HERE))
    finally:
        os.close(r)
    return proc, w


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_nonblocking_stdin_waits_for_data(gz: bool) -> None:
    data = _numbered_lines(3000)
    payload = gzip.compress(data) if gz else data
    proc, w = _validate_json_of_a_pipe(nonblocking=True)
    with os.fdopen(w, "wb") as f:
        time.sleep(0.4)            # the child finds no data yet (read() -> None)
        f.write(payload[:100])
        f.flush()
        time.sleep(0.2)
        f.write(payload[100:])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    doc = json.loads(out)["files"][0]
    assert doc["response"]["linesOk"] == 3000 and doc["lines_total"] == 3000


@pytest.mark.parametrize("nonblocking", [False, True], ids=["blocking", "nonblocking"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_stdin_is_gzip_by_its_bytes_even_when_they_come_one_by_one(gz: bool,
                                                                   nonblocking: bool) -> None:
    # Found by a red-team pass: peek(2) gave the one byte written so far and a
    # gzip body was read as text (or sent as compressed bytes by send).
    data = _numbered_lines(300)
    payload = gzip.compress(data) if gz else b"\x1f" + data
    proc, w = _validate_json_of_a_pipe(nonblocking)
    with os.fdopen(w, "wb") as f:
        f.write(payload[:1])
        f.flush()
        time.sleep(0.4)            # the child peeks while only the first byte came
        f.write(payload[1:])
    out, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode()
    doc = json.loads(out)["files"][0]
    assert doc["lines_total"] == 300
    # gzip: every line ok; plain: the first line holds the \x1f and is invalid
    assert doc["response"]["linesOk"] == (300 if gz else 299), doc


# --------------------------------------------------------------------------- item 10


def test_send_truncated_gzip_reports_what_was_delivered(truncated_gz: pathlib.Path,
                                                        srv: IngestServer) -> None:
    lines = _numbered_lines(60_000).split(b"\n")
    p = run("send", "--max-bytes", 100_000, truncated_gz, "--url", srv.url, env=TOKEN)
    assert_clean_failure(p, b"cannot read ")
    stored = len(srv.accepted_lines)
    assert 0 < stored < 60_000
    # Exactly the complete lines read (the chunks in flight may be stored in
    # any order): never a line cut short.
    assert sorted(srv.accepted_lines) == sorted(lines[:stored])
    out = p.stdout.decode()
    assert "  %s ok, 0 invalid, 0 not delivered\n" % format(stored, ",") in out
    assert "cannot read %s" % truncated_gz in out
    assert "after %s complete lines" % format(stored, ",") in out

    srv.reset()
    p = run("send", "--json", truncated_gz, "--url", srv.url, env=TOKEN)
    assert_clean_failure(p, b"cannot read ")
    (f,) = json.loads(p.stdout)["files"]
    assert f["lines_ok"] == len(srv.accepted_lines) == f["lines_read"] == stored
    assert f["io_error"].startswith("cannot read ")
    assert f["lines_not_delivered"] == 0


def test_dry_run_truncated_gzip_reports_the_chunks_read(truncated_gz: pathlib.Path) -> None:
    p = run("send", "--dry-run", "--json", truncated_gz)
    assert_clean_failure(p, b"cannot read ")
    (f,) = json.loads(p.stdout)["files"]
    assert f["lines_read"] > 0 and sum(c["lines"] for c in f["chunks"]) == f["lines_read"]


# --------------------------------------------------------------------------- item 13


EVIL = (b"evil.key,k=\x1b]0;owned\x07\x1b[2J 1\n"              # ESC, OSC, BEL
        b"evil\r\xc2\x9b2J.key 1\n"                         # CR, C1 CSI
        b"ok.key,k=\xe2\x80\xae\xff gauge,1\n")                 # RLO, an invalid byte


def test_validate_escapes_control_characters(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "evil\x1b[31m.txt"
    f.write_bytes(EVIL)
    p = run("validate", "--examples", 5, f)
    assert p.returncode == 1, p.stderr
    for c in RAW_CONTROLS:
        assert c not in p.stdout and c not in p.stderr, c
    assert b"evil.key,k=\\x1b]0;owned\\x07\\x1b[2J 1" in p.stdout
    assert b"\\xc2\\x9b" not in p.stdout and b"\\x9b2J.key" in p.stdout
    assert b"\\u202e\\xff" in p.stdout
    assert b"evil\\x1b[31m.txt" in p.stdout
    p = run("validate", "--json", f)
    for c in RAW_CONTROLS:
        assert c not in p.stdout, c
    doc = json.loads(p.stdout)       # still JSON, same text once decoded
    texts = [e["text"] for e in doc["files"][0]["errors"]]
    assert "evil.key,k=\x1b]0;owned\x07\x1b[2J 1" in texts


class _EvilAPI(http.server.BaseHTTPRequestHandler):
    """An ingest endpoint whose answers carry terminal escape sequences."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"linesOk": 1, "linesInvalid": 1, "error": {
            "code": 400, "message": "\x1b[2Jbad", "invalidLines": [
                {"line": 1, "error": "\x1b]0;owned\x07\u009b2J\r\u202efake"}]},
            "warnings": None}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_send_escapes_server_reasons() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EvilAPI)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d/api/v2/metrics/ingest" % httpd.server_address[1]
        p = run("send", "--url", url, "-", input=b"a.b 1\nc.d 2\n", env=TOKEN)
        assert p.returncode == 1, p.stderr
        for c in RAW_CONTROLS:
            assert c not in p.stdout and c not in p.stderr, c
        assert b"\\x1b]0;owned\\x07\\x9b2J\\r\\u202efake" in p.stdout
        p = run("send", "--json", "--url", url, "-", input=b"a.b 1\nc.d 2\n", env=TOKEN)
        for c in RAW_CONTROLS:
            assert c not in p.stdout, c
        reasons = [i["reason"] for i in json.loads(p.stdout)["files"][0]["invalid_lines"]]
        assert reasons and "\x1b]0;owned" in reasons[0]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_serve_log_escapes_the_request_path() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "dtproto", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            cwd=str(HERE))
    try:
        first = proc.stdout.readline().decode()           # type: ignore[union-attr]
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert m, first
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=10) as s:
            s.sendall(b"GET /\x1b[2J\x1b[1;1Hforged\x07\x9b HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 0\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 404")
        time.sleep(0.3)                                   # one poll of the log
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for c in RAW_CONTROLS:
        assert c not in err, c
    assert b"GET /\\x1b[2J\\x1b[1;1Hforged\\x07\\x9b 404" in err
    assert b"stopped after 1 request" in err


def test_an_invisible_character_is_shown_escaped(tmp_path) -> None:
    f = tmp_path / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbfcpu.load 1\ncpu\xe2\x80\x8b.x 2\n")   # a BOM; a zero-width space
    p = run("validate", f)
    assert p.returncode == 1
    assert b"'\\ufeff'" in p.stdout and b"\\u200b" in p.stdout, p.stdout
    assert "\ufeff".encode() not in p.stdout and "\u200b".encode() not in p.stdout
    p = run("validate", f, "--json")
    assert "\ufeff".encode() not in p.stdout and b"\\ufeff" in p.stdout


def test_printable_helper() -> None:
    assert cli._printable("plain text, \u00e9t\u00e9 \u2603") == "plain text, \u00e9t\u00e9 \u2603"
    assert cli._printable("a\x1b[2J\tb\nc\rd\x7f\x9b\u202e\u2028\udcff") == \
        "a\\x1b[2J\\tb\\nc\\rd\\x7f\\x9b\\u202e\\u2028\\xff"


# --------------------------------------------------------------------------- item 16


def test_malformed_url_is_a_usage_error() -> None:
    p = run("send", "--url", "http://[::1", SAMPLE, env=TOKEN)
    assert_clean_failure(p, b"--url")


@pytest.mark.parametrize("command", ["send", "load"])
@pytest.mark.parametrize("port", ["0", "99999", "abc"])
def test_a_bad_url_port_is_a_usage_error_naming_where_the_url_came_from(
        tmp_path: pathlib.Path, command: str, port: str) -> None:
    """Port 0 used to send the data and the token to port 80; the others
    were blamed on 'url' (the Python parameter)."""
    f = tmp_path / "m.txt"
    f.write_bytes(b"a.b 1\n")
    args = [f] if command == "send" else ["--rate", "10", "--duration", "1"]
    url = "http://127.0.0.1:%s" % port
    p = run(command, *args, "--url", url, env=TOKEN)
    assert_clean_failure(p, b"dtproto: --url has an invalid port: a port is a number within "
                            b"1..65535")
    assert not p.stdout and b" url" not in p.stderr
    p = run(command, *args, env=dict(TOKEN, DT_URL=url))
    assert_clean_failure(p, b"dtproto: DT_URL has an invalid port")


@pytest.mark.parametrize("command", ["send", "load"])
@pytest.mark.parametrize("proxy, why", [("http://u:PROXYSECRET@127.0.0.1:99999", b"port"),
                                        ("http://u:PROXYSECRET@127.0.0.1:abc", b"port"),
                                        ("http://u:PROXYSECRET@[::1", b"cannot be parsed")])
def test_a_bad_proxy_is_a_usage_error_naming_where_it_came_from(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, command: str, proxy: str,
        why: bytes) -> None:
    """Not a traceback at the first request (a ValueError of urllib), nor
    blamed on --url; the proxy URL is not shown (it may hold credentials)."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)      # the child's environment is ours
    f = tmp_path / "m.txt"
    f.write_bytes(b"a.b 1\n")
    args = [f] if command == "send" else ["--rate", "10", "--duration", "1"]
    url = "https://abc12345.live.dynatrace.com"
    p = run(command, *args, "--url", url, "--proxy", proxy, env=TOKEN)
    assert_clean_failure(p, b"dtproto: invalid proxy URL in --proxy (not shown", why)
    assert b"--url" not in p.stderr and b"PROXYSECRET" not in p.stderr + p.stdout
    for name in ("HTTPS_PROXY", "https_proxy"):
        p = run(command, *args, "--url", url, env=dict(TOKEN, **{name: proxy}))
        assert_clean_failure(p, b"dtproto: invalid proxy URL in %s (not shown" % name.encode(),
                             why)
        assert b"PROXYSECRET" not in p.stderr + p.stdout


@pytest.mark.parametrize("command", ["send", "load"])
def test_an_empty_proxy_is_refused_not_taken_from_the_environment(
        tmp_path: pathlib.Path, command: str) -> None:
    """``--proxy ''`` used to mean "the environment's proxy": the one thing
    it cannot mean.  (--no-proxy connects directly.)"""
    f = tmp_path / "m.txt"
    f.write_bytes(b"a.b 1\n")
    args = [f] if command == "send" else ["--rate", "10", "--duration", "1"]
    p = run(command, *args, "--url", "https://abc12345.live.dynatrace.com", "--proxy", "",
            env=dict(TOKEN, HTTPS_PROXY="http://127.0.0.1:9"))
    assert_clean_failure(p, b"dtproto: invalid proxy URL in --proxy (not shown",
                         b"it names no host")


def test_now_that_is_no_time_says_what_now_takes() -> None:
    p = run("validate", "--now", "\u00b2", SAMPLE)     # "²": str.isdigit() says it is a digit
    assert_clean_failure(p, "argument --now: invalid time '\u00b2': use epoch milliseconds, "
                            "ISO 8601".encode())
    assert b"_now_arg" not in p.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_timeout_must_be_finite_and_positive(value: str) -> None:
    p = run("send", "--url", "http://127.0.0.1:9/api/v2/metrics/ingest", "--timeout", value,
            SAMPLE, env=TOKEN)
    assert p.returncode == 2 and b"--timeout" in p.stderr, p.stderr
    assert b"Traceback" not in p.stderr and not p.stdout


@posix_only
@pytest.mark.parametrize("args", [["validate", "-"], ["send", "--dry-run", "-"],
                                  ["send", "--url", "http://127.0.0.1:9/x", "-"]],
                         ids=lambda a: " ".join(a))
def test_stdin_whose_first_read_fails(tmp_path: pathlib.Path, args: List[str]) -> None:
    with open(tmp_path / "w", "wb") as wo:     # stdin open for writing only: EBADF on read
        p = run(*args, stdin=wo, env=TOKEN)
    assert_clean_failure(p, b"cannot read <stdin>")


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs /proc/self/mem")
def test_file_whose_first_read_fails() -> None:
    p = run("validate", "/proc/self/mem")       # opens, but reading offset 0 fails (EIO)
    assert_clean_failure(p, b"cannot read /proc/self/mem")


@posix_only
@pytest.mark.parametrize("args", [["validate", "-"], ["send", "--dry-run", "-"]],
                         ids=lambda a: " ".join(a))
def test_stdin_closed(args: List[str]) -> None:
    p = run_sh("<&-", *args)
    assert_clean_failure(p, b"cannot read <stdin>")


@posix_only
@pytest.mark.parametrize("args", [["validate", str(SAMPLE)], ["validate", "--json", str(SAMPLE)],
                                  ["--version"], ["send", "--dry-run", str(SAMPLE)]],
                         ids=lambda a: " ".join(a))
def test_stdout_closed(args: List[str]) -> None:
    p = run_sh(">&-", *args)
    assert_clean_failure(p, b"cannot write the output")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["validate", str(SAMPLE)], ["validate", "--json", str(SAMPLE)]],
                         ids=lambda a: " ".join(a))
def test_stdout_full(args: List[str]) -> None:
    with open("/dev/full", "w") as full:
        p = run(*args, stdout=full)
    assert_clean_failure(p, b"cannot write the output", b"No space left on device")


# --help and --version exit from inside the parser: their output must be
# flushed there, not at interpreter exit (buffered, as stdout is unless
# PYTHONUNBUFFERED is set: "" unsets it for the child).
BUFFERED = {"PYTHONUNBUFFERED": ""}
PARSER_EXITS = [["--version"], ["--help"], ["validate", "--help"], ["send", "--help"]]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", PARSER_EXITS, ids=" ".join)
def test_stdout_full_for_help_and_version(args: List[str]) -> None:
    with open("/dev/full", "w") as full:
        p = run(*args, stdout=full, env=BUFFERED)
    assert_clean_failure(p, b"dtproto: cannot write the output: No space left on device\n")
    assert b"Exception ignored" not in p.stderr and p.stderr.count(b"\n") == 1, p.stderr


@posix_only
@pytest.mark.parametrize("args", PARSER_EXITS, ids=" ".join)
def test_stdout_reader_gone_for_help_and_version(args: List[str]) -> None:
    r, w = os.pipe()
    os.close(r)                         # nobody will read: a write fails with EPIPE
    try:
        p = run(*args, stdout=w, env=BUFFERED)
    finally:
        os.close(w)
    # the reader has what it wanted: quiet, as a filter that SIGPIPE ends
    assert (p.returncode, p.stderr) == (141, b"")


@posix_only
def test_stdout_reader_gone(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "many.txt"
    f.write_bytes(b"9bad key\n" * 20_000)                     # lots of output
    with subprocess.Popen([sys.executable, "-m", "dtproto", "validate", "--json", f],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                          cwd=str(HERE)) as proc:
        proc.stdout.close()              # the reader goes away   # type: ignore[union-attr]
        err = proc.stderr.read()                                  # type: ignore[union-attr]
        proc.wait(timeout=60)
    assert (proc.returncode, err) == (141, b"")


def _with_reader_gone(*args: Any, env: Optional[Dict[str, str]] = None
                      ) -> subprocess.CompletedProcess:
    """Run dtproto with stdout a pipe nobody reads (every write fails with EPIPE)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return run(*args, stdout=w, env=env)
    finally:
        os.close(w)


@posix_only
@pytest.mark.parametrize("args", [["validate", str(SAMPLE)], ["send", "--dry-run", str(SAMPLE)],
                                  ["stats", str(SAMPLE)]], ids=lambda a: " ".join(a))
def test_stdout_reader_gone_is_quiet_for_what_sends_nothing(args: List[str]) -> None:
    p = _with_reader_gone(*args)
    assert (p.returncode, p.stderr) == (141, b"")


@posix_only
def test_stdout_reader_gone_is_said_by_send(srv: IngestServer) -> None:
    # the report of what was delivered is lost: that is said, on stderr
    p = _with_reader_gone("send", SAMPLE, "--url", srv.url, env=TOKEN)
    assert_clean_failure(p, b"dtproto: cannot write the output: Broken pipe\n")
    assert srv.accepted_lines                      # the send itself went through


@posix_only
def test_stdout_reader_gone_is_said_by_serve() -> None:
    p = _with_reader_gone("serve", "--port", "0", "-q")
    assert_clean_failure(p, b"dtproto: cannot write the output: Broken pipe\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds workers in /proc")
def test_ctrl_c_during_jobs_prints_no_worker_tracebacks(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "big.txt"
    f.write_bytes(make_corpus(48_000, seed=3) * 8)            # ~48 MB: workers are busy
    # The pure core keeps the workers busy long enough to be interrupted on
    # any machine; what is tested is the command's signal handling.
    env = _env({"DTPROTO_NO_EXTENSIONS": "1", "DTPROTO_REQUIRE_EXTENSIONS": ""})
    for _ in range(3):      # a worker's traceback races the pool's terminate(): try thrice
        proc = subprocess.Popen([sys.executable, "-m", "dtproto", "validate", "-q", "--jobs",
                                 "2", f], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd=str(HERE), start_new_session=True)
        children = pathlib.Path("/proc/%d/task/%d/children" % (proc.pid, proc.pid))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if len(children.read_text().split()) >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        time.sleep(0.2)                                        # the workers are validating
        os.killpg(proc.pid, signal.SIGINT)                     # Ctrl-C: the whole group
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 1 and b"ok" in out:
            pytest.skip("finished before the interrupt")
        assert proc.returncode == 130, err
        # Not even the "Process ForkPoolWorker-1:" header of a worker's traceback.
        assert err == b"dtproto: interrupted\n", err.decode()


def test_timing_line_names_the_jobs_used(tmp_path: pathlib.Path) -> None:
    p = run("validate", "--jobs", 8, SAMPLE)                  # too small to split
    assert p.returncode == 1
    assert b"(1 job)" in p.stderr, p.stderr
    big = tmp_path / "big.txt"
    big.write_bytes(make_corpus(6_000, seed=5))               # ~750 KB: ranges of >= 256 KiB
    expected = big.stat().st_size // cli_validate._MIN_JOB_BYTES
    assert 1 < expected < 8
    p = run("validate", "--jobs", 8, big)
    assert p.returncode == 0, p.stderr
    assert b"(%d jobs)" % expected in p.stderr, p.stderr


def test_invalid_fault_options_are_usage_errors() -> None:
    for spec in ("slow:delay=-1", "429:retry_after=nan", "429:retry_after=inf",
                 "slow:delay=nan", "503:rate=nan"):
        p = run("serve", "--port", 0, "--fault", spec)
        assert_clean_failure(p, b"--fault")
        assert not p.stdout


def test_serve_summary_counts_requests_the_log_dropped(capsys: pytest.CaptureFixture) -> None:
    with IngestServer(log_size=3) as s:
        import http.client

        def hit(path: str) -> None:
            conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
            conn.request("POST", path, body=b"a.b 1\n")
            conn.getresponse().read()
            conn.close()

        for i in range(10):
            hit("/api/v2/metrics/ingest" if i % 2 else "/nope")
        seen, n = cli_serve._log_requests(s, 0, False)
        assert n == 10
        err = capsys.readouterr().err
        assert "7 requests not shown (the request log fell behind)" in err
        assert err.count(" ok=") == 3
        hit("/api/v2/metrics/ingest")
        seen, n = cli_serve._log_requests(s, seen, True)
        assert n == 1
        assert cli_serve._log_requests(s, seen, True)[1] == 0


def test_send_prints_the_partial_result_of_a_sender_input_error(
        srv: IngestServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """If a read failure reaches the sender (it raises a SendError carrying the
    result), the CLI still prints that result and exits 2, then goes on."""
    lines = _numbered_lines(3)

    class Failing(cli_send._Feed):
        def read(self, n: int = cli_send._BLOCK) -> bytes:
            if not self.lines:
                self.lines = 3
                return lines
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(cli_send, "_Feed", Failing)
    monkeypatch.setenv("DT_API_TOKEN", "t0ken")
    rc = cli.main(["send", "--json", "--max-bytes", "50", "--url", srv.url, str(SAMPLE),
                   str(SAMPLE)])
    assert rc == 2
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 2                                  # the second input still went
    for f in files:
        assert "Input/output error" in f["input_error"] and f["error"]
        assert f["lines_ok"] >= 1 and f["lines_ok"] + f["lines_not_delivered"] == 3
    assert len(srv.accepted_lines) == sum(f["lines_ok"] for f in files)


@pytest.mark.parametrize("command", ["send", "load"])
@pytest.mark.parametrize("url, why", [
    ("http://user:PASSWDSECRET@[::1:18901", b"Invalid IPv6 URL"),
    ("http://user:PASSWDSECRET@ho\uff0fst/api/v2/metrics/ingest", b"NFKC"),  # urllib quotes it
])
def test_an_unparseable_url_is_not_echoed_it_may_hold_a_password(tmp_path: pathlib.Path,
                                                                 command: str, url: str,
                                                                 why: bytes) -> None:
    f = tmp_path / "m.txt"
    f.write_bytes(b"a.b 1\n")
    args = [f] if command == "send" else ["--rate", "10", "--duration", "1"]
    p = run(command, *args, "--url", url, env={"DT_API_TOKEN": "x"})
    assert p.returncode == 2, p.stderr
    assert b"invalid --url" in p.stderr and why in p.stderr
    assert b"PASSWDSECRET" not in p.stderr + p.stdout
