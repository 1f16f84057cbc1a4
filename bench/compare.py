#!/usr/bin/env python3
"""dtproto next to its peers: one process, one corpus, GC on, best of N.

Usage (from the repository root)::

    v/bin/python bench/compare.py                      # 1,000,000 lines, every implementation
    v/bin/python bench/compare.py --only python --skip-1gb
    v/bin/python bench/compare.py --lines 200000 --repeat 3 --markdown perf.md

Every row names the requirement it checks ("pure Python: ...", "Cython: ...",
"memory: ...") and says PASS or FAIL; "info" rows only inform.  Peers are optional: one that is not installed prints "not installed"
and its rows are skipped.  Install them with ``pip install .[bench]``.

How it measures:

* The corpus is ``bench/corpus.py`` (seeded; see there for its shape),
  generated once before any timing; every contender works on the same data:
  the same bytes, the same records, or the same points in InfluxDB form.
* Each contender runs ``--repeat`` times (fewer when a run is slow, see
  ``--budget``); the fastest run counts.  ``gc.collect()`` runs before each
  run, outside the timed region; the collector stays enabled while timing.
* Ratios are lines/s against lines/s (the same number of data points), and
  bytes.count is compared over the same buffer.
* dynatrace-metric-utils needs ~200 us per line; it runs on the first
  ``--slow-lines`` (default 100,000) points of the same corpus, and the table
  says so.
* Peers get the benefit of the doubt: their timestamp objects
  (``datetime`` for dt-extensions-sdk, ``TimestampNanos`` for questdb) are
  built before the timed region, while dtproto's encoders take plain ints.
* Memory: ``validate`` and ``iter_decode`` read a generated file of
  ``--file-bytes`` (default 1 GiB) in a fresh subprocess, which reports its
  peak RSS (``VmHWM`` from ``/proc/self/status``, else ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
try:  # an installed dtproto wins; otherwise the checkout this script lives in
    import dtproto  # noqa: F401
except ImportError:
    sys.path.insert(1, os.path.dirname(_HERE))

import corpus as _corpus  # noqa: E402
from corpus import cpu_model, encoder_loop  # noqa: E402

from dtproto._peers import (PEERS, dmu_encoder, load_peers, lpp_decoder,  # noqa: E402
                            peer_version, questdb_encoder, sdk_encoder)

perf_counter = time.perf_counter


# ---------------------------------------------------------------------------
# Reference parsers written the way users write them
# ---------------------------------------------------------------------------

def naive_split_parse(data: bytes) -> list:
    """The ten-line parser: split, split, float().  Validates nothing, knows no escapes.

    It only survives what it does not understand: a quoted value holding a
    space or a comma gives a wrong record, never an exception (the payload and
    the timestamp, 13 digits of milliseconds, are taken from the right).
    """
    out = []
    for line in data.decode("utf-8").split("\n"):
        if not line:
            continue
        parts = line.split(" ")
        ts = None
        if len(parts) > 2 and len(parts[-1]) > 10 and parts[-1].isdigit():
            ts = int(parts.pop())
        payload = parts.pop()
        key, *dims = " ".join(parts).split(",")
        value = float(payload.rpartition("=")[2].rpartition(",")[2])
        out.append((key, dict(d.partition("=")[::2] for d in dims), value, ts))
    return out


_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_KEY = r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*"
_DKEY = r"[a-z_][a-z0-9_:-]*(?:\.[a-z_][a-z0-9_:-]*)*"
_DVAL = (r'"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"'
         r'|(?:[^ ,="\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*')
_LINE_RE = re.compile(
    rf"({_KEY})((?:,{_DKEY}=(?:{_DVAL}))*) "
    rf"(?:gauge,min=({_NUM}),max=({_NUM}),sum=({_NUM}),count=([0-9]{{1,19}})"
    rf"|count,delta=({_NUM})"
    rf"|(?:gauge,)?({_NUM}))"
    rf"(?: ([0-9]{{1,19}}))?\r?"
)
_DIM_RE = re.compile(rf",({_DKEY})=({_DVAL})")
_ESC_RE = re.compile(r"\\(.)")
_UNESCAPE = {'"': '"', "\\": "\\", ",": ",", "=": "=", " ": " "}
_MAX_I64 = 2 ** 63 - 1


def _unescape(m: "re.Match[str]") -> str:
    c = m.group(1)
    return _UNESCAPE.get(c, m.group(0))


def _finite(t: str) -> float:
    v = float(t)
    if math.isinf(v):
        raise ValueError("non-finite number %r" % t)
    return v


def regex_parse(data: bytes) -> list:
    """A validating parser built the usual way: one regex per line, a findall for
    the dimensions, then the limits and summary checks of the protocol."""
    out = []
    match = _LINE_RE.fullmatch
    findall = _DIM_RE.findall
    for lineno, line in enumerate(data.decode("utf-8").split("\n"), 1):
        if not line:
            continue
        m = match(line)
        if m is None or len(line) > 50_000:
            raise ValueError("line %d: invalid" % lineno)
        key, dimtext, mn, mx, sm, cnt, delta, gauge, ts = m.groups()
        if not 3 <= len(key) <= 255 or key.startswith("dt."):
            raise ValueError("line %d: invalid metric key" % lineno)
        dims = []
        if dimtext:
            for dk, dv in findall(dimtext):
                if dv[:1] == '"':
                    dv = dv[1:-1]
                if "\\" in dv:
                    dv = _ESC_RE.sub(_unescape, dv)
                if len(dk) > 100 or len(dv) > 255:
                    raise ValueError("line %d: dimension too long" % lineno)
                dims.append((dk, dv))
            if len(dims) > 50:
                raise ValueError("line %d: too many dimensions" % lineno)
        t = None
        if ts is not None:
            t = int(ts)
            if t > _MAX_I64:
                raise ValueError("line %d: invalid timestamp" % lineno)
        if gauge is not None:
            out.append((key, tuple(dims), "gauge", _finite(gauge), None, None, None, None, t))
        elif delta is not None:
            out.append((key, tuple(dims), "count", _finite(delta), None, None, None, None, t))
        else:
            a, b, s, c = _finite(mn), _finite(mx), _finite(sm), int(cnt)
            if c > _MAX_I64 or a > b:
                raise ValueError("line %d: invalid summary" % lineno)
            if c == 0:
                if a or b or s:
                    raise ValueError("line %d: count 0 with non-zero fields" % lineno)
            else:
                avg = s / c
                if a - avg > 1e-6 or avg - b > 1e-6:
                    raise ValueError("line %d: inconsistent summary" % lineno)
            out.append((key, tuple(dims), "summary", None, a, b, s, c, t))
    return out


# ---------------------------------------------------------------------------
# Peers (optional): the adapters live in dtproto._peers, shared with 'dtproto bench'
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

class Result:
    def __init__(self, name: str, lines: int, nbytes: int, seconds: float, runs: int,
                 note: str = "") -> None:
        self.name = name
        self.lines = lines
        self.nbytes = nbytes
        self.seconds = seconds
        self.runs = runs
        self.note = note

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


def measure(name: str, fn: Callable[[], Any], lines: int, nbytes: Optional[int],
            repeat: int, budget: float, check: Optional[Callable[[Any], None]] = None,
            note: str = "") -> Result:
    """Best of ``repeat`` runs (stopping early once ``budget`` seconds are spent)."""
    best = float("inf")
    runs = 0
    spent = 0.0
    while runs < repeat:
        gc.collect()
        t0 = perf_counter()
        out = fn()
        dt = perf_counter() - t0
        runs += 1
        spent += dt
        best = min(best, dt)
        if runs == 1:
            if check is not None:
                check(out)
            if nbytes is None:
                nbytes = len(out)
        del out
        if spent >= budget:
            break
    r = Result(name, lines, nbytes or 0, best, runs, note)
    print("  %-48s %12s lines/s %9.1f MB/s  (best of %d: %.3f s)"
          % (name, "{:,.0f}".format(r.lines_per_s), r.mb_per_s, runs, best), flush=True)
    return r


class Row:
    def __init__(self, req: str, ours: Optional[Result], peer: Optional[Result], need: float,
                 text: str = "", passed: Optional[bool] = None, value: str = "") -> None:
        self.req = req
        self.ours = ours
        self.peer = peer
        self.need = need
        self.text = text        # for memory rows
        self.value = value
        self._passed = passed

    @property
    def ratio(self) -> Optional[float]:
        if self.ours is None or self.peer is None:
            return None
        return self.ours.lines_per_s / self.peer.lines_per_s

    @property
    def passed(self) -> Optional[bool]:
        if self._passed is not None:
            return self._passed
        if self.need <= 0 or self.ratio is None:
            return None
        return self.ratio >= self.need


def _fmt_rate(r: Optional[Result]) -> Tuple[str, str, str]:
    if r is None:
        return ("", "", "")
    name = r.name + (" " + r.note if r.note else "")
    return (name, "{:,.0f}".format(r.lines_per_s), "%.1f" % r.mb_per_s)


def render(rows: List[Row], header: List[str]) -> str:
    out = list(header)
    out.append("")
    out.append("| requirement | dtproto | lines/s | MB/s | compared with | lines/s | MB/s "
               "| ratio | needed | result |")
    out.append("|---|---|--:|--:|---|--:|--:|--:|--:|---|")
    for row in rows:
        if row.text:
            verdict = "PASS" if row.passed else "FAIL"
            a = _fmt_rate(row.ours)
            out.append("| %s | %s | %s | %s | peak RSS | | | %s | < 100 MB | %s |"
                       % (row.req, row.text, a[1], a[2], row.value, verdict))
            continue
        a = _fmt_rate(row.ours)
        b = _fmt_rate(row.peer)
        ratio = row.ratio
        verdict = {True: "PASS", False: "FAIL", None: "info"}[row.passed]
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row.req, a[0], a[1], a[2], b[0], b[1], b[2],
            "" if ratio is None else "%.2f×" % ratio,
            "≥ %g×" % row.need if row.need > 0 else "", verdict))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# 1 GB memory runs
# ---------------------------------------------------------------------------

_CHILD = r"""
import resource, sys, time
from dtproto._impl import available_implementations
codec = available_implementations()[sys.argv[1]]
op, path = sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
with open(path, "rb") as f:
    if op == "validate":
        report = codec.validate(f)
        ok, bad = report.lines_ok, report.lines_invalid
    else:
        ok = bad = 0
        for _ in codec.iter_decode(f):
            ok += 1
seconds = time.perf_counter() - t0
hwm = 0
try:
    with open("/proc/self/status") as s:
        for line in s:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
except OSError:
    pass
if not hwm:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(ok, bad, hwm, seconds)
"""


def memory_run(impl: str, op: str, path: str) -> Tuple[int, int, float, float]:
    """(lines ok, lines invalid, peak RSS in MB, seconds) of one op over the file."""
    import dtproto
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(dtproto.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _CHILD, impl, op, path], env=env,
                         check=True, capture_output=True, text=True).stdout.split()
    ok, bad, hwm_kb, seconds = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    return ok, bad, hwm_kb / 1024.0, seconds


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="corpus size (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per contender; best counts")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="stop repeating a contender after this many seconds (default 30)")
    ap.add_argument("--slow-lines", type=int, default=100_000,
                    help="points given to dynatrace-metric-utils (~200 us/line; default 100,000)")
    ap.add_argument("--only", choices=["python", "cython"], help="one implementation only")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    ap.add_argument("--skip-1gb", action="store_true", help="skip the 1 GB memory runs")
    ap.add_argument("--file-bytes", type=int, default=1 << 30,
                    help="size of the memory-test file (default 1 GiB)")
    ap.add_argument("--seed", type=int, default=_corpus.DEFAULT_SEED)
    args = ap.parse_args(argv)

    import dtproto
    from dtproto._impl import available_implementations, extension_error

    impls = available_implementations()
    if args.only:
        if args.only not in impls:
            print("the %s implementation is not available: %s" % (args.only, extension_error()))
            return 2
        impls = {args.only: impls[args.only]}
    peers = load_peers()

    n = args.lines
    header = [
        "Machine: %s, %d cores; Python %s (%s); dtproto %s, implementations: %s."
        % (cpu_model(), os.cpu_count() or 0, platform.python_version(),
           platform.python_implementation(), dtproto.__version__, ", ".join(impls)),
        "Corpus: bench/corpus.py seed %d, %s lines; GC enabled; best of %d "
        "(fewer for runs over %gs). Command: `v/bin/python bench/compare.py %s`"
        % (args.seed, "{:,}".format(n), args.repeat, args.budget,
           " ".join(argv if argv is not None else sys.argv[1:])),
        "Peers: " + ", ".join(
            "%s %s" % (dist, peer_version(dist) if not isinstance(peers[key], str)
                       else "not installed")
            for key, dist in PEERS),
    ]
    print("\n".join(header), flush=True)
    for key, p in peers.items():
        if isinstance(p, str):
            print("  peer %s: %s -- its rows are skipped" % (key, p))

    print("generating the corpus ...", flush=True)
    t0 = perf_counter()
    data = _corpus.make_corpus(n, seed=args.seed)
    records = _corpus.make_records(n, seed=args.seed)
    escaped = _corpus.make_corpus(n, seed=args.seed, escape_heavy=True)
    print("  %s lines, %.1f MB (escape-heavy %.1f MB) in %.1f s"
          % ("{:,}".format(n), len(data) / 1e6, len(escaped) / 1e6, perf_counter() - t0),
          flush=True)

    R, B = args.repeat, args.budget
    nb = len(data)
    res: Dict[str, Result] = {}

    def expect_lines(k: int) -> Callable[[Any], None]:
        def check(out: Any) -> None:
            got = out.count(b"\n") if isinstance(out, bytes) else len(out)
            assert got == k, (got, k)
        return check

    def expect_records(out: Any) -> None:
        assert out == records.metrics

    def expect_report(out: Any) -> None:
        assert out.lines_ok == n and out.lines_invalid == 0, (out.lines_ok, out.lines_invalid)

    print("measuring ...", flush=True)
    for name, codec in impls.items():
        res["validate", name] = measure("validate (%s)" % name, lambda: codec.validate(data),
                                        n, nb, R, B, expect_report)
        res["decode", name] = measure("decode (%s)" % name, lambda: codec.decode(data),
                                      n, nb, R, B, expect_records)
        res["iter_decode", name] = measure(
            "iter_decode from a file object (%s)" % name,
            lambda: deque(codec.iter_decode(io.BytesIO(data)), maxlen=0), n, nb, R, B)
        res["decode_escaped", name] = measure(
            "decode, escape-heavy corpus (%s)" % name, lambda: codec.decode(escaped),
            n, len(escaped), R, B, expect_lines(n))
        res["Encoder", name] = measure("Encoder (%s)" % name,
                                       encoder_loop(codec.Encoder, records.tuples),
                                       n, None, R, B, expect_lines(n))
        res["encode", name] = measure("encode(records) (%s)" % name,
                                      lambda: codec.encode(records.metrics),
                                      n, None, R, B, expect_lines(n))

    res["naive"] = measure("naive str.split parser", lambda: naive_split_parse(data), n, nb,
                           R, B, expect_lines(n))
    res["regex"] = measure("validating regex parser", lambda: regex_parse(data), n, nb,
                           R, B, expect_lines(n))
    res["count"] = measure('bytes.count(b"\\n")', lambda: data.count(b"\n"), n, nb, R, B)

    if not isinstance(peers["dmu"], str):
        k = min(args.slow_lines, n)
        res["dmu"] = measure("dynatrace-metric-utils serialize",
                             dmu_encoder(peers["dmu"], records.tuples[:k]), k, None, R, B,
                             expect_lines(k),
                             note="" if k == n else "(first %s points)" % "{:,}".format(k))
    if not isinstance(peers["sdk"], str):
        res["sdk"] = measure("dt-extensions-sdk Metric.to_mint_line",
                             sdk_encoder(peers["sdk"], records.tuples), n, None, R, B,
                             expect_lines(n))
    if "cython" in impls:
        if not isinstance(peers["questdb"], str):
            for pv in (1, 2):
                res["questdb", pv] = measure(
                    "questdb Buffer.row (protocol %d)" % pv,
                    questdb_encoder(peers["questdb"], records.tuples, pv), n, None, R, B,
                    expect_lines(n) if pv == 1 else None)  # binary floats may hold LF bytes
        if not isinstance(peers["lpp"], str):
            influx = _corpus.to_influx(data)
            res["lpp"] = measure("line-protocol-parser parse_line (InfluxDB form)",
                                 lpp_decoder(peers["lpp"], influx), n, len(influx), R, B,
                                 expect_lines(n))

    # ---- the table ---------------------------------------------------------
    rows: List[Row] = []
    # Row labels: what the row checks, readable without the project's issue tracker.
    PY, CY = "pure Python", "Cython"

    def add(req: str, ours: Any, peer: Any, need: float) -> None:
        if ours in res and peer in res:
            rows.append(Row(req, res[ours], res[peer], need))

    if "python" in impls:
        add(PY + ": validate ≥ naive split parser", ("validate", "python"), "naive", 1.0)
        add(PY + ": decode ≥ 1.5× regex parser", ("decode", "python"), "regex", 1.5)
        add(PY + ": Encoder ≥ 10× dynatrace-metric-utils", ("Encoder", "python"), "dmu", 10.0)
        add(PY + ": Encoder ≥ dt-extensions-sdk", ("Encoder", "python"), "sdk", 1.0)
    if "cython" in impls:
        add(CY + ": validate ≥ 35% of bytes.count", ("validate", "cython"), "count", 0.35)
        add(CY + ": decode ≥ 8× line-protocol-parser", ("decode", "cython"), "lpp", 8.0)
        add(CY + ": decode ≥ 10× pure-Python decode", ("decode", "cython"), ("decode", "python"),
            10.0)
        add(CY + ": Encoder ≥ 2× questdb Buffer.row", ("Encoder", "cython"), ("questdb", 1), 2.0)
        add(CY + ": encode ≥ 2× questdb Buffer.row", ("encode", "cython"), ("questdb", 1), 2.0)
        add("info: questdb binary-float protocol 2", ("Encoder", "cython"), ("questdb", 2), 0)
        add(CY + ": Encoder ≥ 50× dynatrace-metric-utils", ("Encoder", "cython"), "dmu", 50.0)
        add("info: Cython Encoder vs pure Python", ("Encoder", "cython"), ("Encoder", "python"), 0)
        add("info: Cython validate vs pure Python", ("validate", "cython"),
            ("validate", "python"), 0)
        add("info: Cython escape-heavy decode vs pure", ("decode_escaped", "cython"),
            ("decode_escaped", "python"), 0)
    for name in impls:
        for op in ("iter_decode", "decode_escaped", "encode"):
            if (op, name) in res:
                rows.append(Row("info", res[op, name], None, 0))

    # ---- memory over a large file -----------------------------------------
    if not args.skip_1gb:
        fd, path = tempfile.mkstemp(prefix="dtproto-bench-", suffix=".txt")
        os.close(fd)
        try:
            print("writing a %.2f GB file ..." % (args.file_bytes / 1e9), flush=True)
            t0 = perf_counter()
            size, lines = _corpus.write_file(path, args.file_bytes, seed=args.seed)
            print("  %s lines, %s bytes in %.0f s" % ("{:,}".format(lines), "{:,}".format(size),
                                                      perf_counter() - t0), flush=True)
            for name in impls:
                for op in ("validate", "iter_decode"):
                    ok, bad, peak, secs = memory_run(name, op, path)
                    good = ok == lines and bad == 0 and peak < 100
                    text = "%s (%s), %.2f GB file" % (op, name, size / 1e9)
                    run = Result(text, lines, size, secs, 1)
                    print("  %s: %s lines/s, peak RSS %.1f MB (%d ok, %d invalid)"
                          % (text, "{:,.0f}".format(run.lines_per_s), peak, ok, bad), flush=True)
                    rows.append(Row("memory: peak RSS < 100 MB", run, None, 0, text=text,
                                    passed=good, value="%.1f MB" % peak))
        finally:
            os.unlink(path)

    table = render(rows, header)
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
