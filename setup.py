"""Build the optional Cython core; degrade to a pure-Python build when it cannot.

Everything else lives in pyproject.toml.  Switches (environment, read strictly:
only 1/true/yes/on count):

* ``DTPROTO_NO_EXTENSIONS``      build pure Python, no compiler needed;
* ``DTPROTO_REQUIRE_EXTENSIONS``  fail loudly if the extension cannot be built
  (release wheels, CI) instead of degrading;
* ``DTPROTO_DEBUG_BUILD``        -O1 -g with AddressSanitizer, UBSan and Cython
  bounds checks, for hunting memory bugs (run with LD_PRELOAD of libasan).
"""

import glob
import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

TRUE_WORDS = {"1", "true", "yes", "on"}


def flag(name):
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


class BuildFailed(Exception):
    pass


class guarded_build_ext(build_ext):
    """Turn every compiler failure into BuildFailed so setup() can degrade."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # PlatformError, CCompilerError, ExecError, ...
            raise BuildFailed(str(exc)) from exc
        if self.extensions:
            banner("Accelerated build: the Cython core dtproto._codec_c was compiled")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise BuildFailed(str(exc)) from exc


def banner(text):
    line = "*" * 75
    print("\n".join(["", line, text, line, ""]), file=sys.stderr)


def extensions():
    sources = sorted(glob.glob(os.path.join("csrc", "*.pyx")))
    if not sources:
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = flag("DTPROTO_DEBUG_BUILD")
    compile_args = ["-O3"] if not debug else [
        "-O1", "-g", "-fno-omit-frame-pointer",
        "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
    ]
    link_args = [] if not debug else ["-fsanitize=address,undefined"]
    directives = {
        "language_level": 3,
        "embedsignature": True,
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
    }
    exts = [
        Extension(
            "dtproto." + os.path.splitext(os.path.basename(src))[0],
            [src],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
        for src in sources
    ]
    return cythonize(exts, compiler_directives=directives, quiet=True)


def run_setup(ext_modules):
    setup(ext_modules=ext_modules, cmdclass={"build_ext": guarded_build_ext})


def main():
    require = flag("DTPROTO_REQUIRE_EXTENSIONS") or bool(os.environ.get("CIBUILDWHEEL"))
    if flag("DTPROTO_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        banner("Pure-Python build (DTPROTO_NO_EXTENSIONS set or not CPython)")
        run_setup([])
        return
    try:
        ext_modules = extensions()
    except ImportError as exc:
        if require:
            raise
        banner("WARNING: Cython is not available (%s); Pure-Python build" % exc)
        run_setup([])
        return
    except Exception as exc:  # a Cython compile error in csrc/
        if require:
            raise
        banner("WARNING: cythonize failed (%s); Pure-Python build" % exc)
        run_setup([])
        return
    try:
        run_setup(ext_modules)
    except BuildFailed as exc:
        if require:
            raise SystemExit("DTPROTO_REQUIRE_EXTENSIONS is set and the extension failed: %s" % exc)
        banner(
            "WARNING: the Cython core could not be compiled (%s).\n"
            "Pure-Python build: dtproto works, only slower." % exc
        )
        run_setup([])


main()
