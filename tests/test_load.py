"""``dtproto load``: generated lines at a target rate, against a local endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

import pytest
from conftest import NEUTRAL_DIR  # noqa: E402

import dtproto
from dtproto.cli import load as L
from dtproto.cli import main
from dtproto.server import Fault, IngestServer

TOKEN = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.SECRETPARTOFTHETOKEN0123456789"
NOW = 1_750_000_000_000


def series_of(data: bytes):
    return [(m.key, m.dimensions) for m in dtproto.decode(data)]


# --------------------------------------------------------------------------- the lines


@pytest.mark.parametrize("series", [1, 7, 1000, 4000, 9001])
def test_lines_are_valid_and_carry_exactly_the_chosen_number_of_series(series):
    pool = L.line_pool(series, 1)
    blocks = L.LineBlocks(pool, series, now_ms=lambda: NOW)
    n = series * 2 + 3
    data = blocks.take(n)
    report = dtproto.validate(data, now_ms=NOW)
    assert report.lines_invalid == 0 and report.lines_ok == n
    keys = series_of(data)
    assert len(set(keys)) == series
    # Round-robin: a series repeats only after all the others.
    assert keys[:series] == keys[series:2 * series]
    assert len(set(keys[:series])) == series


def test_a_series_never_has_two_points_with_one_timestamp_in_a_block():
    pool = L.line_pool(50, 3)
    blocks = L.LineBlocks(pool, 50, now_ms=lambda: NOW)
    data = blocks.take(50 * 5 + 20)
    points = [((m.key, m.dimensions), m.timestamp) for m in dtproto.decode(data)]
    assert len(set(points)) == len(points)
    assert {t for _, t in points} == {NOW - k for k in range(6)}
    # Blocks continue where the last one stopped, through the whole pool and around.
    rest = blocks.take(len(pool))
    assert len(rest.splitlines()) == len(pool)
    assert dtproto.validate(rest, now_ms=NOW).lines_invalid == 0


def test_lines_have_the_corpus_mix():
    data = L.LineBlocks(L.line_pool(4000, 2), 4000, now_ms=lambda: NOW).take(20_000)
    kinds = [m.kind for m in dtproto.decode(data)]
    share = {k: kinds.count(k) / len(kinds) for k in set(kinds)}
    assert set(share) == {"gauge", "count", "summary"}
    assert 0.45 < share["gauge"] < 0.75 and 0.15 < share["count"] < 0.35
    assert 0.05 < share["summary"] < 0.25


def test_percentile_is_nearest_rank():
    assert L.percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert (L.percentile(values, 50), L.percentile(values, 90), L.percentile(values, 99),
            L.percentile(values, 100)) == (50.0, 90.0, 99.0, 100.0)
    assert L.percentile([3.0], 99) == 3.0


def test_request_size_is_rate_times_interval_within_max_bytes():
    pool = L.line_pool(100, 1)
    assert L.per_request_lines(1000, 1.0, 1_000_000, pool) == 1000
    assert L.per_request_lines(1000, 0.1, 1_000_000, pool) == 100
    big = L.per_request_lines(10_000_000, 1.0, 1_000_000, pool)
    data = L.LineBlocks(pool, 100, now_ms=lambda: NOW).take(big)
    assert 700_000 < len(data) <= 1_000_000
    assert L.per_request_lines(1, 0.1, 1_000_000, pool) == 1


# --------------------------------------------------------------------------- the schedule


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt


def test_blocks_leave_on_schedule_and_the_run_ends_after_the_duration():
    clock = FakeClock()
    stats = L.Stats(clock)
    src = L.PacedSource(L.LineBlocks(L.line_pool(10, 1), 10, lambda: NOW), rate=1000,
                        duration=2.0, per_request=250, stats=stats, clock=clock,
                        sleep=clock.sleep)
    times: List[float] = []
    while True:
        block = src.read(1 << 18)
        if not block:
            break
        times.append(round(clock.t - 100.0, 6))
        assert block.count(b"\n") == 250
    # A block of 250 lines at 1,000 lines/s is due every 0.25 s (when it is full).
    assert times == [0.25 * k for k in range(1, 9)]
    assert stats.generated == 2000 and stats.target == 2000


def test_a_generator_held_up_catches_up_then_stops_at_the_duration():
    clock = FakeClock()
    stats = L.Stats(clock)
    src = L.PacedSource(L.LineBlocks(L.line_pool(10, 1), 10, lambda: NOW), rate=1000,
                        duration=2.0, per_request=250, stats=stats, clock=clock,
                        sleep=clock.sleep)
    assert src.read()                    # at 0.25 s
    clock.t += 1.0                       # the sender was busy for a second
    caught_up = 0
    while clock.t - 100.0 < 1.26:
        src.read()                       # due blocks come at once, without sleeping
        caught_up += 1
        if caught_up == 4:
            break
    assert clock.t - 100.0 == pytest.approx(1.25)
    clock.t += 5.0                       # held up past the end: nothing more is generated
    assert src.read() == b""
    assert stats.generated == 5 * 250
    assert 2000 - stats.generated == 750


# --------------------------------------------------------------------------- the command


def run_load(capsys, *args) -> tuple:
    rc = main(["load", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_load_against_a_local_endpoint_reports_the_figures_as_json(capsys, monkeypatch):
    monkeypatch.setenv("DT_API_TOKEN", TOKEN)
    with IngestServer(tokens=TOKEN) as srv:
        rc, out, err = run_load(capsys, "--url", srv.url, "--rate", 20_000, "--series", 300,
                                "--duration", 1, "--interval", 0.1, "--json")
        stored = srv.accepted_lines
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["target"] == {"rate": 20_000, "series": 300, "duration": 1.0, "concurrency": 4,
                             "lines_per_request": 2000, "max_bytes": 1_000_000,
                             "interval": 0.1, "gzip": False}
    assert doc["lines_generated"] == doc["lines_sent"] == doc["lines_ok"] == 20_000
    assert len(stored) == 20_000 and doc["lines_behind"] == 0
    assert len({line.split(b" ")[0] for line in stored}) == 300
    assert doc["requests"] == 10 and doc["statuses"] == {"202": 10}
    assert doc["ok"] and doc["error"] is None
    assert 0.9 <= doc["elapsed_s"] < 3.0
    assert doc["lines_per_s"] == pytest.approx(20_000 / doc["elapsed_s"], rel=0.01)
    assert doc["mb_per_s"] == pytest.approx(doc["bytes_sent"] / doc["elapsed_s"] / 1e6, rel=0.01)
    lat = doc["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert doc["throttled_429"] == doc["retries"] == 0
    assert 1 <= doc["max_in_flight"] <= 4
    assert TOKEN not in out + err and "SECRETPART" not in out + err


def test_load_counts_429s_and_retries_and_latency_includes_them(capsys):
    faults = [Fault("429", requests={2, 5}, retry_after=0), Fault("503", requests={7})]
    with IngestServer(faults=faults) as srv:
        rc, out, err = run_load(capsys, "--url", srv.url, "--rate", 5000, "--series", 50,
                                "--duration", 1, "--interval", 0.1, "--json",
                                "--concurrency", 2)
        assert len(srv.accepted_lines) == 5000
    doc = json.loads(out)
    assert rc == 0 and doc["lines_ok"] == 5000 and doc["requests"] == 10
    assert doc["throttled_429"] == 2 and doc["retries"] == 3


def test_load_through_a_slow_endpoint_falls_behind_and_says_so(capsys):
    # 200 ms per request, one in flight, 10 requests a second wanted: about 5 go.
    with IngestServer(faults=[Fault("slow", rate=1.0, delay=0.2)]) as srv:
        rc, out, err = run_load(capsys, "--url", srv.url, "--rate", 10_000, "--series", 20,
                                "--duration", 1, "--interval", 0.1, "--concurrency", 1)
    assert rc == 0
    assert "lines behind the schedule" in out
    achieved = int(out.split("achieved: ")[1].split(" lines/s")[0].replace(",", ""))
    assert achieved < 8000
    p50 = float(out.split("latency: p50 ")[1].split(" ms")[0])
    assert p50 >= 190                     # each request took the endpoint's 200 ms


def test_load_human_report_and_live_status_line(capsys, monkeypatch):
    monkeypatch.setattr(L._Live, "__init__", _live_on)
    with IngestServer() as srv:
        rc, out, err = run_load(capsys, "--url", srv.url, "--rate", 4000, "--series", 10,
                                "--duration", 0.5, "--interval", 0.1)
    assert rc == 0
    assert out.startswith("load -> %s: 4,000 lines/s for 0.5 s, 10 series, 4 in flight, "
                          "400 lines a request\n" % srv.url)
    assert "  achieved: " in out and " MB/s over " in out and "(5 requests, 2,000 lines)" in out
    assert "  latency: p50 " in out and ", p99 " in out
    assert "  2,000 ok, 0 invalid, 0 not delivered; 0 429s, 0 retries" in out
    assert "\rload: " in err and "lines/s (target 4,000)" in err and "in flight" in err


def _live_on(self, stats, rate, enabled=None):
    """_Live as on a terminal."""
    self.enabled, self.stats, self.rate, self._last, self._width = True, stats, rate, 0.0, 0


def test_load_failure_is_reported_with_what_was_done(capsys, monkeypatch):
    monkeypatch.setenv("DT_API_TOKEN", "wrong")
    with IngestServer(tokens=TOKEN) as srv:
        rc, out, err = run_load(capsys, "--url", srv.url, "--rate", 1000, "--series", 5,
                                "--duration", 0.3, "--interval", 0.1, "--json")
    doc = json.loads(out)
    assert rc == 1 and not doc["ok"] and "401" in doc["error"]
    # Requests already in flight when the first 401 came back finish too.
    assert list(doc["statuses"]) == ["401"] and doc["lines_ok"] == 0
    assert "load stopped" in err and "wrong" not in out + err.replace("wrong URL", "")


def test_load_says_when_max_bytes_leaves_out_the_longer_lines(capsys, monkeypatch):
    monkeypatch.setenv("DT_API_TOKEN", TOKEN)
    with IngestServer(tokens=TOKEN) as srv:
        rc, out, err = run_load(capsys, "--url", srv.url, "--rate", 200, "--duration", 0.5,
                                "--max-bytes", 150, "--json")
        stored = srv.accepted_lines
    doc = json.loads(out)
    assert "--max-bytes 150: the generated lines longer than that" in err, err
    assert rc == 1 and doc["lines_invalid"] > 0 and doc["lines_ok"] == len(stored) > 0
    assert doc["lines_ok"] + doc["lines_invalid"] == doc["lines_generated"]   # none lost
    assert all(len(line) + 1 <= 150 for line in stored)


def test_load_usage_errors(capsys, monkeypatch):
    monkeypatch.delenv("DT_URL", raising=False)
    assert run_load(capsys, "--rate", 10)[0] == 2
    assert run_load(capsys, "--url", "http://127.0.0.1:9", "--rate", 10, "--series",
                    2_000_000)[0] == 2
    # a --max-bytes no generated line fits in: said, rather than every line "invalid"
    rc, out, err = run_load(capsys, "--url", "http://127.0.0.1:9", "--rate", 10,
                            "--max-bytes", 10)
    assert rc == 2 and out == ""
    assert "--max-bytes 10 is below the shortest generated line" in err, err
    with pytest.raises(SystemExit):
        main(["load", "--url", "http://127.0.0.1:9"])          # --rate is required
    with pytest.raises(SystemExit):
        main(["load", "--url", "http://127.0.0.1:9", "--rate", "0"])


def test_dtproto_load_is_a_command_of_the_console_script():
    env = dict(os.environ)
    env.pop("DT_URL", None)
    p = subprocess.run([sys.executable, "-m", "dtproto", "load", "--help"], capture_output=True, cwd=NEUTRAL_DIR,
                       env=env, timeout=60)
    assert p.returncode == 0
    assert b"--rate" in p.stdout and b"--series" in p.stdout and b"--duration" in p.stdout
    p = subprocess.run([sys.executable, "-m", "dtproto", "--help"], capture_output=True, env=env, cwd=NEUTRAL_DIR,
                       timeout=60)
    assert b"load" in p.stdout
