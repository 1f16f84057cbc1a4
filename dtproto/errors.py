"""Exception hierarchy and reason codes, shared by both implementations.

Both the pure-Python reference (``dtproto._codec_py``) and the Cython core
(``dtproto._codec_c``) raise these classes and build every message with
:func:`reason_text`, so the text of an error can never differ between them.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

from ._constants import RESPONSE_EMPTY_REQUEST

__all__ = [
    "TimestampWarning",
    "DtprotoError",
    "DecodeError",
    "EncodeError",
    "SendError",
    "ConfigurationError",
    "AuthenticationError",
    "MissingScopeError",
    "EndpointNotFoundError",
    "PayloadTooLargeError",
    "DeliveryError",
    "InputReadError",
    "ErrorCode",
    "reason_text",
]


class ErrorCode(str, enum.Enum):
    """Stable, machine-readable reason for an invalid line.

    The member *values* are part of the public contract (they appear in JSON
    reports); never rename one, only add.
    """

    EMPTY_REQUEST = "empty_request"
    LEADING_WHITESPACE = "leading_whitespace"
    LINE_TOO_LONG = "line_too_long"
    INVALID_UTF8 = "invalid_utf8"
    MISSING_METRIC_KEY = "missing_metric_key"
    INVALID_METRIC_KEY = "invalid_metric_key"
    METRIC_KEY_LENGTH = "metric_key_length"
    RESERVED_PREFIX = "reserved_prefix"
    INVALID_DIMENSION_KEY = "invalid_dimension_key"
    EMPTY_DIMENSION_KEY = "empty_dimension_key"
    DIMENSION_KEY_TOO_LONG = "dimension_key_too_long"
    DIMENSION_WITHOUT_VALUE = "dimension_without_value"
    UNTERMINATED_QUOTED_VALUE = "unterminated_quoted_value"
    GARBAGE_AFTER_QUOTED_VALUE = "garbage_after_quoted_value"
    DANGLING_ESCAPE = "dangling_escape"
    UNESCAPED_SPECIAL = "unescaped_special"
    CONTROL_CHARACTER = "control_character"
    DIMENSION_VALUE_TOO_LONG = "dimension_value_too_long"
    TOO_MANY_DIMENSIONS = "too_many_dimensions"
    MISSING_PAYLOAD = "missing_payload"
    INVALID_PAYLOAD = "invalid_payload"
    MISSING_DATA_POINT = "missing_data_point"
    INVALID_NUMBER = "invalid_number"
    NON_FINITE_NUMBER = "non_finite_number"
    COUNT_REQUIRES_DELTA = "count_requires_delta"
    INVALID_SUMMARY_FIELD = "invalid_summary_field"
    INCOMPLETE_SUMMARY = "incomplete_summary"
    SUMMARY_COUNT_NOT_INTEGER = "summary_count_not_integer"
    SUMMARY_COUNT_OVERFLOW = "summary_count_overflow"
    SUMMARY_MIN_GT_MAX = "summary_min_gt_max"
    SUMMARY_INCONSISTENT = "summary_inconsistent"
    SUMMARY_COUNT_ZERO = "summary_count_zero"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    UNEXPECTED_TRAILING = "unexpected_trailing"
    INVALID_METADATA_LINE = "invalid_metadata_line"
    UNKNOWN_METADATA_PROPERTY = "unknown_metadata_property"
    INVALID_UNIT = "invalid_unit"
    DISPLAY_NAME_LENGTH = "display_name_length"
    DESCRIPTION_LENGTH = "description_length"
    INVALID_RECORD = "invalid_record"

    def __str__(self) -> str:  # "invalid_metric_key", not "ErrorCode.INVALID..."
        return self.value


# How much of the offending text an error quotes.  aiohttp truncates at 100:
# error text can end up in logs, so it must never carry a whole hostile line.
SNIPPET_CHARS = 64

# Codes whose reason follows the real server's parser-style family:
# "<what> in message '<line prefix>'; error at '<char>' (index N)".
_SERVER_STYLE = {
    ErrorCode.INVALID_METRIC_KEY: "invalid metric key",
    ErrorCode.INVALID_DIMENSION_KEY: "invalid dimension key",
    ErrorCode.INVALID_PAYLOAD: "invalid metric type",
}

# Every other code: "<what>: <detail>" where the detail is the offending token.
_WHAT = {
    ErrorCode.EMPTY_REQUEST: RESPONSE_EMPTY_REQUEST,   # the API's own message (§10.3)
    ErrorCode.LEADING_WHITESPACE: "leading whitespace",
    ErrorCode.LINE_TOO_LONG: "line too long",
    ErrorCode.INVALID_UTF8: "invalid UTF-8",
    ErrorCode.MISSING_METRIC_KEY: "missing metric key",
    ErrorCode.METRIC_KEY_LENGTH: "metric key length",
    ErrorCode.RESERVED_PREFIX: "reserved dt. prefix",
    ErrorCode.EMPTY_DIMENSION_KEY: "empty dimension key",
    ErrorCode.DIMENSION_KEY_TOO_LONG: "dimension key too long",
    ErrorCode.DIMENSION_WITHOUT_VALUE: "dimension without value",
    ErrorCode.UNTERMINATED_QUOTED_VALUE: "unterminated quoted value",
    ErrorCode.GARBAGE_AFTER_QUOTED_VALUE: "garbage after quoted value",
    ErrorCode.DANGLING_ESCAPE: "dangling escape",
    ErrorCode.UNESCAPED_SPECIAL: "unescaped special character in value",
    ErrorCode.CONTROL_CHARACTER: "control character in value",
    ErrorCode.DIMENSION_VALUE_TOO_LONG: "dimension value length exceeded",
    ErrorCode.TOO_MANY_DIMENSIONS: "too many dimensions",
    ErrorCode.MISSING_PAYLOAD: "missing payload",
    ErrorCode.MISSING_DATA_POINT: "missing data point",
    ErrorCode.INVALID_NUMBER: "invalid number",
    ErrorCode.NON_FINITE_NUMBER: "non-finite number",
    ErrorCode.COUNT_REQUIRES_DELTA: "count payload requires delta=",
    ErrorCode.INVALID_SUMMARY_FIELD: "invalid summary field",
    ErrorCode.INCOMPLETE_SUMMARY: "incomplete summary",
    ErrorCode.SUMMARY_COUNT_NOT_INTEGER: "count must be a non-negative integer",
    ErrorCode.SUMMARY_COUNT_OVERFLOW: "count overflow",
    ErrorCode.INVALID_TIMESTAMP: "invalid timestamp",
    ErrorCode.TIMESTAMP_OUT_OF_RANGE: "timestamp out of range",
    ErrorCode.UNEXPECTED_TRAILING: "unexpected trailing content",
    ErrorCode.INVALID_METADATA_LINE: "invalid metadata line",
    ErrorCode.UNKNOWN_METADATA_PROPERTY: "unknown metadata property",
    ErrorCode.INVALID_UNIT: "invalid unit",
    ErrorCode.DISPLAY_NAME_LENGTH: "display name length",
    ErrorCode.DESCRIPTION_LENGTH: "description length",
    ErrorCode.INVALID_RECORD: "invalid record",
}

# Characters that end the token an error quotes.
_TOKEN_END = frozenset(" \t,")


def _snippet(text: str) -> str:
    if len(text) > SNIPPET_CHARS:
        return text[:SNIPPET_CHARS] + "..."
    return text


def _token_at(line: str, index: int) -> str:
    """The token starting at ``index``: up to the next SP, HTAB or comma."""
    end = index
    n = len(line)
    limit = index + SNIPPET_CHARS + 1
    while end < n and end < limit and line[end] not in _TOKEN_END:
        end += 1
    return line[index:end]


def _fmt6(x: float) -> str:
    # The server prints summary fields with C's %f (6 decimals).
    return "%f" % x


def reason_text(code: ErrorCode, line: str, column: int, extra: Any = None) -> str:
    """Build the human-readable reason for ``code`` at ``column`` of ``line``.

    ``line`` is the offending line as text (undecodable bytes appear as lone
    surrogates, ``surrogateescape``), ``column`` is 1-based in code points.
    ``extra`` carries the few values the text cannot be derived from: the
    measured length for length errors, ``(min, max, sum, count)`` for summary
    consistency errors, ``(now_ms,)`` is not needed (the window is fixed).

    This is the single source of every message; both implementations call it.
    """
    i = column - 1
    ch = line[i] if 0 <= i < len(line) else ""
    if code in _SERVER_STYLE:
        prefix = line[: i + 1]
        if len(prefix) > SNIPPET_CHARS:
            prefix = "..." + prefix[-SNIPPET_CHARS:]
        where = repr(ch) if ch else "end of line"
        return "%s in message %r; error at %s (index %d)" % (_SERVER_STYLE[code], prefix, where, i)
    if code is ErrorCode.SUMMARY_COUNT_ZERO:
        mn, mx, sm, cnt = extra
        return (
            "inconsistent gauge fields: count == 0 => min, max, sum == 0: "
            "min: %s, max: %s, sum: %s, count: %d" % (_fmt6(mn), _fmt6(mx), _fmt6(sm), cnt)
        )
    if code is ErrorCode.SUMMARY_INCONSISTENT:
        mn, mx, sm, cnt = extra
        return (
            "inconsistent gauge fields: min <= avg <= max doesn't hold: "
            "min: %s, max: %s, sum: %s, count: %d, avg: %s, tolerance: 0.000001"
            % (_fmt6(mn), _fmt6(mx), _fmt6(sm), cnt, _fmt6(sm / cnt))
        )
    if code is ErrorCode.SUMMARY_MIN_GT_MAX:
        mn, mx, sm, cnt = extra
        return "inconsistent gauge fields: min <= max doesn't hold: min: %s, max: %s" % (
            _fmt6(mn),
            _fmt6(mx),
        )
    what = _WHAT[code]
    if code is ErrorCode.LINE_TOO_LONG:
        # No measured length: a streaming reader stops buffering an over-long
        # line (it cannot know its length in bounded memory), and the reason
        # must be the same however the input was chunked.
        return "%s: more than %d characters" % (what, 50_000)
    if code is ErrorCode.METRIC_KEY_LENGTH:
        return "%s: %d not in 3..255" % (what, extra)
    if code is ErrorCode.DIMENSION_KEY_TOO_LONG:
        return "%s: %d > 100" % (what, extra)
    if code is ErrorCode.DIMENSION_VALUE_TOO_LONG:
        # Real server wording: "dimension value length exceeded: 401 > 250".
        return "%s: %d > 255" % (what, extra)
    if code is ErrorCode.TOO_MANY_DIMENSIONS:
        return "%s: more than 50" % (what,)
    if code is ErrorCode.DISPLAY_NAME_LENGTH:
        return "%s: %d > 300" % (what, extra)
    if code is ErrorCode.DESCRIPTION_LENGTH:
        return "%s: %d > 65535" % (what, extra)
    if code is ErrorCode.TIMESTAMP_OUT_OF_RANGE:
        return "%s: %r not within now-1h..now+10min" % (what, _token_at(line, i))
    if code in (
        ErrorCode.INVALID_UTF8,
        ErrorCode.CONTROL_CHARACTER,
        ErrorCode.UNESCAPED_SPECIAL,
        ErrorCode.GARBAGE_AFTER_QUOTED_VALUE,
        ErrorCode.DANGLING_ESCAPE,
        ErrorCode.LEADING_WHITESPACE,
    ):
        return "%s: %s" % (what, repr(ch) if ch else "end of line")
    if not ch:
        return "%s: end of line" % (what,)
    return "%s: %r" % (what, _snippet(_token_at(line, i)))


class DtprotoError(Exception):
    """Base class of every error dtproto raises on purpose."""


class DecodeError(DtprotoError, ValueError):
    """A protocol line is invalid.

    Attributes:
        line: 1-based line number within the input (every line counts,
            blank and metadata lines too).
        column: 1-based column (Unicode code points) where the problem was found.
        code: the stable :class:`ErrorCode`.
        reason: the reason text, as the ingest API would report it for the line.
        text: the offending line, truncated to 100 characters.
    """

    def __init__(
        self, code: ErrorCode, reason: str, line: int, column: int, text: str = ""
    ) -> None:
        self.code = code
        self.reason = reason
        self.line = line
        self.column = column
        self.text = text
        super().__init__(code, reason, line, column, text)

    def __str__(self) -> str:
        return "%s (line %d, column %d)" % (self.reason, self.line, self.column)

    def __repr__(self) -> str:
        return "DecodeError(%s, line=%d, column=%d)" % (self.code.value, self.line, self.column)

    def __reduce__(self) -> Any:
        return (type(self), (self.code, self.reason, self.line, self.column, self.text))


class EncodeError(DtprotoError, ValueError):
    """A record cannot be encoded into a line the decoder would accept.

    Attributes:
        field: which field is wrong (``"key"``, ``"dimensions[2].key"``,
            ``"value"``, ``"timestamp"``, ...).
        code: the stable :class:`ErrorCode` the decoder would have reported.
        record: 0-based index of the record within the ``encode()`` call, or
            ``None`` for a single :class:`~dtproto.Encoder` call.
    """

    def __init__(
        self, message: str, field: str, code: ErrorCode = ErrorCode.INVALID_RECORD,
        record: Optional[int] = None,
    ) -> None:
        self.field = field
        self.code = code
        self.record = record
        self.message = message
        super().__init__(message, field, code, record)

    def __str__(self) -> str:
        where = "field %r" % self.field
        if self.record is not None:
            where = "record %d, %s" % (self.record, where)
        return "%s (%s)" % (self.message, where)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.field, self.code, self.record))


class ConfigurationError(DtprotoError, ValueError):
    """A sender is configured in a way that cannot work or would leak the token.

    Raised by the :class:`~dtproto.Sender` constructor (and its helpers such
    as :meth:`~dtproto.Sender.saas` and :meth:`~dtproto.Sender.from_env`),
    before anything is sent.  The message never contains the token.
    """


class SendError(DtprotoError):
    """Lines could not be delivered to the ingest endpoint.

    Every error a :class:`~dtproto.Sender` raises while sending is a
    ``SendError``; the send stops there.

    Attributes:
        status: the last HTTP status, or ``None`` when no response arrived.
        body: the response body, truncated to 1,000 characters.
        result: the :class:`~dtproto.SendResult` of everything done before
            (and including) the failure, or ``None``.  Its ``undelivered``
            names the failed line range and its ``stopped_at`` the first
            input line that was never attempted.
        ambiguous: True when the server may have stored the failed lines
            anyway (the request was sent, no usable answer came back).
        unsent: for the batching API (``add``/``flush``) and for an input
            that failed to read: the bytes that were not delivered, so they
            can be re-sent or saved; else ``None``.

    The error that made the send fail (an ``OSError`` of the connection, of
    the input, ...) is chained as ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        body: str = "",
        result: Any = None,
        ambiguous: bool = False,
    ) -> None:
        self.status = status
        self.body = body[:1000]
        self.result = result
        self.ambiguous = ambiguous
        self.unsent: Optional[bytes] = None
        super().__init__(message)


class AuthenticationError(SendError):
    """401: the API token is missing, unknown, expired or revoked. Never retried."""


class MissingScopeError(SendError):
    """403: the token is valid but lacks the ``metrics.ingest`` scope. Never retried."""


class EndpointNotFoundError(SendError):
    """404/405: wrong URL path or environment, or the OneAgent ingest module is off."""


class PayloadTooLargeError(SendError):
    """413: the server's body limit is below ``max_bytes``. Never retried."""


class DeliveryError(SendError):
    """A chunk was not delivered: retries exhausted, a refused connection, an
    ambiguous failure without ``retry_ambiguous``, an unexpected status, or an
    answer that cannot be used (not a ValidationResponse, too large, not
    complete in time).  ``ambiguous`` tells whether the server may have
    stored it anyway."""


class InputReadError(SendError):
    """The input of :meth:`~dtproto.Sender.send` could not be read to its end.

    The send stops there: ``exc.result`` holds what happened to the lines
    read before (its ``input_error`` is set, so it never looks complete),
    ``exc.unsent`` the bytes read but not delivered, and ``__cause__`` the
    error of the input (``OSError``, ``EOFError``, ``zlib.error``, ...).
    """


class TimestampWarning(UserWarning):
    """A timestamp the server can only reject, most likely seconds given as milliseconds.

    Emitted by the Encoder for a timestamp before 1973 as epoch milliseconds
    (``int(time.time())`` instead of ``int(time.time() * 1000)``).  Turn it into
    an error with ``warnings.simplefilter("error", dtproto.TimestampWarning)``.
    """
