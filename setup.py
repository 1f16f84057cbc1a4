"""Build the optional Cython core; degrade to a pure-Python build when it cannot.

Everything else lives in pyproject.toml.  Switches (environment, read strictly:
only 1/true/yes/on count):

* ``DTPROTO_NO_EXTENSIONS``      build pure Python, no compiler needed;
* ``DTPROTO_REQUIRE_EXTENSIONS``  fail loudly if the extension cannot be built
  (release wheels, CI) instead of degrading;
* ``DTPROTO_DEBUG_BUILD``        -O1 -g with AddressSanitizer, UBSan and Cython
  bounds checks, for hunting memory bugs (run with LD_PRELOAD of libasan).

Every build writes ``dtproto/_build_info.py`` into what it installs (the wheel,
or the source tree for an editable install; never into the sdist or git): whether
the Cython core was compiled and, when not, why.  ``dtproto --version`` and
``dtproto._impl.extension_error()`` report it at run time, so a degraded
``pip install`` whose banner scrolled away is still explained.
"""

import glob
import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

TRUE_WORDS = {"1", "true", "yes", "on"}


def flag(name):
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


# What the build being run will install, and where build_py wrote that record.
BUILD_INFO = {"cython": False, "reason": "setup.py did not record a reason"}
BUILD_INFO_FILES = []
REQUIRE = False


def build_info_text(info):
    return (
        "# Written by setup.py when this dtproto was built; not in version control.\n"
        "CYTHON = %r\n"
        "REASON = %r\n" % (bool(info["cython"]), info["reason"])
    )


def write_build_info(path):
    with open(path, "w", encoding="utf-8") as f:
        f.write(build_info_text(BUILD_INFO))


class build_py_with_info(build_py):
    """build_py that also writes dtproto/_build_info.py (see the module docstring).

    An editable install imports the package from the source tree, so the record
    goes there (it is git-ignored and excluded from the sdist); any other build
    writes it into build_lib, from which the wheel is made.  build_py runs before
    build_ext, which rewrites the record if the compile then fails.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dtproto")
        else:
            target = os.path.join(self.build_lib, "dtproto")
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, "_build_info.py")
        write_build_info(path)
        BUILD_INFO_FILES.append(path)


class guarded_build_ext(build_ext):
    """A compiler failure degrades this very build to pure Python (or, with
    DTPROTO_REQUIRE_EXTENSIONS, stops it), and the reason is recorded."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # PlatformError, CCompilerError, ExecError, ...
            if REQUIRE:
                raise SystemExit(
                    "DTPROTO_REQUIRE_EXTENSIONS is set and the extension failed: %s" % exc
                ) from exc
            banner(
                "WARNING: the Cython core could not be compiled (%s).\n"
                "Pure-Python build: dtproto works, only slower." % exc
            )
            # Nothing of the extension is installed: no outputs, no stale module.
            self.extensions = []
            self.distribution.ext_modules = []
            BUILD_INFO["cython"] = False
            BUILD_INFO["reason"] = "the C compiler failed at build time (%s)" % exc
            for path in BUILD_INFO_FILES:
                write_build_info(path)
            return
        if self.extensions:
            banner("Accelerated build: the Cython core dtproto._codec_c was compiled")


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
        # "python", not the default "c": the c format puts its own line before the
        # class docstring, which hides an Argument-Clinic "Encoder(...)\n--\n\n"
        # first line from CPython (no __text_signature__, no inspect.signature).
        "embedsignature.format": "python",
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


def run_setup(ext_modules, reason=None):
    """One setup() run; ``reason`` says why it is pure Python (None: with the core)."""
    BUILD_INFO["cython"] = bool(ext_modules)
    BUILD_INFO["reason"] = None if ext_modules else (reason or "no Cython source in csrc/")
    setup(
        ext_modules=ext_modules,
        cmdclass={"build_ext": guarded_build_ext, "build_py": build_py_with_info},
    )


def main():
    global REQUIRE
    require = REQUIRE = flag("DTPROTO_REQUIRE_EXTENSIONS") or bool(os.environ.get("CIBUILDWHEEL"))
    if flag("DTPROTO_NO_EXTENSIONS"):
        banner("Pure-Python build (DTPROTO_NO_EXTENSIONS set)")
        run_setup([], "DTPROTO_NO_EXTENSIONS was set at build time")
        return
    if platform.python_implementation() != "CPython":
        banner("Pure-Python build (not CPython)")
        run_setup([], "built on %s; the Cython core needs CPython"
                  % platform.python_implementation())
        return
    try:
        ext_modules = extensions()
    except ImportError as exc:
        if require:
            raise
        banner("WARNING: Cython is not available (%s); Pure-Python build" % exc)
        run_setup([], "Cython was not available at build time (%s)" % exc)
        return
    except Exception as exc:  # a Cython compile error in csrc/
        if require:
            raise
        banner("WARNING: cythonize failed (%s); Pure-Python build" % exc)
        run_setup([], "cythonize failed at build time (%s)" % exc)
        return
    run_setup(ext_modules)


main()
