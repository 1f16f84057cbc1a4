"""dtproto.dask on a local cluster of 2 worker processes (1 thread each).

The property is the one ``dtproto validate --jobs`` rests on (tests/test_report.py):
cut a file at line boundaries, validate the ranges apart (here: on workers
that open the file themselves), merge the reports in order, and get exactly
the report of one process.  The block-boundary cases are spelled out too: a
line straddling the nominal block boundary, CRLF, blank lines, over-long
lines (over 50,000 characters, and over the streaming reader's byte cap), no
final newline, gzip, an empty file.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import subprocess
import sys
from collections import Counter
from typing import List

import pytest
from conftest import NEUTRAL_DIR  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dtproto
from dtproto import _constants as K

distributed = pytest.importorskip("distributed")

from dtproto import dask as dtdask  # noqa: E402 (after the skip)

NOW = 1717243200000
TOKEN = "dt0c01.DASKTEST"

# Lines of every kind a report counts (as in tests/test_report.py).
KINDS = [
    b"a.b 1",
    b"a.b,x=y 2 %d" % NOW,
    b"a.b count,delta=1",          # warning: changed to a.b.count
    b"x.count 5",                  # warning: changed to x.count.gauge
    b"a.b 1 1717243200",           # warning: a timestamp in seconds
    b"1ab 1",                      # invalid metric key
    b"ab 1",                       # key too short
    b"a.b count,1",                # count without delta=
    b"#a.b gauge dt.meta.unit=s",
    b"",
    b"  \t",
    b"\x0b",                       # not blank: invalid
    b"a.b 1\r",                    # CRLF
]


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:
        with distributed.Client(c) as cl:
            yield cl


def _same(got: dtproto.ValidationReport, want: dtproto.ValidationReport) -> None:
    assert got == want
    assert got.lines_total == want.lines_total
    assert got.errors == want.errors          # line, column, code, message, text
    assert got.warnings == want.warnings
    assert got.to_response() == want.to_response()


def _boundary_files(d: pathlib.Path) -> List[pathlib.Path]:
    body = b"".join(KINDS[i % len(KINDS)] + (b"\r\n" if i % 5 == 0 else b"\n")
                    for i in range(3000))
    files = {
        "mixed.txt": body,
        "straddle.txt": b"a.b 1\n" * 9 + b"straddles.the.block 1 " + b"x" * 60 + b"\na.b 2\n",
        # A 60,000-character line (invalid: over 50,000) across block
        # boundaries, and no final newline.
        "long.txt": b"a.b 1\n" * 20 + b"long.line " + b"y" * 60_000 + b"\n" + b"a.b 3\n" * 20
                    + b"1bad 1",
        # Over the streaming reader's byte cap: cut short, one error.
        "huge.txt": b"a.b 1\n" + b"huge " + b"z" * (K.MAX_LINE_BYTES + 10) + b"\n\na.b 2\n",
        "blank.txt": b"\n\n  \n\r\n\t\n",
        "crlf.txt": b"a.b 1\r\n1bad 2\r\na.b count,delta=1\r\n" * 200,
        "nofinal.txt": b"a.b 1\n" * 50 + b"a.b 2",
        "empty.txt": b"",
    }
    out = []
    for name, data in files.items():
        p = d / name
        p.write_bytes(data)
        out.append(p)
    gz = d / "mixed.txt.gz"
    gz.write_bytes(gzip.compress(body))
    out.append(gz)
    return out


@pytest.mark.parametrize("blocksize", [64, 1000, "64 MiB"])
def test_reports_equal_one_process(client, tmp_path, blocksize):
    files = _boundary_files(tmp_path)
    got = dtdask.validate_files(files, client=client, blocksize=blocksize, now_ms=NOW)
    assert list(got) == [str(p) for p in files]
    assert got[files[0]] is got[str(files[0])] and files[0] in got
    for p in files:
        want = dtproto.validate(pathlib.Path(p), now_ms=NOW)
        if not p.name.endswith(".gz"):
            with open(p, "rb") as f:
                assert dtproto.validate(f, now_ms=NOW) == want
        _same(got[str(p)], want)
    assert got[str(tmp_path / "long.txt")].error_counts[dtproto.ErrorCode.LINE_TOO_LONG] == 1
    assert got[str(tmp_path / "huge.txt")].error_counts[dtproto.ErrorCode.LINE_TOO_LONG] == 1


def test_caps_and_no_window(client, tmp_path):
    files = _boundary_files(tmp_path)[:1]
    for caps in ({"max_errors": 3, "max_warnings": 2}, {"max_errors": None,
                                                        "max_warnings": None}):
        got = dtdask.validate_files(files, client=client, blocksize=500, **caps)
        _same(got[str(files[0])], dtproto.validate(files[0], **caps))


@pytest.mark.hypothesis
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.sampled_from(KINDS) | st.binary(min_size=0, max_size=30).map(
           lambda b: b.replace(b"\n", b"")), max_size=60),
       blocksize=st.integers(1, 120), final_newline=st.booleans(), gz=st.booleans())
def test_property_ranges_on_workers_equal_the_whole(client, tmp_path_factory, lines, blocksize,
                                                    final_newline, gz):
    """The --jobs property (tests/test_report.py), with the ranges validated
    on the workers from the file itself."""
    body = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    # A file that starts with the gzip magic is read as gzip, as dtproto.validate(Path) does.
    assume(gz or not body.startswith(b"\x1f\x8b"))
    path = tmp_path_factory.mktemp("dask") / "body.txt"
    path.write_bytes(gzip.compress(body) if gz else body)
    got = dtdask.validate_files(str(path), client=client, blocksize=blocksize, now_ms=NOW,
                                max_errors=4, max_warnings=2)[str(path)]
    _same(got, dtproto.validate(body, now_ms=NOW, max_errors=4, max_warnings=2))


def test_blocks_come_from_the_jobs_splitter(tmp_path):
    from dtproto._ranges import block_ranges, line_ranges

    f = tmp_path / "x.txt"
    f.write_bytes(b"a.b 1\n" * 100)                  # 600 bytes
    assert block_ranges(f, 200) == line_ranges(f, 3)
    assert block_ranges(f, 10_000) == [(0, 600)]
    assert block_ranges(f, 1) == line_ranges(f, 600)
    f.write_bytes(b"")
    assert block_ranges(f, 64) == [(0, 0)]
    with pytest.raises(ValueError):
        block_ranges(f, 0)


def test_default_client_and_a_clear_error_without_one(client, tmp_path, monkeypatch):
    f = tmp_path / "x.txt"
    f.write_bytes(b"a.b 1\n1bad 2\n")
    assert distributed.default_client() is client
    assert dtdask.validate_files([f])[str(f)] == dtproto.validate(f)

    def none() -> None:
        raise ValueError("No clients found")

    monkeypatch.setattr(distributed, "default_client", none)
    with pytest.raises(ValueError, match=r"no Dask client: pass client=.*distributed\.Client"):
        dtdask.validate_files([f])
    with pytest.raises(ValueError, match="no Dask client"):
        dtdask.send_files([f], "http://127.0.0.1:9/api/v2/metrics/ingest", TOKEN)


def test_missing_or_damaged_file_raises(client, tmp_path):
    with pytest.raises(FileNotFoundError):
        dtdask.validate_files([tmp_path / "nope.txt"], client=client)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"a.b 1\n" * 1000)[:-20])      # truncated
    with pytest.raises((OSError, EOFError)):
        dtproto.validate(bad)
    with pytest.raises((OSError, EOFError)):
        dtdask.validate_files([bad], client=client)


def test_missing_dask_says_how_to_install_and_the_core_does_not_need_it():
    code = ("import sys; sys.modules['distributed'] = None\n"
            "import dtproto, dtproto.cli\n"
            "assert 'dask' not in sys.modules\n"
            "try:\n    import dtproto.dask\nexcept ImportError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=NEUTRAL_DIR)
    assert p.returncode == 0, p.stderr
    assert "pip install dtproto[dask]" in p.stdout


# --------------------------------------------------------------------------- sending


def _valid_lines(path: pathlib.Path) -> Counter:
    """What a server stores of a file: its valid lines (CR removed), counted."""
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    report = dtproto.validate(data, now_ms=NOW, max_errors=None)
    bad = {e.line for e in report.errors}
    out: Counter = Counter()
    for i, line in enumerate(data.split(b"\n"), 1):
        line = line[:-1] if line.endswith(b"\r") else line
        if i not in bad and line.strip(b" \t"):
            out[line] += 1
    return out


@pytest.mark.parametrize("concurrency", [1, 3])
def test_send_stores_every_valid_line_once(client, tmp_path, concurrency):
    from dtproto.server import IngestServer

    files = [p for p in _boundary_files(tmp_path) if p.name != "huge.txt"]
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW) as srv:
        results = dtdask.send_files(files, srv.url, TOKEN, client=client, blocksize=700,
                                    max_bytes=4000, concurrency=concurrency)
        stored = Counter(srv.accepted_lines)
    want: Counter = Counter()
    for p in files:
        want += _valid_lines(p)
        r = results[str(p)]
        report = dtproto.validate(p, now_ms=NOW, max_errors=None)
        assert (r.lines_ok, r.lines_invalid) == (report.lines_ok, report.lines_invalid), p
        assert r.undelivered == [] and r.stopped_at is None and r.resent == []
        # File line numbers: the server's listed errors point at the file's lines.
        listed = {e.line: e.message for e in report.errors}
        for i in r.invalid_lines:
            assert i.line in listed, (p, i)
        first_lines = [q.first_line for q in r.requests]
        assert first_lines == sorted(first_lines)
    assert stored == want
    assert results[str(tmp_path / "long.txt")].lines_invalid == 2    # the long line, 1bad


def test_send_rejects_bad_options_before_sending(client, tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"a.b 1\n")
    with pytest.raises(dtproto.ConfigurationError):
        dtdask.send_files([f], "ftp://example.com/x", TOKEN, client=client)


def test_send_failure_is_accounted_per_line(client, tmp_path):
    """A range whose send fails for good: the failed chunk and the rest of that
    range are undelivered; other ranges are still sent (they run at once)."""
    from dtproto.server import IngestServer

    f = tmp_path / "x.txt"
    f.write_bytes(b"".join(b"a.b,i=%d 1\n" % i for i in range(400)))
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, faults=["503:requests=3"], now_ms=NOW) as srv:
        r = dtdask.send_files([f], srv.url, TOKEN, client=client, blocksize=4000,
                              max_bytes=500, retries=0)[str(f)]
        stored = len(srv.accepted_lines)
    assert r.lines_ok == stored
    assert r.lines_ok + r.lines_not_delivered == 400
    assert r.undelivered and r.stopped_at is None
    assert any(u.reason.startswith("not sent: ") for u in r.undelivered) or \
        len(r.undelivered) == 1



def _damaged_gzip(tmp_path: pathlib.Path, n: int = 200_000) -> pathlib.Path:
    bad = tmp_path / "damaged.gz"
    gz = gzip.compress(b"".join(b"a.b,i=%d 1\n" % i for i in range(n)))
    bad.write_bytes(gz[: len(gz) * 2 // 3])
    return bad


@pytest.mark.parametrize("faults", [[], ["400:requests=1"]], ids=["no fault", "400 first"])
def test_send_a_damaged_gzip_accounts_for_every_line_read(client, tmp_path, faults):
    """Found by a red-team pass: the worker re-raised the read error inside
    its handler, a cause chain that looped back, which Dask could not pickle:
    a bare Exception came back, and the other file's result was lost.  Then
    by a review: with a chunk failed first, the read error met while reading
    past it escaped raw, and one met by the send lost stopped_at."""
    from dtproto.server import IngestServer

    bad = _damaged_gzip(tmp_path)
    good = tmp_path / "good.txt"
    good.write_bytes(b"c.d 1\n" * 50)
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW, faults=faults) as srv:
        results = dtdask.send_files([bad, good], srv.url, TOKEN, client=client,
                                    max_bytes=100_000, retries=0)
        stored = [int(line[6:line.index(b" ")]) + 1 for line in srv.accepted_lines
                  if line.startswith(b"a.b,")]
    r = results[str(bad)]
    assert r.input_error and "EOFError" in r.input_error and r.stopped_at is not None
    assert results[str(good)].lines_ok == srv.accepted_lines.count(b"c.d 1")
    assert results[str(good)].lines_ok + results[str(good)].lines_not_delivered == 50
    # every line before stopped_at exactly once: stored, or in an undelivered range
    undelivered = [n for u in r.undelivered for n in range(u.first_line, u.last_line + 1)]
    assert sorted(stored + undelivered) == list(range(1, r.stopped_at))
    assert r.lines_ok == len(stored), (r.stopped_at, r.undelivered)
    assert stored or faults     # (the 400 may hit this file's first request)
    assert sum(u.lines for u in r.undelivered) == len(undelivered)


@pytest.mark.parametrize("n", [30_000, 200_000])
def test_send_a_damaged_gzip_after_a_failed_chunk_accounts_for_every_line(client, tmp_path, n):
    """From a review: with the first chunk refused, a read error met by the
    send lost stopped_at (30,000 lines: it fails in the first segment), and
    one met reading past the failure escaped as a bare EOFError (200,000)."""
    from dtproto.server import IngestServer

    bad = _damaged_gzip(tmp_path, n)
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW,
                      faults=["400:requests=1"]) as srv:
        r = dtdask.send_files([bad], srv.url, TOKEN, client=client, max_bytes=100_000,
                              retries=0)[str(bad)]
        stored = [int(line[6:line.index(b" ")]) + 1 for line in srv.accepted_lines]
    assert r.input_error and r.stopped_at is not None
    undelivered = [k for u in r.undelivered for k in range(u.first_line, u.last_line + 1)]
    assert r.undelivered[0].status == 400
    assert sorted(stored + undelivered) == list(range(1, r.stopped_at))
    assert r.lines_ok == len(stored)


def test_cli_send_dask_a_damaged_gzip_is_an_io_error_with_its_report(tmp_path):
    from dtproto.server import IngestServer

    bad = _damaged_gzip(tmp_path)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW) as srv:
        p = _run("send", "--url", srv.url, "--token-file", token, "--dask", "local:1", bad)
        stored = len(srv.accepted_lines)
    assert p.returncode == 2, p.stderr
    assert b"Traceback" not in p.stderr and b"cannot read " in p.stderr, p.stderr
    assert b"%d ok" % stored in p.stdout.replace(b",", b""), p.stdout


def _send_ledgers(dask_scheduler) -> set:
    """Run on the scheduler: the send ledgers it holds (task metadata not cleared)."""
    return {k for k, v in dask_scheduler.task_metadata.items()
            if str(k).startswith("dtproto-send-") and v is not None}


def test_send_clears_its_ledgers(client, tmp_path):
    """The progress records of a send (scheduler task metadata, pickled
    results) are dropped when send_files returns; they used to stay on the
    scheduler for good (the name to clear was overwritten by a loop variable)."""
    from dtproto.server import IngestServer

    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for f in files:
        f.write_bytes(b"a.b,host=h 1\n" * 500)
    before = client.run_on_scheduler(_send_ledgers)
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW) as srv:
        results = dtdask.send_files(files, srv.url, TOKEN, client=client, blocksize=2000,
                                    max_bytes=1000)
    assert [results[f].lines_ok for f in files] == [500, 500]
    assert client.run_on_scheduler(_send_ledgers) <= before


def test_a_second_run_skips_what_the_first_delivered(client, tmp_path):
    """What Dask does when a worker dies: the task runs again elsewhere.  The
    ledger (scheduler metadata) says which segments were delivered; only the
    segment in progress is sent again, and ``resent`` names its lines."""
    import pickle

    from dtproto._ranges import Segments
    from dtproto.server import IngestServer

    f = tmp_path / "x.txt"
    f.write_bytes(b"".join(b"a.b,i=%d 1\n" % i for i in range(250_000)))
    data = f.read_bytes()
    lines = data.split(b"\n")[:-1]
    with open(f, "rb") as src:                 # the segments the task makes
        segs = Segments(src.read, lambda: None, dtdask._READ)
        bounds = []
        while not segs.eof:
            first = segs.newlines + 1
            for _ in segs.segment(800):
                pass
            bounds.append((first, segs.newlines))
    assert len(bounds) >= 3
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW) as srv:
        # The first run delivered segment 0 and died in segment 1.
        key = "dtproto-send-test%s-0-0" % os.getpid()
        with dtproto.Sender(srv.url, TOKEN) as first:
            done = first.send(b"\n".join(lines[:bounds[0][1]]) + b"\n")
        srv.accepted_lines.clear()
        state = {"done": 1, "result": done, "resent": [], "runs": 1}
        client.set_metadata([key.rsplit("-", 2)[0], key], pickle.dumps(state))
        out = client.submit(dtdask._send_range, str(f), 0, len(data), False, srv.url, TOKEN,
                            {}, 800, key, key=key, pure=False).result()
        stored = srv.accepted_lines
    r = out["result"]
    assert out["lines"] == 250_000
    assert r.lines_ok == 250_000 and not r.undelivered
    assert Counter(stored) == Counter(lines[bounds[0][1]:])  # segment 0 was not sent again
    assert out["resent"] == [bounds[1]]                   # segment 1: sent again


# --------------------------------------------------------------------------- command line


def _run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dtproto", *map(str, args)], cwd=NEUTRAL_DIR,
                          capture_output=True, timeout=300, **kw)


def test_cli_validate_dask_prints_what_one_process_prints(client, tmp_path):
    files = _boundary_files(tmp_path)
    address = client.scheduler.address
    for extra in ([], ["--json", "--max-errors", "5"], ["--examples", "1", "--now", NOW]):
        one = _run("validate", *extra, *files)
        on = _run("validate", "--dask", address, "--blocksize", 500, *extra, *files)
        assert one.returncode == on.returncode == 1
        assert on.stdout == one.stdout, on.stderr
    ok = tmp_path / "ok.txt"
    ok.write_bytes(b"a.b 1\n" * 10)
    p = _run("validate", "--dask", address, ok)
    assert p.returncode == 0 and p.stdout == _run("validate", ok).stdout
    p = _run("validate", "--dask", address, tmp_path / "nope.txt", ok)
    assert p.returncode == 2 and b"cannot open" in p.stderr


def test_cli_validate_dask_bad_address(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"a.b 1\n")
    p = _run("validate", "--dask", "local:0", f)
    assert p.returncode == 2 and b"local:N" in p.stderr


def test_cli_send_dask_local_cluster(tmp_path):
    from dtproto.server import IngestServer

    files = [p for p in _boundary_files(tmp_path) if p.name in ("mixed.txt", "long.txt")]
    token = tmp_path / "token"
    token.write_text(TOKEN)
    outs = []
    with IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW) as srv:
        for extra in ([], ["--dask", "local:2"]):
            p = _run("send", "--url", srv.url, "--token-file", token, *extra, *files)
            outs.append((p.returncode, p.stdout.replace(srv.url.encode(), b"URL")))
            assert p.returncode == 1, p.stderr
        stored = Counter(srv.accepted_lines)
    assert outs[0] == outs[1]
    want: Counter = Counter()
    for p in files:
        want += _valid_lines(p)
    assert stored == Counter({k: 2 * n for k, n in want.items()})


def test_a_worker_killed_while_sending(tmp_path):
    """A worker dies mid-send (os._exit): Dask runs the task again on the other
    worker.  Every valid line is stored, and only lines inside ``resent`` can be
    stored twice; the counts of the result are exact."""
    import threading
    import time

    from dtproto.server import Fault, IngestServer

    f = tmp_path / "x.txt"
    f.write_bytes(b"".join(b"a.b,i=%d 1\n" % i for i in range(220_000)))   # ~2.6 MB
    lines = f.read_bytes().split(b"\n")[:-1]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as cl, \
            IngestServer(tokens={TOKEN: ["metrics.ingest"]}, now_ms=NOW,
                         faults=[Fault("slow", rate=1.0, delay=0.05)]) as srv:
        out = {}
        run = threading.Thread(target=lambda: out.update(send_files=dtdask.send_files(
            [f], srv.url, TOKEN, client=cl, max_bytes=60_000, concurrency=1)))
        run.start()
        deadline = time.monotonic() + 60
        while srv.stats["requests"] < 25 and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = [w for w, keys in cl.processing().items() if any("send" in str(k) for k in keys)]
        assert busy, "the send task is not running"
        import signal

        pid = cl.run(os.getpid, workers=busy[:1])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        run.join(120)
        assert not run.is_alive()
        stored = Counter(srv.accepted_lines)
    r = out["send_files"][str(f)]
    assert r.lines_ok == 220_000 and r.lines_invalid == 0 and not r.undelivered
    assert r.resent, "the task ran once only"
    inside = set()
    for a, b in r.resent:
        inside.update(range(a, b + 1))
    for n, line in enumerate(lines, 1):
        assert stored[line] >= 1, n
        assert stored[line] == 1 or n in inside, n
    assert len(inside) < 220_000 // 2        # only the segment in progress was sent again
