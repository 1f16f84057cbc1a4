"""bench/ab_builds.py: two builds of the Cython core loaded side by side.

What is checked: two loads of one extension are two modules (each its own
state, neither in ``sys.modules``), a run over them prints a row per level
and workload, and builds that disagree on any workload are refused rather
than timed.  No revision is built here (that needs Cython and a compiler,
and takes a minute).
"""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

ab = importlib.import_module("ab_builds")


def _extension() -> str:
    import dtproto

    if dtproto.IMPLEMENTATION != "cython":
        pytest.skip("the Cython core is not built")
    return ab.find_extension(str(pathlib.Path(dtproto.__file__).parent))


def test_two_loads_are_two_modules(tmp_path: pathlib.Path) -> None:
    path = _extension()
    before = sys.modules.get("dtproto._codec_c")
    a = ab.load_build(path, str(tmp_path), "A")
    b = ab.load_build(path, str(tmp_path), "B")
    assert a is not b and a.Encoder is not b.Encoder
    assert sys.modules.get("dtproto._codec_c") is before
    data = b"m.a,h=x gauge,1 1700000000000\nm.b count,delta=2\n"
    assert a.decode(data) == b.decode(data)
    enc = a.Encoder()
    enc.gauge("m.a", 1.5, {"h": "x"}, 1700000000000)
    assert enc.getvalue() == b"m.a,h=x gauge,1.5 1700000000000\n"


def test_a_run_prints_every_level_and_workload() -> None:
    path = _extension()
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ab_builds.py"), path, path, "--lines", "300",
         "--rounds", "1", "--levels", "unique", "20"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = [ln.split() for ln in p.stdout.splitlines()
            if ln.startswith(("unique ", "20 ")) and "generating" not in ln]
    assert [(r[0], r[1]) for r in rows] == [
        (level, w) for level in ("unique", "20")
        for w in ("validate", "decode", "encode", "Encoder")]
    for r in rows:
        assert float(r[2]) > 0 and float(r[3]) > 0 and float(r[4]) > 0


def test_builds_that_disagree_are_not_timed() -> None:
    import dtproto

    same = types.SimpleNamespace(validate=dtproto.validate, decode=dtproto.decode,
                                 encode=dtproto.encode, Encoder=dtproto.Encoder)
    data = b"m.a gauge,1\nm.b gauge,2\n"
    records = dtproto.decode(data)
    tuples = [("gauge", r.key, {}, r.value, None, None, None, None, None) for r in records]
    ab.check_same(same, same, data, tuples, records)          # agreeing builds pass
    for name in ("validate", "decode", "encode"):
        other = types.SimpleNamespace(**vars(same))
        wrong = getattr(same, name)
        setattr(other, name, lambda *a, _f=wrong, _n=name, **k: (
            _f(*a, **k)[:-1] if _n != "validate" else _Report(_f(*a, **k))))
        with pytest.raises(SystemExit, match="disagree on " + name):
            ab.check_same(same, other, data, tuples, records)


class _Report:
    """A report one warning short of the one it wraps."""

    def __init__(self, report: object) -> None:
        self.lines_ok = report.lines_ok                    # type: ignore[attr-defined]
        self.lines_invalid = report.lines_invalid          # type: ignore[attr-defined]
        self.warnings_total = report.warnings_total + 1    # type: ignore[attr-defined]
