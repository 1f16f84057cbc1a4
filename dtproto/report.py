"""The result of :func:`dtproto.validate`, shared by both implementations."""

from __future__ import annotations

import struct
import sys
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

from ._constants import (RESPONSE_EMPTY_REQUEST, RESPONSE_FIRST_ERRORS, RESPONSE_FIRST_WARNINGS,
                         RESPONSE_INVALID_LINES, RESPONSE_MAX_ERRORS, RESPONSE_WARNINGS_KEY,
                         RESPONSE_WARNINGS_KEY_SEEN, VALIDATE_MAX_LISTED, WARNING_CHANGED_KEY,
                         CHANGED_KEY_WARNING, KINDS, SECONDS_TIMESTAMP_WARNING,
                         WARNING_TIMESTAMP_SECONDS)
from ._scan import classic_key
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


_Entry = TypeVar("_Entry", LineError, LineWarning)


def _extended(kept: List[_Entry], then: Sequence[_Entry], offset: int,
              cap: Optional[int]) -> None:
    """Append ``then``, moved down ``offset`` lines, to ``kept``; at most ``cap`` in all.

    In place: combining the reports of many blocks copies each entry once,
    where a new list per merge copied the kept ones again at every block
    (quadratic in the entries kept when the cap is large or None).
    """
    if cap is not None and cap < 0:
        raise ValueError("a cap must be None or >= 0, not %r" % (cap,))
    if cap is not None and len(kept) > cap:
        del kept[cap:]
    room = len(then) if cap is None else min(cap - len(kept), len(then))
    if room > 0:
        kept.extend(x._replace(line=x.line + offset) for x in then[:room])


def _is_hint(w: LineWarning) -> bool:
    """Whether a warning is one of dtproto's hints, not a rename the server reports."""
    return w.code != WARNING_CHANGED_KEY


def _hints_in(warnings: Iterable[LineWarning]) -> int:
    return sum(1 for w in warnings if _is_hint(w))


def _extended_by_kind(kept: List[LineWarning], hints: int, other: "ValidationReport",
                      offset: int, cap: Optional[int]) -> int:
    """Append ``other``'s warnings, moved down ``offset`` lines, to ``kept``,
    which holds ``hints`` hints: at most ``cap`` warnings of each kind.
    Returns the hints ``kept`` then holds.  In place, as :func:`_extended`.

    Only the warnings taken are built from ``other``'s compact records (see
    :data:`PENDING_HEADER`), and the reading stops when no more is wanted: a
    file whose renames filled their cap long ago costs nothing per block.
    """
    if cap is not None and cap < 0:
        raise ValueError("a cap must be None or >= 0, not %r" % (cap,))
    if cap is None:
        want = [_ALL, _ALL]
    else:
        if hints > cap or len(kept) - hints > cap:
            # kept with a larger cap: keep the first ``cap`` of each kind
            counts = [0, 0]
            within = []
            for w in kept:
                k = _is_hint(w)
                if counts[k] < cap:
                    counts[k] += 1
                    within.append(w)
            kept[:] = within
            hints = counts[1]
        want = [cap - (len(kept) - hints), cap - hints]
    taken = other._taken(want, offset)
    kept.extend(taken)
    return hints + _hints_in(taken)


_ALL = sys.maxsize   # "every one" in a count of warnings wanted


# Warnings kept in compact form until someone looks (see ValidationReport.warnings):
# a header of type, kind index, key length and line number, then the key's
# bytes (a renamed key) or the timestamp (one in seconds).  The Cython core
# appends these without creating a Python object per warning.
PENDING_HEADER = struct.Struct("<BBHq")
PENDING_TIMESTAMP = struct.Struct("<q")
PENDING_CHANGED_KEY = 0
PENDING_SECONDS = 1


def _decoded(data: bytes, offset: int, want: List[int]) -> List[LineWarning]:
    """The compact warnings of ``data`` as LineWarning entries moved down
    ``offset`` lines: of each kind, the first ``want[0]`` renames and
    ``want[1]`` hints (``want`` is counted down); the others are skipped
    unbuilt, and the reading stops when none is wanted any more."""
    out: List[LineWarning] = []
    pos = 0
    size = len(data)
    while pos < size and (want[0] > 0 or want[1] > 0):
        kind_type, kind, keylen, line = PENDING_HEADER.unpack_from(data, pos)
        pos += PENDING_HEADER.size
        if kind_type == PENDING_CHANGED_KEY:
            if want[0] > 0:
                want[0] -= 1
                key = data[pos:pos + keylen].decode("ascii")
                out.append(LineWarning(line + offset, CHANGED_KEY_WARNING % (
                    key, classic_key(key, KINDS[kind]))))
            pos += keylen
        else:
            if want[1] > 0:
                want[1] -= 1
                (ts,) = PENDING_TIMESTAMP.unpack_from(data, pos)
                out.append(LineWarning(line + offset, SECONDS_TIMESTAMP_WARNING % (ts, ts),
                                       WARNING_TIMESTAMP_SECONDS))
            pos += PENDING_TIMESTAMP.size
    return out


class ValidationReport:
    """Outcome of validating a body or a stream, as the ingest API would see it.

    The reports of consecutive blocks of one input combine with :meth:`merge`
    (or :meth:`combine`) into the report of the whole input, exactly.

    Attributes:
        lines_ok: valid data and metadata lines.
        lines_invalid: invalid lines (exact, even when ``errors`` is capped).
        errors: the first ``max_errors`` :class:`LineError` entries, in input order.
        warnings: :class:`LineWarning` entries in input order: the first
            ``max_warnings`` of each kind (the server's ``changed_metric_key``
            and dtproto's own ``timestamp_in_seconds`` hint), so that hints
            never crowd out a warning the server reports.
        error_counts: invalid lines per :class:`~dtproto.errors.ErrorCode` (exact).
        warnings_total: number of warnings (exact, even when ``warnings`` is capped).
        lines_total: every line seen, blank lines included.
    """

    __slots__ = (
        "lines_ok", "lines_invalid", "errors", "_warnings", "error_counts",
        "warnings_total", "lines_total", "_pending", "_pending_count", "_kept_hints",
    )

    def __init__(self) -> None:
        self.lines_ok = 0
        self.lines_invalid = 0
        self.errors: List[LineError] = []
        self._warnings: List[LineWarning] = []
        self.error_counts: Dict[ErrorCode, int] = {}
        self.warnings_total = 0
        self.lines_total = 0
        # Warnings not yet made into LineWarning objects (PENDING_* records):
        # validating a file with many of them then costs neither an object per
        # warning nor the garbage-collector passes such objects trigger.
        self._pending = bytearray()
        self._pending_count = 0
        # How many of the kept warnings (built and pending) are hints, not
        # renames: each kind has its own cap.  Kept by every path that adds
        # warnings (both validates, _extend, the setter).
        self._kept_hints = 0

    @property
    def warnings(self) -> List[LineWarning]:
        """The first ``max_warnings`` :class:`LineWarning` entries of each kind, in input order."""
        if self._pending_count:
            self._materialize()
        return self._warnings

    @warnings.setter
    def warnings(self, value: List[LineWarning]) -> None:
        self._pending = bytearray()
        self._pending_count = 0
        self._warnings = value
        self._kept_hints = _hints_in(value)

    def _materialize(self) -> None:
        self._warnings.extend(_decoded(bytes(self._pending), 0, [_ALL, _ALL]))
        self._pending = bytearray()
        self._pending_count = 0

    def _taken(self, want: List[int], offset: int) -> List[LineWarning]:
        """This report's warnings, moved down ``offset`` lines: the first
        ``want[0]`` renames and ``want[1]`` hints, in input order (``want``
        is counted down).  The report is not changed: its compact warnings
        stay compact, and only the ones taken are built."""
        out: List[LineWarning] = []
        for w in self._warnings:
            if want[0] <= 0 and want[1] <= 0:
                return out
            k = _is_hint(w)
            if want[k] > 0:
                want[k] -= 1
                out.append(w._replace(line=w.line + offset))
        if self._pending_count:
            # What the compact records hold of each kind is known (a list
            # handed out was built first, so these counts are this report's
            # own): no more is read than can be taken.
            hints = max(self._kept_hints - _hints_in(self._warnings), 0)
            want = [min(want[0], self._pending_count - hints), min(want[1], hints)]
            out += _decoded(bytes(self._pending), offset, want)
        return out

    @property
    def warnings_kept(self) -> int:
        """How many warnings are kept (``len(warnings)``, without building them)."""
        return len(self._warnings) + self._pending_count

    @property
    def ok(self) -> bool:
        """True when no line is invalid."""
        return self.lines_invalid == 0

    def merge(self, other: "ValidationReport", line_offset: Optional[int] = None, *,
              max_errors: Optional[int] = VALIDATE_MAX_LISTED,
              max_warnings: Optional[int] = VALIDATE_MAX_LISTED) -> "ValidationReport":
        """A new report: this one followed by ``other``, the report of the
        block of input that comes right after this one's (neither is changed).

        This is *the* way to combine per-block reports (``dtproto validate
        --jobs``, its streaming segments, a Dask reduction): cut the input at
        line boundaries (each block but the last ends with a newline),
        validate the blocks with the same ``now_ms``, ``max_errors`` and
        ``max_warnings``, and merge them in input order with those caps; the
        result equals validating the whole input at once.  Counts add up
        exactly; ``errors`` and ``warnings`` stay "the first N in input order".

        Args:
            other: the report of the next block (its line 1 is the first line
                after this report's lines).
            line_offset: how many input lines come before ``other``'s line 1;
                default ``self.lines_total``, which is right when this report
                covers every line before that block (a running total).  It
                must not be less than ``self.lines_total`` (blocks do not
                overlap); a larger one counts the lines in between as seen.
            max_errors, max_warnings: caps of the combined lists (``None``: no
                cap); the defaults are :func:`dtproto.validate`'s.
        """
        out = ValidationReport()
        out.lines_ok = self.lines_ok
        out.lines_invalid = self.lines_invalid
        out.warnings_total = self.warnings_total
        out.lines_total = self.lines_total
        out.error_counts = dict(self.error_counts)
        out.errors = list(self.errors)
        out._warnings = list(self.warnings)
        # counted again: the list is the caller's, who may have changed it
        out._kept_hints = _hints_in(out._warnings)
        out._extend(other, line_offset, max_errors, max_warnings)
        return out

    def _extend(self, other: "ValidationReport", line_offset: Optional[int],
                max_errors: Optional[int], max_warnings: Optional[int]) -> None:
        """:meth:`merge` in place: append ``other`` to this report.

        For a caller that owns this report and combines many blocks into it
        (:meth:`combine`, the CLI's segments): each entry is copied once.
        Checks everything before changing anything.
        """
        if not isinstance(other, ValidationReport):
            raise TypeError("merge() takes a ValidationReport, not %s" % type(other).__name__)
        offset = self.lines_total if line_offset is None else line_offset
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError("line_offset must be an int, not %s" % type(offset).__name__)
        if offset < self.lines_total:
            raise ValueError("line_offset %d falls inside this report's %d lines: merge the "
                             "reports of consecutive blocks, in input order"
                             % (offset, self.lines_total))
        for cap in (max_errors, max_warnings):
            if cap is not None and cap < 0:
                raise ValueError("a cap must be None or >= 0, not %r" % (cap,))
        warnings = self.warnings   # the compact ones made entries, in order
        self.lines_ok += other.lines_ok
        self.lines_invalid += other.lines_invalid
        self.warnings_total += other.warnings_total
        if other.lines_total:
            self.lines_total = offset + other.lines_total
        counts = self.error_counts
        for code, n in other.error_counts.items():
            counts[code] = counts.get(code, 0) + n
        _extended(self.errors, other.errors, offset, max_errors)
        self._kept_hints = _extended_by_kind(warnings, self._kept_hints, other, offset,
                                             max_warnings)

    def _warning_room(self, cap: Optional[int]) -> Tuple[Optional[int], Optional[int]]:
        """The caps of renames and of hints to validate the next block with
        (``_validate_kinds``), for a report capped at ``cap`` of each kind:
        the room each kind has left."""
        if cap is None:
            return None, None
        hints = self._kept_hints
        return max(cap - (self.warnings_kept - hints), 0), max(cap - hints, 0)

    @classmethod
    def combine(cls, reports: Iterable["ValidationReport"], *,
                max_errors: Optional[int] = VALIDATE_MAX_LISTED,
                max_warnings: Optional[int] = VALIDATE_MAX_LISTED) -> "ValidationReport":
        """The report of consecutive blocks, from their reports in input order:
        :meth:`merge` applied left to right (an empty iterable gives an empty report)."""
        total = cls()
        for report in reports:
            total._extend(report, None, max_errors, max_warnings)
        return total

    def to_response(self, *, max_reported_errors: Optional[int] = RESPONSE_MAX_ERRORS,
                    warnings_key: str = RESPONSE_WARNINGS_KEY,
                    oneagent: bool = False) -> Dict[str, Any]:
        """The JSON object the ingest API answers for this body (docs/protocol.md §10.3).

        The ValidationResponse: ``invalidLines`` is capped at 10 entries as
        the server does ("First 10 errors reported"); an empty body answers
        ``empty request``.

        The message is the server's for this report's ``lines_invalid``;
        ``invalidLines`` holds this report's first errors, so a report
        validated with ``max_errors`` below the cap lists fewer than the
        server would ("First 10 errors reported" over 3 entries).

        Args:
            max_reported_errors: entries in ``invalidLines`` (``None``: every
                error this report lists), and the N of "First N errors reported".
            warnings_key: ``"changedMetricKeys"`` (documented) or
                ``"warningLines"`` (what real responses carry).
            oneagent: the OneAgent local API's shape instead:
                ``{"error": ..., "linesValid": n, "linesInvalid": m}``.
        """
        if warnings_key not in (RESPONSE_WARNINGS_KEY, RESPONSE_WARNINGS_KEY_SEEN):
            raise ValueError("warnings_key must be %r or %r, not %r" % (
                RESPONSE_WARNINGS_KEY, RESPONSE_WARNINGS_KEY_SEEN, warnings_key))
        error: Optional[Dict[str, Any]]
        if self.lines_ok == 0 and self.lines_invalid == 0:
            error = {"code": 400, "message": RESPONSE_EMPTY_REQUEST, "invalidLines": []}
        elif self.lines_invalid:
            cap = max_reported_errors
            if cap is not None and self.lines_invalid > cap:
                message = RESPONSE_FIRST_ERRORS % cap
            else:
                message = RESPONSE_INVALID_LINES % self.lines_invalid
            listed = self.errors if cap is None else self.errors[:cap]
            error = {
                "code": 400,
                "message": message,
                "invalidLines": [{"line": e.line, "error": e.message} for e in listed],
            }
        else:
            error = None
        if oneagent:
            return {"error": error, "linesValid": self.lines_ok,
                    "linesInvalid": self.lines_invalid}
        warnings: Optional[Dict[str, Any]] = None
        changed = [w for w in self.warnings if w.code == WARNING_CHANGED_KEY]
        if changed:  # the server reports renamed keys only, not dtproto's hints
            warnings = {
                "message": RESPONSE_FIRST_WARNINGS % len(changed),
                warnings_key: [{"line": w.line, "warning": w.message} for w in changed],
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

    def __getstate__(self) -> tuple:
        # Pickled with its warnings built: one state whether or not anyone looked.
        return self._state()

    def __setstate__(self, state: tuple) -> None:
        (self.lines_ok, self.lines_invalid, self.errors, warnings, self.error_counts,
         self.warnings_total, self.lines_total) = state
        self._warnings = list(warnings)
        self._pending = bytearray()
        self._pending_count = 0
        self._kept_hints = _hints_in(self._warnings)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._state() == other._state()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "ValidationReport(lines_ok=%d, lines_invalid=%d, warnings=%d)" % (
            self.lines_ok, self.lines_invalid, self.warnings_total,
        )
