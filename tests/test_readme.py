"""The README's Python snippets run on their own, and print what the README says.

Convention (also stated in the README's "Run it / test it"): a run of comment
lines directly after a line that calls ``print(`` is what that call prints,
without the leading ``# ``.  Output and expectation are compared with runs of
whitespace collapsed, so a long dict may be wrapped over several comment lines.
Every snippet runs in a fresh interpreter, in an empty directory, importing the
same dtproto as this test process.

The README's ``sh`` blocks are held to "works as written after the install it
shows, without an activated venv": every command is a ``v/bin/...`` program (or
creates the venv), and the ``v/bin/dtproto`` ones are run.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from typing import Dict, List, NamedTuple

import pytest

import dtproto

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PACKAGE_PARENT = str(pathlib.Path(dtproto.__file__).resolve().parent.parent)

# Snippets that need a real Dynatrace environment (a token and a URL) cannot run
# on their own yet; strict, so that the marker goes when the snippet is made
# self-contained (for instance against dtproto.server.IngestServer).
# (None today: the sending snippets run against dtproto.server.IngestServer.)
NEEDS_ENVIRONMENT: Dict[str, str] = {}


class Snippet(NamedTuple):
    section: str
    line: int          # 1-based line of the opening fence
    code: str
    expected: str      # what the print calls print, from the comment lines


class Block(NamedTuple):
    lang: str
    section: str
    line: int
    text: str


def _blocks() -> List[Block]:
    out: List[Block] = []
    section = ""
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"#{2,6} (.*)", line)
        if heading:
            section = heading.group(1).strip()
        fence = re.match(r"```(\w*)\s*$", line)
        if fence:
            start = i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(Block(fence.group(1), section, start + 1, "\n".join(lines[i + 1:j]) + "\n"))
            i = j
        i += 1
    return out


def expected_output(code: str) -> str:
    """The comment lines that follow each line calling print(), in order."""
    out: List[str] = []
    lines = code.splitlines()
    for k, line in enumerate(lines):
        if "print(" not in line.split("#", 1)[0]:
            continue
        for follower in lines[k + 1:]:
            stripped = follower.strip()
            if not stripped.startswith("#"):
                break
            out.append(re.sub(r"^# ?", "", stripped))
    return "\n".join(out)


def _squash(text: str) -> str:
    return " ".join(text.split())


def snippets() -> List[Snippet]:
    return [Snippet(b.section, b.line, b.text, expected_output(b.text))
            for b in _blocks() if b.lang == "python"]


def _ids(s: Snippet) -> str:
    return "%s@%d" % (re.sub(r"\W+", "-", s.section).strip("-").lower(), s.line)


def test_convention_reads_the_quick_start_comments():
    code = "x = 1\nprint(x)\n# 1\n#  2\ny = 2  # not output\nfor i in ():\n    print(i)\n# 3\n"
    assert expected_output(code) == "1\n 2\n3"


def test_readme_has_snippets():
    found = snippets()
    assert len(found) >= 3
    assert any(s.section == "Quick start" and s.expected for s in found)
    # the sending snippets run (against a local IngestServer) and their output is checked
    for section in ("Sending metrics", "A local ingest endpoint for tests"):
        assert any(s.section == section and s.expected for s in found), section


@pytest.mark.parametrize("snippet", snippets(), ids=_ids)
def test_snippet_runs_on_its_own(snippet: Snippet, tmp_path, request):
    if snippet.section in NEEDS_ENVIRONMENT:
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="README section %r: %s"
            % (snippet.section, NEEDS_ENVIRONMENT[snippet.section])))
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DT_API_TOKEN", None)
    p = subprocess.run([sys.executable, "-c", snippet.code], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "README line %d (%s):\n%s" % (
        snippet.line, snippet.section, p.stderr)
    if snippet.expected:
        assert _squash(p.stdout) == _squash(snippet.expected), (
            "README line %d (%s) prints:\n%s" % (snippet.line, snippet.section, p.stdout))


# --------------------------------------------------------------------------- sh commands


def _sh_commands() -> List[tuple]:
    out = []
    for b in _blocks():
        if b.lang != "sh":
            continue
        for k, line in enumerate(b.text.splitlines()):
            command = line.split(" #", 1)[0].strip()
            if command:
                out.append((b.section, b.line + 1 + k, command))
    return out


def _programs(command: str) -> List[str]:
    """The program of each simple command in ``a && b``, past VAR=value words."""
    programs = []
    for part in re.split(r"&&|\|\||;|\|", command):
        words = [w for w in shlex.split(part) if not re.match(r"[A-Za-z_]\w*=", w)]
        if words:
            programs.append(words[0] if words[0] != "." else words[1])
    return programs


def test_sh_commands_work_without_an_activated_venv():
    allowed_outside = {"python3"}  # only to create the venv: python3 -m venv v
    offenders = []
    for section, line, command in _sh_commands():
        for program in _programs(command):
            if program.startswith(("v/bin/", "bench/", "./")):
                continue
            if program in allowed_outside and "-m venv" in command:
                continue
            offenders.append("README line %d (%s): %s" % (line, section, command))
    assert not offenders, "\n".join(offenders)


def _installed_script(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join(
        [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]))
    if path is None:
        pytest.skip("the %s script is not installed next to this interpreter" % name)
    return path


@pytest.mark.parametrize("command", [c for _, _, c in _sh_commands()
                                     if c.startswith("v/bin/dtproto ")])
def test_sh_dtproto_commands_run_as_written(command: str):
    """From the repository root, as the README says; v/bin/ is this interpreter's."""
    words = shlex.split(command)
    words[0] = _installed_script("dtproto")
    env = dict(os.environ)
    env.pop("DT_API_TOKEN", None)
    p = subprocess.run(words, cwd=str(ROOT), env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode in (0, 1), p.stderr          # 1: the sample has invalid lines
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stdout.startswith("dtproto ") or ":" in p.stdout, p.stdout


# --------------------------------------------------------------------------- performance labels


def test_performance_tables_carry_readable_labels():
    """The tables in the README and what bench/compare.py writes say what a row
    checks, not which issue asked for it ("issue 2 must-show 4")."""
    import ast

    tracker = re.compile(r"\bissue \d|must[- ]show", re.I)
    readme = README.read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    assert rows and not [r for r in rows if tracker.search(r)]
    tree = ast.parse((ROOT / "bench" / "compare.py").read_text(encoding="utf-8"))
    labels = [n.value for n in ast.walk(tree)
              if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [v for v in labels if tracker.search(v)]
    assert "pure Python" in labels and "Cython" in labels
