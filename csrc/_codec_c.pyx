# cython: language_level=3
"""Cython core of dtproto: the same codec as ``dtproto._codec_py``, over raw bytes.

How this file relates to the pure-Python reference
--------------------------------------------------
The reference (``dtproto/_codec_py.py``) defines the behaviour.  This module
mirrors its *verdicts* in C, one pass per line over the UTF-8 bytes, with no
Python object touched for a valid line until its record is built (and none at
all in ``validate``).

Every *error* is diagnosed by the reference scanner: when the C scanner rejects
a line, the line is handed to ``_reference.scan_line``, which produces the code,
the column and the message.  Messages therefore cannot drift, and if the two
scanners ever disagree on validity a ``RuntimeError`` says so (the differential
tests look for it).  Errors are rare; valid lines never leave C.

Each section names the pure function it mirrors.  Differences in semantics
(fixed-width integers, bounds checks off, bytes instead of code points) are
commented where they occur.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, Py_CLEAR
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM, PyTuple_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_DecodeUTF8
from libc.math cimport isinf, isnan
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memchr, memcmp, memcpy, memset
from itertools import islice

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define DT_PREFETCH(addr) __builtin_prefetch(addr)
    #else
    #define DT_PREFETCH(addr) ((void)0)
    #endif
    /* The first lines of a dict's keys object (PyDict_Next's entries), asked
       for before the dict is read: a caller's dimension dicts lie anywhere in
       its heap, and this miss is the first of two that come one after the
       other (the keys object, then the values it points to). */
    static inline void dt_prefetch_dict(PyObject *d) {
    #if !defined(PYPY_VERSION) && !defined(Py_LIMITED_API)
        const char *k = (const char *)((PyDictObject *)d)->ma_keys;
        DT_PREFETCH(k);
        DT_PREFETCH(k + 64);
        DT_PREFETCH(k + 128);
    #else
        (void)d;
    #endif
    }
    """
    void DT_PREFETCH(const void *addr) nogil
    void dt_prefetch_dict(PyObject *d) noexcept

cdef extern from "_blocks.h":
    int DT_BLOCKS
    Py_ssize_t dt_skip_bare(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,
                       const uint16_t *cls, unsigned bit) noexcept nogil
    Py_ssize_t dt_skip_quoted(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,
                       const uint16_t *cls, unsigned bit) noexcept nogil
    Py_ssize_t dt_skip_metric_key(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,
                       const uint16_t *cls, unsigned bit) noexcept nogil
    Py_ssize_t dt_skip_dimension_key(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,
                       const uint16_t *cls, unsigned bit) noexcept nogil
    Py_ssize_t dt_metric_key_end(const uint8_t *p, Py_ssize_t n) noexcept nogil
    int dt_digits8(const uint8_t *p, uint64_t *val) noexcept nogil
    int dt_digits16_exact(const uint8_t *p, Py_ssize_t n, uint64_t *val) noexcept nogil
    Py_ssize_t dt_dimension_key_end(const uint8_t *p, Py_ssize_t n) noexcept nogil
    bint dt_equal(const void *a, const void *b, Py_ssize_t n) noexcept nogil
    Py_ssize_t dt_line_sp(const uint8_t *q, Py_ssize_t avail, Py_ssize_t *sp) noexcept nogil

cdef extern from "Python.h":
    double PyOS_string_to_double(const char *s, char **endptr,
                                 PyObject *overflow_exception) except? -1.0
    PyObject *PyType_GenericAlloc(PyTypeObject *tp, Py_ssize_t nitems) except NULL
    void PyObject_GC_UnTrack(void *op)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void *PyUnicode_DATA(object o)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1
    double PyLong_AsDouble(object o) except? -1.0

from dtproto import _codec_py
from dtproto import _constants as _k
from dtproto import _reference as R
from dtproto.errors import EncodeError
from dtproto.model import Metadata, Metric
from dtproto.report import LineWarning, ValidationReport

__all__ = ["decode", "iter_decode", "validate", "encode", "Encoder", "classic_key"]

# classic_key is a five-line string function: C would not make it faster, and
# sharing it keeps one definition (§4.1).
classic_key = R.classic_key

# --- constants, all from dtproto._constants (one source) ----------------------
cdef Py_ssize_t MAX_LINE_CHARS = _k.MAX_LINE_CHARS
cdef Py_ssize_t MIN_METRIC_KEY = _k.MIN_METRIC_KEY
cdef Py_ssize_t MAX_METRIC_KEY = _k.MAX_METRIC_KEY
cdef Py_ssize_t MAX_DIMENSION_KEY = _k.MAX_DIMENSION_KEY
cdef Py_ssize_t MAX_DIMENSION_VALUE = _k.MAX_DIMENSION_VALUE
cdef int MAX_DIMENSIONS = _k.MAX_DIMENSIONS
cdef int64_t MAX_INT64 = _k.MAX_INT64
cdef Py_ssize_t MAX_TS_DIGITS = _k.MAX_TIMESTAMP_DIGITS
cdef double SUMMARY_TOLERANCE = _k.SUMMARY_TOLERANCE
cdef object WINDOW_PAST_MS = _k.WINDOW_PAST_MS
cdef object WINDOW_FUTURE_MS = _k.WINDOW_FUTURE_MS
cdef object CHANGED_KEY_WARNING = _k.CHANGED_KEY_WARNING
from dtproto import report as _report
cdef int PENDING_CHANGED_KEY = _report.PENDING_CHANGED_KEY
cdef int PENDING_SECONDS = _report.PENDING_SECONDS
if _report.PENDING_HEADER.size != 12 or _k.KINDS != ("gauge", "count", "summary"):
    raise ImportError("_codec_c was built for a 12-byte pending-warning header and KINDS order")
cdef int64_t SECONDS_TIMESTAMP_BELOW = _k.SECONDS_TIMESTAMP_BELOW
cdef object SECONDS_TIMESTAMP_WARNING = _k.SECONDS_TIMESTAMP_WARNING
cdef object WARNING_TIMESTAMP_SECONDS = _k.WARNING_TIMESTAMP_SECONDS
cdef object KIND_GAUGE = _k.KIND_GAUGE
cdef object KIND_COUNT = _k.KIND_COUNT
cdef object KIND_SUMMARY = _k.KIND_SUMMARY
if MAX_DIMENSIONS != 50:  # LineScan.dims in the .pxd is sized for it
    raise ImportError("_codec_c was built for MAX_DIMENSIONS == 50")
if MAX_TS_DIGITS < 16:  # parse_uint reads up to 16 digits without the width check
    raise ImportError("_codec_c was built for MAX_TIMESTAMP_DIGITS >= 16")

cdef enum:
    K_GAUGE = 0
    K_COUNT = 1
    K_SUMMARY = 2

# scan results
cdef enum:
    R_INVALID = -1
    R_BLANK = 0
    R_DATA = 1
    R_META = 2

# --- character class table, built from the _constants sets -------------------
cdef enum:
    C_MK_FIRST = 1       # first char of a metric key
    C_MK_SECTION = 2     # first char of a later key section
    C_MK_CHAR = 4        # any key char but "."
    C_DK_SECTION = 8     # first char of a dimension key section
    C_DK_CHAR = 16       # any dimension key char but "."
    C_DIGIT = 32
    C_ESCAPE_ONE = 64    # "\" + this decodes to one character (§6.3)
    C_BARE_PLAIN = 128   # taken as is in a bare value: printable ASCII but , SP \ = "
    C_QUOTED_PLAIN = 256  # taken as is in a quoted value: printable ASCII but " \

cdef uint16_t CLS[256]
cdef int _b
for _b in range(256):
    CLS[_b] = 0
for _c in _k.METRIC_KEY_FIRST:
    CLS[ord(_c)] |= C_MK_FIRST
for _c in _k.METRIC_KEY_SECTION_START:
    CLS[ord(_c)] |= C_MK_SECTION
for _c in _k.METRIC_KEY_CHARS:
    CLS[ord(_c)] |= C_MK_CHAR
for _c in _k.DIMENSION_KEY_SECTION_START:
    CLS[ord(_c)] |= C_DK_SECTION
for _c in _k.DIMENSION_KEY_CHARS:
    CLS[ord(_c)] |= C_DK_CHAR
for _c in _k.DIGITS:
    CLS[ord(_c)] |= C_DIGIT
for _c in _k.ESCAPES:
    CLS[ord(_c)] |= C_ESCAPE_ONE
for _b in range(0x20, 0x7F):
    if chr(_b) not in ', \\="':
        CLS[_b] |= C_BARE_PLAIN
    if chr(_b) not in '\\"':
        CLS[_b] |= C_QUOTED_PLAIN

cdef int blocks_self_check() except -1:
    """The block skippers (_blocks.h) against CLS, for every byte value.

    Their character classes are written out in C; CLS is built from
    _constants.  Each byte is put at each position of a line of 1 to 40
    (LINE_LENGTHS) plain bytes (whole blocks, the shifted last block, the byte loop of
    short lines), skipped from offset 0 and 3: the skipper must stop there
    exactly when CLS says the byte is not in the class, else at the end.
    """
    cdef uint8_t line[40]
    # short lines (byte loop), one and two blocks with and without a shifted
    # last block, and more than two
    LINE_LENGTHS = list(range(1, 19)) + [31, 32, 33, 40]
    cdef int b, pos, k, n, start
    cdef unsigned bit
    cdef Py_ssize_t got, want
    cdef unsigned bits[4]
    bits[:] = [C_BARE_PLAIN, C_QUOTED_PLAIN, C_MK_CHAR, C_DK_CHAR]
    for k in range(4):
        if not CLS[97] & bits[k]:
            raise ImportError("_codec_c: the block self-check needs 'a' in every class")
    for b in range(256):
        # dt_metric_key_end takes a section start to be a key character but "-"
        if bool(CLS[b] & C_MK_SECTION) != (bool(CLS[b] & C_MK_CHAR) and b != 45):
            raise ImportError("_codec_c: metric key sections do not start with every key "
                              "character but '-' (byte %d)" % b)
        # dt_dimension_key_end: every key character but digits, "-" and ":"
        if bool(CLS[b] & C_DK_SECTION) != (bool(CLS[b] & C_DK_CHAR)
                                           and not (CLS[b] & C_DIGIT) and b != 45 and b != 58):
            raise ImportError("_codec_c: dimension key sections do not start with every key "
                              "character but digits, '-' and ':' (byte %d)" % b)
        for n in LINE_LENGTHS:
            for pos in range(n):
                memset(line, 97, n)
                line[pos] = <uint8_t>b
                for start in (0, 3):
                    if start > pos:
                        continue
                    for k in range(4):
                        bit = bits[k]
                        if k == 0:
                            got = dt_skip_bare(line, start, n, CLS, bit)
                        elif k == 1:
                            got = dt_skip_quoted(line, start, n, CLS, bit)
                        elif k == 2:
                            got = dt_skip_metric_key(line, start, n, CLS, bit)
                        else:
                            got = dt_skip_dimension_key(line, start, n, CLS, bit)
                        want = n if CLS[b] & bit else pos
                        if got != want:
                            raise ImportError(
                                "_codec_c: block skipper %d disagrees with the character "
                                "table on byte %d at %d of %d" % (k, b, pos, n))
    return 0


blocks_self_check()


cdef inline bint is_sep(uint8_t c) noexcept nogil:
    return c == 32 or c == 9


cdef inline bint is_control(uint8_t c) noexcept nogil:
    return c < 32 or c == 127


cdef inline Py_ssize_t utf8_seq(const uint8_t *p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Length of the valid UTF-8 sequence at p[i] (lead byte >= 0x80), or 0.

    Accepts exactly what CPython's strict UTF-8 decoder accepts (RFC 3629: no
    overlongs, no surrogates, nothing above U+10FFFF), so the verdict equals
    the reference's "no lone surrogate after surrogateescape decoding".
    """
    cdef uint8_t c = p[i], c1, c2, c3
    if 0xC2 <= c <= 0xDF:
        if i + 1 < n and (p[i + 1] & 0xC0) == 0x80:
            return 2
        return 0
    if 0xE0 <= c <= 0xEF:
        if i + 2 >= n:
            return 0
        c1 = p[i + 1]
        c2 = p[i + 2]
        if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80:
            return 0
        if c == 0xE0 and c1 < 0xA0:
            return 0
        if c == 0xED and c1 > 0x9F:
            return 0
        return 3
    if 0xF0 <= c <= 0xF4:
        if i + 3 >= n:
            return 0
        c1 = p[i + 1]
        c2 = p[i + 2]
        c3 = p[i + 3]
        if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80 or (c3 & 0xC0) != 0x80:
            return 0
        if c == 0xF0 and c1 < 0x90:
            return 0
        if c == 0xF4 and c1 > 0x8F:
            return 0
        return 4
    return 0


# --- numbers (mirrors _scan_number / _scan_uint) ------------------------------

cdef double POW10[23]
cdef uint64_t POW10_INT[8]
POW10[0] = 1.0
POW10_INT[0] = 1
for _b in range(1, 23):
    POW10[_b] = POW10[_b - 1] * 10.0
for _b in range(1, 8):
    POW10_INT[_b] = POW10_INT[_b - 1] * 10

cdef int parse_number(const uint8_t *p, Py_ssize_t a, Py_ssize_t n, Py_ssize_t *end,
                      double *out) except -1:
    """The longest number of §7.1 grammar at p[a:], then a correctly rounded conversion.

    Returns 1 and sets ``*end`` and ``*out``, or 0 when there is no number or
    it is not finite.  The caller checks that ``*end`` is a terminator: the
    grammar is greedy-safe, so "the token matches" equals "the longest match
    ends at the token's end".
    Simple decimals (at most 15 significant digits, |exponent| <= 22) take
    Clinger's fast path: one exact integer times or divided by an exact power
    of ten is a single correctly rounded IEEE operation, so the result equals
    float(text) bit for bit.  Everything else goes through CPython's own
    correctly rounded PyOS_string_to_double, i.e. exactly what float() does.
    """
    cdef Py_ssize_t i = a, sig = 0, frac = 0, start
    cdef bint neg = False, exp_neg = False, any_digit = False
    cdef uint64_t mant = 0
    cdef int64_t exp = 0, e10
    cdef uint8_t c
    cdef double v
    cdef Py_ssize_t b = n
    cdef char numbuf[72]
    cdef char *heap
    cdef int li, lf
    cdef uint64_t fpart
    if i < b and (p[i] == 43 or p[i] == 45):  # + -
        neg = p[i] == 45
        i += 1
    if b - i >= 16:
        # The common number, "123", "-0.5", "2485.291": up to 7 digits on each
        # side of the point, no exponent.  At most 14 digits and a scale of at
        # most 7: Clinger's fast path below gives the same double.
        li = dt_digits8(p + i, &mant)
        if 0 <= li < 8:
            c = p[i + li]
            if c == 46:
                lf = dt_digits8(p + i + li + 1, &fpart)
                if lf < 8 and li + lf > 0:
                    c = p[i + li + 1 + lf]
                    if c != 101 and c != 69:
                        end[0] = i + li + 1 + lf
                        v = <double>(mant * <uint64_t>POW10_INT[lf] + fpart) / POW10[lf]
                        out[0] = -v if neg else v
                        return 1
            elif li > 0 and c != 101 and c != 69:
                end[0] = i + li
                v = <double>mant
                out[0] = -v if neg else v
                return 1
        mant = 0
    # Integer part: leading zeros, then significant digits (19 fit in uint64;
    # a dropped integer digit shifts the scale).
    start = i
    while i < b and p[i] == 48:
        i += 1
    while i < b and <uint8_t>(p[i] - 48) <= 9:
        if sig < 19:
            mant = mant * 10 + (p[i] - 48)
        else:
            frac -= 1
        sig += 1
        i += 1
    any_digit = i > start
    if i < b and p[i] == 46:  # .
        i += 1
        start = i
        if sig == 0:  # zeros before the first significant digit only scale
            while i < b and p[i] == 48:
                frac += 1
                i += 1
        while i < b and <uint8_t>(p[i] - 48) <= 9:
            if sig < 19:
                mant = mant * 10 + (p[i] - 48)
                frac += 1
            sig += 1
            i += 1
        any_digit = any_digit or i > start
    if not any_digit:
        return 0
    if i < b and (p[i] == 101 or p[i] == 69):  # e E
        i += 1
        if i < b and (p[i] == 43 or p[i] == 45):
            exp_neg = p[i] == 45
            i += 1
        if i >= b or not (CLS[p[i]] & C_DIGIT):
            return 0
        while i < b and CLS[p[i]] & C_DIGIT:
            if exp < 100000000:
                exp = exp * 10 + (p[i] - 48)
            i += 1
        if exp_neg:
            exp = -exp
    end[0] = i
    b = i
    e10 = exp - frac
    if sig <= 15 and -22 <= e10 <= 22:
        v = <double>mant
        if e10 >= 0:
            v = v * POW10[e10]
        else:
            v = v / POW10[-e10]
    else:
        # A private NUL-terminated copy (never a global scratch buffer: the
        # scanner must stay free of shared state, see make_value).  No Python
        # object is created, so no collector and no Python code can run here.
        if b - a < 70:
            memcpy(numbuf, p + a, b - a)
            numbuf[b - a] = 0
            v = PyOS_string_to_double(numbuf, NULL, NULL)
        else:
            heap = <char *>PyMem_Malloc(b - a + 1)
            if heap == NULL:
                raise MemoryError()
            memcpy(heap, p + a, b - a)
            heap[b - a] = 0
            try:
                v = PyOS_string_to_double(heap, NULL, NULL)
            finally:
                PyMem_Free(heap)
        if isinf(v):
            return 0
        out[0] = v
        return 1
    out[0] = -v if neg else v
    return 1


cdef inline int parse_uint(const uint8_t *p, Py_ssize_t a, Py_ssize_t n, Py_ssize_t *end,
                           int64_t *out, bint any_width) noexcept nogil:
    """The digits at p[a:]: ``1*19DIGIT`` not above 2**63-1; 1, ``*end`` and ``*out``, or 0.

    With ``any_width`` (summary counts, §7.3) leading zeros do not count
    toward the 19 digits; timestamps (§8) keep the strict width.
    """
    cdef Py_ssize_t i = a, first
    cdef uint64_t v = 0
    if not any_width and 9 <= n - a <= 16 and dt_digits16_exact(p + a, n - a, &v):
        # The usual timestamp: 13 digits that end the line (the width check
        # below cannot fail for 16 digits or fewer).
        end[0] = n
        out[0] = <int64_t>v
        return 1
    if any_width:
        while i < n and p[i] == 48:  # leading zeros do not count toward the width
            i += 1
        if i > a and (i >= n or <uint8_t>(p[i] - 48) > 9):
            i -= 1  # the value is 0: keep one zero as its digit
    first = i
    # One pass: 19 digits fit in uint64, a 20th means "too wide" anyway.
    while i < n and <uint8_t>(p[i] - 48) <= 9:
        if i - first < MAX_TS_DIGITS:
            v = v * 10 + (p[i] - 48)
        i += 1
    end[0] = i
    if i == a or i - first > MAX_TS_DIGITS or v > <uint64_t>MAX_INT64:
        return 0
    out[0] = <int64_t>v
    return 1


# --- the line scanner (mirrors _prepare_line, _scan_data_line, ...) -----------

cdef inline bint summary_ok(double mn, double mx, double sm, int64_t cnt) noexcept nogil:
    """Mirrors _summary_problem (§7.3): True when consistent."""
    cdef double avg
    if mn > mx:
        return False
    if cnt == 0:
        return mn == 0.0 and mx == 0.0 and sm == 0.0
    # Python divides by the int converted to the nearest double; so does C.
    avg = sm / <double>cnt
    return not (mn - avg > SUMMARY_TOLERANCE or avg - mx > SUMMARY_TOLERANCE)


cdef inline Py_ssize_t scan_escape(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,
                                   Py_ssize_t *chars) noexcept nogil:
    """The escape at p[i] == "\\": offset after it, or -1 (dangling, control, bad UTF-8)."""
    cdef uint8_t e
    cdef Py_ssize_t k
    if i + 1 >= n:
        return -1
    e = p[i + 1]
    if e < 128:
        if is_control(e):
            return -1
        chars[0] += 1 if CLS[e] & C_ESCAPE_ONE else 2
        return i + 2
    k = utf8_seq(p, i + 1, n)
    if k == 0:
        return -1
    chars[0] += 2  # unknown escape: "\" and the character are kept ([A-9])
    return i + 1 + k


cdef Py_ssize_t scan_value(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,
                           DimSpan *d) noexcept nogil:
    """Mirrors _scan_value; returns the terminator offset or -1 when invalid.

    The inner loops consume runs of plain ASCII with one table lookup a byte;
    only escapes, non-ASCII and terminators leave them.
    """
    cdef Py_ssize_t chars = 0, k, start
    cdef uint8_t c
    d.escaped = 0
    if i < n and p[i] == 34:  # quoted
        i += 1
        d.vs = i
        while True:
            start = i
            i = dt_skip_quoted(p, i, n, CLS, C_QUOTED_PLAIN)
            chars += i - start
            if i >= n:
                return -1  # unterminated
            c = p[i]
            if c == 34:
                break
            if c == 92:
                d.escaped = 1
                i = scan_escape(p, i, n, &chars)
                if i < 0:
                    return -1
                continue
            if c < 128:
                return -1  # control
            k = utf8_seq(p, i, n)
            if k == 0:
                return -1
            i += k
            chars += 1
        d.ve = i
        i += 1
        if i < n and not (p[i] == 44 or is_sep(p[i])):
            return -1
    else:
        d.vs = i
        while True:
            start = i
            i = dt_skip_bare(p, i, n, CLS, C_BARE_PLAIN)
            chars += i - start
            if i >= n:
                break
            c = p[i]
            if c == 44 or c == 32:
                break
            if c == 92:
                d.escaped = 1
                i = scan_escape(p, i, n, &chars)
                if i < 0:
                    return -1
                continue
            if c < 128:
                return -1  # = " and controls (HTAB too: only SP ends a bare value)
            k = utf8_seq(p, i, n)
            if k == 0:
                return -1
            i += k
            chars += 1
        d.ve = i
    if chars > MAX_DIMENSION_VALUE:
        return -1
    return i


cdef Py_ssize_t scan_metric_key(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """The metric key's byte loop (p[0] checked): the offset after it, or -1.

    dt_metric_key_end decides keys that end 16 bytes or more before the end
    of the line; this loop decides the rest, with the same result.  The
    caller checks what ends the key.
    """
    cdef Py_ssize_t i = 1
    cdef uint8_t c
    while True:
        i = dt_skip_metric_key(p, i, n, CLS, C_MK_CHAR)
        if i >= n:
            return i
        c = p[i]
        if c == 46:  # "." then a section start
            i += 1
            if i >= n or not (CLS[p[i]] & C_MK_SECTION):
                return -1
            i += 1
            continue
        if c == 44 or is_sep(c):
            return i
        return -1


cdef Py_ssize_t scan_dimension_key(const uint8_t *p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The byte loop of the dimension key at p[i:]: the offset of its "=", or -1.

    dt_dimension_key_end decides keys that end 16 bytes or more before the
    end of the line; this loop decides the rest, with the same result.
    """
    cdef uint8_t c
    if i >= n or not (CLS[p[i]] & C_DK_SECTION):
        return -1
    i += 1
    while True:
        i = dt_skip_dimension_key(p, i, n, CLS, C_DK_CHAR)
        if i >= n:
            return -1
        c = p[i]
        if c == 46:
            i += 1
            if i >= n or not (CLS[p[i]] & C_DK_SECTION):
                return -1
            i += 1
            continue
        if c == 61:
            return i
        return -1


cdef Py_ssize_t scan_head(const uint8_t *p, Py_ssize_t n, LineScan *L) noexcept nogil:
    """Metric key and dimensions; returns the offset after them or -1.

    Mirrors _scan_metric_key, _scan_dimension_key and the dimension loop of
    _scan_data_line.  A section start is checked right after each ".", so the
    inner loops only test "is a plain key character".
    """
    cdef Py_ssize_t i, ks
    cdef uint8_t c
    cdef DimSpan *d
    if n == 0 or not (CLS[p[0]] & C_MK_FIRST):
        return -1
    i = dt_metric_key_end(p, n)
    if i == -1:
        return -1
    if i >= 0:
        c = p[i]
        if not (c == 44 or is_sep(c)):
            return -1
    else:
        i = scan_metric_key(p, n)
        if i < 0:
            return -1
    if i < MIN_METRIC_KEY or i > MAX_METRIC_KEY:
        return -1
    if p[0] == 100 and p[1] == 116 and p[2] == 46:  # "dt."
        return -1
    L.keylen = i
    L.ndims = 0
    if i < n and p[i] == 44:
        i += 1
        while True:
            if L.ndims == MAX_DIMENSIONS:
                return -1
            d = &L.dims[L.ndims]
            ks = i
            i = dt_dimension_key_end(p + ks, n - ks)
            if i >= 0:
                i += ks
                if p[i] != 61:
                    return -1
            elif i == -1:
                return -1
            else:
                i = scan_dimension_key(p, ks, n)
                if i < 0:
                    return -1
            if i - ks > MAX_DIMENSION_KEY:
                return -1
            d.ks = ks
            d.kl = i - ks
            i = scan_value(p, i + 1, n, d)
            if i < 0:
                return -1
            L.ndims += 1
            if i < n and p[i] == 44:
                i += 1
                continue
            break
    if i >= n:
        return -1
    return i


cdef inline bint ends_token(const uint8_t *p, Py_ssize_t j, Py_ssize_t n) noexcept nogil:
    return j >= n or is_sep(p[j])


cdef int scan_tail(const uint8_t *p, Py_ssize_t i, Py_ssize_t n, LineScan *L,
                   int64_t lo, int64_t hi) except -2:
    """Payload, timestamp and trailing content from the separator at ``i``.

    Mirrors _scan_payload, _scan_summary and the end of _scan_data_line in a
    single pass: each field is parsed greedily and must end where the
    reference's token ends (SP/HTAB/end, or "," between summary fields).
    ``lo``/``hi`` is the inclusive timestamp window (lo > hi: no timestamp
    fits; lo = 0 and hi = MAX_INT64: no window).  Returns R_DATA or R_INVALID.
    """
    cdef Py_ssize_t j, q
    cdef int seen = 0, bit
    cdef uint8_t c
    cdef double v
    cdef int64_t t
    while i < n and is_sep(p[i]):
        i += 1
    L.mn = L.mx = L.sm = 0.0
    L.cnt = 0
    if n - i >= 6 and memcmp(p + i, b"gauge,", 6) == 0:
        q = i + 6
        c = p[q] if q < n else 0
        if (65 <= c <= 90) or (97 <= c <= 122):
            # Field names are letters, numbers never start with one: this is
            # a summary exactly when the reference finds "=" (else both fail).
            L.kind = K_SUMMARY
            while True:
                if n - q >= 4 and memcmp(p + q, b"min=", 4) == 0:
                    bit = 1
                    q += 4
                elif n - q >= 4 and memcmp(p + q, b"max=", 4) == 0:
                    bit = 2
                    q += 4
                elif n - q >= 4 and memcmp(p + q, b"sum=", 4) == 0:
                    bit = 4
                    q += 4
                elif n - q >= 6 and memcmp(p + q, b"count=", 6) == 0:
                    bit = 8
                    q += 6
                else:
                    return R_INVALID
                if seen & bit:
                    return R_INVALID
                seen |= bit
                if bit == 8:
                    if not parse_uint(p, q, n, &q, &L.cnt, True):
                        return R_INVALID
                else:
                    if not parse_number(p, q, n, &q, &v):
                        return R_INVALID
                    if bit == 1:
                        L.mn = v
                    elif bit == 2:
                        L.mx = v
                    else:
                        L.sm = v
                if q < n and p[q] == 44:
                    q += 1
                    continue
                break
            j = q
            if not ends_token(p, j, n) or seen != 15 or not summary_ok(L.mn, L.mx, L.sm, L.cnt):
                return R_INVALID
        else:
            L.kind = K_GAUGE
            if not parse_number(p, q, n, &j, &L.value) or not ends_token(p, j, n):
                return R_INVALID
    elif n - i >= 12 and memcmp(p + i, b"count,delta=", 12) == 0:
        L.kind = K_COUNT
        if not parse_number(p, i + 12, n, &j, &L.value) or not ends_token(p, j, n):
            return R_INVALID
    else:
        c = p[i]
        # A letter here is "invalid metric type" or a nan/inf word: both invalid.
        if (65 <= c <= 90) or (97 <= c <= 122):
            return R_INVALID
        L.kind = K_GAUGE
        if not parse_number(p, i, n, &j, &L.value) or not ends_token(p, j, n):
            return R_INVALID
    L.has_ts = 0
    i = j
    while i < n and is_sep(p[i]):
        i += 1
    if i < n:
        if not parse_uint(p, i, n, &j, &t, False) or not ends_token(p, j, n):
            return R_INVALID
        if t < lo or t > hi:
            return R_INVALID
        L.has_ts = 1
        L.ts = t
        while j < n and is_sep(p[j]):
            j += 1
        if j < n:
            return R_INVALID
    return R_DATA


cdef int prepare_line(const uint8_t *p, Py_ssize_t *np) except -2:
    """Mirrors _prepare_line on p[:*np]: strips CR and trailing blanks.

    Returns R_BLANK, R_META, R_DATA (scan it) or R_INVALID; updates ``*np``.
    """
    cdef Py_ssize_t n = np[0]
    if n > 0 and p[n - 1] == 13:
        n -= 1
    if n > MAX_LINE_CHARS:
        # More bytes than the limit allows characters: count code points the
        # way the reference does (undecodable bytes count one each).
        if len(PyBytes_FromStringAndSize(<const char *>p, n).decode(
                "utf-8", "surrogateescape")) > MAX_LINE_CHARS:
            return R_INVALID
    cdef Py_ssize_t full = n, k
    while n > 0 and is_sep(p[n - 1]):
        n -= 1
    if n > 0 and n < full and p[n - 1] == 92:
        # "" + SP is an escape (§6.3), not a trailing blank: after an odd run
        # of backslashes the first blank belongs to the value.
        k = n - 1
        while k > 0 and p[k - 1] == 92:
            k -= 1
        if (n - k) % 2:
            n += 1
    np[0] = n
    if n == 0:
        return R_BLANK
    if is_sep(p[0]):
        return R_INVALID
    if p[0] == 35:  # "#": metadata lines are rare, the reference scans them
        return R_META
    return R_DATA


# --- building records ---------------------------------------------------------

cdef enum:
    # A 2-way set-associative cache of validated key+dimension heads: realistic
    # streams repeat a few thousand series, so most lines skip the head scan
    # and reuse the key and dims objects.  32,768 entries bound its memory.
    HEAD_SETS = 16384

cdef HeadEntry HEADS[HEAD_SETS * 2]


cdef void clear_heads() noexcept:
    """Empty every HEADS entry; runs no Python code (the cached objects are
    exact str and tuples of them).  At import the static table is all zeros:
    nothing to free yet."""
    cdef Py_ssize_t i
    cdef char *data
    cdef PyObject *key
    cdef PyObject *dims
    for i in range(HEAD_SETS * 2):
        data = HEADS[i].data
        key = <PyObject *>HEADS[i].key
        dims = <PyObject *>HEADS[i].dims
        HEADS[i].length = 0
        HEADS[i].prefix = -1
        HEADS[i].data = NULL
        HEADS[i].key = NULL
        HEADS[i].dims = NULL
        HEADS[i].epoch = 0
        PyMem_Free(data)
        Py_XDECREF(key)
        Py_XDECREF(dims)


clear_heads()

# Shared state and re-entrancy.  Building a record allocates, an allocation
# can start the garbage collector, and the collector runs Python code
# (gc.callbacks, finalizers) that may decode again or hand the GIL to another
# thread that does.  So: the scanners (scan_data and below) never create a
# Python object; nothing reads a cache slot after a call that may run Python
# code (decode_block re-finds the slot by its bytes before attaching objects);
# scratch buffers are per call, on the stack; LAST_TS is read into a local.
cdef object LAST_TS = None    # timestamps repeat across a batch: reuse the int
cdef int64_t LAST_TS_VALUE = -1


cdef inline uint64_t head_hash(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    # Two independent lanes of 8 bytes break the multiply dependency chain;
    # the slot is verified with memcmp, so quality only affects the hit rate.
    cdef uint64_t h1 = 0x9E3779B97F4A7C15ULL ^ <uint64_t>n, h2 = 0xC2B2AE3D27D4EB4FULL
    cdef uint64_t w1, w2
    cdef Py_ssize_t total = n
    while n >= 16:
        memcpy(&w1, p, 8)
        memcpy(&w2, p + 8, 8)
        h1 = (h1 ^ w1) * 0xff51afd7ed558ccdULL
        h2 = (h2 ^ w2) * 0xc4ceb9fe1a85ec53ULL
        h1 ^= h1 >> 32
        h2 ^= h2 >> 29
        p += 16
        n -= 16
    if n >= 8:
        memcpy(&w1, p, 8)
        h1 = (h1 ^ w1) * 0xff51afd7ed558ccdULL
        p += 8
        n -= 8
    if n:
        if total >= 8:
            # The last 1..7 bytes as the head's last 8 (overlapping bytes
            # already hashed): one load, where a byte loop mispredicts its
            # end on every line (heads differ in length).
            memcpy(&w2, p + n - 8, 8)
        else:
            w2 = 0
            while n:
                n -= 1
                w2 = (w2 << 8) | p[n]
        h2 = (h2 ^ w2) * 0xc4ceb9fe1a85ec53ULL
    h1 ^= h2 * 0x9E3779B97F4A7C15ULL
    return h1 ^ (h1 >> 29)


cdef enum:
    # Bytes of a scanned value: at most MAX_DIMENSION_VALUE (255) code points,
    # each at most 4 bytes including its escape ("\\" + ASCII is 2 bytes for
    # one character, an unknown escape "\\" + 4 bytes is 5 bytes for two).
    UNESC_STACK = 1024


cdef object make_value(const uint8_t *p, DimSpan *d):
    """The decoded value of a dimension (mirrors the unescaping of _scan_value)."""
    cdef Py_ssize_t need
    cdef char stack[UNESC_STACK]
    cdef char *buf = stack
    if not d.escaped:
        return PyUnicode_DecodeUTF8(<const char *>p + d.vs, d.ve - d.vs, NULL)
    need = d.ve - d.vs
    if need > UNESC_STACK:  # cannot happen for a scanned value; stay safe anyway
        buf = <char *>PyMem_Malloc(need)
        if buf == NULL:
            raise MemoryError()
        try:
            return unescape_into(p, d, buf)
        finally:
            PyMem_Free(buf)
    return unescape_into(p, d, buf)


cdef object unescape_into(const uint8_t *p, DimSpan *d, char *buf):
    cdef Py_ssize_t i, o = 0
    cdef uint8_t c, e
    i = d.vs
    while i < d.ve:
        c = p[i]
        if c == 92:
            e = p[i + 1]
            if e < 128 and CLS[e] & C_ESCAPE_ONE:
                buf[o] = <char>e
                o += 1
                i += 2
                continue
            # unknown escape: "\" and the character are both kept ([A-9])
            buf[o] = <char>c
            o += 1
            i += 1
            continue
        buf[o] = <char>c
        o += 1
        i += 1
    return PyUnicode_DecodeUTF8(buf, o, NULL)


# --- interned keys and dimension pairs ------------------------------------------
#
# When series do not repeat, most of a head still does: metric keys and most
# dimension pairs (host=..., region=...) come from small sets; an id in one
# dimension makes the head unique.  Two small caches map the raw bytes of a
# metric key, and of a ``key=value`` span as written, to the str / (key, value)
# tuple built for them before, so a new series costs objects only for what is
# new in it (and its records share the rest).  Entries hold their bytes
# inline (no allocation to store or evict); longer spans are not cached.
# Re-entrancy: a lookup takes its own reference at once; a new object is built
# first (which may run Python code) and stored after, in a step that runs none.

cdef enum:
    INTERN_INLINE = 48
    PAIR_SETS = 4096
    KEY_SETS = 512


cdef struct InternEntry:
    uint64_t hash
    Py_ssize_t length     # 0: empty
    void *obj             # owned reference
    char data[INTERN_INLINE]


cdef InternEntry PAIRS[PAIR_SETS * 2]
cdef InternEntry KEYS[KEY_SETS * 2]
# Admission to PAIRS (a "doorkeeper", as in TinyLFU): a pair is stored on its
# second sighting only.  An id dimension (pod=..., request=...) gives every line
# a pair seen once; storing it would evict a pair that repeats, and the evicted
# tuple's reference count is a cache miss on memory nobody else touches.  A
# slot holds 16 bits of the hash of the last pair that was turned away there.
cdef enum:
    PAIR_DOOR = PAIR_SETS * 4
cdef uint16_t PAIR_SEEN[PAIR_DOOR]
for _b in range(PAIR_DOOR):
    PAIR_SEEN[_b] = 0
for _b in range(PAIR_SETS * 2):
    PAIRS[_b].length = 0
    PAIRS[_b].obj = NULL
for _b in range(KEY_SETS * 2):
    KEYS[_b].length = 0
    KEYS[_b].obj = NULL


cdef inline object intern_find(InternEntry *table, Py_ssize_t sets, const uint8_t *p,
                               Py_ssize_t n, uint64_t h):
    """The cached object for ``p[:n]`` (a new reference), or None."""
    cdef InternEntry *e = &table[(h & (sets - 1)) * 2]
    if e.hash == h and e.length == n and memcmp(e.data, p, n) == 0:
        return <object>e.obj
    e += 1
    if e.hash == h and e.length == n and memcmp(e.data, p, n) == 0:
        return <object>e.obj
    return None


cdef inline void intern_store(InternEntry *table, Py_ssize_t sets, const uint8_t *p,
                              Py_ssize_t n, uint64_t h, object obj) noexcept:
    """Remember ``obj`` for ``p[:n]``; runs no Python code (the evicted object is
    an exact str or a tuple of them)."""
    cdef InternEntry *e = &table[(h & (sets - 1)) * 2]
    cdef PyObject *old
    if e.length != 0 and ((e + 1).length == 0 or (h >> 40) & 1):
        e += 1
    old = <PyObject *>e.obj
    Py_INCREF(obj)
    e.obj = <void *>obj
    e.hash = h
    e.length = n
    memcpy(e.data, p, n)
    Py_XDECREF(old)


cdef object make_key(const uint8_t *p, Py_ssize_t n):
    cdef uint64_t h
    if n > INTERN_INLINE:
        return PyUnicode_DecodeLatin1(<const char *>p, n, NULL)
    h = head_hash(p, n)
    key = intern_find(KEYS, KEY_SETS, p, n, h)
    if key is None:
        key = PyUnicode_DecodeLatin1(<const char *>p, n, NULL)
        intern_store(KEYS, KEY_SETS, p, n, h, key)
    return key


cdef object make_pair(const uint8_t *p, DimSpan *d, uint64_t h):
    """The (key, value) tuple of a dimension, untracked (mirrors _scan_value).

    ``h`` is the head_hash of its bytes when they fit INTERN_INLINE (see
    prefetch_pairs)."""
    cdef Py_ssize_t n = d.ve - d.ks  # "key=value" as written (an opening quote included)
    if n <= INTERN_INLINE:
        pair = intern_find(PAIRS, PAIR_SETS, p + d.ks, n, h)
        if pair is not None:
            return pair
    # The key through the KEYS table too: when the pair is new (an id in its
    # value) its key usually is not, and one object fewer a line is one
    # allocation and one deallocation fewer on memory nobody else touches.
    dk = make_key(p + d.ks, d.kl)
    dv = make_value(p, d)
    pair = PyTuple_New(2)
    Py_INCREF(dk)
    PyTuple_SET_ITEM(pair, 0, dk)
    Py_INCREF(dv)
    PyTuple_SET_ITEM(pair, 1, dv)
    # A tuple of str cannot be part of a cycle: the collector need not
    # track it (CPython untracks such tuples itself, but only later).
    PyObject_GC_UnTrack(<void *>pair)
    if n <= INTERN_INLINE and admit_pair(h):
        intern_store(PAIRS, PAIR_SETS, p + d.ks, n, h, pair)
    return pair


cdef inline bint admit_pair(uint64_t h) noexcept nogil:
    """Whether a pair missing from PAIRS was turned away before (see PAIR_SEEN)."""
    cdef Py_ssize_t slot = (h >> 24) & (PAIR_DOOR - 1)
    cdef uint16_t tag = <uint16_t>(h >> 48) | 1  # never 0, the empty slot
    if PAIR_SEEN[slot] == tag:
        return True
    PAIR_SEEN[slot] = tag
    return False


cdef inline void prefetch_pairs(const uint8_t *p, LineScan *L, uint64_t *hashes) noexcept nogil:
    """The pair hashes of a scanned head into ``hashes`` (0: too long to
    intern), each one's PAIRS set asked for.

    When series do not repeat, the PAIRS sets are cold (a 590 kB table):
    asking for every dimension's set before the first lookup (make_dims,
    after make_key) lets their misses overlap instead of coming one after
    another.
    """
    cdef int k
    cdef Py_ssize_t n
    for k in range(L.ndims):
        n = L.dims[k].ve - L.dims[k].ks
        if n <= INTERN_INLINE:
            hashes[k] = head_hash(p + L.dims[k].ks, n)
            DT_PREFETCH(&PAIRS[(hashes[k] & (PAIR_SETS - 1)) * 2])
        else:
            hashes[k] = 0


cdef object make_dims(const uint8_t *p, LineScan *L, const uint64_t *hashes):
    """The dims tuple of a scanned head (``hashes`` from prefetch_pairs); it
    and its pairs untracked.  The caller makes the key: a (key, dims) tuple
    to return both would cost an allocation a line."""
    cdef int k
    cdef object dims = PyTuple_New(L.ndims)
    # Untracked at once: while it is being filled (allocations, so possibly a
    # collection) no gc.get_objects() in a callback may see its empty slots.
    PyObject_GC_UnTrack(<void *>dims)
    for k in range(L.ndims):
        pair = make_pair(p, &L.dims[k], hashes[k])
        Py_INCREF(pair)
        PyTuple_SET_ITEM(dims, k, pair)
    return dims


cdef inline void set_item(object t, Py_ssize_t i, object o):
    Py_INCREF(o)
    PyTuple_SET_ITEM(t, i, o)


cdef object make_metric(object key, object dims, LineScan *L):
    """A Metric built in place (the same layout tuple.__new__(Metric, ...) gives).

    The record holds only str, float, int, None and an untracked dims tuple,
    so it is untracked too: building a million records triggers no collector
    work proportional to what is already alive.
    """
    global LAST_TS, LAST_TS_VALUE
    cdef PyObject *raw = PyType_GenericAlloc(<PyTypeObject *>Metric, 9)
    cdef object rec = <object>raw
    Py_DECREF(rec)  # <object> took its own reference
    set_item(rec, 0, key)
    set_item(rec, 1, dims)
    if L.kind == K_SUMMARY:
        set_item(rec, 2, KIND_SUMMARY)
        set_item(rec, 3, None)
        set_item(rec, 4, PyFloat_FromDouble(L.mn))
        set_item(rec, 5, PyFloat_FromDouble(L.mx))
        set_item(rec, 6, PyFloat_FromDouble(L.sm))
        set_item(rec, 7, PyLong_FromLongLong(L.cnt))
    else:
        set_item(rec, 2, KIND_GAUGE if L.kind == K_GAUGE else KIND_COUNT)
        set_item(rec, 3, PyFloat_FromDouble(L.value))
        set_item(rec, 4, None)
        set_item(rec, 5, None)
        set_item(rec, 6, None)
        set_item(rec, 7, None)
    if L.has_ts:
        ts = LAST_TS
        if L.ts != LAST_TS_VALUE or ts is None:
            ts = PyLong_FromLongLong(L.ts)
            LAST_TS = ts
            LAST_TS_VALUE = L.ts
        set_item(rec, 8, ts)
    else:
        set_item(rec, 8, None)
    PyObject_GC_UnTrack(<void *>rec)
    return rec


cdef HeadEntry *find_head(const uint8_t *p, Py_ssize_t n, Py_ssize_t *fs,
                          uint64_t *hash) noexcept:
    """The cache entry holding this line's head, or NULL.

    The candidate head ends at the first SP (``*fs``, -1 when there is none).
    On entry ``*fs``/``*hash`` may hold the look-ahead's first SP and hash of
    this line (``*fs`` < 0: none); they are used when ``*fs`` < ``n``.
    Cached heads never hold an HTAB (see store_head), so a line whose first
    separator is an HTAB can never match by mistake.
    """
    cdef const void *sp
    cdef uint64_t h
    cdef HeadEntry *e
    cdef Py_ssize_t f = fs[0]
    if 0 <= f < n:  # found by the look-ahead (first SP of the untrimmed line): reuse
        h = hash[0]
    else:
        sp = memchr(p, 32, n)
        if sp == NULL:
            fs[0] = -1
            return NULL
        f = <const uint8_t *>sp - p
        fs[0] = f
        h = head_hash(p, f)
        hash[0] = h
    e = &HEADS[(h & (HEAD_SETS - 1)) * 2]
    if e.prefix == f and e.hash == h and head_matches(e, p, n):
        return e
    e += 1
    if e.prefix == f and e.hash == h and head_matches(e, p, n):
        return e
    return NULL


cdef inline bint head_matches(HeadEntry *e, const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """Whether the line p[:n], whose first SP is at ``e.prefix``, starts with the
    cached head followed by an SP.  The head scan reads nothing past the
    separator that ends the head, so such a line's head scans exactly as the
    cached one did."""
    if e.length != e.prefix and not (e.length < n and p[e.length] == 32):
        return False
    return dt_equal(e.data, p, e.length)


cdef HeadEntry *store_head(const uint8_t *p, Py_ssize_t fs, uint64_t h,
                           LineScan *L) noexcept:
    """Remember a valid head that ends at ``fs``, the line's first SP; NULL if not.

    The lookup hashes the line up to its first SP; a head whose quoted value
    holds a space ends at a later SP, so the entry keeps both offsets
    (``prefix``, ``length``).  A head that ends at an HTAB is not stored: it
    is a different head after a bare value (there the HTAB is a control
    character), and the lookup only looks for heads that end at an SP.
    """
    cdef HeadEntry *e
    cdef char *copy
    cdef char *old_data
    cdef PyObject *old_key
    cdef PyObject *old_dims
    cdef Py_ssize_t i
    cdef Py_ssize_t hl = L.head_end
    if fs < 0 or fs > hl or p[hl] != 32:
        return NULL
    for i in range(hl):
        if p[i] == 9:
            return NULL
    e = &HEADS[(h & (HEAD_SETS - 1)) * 2]
    if e.length != 0 and (e + 1).length == 0:
        e += 1
    elif e.length != 0 and (h >> 40) & 1:
        e += 1  # both ways taken: evict one by a hash bit
    copy = <char *>PyMem_Malloc(hl)
    if copy == NULL:
        return NULL  # the cache is an optimisation: skip it under memory pressure
    memcpy(copy, p, hl)
    old_data = e.data
    old_key = <PyObject *>e.key
    old_dims = <PyObject *>e.dims
    # The slot is consistent before anything is released (the old objects
    # are exact str and tuples of str: releasing them runs no Python code).
    e.data = copy
    e.length = hl
    e.prefix = fs
    e.hash = h
    e.keylen = L.keylen
    e.epoch = 0
    e.key = NULL
    e.dims = NULL
    L.head_hash = h
    PyMem_Free(old_data)
    Py_XDECREF(old_key)
    Py_XDECREF(old_dims)
    return e


cdef void attach_objects(const uint8_t *p, Py_ssize_t f, uint64_t h,
                         object key, object dims) noexcept:
    """Give the cached head ``p[:f]`` (hash ``h``) its key and dims objects.

    Called after building them, which may have run Python code (see LAST_TS):
    the slot scan_data stored may since hold another head, or none.  So the
    slot is found again by its bytes; when the head is gone nothing is
    attached, and when another decode attached equal objects meanwhile they
    are kept.
    """
    cdef HeadEntry *e = &HEADS[(h & (HEAD_SETS - 1)) * 2]
    if not (e.length == f and e.hash == h and dt_equal(e.data, p, f)):
        e += 1
        if not (e.length == f and e.hash == h and dt_equal(e.data, p, f)):
            return
    if e.key != NULL:
        return
    Py_INCREF(key)
    Py_INCREF(dims)
    e.key = <void *>key
    e.dims = <void *>dims


# --- window -----------------------------------------------------------------

cdef void window(object now_ms, int64_t *lo, int64_t *hi):
    """The inclusive window as int64 (mirrors the check in _scan_data_line).

    Python compares unbounded ints; clamping to the representable timestamps
    0..2**63-1 gives the same verdict for every timestamp the grammar allows.
    """
    if now_ms is None:
        lo[0] = 0
        hi[0] = MAX_INT64
        return
    plo = now_ms - WINDOW_PAST_MS
    phi = now_ms + WINDOW_FUTURE_MS
    if phi < 0 or plo > MAX_INT64:
        lo[0] = 1
        hi[0] = 0
        return
    lo[0] = 0 if plo < 0 else plo
    hi[0] = MAX_INT64 if phi > MAX_INT64 else phi


# --- bodies -----------------------------------------------------------------

cdef object diagnose(bytes buf, Py_ssize_t a, Py_ssize_t b, object now_ms, Py_ssize_t lineno):
    """Run the reference scanner on a line the C scanner did not accept.

    Returns (fault, raw) for an invalid line, or (None, record) when it is a
    metadata line (or a blank one) the reference accepts.
    """
    raw = buf[a:b].decode("utf-8", "surrogateescape")
    try:
        rec = R.scan_line(raw, now_ms)
    except R.LineFault as f:
        return f, raw
    return None, rec


cdef object disagreement(object rec, Py_ssize_t lineno):
    return RuntimeError(
        "internal error: the Cython scanner rejected line %d but the reference "
        "accepts it as %r; please report this" % (lineno, rec))


# --- when the head cache pays (adaptive) ---------------------------------------
#
# A lookup that misses costs a hash, a cache-line miss in a 1.5 MB table and,
# to store the head, a malloc/free: when series do not repeat (ids in
# dimensions) that is pure loss.  So each user of the cache (validate, which
# saves only the head scan on a hit, and decode, which also saves building the
# key and dimension objects) measures its hit rate over windows of lookups and
# goes "cold" below its break-even: then only one line in COLD_SAMPLE (on
# average) is looked up and stored, which keeps measuring, and the cache warms
# up again as soon as series repeat.  Plain ints, no pointers: re-entrancy
# cannot break them.
#
# The sampled lines are drawn at random strides, not every COLD_SAMPLE-th line:
# a body validated again and again (a benchmark, a retry) whose line count is a
# multiple of the stride would have the same lines sampled every time, their
# heads found where the last pass stored them, and a "hit rate" near 100% that
# a warm cache would never see on it (unique series: 1 in 10).  The cache then
# went warm for a window of misses every few passes; validate of 300,000
# unique lines took 40 ms instead of 33.  A sample costs a cache-line miss in
# the table and a malloc/free (~0.75 us here), so one in 128 lines, not 32: a
# cold window is still ~4,096 lines, and series that start repeating are
# stored, hit and warm the cache four times later than at one in 32 (500
# series: decode after ~60,000 lines, validate ~90,000).  A verdict on 32
# samples is noisier than on 128: at a true hit rate of 45% decode warms up
# by mistake once in ~30 verdicts, for one warm window of 1,024 lookups.
#
# A high hit rate is not enough for validate: a hit reads the cached head's
# bytes, a malloc'd copy anywhere in memory, and when the heads being hit no
# longer fit the CPU caches that read costs more than scanning the head
# again (30,000 series: validate 1.35-1.65x faster cold than warm at a 90%
# hit rate; 4,000 and 10,000 series: warm 1.3x and 1.1x faster).  So
# validate also counts the distinct heads it hits in each LIVE_WINDOW of
# warm lookups (an entry remembers the window it was last hit in) and goes
# cold when they are more than LIVE_MAX in two windows running (a window
# that spans a switch from one set of series to another counts both sets);
# it then sits out LIVE_BACKOFF cold verdicts before the hit rate may warm
# it again.  decode is left alone: a
# hit also saves building the key and dimension objects, and at 30,000
# series it gains as much as it loses.

cdef struct CacheStats:
    int cold              # 1: only sampled lines use the cache
    int lookups           # in the current window
    int hits
    unsigned int tick     # while cold: lines to go to the next sampled one (>= 1)
    uint32_t rng          # xorshift32 state of the sampling strides (never 0)
    unsigned int epoch    # validate: the live-set window (never 0)
    int epoch_lookups     # warm lookups in it
    int live              # distinct entries hit in it (at most LIVE_WINDOW)
    int strikes           # windows running with more than LIVE_MAX
    int backoff           # cold verdicts to sit out before warming up again

cdef enum:
    CACHE_WINDOW = 1024   # lookups per verdict while warm
    COLD_WINDOW = 32      # sampled lookups per verdict while cold (~4,096 lines)
    COLD_SAMPLE = 128     # ~ the mean stride of the sampled lines; power of two
    # 10,000 series give ~9,600 distinct heads in 32,768 lookups, 30,000
    # series ~19,700: the break-even (~15,000 series) lies between.
    LIVE_WINDOW = 32768
    LIVE_MAX = 12288
    LIVE_BACKOFF = 64     # cold verdicts: 262,144 lines

# [0] validate, [1] decode; percentages: go cold below, warm again at or above
cdef bint CACHE_ADAPTIVE = True
cdef CacheStats CACHE_STATS[2]
cdef int COLD_BELOW[2]
cdef int WARM_AT[2]
CACHE_STATS[0].cold = CACHE_STATS[1].cold = 0
CACHE_STATS[0].lookups = CACHE_STATS[1].lookups = 0
CACHE_STATS[0].hits = CACHE_STATS[1].hits = 0
CACHE_STATS[0].tick = CACHE_STATS[1].tick = 1
cdef uint32_t RNG_SEED[2]
RNG_SEED[0] = 0x9E3779B9
RNG_SEED[1] = 0x85EBCA6B
CACHE_STATS[0].rng = RNG_SEED[0]
CACHE_STATS[1].rng = RNG_SEED[1]
CACHE_STATS[0].epoch = CACHE_STATS[1].epoch = 1
CACHE_STATS[0].epoch_lookups = CACHE_STATS[1].epoch_lookups = 0
CACHE_STATS[0].live = CACHE_STATS[1].live = 0
CACHE_STATS[0].backoff = CACHE_STATS[1].backoff = 0
CACHE_STATS[0].strikes = CACHE_STATS[1].strikes = 0
# Measured on dtproto._corpus at 1,000 / 30,000 / 100,000 series and every
# line unique (bench/cardinality.py): a store (malloc, memcpy, and an eviction
# whose reference counts sit in cold memory) costs about what a hit saves, so
# the break-even is high even for decode.  With 3%/25% the cache stayed warm
# at 100,000 series over 300,000 lines and made decode 2.1x and validate 1.5x
# slower than cold.
COLD_BELOW[0] = 60
WARM_AT[0] = 75
COLD_BELOW[1] = 50
WARM_AT[1] = 60


cdef inline void count_lookup(CacheStats *st, bint hit, bint need_objects) noexcept nogil:
    st.lookups += 1
    st.hits += hit
    if not need_objects and not st.cold:
        st.epoch_lookups += 1
        if st.epoch_lookups >= LIVE_WINDOW:
            st.strikes = st.strikes + 1 if st.live > LIVE_MAX else 0
            new_epoch(st)
            if st.strikes >= 2 and CACHE_ADAPTIVE:
                go_cold(st)
                st.strikes = 0
                st.backoff = LIVE_BACKOFF
                st.lookups = st.hits = 0
                return
    if st.lookups < (COLD_WINDOW if st.cold else CACHE_WINDOW):
        return
    if st.cold:
        if st.backoff > 0:
            st.backoff -= 1
        elif st.hits * 100 >= st.lookups * WARM_AT[need_objects]:
            # The live-set window goes on: with many heads, evictions make
            # the hit rate dip below COLD_BELOW now and then, and a window
            # restarted at every warm-up would never be judged.
            st.cold = 0
    elif st.hits * 100 < st.lookups * COLD_BELOW[need_objects] and CACHE_ADAPTIVE:
        go_cold(st)
    st.lookups = 0
    st.hits = 0


cdef inline void go_cold(CacheStats *st) noexcept nogil:
    st.cold = 1
    st.tick = next_stride(st)


cdef inline unsigned int next_stride(CacheStats *st) noexcept nogil:
    """Lines to the next sampled one: uniform in [COLD_SAMPLE/2, 3*COLD_SAMPLE/2)."""
    cdef uint32_t x = st.rng
    x ^= x << 13
    x ^= x >> 17
    x ^= x << 5
    st.rng = x
    return COLD_SAMPLE // 2 + <unsigned int>(x & (COLD_SAMPLE - 1))


cdef inline bint sampled_next(CacheStats *st) noexcept nogil:
    """While cold: whether the line after the current one will be sampled
    (scan_data counts the current one down first)."""
    return st.tick == 2


cdef inline void new_epoch(CacheStats *st) noexcept nogil:
    st.epoch += 1
    if st.epoch == 0:  # wrapped: 0 means "never hit"
        st.epoch = 1
    st.epoch_lookups = 0
    st.live = 0


cdef inline void note_live(CacheStats *st, HeadEntry *e) noexcept nogil:
    """Count ``e`` among the distinct heads validate hit in this window."""
    if e.epoch != st.epoch:
        e.epoch = st.epoch
        st.live += 1


def _cache_state():
    """(validate, decode) head-cache modes, "warm" or "cold" (for tests and benchmarks)."""
    return tuple("cold" if CACHE_STATS[k].cold else "warm" for k in range(2))


def _line_sp(bytes q not None):
    """(first LF or len(q), first SP before it or -1) as the look-ahead finds them (tests)."""
    cdef Py_ssize_t sp
    cdef Py_ssize_t n = dt_line_sp(<const uint8_t *>PyBytes_AS_STRING(q), PyBytes_GET_SIZE(q), &sp)
    return n, sp


def _cache_clear():
    """Empty the head cache (tests that need a known starting state)."""
    clear_heads()


def _cache_adaptive(bint on):
    """Let the head cache go cold (the default) or pin it warm; returns the old setting.

    For tests that must exercise the cache on every line whatever the hit rate.
    The sampling strides start again from their seed, so which lines a cold
    cache samples does not depend on what ran before.
    """
    global CACHE_ADAPTIVE
    old = CACHE_ADAPTIVE
    CACHE_ADAPTIVE = on
    for k in range(2):
        CACHE_STATS[k].cold = 0
        CACHE_STATS[k].lookups = CACHE_STATS[k].hits = 0
        CACHE_STATS[k].backoff = CACHE_STATS[k].strikes = 0
        CACHE_STATS[k].tick = 1
        CACHE_STATS[k].rng = RNG_SEED[k]
        new_epoch(&CACHE_STATS[k])
    return old


cdef int scan_data(const uint8_t *p, Py_ssize_t n, LineScan *L, int64_t lo, int64_t hi,
                   bint need_objects, HeadEntry **entry, Py_ssize_t ahead_fs,
                   uint64_t ahead_h) except -2:
    """One prepared data line through the head cache: R_DATA or R_INVALID.

    On R_DATA ``L`` holds the payload and ``L.keylen``.  ``*entry`` is the
    cache slot of the head: with its objects when the head came from the cache
    (``entry.key`` set if ``need_objects``), or freshly stored after a full
    scan (no objects yet, ``L`` holds the spans), or NULL when not cacheable
    (or not looked up: the cache is cold).
    """
    cdef Py_ssize_t fs = ahead_fs, after
    cdef uint64_t h = ahead_h
    cdef int r
    cdef CacheStats *st = &CACHE_STATS[need_objects]
    cdef HeadEntry *hit
    if st.cold:
        if st.tick > 1:  # (never 0 here: go_cold and the line below set it)
            st.tick -= 1
            entry[0] = NULL
            after = scan_head(p, n, L)
            if after < 0:
                return R_INVALID
            L.head_end = after
            return scan_tail(p, after, n, L, lo, hi)
        st.tick = next_stride(st)
    hit = find_head(p, n, &fs, &h)
    if hit != NULL and (hit.key != NULL or not need_objects):
        if not need_objects and not st.cold:  # the window counts warm lookups only
            note_live(st, hit)
        count_lookup(st, True, need_objects)
        entry[0] = hit
        L.keylen = hit.keylen
        L.head_end = -1  # spans not scanned: use the entry
        return scan_tail(p, hit.length, n, L, lo, hi)
    count_lookup(st, False, need_objects)
    entry[0] = NULL
    after = scan_head(p, n, L)
    if after < 0:
        return R_INVALID
    L.head_end = after
    r = scan_tail(p, after, n, L, lo, hi)
    if r == R_DATA:
        if hit != NULL:  # cached by validate, without objects
            L.head_hash = h
            entry[0] = hit
        else:
            entry[0] = store_head(p, fs, h, L)
    return r


cdef inline Py_ssize_t look_ahead(const uint8_t *q, Py_ssize_t avail, bint need_objects,
                                  Py_ssize_t *fs, uint64_t *h) noexcept nogil:
    """The next line q[:avail]: its length (to its LF), and its first SP (``*fs``),
    head hash (``*h``) and a prefetch of its cache set.

    Done while the current line is still being scanned, so the set (a random
    line of a 1.5 MB table) is in cache when the next lookup needs it.
    ``*fs`` is -1 when the cache is cold and the next line is not sampled (no
    lookup coming: the LF alone is searched) or the line has no SP.
    """
    cdef const void *nl
    cdef Py_ssize_t n
    if CACHE_STATS[need_objects].cold and not sampled_next(&CACHE_STATS[need_objects]):
        fs[0] = -1
        nl = memchr(q, 10, avail)
        return (<const uint8_t *>nl - q) if nl != NULL else avail
    n = dt_line_sp(q, avail, fs)
    if fs[0] >= 0:
        h[0] = head_hash(q, fs[0])
        DT_PREFETCH(&HEADS[(h[0] & (HEAD_SETS - 1)) * 2])
    return n


cdef object decode_block(bytes buf, Py_ssize_t lineno, object now_ms, bint skip, list out):
    """Decode whole lines of ``buf`` into ``out``; return the first DecodeError or None.

    Mirrors _records.  Line ``lineno`` is the first line of ``buf``.
    """
    cdef const uint8_t *base = <const uint8_t *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t pos = 0, end, n
    cdef const uint8_t *p
    cdef const void *nl
    cdef int r
    cdef int64_t lo, hi
    cdef LineScan L
    cdef HeadEntry *hit
    cdef Py_ssize_t next_end = -1, next_fs = -1, cur_fs
    cdef uint64_t next_h = 0, cur_h
    cdef uint64_t hashes[50]  # MAX_DIMENSIONS, as LineScan.dims
    window(now_ms, &lo, &hi)
    while pos < size:
        if next_end >= 0:
            end = next_end
        else:
            nl = memchr(base + pos, 10, size - pos)
            end = (<const uint8_t *>nl - base) if nl != NULL else size
        cur_fs = next_fs
        cur_h = next_h
        next_end = -1
        next_fs = -1
        if end + 1 < size:  # look ahead: find the next line and prefetch its cache set
            next_end = end + 1 + look_ahead(base + end + 1, size - end - 1, True, &next_fs,
                                            &next_h)
        p = base + pos
        n = end - pos
        r = prepare_line(p, &n)
        if r == R_DATA:
            r = scan_data(p, n, &L, lo, hi, True, &hit, cur_fs, cur_h)
            if r == R_DATA:
                if L.head_end < 0:  # from the cache, objects included
                    # Own references first: make_metric may run Python code.
                    key = <object>hit.key
                    dims = <object>hit.dims
                    out.append(make_metric(key, dims, &L))
                else:
                    prefetch_pairs(p, &L, hashes)
                    key = make_key(p, L.keylen)
                    dims = make_dims(p, &L, hashes)
                    if hit != NULL:  # never use hit here: make_key/make_dims may run Python code
                        attach_objects(p, L.head_end, L.head_hash, key, dims)
                    out.append(make_metric(key, dims, &L))
        if r == R_INVALID or r == R_META:
            fault, rec = diagnose(buf, pos, end, now_ms, lineno)
            if fault is None:
                if r == R_INVALID:
                    raise disagreement(rec, lineno)
                if rec is not None:
                    out.append(rec)
            elif not skip:
                return R.fault_to_error(fault, rec, lineno)
        pos = end + 1
        lineno += 1
    return None


def decode(data, *, now_ms=None):
    now_ms = R.now_arg(now_ms)
    cdef bytes buf = R.as_bytes(data)
    cdef list out = []
    err = decode_block(buf, 1, now_ms, False, out)
    if err is not None:
        raise err
    return out


def _decode_records(bytes block, Py_ssize_t lineno, now_ms, bint skip):
    """The records of a block of whole lines (the reference's _decode_block)."""
    cdef list out = []
    err = decode_block(block, lineno, now_ms, skip, out)
    yield from out
    if err is not None:
        raise err


def iter_decode(source, *, now_ms=None, errors="raise"):
    if errors not in ("raise", "skip"):
        raise ValueError("errors must be 'raise' or 'skip', not %r" % (errors,))
    # The stream loop is the reference's; only the blocks are decoded in C.
    return R.records_of_source(source, R.now_arg(now_ms), errors == "skip", _decode_records)


cdef inline void put_le(char *w, uint64_t v, int nbytes) noexcept nogil:
    cdef int k
    for k in range(nbytes):
        w[k] = <char>(v & 0xFF)
        v >>= 8


cdef int pend_warning(bytearray out, int typ, int kind, const uint8_t *key, Py_ssize_t keylen,
                      int64_t lineno, int64_t ts) except -1:
    """Append one compact warning (report.PENDING_HEADER, then the key or the
    timestamp): no Python object per warning, and nothing for the collector."""
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(out)
    cdef Py_ssize_t extra = 12 + (keylen if typ == PENDING_CHANGED_KEY else 8)
    cdef char *w
    PyByteArray_Resize(out, old + extra)
    w = PyByteArray_AS_STRING(out) + old
    w[0] = <char>typ
    w[1] = <char>kind
    put_le(w + 2, <uint64_t>keylen if typ == PENDING_CHANGED_KEY else 0, 2)
    put_le(w + 4, <uint64_t>lineno, 8)
    if typ == PENDING_CHANGED_KEY:
        memcpy(w + 12, key, keylen)
    else:
        put_le(w + 12, <uint64_t>ts, 8)
    return 0


cdef Py_ssize_t validate_block(object report, bytes buf, Py_ssize_t lineno, object now_ms,
                               object max_errors, object max_renames,
                               object max_hints) except -1:
    """Mirrors _validate_lines: counts only, no Python object per valid line.

    Warnings are appended in compact form (``report._pending``) and only made
    into LineWarning objects when someone reads ``report.warnings``.
    """
    cdef const uint8_t *base = <const uint8_t *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t pos = 0, end, n, ok = 0, warned = 0, cap_w, cap_h
    cdef const uint8_t *p
    cdef const void *nl
    cdef int r
    cdef bint suffix = False
    cdef int64_t lo, hi
    cdef LineScan L
    cdef HeadEntry *hit
    cdef Py_ssize_t keylen, renames, hints
    cdef Py_ssize_t next_end = -1, next_fs = -1, cur_fs
    cdef uint64_t next_h = 0, cur_h
    cdef bytearray pending = bytearray()
    cdef Py_ssize_t pending_count = 0, pending_hints = 0
    # each kind of warning has its cap (mirrors _validate_text)
    cap_w = -1 if max_renames is None else max_renames
    cap_h = -1 if max_hints is None else max_hints
    hints = report._kept_hints
    renames = report.warnings_kept - hints
    window(now_ms, &lo, &hi)
    while pos < size:
        if next_end >= 0:
            end = next_end
        else:
            nl = memchr(base + pos, 10, size - pos)
            end = (<const uint8_t *>nl - base) if nl != NULL else size
        cur_fs = next_fs
        cur_h = next_h
        next_end = -1
        next_fs = -1
        if end + 1 < size:  # look ahead: find the next line and prefetch its cache set
            next_end = end + 1 + look_ahead(base + end + 1, size - end - 1, False, &next_fs,
                                            &next_h)
        p = base + pos
        n = end - pos
        r = prepare_line(p, &n)
        if r == R_DATA:
            r = scan_data(p, n, &L, lo, hi, False, &hit, cur_fs, cur_h)
        if r == R_DATA:
            ok += 1
            keylen = L.keylen
            suffix = keylen >= 6 and memcmp(p + keylen - 6, b".count", 6) == 0
            if suffix != (L.kind == K_COUNT):
                warned += 1
                if cap_w < 0 or renames + (pending_count - pending_hints) < cap_w:
                    # K_GAUGE, K_COUNT, K_SUMMARY index _constants.KINDS
                    pend_warning(pending, PENDING_CHANGED_KEY, L.kind, p, keylen, lineno, 0)
                    pending_count += 1
            if L.has_ts and L.ts < SECONDS_TIMESTAMP_BELOW:
                warned += 1
                if cap_h < 0 or hints + pending_hints < cap_h:
                    pend_warning(pending, PENDING_SECONDS, 0, NULL, 0, lineno, L.ts)
                    pending_count += 1
                    pending_hints += 1
        elif r == R_INVALID or r == R_META:
            fault, rec = diagnose(buf, pos, end, now_ms, lineno)
            if fault is None:
                if r == R_INVALID:
                    raise disagreement(rec, lineno)
                if rec is not None:
                    ok += 1
            else:
                R.add_error(report, fault, rec, lineno, max_errors)
        pos = end + 1
        lineno += 1
    report.lines_ok += ok
    report.warnings_total += warned
    if pending_count:
        report._pending += pending
        report._pending_count += pending_count
        report._kept_hints += pending_hints
    return lineno


def _validate_block(report, bytes block, Py_ssize_t lineno, now_ms, max_errors, max_renames,
                    max_hints):
    """Count a block of whole lines into ``report``; the number of its last line."""
    return validate_block(report, block, lineno, now_ms, max_errors, max_renames,
                          max_hints) - 1


def validate(source, *, now_ms=None, max_errors=_k.VALIDATE_MAX_LISTED,
             max_warnings=_k.VALIDATE_MAX_LISTED):
    # The stream loop is the reference's; only the blocks are validated in C.
    return R.validate_source(source, now_ms, max_errors, max_warnings, _validate_block)


def _validate_kinds(source, now_ms, max_errors, max_renames, max_hints):
    """validate() with a cap for each kind of warning (mirrors the reference's)."""
    return R.validate_source(source, now_ms, max_errors, max_renames, _validate_block,
                             max_hints)


# --- encoding (mirrors the encoder half of _codec_py) ------------------------

cdef inline bint metric_key_ok(const uint8_t *u, Py_ssize_t n) noexcept nogil:
    """Mirrors _metric_key_problem() is None for a whole key (bytes of a str)."""
    cdef Py_ssize_t i
    if n < MIN_METRIC_KEY or n > MAX_METRIC_KEY or not (CLS[u[0]] & C_MK_FIRST):
        return False
    i = 1
    while True:
        while i < n and CLS[u[i]] & C_MK_CHAR:
            i += 1
        if i >= n:
            break
        if u[i] != 46:
            return False
        i += 1
        if i >= n or not (CLS[u[i]] & C_MK_SECTION):
            return False
        i += 1
    return not (u[0] == 100 and u[1] == 116 and u[2] == 46)


cdef inline bint dimension_key_ok(const uint8_t *u, Py_ssize_t n) noexcept nogil:
    """Mirrors _dimension_key_problem() is None."""
    cdef Py_ssize_t i
    if n == 0 or n > MAX_DIMENSION_KEY or not (CLS[u[0]] & C_DK_SECTION):
        return False
    i = 1
    while True:
        while i < n and CLS[u[i]] & C_DK_CHAR:
            i += 1
        if i >= n:
            return True
        if u[i] != 46:
            return False
        i += 1
        if i >= n or not (CLS[u[i]] & C_DK_SECTION):
            return False
        i += 1


cdef object _py_fail(object call, tuple args):
    """Re-run a call that C rejected through the reference, which raises the error.

    The reference is the single source of EncodeError fields and messages.
    If it accepts what C rejected, that is a bug worth shouting about.
    """
    call(*args)
    raise RuntimeError(
        "internal error: the Cython encoder rejected %r but the reference accepts it; "
        "please report this" % (args,))


cdef object _materialize(object dimensions):
    """Dimensions as something iterable twice (C first, the reference on error).

    Twice down to the pairs: a pair that is not a tuple or a list (an
    iterator, a generator) may be readable once only, so it is read here,
    as the reference's ``k, v = pair`` reads it, and both sides see the same
    values.  Found by the fuzzer: C used to unpack such a pair itself, give
    up on its key, and leave the reference an exhausted pair.
    """
    if dimensions is None or type(dimensions) is dict:
        return dimensions
    if type(dimensions) is tuple or type(dimensions) is list:
        return _pairs_read_once(dimensions)
    if hasattr(dimensions, "items"):
        return dimensions   # items() gives fresh pairs on every call
    try:
        it = iter(dimensions)
    except TypeError:  # not iterable: the reference raises the EncodeError
        return dimensions
    # At most one pair too many is read: a 51st is refused anyway, and an
    # endless iterator must not be drained.
    pairs = []
    try:
        pairs.extend(islice(it, MAX_DIMENSIONS + 1))
    except Exception as exc:
        # The iterable broke part-way (found by a red-team pass: this was
        # taken for "not iterable", and the line was written without the
        # pairs already read).  Both sides read the pairs, then the error.
        return _Replay(_pairs_read_once(pairs), exc)
    return _pairs_read_once(pairs)


class _Replay:
    """The pairs a one-shot iterable gave before it raised, then its error:
    iterated by the C path and again by the reference, each sees the same."""

    __slots__ = ("pairs", "exc")

    def __init__(self, pairs, exc):
        self.pairs = pairs
        self.exc = exc

    def __iter__(self):
        yield from self.pairs
        raise self.exc


class _Unreadable:
    """A pair whose reading raised (a one-shot iterator that broke): unpacking
    it raises that error again, on either side, where the pair is reached."""

    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc

    def __iter__(self):
        raise self.exc


cdef object _pairs_read_once(object seq):
    """``seq`` if its pairs (up to one too many) are tuples and lists; else a
    copy in which every other pair is replaced by the tuple that unpacking it
    reads (``k, v = pair`` reads a third item to refuse it, so does this).
    The copy keeps every pair, so the reference still counts them all."""
    cdef Py_ssize_t i, first = -1, n = min(len(seq), MAX_DIMENSIONS + 1)
    for i in range(n):
        if type(seq[i]) is not tuple and type(seq[i]) is not list:
            first = i
            break
    if first < 0:
        return seq
    out = list(seq)
    for i in range(first, n):
        pair = out[i]
        if type(pair) is not tuple and type(pair) is not list:
            try:
                it = iter(pair)
            except TypeError:
                continue   # not iterable: the reference says "not a pair"
            try:
                out[i] = tuple(islice(it, 3))
            except Exception as exc:   # it broke part-way: raised where it is unpacked
                out[i] = _Unreadable(exc)
    return out


cdef bint _plain_pairs(object dims):
    """Dimensions of a record the C path may read without using anything up:
    None, a dict, or a tuple or list whose pairs (up to one too many) are
    tuples and lists.  A Metric holds nothing else unless it was built with
    tuple.__new__; then the reference alone reads it, once."""
    cdef Py_ssize_t i
    if dims is None or type(dims) is dict:
        return True
    if type(dims) is not tuple and type(dims) is not list:
        return False
    for i in range(min(len(dims), MAX_DIMENSIONS + 1)):
        if type(dims[i]) is not tuple and type(dims[i]) is not list:
            return False
    return True


# --- one line at a time -------------------------------------------------------
#
# Every Encoder call builds its line in a private Out buffer (on the C stack,
# spilling to the heap for long lines) and appends it to the encoder's buffer
# in one step that runs no Python code.  Building a line can run Python code
# (a Mapping's items(), a number's __float__, the garbage collector), and
# with it another thread's or a nested call of the same Encoder: staging makes
# every call line-atomic, as the reference is (it appends finished lines).

cdef enum:
    OUT_INLINE = 1024
    ENCODER_FIRST_CAP = 1 << 16
    DIRECT_TAIL = 13 + 40 + 21 + 1   # Encoder._write_direct: payload, timestamp, LF

cdef long long DOUBLE_EXACT = 1LL << 53   # ints up to this are exact as doubles


cdef struct Out:
    char *buf             # inl, or a PyMem block once the line outgrows it
    Py_ssize_t len
    Py_ssize_t cap
    bint ascii_only       # with options: non-ASCII values go to the reference
    char inl[OUT_INLINE]


cdef inline void out_init(Out *o, bint ascii_only) noexcept:
    o.buf = o.inl
    o.len = 0
    o.cap = OUT_INLINE
    o.ascii_only = ascii_only


cdef inline void out_free(Out *o) noexcept:
    if o.buf != o.inl:
        PyMem_Free(o.buf)
        o.buf = o.inl


cdef inline Py_ssize_t grown(Py_ssize_t cap, Py_ssize_t need) noexcept nogil:
    """A buffer capacity for ``need`` bytes: ``cap`` (4096 when 0) doubled until it fits.

    The one growth rule of the C core's buffers (Out, Col, Body, Encoder);
    past half the address space it asks for exactly ``need``.
    """
    if cap <= 0:
        cap = 4096
    while cap < need:
        if cap > PY_SSIZE_T_MAX // 2:
            return need
        cap *= 2
    return cap


cdef int out_reserve(Out *o, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap
    cdef char *nb
    if o.len + extra <= o.cap:
        return 0
    cap = grown(o.cap, o.len + extra)
    if o.buf == o.inl:
        nb = <char *>PyMem_Malloc(cap)
        if nb != NULL:
            memcpy(nb, o.inl, o.len)
    else:
        nb = <char *>PyMem_Realloc(o.buf, cap)
    if nb == NULL:
        raise MemoryError()
    o.buf = nb
    o.cap = cap
    return 0


cdef inline int out_write(Out *o, const char *s, Py_ssize_t n) except -1:
    if o.len + n > o.cap:
        out_reserve(o, n)
    memcpy(o.buf + o.len, s, n)
    o.len += n
    return 1


# Keys repeat: a program passes the same few key strings (literals, or the
# keys of the dimension dicts it reuses) on every line.  A tiny direct-mapped
# cache per kind of key remembers which exact str objects were valid keys, so
# a line checks them by address instead of character by character (and does
# not touch a key object at all).  Each entry holds a reference to its str,
# so the address cannot be reused by another object while it is cached, and
# a str's characters never change.  Only exact str are stored (a subclass
# could define anything); storing and evicting run no Python code.
from libc.stdint cimport uintptr_t

cdef enum:
    MAX_DIMS_C = 50       # MAX_DIMENSIONS (checked at import)
    MKEY_SLOTS = 64       # metric keys: tens in a program
    DKEY_SLOTS = 256      # dimension keys

cdef PyObject *MKEYS[MKEY_SLOTS]
cdef PyObject *DKEYS[DKEY_SLOTS]
memset(MKEYS, 0, sizeof(MKEYS))
memset(DKEYS, 0, sizeof(DKEYS))


cdef inline Py_ssize_t key_slot(PyObject *k, Py_ssize_t slots) noexcept nogil:
    cdef uintptr_t a = <uintptr_t>k
    return <Py_ssize_t>(((a >> 4) ^ (a >> 13)) & <uintptr_t>(slots - 1))


cdef inline void key_store(PyObject **slot, object k) noexcept:
    cdef PyObject *old = slot[0]
    Py_INCREF(k)
    slot[0] = <PyObject *>k
    Py_XDECREF(old)   # an exact str: its deallocation runs no Python code


cdef extern from *:
    """
    /* Whether the n bytes of a compact ASCII str's data at src are all taken
       as is in a bare value (none of , = SP \\ " nor a control byte), copying
       them to w.  Whole blocks are tested in src; the last partial block as
       the 16 bytes that end at src[n - 1], its bytes before the partial block
       masked off: for a short value those lie in the str's own header (more
       than 15 bytes precede the data of a compact ASCII str on any build), so
       nothing outside the object is read.  Not tested in the copy: reading back 16
       bytes that two overlapping stores just wrote stalls until both reach
       the cache, which a new buffer's line takes a memory round trip to do.
       0: escape_value must run. */
    static inline void dt_copy(char *d, const char *s, Py_ssize_t n);   /* _columns.pxi */
    static inline int dt_copy_plain(const uint8_t *src, Py_ssize_t n, char *w) {
    #if DT_BLOCKS
        Py_ssize_t i = 0;
        for (; n - i >= 16; i += 16)
            if (dt_stop_bare(_mm_loadu_si128((const __m128i *)(src + i))))
                return 0;
        if (i < n && (dt_stop_bare(_mm_loadu_si128((const __m128i *)(src + n - 16)))
                      >> (16 - (n - i))))
            return 0;
        dt_copy(w, (const char *)src, n);
        return 1;
    #else
        (void)src; (void)n; (void)w;
        return 0;
    #endif
    }
    """
    bint dt_copy_plain(const uint8_t *src, Py_ssize_t n, char *w) noexcept nogil
    const char *dt_str_utf8_or_raise "dt_str_utf8"(PyObject *o, Py_ssize_t *n) except NULL


cdef int valid_key(object k, PyObject **cache, Py_ssize_t slots, bint metric,
                   const char **s, Py_ssize_t *n) except -1:
    """1 and the key's characters (``*s``, ``*n``) when ``k`` is a valid metric
    (or dimension) key, through the cache of key objects; 0 when not."""
    cdef PyObject **slot = &cache[key_slot(<PyObject *>k, slots)]
    if slot[0] == <PyObject *>k:
        s[0] = dt_str_utf8_or_raise(<PyObject *>k, n)   # a valid key: ASCII, its own characters
        return 1
    if not isinstance(k, str):
        return 0
    s[0] = PyUnicode_AsUTF8AndSize(k, n)
    if not (metric_key_ok(<const uint8_t *>s[0], n[0]) if metric
            else dimension_key_ok(<const uint8_t *>s[0], n[0])):
        return 0
    if type(k) is str:
        key_store(slot, k)
    return 1


cdef inline int dimension_value(object v, const char **s, Py_ssize_t *n) except -1:
    """The value's UTF-8 (``*s``, ``*n``) when ``v`` may be a dimension value
    (a str of at most 255 code points): 2 when it is a compact ASCII str's
    own characters (dt_copy_plain may read them), 1 otherwise; 0 when not."""
    if not isinstance(v, str):
        return 0
    if PyUnicode_IS_COMPACT_ASCII(v):
        n[0] = PyUnicode_GET_LENGTH(v)
        s[0] = <const char *>PyUnicode_DATA(v)
        return 2 if n[0] <= MAX_DIMENSION_VALUE else 0
    s[0] = dt_str_utf8_or_raise(<PyObject *>v, n)   # lone surrogates raise: the reference reports
    # Counted only now: before 3.12 a str made by the deprecated
    # PyUnicode_FromUnicode is not "ready" until something reads it (its
    # UTF-8, just above), and until then its length reads 0 (found by review:
    # a 300-character value was written).
    return 1 if PyUnicode_GET_LENGTH(v) <= MAX_DIMENSION_VALUE else 0


cdef inline Py_ssize_t dimension_text(char *w, const char *ks, Py_ssize_t kn, const char *vs,
                                      Py_ssize_t vn, int form, int nonascii) noexcept nogil:
    """``,key=escaped-value`` written at ``w``, which has room for
    ``kn + 2 + 2 * vn`` bytes (every byte escaped); its length, or -1 when the
    value is refused.  ``form``: dimension_value's answer."""
    cdef Py_ssize_t n
    w[0] = 44
    dt_copy(w + 1, ks, kn)
    w[kn + 1] = 61
    if form == 2 and dt_copy_plain(<const uint8_t *>vs, vn, w + kn + 2):
        n = vn
    else:
        n = escape_value(<const uint8_t *>vs, vn, w + kn + 2, nonascii)
        if n < 0:
            return -1
    return kn + 2 + n


cdef int write_dimension(Out *o, object k, object v) except -1:
    """``,key=escaped-value`` (mirrors _dimension_segment)."""
    cdef Py_ssize_t kn, vn, n
    cdef const char *ks
    cdef const char *vs
    cdef int form
    if not valid_key(k, DKEYS, DKEY_SLOTS, False, &ks, &kn):
        return 0
    form = dimension_value(v, &vs, &vn)
    if not form:
        return 0
    if o.len + kn + 2 + 2 * vn > o.cap:
        out_reserve(o, kn + 2 + 2 * vn)
    # With options non-ASCII goes to the reference: normalization may change it.
    n = dimension_text(o.buf + o.len, ks, kn, vs, vn, form,
                       NONASCII_REFUSE if o.ascii_only else NONASCII_TRUSTED)
    if n < 0:
        return 0
    o.len += n
    return 1


cdef inline Py_ssize_t point_tail(char *w, int kind, const char *num, Py_ssize_t n) noexcept nogil:
    """`` gauge,<num>`` or `` count,delta=<num>`` written at ``w`` (room for
    ``n + 13`` bytes); its length."""
    if kind == K_GAUGE:
        memcpy(w, b" gauge,", 7)
        dt_copy(w + 7, num, n)
        return 7 + n
    memcpy(w, b" count,delta=", 13)
    dt_copy(w + 13, num, n)
    return 13 + n


cdef inline Py_ssize_t timestamp_text(char *w, uint64_t ts) noexcept nogil:
    """`` <ts>`` written at ``w`` (room for 21 bytes); its length."""
    w[0] = 32
    return 1 + format_u64(ts, w + 1)


cdef struct Early:
    # A gauge's or count's value, formatted while the dimensions' strings are
    # still on their way from memory (see write_head).
    double v
    Py_ssize_t n          # its text's length; 0: not finite
    char num[40]


cdef inline Py_ssize_t gather_items(object dims, PyObject **ks, PyObject **vs) noexcept:
    """The items of the exact dict ``dims`` into ``ks``/``vs`` (borrowed), their
    values' first two cache lines asked for; how many, or -1 past MAX_DIMENSIONS
    (a huge mapping is not read to its end before it is refused).

    PyDict_Next: no (key, value) tuple per item, so no allocation and no
    collector pressure on the hot path.  Gathering first lets the values'
    cache misses overlap one another and the work that comes before their
    first use (the number, the metric key) instead of coming one after the
    other.  The pointers are borrowed: the callers run no Python code between
    here and their last use unless something raises, and then they do not
    read them again.
    """
    cdef Py_ssize_t pos = 0, count = 0
    cdef PyObject *pk
    cdef PyObject *pv
    while PyDict_Next(dims, &pos, &pk, &pv):
        if count == MAX_DIMENSIONS:
            return -1
        ks[count] = pk
        vs[count] = pv
        DT_PREFETCH(pv)
        DT_PREFETCH(<char *>pv + 64)   # a value's text runs past its first line
        count += 1
    return count


cdef int write_head(Out *o, object key, object dims, Early *early) except -1:
    """Mirrors _head: 1 when written, 0 when the reference must diagnose.

    Stops at the 51st dimension: a huge mapping is not escaped to the end
    before it is refused.  ``early`` (or NULL): a value to format on the way,
    at the point where the CPU would otherwise wait for memory.
    """
    cdef Py_ssize_t n, i, count = 0
    cdef const char *s
    cdef PyObject *ks[MAX_DIMS_C]
    cdef PyObject *vs[MAX_DIMS_C]
    if type(dims) is dict:
        # The items first (borrowed: nothing below runs Python code unless it
        # raises, and then they are not read again), their values' misses
        # overlapping the value's formatting and the metric key.
        count = gather_items(dims, ks, vs)
        if count < 0:
            return 0
        if early != NULL:
            early.n = format_double(early.v, early.num)
        if not valid_key(key, MKEYS, MKEY_SLOTS, True, &s, &n):
            return 0
        out_write(o, s, n)
        for i in range(count):
            if not write_dimension(o, <object>ks[i], <object>vs[i]):
                return 0
        return 1
    if early != NULL:
        early.n = format_double(early.v, early.num)
    if not valid_key(key, MKEYS, MKEY_SLOTS, True, &s, &n):
        return 0
    out_write(o, s, n)
    if dims is None:   # not the truth of the caller's object (mirrors _head)
        return 1
    for pair in (dims if type(dims) is tuple or type(dims) is list
                 else dims.items() if hasattr(dims, "items") else dims):
        count += 1
        if count > MAX_DIMENSIONS or not write_pair(o, pair):
            return 0
    return 1


cdef inline int write_pair(Out *o, object pair) except -1:
    """One (key, value) pair, unpacked as the reference unpacks it."""
    if type(pair) is tuple and PyTuple_GET_SIZE(pair) == 2:
        return write_dimension(o, (<tuple>pair)[0], (<tuple>pair)[1])
    if type(pair) is list and PyList_GET_SIZE(pair) == 2:
        return write_dimension(o, (<list>pair)[0], (<list>pair)[1])
    k, v = pair
    return write_dimension(o, k, v)


cdef int number_value(object x, double *out) except -1:
    """Mirrors _number_value: the value read from the object itself; 0 if none.

    A subclass's __float__/__index__ is not asked (PyFloat_AS_DOUBLE and
    PyLong_AsDouble read the value), exactly as the reference does.
    """
    if type(x) is float or isinstance(x, float):
        out[0] = PyFloat_AS_DOUBLE(x)
        return 1
    if isinstance(x, int) and type(x) is not bool:
        try:
            out[0] = PyLong_AsDouble(x)
        except OverflowError:
            return 0
        return 1
    return 0


cdef int write_number(Out *o, object x) except -1:
    """Mirrors _format_number: shortest round trip, ``1.0E20`` exponents.

    format_double (_columns.pxi: Ryu's shortest digits, laid out as repr()
    and _format_number do) is the one formatter of the C core.
    """
    cdef double v
    cdef char tmp[40]
    cdef Py_ssize_t n
    if not number_value(x, &v):
        return 0
    n = format_double(v, tmp)  # 0: inf or nan
    if n == 0:
        return 0
    out_write(o, tmp, n)
    return 1


cdef inline int uint_value(object x, uint64_t *out) except -1:
    """Mirrors _check_int: an int (not bool) in 0..2**63-1; 0 if not one."""
    cdef int overflow = 0
    cdef long long sv
    if type(x) is not int and (type(x) is bool or not isinstance(x, int)):
        return 0
    sv = PyLong_AsLongLongAndOverflow(x, &overflow)
    if overflow or sv < 0:
        return 0
    out[0] = <uint64_t>sv
    return 1


cdef int write_uint(Out *o, object x) except -1:
    """Mirrors _check_int: an int (not bool) in 0..2**63-1, as decimal."""
    cdef uint64_t v
    if not uint_value(x, &v):
        return 0
    if o.len + 20 > o.cap:
        out_reserve(o, 20)
    o.len += format_u64(v, o.buf + o.len)
    return 1


cdef int finish(Out *o, object timestamp) except -1:
    """Mirrors _finish: timestamp, LF and the 50,000-character limit."""
    cdef uint64_t ts
    if timestamp is not None:
        if type(timestamp) is not int:
            timestamp = R.timestamp_value(timestamp)  # a datetime: epoch ms
        if not uint_value(timestamp, &ts):
            return 0
        if o.len + 21 > o.cap:
            out_reserve(o, 21)
        o.len += timestamp_text(o.buf + o.len, ts)
        if <int64_t>ts < SECONDS_TIMESTAMP_BELOW:
            R.warn_seconds()
    if o.len > MAX_LINE_CHARS:
        # bytes exceed the limit; code points may not
        if len(PyBytes_FromStringAndSize(o.buf, o.len).decode("utf-8")) > MAX_LINE_CHARS:
            return 0
    out_write(o, "\n", 1)
    return 1


cdef int write_summary(Out *o, object mn, object mx, object sm, object cnt) except -1:
    out_write(o, " gauge,min=", 11)
    if not write_number(o, mn):
        return 0
    out_write(o, ",max=", 5)
    if not write_number(o, mx):
        return 0
    out_write(o, ",sum=", 5)
    if not write_number(o, sm):
        return 0
    out_write(o, ",count=", 7)
    if not write_uint(o, cnt):
        return 0
    cdef double fmn, fmx, fsm
    number_value(mn, &fmn)
    number_value(mx, &fmx)
    number_value(sm, &fsm)
    if not summary_ok(fmn, fmx, fsm, <int64_t>cnt):
        return 0
    return 1


cdef int write_payload(Out *o, int kind, object a, object b, object c, object d) except -1:
    cdef double v
    cdef char num[40]
    cdef Py_ssize_t n
    if kind == K_SUMMARY:
        return write_summary(o, a, b, c, d)
    if not number_value(a, &v):
        return 0
    n = format_double(v, num)  # 0: inf or nan
    if n == 0:
        return 0
    if o.len + n + 13 > o.cap:
        out_reserve(o, n + 13)
    o.len += point_tail(o.buf + o.len, kind, num, n)
    return 1


cdef int write_record(Out *o, object record) except -1:
    """Mirrors _record_line for a Metric whose dimensions are _plain_pairs."""
    cdef tuple t
    # A Metric of another length (tuple.__new__, a crafted pickle) is not
    # indexed unchecked here: the reference raises its IndexError.
    cdef int k
    if type(record) is Metric and len(<tuple>record) == 9:
        t = <tuple>record
        if not write_head(o, t[0], t[1], NULL):
            return 0
        # The kind compared as the reference compares it: once with "gauge",
        # then once with "count" (a str subclass may answer differently).
        kind = t[2]
        k = K_GAUGE if kind == KIND_GAUGE else (K_COUNT if kind == KIND_COUNT else K_SUMMARY)
        if not write_payload(o, k, t[4] if k == K_SUMMARY else t[3], t[5], t[6], t[7]):
            return 0
        return finish(o, t[8])
    return 0


cdef int try_record(Out *o, object record) except -1:
    """write_record, with any Exception meaning "let the reference diagnose" (0).

    A record the C path cannot read without using something up (Metadata,
    whose properties may be any iterable; a Metric with dimensions that are
    not _plain_pairs, which only tuple.__new__ builds) is written by the
    reference alone, which reads it once: its line, or its error raised here.
    """
    if type(record) is Metadata or (type(record) is Metric and len(<tuple>record) == 9
                                    and not _plain_pairs((<tuple>record)[1])):
        line = R.record_line(record).encode("utf-8")
        out_write(o, line, len(line))
        return 1
    try:
        return write_record(o, record)
    except Exception:
        return 0


cdef extern from *:
    """
    #include <stddef.h>
    /* The Encoder's buffer is a raw PyObject_Malloc block laid out as a bytes
       object (header, data, NUL), so that getvalue() can hand the block out
       as the bytes itself instead of copying it.  The header is written only
       then, as PyBytes_FromStringAndSize writes it. */
    #define DT_BYTES_HDR ((Py_ssize_t)offsetof(PyBytesObject, ob_sval))
    static PyObject *dt_block_to_bytes(char *blk, Py_ssize_t n) {
        char *p = (char *)PyObject_Realloc(blk, (size_t)(DT_BYTES_HDR + n + 1));
        PyBytesObject *op;
        if (p == NULL)   /* could not shrink: the larger block serves as well */
            p = blk;
        op = (PyBytesObject *)p;
        (void)PyObject_InitVar((PyVarObject *)op, &PyBytes_Type, n);
    #if defined(__GNUC__) || defined(__clang__)
    #pragma GCC diagnostic push
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    #endif
        op->ob_shash = -1;   /* deprecated for readers since 3.12; still the cache */
    #if defined(__GNUC__) || defined(__clang__)
    #pragma GCC diagnostic pop
    #endif
        op->ob_sval[n] = 0;
        return (PyObject *)op;
    }
    """
    Py_ssize_t DT_BYTES_HDR
    object dt_block_to_bytes(char *blk, Py_ssize_t n)
    void *PyObject_Malloc(size_t n)
    void *PyObject_Realloc(void *p, size_t n)
    void PyObject_Free(void *p)


cdef class Encoder:
    """Encoder(prefix=None, default_dimensions=None, static_dimensions=None, normalize=False, oneagent_enrichment=False)
--

A reusable buffer of encoded lines for hot loops.

    Every method validates its input like the decoder would and appends one
    canonical line (docs/protocol.md §13) terminated by LF.  A call that raises
    :class:`~dtproto.EncodeError` leaves the buffer exactly as it was.

    ``dimensions`` accept a mapping or an iterable of ``(key, value)`` pairs.

    Options (all off by default; see docs/protocol.md §12):

    * ``prefix``: joined to every metric key with ``.``.
    * ``default_dimensions`` / ``static_dimensions``: merged into every line
      with the precedence default < per line < static; at most 50 in all.
    * ``normalize``: turn invalid names into valid ones the way the official
      dynatrace-metric-utils (Java 2.5) do, instead of raising; a line whose
      key cannot be saved is dropped.  Every change is counted in
      :attr:`normalizations`.
    * ``oneagent_enrichment``: add the OneAgent host metadata
      (``dt_metadata_e617c525669e072eebe3d0f08212e8f2.properties``) as static
      dimensions; no OneAgent, no extra dimensions.
    """

    def __cinit__(self):
        self._cap = ENCODER_FIRST_CAP
        self._blk = <char *>PyObject_Malloc(DT_BYTES_HDR + self._cap + 1)
        if self._blk == NULL:
            raise MemoryError()
        self._buf = self._blk + DT_BYTES_HDR
        self._len = 0
        self._lines = 0

    def __init__(self, prefix=None, default_dimensions=None, static_dimensions=None,
                 normalize=False, oneagent_enrichment=False):
        self._ref = None
        self._ascii_only = False
        self._fastnorm = False
        if R.has_options(prefix, default_dimensions, static_dimensions, normalize,
                         oneagent_enrichment):
            # Options are applied by the reference encoder (one definition of
            # prefixing, precedence and normalization); the C path below only
            # takes lines they would leave unchanged.
            self._ref = R.ReferenceEncoder(prefix, default_dimensions, static_dimensions, normalize,
                                    oneagent_enrichment)
            opts = self._ref._opts
            self._ascii_only = True
            self._fastnorm = bool(opts.normalize) and not opts.prefix and not opts.default \
                and not opts.static

    @property
    def normalizations(self):
        """The :class:`~dtproto.normalize.NormalizationLog` of this encoder (changes made)."""
        if self._ref is not None:
            return self._ref.normalizations
        if self._ref_log is None:  # a plain encoder never normalizes: always empty
            self._ref_log = R.ReferenceEncoder().normalizations
        return self._ref_log

    cdef int _via_ref(self, object method, tuple args) except -1:
        """Let the reference encoder (with this encoder's options) write the line.

        It writes into a sibling of its own, private to this call, so calls
        from several threads never share the reference's buffer.
        """
        sibling = self._ref._sibling()
        getattr(sibling, method)(*args)  # an error propagates; our buffer is untouched
        line = sibling.getvalue()
        if line:
            self._append(line, len(line), sibling.lines)
        return 1

    cdef bint _c_path(self, object dimensions):
        """Whether the C path may try this call (always, unless options are set)."""
        if self._ref is None:
            return True
        return self._fastnorm and (dimensions is None or type(dimensions) is dict)

    def __dealloc__(self):
        PyObject_Free(self._blk)

    cdef int _grow(self, Py_ssize_t n) except -1:
        """Room for n more bytes; after getvalue() handed the block out, a new
        block with a copy of those bytes (they are immutable now)."""
        cdef Py_ssize_t cap
        cdef char *nb
        if n > PY_SSIZE_T_MAX - DT_BYTES_HDR - 1 - self._len:
            raise MemoryError()
        cap = grown(self._cap if self._blk != NULL else ENCODER_FIRST_CAP, self._len + n)
        if cap > PY_SSIZE_T_MAX - DT_BYTES_HDR - 1:
            cap = self._len + n
        if self._blk != NULL:
            nb = <char *>PyObject_Realloc(self._blk, DT_BYTES_HDR + cap + 1)
            if nb == NULL:
                raise MemoryError()
        else:
            nb = <char *>PyObject_Malloc(DT_BYTES_HDR + cap + 1)
            if nb == NULL:
                raise MemoryError()
            if self._len:
                memcpy(nb + DT_BYTES_HDR, PyBytes_AS_STRING(self._value), self._len)
            self._value = None   # freeing a bytes object runs no Python code
        self._blk = nb
        self._buf = nb + DT_BYTES_HDR
        self._cap = cap
        return 0

    cdef int _append(self, const char *s, Py_ssize_t n, Py_ssize_t lines) except -1:
        """Append finished lines in one step (no Python code runs in here)."""
        if self._blk == NULL or n > self._cap - self._len:
            self._grow(n)
        memcpy(self._buf + self._len, s, n)
        self._len += n
        self._lines += lines
        return 0

    cdef int _direct(self, int kind, object key, object value, object dimensions,
                     object timestamp) except -1:
        """1 when a gauge or count point was written by the direct path, 0 when
        _point must take it.

        The direct path takes the common call: a plain encoder (no options),
        an exact float (or an int that a double holds exactly), an exact dict
        or None, an exact int timestamp or None.  Anything else, and any
        point that is not plainly valid, goes to _point, which gives the same
        bytes or names the same error as before (it starts over: nothing the
        direct path did is kept).
        """
        cdef double v
        cdef int overflow = 0
        cdef long long sv
        if self._ref is not None:
            return 0
        if type(value) is float:
            v = PyFloat_AS_DOUBLE(value)
        elif type(value) is int:
            # PyLong_AsDouble's value (the reference's) where the double is exact
            sv = PyLong_AsLongLongAndOverflow(value, &overflow)
            if overflow or sv > DOUBLE_EXACT or sv < -DOUBLE_EXACT:
                return 0
            v = <double>sv
        else:
            return 0
        if not (dimensions is None or type(dimensions) is dict) \
                or not (timestamp is None or type(timestamp) is int):
            return 0
        try:
            return self._write_direct(kind, key, v, dimensions, timestamp)
        except Exception:
            return 0   # e.g. a lone surrogate: _point's reference names the error

    cdef int _write_direct(self, int kind, object key, double v, object dims,
                           object timestamp) except -1:
        """Write the line straight into the buffer, past ``_len``; commit it
        (``_len``, ``_lines``) only once it is whole: 0 leaves the buffer's
        lines as they were.

        Nothing in here runs Python code, so no other call (another thread,
        a finalizer that the garbage collector runs) can append to or grow
        this buffer between the start and the commit: exact types only, no
        warning (a seconds timestamp goes to _point), no object created.  An
        exception can run Python code (creating it may start the collector):
        the caller then drops this attempt and _point starts over.  The borrowed
        items of ``dims`` stay valid for the same reason.
        """
        cdef Py_ssize_t start = self._len, p, kn, vn, n, nn, i, count = 0
        cdef const char *ks
        cdef const char *vs
        cdef PyObject *dk[MAX_DIMS_C]
        cdef PyObject *dv[MAX_DIMS_C]
        cdef char num[40]
        cdef uint64_t ts = 0
        cdef int overflow = 0, form
        cdef long long sv
        if dims is not None:
            dt_prefetch_dict(<PyObject *>dims)
            count = gather_items(dims, dk, dv)
            if count < 0:
                return 0
        nn = format_double(v, num)
        if nn == 0:
            return 0   # inf or nan
        if timestamp is not None:
            sv = PyLong_AsLongLongAndOverflow(timestamp, &overflow)
            if overflow or sv < SECONDS_TIMESTAMP_BELOW:
                return 0   # refused, or warned about: _point does either
            ts = <uint64_t>sv
        if not valid_key(key, MKEYS, MKEY_SLOTS, True, &ks, &kn):
            return 0
        # room for the key and the tail: payload (13 + 40), timestamp (21), LF
        if self._blk == NULL or self._cap - start < kn + DIRECT_TAIL:
            self._grow(kn + DIRECT_TAIL)
        dt_copy(self._buf + start, ks, kn)
        p = start + kn
        for i in range(count):
            if not valid_key(<object>dk[i], DKEYS, DKEY_SLOTS, False, &ks, &kn):
                return 0
            form = dimension_value(<object>dv[i], &vs, &vn)
            if not form:
                return 0
            if self._cap - p < kn + 2 + 2 * vn + DIRECT_TAIL:
                self._grow(p - start + kn + 2 + 2 * vn + DIRECT_TAIL)
            n = dimension_text(self._buf + p, ks, kn, vs, vn, form, NONASCII_TRUSTED)
            if n < 0:
                return 0
            p += n
        p += point_tail(self._buf + p, kind, num, nn)
        if timestamp is not None:
            p += timestamp_text(self._buf + p, ts)
        if p - start > MAX_LINE_CHARS:
            return 0   # in bytes; _point counts the characters
        self._buf[p] = 10
        self._len = p + 1
        self._lines += 1
        return 1

    cdef int _point(self, int kind, object key, object a, object b, object c, object d,
                    object dimensions, object timestamp) except -1:
        """One data point (mirrors Encoder._point and Encoder.summary).

        The C path writes it when it can; otherwise the reference encoder does
        (with this encoder's options) or, for a plain encoder, names the error.
        """
        cdef Out o
        cdef int ok
        cdef Early early
        cdef Early *e = NULL
        if type(dimensions) is dict:
            dt_prefetch_dict(<PyObject *>dimensions)   # its miss overlaps the call's work
        if self._c_path(dimensions):
            if kind != K_SUMMARY and type(a) is float:
                # The value's text is written while the dimensions are read
                # (write_head).  Only for an exact float: reading it runs no
                # Python code, so nothing a caller can observe happens in
                # another order than in the reference.
                early.v = PyFloat_AS_DOUBLE(a)
                e = &early
            pairs = _materialize(dimensions)
            out_init(&o, self._ascii_only)
            try:
                try:
                    ok = write_head(&o, key, pairs, e)
                    if ok and e != NULL:
                        ok = early.n > 0   # 0: not finite, the reference names the error
                        if ok:
                            if o.len + early.n + 13 > o.cap:
                                out_reserve(&o, early.n + 13)
                            o.len += point_tail(o.buf + o.len, kind, early.num, early.n)
                    elif ok:
                        ok = write_payload(&o, kind, a, b, c, d)
                    ok = ok and finish(&o, timestamp)
                except Exception:
                    ok = 0  # e.g. a malformed pair: the reference names the error
                if ok:
                    self._append(o.buf, o.len, 1)
                    return 1
            finally:
                out_free(&o)
            # The reference reads what C read: an iterator stays one (it is not
            # counted), a sequence stays a sequence (it is).
            if pairs is not dimensions:
                dimensions = pairs if type(dimensions) is tuple or type(dimensions) is list \
                    else iter(pairs)
        if kind == K_GAUGE:
            method, args = "gauge", (key, a, dimensions, timestamp)
        elif kind == K_COUNT:
            method, args = "count", (key, a, dimensions, timestamp)
        else:
            method, args = "summary", (key, a, b, c, d, dimensions, timestamp)
        if self._ref is not None:
            self._via_ref(method, args)
        else:
            _py_fail(getattr(R.ReferenceEncoder(), method), args)
        return 1

    def gauge(self, key, value, dimensions=None, timestamp=None):
        """Append ``key,dims gauge,<value> [timestamp]``."""
        if not self._direct(K_GAUGE, key, value, dimensions, timestamp):
            self._point(K_GAUGE, key, value, None, None, None, dimensions, timestamp)

    def count(self, key, delta, dimensions=None, timestamp=None):
        """Append ``key,dims count,delta=<delta> [timestamp]``."""
        if not self._direct(K_COUNT, key, delta, dimensions, timestamp):
            self._point(K_COUNT, key, delta, None, None, None, dimensions, timestamp)

    def summary(self, key, min, max, sum, count, dimensions=None, timestamp=None):
        """Append ``key,dims gauge,min=..,max=..,sum=..,count=.. [timestamp]``.

        The fields must be consistent as the server checks them (§7.3).
        """
        self._point(K_SUMMARY, key, min, max, sum, count, dimensions, timestamp)

    def metadata(self, key, metric_type, display_name=None, description=None, unit=None):
        """Append ``#key type dt.meta.description=..,dt.meta.unit=..,dt.meta.displayName=..``.

        Properties are written in the official Java library's order; at least
        one must be given.
        """
        if self._ref is not None:
            self._via_ref("metadata", (key, metric_type, display_name, description, unit))
            return
        tmp = R.ReferenceEncoder()
        tmp.metadata(key, metric_type, display_name, description, unit)
        line = tmp.getvalue()
        self._append(line, len(line), 1)

    def add(self, record):
        """Append a :class:`~dtproto.Metric` or :class:`~dtproto.Metadata`."""
        cdef Out o
        if self._ref is not None:
            self._via_ref("add", (record,))
            return
        out_init(&o, False)
        try:
            if try_record(&o, record):
                self._append(o.buf, o.len, 1)
                return
        finally:
            out_free(&o)
        _py_fail(R.record_line, (record,))

    def getvalue(self):
        """The encoded lines so far, as ``bytes``."""
        # The block becomes the bytes (no copy of a buffer that may be many
        # MB); the next append copies it into a new block, so bytes handed
        # out never change.  Until then the same bytes serve every call.
        if self._len == 0:
            return b""
        if self._blk == NULL:
            return self._value
        value = dt_block_to_bytes(self._blk, self._len)
        self._blk = NULL
        self._buf = NULL
        self._cap = 0
        self._value = value
        return value

    def clear(self):
        """Forget every line."""
        self._len = 0
        self._lines = 0
        self._value = None

    @property
    def lines(self):
        """Number of lines in the buffer."""
        return self._lines

    def __len__(self):
        """Size of the buffer in bytes."""
        return self._len

    def __repr__(self):
        return "<Encoder lines=%d bytes=%d>" % (self._lines, self._len)


def encode(records):
    cdef Encoder enc = Encoder()
    cdef Py_ssize_t index = 0
    cdef Out o
    out_init(&o, False)
    try:
        for record in records:
            o.len = 0
            try:
                if not try_record(&o, record):
                    _py_fail(R.record_line, (record,))
            except EncodeError as e:
                e.record = index
                raise
            enc._append(o.buf, o.len, 1)
            index += 1
    finally:
        out_free(&o)
    return enc.getvalue()


# Docstrings live once, in the reference; the parity test checks them.
for _name in ("decode", "iter_decode", "validate", "encode"):
    globals()[_name].__doc__ = getattr(_codec_py, _name).__doc__


# --- columns for dtproto.arrow (the contract: dtproto.arrow._decode_columns_py) ---
#
# One pass over the lines with the same scanners as decode, writing into C
# buffers instead of building records: no Python object per line.  Metric and
# dimension keys are interned per call (few distinct); dimension values are
# appended unescaped to one UTF-8 buffer with int32 offsets.  The head cache is
# not used: it holds objects, and the columns need the spans of every line.

cdef struct Col:
    char *p               # the data of ``buf``
    Py_ssize_t len
    Py_ssize_t cap
    PyObject *buf         # owned: the pyarrow Buffer holding the column, or NULL


# The columns live in pyarrow's default memory pool (pyarrow.allocate_buffer),
# where the Arrow arrays built on them belong anyway: users' accounting
# (pyarrow.total_allocated_bytes) sees them, and the pool (mimalloc or
# jemalloc) reuses the pages of the last batch's freed columns.  Memory fresh
# from the system costs a page fault per 4 KiB: with PyMem buffers the
# faults of ~50 MB of columns were a third of decode_table's time.
cdef object ARROW_ALLOCATE = None


cdef int col_reserve(Col *c, Py_ssize_t extra) except -1:
    """Room for ``extra`` more bytes: a larger pool buffer and one copy.

    Calls into pyarrow (Python code may run: nothing here holds a pointer
    into shared state, and the Col is the caller's own).
    """
    global ARROW_ALLOCATE
    cdef Py_ssize_t cap
    cdef char *nb
    if c.len + extra <= c.cap:
        return 0
    cap = grown(c.cap, c.len + extra)
    if ARROW_ALLOCATE is None:
        import pyarrow  # only dtproto.arrow calls decode_columns, with pyarrow installed
        ARROW_ALLOCATE = pyarrow.allocate_buffer
    buf = ARROW_ALLOCATE(cap)
    nb = <char *><uintptr_t>buf.address
    if c.len:
        memcpy(nb, c.p, c.len)
    Py_INCREF(buf)
    Py_XDECREF(c.buf)
    c.buf = <PyObject *>buf
    c.p = nb
    c.cap = cap
    return 0


cdef inline int col_put(Col *c, const void *src, Py_ssize_t n) except -1:
    if c.len + n > c.cap:
        col_reserve(c, n)
    memcpy(c.p + c.len, src, n)
    c.len += n
    return 0


cdef object col_take(Col *c):
    """The column as a pyarrow Buffer of its ``len`` bytes (it takes over the memory)."""
    if c.buf == NULL:  # an empty column still has an address (Arrow requires one)
        col_reserve(c, 1)
    out = (<object>c.buf).slice(0, c.len)
    Py_CLEAR(c.buf)
    c.p = NULL
    c.len = c.cap = 0
    return out


cdef object col_view(Col *c, str fmt):
    """The column as a memoryview of its item type (no copy)."""
    return memoryview(col_take(c)).cast(fmt)


cdef void col_free(Col *c) noexcept:
    Py_CLEAR(c.buf)
    c.p = NULL
    c.len = c.cap = 0


cdef int col_presize(Col *c, Py_ssize_t cap) except -1:
    if cap > c.cap:
        col_reserve(c, cap - c.len)
    return 0


cdef struct Slot:
    uint64_t hash
    const uint8_t *ptr    # into the caller's buffer, which outlives the call
    Py_ssize_t len
    int32_t index         # -1: empty


cdef struct Interner:
    Slot *slots
    Py_ssize_t mask       # capacity - 1 (a power of two)
    Py_ssize_t used


cdef int interner_init(Interner *t) except -1:
    t.mask = 63
    t.used = 0
    t.slots = <Slot *>PyMem_Malloc(64 * sizeof(Slot))
    if t.slots == NULL:
        raise MemoryError()
    for i in range(64):
        t.slots[i].index = -1
    return 0


cdef int intern_index(Interner *t, list table, const uint8_t *p, Py_ssize_t n) except -2:
    """The index of ``p[:n]`` (ASCII) in ``table``, appending it when new."""
    cdef uint64_t h = head_hash(p, n)
    cdef Py_ssize_t i = h & t.mask, k, cap
    cdef Slot *s
    cdef Slot *old
    while True:
        s = &t.slots[i]
        if s.index < 0:
            break
        if s.hash == h and s.len == n and memcmp(s.ptr, p, n) == 0:
            return s.index
        i = (i + 1) & t.mask
    table.append(PyUnicode_DecodeLatin1(<const char *>p, n, NULL))
    s.hash = h
    s.ptr = p
    s.len = n
    s.index = <int32_t>(len(table) - 1)
    t.used += 1
    if t.used * 2 > t.mask:  # grow at half full
        cap = (t.mask + 1) * 2
        old = t.slots
        t.slots = <Slot *>PyMem_Malloc(cap * sizeof(Slot))
        if t.slots == NULL:
            t.slots = old
            raise MemoryError()
        for k in range(cap):
            t.slots[k].index = -1
        for k in range(t.mask + 1):
            if old[k].index >= 0:
                i = old[k].hash & (cap - 1)
                while t.slots[i].index >= 0:
                    i = (i + 1) & (cap - 1)
                t.slots[i] = old[k]
        t.mask = cap - 1
        PyMem_Free(old)
    return <int>(len(table) - 1)


cdef inline int intern_near(Interner *t, list table, Slot *last, const uint8_t *p,
                            Py_ssize_t n) except -2:
    """intern_index, first trying what was found at this place the line before:
    keys repeat line after line, and a compare is cheaper than a hash."""
    cdef int idx
    if last.index >= 0 and last.len == n and memcmp(last.ptr, p, n) == 0:
        return last.index
    idx = intern_index(t, table, p, n)
    last.ptr = p
    last.len = n
    last.index = idx
    return idx


cdef int put_value(Col *data, const uint8_t *p, DimSpan *d) except -1:
    """The unescaped value bytes (mirrors unescape_into)."""
    cdef Py_ssize_t i
    cdef uint8_t c, e
    if not d.escaped:
        return col_put(data, p + d.vs, d.ve - d.vs)
    col_reserve(data, d.ve - d.vs)
    i = d.vs
    while i < d.ve:
        c = p[i]
        if c == 92:
            e = p[i + 1]
            if e < 128 and CLS[e] & C_ESCAPE_ONE:
                data.p[data.len] = <char>e
                data.len += 1
                i += 2
                continue
        data.p[data.len] = <char>c
        data.len += 1
        i += 1
    return 0


cdef Py_ssize_t reserve_rows(Col **cols, const int *widths, int ncols, Py_ssize_t count,
                             Py_ssize_t want) except -1:
    """Room for ``want`` entries in each fixed-width column (``count`` are in use);
    the new capacity in entries.  The loop then stores without a check per value."""
    cdef int k
    for k in range(ncols):
        cols[k].len = count * widths[k]
        col_reserve(cols[k], (want - count) * widths[k])
    return want


cdef Py_ssize_t estimate_lines(const uint8_t *base, Py_ssize_t size) noexcept:
    cdef Py_ssize_t probe = size if size < 65536 else 65536, count = 1, pos = 0
    cdef const void *nl
    while pos < probe:
        nl = memchr(base + pos, 10, probe - pos)
        if nl == NULL:
            break
        count += 1
        pos = (<const uint8_t *>nl - base) + 1
    return (size // probe) * count * 9 // 8 + 16 if probe else 16


def decode_columns(bytes buf, Py_ssize_t first_line, now_ms, bint skip):
    """Decode a block of whole lines into columns (see dtproto.arrow._decode_columns_py)."""
    cdef const uint8_t *base = <const uint8_t *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t pos = 0, end, n, after, rows = 0, pairs = 0, lineno = first_line
    cdef const uint8_t *p
    cdef const void *nl
    cdef int r, k
    cdef int64_t lo, hi
    cdef LineScan L
    cdef DimSpan *d
    cdef Col c_line, c_key, c_kind, c_value, c_min, c_max, c_sum, c_count, c_ts
    cdef Col c_off, c_koff, c_kdata, c_voff, c_vdata
    cdef Col *cols[14]
    cdef Col *row_cols[10]
    cdef Col *pair_cols[2]
    cdef int row_w[10]
    cdef int pair_w[2]
    cdef Py_ssize_t est, row_cap = 0, pair_cap = 0
    cdef Interner keys_t
    cdef Slot last_key
    cdef list keys = [], metadata = [], skipped = []
    if size >= 0x7FFFFFFF:  # int32 offsets: such a block goes through the reference
        raise OverflowError("decode_columns takes blocks below 2 GiB")
    now_ms = R.now_arg(now_ms)
    window(now_ms, &lo, &hi)
    cols[0] = &c_line; cols[1] = &c_key; cols[2] = &c_kind; cols[3] = &c_value
    cols[4] = &c_min; cols[5] = &c_max; cols[6] = &c_sum; cols[7] = &c_count
    cols[8] = &c_ts; cols[9] = &c_off; cols[10] = &c_koff; cols[11] = &c_kdata
    cols[12] = &c_voff; cols[13] = &c_vdata
    # Fixed-width columns get room for a whole row (or pair) at a time and are
    # then filled by plain stores; c_off, c_koff and c_voff start with a 0 entry.
    row_cols[:] = [&c_line, &c_key, &c_kind, &c_value, &c_min, &c_max, &c_sum, &c_count, &c_ts,
                   &c_off]
    row_w[:] = [8, 4, 1, 8, 8, 8, 8, 8, 8, 4]
    pair_cols[:] = [&c_koff, &c_voff]
    pair_w[:] = [4, 4]
    for k in range(14):
        cols[k].p = NULL
        cols[k].len = 0
        cols[k].cap = 0
        cols[k].buf = NULL
    keys_t.slots = NULL
    last_key.index = -1
    try:
        interner_init(&keys_t)
        # Size the columns once from the line length of the first 64 KiB
        # (they still grow if the estimate falls short): no copying as they fill.
        est = estimate_lines(base, size)
        row_cap = reserve_rows(row_cols, row_w, 10, 0, est + 1)
        pair_cap = reserve_rows(pair_cols, pair_w, 2, 0, est * 4 + 1)
        col_presize(&c_vdata, size // 4)
        col_presize(&c_kdata, size // 8)
        (<int32_t *>c_off.p)[0] = 0
        (<int32_t *>c_koff.p)[0] = 0
        (<int32_t *>c_voff.p)[0] = 0
        while pos < size:
            nl = memchr(base + pos, 10, size - pos)
            end = (<const uint8_t *>nl - base) if nl != NULL else size
            p = base + pos
            n = end - pos
            r = prepare_line(p, &n)
            if r == R_DATA:
                after = scan_head(p, n, &L)
                if after < 0:
                    r = R_INVALID
                else:
                    L.head_end = after
                    r = scan_tail(p, after, n, &L, lo, hi)
            if r == R_DATA:
                if rows + 2 > row_cap:  # this row, and c_off's entry after it
                    row_cap = reserve_rows(row_cols, row_w, 10, rows + 1, row_cap * 2)
                if pairs + L.ndims + 1 > pair_cap:
                    pair_cap = reserve_rows(pair_cols, pair_w, 2, pairs + 1,
                                            (pairs + L.ndims + 1) * 2)
                (<int64_t *>c_line.p)[rows] = lineno
                (<int32_t *>c_key.p)[rows] = intern_near(&keys_t, keys, &last_key, p, L.keylen)
                (<int8_t *>c_kind.p)[rows] = <int8_t>L.kind
                if L.kind == K_SUMMARY:
                    (<double *>c_value.p)[rows] = 0.0
                    (<double *>c_min.p)[rows] = L.mn
                    (<double *>c_max.p)[rows] = L.mx
                    (<double *>c_sum.p)[rows] = L.sm
                    (<int64_t *>c_count.p)[rows] = L.cnt
                else:
                    (<double *>c_value.p)[rows] = L.value
                    (<double *>c_min.p)[rows] = 0.0
                    (<double *>c_max.p)[rows] = 0.0
                    (<double *>c_sum.p)[rows] = 0.0
                    (<int64_t *>c_count.p)[rows] = 0
                (<int64_t *>c_ts.p)[rows] = L.ts if L.has_ts else -1
                # Keys are copied like values, not interned: a table of
                # distinct keys would cost pyarrow a take() of every pair.
                for k in range(L.ndims):
                    d = &L.dims[k]
                    col_put(&c_kdata, p + d.ks, d.kl)
                    put_value(&c_vdata, p, d)
                    pairs += 1
                    (<int32_t *>c_koff.p)[pairs] = <int32_t>c_kdata.len
                    (<int32_t *>c_voff.p)[pairs] = <int32_t>c_vdata.len
                rows += 1
                (<int32_t *>c_off.p)[rows] = <int32_t>pairs
            elif r == R_INVALID or r == R_META:
                fault, rec = diagnose(buf, pos, end, now_ms, lineno)
                if fault is None:
                    if r == R_INVALID:
                        raise disagreement(rec, lineno)
                    if rec is not None:
                        metadata.append((lineno, rec))
                else:
                    err = R.fault_to_error(fault, rec, lineno)
                    if not skip:
                        raise err
                    skipped.append(R.LineError(lineno, err.column, err.code, err.reason, err.text))
            pos = end + 1
            lineno += 1
        for k in range(9):
            row_cols[k].len = rows * row_w[k]
        c_off.len = (rows + 1) * 4
        c_koff.len = (pairs + 1) * 4
        c_voff.len = (pairs + 1) * 4
        import pyarrow as pa  # only dtproto.arrow calls this, with pyarrow installed
        dim_keys = pa.StringArray.from_buffers(pairs, col_take(&c_koff), col_take(&c_kdata))
        dim_values = pa.StringArray.from_buffers(pairs, col_take(&c_voff), col_take(&c_vdata))
        return {
            "rows": rows,
            "lines": lineno - first_line,
            "line": col_view(&c_line, "q"),
            "key_index": col_view(&c_key, "i"),
            "keys": keys,
            "kind": col_view(&c_kind, "b"),
            "value": col_view(&c_value, "d"),
            "min": col_view(&c_min, "d"),
            "max": col_view(&c_max, "d"),
            "sum": col_view(&c_sum, "d"),
            "count": col_view(&c_count, "q"),
            "timestamp": col_view(&c_ts, "q"),
            "dim_offsets": col_view(&c_off, "i"),
            "dim_keys": dim_keys,
            "dim_values": dim_values,
            "metadata": metadata,
            "skipped": skipped,
        }
    finally:
        for k in range(14):
            col_free(cols[k])
        PyMem_Free(keys_t.slots)


include "_columns.pxi"
