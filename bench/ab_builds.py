#!/usr/bin/env python3
"""Two builds of the Cython core, timed against each other in one process.

Usage (from the repository root, with Cython installed to build revisions)::

    v/bin/python bench/ab_builds.py HEAD~1 HEAD                 # two git revisions
    v/bin/python bench/ab_builds.py old/_codec_c.so dtproto/_codec_c.cpython-311-x86_64-linux-gnu.so
    v/bin/python bench/ab_builds.py e8840da HEAD --levels unique --kind gauge --rounds 12

A change to the C core is often worth a few percent, less than the spread of
one run against the next on a shared host, so two runs of
``bench/cardinality.py`` (one per build) cannot tell such builds apart: a
slow spell of the host lands on one of them.  Here both builds are loaded
into one process, side by side (``importlib``'s extension loader, each from
a file of its own, so that each has its own module state), and every round
times each workload once with each build, in an order shuffled per round.
A slow spell then hits both, and the ratio of the medians says which build
is faster.

Each build is given as a path to a built ``_codec_c`` extension, or as a git
revision, which is exported (``git archive``) and built with
``setup.py build_ext --inplace`` in a temporary directory.  Only the
extensions come from the builds: both run with the pure-Python parts of the
``dtproto`` this script imports (the checkout's, or the installed one),
which is what a change to ``csrc/`` alone needs.  Before timing, the script
checks that the two builds give the same bytes and records for the level's
data; a build that disagrees is not a faster build of the same thing.

The data is ``bench/cardinality.py``'s corpus (``dtproto._corpus`` with
``cardinality=``), built once per level and held while both builds run on
it.  Workloads: ``validate`` and ``decode`` of the level's text,
``encode`` of its records, and the ``Encoder`` loop of its points (all
kinds, or ``--kind``'s alone).
"""

from __future__ import annotations

import argparse
import gc
import importlib.machinery
import importlib.util
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path.insert(0, _HERE)
try:  # an installed dtproto wins; otherwise the checkout this script lives in
    import dtproto  # noqa: F401
except ImportError:
    sys.path.insert(1, _ROOT)

from cardinality import encoder_rows, timed  # noqa: E402

from dtproto import _corpus  # noqa: E402

def build_revision(rev: str, workdir: str) -> str:
    """Export ``rev`` of this repository into ``workdir`` and build its
    extension there (Cython required: without it ``setup.py`` would build
    nothing, which ``DTPROTO_REQUIRE_EXTENSIONS=1`` turns into an error).
    Returns the path of the built extension."""
    src = os.path.join(workdir, "src")
    os.makedirs(src)
    archive = subprocess.run(["git", "-C", _ROOT, "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    env = dict(os.environ, DTPROTO_REQUIRE_EXTENSIONS="1")
    env.pop("DTPROTO_NO_EXTENSIONS", None)
    print("building %s ..." % rev, flush=True)
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=src, env=env, capture_output=True, text=True)
    if done.returncode:  # the compiler's complaints only when the build failed
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("building %s failed (exit status %d)" % (rev, done.returncode))
    return find_extension(os.path.join(src, "dtproto"))


def find_extension(directory: str) -> str:
    """The ``_codec_c`` extension for this interpreter in ``directory``."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(directory, "_codec_c" + suffix)
        if os.path.isfile(path):
            return path
    raise SystemExit("no _codec_c extension for this interpreter in %s" % directory)


def load_build(path: str, copy_dir: str, tag: str) -> ModuleType:
    """The extension at ``path`` as a module of its own.

    The file is copied first: the dynamic loader hands out one handle per
    file, so two loads of one path (or of a path the normal import already
    loaded) would share one module's static state.  The module keeps the
    name ``dtproto._codec_c`` (its init function is found by that name) but
    is not entered in ``sys.modules``."""
    copy = os.path.join(copy_dir, tag, os.path.basename(path))
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    shutil.copyfile(path, copy)
    loader = importlib.machinery.ExtensionFileLoader("dtproto._codec_c", copy)
    spec = importlib.util.spec_from_file_location("dtproto._codec_c", copy, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def resolve(build: str, workdir: str, tag: str) -> str:
    """A path to a built extension, or a revision to build."""
    if os.path.isfile(build):
        return build
    return build_revision(build, os.path.join(workdir, tag))


def check_same(a: ModuleType, b: ModuleType, data: bytes, tuples: List[tuple],
               records: list) -> None:
    """Both builds give the same results on the level's data, or exit."""
    checks = [
        ("validate", lambda m: _report_counts(m.validate(data))),
        ("decode", lambda m: m.decode(data)),
        ("encode", lambda m: m.encode(records)),
        ("Encoder", lambda m: _corpus.encoder_loop(m.Encoder, tuples)()),
    ]
    for name, fn in checks:
        if fn(a) != fn(b):
            raise SystemExit("the builds disagree on %s: not two builds of the same codec" % name)


def _report_counts(report: Any) -> Tuple[int, int, int]:
    return report.lines_ok, report.lines_invalid, report.warnings_total


def measure_level(level: Any, builds: Dict[str, ModuleType],
                  args: argparse.Namespace) -> List[Tuple[str, Dict[str, float], int]]:
    """(workload, {build: median seconds}, lines) for every workload at one level."""
    n = args.lines
    print("%s: generating ..." % _corpus.cardinality_label(level), flush=True)
    data = _corpus.make_corpus(n, seed=args.seed, cardinality=level)
    recs = _corpus.make_records(n, seed=args.seed, cardinality=level)
    tuples = encoder_rows(recs.tuples, args.kind)
    a, b = builds.values()
    check_same(a, b, data, tuples, recs.metrics)
    workloads: List[Tuple[str, Callable[[ModuleType], Callable[[], Any]], int]] = []
    if args.kind is None:
        workloads += [
            ("validate", lambda m: (lambda: m.validate(data)), n),
            ("decode", lambda m: (lambda: m.decode(data)), n),
            ("encode", lambda m: (lambda: m.encode(recs.metrics)), n),
        ]
    workloads.append(("Encoder" + ("" if args.kind is None else "." + args.kind),
                      lambda m: _corpus.encoder_loop(m.Encoder, tuples), len(tuples)))
    jobs = [(w, tag, make(m)) for w, make, _ in workloads for tag, m in builds.items()]
    times: Dict[Tuple[str, str], List[float]] = {(w, tag): [] for w, tag, _ in jobs}
    order = random.Random(args.seed)
    for _ in range(args.rounds):
        for w, tag, fn in order.sample(jobs, len(jobs)):
            times[w, tag].append(timed(fn))
    out = []
    for w, _make, lines in workloads:
        out.append((w, {tag: statistics.median(times[w, tag]) for tag in builds}, lines))
    del jobs, data, recs, tuples
    gc.collect()
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="the first build: a built _codec_c extension, or a git revision")
    ap.add_argument("b", help="the second build, the same way")
    ap.add_argument("--lines", type=int, default=300_000, help="lines per level (default 300,000)")
    ap.add_argument("--levels", nargs="+", default=["unique", "1000"],
                    help="series counts, or 'unique' (default: unique 1000)")
    ap.add_argument("--rounds", type=int, default=10,
                    help="rounds; each times every workload once per build (default 10)")
    ap.add_argument("--kind", choices=["gauge", "count", "summary"],
                    help="time only the Encoder loop over this kind's points")
    ap.add_argument("--seed", type=int, default=_corpus.DEFAULT_SEED)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.lines < 1:
        ap.error("--rounds and --lines must be positive")
    levels = [_corpus.UNIQUE if x == _corpus.UNIQUE else int(x) for x in args.levels]
    work = tempfile.mkdtemp(prefix="dtproto-ab-")
    try:
        tags = {"A": args.a, "B": args.b}
        builds = {tag: load_build(resolve(src, work, tag), work, tag + "-so")
                  for tag, src in tags.items()}
        print("A = %s\nB = %s\n%s, %d cores, %s, Python %s; %d lines a level, median of %d"
              % (args.a, args.b, _corpus.cpu_model(), os.cpu_count() or 0, platform.system(),
                 platform.python_version(), args.lines, args.rounds), flush=True)
        print("%-10s %-16s %14s %14s %9s" % ("level", "workload", "A ns/line", "B ns/line",
                                             "A/B time"))
        for level in levels:
            for w, secs, lines in measure_level(level, builds, args):
                print("%-10s %-16s %14.1f %14.1f %9.3f" % (
                    "unique" if level == _corpus.UNIQUE else "{:,}".format(level), w,
                    secs["A"] / lines * 1e9, secs["B"] / lines * 1e9, secs["A"] / secs["B"]),
                    flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("A/B time above 1: B is faster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
