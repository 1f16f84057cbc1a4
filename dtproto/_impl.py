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

import os
import platform
from types import ModuleType
from typing import Dict, Optional

from ._constants import TRUE_WORDS

__all__ = ["IMPLEMENTATION", "codec", "available_implementations", "env_flag"]


def env_flag(name: str) -> bool:
    """True when environment variable ``name`` holds 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


def _load_c() -> Optional[ModuleType]:
    global _c_error
    try:
        from . import _codec_c  # type: ignore[attr-defined]
    except ImportError as exc:  # not built, or built for another interpreter
        _c_error = "%s: %s" % (type(exc).__name__, exc)
        return None
    return _codec_c


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
