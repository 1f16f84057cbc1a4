"""Limits and character classes of the strict profile (docs/protocol.md §2–§9, §11).

Imported by the pure-Python reference *and* the Cython core: every limit and
character class lives here once, so the two implementations cannot drift.
"""

from __future__ import annotations

# --- limits (docs/protocol.md §11) ---------------------------------------------------
MAX_LINE_CHARS = 50_000          # §2, [A-24]: code points, excluding the terminator
MIN_METRIC_KEY = 3               # §4, [A-3]
MAX_METRIC_KEY = 255             # §4, [A-1]
MAX_DIMENSION_KEY = 100          # §5
MAX_DIMENSION_VALUE = 255        # §6.2, [A-4]: decoded code points
MAX_DIMENSIONS = 50              # §5
# With Encoder options (prefix, default/static dimensions, normalize) a
# line's own pairs are merged by key, so more than 50 can still fit; reading
# stops at this many all the same, so that an endless iterator ends.
MAX_DIMENSION_PAIRS_MERGED = 20 * MAX_DIMENSIONS
MAX_UNIT = 63                    # §9, [A-17]
MAX_DISPLAY_NAME = 300           # §9, [A-17]
MAX_DESCRIPTION = 65_535         # §9, [A-17]
MAX_INT64 = 2**63 - 1            # timestamps and summary counts
MAX_TIMESTAMP_DIGITS = 19
SUMMARY_TOLERANCE = 1e-6         # §7.3: absolute tolerance on min <= avg <= max
WINDOW_PAST_MS = 3_600_000       # §8: now - 1 h (inclusive, [A-14])
WINDOW_FUTURE_MS = 600_000       # §8: now + 10 min (inclusive)
MAX_BODY_BYTES = 1_000_000       # §2, [A-21]: what a client sends at most
SERVER_MAX_BODY_BYTES = 1_048_576  # what a server accepts
ONEAGENT_MAX_LINES = 1_000       # §2: OneAgent local endpoint
RESPONSE_MAX_ERRORS = 10         # §10.3: "First 10 errors reported"

# The most bytes a line of MAX_LINE_CHARS code points can take in UTF-8 (plus a
# CR).  A streaming reader that holds more than this without seeing LF knows the
# line is too long and can stop buffering it.
MAX_LINE_BYTES = MAX_LINE_CHARS * 4 + 1

# --- character classes (docs/protocol.md §3) -------------------------------------------
ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
# metric key: first section starts with ALPHA or "_", later ones also with DIGIT.
METRIC_KEY_FIRST = frozenset(ALPHA + "_")
METRIC_KEY_SECTION_START = frozenset(ALPHA + DIGITS + "_")
METRIC_KEY_CHARS = frozenset(ALPHA + DIGITS + "_-")
# dimension key: every section starts with LOWER or "_" ([A-5]).
DIMENSION_KEY_SECTION_START = frozenset(LOWER + "_")
DIMENSION_KEY_CHARS = frozenset(LOWER + DIGITS + "_-:")
# unit: [A-Za-z0-9%[]{}/_]{1,63} (Java UnitValidator, [A-17]).
UNIT_CHARS = frozenset(ALPHA + DIGITS + "%[]{}/_")
# separators between key/dimensions, payload and timestamp ([A-15]).
SEPARATORS = " \t"
RESERVED_PREFIX = "dt."

# Escapes that decode to a single character (§6.3); "\" + anything else is kept
# literally as two characters ([A-9]).
ESCAPES = {'"': '"', "\\": "\\", ",": ",", "=": "=", " ": " "}
# What the encoder escapes in a bare value (the set all official libraries use).
ESCAPED_BY_ENCODER = ',= \\"'

# --- payload keywords (§3; lowercase and case-sensitive, [A-12]) -----------------
KIND_GAUGE = "gauge"
KIND_COUNT = "count"
KIND_SUMMARY = "summary"
KINDS = (KIND_GAUGE, KIND_COUNT, KIND_SUMMARY)
SUMMARY_FIELDS = ("min", "max", "sum", "count")
NON_FINITE_WORDS = frozenset(["nan", "inf", "infinity"])

# --- metadata (§9) -----------------------------------------------------------------
META_DISPLAY_NAME = "dt.meta.displayName"
META_DISPLAY_NAME_ALT = "dt.meta.displayname"   # docs example spelling
META_DESCRIPTION = "dt.meta.description"
META_UNIT = "dt.meta.unit"
META_PROPERTIES = frozenset([META_DISPLAY_NAME, META_DISPLAY_NAME_ALT, META_DESCRIPTION, META_UNIT])
META_TYPES = frozenset([KIND_GAUGE, KIND_COUNT])

# --- Metrics Classic key suffixing (§4.1) -----------------------------------------
COUNT_SUFFIX = ".count"
GAUGE_SUFFIX = ".gauge"
CHANGED_KEY_WARNING = "metric key '%s' changed to '%s'"

# --- timestamps that can only be seconds (docs/protocol.md §8) ----------------------
# As milliseconds, anything before 1973-01-01T00:00:00Z is more than 50 years
# old: no server window ever accepts it, while "now" in *seconds* (1.7e9) is
# right there.  validate() and the Encoder warn about such timestamps.
SECONDS_TIMESTAMP_BELOW = 94_694_400_000
SECONDS_TIMESTAMP_WARNING = ("timestamp %d is before 1973 as epoch milliseconds: "
                             "it looks like seconds (in milliseconds: %d000)")
WARNING_CHANGED_KEY = "changed_metric_key"      # LineWarning.code: what the server reports
WARNING_TIMESTAMP_SECONDS = "timestamp_in_seconds"  # LineWarning.code: a client-side hint

# --- environment switches -------------------------------------------------
TRUE_WORDS = frozenset(["1", "true", "yes", "on"])

# --- blank lines (docs/protocol.md §2) ------------------------------------------
# A line is blank when, after the one CR before its LF is removed, it is empty
# or holds only these characters.  Any other whitespace (VT, FF, NBSP, ...)
# does not make a line blank: it is judged like any other line (and fails).
BLANK_CHARS = " \t"

# --- the ingest API's vocabulary (docs/protocol.md §10) ----------------------------
# Defined once for the sender, the local server, the CLI and ValidationReport.
INGEST_PATH = "/api/v2/metrics/ingest"   # §10.1: SaaS, Managed, ActiveGate
ENVIRONMENT_PREFIX = "/e/"               # §10.1: Managed/ActiveGate: /e/{environment-id} + INGEST_PATH
ONEAGENT_PATH = "/metrics/ingest"        # §10.1: the OneAgent local API
ONEAGENT_PORT = 14499                    # §10.1: its default port
INGEST_SCOPE = "metrics.ingest"          # §10.1: the scope the API token needs
TOKEN_SCHEME = "Api-Token"               # §10.1: "Authorization: Api-Token <token>"
# The ValidationResponse (§10.3): its messages and its warnings key.
RESPONSE_EMPTY_REQUEST = "empty request"
RESPONSE_INVALID_LINES = "%d invalid lines"
RESPONSE_FIRST_ERRORS = "First %d errors reported"
RESPONSE_FIRST_WARNINGS = "First %d warnings reported"
RESPONSE_WARNINGS_KEY = "changedMetricKeys"      # the documented key
RESPONSE_WARNINGS_KEY_SEEN = "warningLines"      # what real responses carry
# How many errors and warnings validate() lists by default (counts stay exact);
# ValidationReport.merge caps the combined lists at the same numbers.
VALIDATE_MAX_LISTED = 10_000

# --- cardinality limits (docs/protocol.md §11, after the table; dtproto stats) ----------
LIMIT_SERIES_PER_METRIC = 1_000_000      # distinct series (key + dimension set) per metric, 30 days
LIMIT_SERIES_CUSTOM = 50_000_000         # distinct series of all custom metrics, 30 days
LIMIT_METRIC_KEYS = 100_000              # distinct custom metric keys
