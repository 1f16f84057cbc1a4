"""A short coverage-guided fuzz run (bench/fuzz_atheris.py) as part of the suite.

A few thousand atheris inputs against the installed Cython core, compared with
the pure-Python reference (decode, validate, decode_columns when pyarrow is
installed, iter_decode over chunk splits, decode -> encode -> decode, Encoder
calls), starting from the generated seed corpus.  It runs the script in a subprocess, with no sanitizers; the long run
under ASan/UBSan is described in README "Fuzzing".  Skipped (with the reason)
when atheris is not installed or the Cython core is not loaded.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dtproto

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "fuzz_atheris.py"
RUNS = 2000
SECONDS = 30


@pytest.mark.slow
def test_short_atheris_run(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris: CPython 3.11-3.13 "
                    "wheels for Linux x86_64)")
    if dtproto.IMPLEMENTATION != "cython":
        pytest.skip("the Cython core is not loaded: nothing to compare the reference with")
    corpus = tmp_path / "corpus"
    env = dict(os.environ)
    env.pop("PYTHONMALLOC", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(corpus), "-runs=%d" % RUNS,
         "-max_total_time=%d" % SECONDS, "-seed=1", "-max_len=4096",
         "-artifact_prefix=%s/" % tmp_path],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=SECONDS + 120)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
    assert proc.returncode == 0, "fuzz run failed (status %d):\n%s" % (proc.returncode, tail)
    assert "Done " in proc.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail
    assert len(os.listdir(corpus)) > 100, "the seed corpus was not written:\n" + tail
