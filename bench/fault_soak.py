"""Fault soak: a big file through injected faults, every line accounted for.

Generates a file of ``--lines`` protocol lines (default 1,000,000, about
100 MB) with ``--invalid-rate`` (default 1%) invalid lines scattered by a
seeded generator, plus a few blank lines.  Sends it with :class:`dtproto.Sender`
to a local :class:`dtproto.server.IngestServer` that injects faults:

* 429 without ``Retry-After``, 429 with ``Retry-After: 1``, 503,
* dropped connections *before* the body is processed (nothing stored),

by rate and, so that every kind occurs even in a short run, on fixed request
numbers.  The sender runs with ``retry_ambiguous=True``: against this
endpoint a dropped connection never follows storage, so re-sending is what
delivers those lines exactly once (against a server that may have stored the
chunk, the default ``retry_ambiguous=False`` is the safe choice; see the
Sender docs and the tests of both drop kinds).

The endpoint lists every invalid line (``max_reported_errors=None``) instead of
the real API's first 10 per request, so every reason can be checked.

Then it verifies:

1. every valid line was stored exactly once, nothing else was stored;
2. every invalid line was reported with its input line number and the reason
   the server gives for that line (``dtproto.validate`` on the line alone);
3. the sender's totals match: nothing undelivered, nothing unreported.

Prints a summary and exits 1 on any discrepancy.  ``--lines 20000`` runs small.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from typing import Dict, List, Tuple

try:
    import dtproto
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import dtproto
from dtproto.sender import Sender
from dtproto.server import Fault, IngestServer

TOKEN = "soak-token-not-secret"

# Invalid line templates: each breaks one rule the server checks.  %d is the
# line number, which also makes every line unique.
_INVALID = [
    b"1soak.bad.key,seq=%d,host=h gauge,1",                     # key starts with a digit
    b"soak.bad.dim,seq=%d,Host=h gauge,1",                      # upper-case dimension key
    b"soak.bad.value,seq=%d,host=h gauge,NaN",                  # non-finite
    b"soak.bad.count,seq=%d,host=h count,7",                    # count without delta=
    b"soak.bad.summary,seq=%d,host=h gauge,min=5,max=1,sum=3,count=1",  # min > max
    b"dt.soak.reserved,seq=%d,host=h 1",                        # reserved dt. prefix
    b"soak.bad.ts,seq=%d,host=h 1 12",                          # timestamp out of window
]
_SEQ = re.compile(rb"seq=(\d+)")


def generate(path: str, n: int, invalid_rate: float, seed: int) -> Tuple[List[int], List[int], int]:
    """Write the corpus; return (invalid line numbers, blank line numbers, bytes)."""
    rng = random.Random(seed)
    invalid: List[int] = []
    blank: List[int] = []
    size = 0
    with open(path, "wb") as f:
        buf: List[bytes] = []
        for i in range(1, n + 1):
            r = rng.random()
            if r < invalid_rate:
                line = rng.choice(_INVALID) % i
                invalid.append(i)
            elif r < invalid_rate + 0.0005:
                line = b""
                blank.append(i)
            else:
                k = i % 20
                if k < 13:
                    line = (b"soak.latency.ms%d,seq=%d,host=host-%04d,region=eu-west-%d,"
                            b"service=checkout gauge,%d.%03d"
                            % (i % 50, i, i % 997, i % 3, rng.randrange(1000), rng.randrange(1000)))
                elif k < 18:
                    line = (b"soak.requests.count,seq=%d,host=host-%04d,region=eu-west-%d,"
                            b"service=checkout,status=200 count,delta=%d"
                            % (i, i % 997, i % 3, rng.randrange(1, 100)))
                else:
                    line = (b"soak.payload.bytes,seq=%d,host=host-%04d,service=checkout "
                            b"gauge,min=1,max=9,sum=%d,count=3" % (i, i % 997, rng.randrange(3, 28)))
            buf.append(line)
            if len(buf) >= 10_000:
                data = b"\n".join(buf) + b"\n"
                f.write(data)
                size += len(data)
                buf.clear()
        if buf:
            data = b"\n".join(buf) + b"\n"
            f.write(data)
            size += len(data)
    return invalid, blank, size


def expected_reasons(path: str, invalid: List[int]) -> Dict[int, str]:
    """The reason the server gives for each invalid line, validated on its own."""
    wanted = set(invalid)
    out: Dict[int, str] = {}
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if i in wanted:
                report = dtproto.validate(line, now_ms=int(time.time() * 1000))
                out[i] = report.errors[0].message if report.errors else "<valid?>"
    return out


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--invalid-rate", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--max-bytes", type=int, default=1_000_000)
    ap.add_argument("--gzip", action="store_true", help="send gzip-compressed bodies")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="dtproto-soak-")
    src = os.path.join(work, "input.txt")
    store = os.path.join(work, "stored.txt")
    t0 = time.perf_counter()
    invalid, blank, size = generate(src, args.lines, args.invalid_rate, args.seed)
    n_valid = args.lines - len(invalid) - len(blank)
    reasons = expected_reasons(src, invalid)
    t_gen = time.perf_counter() - t0
    print("generated %d lines (%.1f MB): %d valid, %d invalid, %d blank in %.1fs"
          % (args.lines, size / 1e6, n_valid, len(invalid), len(blank), t_gen))

    faults = [
        # Fixed request numbers first (the first matching rule applies), so
        # every kind occurs, including several faults in a row for one chunk.
        Fault("429", requests={2}),
        Fault("429", requests={3}, retry_after=1),
        Fault("503", requests={5, 6}),
        Fault("drop-before", requests={8, 9, 10}),
        # Then by rate, seeded.
        Fault("429", rate=0.03),
        Fault("429", rate=0.02, retry_after=1),
        Fault("503", rate=0.03),
        Fault("drop-before", rate=0.03),
    ]
    problems: List[str] = []
    with IngestServer(tokens=TOKEN, store=store, keep=False, faults=faults, seed=args.seed,
                      max_reported_errors=None, log_size=1_000_000) as srv:
        sender = Sender(srv.url, TOKEN, max_bytes=args.max_bytes, gzip=args.gzip,
                        retry_ambiguous=True, retries=8, backoff_base=0.05, backoff_cap=0.5,
                        retry_budget=60, read_timeout=120)
        t1 = time.perf_counter()
        with sender, open(src, "rb") as f:
            try:
                result = sender.send(f)
            except dtproto.SendError as exc:
                print("FAILED: %s" % exc)
                return 1
        t_send = time.perf_counter() - t1
        records = list(srv.requests)
        stats = dict(srv.stats)

    # 1. Storage: each valid line exactly once, nothing else.
    stored_count = bytearray(args.lines + 1)
    stored_lines = 0
    odd = 0
    with open(store, "rb") as f:
        for line in f:
            stored_lines += 1
            m = _SEQ.search(line)
            if m is None:
                odd += 1
                continue
            k = int(m.group(1))
            if k > args.lines:
                odd += 1
            elif stored_count[k] < 255:
                stored_count[k] += 1
    bad_set = set(invalid)
    blank_set = set(blank)
    missing = dup = stored_invalid = 0
    for i in range(1, args.lines + 1):
        c = stored_count[i]
        if i in bad_set or i in blank_set:
            stored_invalid += c
        elif c == 0:
            missing += 1
        elif c > 1:
            dup += 1
    if missing:
        problems.append("%d valid lines not stored" % missing)
    if dup:
        problems.append("%d valid lines stored more than once" % dup)
    if stored_invalid or odd:
        problems.append("%d invalid and %d unknown lines stored" % (stored_invalid, odd))

    # 2. Every invalid line reported, at its input line number, with the server's reason.
    got = {}
    for il in result.invalid_lines:
        if il.line in got:
            problems.append("line %d reported twice" % il.line)
        got[il.line] = il.reason
    not_reported = sorted(bad_set - set(got))
    wrongly = sorted(set(got) - bad_set)
    wrong_reason = [i for i in got if i in reasons and got[i] != reasons[i]]
    if not_reported:
        problems.append("%d invalid lines not reported, e.g. %s" % (len(not_reported), not_reported[:5]))
    if wrongly:
        problems.append("%d valid lines reported invalid, e.g. %s" % (len(wrongly), wrongly[:5]))
    if wrong_reason:
        i = wrong_reason[0]
        problems.append("%d wrong reasons, e.g. line %d: %r != %r"
                        % (len(wrong_reason), i, got[i], reasons[i]))

    # 3. Totals.
    if result.lines_ok != n_valid:
        problems.append("lines_ok %d != %d valid lines" % (result.lines_ok, n_valid))
    if result.lines_invalid != len(invalid):
        problems.append("lines_invalid %d != %d" % (result.lines_invalid, len(invalid)))
    if result.undelivered or result.unreported_invalid:
        problems.append("undelivered %r, unreported %d" % (result.undelivered, result.unreported_invalid))
    if result.lines_sent + result.lines_skipped != args.lines:
        problems.append("lines accounted %d != %d" % (result.lines_sent + result.lines_skipped, args.lines))

    faults_seen = Counter(r.fault for r in records if r.fault)
    attempts = Counter(q.attempts for q in result.requests)
    print("sent in %.1fs: %d chunks, %d HTTP requests, %.1f MB/s of input (faults and backoff included)"
          % (t_send, len(result.requests), len(records), size / 1e6 / t_send))
    print("faults injected: %s" % ", ".join("%s x%d" % kv for kv in sorted(faults_seen.items())))
    print("attempts per chunk: %s" % ", ".join("%d: %d chunks" % kv for kv in sorted(attempts.items())))
    print("server: %d lines stored, %d requests, statuses %s" % (
        stored_lines, stats.get("requests", 0),
        {k[7:]: v for k, v in sorted(stats.items()) if k.startswith("status_")}))
    print("sender: lines_ok=%d lines_invalid=%d reported=%d undelivered=%d blank=%d"
          % (result.lines_ok, result.lines_invalid, len(result.invalid_lines),
             result.lines_not_delivered, len(blank)))
    example = result.invalid_lines[len(result.invalid_lines) // 2] if result.invalid_lines else None
    if example:
        print("example: input line %d: %s" % (example.line, example.reason))
    if not args.keep:
        for p in (src, store):
            os.unlink(p)
        os.rmdir(work)
    else:
        print("files kept in %s" % work)
    if problems:
        print("DISCREPANCIES:")
        for p in problems:
            print("  - " + p)
        return 1
    print("OK: every valid line stored exactly once; every invalid line reported with its "
          "input line number and the server's reason")
    return 0


if __name__ == "__main__":
    sys.exit(main())
