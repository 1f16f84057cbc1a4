"""What the Cython core takes from the pure-Python reference: one explicit interface.

The Cython core decides in C whether a line is valid and writes valid lines
in C; everything that must exist exactly once lives in the reference and is
reached through these names only:

* every diagnosis: a line C rejects is scanned again by :func:`scan_line`,
  which raises :class:`LineFault` with the code, column and message;
* every encoder error and every encoder option: a call C cannot write is made
  again on :class:`ReferenceEncoder` (``Encoder._sibling()`` for one with the
  same options), which raises the ``EncodeError`` or writes the line;
* the stream loops of ``iter_decode`` and ``validate``, argument checks and
  report building, so both implementations read inputs the same way.
"""

from __future__ import annotations

from ._codec_py import (
    _add_error as add_error,
    _limit as limit_arg,
    _now as now_arg,
    _records_of_source as records_of_source,
    _validate_source as validate_source,
)
from ._encode_py import (
    Encoder as ReferenceEncoder,
    _has_options as has_options,
    _metadata_line as metadata_line,
    _record_line as record_line,
    _timestamp_value as timestamp_value,
    _warn_seconds as warn_seconds,
)
from ._input import as_bytes
from .report import LineError
from ._scan import (
    _LineFault as LineFault,
    _fault_to_error as fault_to_error,
    _scan_line as scan_line,
    classic_key,
)

__all__ = [
    "LineError",
    "LineFault",
    "ReferenceEncoder",
    "add_error",
    "as_bytes",
    "classic_key",
    "fault_to_error",
    "has_options",
    "limit_arg",
    "metadata_line",
    "now_arg",
    "record_line",
    "records_of_source",
    "scan_line",
    "timestamp_value",
    "validate_source",
    "warn_seconds",
]
