"""The ``dtproto`` command line, driven as users drive it: in a subprocess.

Every command runs through ``python -m dtproto`` (and one test through the
installed ``dtproto`` script when it is on PATH).  Subprocesses import the
same ``dtproto`` as this test process (an installed package or a checkout):
they run in ``tests/`` with that package's parent on PYTHONPATH, because
``-m`` puts the working directory first on ``sys.path`` and a source tree
there would shadow the installed package.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import re
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
from typing import Any, Dict, List, Optional, Tuple

import pytest

import dtproto
from dtproto._corpus import make_corpus

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
SAMPLE = EXAMPLES / "metrics.txt"
SAMPLE_NOW = "2024-06-01T12:00:00Z"       # the sample's timestamps: 1717243200000
PACKAGE_PARENT = str(pathlib.Path(dtproto.__file__).resolve().parent.parent)
HERE = pathlib.Path(__file__).resolve().parent


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("DT_API_TOKEN", None)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run(*args: Any, input: Optional[bytes] = None, env: Optional[Dict[str, str]] = None,
        cwd: Optional[pathlib.Path] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dtproto", *map(str, args)], input=input,
        stdin=None if input is not None else subprocess.DEVNULL, capture_output=True,
        env=_env(env), cwd=str(cwd or HERE), timeout=timeout)


@pytest.fixture
def work(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """~6 MB of realistic lines, 2% invalid: more than one validation segment."""
    path = tmp_path_factory.mktemp("big") / "big.txt"
    path.write_bytes(make_corpus(48_000, seed=7, invalid_ratio=0.02))
    return path


# --------------------------------------------------------------------------- basics


def test_version() -> None:
    p = run("--version")
    assert p.returncode == 0
    expected = "dtproto %s (%s)\n" % (dtproto.__version__, dtproto.IMPLEMENTATION)
    if dtproto.IMPLEMENTATION == "python":  # and a second line says why
        expected += "why not cython: %s\n" % dtproto._impl.extension_error()
    assert p.stdout.decode() == expected


def test_version_without_extensions() -> None:
    # REQUIRE (set by CI for the Cython run) would forbid the forced fallback.
    p = run("--version", env={"DTPROTO_NO_EXTENSIONS": "1", "DTPROTO_REQUIRE_EXTENSIONS": ""})
    assert p.stdout.decode() == (
        "dtproto %s (python)\nwhy not cython: disabled by DTPROTO_NO_EXTENSIONS\n"
        % dtproto.__version__)


def test_startup_imports_nothing_heavy() -> None:
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "dtproto", "--version"],
                       capture_output=True, env=_env(), stdin=subprocess.DEVNULL, cwd=HERE,
                       timeout=60)
    assert p.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "dtproto.cli" in imported
    for heavy in ("http.client", "multiprocessing", "ssl", "dtproto.sender",
                  "dtproto.server", "gzip", "json"):
        assert heavy not in imported, heavy


def test_console_script() -> None:
    # Next to this interpreter first: CI and the README run v/bin/pytest without
    # activating the venv, so the script is not on PATH there.
    script = shutil.which("dtproto", path=os.pathsep.join(
        [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]))
    if script is None:
        pytest.skip("no dtproto console script next to this interpreter (package not installed)")
    p = subprocess.run([script, "validate", "-q", str(SAMPLE)], capture_output=True,
                       cwd=HERE, timeout=60)
    assert p.returncode == 1, p.stderr
    assert b"5 invalid" in p.stdout
    p = subprocess.run([script, "--version"], capture_output=True, cwd=HERE, timeout=60)
    assert p.stdout.startswith(b"dtproto 0.1.0 ("), p.stderr


@pytest.mark.parametrize("args", [
    [],                                      # no command
    ["frobnicate"],                          # unknown command
    ["validate", "--jobs", "0", "x"],        # bad value
    ["validate", "--no-such-flag", "x"],     # unknown flag
    ["validate", "--now", "yesterday", "x"],
    ["send", "--max-bytes", "lots", "x"],
])
def test_usage_errors_exit_2(args: List[str]) -> None:
    p = run(*args)
    assert p.returncode == 2
    assert p.stderr and not p.stdout


def test_no_input_and_nothing_piped_is_a_usage_error(work: pathlib.Path) -> None:
    # stdin is /dev/null here, not a terminal: it is read (and empty)
    p = run("validate", "-q", cwd=work)
    assert p.returncode == 0 and b"<stdin>: 0 lines" in p.stdout


# --------------------------------------------------------------------------- validate


def test_validate_sample_human_output() -> None:
    p = run("validate", SAMPLE)
    assert p.returncode == 1
    out = p.stdout.decode()
    name = str(SAMPLE)
    assert out.startswith("%s: 21 lines: 15 ok, 5 invalid, 1 blank line; 1 warning\n" % name)
    assert "  summary_inconsistent  1\n" in out
    # file:line: message, then the offending text
    assert ("%s:12: count payload requires delta=: '12'\n"
            "      app.http.server.requests.count,service=cart" % name) in out
    assert ("%s:13: metric key 'app.errors.unhandled' changed to "
            "'app.errors.unhandled.count'" % name) in out
    assert re.search(r"validated 1 input, 1,\d{3} bytes in [\d.]+ s: [\d.]+ MB/s",
                     p.stderr.decode())


def test_validate_valid_input_exits_0(work: pathlib.Path) -> None:
    f = work / "ok.txt"
    f.write_bytes(make_corpus(500))
    p = run("validate", f)
    assert p.returncode == 0, p.stdout
    assert b": 500 lines: 500 ok, 0 invalid" in p.stdout


def test_validate_json_matches_the_library() -> None:
    p = run("validate", "--json", SAMPLE)
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    expected = dtproto.validate(SAMPLE.read_bytes())
    (f,) = doc["files"]
    assert f["file"] == str(SAMPLE)
    assert f["response"] == expected.to_response()
    assert f["error_counts"] == {str(k): v for k, v in expected.error_counts.items()}
    assert [(e["line"], e["column"], e["code"], e["message"], e["text"]) for e in f["errors"]] \
        == [(e.line, e.column, str(e.code), e.message, e.text) for e in expected.errors]
    assert f["lines_total"] == 21 and f["warnings_total"] == 1
    assert (doc["lines_ok"], doc["lines_invalid"], doc["warnings_total"]) == (15, 5, 1)


def test_validate_now_applies_the_timestamp_window() -> None:
    p = run("validate", "--json", "--now", SAMPLE_NOW, SAMPLE)
    assert json.loads(p.stdout)["files"][0]["error_counts"].get("timestamp_out_of_range") is None
    two_hours_later = 1717243200000 + 2 * 3600 * 1000
    p = run("validate", "--json", "--now", two_hours_later, SAMPLE)
    counts = json.loads(p.stdout)["files"][0]["error_counts"]
    assert counts["timestamp_out_of_range"] == 13   # every valid data line (not metadata)
    p = run("validate", "--json", "--now", "2024-06-01T14:00:00+02:00", SAMPLE)
    assert "timestamp_out_of_range" not in json.loads(p.stdout)["files"][0]["error_counts"]


def test_validate_now_to_the_millisecond(work: pathlib.Path) -> None:
    """An ISO --now with milliseconds is that millisecond: the window's upper
    end (now + 10 min, inclusive) lets a line in; one ms off would not."""
    now_ms = 1079337347472                              # 2004-03-15T07:55:47.472Z
    f = work / "edge.txt"
    f.write_bytes(b"a.b 1 %d\n" % (now_ms + 600_000))
    p = run("validate", "-q", "--now", "2004-03-15T07:55:47.472Z", f)
    assert p.returncode == 0, p.stdout
    p = run("validate", "-q", "--now", "2004-03-15T07:55:47.471Z", f)
    assert p.returncode == 1 and b"timestamp_out_of_range" in p.stdout


def test_now_parses_every_millisecond_exactly() -> None:
    import random
    from datetime import datetime, timedelta, timezone

    from dtproto.cli._common import _now_arg

    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    rng = random.Random(3)
    for ms in [rng.randrange(0, 4_102_444_800_000) for _ in range(2_000)] + [0, 1, 999]:
        when = epoch + timedelta(milliseconds=ms)
        assert _now_arg(when.isoformat(timespec="milliseconds")) == ms
        assert _now_arg(when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == ms
        assert _now_arg(when.astimezone(timezone(timedelta(hours=5, minutes=30)))
                        .isoformat(timespec="microseconds")) == ms
        assert _now_arg(" %d " % ms) == ms
    # A fraction of a millisecond is dropped, towards the past.
    assert _now_arg("1970-01-01T00:00:00.0019Z") == 1
    assert _now_arg("1969-12-31T23:59:59.9995Z") == -1


def test_validate_a_timestamp_in_seconds_is_a_hint_under_its_own_heading(
        work: pathlib.Path) -> None:
    """Not counted among the Metrics Classic renames: a heading of its own in
    the text; in --json, ``hints`` (the server's answer, ``response``, has
    no such warning)."""
    f = work / "w.txt"
    f.write_bytes(b"a.b 1 1700000000\nx.y count,delta=1\nc.d 2 1700000001\n")
    p = run("validate", "-q", f)
    assert p.returncode == 0
    assert p.stdout.decode().split("\n", 1)[1] == (
        "warnings: Metrics Classic key renames (1 line):\n"
        "  {f}:2: metric key 'x.y' changed to 'x.y.count'\n"
        "warnings: timestamps that look like seconds, dtproto's hint the API does not give "
        "(2 lines):\n"
        "  {f}:1: timestamp 1700000000 is before 1973 as epoch milliseconds: it looks like "
        "seconds (in milliseconds: 1700000000000)\n"
        "  {f}:3: timestamp 1700000001 is before 1973 as epoch milliseconds: it looks like "
        "seconds (in milliseconds: 1700000001000)\n").format(f=f)
    doc = json.loads(run("validate", "-q", "--json", f).stdout)
    (one,) = doc["files"]
    assert one["warnings_total"] == doc["warnings_total"] == 3
    assert [w["line"] for w in one["response"]["warnings"]["changedMetricKeys"]] == [2]
    assert [(h["line"], h["code"]) for h in one["hints"]] == [(1, "timestamp_in_seconds"),
                                                               (3, "timestamp_in_seconds")]
    assert one["hints"][0]["message"].startswith("timestamp 1700000000 is before 1973")
    # --max-warnings caps each kind: a kind that reached it counts the kept ones
    p = run("validate", "-q", "--max-warnings", 1, "--examples", 1, f)
    assert p.stdout.decode().split("\n", 1)[1] == (
        "warnings: Metrics Classic key renames (the first 1 line kept):\n"
        "  {f}:2: metric key 'x.y' changed to 'x.y.count'\n"
        "warnings: timestamps that look like seconds, dtproto's hint the API does not give "
        "(the first 1 line kept):\n"
        "  {f}:1: timestamp 1700000000 is before 1973 as epoch milliseconds: it looks like "
        "seconds (in milliseconds: 1700000000000)\n"
        "warnings: 1 more warning not kept (--max-warnings N), not counted by kind\n"
        ).format(f=f)


def test_validate_stdin(work: pathlib.Path) -> None:
    data = SAMPLE.read_bytes()
    for args in (["-"], []):
        p = run("validate", "--json", *args, input=data, cwd=work)
        assert p.returncode == 1
        f = json.loads(p.stdout)["files"][0]
        assert f["file"] == "<stdin>"
        assert f["response"] == dtproto.validate(data).to_response()
    p = run("validate", "-", "-", input=data)
    assert p.returncode == 2 and b"only once" in p.stderr


def test_shipped_gzip_sample_matches_the_text_sample() -> None:
    assert gzip.decompress((EXAMPLES / "metrics.txt.gz").read_bytes()) == SAMPLE.read_bytes()


def test_validate_gzip_transparently(work: pathlib.Path) -> None:
    gz = work / "metrics.txt.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    plain = run("validate", "-q", SAMPLE).stdout.decode().replace(str(SAMPLE), "F")
    p = run("validate", "--jobs", "2", gz)
    assert p.returncode == 1
    assert p.stdout.decode().replace(str(gz), "F") == plain
    assert b"gzip input cannot be split; validating with 1 job" in p.stderr
    p = run("validate", "-q", "-", input=gz.read_bytes())     # gzip on stdin too
    assert p.stdout.decode().replace("<stdin>", "F") == plain


def test_jobs_output_is_identical(big_file: pathlib.Path) -> None:
    outs = {}
    for jobs in (1, 2):
        p = run("validate", "--jobs", jobs, "--examples", 4, big_file)
        assert p.returncode == 1
        assert ("(%d job" % jobs).encode() in p.stderr
        outs[jobs] = p.stdout
    assert outs[1] == outs[2]
    assert b"big.txt: 48,000 lines" in outs[1]
    js = [run("validate", "--json", "--jobs", j, "--max-errors", 50, big_file).stdout
          for j in (1, 2)]
    assert js[0] == js[1]
    f = json.loads(js[0])["files"][0]
    assert len(f["errors"]) == 50 and f["response"]["linesInvalid"] > 500
    # the line numbers are input line numbers: check them against the file
    lines = big_file.read_bytes().split(b"\n")
    for e in f["errors"]:
        assert lines[e["line"] - 1].decode().startswith(e["text"])


def test_every_code_gets_examples_beyond_the_error_cap(work: pathlib.Path) -> None:
    # 60,000 invalid lines of one code, and a rare code after the first 1,000
    # of them, with --max-errors 5: examples still come for both, identically
    # for one and two jobs.
    f = work / "errors.txt"
    f.write_bytes(b"9bad.key 1\n" * 3000 + b"a.b count,1\n" + b"9bad.key 1\n" * 57000
                  + b"x.y count,2\n")
    outs = [run("validate", "--jobs", j, "--max-errors", 5, "--examples", 2, f).stdout
            for j in (1, 2)]
    assert outs[0] == outs[1]
    text = outs[0].decode()
    assert "count_requires_delta (2 lines):\n  %s:3001: " % f in text
    assert "  %s:60002: " % f in text
    assert "invalid_metric_key (60,000 lines, first 2 shown)" in text


@pytest.fixture(scope="module")
def giant_line_file(tmp_path_factory: pytest.TempPathFactory) -> Tuple[pathlib.Path, bytes]:
    """A rare code after 1,500 errors, more errors than --max-errors, then a
    line of 9 MB (no segment can hold it) and the rare code again: the file
    and its one-process report."""
    f = tmp_path_factory.mktemp("giant") / "f.txt"
    f.write_bytes(b"x 1\n" * 1_500 + b"e.f count,4\n" + b"x 1\n" * 8_501 + b"k" * 9_000_000
                  + b"\n" + b"a.b count,3\n" + b"c.d 1\n" * 50_000)
    p = run("validate", "-q", f)
    assert p.returncode == 1, p.stderr
    return f, p.stdout


def test_every_code_gets_its_examples_after_a_giant_line(
        giant_line_file: Tuple[pathlib.Path, bytes]) -> None:
    f, out = giant_line_file
    text = out.decode()
    assert ("count_requires_delta (2 lines):\n"
            "  %s:1501: count payload requires delta=: '4'\n      e.f count,4\n"
            "  %s:10004: count payload requires delta=: '3'\n      a.b count,3\n" % (f, f)) in text
    assert ("line_too_long (1 line):\n  %s:10003: line too long: " % f) in text
    assert "metric_key_length (10,001 lines, first 3 shown):\n  %s:1: " % f in text


@pytest.mark.parametrize("how", [["-j", "2"], ["--max-errors", "0"], ["--max-errors", "1"],
                                 ["--dask", "local:2", "--blocksize", "1MiB"]],
                         ids=" ".join)
def test_the_text_report_is_the_same_whatever_the_jobs_and_max_errors(
        giant_line_file: Tuple[pathlib.Path, bytes], how: List[str]) -> None:
    """--jobs and --dask give the report of one process; --max-errors caps
    the list of --json only."""
    if "--dask" in how:
        pytest.importorskip("distributed")
    f, out = giant_line_file
    p = run("validate", "-q", *how, f, timeout=300)
    assert p.returncode == 1, p.stderr
    assert p.stdout == out


def test_validate_segments_hold_small_runs_of_lines_and_stream_long_ones() -> None:
    """_Segments: the input in order; a held segment is at most ``size``
    bytes or one line, a streamed one is one line; every segment but the
    last ends with a newline."""
    import random

    from dtproto.cli.validate import _Segments

    rng = random.Random(11)
    for _ in range(300):
        size = rng.choice([8, 16, 64])
        lines = [b"x" * rng.choice([0, 1, 5, size - 1, size, size + 1, 3 * size, 50 * size])
                 for _ in range(rng.randrange(0, 12))]
        data = b"\n".join(lines) + rng.choice([b"", b"\n"])
        pos = [0]

        def read() -> bytes:     # blocks of any size, as a pipe gives them
            chunk = data[pos[0]:pos[0] + rng.randrange(1, 4 * size)]
            pos[0] += len(chunk)
            return chunk

        got = []
        for seg in _Segments(read, size):
            if isinstance(seg, bytes):
                assert len(seg) <= size or seg.count(b"\n") <= 1 and b"\n" not in seg[:-1]
                got.append(seg)
            else:
                text = b"".join(seg)
                assert len(text) > size and b"\n" not in text[:-1]
                got.append(text)
        assert b"".join(got) == data
        assert all(g.endswith(b"\n") for g in got[:-1]) and all(got)


def test_missing_file_exits_2_and_other_files_still_run(work: pathlib.Path) -> None:
    p = run("validate", work / "nope.txt", SAMPLE)
    assert p.returncode == 2
    assert b"cannot open" in p.stderr and b"nope.txt" in p.stderr
    assert b"21 lines: 15 ok, 5 invalid" in p.stdout
    p = run("validate", "--json", work / "nope.txt")
    assert p.returncode == 2
    assert "io_error" in json.loads(p.stdout)["files"][0]


def test_unreadable_inputs_exit_2(work: pathlib.Path) -> None:
    p = run("validate", work)                               # a directory
    assert p.returncode == 2 and b"Is a directory" in p.stderr
    p = run("validate", SAMPLE / "x")                       # a file used as a directory
    assert p.returncode == 2 and b"Not a directory" in p.stderr
    bad = work / "broken.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    p = run("validate", bad)
    assert p.returncode == 2 and b"cannot read" in p.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_unreadable_file_exits_2(work: pathlib.Path) -> None:
    f = work / "secret.txt"
    f.write_bytes(b"a.b 1\n")
    f.chmod(0)
    p = run("validate", f)
    assert p.returncode == 2 and b"Permission denied" in p.stderr


def test_progress_bar_only_on_a_terminal() -> None:
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "dtproto", "validate", "-q", str(SAMPLE)],
                           stdout=subprocess.DEVNULL, stderr=slave, env=_env(), cwd=HERE,
                           timeout=60)
        os.close(slave)
        slave = -1
        tty = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            tty += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert p.returncode == 1
    assert b"\r" in tty and b"MB/s" in tty and b"%" in tty
    piped = run("validate", "-q", SAMPLE)
    assert piped.stderr == b""


# --------------------------------------------------------------------------- serve + send


class Server:
    def __init__(self, *args: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dtproto", "serve", "--port", "0", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=HERE)
        assert select.select([self.proc.stdout], [], [], 30)[0], "serve printed nothing"
        first = self.proc.stdout.readline().decode()        # type: ignore[union-attr]
        m = re.match(r"dtproto ingest endpoint: (http://127\.0\.0\.1:\d+/api/v2/metrics/ingest)$",
                     first.strip())
        assert m, first
        self.url = m.group(1)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return err.decode()


@pytest.fixture
def server(work: pathlib.Path) -> Any:
    srv = Server("--token", "s3cret", "--now", SAMPLE_NOW, "--store", work / "stored.txt")
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait()


def test_serve_and_send(server: Server, work: pathlib.Path) -> None:
    token = {"DT_API_TOKEN": "s3cret"}
    p = run("send", "--json", SAMPLE, "--url", server.url, env=token)
    assert p.returncode == 1                               # 5 lines rejected
    (f,) = json.loads(p.stdout)["files"]
    expected = dtproto.validate(SAMPLE.read_bytes())
    assert (f["lines_ok"], f["lines_invalid"]) == (15, 5)
    assert [i["line"] for i in f["invalid_lines"]] == [e.line for e in expected.errors]
    assert [w["line"] for w in f["warnings"]] == [13]
    assert f["requests"][0]["status"] == 400

    good = work / "good.txt"           # the sample without its invalid lines
    bad = {e.line for e in expected.errors}
    good.write_bytes(b"".join(line + b"\n" for n, line in
                              enumerate(SAMPLE.read_bytes().split(b"\n")[:-1], 1) if n not in bad))
    tf = work / "token"
    tf.write_text("s3cret\n")
    p = run("send", good, "--url", server.url, "--token-file", tf, "-v")
    assert p.returncode == 0, p.stdout
    assert b"15 ok, 0 invalid, 0 not delivered" in p.stdout
    assert b"request 1: lines 1-16, " in p.stdout and b": 202 after 1 attempt" in p.stdout
    p = run("send", SAMPLE, "--url", server.url, env={"DT_API_TOKEN": "wrong"})
    assert p.returncode == 1
    assert b"401" in p.stdout and b"not delivered" in p.stdout
    # the reason names the flags that give a token, not the Python parameter
    assert b"pass it with --token-file or DT_API_TOKEN (lines 1..21" in p.stdout, p.stdout
    assert b"token=" not in p.stdout
    p = run("send", SAMPLE, "--url", server.url, "--json", env={"DT_API_TOKEN": "wrong"})
    assert p.returncode == 1
    (u,) = json.loads(p.stdout)["files"][0]["undelivered"]
    assert "--token-file or DT_API_TOKEN" in u["reason"] and "token=" not in u["reason"]
    log = server.stop()
    assert "POST /api/v2/metrics/ingest 401" in log and "stopped after 4 requests" in log
    stored = (work / "stored.txt").read_bytes().splitlines()
    assert len(stored) == 15 + 15


def test_send_validate_applies_now(server: Server, work: pathlib.Path) -> None:
    # --validate checks lines before sending them; --now gives it the window
    f = work / "window.txt"
    f.write_bytes(b"a.b 1 1717243200000\n"          # SAMPLE_NOW: inside
                  b"a.b 2 1717232400000\n")         # three hours before: outside
    env = {"DT_API_TOKEN": "s3cret"}
    p = run("send", f, "--url", server.url, "--validate", "--now", SAMPLE_NOW, env=env)
    assert p.returncode == 1, p.stdout
    assert b"1 ok, 1 invalid, 0 not delivered" in p.stdout
    assert b"window.txt:2: timestamp" in p.stdout and b"(not sent)" in p.stdout, p.stdout
    server.stop()
    stored = (work / "stored.txt").read_bytes().splitlines()
    assert stored == [b"a.b 1 1717243200000"]


def test_send_messages_name_the_flags(server: Server, work: pathlib.Path) -> None:
    f = work / "long.txt"
    f.write_bytes(b"cpu.temperature,host=a gauge,55\n")
    env = {"DT_API_TOKEN": "s3cret"}
    p = run("send", f, "--url", "ftp://x", env=env)
    assert p.returncode == 2 and b"--url must be an http:// or https:// URL" in p.stderr, p.stderr
    p = run("send", f, env=dict(env, DT_URL="ftp://x"))        # no --url given: DT_URL is named
    assert p.returncode == 2 and b"dtproto: DT_URL must be an http://" in p.stderr, p.stderr
    for extra in ([], ["--dry-run"], ["--json"], ["--dry-run", "--json"]):
        p = run("send", f, "--url", server.url, "--max-bytes", "10", *extra, env=env)
        assert p.returncode == 1, (extra, p.stdout, p.stderr)
        assert b"> --max-bytes 10" in p.stdout, (extra, p.stdout)
        assert b"max_bytes" not in p.stdout + p.stderr, (extra, p.stdout)
    server.stop()


def test_the_cli_log_prints_warnings_and_ours_not_other_libraries_info() -> None:
    code = ("import logging, sys\n"
            "from dtproto.cli._common import _log_to_stderr\n"
            "_log_to_stderr()\n"
            "other = logging.getLogger('distributed.scheduler'); other.setLevel(logging.INFO)\n"
            "other.info('State start'); other.warning('a worker is slow')\n"
            "ours = logging.getLogger('dtproto.sender')\n"
            "ours.warning('request 1 (lines 1..2): retry'); ours.info('not at this level')\n"
            "logging.getLogger('dtproto.server').setLevel(logging.INFO)\n"
            "logging.getLogger('dtproto.server').info('POST 202')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(),
                       cwd=str(HERE), timeout=60)
    assert p.stderr.decode().splitlines() == [
        "dtproto: a worker is slow", "dtproto: request 1 (lines 1..2): retry",
        "dtproto: POST 202"], p.stderr


def test_send_says_how_many_warnings_it_did_not_show(server: Server, work: pathlib.Path) -> None:
    f = work / "warned.txt"
    f.write_bytes(b"".join(b"requests.total,n=%d count,delta=1\n" % i for i in range(3)))
    p = run("send", f, "--url", server.url, "--max-errors", "1", env={"DT_API_TOKEN": "s3cret"})
    assert p.returncode == 0, p.stdout
    assert p.stdout.count(b": warning: ") == 1, p.stdout
    assert b"  ... 2 more warnings (see --json)\n" in p.stdout, p.stdout
    server.stop()


def test_dry_run_lists_lines_it_cannot_send_up_to_max_errors(work: pathlib.Path) -> None:
    f = work / "long.txt"
    f.write_bytes(b"cpu.temperature,host=a gauge,55\n" * 5 + b"a.b 1\n")
    p = run("send", f, "--dry-run", "--max-bytes", "20", "--max-errors", "2")
    assert p.returncode == 1, p.stdout
    assert p.stdout.count(b": not sendable: ") == 2, p.stdout
    assert b"  ... 3 more lines not sendable (--max-errors N)\n" in p.stdout, p.stdout
    p = run("send", f, "--dry-run", "--max-bytes", "20", "--max-errors", "2", "--json")
    (doc,) = json.loads(p.stdout)["files"]
    assert [x["line"] for x in doc["rejected_by_client"]] == [1, 2]
    assert doc["rejected_by_client_total"] == 5


def test_dry_run_keeps_the_first_max_errors_warnings_and_counts_them_all(
        work: pathlib.Path) -> None:
    """--dry-run keeps warnings as it keeps errors (a file of warnings held
    every one of them in memory), across chunks, and still counts them all."""
    f = work / "warned.txt"
    f.write_bytes(b"".join(b"requests.total,n=%d count,delta=1\n" % i for i in range(500)))
    (doc,) = json.loads(run("send", f, "--dry-run", "--max-bytes", "1000", "--max-errors", "7",
                            "--json").stdout)["files"]
    assert len(doc["chunks"]) > 10
    assert doc["warnings_total"] == 500
    assert doc["response"]["linesOk"] == 500
    kept = doc["response"]["warnings"]["changedMetricKeys"]
    assert [w["line"] for w in kept] == list(range(1, 8)), kept
    p = run("send", f, "--dry-run", "--max-bytes", "1000", "--max-errors", "7")
    assert p.returncode == 0, p.stdout
    assert b"warnings: 493 more warnings not kept (--max-errors N)" in p.stdout, p.stdout


@pytest.mark.parametrize("tail", [b"c.d 2\n", b""])
def test_dry_run_counts_lines_it_cannot_send_as_such_never_as_blank(work: pathlib.Path,
                                                                   tail: bytes) -> None:
    """A line too long to send is a line of the file: not a blank line, and
    counted when it is the last one (no chunk comes after it)."""
    f = work / "edge.txt"
    f.write_bytes(b"a.b 1\nmy.m,d=" + b"0" * 300 + b" 1" + (b"\n" + tail if tail else b""))
    total = 3 if tail else 2
    p = run("send", f, "--dry-run", "--max-bytes", "100")
    assert p.returncode == 1, p.stdout
    assert ("edge.txt: %d lines: %d ok, 0 invalid, 1 not sendable, 0 blank lines"
            % (total, total - 1)).encode() in p.stdout, p.stdout
    (doc,) = json.loads(run("send", f, "--dry-run", "--max-bytes", "100", "--json").stdout)["files"]
    assert doc["lines_total"] == total and doc["rejected_by_client_total"] == 1
    assert doc["response"]["linesOk"] == total - 1


def test_a_servers_answer_quoted_in_a_reason_is_not_rewritten() -> None:
    from dtproto.cli.send import _undelivered_text

    body = 'HTTP 503: {"message":"upstream read_timeout=30s; url must be up"}'
    for reason in (body, body + " (gave up after 1 attempt)",
                   'HTTP 502 without a ValidationResponse: read_timeout=1',
                   'HTTP 200 with an unusable response (no linesOk): lower max_bytes'):
        assert _undelivered_text(reason) == reason
    # the sender's own words are the flags
    assert _undelivered_text("no response from h:1 within read_timeout=30s after the request "
                             "was sent") == ("no response from h:1 within --timeout 30s after "
                                             "the request was sent")


def test_blocksize_without_dask_is_refused_not_ignored() -> None:
    p = run("validate", "--blocksize", "8MiB", SAMPLE)
    assert p.returncode == 2 and p.stdout == b""
    assert b"--blocksize is the size of a --dask task: give --dask too" in p.stderr, p.stderr


def test_send_usage_errors(work: pathlib.Path) -> None:
    p = run("send", SAMPLE)                                       # no --url
    assert p.returncode == 2 and b"--url" in p.stderr
    p = run("send", work / "nope.txt", "--url", "http://127.0.0.1:9/api/v2/metrics/ingest")
    assert p.returncode == 2 and b"cannot open" in p.stderr
    p = run("send", SAMPLE, "--url", "http://127.0.0.1:9/x", "--token-file", work / "none")
    assert p.returncode == 2 and b"token file" in p.stderr
    p = run("send", SAMPLE, "--url", "ftp://example.invalid/", env={"DT_API_TOKEN": "t"})
    assert p.returncode == 2


def test_send_dry_run_shows_the_chunks_send_makes(server: Server) -> None:
    p = run("send", "--dry-run", "--max-bytes", 600, SAMPLE)
    assert p.returncode == 1
    out = p.stdout.decode()
    assert "dry run, nothing sent: 4 requests of at most 600 bytes" in out
    assert "chunk 1: lines 1-" in out and "invalid lines by reason:" in out
    dry = json.loads(run("send", "--dry-run", "--json", "--max-bytes", 600, SAMPLE).stdout)
    (f,) = dry["files"]
    assert sum(c["lines"] for c in f["chunks"]) == 21
    assert all(c["bytes"] <= 600 for c in f["chunks"])
    assert f["response"]["linesInvalid"] == 5
    sent = json.loads(run("send", "--json", "--max-bytes", 600, SAMPLE, "--url", server.url,
                          env={"DT_API_TOKEN": "s3cret"}).stdout)["files"][0]
    assert [(c["first_line"], c["lines"], c["bytes"]) for c in f["chunks"]] == \
        [(r["first_line"], r["lines"], r["bytes"]) for r in sent["requests"]]
    assert server.stop()


# --------------------------------------------------------------------------- bench


def test_bench() -> None:
    p = run("bench", "--lines", 2000, "--repeat", 1, "--no-peers")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "2,000 lines" in out and "python: " in out and "machine: " in out
    for impl in dtproto._impl.available_implementations():
        for op in ("decode", "validate", "encode"):
            assert re.search(r"dtproto %s +%s +[\d,]+ +[\d.]+\n" % (impl, op), out), (impl, op)


class _FakePeers:
    """Stand-ins for the peer libraries, recording what the adapters call."""

    calls: Dict[str, int] = {}

    @classmethod
    def peers(cls) -> Dict[str, Any]:
        calls = cls.calls

        class Factory:
            def create_float_gauge(self, key: str, v: float, dims: dict, ts: Any) -> str:
                return "%s %r" % (key, v)

            create_float_counter_delta = create_float_gauge

            def create_float_summary(self, key: str, *args: Any) -> str:
                return key

        class Serializer:
            def __init__(self, enrich_with_dynatrace_metadata: bool) -> None:
                assert enrich_with_dynatrace_metadata is False

            def serialize(self, m: str) -> str:
                calls["dmu"] = calls.get("dmu", 0) + 1
                return m

        class Kind:
            GAUGE, DELTA = "g", "d"

        class SdkMetric:
            def __init__(self, key: str, *args: Any) -> None:
                self.key = key

            def to_mint_line(self) -> str:
                calls["sdk"] = calls.get("sdk", 0) + 1
                return self.key

        class Buffer:
            def __init__(self, protocol_version: int = 1) -> None:
                self.rows: List[str] = []

            def row(self, key: str, **kw: Any) -> None:
                calls["questdb"] = calls.get("questdb", 0) + 1
                self.rows.append(key)

            def __bytes__(self) -> bytes:
                return "".join(r + "\n" for r in self.rows).encode()

        def parse_line(line: bytes) -> bytes:
            calls["lpp"] = calls.get("lpp", 0) + 1
            return line

        return {"dmu": (Factory, Serializer), "sdk": (SdkMetric, Kind, lambda *a: a),
                "lpp": parse_line, "questdb": (Buffer, None, lambda ns: ns)}


def test_bench_times_the_peers_through_the_shared_adapters(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """dtproto bench and bench/compare.py use one set of peer adapters (dtproto._peers)."""
    from dtproto import _peers, cli

    _FakePeers.calls.clear()
    monkeypatch.setattr(_peers, "load_peers", _FakePeers.peers)
    monkeypatch.setattr(_peers, "peer_version", lambda dist: "9.9")
    assert cli.main(["bench", "--lines", "300", "--repeat", "1", "--slow-lines", "100"]) == 0
    out = capsys.readouterr().out
    for label, op in (("dynatrace-metric-utils 9.9", "encode"), ("dt-extensions-sdk 9.9", "encode"),
                      ("questdb 9.9 (ILP)", "encode"), ("line-protocol-parser 9.9 (ILP)", "decode")):
        assert re.search(r"%s +%s +[\d,]+ +[\d.]+\n" % (re.escape(label), op), out), label
    assert _FakePeers.calls["dmu"] == 100                     # --slow-lines points only
    assert _FakePeers.calls["sdk"] == _FakePeers.calls["questdb"] == 300
    assert _FakePeers.calls["lpp"] == 300


def test_compare_script_has_no_peer_adapters_of_its_own() -> None:
    import ast

    root = pathlib.Path(__file__).resolve().parent.parent
    tree = ast.parse((root / "bench" / "compare.py").read_text(encoding="utf-8"))
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    from dtproto import _peers

    assert not defined & set(_peers.__all__)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "dtproto._peers" for a in n.names}
    assert {"load_peers", "dmu_encoder", "sdk_encoder", "questdb_encoder",
            "lpp_decoder"} <= imported


# --------------------------------------------------------------------------- structure


def test_one_module_per_command() -> None:
    """dtproto.cli is a package with a module per command; each command's
    handler and options live in that module."""
    import importlib

    from dtproto import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"validate", "send", "serve", "bench", "load", "stats"}
    for name, p in sub.choices.items():
        func = p.get_default("func")
        assert func.__module__ == "dtproto.cli.%s" % name, (name, func.__module__)
        assert importlib.import_module("dtproto.cli.%s" % name).add_parser
    assert cli.main is importlib.import_module("dtproto.__main__").main


def test_every_package_is_listed_for_the_wheel() -> None:
    """pyproject's [tool.setuptools] packages names every package of dtproto,
    so that a wheel (not only an editable install) carries dtproto.cli."""
    root = pathlib.Path(__file__).resolve().parent.parent
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r"^packages = \[(.*?)\]", text, re.M)
    assert m, "no packages list in pyproject.toml"
    listed = set(re.findall(r'"([\w.]+)"', m.group(1)))
    found = {".".join(p.parent.relative_to(root).parts)
             for p in (root / "dtproto").rglob("__init__.py")}
    assert found == listed


def test_validate_combines_its_segments_with_report_merge(
        monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture) -> None:
    """One way to combine per-block reports: the CLI's segments go through
    ValidationReport's merge (its in-place form, no tally of its own), and
    the result is the report of the whole file."""
    from dtproto import cli
    from dtproto.cli import validate as cli_validate
    from dtproto.report import ValidationReport

    assert not hasattr(cli_validate, "_Tally")
    merged: List[int] = []
    into: List[ValidationReport] = []
    original = ValidationReport._extend

    def spy(self: ValidationReport, other: ValidationReport, *args: Any, **kw: Any) -> Any:
        merged.append(other.lines_total)
        into.append(self)
        return original(self, other, *args, **kw)

    monkeypatch.setattr(ValidationReport, "_extend", spy)
    monkeypatch.setattr(cli_validate, "_BLOCK", 512)      # many small segments
    monkeypatch.setattr(cli_validate, "_SEGMENT", 1024)
    f = tmp_path / "x.txt"
    f.write_bytes(make_corpus(300, seed=3, invalid_ratio=0.1))
    assert cli.main(["validate", "-q", "--json", "--max-errors", "7", str(f)]) == 1
    assert len(merged) > 10 and sum(merged) == 300
    # one running report, extended in place: each kept error is copied once
    # (a new report per segment copied the kept ones again every time)
    assert all(r is into[0] for r in into)
    (doc,) = json.loads(capsys.readouterr().out)["files"]
    whole = dtproto.validate(f.read_bytes(), max_errors=7)
    assert doc["response"] == whole.to_response()
    assert [e["line"] for e in doc["errors"]] == [e.line for e in whole.errors]


def test_serve_sigterm_handler_takes_no_lock(capsys: Any) -> None:
    """``dtproto serve``'s SIGTERM handler only records the signal.

    A handler runs in the main thread between two bytecodes, possibly while
    that thread holds a lock.  The handler used to call
    ``threading.Event.set()`` while the loop sat in ``Event.wait()``: when
    the signal landed where ``wait`` held the event's lock, the handler
    waited for that lock forever and ``serve`` never stopped (seen as a
    30 s timeout of the serve tests on a loaded machine).  The handler is
    run here under a profiler that sees every call it makes, and ``_serve``
    must then stop by itself.
    """
    import argparse

    from dtproto.cli import serve as serve_cli

    made: List[str] = []

    class FakeServer:
        url = "http://127.0.0.1:1/api/v2/metrics/ingest"
        oneagent_url = "http://127.0.0.1:1/metrics/ingest"
        stats: Dict[str, int] = {}
        stopped = False

        def start(self) -> None:
            handler = signal.getsignal(signal.SIGTERM)

            def profile(frame: Any, event: str, arg: Any) -> None:
                if event == "c_call":
                    made.append(getattr(arg, "__qualname__", repr(arg)))
                elif event == "call":
                    made.append(frame.f_code.co_name)

            sys.setprofile(profile)
            try:
                handler(signal.SIGTERM, None)   # type: ignore[operator]
            finally:
                sys.setprofile(None)

        def requests_since(self, seen: int) -> Tuple[int, list, int]:
            return seen, [], 0

        def shutdown(self) -> None:
            self.stopped = True

    srv = FakeServer()
    args = argparse.Namespace(token=[], store=None, fault=[], quiet=True)
    previous = signal.getsignal(signal.SIGTERM)
    assert serve_cli._serve(args, srv) == 0
    assert srv.stopped and signal.getsignal(signal.SIGTERM) == previous
    assert made, "the profiler saw nothing: the test does not test"
    locking = [name for name in made if name.rsplit(".", 1)[-1] in
               ("acquire", "__enter__", "set", "wait", "notify", "notify_all")]
    assert not locking, made
    assert "stopped after 0 requests" in capsys.readouterr().err
