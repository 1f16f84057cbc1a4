"""dtproto: the Dynatrace metric ingestion line protocol, fast and exact.

Decode, validate and encode the text format that ``POST
/api/v2/metrics/ingest`` accepts, with a Cython core and a pure-Python
fallback that behave identically.  ``dtproto.IMPLEMENTATION`` tells which one
is loaded (``"cython"`` or ``"python"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

from ._impl import IMPLEMENTATION, codec as _codec
from .errors import (DecodeError, DtprotoError, EncodeError, ErrorCode, InputReadError, SendError,
                     TimestampWarning)
from .model import Metadata, Metric
from .report import LineError, LineWarning, ValidationReport

__version__ = "0.1.0"

if TYPE_CHECKING:  # type checkers see the fully annotated reference
    from ._codec_py import Encoder, classic_key, decode, encode, iter_decode, validate
else:
    decode = _codec.decode
    iter_decode = _codec.iter_decode
    validate = _codec.validate
    encode = _codec.encode
    Encoder = _codec.Encoder
    classic_key = _codec.classic_key

# The sender pulls in http.client, ssl and gzip, normalization unicodedata:
# imported on first use so that "import dtproto" (and the CLI's start-up) stays light.
_LAZY = {
    "Sender": "sender", "SendResult": "sender", "RequestInfo": "sender",
    "InvalidLine": "sender", "WarnedLine": "sender", "Undelivered": "sender",
    "ingest_url": "sender", "ConfigurationError": "sender",
    "AuthenticationError": "sender", "MissingScopeError": "sender",
    "EndpointNotFoundError": "sender", "PayloadTooLargeError": "sender",
    "DeliveryError": "sender",
    "normalize_metric_key": "normalize", "normalize_dimension_key": "normalize",
    "normalize_dimension_value": "normalize", "normalize_prefixed_key": "normalize",
    "normalize_display_name": "normalize", "normalize_description": "normalize",
    "normalize_unit": "normalize", "is_usable_metric_key": "normalize",
    "read_oneagent_metadata": "normalize", "Normalization": "normalize",
    "NormalizationLog": "normalize",
}


if TYPE_CHECKING:  # the lazy names, for type checkers (keep in step with _LAZY; a test checks)
    from .normalize import (
        Normalization,
        NormalizationLog,
        is_usable_metric_key,
        normalize_description,
        normalize_dimension_key,
        normalize_dimension_value,
        normalize_display_name,
        normalize_metric_key,
        normalize_prefixed_key,
        normalize_unit,
        read_oneagent_metadata,
    )
    from .sender import (
        AuthenticationError,
        ConfigurationError,
        DeliveryError,
        EndpointNotFoundError,
        InvalidLine,
        MissingScopeError,
        PayloadTooLargeError,
        RequestInfo,
        Sender,
        SendResult,
        Undelivered,
        WarnedLine,
        ingest_url,
    )


def __getattr__(name: str) -> Any:  # PEP 562
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'dtproto' has no attribute %r" % (name,))
    import importlib

    value = getattr(importlib.import_module("dtproto." + module), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    """The module's names, the lazily imported ones included (``dir(dtproto)``)."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "IMPLEMENTATION",
    "__version__",
    "decode",
    "iter_decode",
    "validate",
    "encode",
    "Encoder",
    "classic_key",
    "Metric",
    "Metadata",
    "ValidationReport",
    "LineError",
    "LineWarning",
    "DtprotoError",
    "DecodeError",
    "EncodeError",
    "SendError",
    "InputReadError",
    "TimestampWarning",
    "ErrorCode",
    *sorted(_LAZY),
]
