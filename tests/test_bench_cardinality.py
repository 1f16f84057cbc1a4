"""bench/cardinality.py: each level in a new process gives the table one process gives.

The numbers differ from run to run; what is checked is the shape: every level
gets a column, every contender of ours a rate at every level, whichever way the
levels ran, and a worker's rates come back with their keys as they were
(tuples for ours, names for the peers).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "cardinality.py"

pytestmark = pytest.mark.slow


def _table(tmp_path: pathlib.Path, *extra: str) -> Tuple[List[str], str]:
    """The markdown table's lines and what the run printed."""
    out = tmp_path / ("sweep%s.md" % "".join(extra).replace("-", "_").replace(" ", ""))
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--lines", "400", "--repeat", "1", "--slow-lines", "50",
         "--levels", "20", "unique", "--seed", "7", "--markdown", str(out), *extra],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    # the header is printed once, by the parent, not again by each worker
    assert p.stdout.count("Machine: ") == 2, p.stdout     # once on stdout, once in the table
    # each level measured once, the one asked for
    assert p.stdout.count("20 series: generating") == 1, p.stdout
    assert p.stdout.count("every line unique: generating") == 1, p.stdout
    return out.read_text(encoding="utf-8").splitlines(), p.stdout


def _rows(lines: List[str], first: str) -> List[str]:
    """The row labels of the table whose header row starts with ``first``."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith(first))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("| "):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == 3 and all(cells), ln          # a label and both levels filled
        rows.append(cells[0])
    return rows


def test_new_processes_and_one_process_give_the_same_table(tmp_path: pathlib.Path) -> None:
    fresh, fresh_out = _table(tmp_path)
    one, one_out = _table(tmp_path, "--one-process")
    assert any("each level in a process of its own" in ln for ln in fresh)
    assert any("all levels in one process" in ln for ln in one)
    for lines in (fresh, one):
        assert "| ratio (floor) | 20 series | every line unique |" in lines
    assert _rows(fresh, "| lines/s") == _rows(one, "| lines/s")
    assert _rows(fresh, "| ratio") == _rows(one, "| ratio")
    import dtproto

    impl = "Cython" if dtproto.IMPLEMENTATION == "cython" else "pure Python"
    for op in ("validate", "decode", "Encoder"):   # ours, read back from the workers' files
        assert "%s `%s`" % (impl, op) in _rows(fresh, "| lines/s")
    assert ("the loop feeding the `Encoder`s alone (nothing encoded; an upper bound)"
            in _rows(fresh, "| lines/s"))
    for ln in fresh:
        for rate in re.findall(r"\| ([\d,]+) ", ln):
            assert int(rate.replace(",", "")) > 0
    # the same corpus (--lines, --seed forwarded): the same warnings at each level
    warned = re.compile(r"^  ([\d,]+) lines with a warning$", re.M)
    assert warned.findall(fresh_out) == warned.findall(one_out)
    assert len(warned.findall(fresh_out)) == 2 and warned.findall(fresh_out)[0] != "0"


def test_only_is_forwarded_to_the_workers(tmp_path: pathlib.Path) -> None:
    lines, _ = _table(tmp_path, "--only", "python")
    rows = _rows(lines, "| lines/s") + _rows(lines, "| ratio")
    assert "pure Python `decode`" in rows
    # nothing measured for the Cython core, nor its peers
    assert not any("Cython" in r or "bytes.count" in r for r in rows), rows


def test_kind_encodes_the_points_of_one_kind_where_they_lie(tmp_path: pathlib.Path) -> None:
    import importlib.util

    from dtproto import _corpus

    spec = importlib.util.spec_from_file_location("cardinality_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    tuples = _corpus.make_records(2000, seed=7, cardinality="unique").tuples
    assert bench.encoder_rows(tuples, None) is tuples
    for kind in ("gauge", "count", "summary"):
        rows = bench.encoder_rows(tuples, kind)
        # every point of that kind, in order, the same objects (not copies)
        expected = [t for t in tuples if t[0] == kind]
        assert 0 < len(rows) < len(tuples) and len(rows) == len(expected)
        assert all(a is b for a, b in zip(rows, expected))
    # forwarded to the workers, and said in the header
    lines, out = _table(tmp_path, "--kind", "gauge")
    assert any("Encoder rows: the gauge points only" in ln for ln in lines), lines
    assert _rows(lines, "| ratio")
