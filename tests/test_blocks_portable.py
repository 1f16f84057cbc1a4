"""csrc/_blocks.h compiles with and without SSE2 (x86-64 and everything else).

The Cython core calls the functions its ``cdef extern from "_blocks.h"`` block
declares.  Where SSE2 is missing (ARM, say) the header's fallback branch must
define every one of them too; one that is missing only warns at compile time
(an implicit declaration) and then fails when the module is imported, so the
build silently degrades to pure Python.  That happened once (``dt_digits8``
was SSE2-only).  Here the header is compiled with ``__SSE2__`` undefined and
defined, taking the names from the .pyx itself, so the two cannot drift.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYX = os.path.join(ROOT, "csrc", "_codec_c.pyx")
HEADER = os.path.join(ROOT, "csrc", "_blocks.h")


def _compiler(tmp_path):
    """The C compiler the build would use, or None when there is none that works
    (CI's degrade pass sets CC=false)."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        return None
    probe = tmp_path / "probe.c"
    probe.write_text("int probe(void) { return 0; }\n")
    if subprocess.run(cc + ["-fsyntax-only", str(probe)], capture_output=True).returncode != 0:
        return None
    return cc


def extern_names():
    """The names the .pyx takes from _blocks.h."""
    with open(PYX, encoding="utf-8") as f:
        text = f.read()
    block = re.search(r'cdef extern from "_blocks\.h":\n((?:    .*\n|\s*\n)+?)\S', text)
    assert block, "no cdef extern from \"_blocks.h\" block in _codec_c.pyx"
    names = re.findall(r"\b(dt_\w+|DT_\w+)\b", block.group(1))
    assert "dt_digits8" in names and "DT_BLOCKS" in names, names
    return sorted(set(names))


@pytest.mark.skipif(not (os.path.exists(PYX) and os.path.exists(HEADER)),
                    reason="not a source checkout (csrc/ absent)")
@pytest.mark.skipif(sys.platform == "win32", reason="gcc/clang command line")
@pytest.mark.parametrize("flags", [[], ["-U__SSE2__"]], ids=["native", "no-sse2"])
def test_blocks_header_defines_every_name_the_core_uses(tmp_path, flags):
    cc = _compiler(tmp_path)
    if cc is None:
        pytest.skip("no C compiler")
    names = extern_names()
    src = tmp_path / "use_blocks.c"
    src.write_text('#include "_blocks.h"\n'
                   "int use(void) {\n"
                   + "".join("    (void)%s;\n" % n for n in names)
                   + "    return 0;\n}\n")
    cmd = cc + ["-fsyntax-only", "-Werror=implicit-function-declaration", "-Wall", "-Werror",
                "-Wno-unused-function"] + flags + ["-I", os.path.dirname(HEADER),
                "-I", sysconfig.get_paths()["include"], str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, "%s\n%s%s" % (" ".join(cmd), proc.stdout, proc.stderr)
