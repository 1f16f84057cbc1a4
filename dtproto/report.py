"""The result of :func:`dtproto.validate`, shared by both implementations."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ._constants import RESPONSE_MAX_ERRORS, WARNING_CHANGED_KEY
from .errors import ErrorCode

__all__ = ["LineError", "LineWarning", "ValidationReport"]


class LineError(NamedTuple):
    """One invalid line: where, why (stable ``code``) and the reason text."""

    line: int
    column: int
    code: ErrorCode
    message: str
    text: str = ""


class LineWarning(NamedTuple):
    """A valid line worth a second look.

    ``code`` says which kind: ``"changed_metric_key"`` (the server will store
    it under another key, docs/protocol.md §4.1; the server reports these too)
    or ``"timestamp_in_seconds"`` (a timestamp before 1973 as milliseconds,
    almost certainly seconds, §8; a hint of dtproto's own, not part of the
    server's answer).
    """

    line: int
    message: str
    code: str = WARNING_CHANGED_KEY


class ValidationReport:
    """Outcome of validating a body or a stream, as the ingest API would see it.

    Attributes:
        lines_ok: valid data and metadata lines.
        lines_invalid: invalid lines (exact, even when ``errors`` is capped).
        errors: the first ``max_errors`` :class:`LineError` entries, in input order.
        warnings: the first ``max_warnings`` :class:`LineWarning` entries.
        error_counts: invalid lines per :class:`~dtproto.errors.ErrorCode` (exact).
        warnings_total: number of warnings (exact, even when ``warnings`` is capped).
        lines_total: every line seen, blank lines included.
    """

    __slots__ = (
        "lines_ok", "lines_invalid", "errors", "warnings", "error_counts",
        "warnings_total", "lines_total",
    )

    def __init__(self) -> None:
        self.lines_ok = 0
        self.lines_invalid = 0
        self.errors: List[LineError] = []
        self.warnings: List[LineWarning] = []
        self.error_counts: Dict[ErrorCode, int] = {}
        self.warnings_total = 0
        self.lines_total = 0

    @property
    def ok(self) -> bool:
        """True when no line is invalid."""
        return self.lines_invalid == 0

    def to_response(self) -> Dict[str, Any]:
        """The ValidationResponse JSON object the ingest API answers (docs/protocol.md §10.3).

        ``invalidLines`` is capped at 10 entries as the server does ("First 10
        errors reported"); an empty body answers ``empty request``.
        """
        error: Optional[Dict[str, Any]]
        if self.lines_ok == 0 and self.lines_invalid == 0:
            error = {"code": 400, "message": "empty request", "invalidLines": []}
        elif self.lines_invalid:
            if self.lines_invalid > RESPONSE_MAX_ERRORS:
                message = "First %d errors reported" % RESPONSE_MAX_ERRORS
            else:
                message = "%d invalid lines" % self.lines_invalid
            error = {
                "code": 400,
                "message": message,
                "invalidLines": [
                    {"line": e.line, "error": e.message}
                    for e in self.errors[:RESPONSE_MAX_ERRORS]
                ],
            }
        else:
            error = None
        warnings: Optional[Dict[str, Any]] = None
        changed = [w for w in self.warnings if w.code == WARNING_CHANGED_KEY]
        if changed:  # the server reports renamed keys only, not dtproto's hints
            warnings = {
                "message": "First %d warnings reported" % len(changed),
                "changedMetricKeys": [{"line": w.line, "warning": w.message} for w in changed],
            }
        return {
            "linesOk": self.lines_ok,
            "linesInvalid": self.lines_invalid,
            "error": error,
            "warnings": warnings,
        }

    def _state(self) -> tuple:
        return (
            self.lines_ok, self.lines_invalid, self.errors, self.warnings,
            self.error_counts, self.warnings_total, self.lines_total,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._state() == other._state()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "ValidationReport(lines_ok=%d, lines_invalid=%d, warnings=%d)" % (
            self.lines_ok, self.lines_invalid, self.warnings_total,
        )
