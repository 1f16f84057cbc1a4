"""The one place that chooses between the Cython core and the pure-Python code.

Order:

1. ``DTPROTO_NO_EXTENSIONS`` set to a true word, or not CPython → python;
2. otherwise ``import dtproto._codec_c``; on ``ImportError`` → python, keeping
   the error text;
3. ``DTPROTO_REQUIRE_EXTENSIONS`` set to a true word and we ended on python →
   ``ImportError`` with that text.

Only ``1``, ``true``, ``yes`` and ``on`` (any case) count as true, so
``DTPROTO_NO_EXTENSIONS=0`` does *not* disable the extension.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import platform
import sys
from types import ModuleType
from typing import Dict, Optional

from ._constants import TRUE_WORDS

__all__ = [
    "IMPLEMENTATION", "codec", "available_implementations", "env_flag", "extension_error",
    "build_info",
]


def env_flag(name: str) -> bool:
    """True when environment variable ``name`` holds 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


def _load_c() -> Optional[ModuleType]:
    global _c_error
    try:
        # import_module, not "from . import _codec_c": when the submodule does not
        # exist, the from-import falls back to an attribute of the half-imported
        # package and blames "a circular import"; this names the missing module.
        module = importlib.import_module(__package__ + "._codec_c")
    except ModuleNotFoundError as exc:
        if exc.name != __package__ + "._codec_c":  # the core itself failed to import
            _c_error = "%s: %s" % (type(exc).__name__, exc)
        else:
            _c_error = _why_missing()
        return None
    except ImportError as exc:  # built for another interpreter, a missing symbol, ...
        _c_error = "%s: %s" % (type(exc).__name__, exc)
        return None
    return module


def _has_core(package_dir: str) -> bool:
    """Whether ``package_dir`` holds a compiled ``_codec_c`` for this interpreter."""
    return any(
        os.path.isfile(os.path.join(package_dir, "_codec_c" + suffix))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def build_info(package_dir: Optional[str] = None) -> Optional[Dict[str, object]]:
    """What setup.py recorded when this dtproto was built, or None (a source tree).

    ``{"cython": bool, "reason": str or None}``: whether the build compiled the
    Cython core and, when it did not, why (the banner the build printed).
    """
    path = os.path.join(package_dir or _HERE, "_build_info.py")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    values: Dict[str, object] = {}
    try:
        exec(compile(text, path, "exec"), {"__builtins__": {}}, values)
    except Exception:  # a damaged file must not break "import dtproto"
        return None
    return {"cython": bool(values.get("CYTHON")), "reason": values.get("REASON")}


def _installed_elsewhere() -> Optional[str]:
    """The directory of another dtproto that this one shadows, if any.

    Looks where an import would: each ``sys.path`` entry, then the other
    finders on ``sys.meta_path`` (an editable install's finder, for one).
    """
    here = os.path.realpath(_HERE)
    specs = []
    for entry in sys.path:
        try:
            specs.append(importlib.machinery.PathFinder.find_spec(__package__, [entry or "."]))
        except Exception:
            continue
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None or finder is importlib.machinery.PathFinder:
            continue
        try:
            specs.append(find_spec(__package__, None))
        except Exception:
            continue
    for spec in specs:
        origin = getattr(spec, "origin", None)
        if origin and os.path.basename(origin) == "__init__.py":
            where = os.path.realpath(os.path.dirname(origin))
            if where != here:
                return where
    return None


def _why_missing() -> str:
    """The true reason there is no ``_codec_c`` next to this package, with the fix."""
    info = build_info()
    if info is not None:  # an installed (or editable) build that recorded its outcome
        if info["reason"]:
            return "this dtproto was built without the Cython core: %s" % (info["reason"],)
        return (
            "the Cython core was built but its module is missing from %s "
            "(reinstall dtproto)" % (_HERE,)
        )
    # No build record: dtproto is imported from a source tree that was never built.
    other = _installed_elsewhere()
    where = "dtproto is imported from %s, a source checkout with no compiled _codec_c" % (_HERE,)
    if other is not None:
        other_info = build_info(other)
        if _has_core(other):
            state = "which has the Cython core"
        elif other_info is not None and other_info["reason"]:
            state = "which was built without the Cython core: %s" % (other_info["reason"],)
        else:
            state = "which has no Cython core either"
        return (
            "%s; it shadows the installed dtproto at %s, %s. Fix: run from another "
            "directory (the current directory comes first on sys.path for "
            "'python -c' and 'python -m'), or build the checkout in place with "
            "'pip install -e .'" % (where, other, state)
        )
    return "%s. Fix: build it with 'pip install .' or 'pip install -e .'" % (where,)


_HERE = os.path.dirname(os.path.abspath(__file__))
_c_error = "disabled by DTPROTO_NO_EXTENSIONS"
_c: Optional[ModuleType] = None
if env_flag("DTPROTO_NO_EXTENSIONS"):
    pass
elif platform.python_implementation() != "CPython":
    _c_error = "the Cython core needs CPython, this is %s" % platform.python_implementation()
else:
    _c = _load_c()

from . import _codec_py  # noqa: E402  (always available: the reference)

if _c is not None:
    codec: ModuleType = _c
    IMPLEMENTATION = "cython"
else:
    if env_flag("DTPROTO_REQUIRE_EXTENSIONS"):
        raise ImportError(
            "DTPROTO_REQUIRE_EXTENSIONS is set but the Cython core is unavailable (%s)"
            % _c_error
        )
    codec = _codec_py
    IMPLEMENTATION = "python"


def available_implementations() -> Dict[str, ModuleType]:
    """Every implementation that can be loaded here: ``{"python": ..., "cython": ...}``.

    The pure-Python module is always present; the Cython one only when it was
    built and ``DTPROTO_NO_EXTENSIONS`` is not set.  Tests, benchmarks and the
    CLI use this to run side by side.
    """
    out: Dict[str, ModuleType] = {"python": _codec_py}
    if _c is not None:
        out["cython"] = _c
    return out


def extension_error() -> Optional[str]:
    """Why the Cython core is not loaded, or None when it is."""
    return None if _c is not None else _c_error
