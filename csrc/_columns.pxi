# Column encoders for dtproto.arrow.encode_table, compiled into dtproto._codec_c
# (included at the end of _codec_c.pyx, so they share its escaping and number
# writers).
#
# Mirrors dtproto.arrow._vector_lines (the pure path, Arrow compute kernels):
# one C loop walks the rows of the columns' buffers and writes every line
# straight into one output buffer, with the Encoder's checks.  It never
# diagnoses: at the first row it cannot write it stops and returns the row,
# and arrow.py lets the Encoder encode that row alone (the one source of
# error codes and messages).
#
# No Python code runs inside the row loop: it reads Arrow buffers and, for a
# pandas object column, exact ``str`` objects (PyUnicode_AsUTF8AndSize runs no
# Python code); every other object stops the loop ("unsupported") and
# arrow.py converts that column with pyarrow instead.  Buffer sizes are
# checked before the loop and every offset and dictionary index inside it, so
# a malformed array cannot make it read past a buffer.

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer
cimport cython
from libc.stdint cimport uint32_t, uintptr_t
from libc.string cimport memmove, memset

cdef extern from "Python.h":
    bint dt_str_exact "PyUnicode_CheckExact"(PyObject *o)
    bint dt_float_check "PyFloat_Check"(PyObject *o)
    double dt_float_value "PyFloat_AS_DOUBLE"(PyObject *o)
    void PyErr_Clear()

cdef extern from *:
    """
    /* Ryu's 64x128-bit multiply and shift (Ulf Adams, "Ryu: fast float-to-string
       conversion", PLDI 2018): the top bits of m * mul, mul a 128-bit
       multiplier given as {low, high}; 64 < j < 128. */
    #include <stdint.h>
    static inline uint64_t dt_mulshift64(uint64_t m, const uint64_t *mul, int j) {
    #if defined(__SIZEOF_INT128__)
        __uint128_t b0 = (__uint128_t)m * mul[0];
        __uint128_t b2 = (__uint128_t)m * mul[1];
        return (uint64_t)(((b0 >> 64) + b2) >> (j - 64));
    #else
        /* 64x64 -> 128 from 32-bit halves; then (hi:lo) >> (j - 64). */
        uint64_t a_lo = (uint32_t)m, a_hi = m >> 32;
        uint64_t r[2];
        int k;
        for (k = 0; k < 2; k++) {
            uint64_t b_lo = (uint32_t)mul[k], b_hi = mul[k] >> 32;
            uint64_t b00 = a_lo * b_lo, b01 = a_lo * b_hi, b10 = a_hi * b_lo, b11 = a_hi * b_hi;
            uint64_t mid1 = b10 + (b00 >> 32);
            uint64_t mid2 = b01 + (uint32_t)mid1;
            uint64_t hi = b11 + (mid1 >> 32) + (mid2 >> 32);
            uint64_t lo = (mid2 << 32) | (uint32_t)b00;
            if (k == 0) { r[0] = hi; }
            else {
                uint64_t sum = r[0] + lo;
                if (sum < r[0]) hi++;
                int d = j - 64;
                return d == 0 ? sum : ((hi << (64 - d)) | (sum >> d));
            }
        }
        return 0;
    #endif
    }
    """
    uint64_t dt_mulshift64(uint64_t m, const uint64_t *mul, int j) noexcept nogil

cdef extern from *:
    """
    static const char dt_pairs[201] =
        "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
        "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    """
    const char *dt_pairs

cdef extern from *:
    """
    #include <string.h>
    /* Short copies (the pieces of a line are mostly 1 to 20 bytes) without a
       call: two overlapping fixed-size moves. */
    static inline void dt_copy(char *d, const char *s, Py_ssize_t n) {
        if (n > 32) { memcpy(d, s, (size_t)n); return; }
        if (n > 16) {
            uint64_t a[2], b[2];
            memcpy(a, s, 16); memcpy(b, s + n - 16, 16);
            memcpy(d, a, 16); memcpy(d + n - 16, b, 16);
        } else if (n >= 8) {
            uint64_t a, b;
            memcpy(&a, s, 8); memcpy(&b, s + n - 8, 8);
            memcpy(d, &a, 8); memcpy(d + n - 8, &b, 8);
        } else if (n >= 4) {
            uint32_t a, b;
            memcpy(&a, s, 4); memcpy(&b, s + n - 4, 4);
            memcpy(d, &a, 4); memcpy(d + n - 4, &b, 4);
        } else {
            Py_ssize_t i;
            for (i = 0; i < n; i++) d[i] = s[i];
        }
    }
    static inline int dt_clz64(uint64_t v) {   /* v != 0 */
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_clzll(v);
    #else
        int n = 0;
        while (!(v & 0x8000000000000000ULL)) { v <<= 1; n++; }
        return n;
    #endif
    }
    /* A slot of a metric key cache (64 entries) for n bytes at p. */
    static inline unsigned dt_key_slot(const uint8_t *p, Py_ssize_t n) {
        uint64_t h = (uint64_t)n;
        if (n >= 8) {
            uint64_t x, y;
            memcpy(&x, p, 8); memcpy(&y, p + n - 8, 8);
            h ^= x ^ (y << 1);
        } else {
            Py_ssize_t i;
            for (i = 0; i < n; i++) h = h * 31 + p[i];
        }
        return (unsigned)((h * 0x9E3779B97F4A7C15ULL) >> 58);
    }
    /* A str's UTF-8: an ASCII str's own characters, else the cached UTF-8
       (NULL with an exception set for a lone surrogate). */
    static inline const char *dt_str_utf8(PyObject *o, Py_ssize_t *n) {
        if (PyUnicode_IS_COMPACT_ASCII(o)) {
            *n = PyUnicode_GET_LENGTH(o);
            return (const char *)PyUnicode_DATA(o);
        }
        return PyUnicode_AsUTF8AndSize(o, n);
    }
    """
    void dt_copy(char *d, const char *s, Py_ssize_t n) noexcept nogil
    unsigned dt_key_slot(const uint8_t *p, Py_ssize_t n) noexcept nogil
    int dt_clz64(uint64_t v) noexcept nogil
    const char *dt_str_utf8(PyObject *o, Py_ssize_t *n) noexcept


# --- shortest round-trip floats (what repr() finds, without dtoa) ---------------
#
# repr() runs David Gay's dtoa (PyOS_double_to_string, ~0.5 us a float).  Ryu
# finds the same digits - the shortest decimal that reads back as v, the nearest one when
# several are that short, bounds included for an even mantissa exactly as
# round-half-even reading does - with two 128-bit multiplications.  Its tables
# (5**i, and 2**k / 5**i, to 125 bits) are computed here at import with Python
# integers rather than pasted in.  tests/test_arrow.py compares the result
# with the reference's _format_number over every exponent.

cdef enum:
    POW5_INV_BITS = 125
    POW5_BITS = 125
    POW5_INV_SIZE = 342
    POW5_SIZE = 326

cdef uint64_t POW5_INV[POW5_INV_SIZE][2]
cdef uint64_t POW5[POW5_SIZE][2]


def _fill_ryu_tables():
    # i is a Python int: 5 ** i must be exact, not a C pow()
    mask = (1 << 64) - 1
    for i in range(POW5_INV_SIZE):
        p = 5 ** i
        inv = (1 << (p.bit_length() - 1 + POW5_INV_BITS)) // p + 1
        POW5_INV[i][0] = inv & mask
        POW5_INV[i][1] = inv >> 64
    for i in range(POW5_SIZE):
        p = 5 ** i
        shift = p.bit_length() - POW5_BITS
        s = p >> shift if shift >= 0 else p << -shift
        POW5[i][0] = s & mask
        POW5[i][1] = s >> 64


_fill_ryu_tables()


cdef inline int pow5bits(int e) noexcept nogil:
    return <int>((<uint32_t>e * 1217359) >> 19) + 1   # bits of 5**e, 0 <= e <= 3528


cdef inline int log10_pow2(int e) noexcept nogil:
    return <int>((<uint32_t>e * 78913) >> 18)         # floor(log10(2**e))


cdef inline int log10_pow5(int e) noexcept nogil:
    return <int>((<uint32_t>e * 732923) >> 20)        # floor(log10(5**e))


@cython.cdivision(True)
cdef inline bint pow5_divides(uint64_t v, int p) noexcept nogil:
    cdef int count = 0
    while v % 5 == 0:
        v //= 5
        count += 1
        if count >= p:
            return True
    return count >= p


cdef extern from *:
    """
    /* Most values a program reports are short decimals (72.397, 0.1282,
       159.0).  Their shortest digits are found exactly, without Ryu's tables
       and digit removal, by trying k = 0, 1, 2... decimals in 64.64 fixed
       point: F = v * 10**k * 2**64 exactly (v = M / 2**t0, 1 <= t0 <= 62),
       its high half the k-decimal below v, its low half the distance to it.
       A k-decimal reads back as v when it lies strictly inside v's rounding
       interval: half an ulp each side (a quarter below a power of two), in
       the same units T = 10**k * 2**(63 - t0).  A distance is never exactly
       T (it would make 5**k even), so the even-mantissa rule for a decimal
       on the bound never applies.  The first k that has one is the fewest
       digits as Ryu counts them (the last digit's position), and of the two
       neighbours the nearer is taken, as Ryu takes it; a tie (v halfway
       between k-decimals) is left to Ryu.  Returns 0 when Ryu must run: no
       such k up to DT_SHORT_MAX_K (full-precision values), v >= 2**53,
       v < 2**-10. */
    #define DT_SHORT_MAX_K 9
    static inline int dt_short_decimal(uint64_t bits, uint64_t *digits, int *exp10) {
    #if defined(__SIZEOF_INT128__)
        int bexp = (int)((bits >> 52) & 0x7FF);
        uint64_t mant = bits & ((1ULL << 52) - 1);
        uint64_t M = mant | (1ULL << 52), T, hi, frac, m, lo_bound;
        int t0 = 1075 - bexp, k;
        __uint128_t F;
        if (t0 <= 0) {
            if (t0 < 0)
                return 0;
            *digits = M;   /* an integer in [2**52, 2**53) */
            *exp10 = 0;
            return 1;
        }
        if (t0 > 62)
            return 0;
        F = (__uint128_t)M << (64 - t0);
        T = 1ULL << (63 - t0);
        for (k = 0;; k++) {
            hi = (uint64_t)(F >> 64);
            frac = (uint64_t)F;
            if (hi >= 100000000000000000ULL)
                return 0;   /* 18 digits and more: only Ryu can shorten them */
            if (frac == 0) {
                m = hi;
                break;
            }
            lo_bound = mant == 0 ? T / 2 : T;   /* T even: t0 <= 62 */
            if (frac < lo_bound) {
                m = hi;
                if (0 - frac < T) {   /* both neighbours read back as v */
                    if (frac == 0 - frac)
                        return 0;
                    if (0 - frac < frac)
                        m = hi + 1;
                }
                break;
            }
            if (0 - frac < T) {
                m = hi + 1;
                break;
            }
            if (k == DT_SHORT_MAX_K || T > UINT64_MAX / 10)
                return 0;
            T *= 10;
            F *= 10;   /* < 10**18 * 2**64 * 10 < 2**128 */
        }
        if (m == 0 || (k > 0 && m % 10 == 0))
            return 0;   /* not expected (k - 1 would have matched); Ryu decides */
        *digits = m;
        *exp10 = -k;
        return 1;
    #else
        (void)bits; (void)digits; (void)exp10;
        return 0;
    #endif
    }
    """
    bint dt_short_decimal(uint64_t bits, uint64_t *digits, int *exp10) noexcept nogil


@cython.cdivision(True)
cdef int shortest(double v, uint64_t *digits, int *exp10) noexcept nogil:
    """The shortest decimal digits * 10**exp10 that reads back as |v| (v finite, != 0)."""
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    cdef uint64_t mant = bits & ((1ULL << 52) - 1)
    cdef int bexp = <int>((bits >> 52) & 0x7FF)
    cdef int e2, q, k, i, j, e10, removed = 0
    cdef uint64_t m2, mv, vr, vp, vm, out
    cdef uint32_t mm_shift
    cdef bint even, vm_tz = False, vr_tz = False, round_up = False
    cdef int last = 0
    if bexp == 0:
        e2 = 1 - 1023 - 52 - 2
        m2 = mant
    else:
        e2 = bexp - 1023 - 52 - 2
        m2 = (1ULL << 52) | mant
    even = (m2 & 1) == 0
    mv = 4 * m2
    mm_shift = 1 if (mant != 0 or bexp <= 1) else 0
    # vr, vp, vm: v and the bounds of its rounding interval, scaled by 10**-e10
    if e2 >= 0:
        q = log10_pow2(e2) - (1 if e2 > 3 else 0)
        e10 = q
        k = POW5_INV_BITS + pow5bits(q) - 1
        i = -e2 + q + k
        vr = dt_mulshift64(4 * m2, POW5_INV[q], i)
        vp = dt_mulshift64(4 * m2 + 2, POW5_INV[q], i)
        vm = dt_mulshift64(4 * m2 - 1 - mm_shift, POW5_INV[q], i)
        if q <= 21:
            # exact quotients: only one of mp, mv, mm can be a multiple of 5
            if mv % 5 == 0:
                vr_tz = pow5_divides(mv, q)
            elif even:
                vm_tz = pow5_divides(mv - 1 - mm_shift, q)
            else:
                vp -= pow5_divides(mv + 2, q)
    else:
        q = log10_pow5(-e2) - (1 if -e2 > 1 else 0)
        e10 = q + e2
        i = -e2 - q
        k = pow5bits(i) - POW5_BITS
        j = q - k
        vr = dt_mulshift64(4 * m2, POW5[i], j)
        vp = dt_mulshift64(4 * m2 + 2, POW5[i], j)
        vm = dt_mulshift64(4 * m2 - 1 - mm_shift, POW5[i], j)
        if q <= 1:
            vr_tz = True
            if even:
                vm_tz = mm_shift == 1
            else:
                vp -= 1
        elif q < 63:
            vr_tz = (mv & ((1ULL << q) - 1)) == 0
    # drop digits while the interval still holds a shorter decimal
    if vm_tz or vr_tz:
        while vp // 10 > vm // 10:
            vm_tz = vm_tz and vm % 10 == 0
            vr_tz = vr_tz and last == 0
            last = <int>(vr % 10)
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        if vm_tz:
            while vm % 10 == 0:
                vr_tz = vr_tz and last == 0
                last = <int>(vr % 10)
                vr //= 10
                vp //= 10
                vm //= 10
                removed += 1
        if vr_tz and last == 5 and vr % 2 == 0:
            last = 4   # exactly halfway: round to even
        out = vr + (1 if ((vr == vm and (not even or not vm_tz)) or last >= 5) else 0)
    else:
        if vp // 100 > vm // 100:
            round_up = vr % 100 >= 50
            vr //= 100
            vp //= 100
            vm //= 100
            removed += 2
        while vp // 10 > vm // 10:
            round_up = vr % 10 >= 5
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        out = vr + (1 if (vr == vm or round_up) else 0)
    digits[0] = out
    exp10[0] = e10 + removed
    return 0


cdef uint64_t POW10U[20]
POW10U[0] = 1
for _b in range(1, 20):
    POW10U[_b] = POW10U[_b - 1] * 10


cdef inline int digits_len(uint64_t v) noexcept nogil:
    """Decimal digits of v: from its bit length (1233/4096 ~ log10(2)), then one compare."""
    cdef int t = <int>(((64 - dt_clz64(v | 1)) * 1233) >> 12)
    return t + (1 if (v | 1) >= POW10U[t] else 0)   # v | 1: 0 has one digit


@cython.cdivision(True)
cdef inline void put_digits(char *end, uint64_t v) noexcept nogil:
    """The decimal digits of v, written backwards so that the last one is at end[-1]."""
    cdef uint64_t r
    while v >= 100:
        r = v % 100
        v //= 100
        end -= 2
        memcpy(end, dt_pairs + 2 * r, 2)
    if v >= 10:
        memcpy(end - 2, dt_pairs + 2 * v, 2)
    else:
        end[-1] = <char>(48 + v)


@cython.cdivision(True)
cdef Py_ssize_t format_double(double v, char *out) noexcept nogil:
    """_format_number's text for a finite v into out (>= 32 bytes); 0 if not finite.

    repr() writes fixed notation when -4 < decpt <= 16 (decpt: digits before
    the point), else d.dddde[+-]XX; _format_number then drops a trailing
    ".0", gives a bare mantissa ".0" and writes the exponent as E, no "+".
    """
    cdef uint64_t digits, bits
    cdef int e10, nd, decpt, x
    cdef Py_ssize_t o = 0
    cdef char tmp[24]
    cdef char *d
    if isinf(v) or isnan(v):
        return 0
    if v < 0:
        out[0] = 45
        o = 1
    if v == 0.0:   # "0", or "-0" for -0.0
        if o == 0 and 1.0 / v < 0:
            out[0] = 45
            o = 1
        out[o] = 48
        return o + 1
    memcpy(&bits, &v, 8)
    if not dt_short_decimal(bits, &digits, &e10):
        shortest(v, &digits, &e10)
    nd = digits_len(digits)
    put_digits(tmp + 20, digits)
    d = tmp + 20 - nd
    decpt = nd + e10
    if 0 < decpt <= 16:
        if decpt >= nd:   # an integer: the digits, then zeros
            dt_copy(out + o, d, nd)
            memset(out + o + nd, 48, decpt - nd)
            return o + decpt
        dt_copy(out + o, d, decpt)   # d.ddd
        out[o + decpt] = 46
        dt_copy(out + o + decpt + 1, d + decpt, nd - decpt)
        return o + 1 + nd
    if -4 < decpt <= 0:   # 0.000ddd
        out[o] = 48
        out[o + 1] = 46
        memset(out + o + 2, 48, -decpt)
        o += 2 - decpt
        dt_copy(out + o, d, nd)
        return o + nd
    # d.dddE[-]XX
    out[o] = d[0]
    out[o + 1] = 46
    if nd == 1:
        out[o + 2] = 48
        o += 3
    else:
        dt_copy(out + o + 2, d + 1, nd - 1)
        o += 1 + nd
    out[o] = 69
    o += 1
    x = decpt - 1
    if x < 0:
        out[o] = 45
        o += 1
        x = -x
    if x >= 100:
        out[o] = <char>(48 + x // 100)
        o += 1
        x %= 100
    memcpy(out + o, dt_pairs + 2 * x, 2)
    return o + 2


def _format_float(double v):
    """The Encoder's text for a float (the column encoder's formatter), or None if not finite."""
    cdef char tmp[40]
    cdef Py_ssize_t n = format_double(v, tmp)
    if n == 0:
        return None
    return PyBytes_FromStringAndSize(tmp, n).decode("ascii")


cdef inline Py_ssize_t format_u64(uint64_t v, char *out) noexcept nogil:
    """Decimal digits of v into out (>= 20 bytes)."""
    cdef int n = digits_len(v)
    put_digits(out + n, v)
    return n


# --- the columns --------------------------------------------------------------

cdef enum:
    SC_UTF8 = 0        # Arrow string (int32 offsets)
    SC_LARGE = 1       # Arrow large_string (int64 offsets)
    SC_OBJECT = 2      # pandas object column: str, or None / NaN / pd.NA for null

    # what str_at found
    V_NULL = 0
    V_OK = 1
    V_BAD = -1         # out of range or not UTF-8: the row goes to the Encoder
    V_OTHER = -2       # an object column holds something else: convert it with pyarrow

    # what encode_columns returns in its status
    ST_DONE = 0
    ST_ROW = 1         # stopped at a row the Encoder must look at
    ST_UNSUPPORTED = 2

    SAMPLE_ROWS = 512      # rows written before the body is sized for the rest
    LINE_ROOM = 512        # reserved before a key and before a payload: a key has
                           # <= 250 bytes, payload + timestamp + LF <= 200


cdef struct StrCol:
    int kind
    const uint8_t *valid   # validity of the values (NULL: none null)
    Py_ssize_t off         # offset of the values array (elements)
    Py_ssize_t nvals       # values in the array (dictionary size, or rows)
    const int32_t *o32
    const int64_t *o64
    const uint8_t *data
    int64_t data_len
    PyObject **objs
    const int32_t *idx     # dictionary indices (NULL: row i is value i)
    const uint8_t *ivalid  # validity of the indices
    Py_ssize_t ioff
    char head[104]         # ",key=" of a dimension (keys have <= 100 bytes)
    Py_ssize_t head_len
    const uint8_t *seen_p[64]   # a metric key column: keys checked in this batch
    Py_ssize_t seen_n[64]       # (their lengths; -1: empty slot)


cdef struct NumCol:
    const uint8_t *valid
    Py_ssize_t off
    const double *f64
    const int64_t *i64


cdef struct SpecC:
    int key_col            # index into the string columns, or -1: key_text
    int value_col          # index into the number columns, or -1: value_text
    int sum_cols[4]        # min, max, sum (float64), count (int64) columns of a summary
    const char *key_text   # a constant key (checked by the caller)
    Py_ssize_t key_len
    const char *value_text  # a constant payload (" gauge,1.5"), checked by the caller
    Py_ssize_t value_len


cdef inline bint bit(const uint8_t *bits, Py_ssize_t i) noexcept nogil:
    return (bits[i >> 3] >> (i & 7)) & 1


cdef const uint8_t *buffer_at(object buf, Py_ssize_t need) except? NULL:
    """The address of a pyarrow Buffer that holds at least ``need`` bytes."""
    if buf is None:
        if need > 0:
            raise ValueError("a column lacks a buffer")
        return NULL
    if buf.size < need:
        raise ValueError("a column's buffer is shorter than its length")
    return <const uint8_t *><uintptr_t>buf.address


cdef int str_setup(StrCol *c, object values, object indices, Py_ssize_t rows,
                   list views, Py_buffer *vbuf, object na) except -1:
    """Fill c from an Arrow string array (or an object ndarray), and optional int32 indices.

    1: an object column pyarrow must convert (see object_column_plain).
    """
    cdef int k
    for k in range(64):   # the previous batch's memory may be gone
        c.seen_p[k] = NULL
        c.seen_n[k] = -1
    cdef Py_ssize_t off, n
    c.idx = NULL
    c.ivalid = NULL
    c.ioff = 0
    if indices is not None:
        if len(indices) != rows:
            raise ValueError("indices of another length")
        off = indices.offset
        b = indices.buffers()
        c.ivalid = buffer_at(b[0], (off + rows + 7) // 8) if indices.null_count else NULL
        c.idx = <const int32_t *>buffer_at(b[1], (off + rows) * 4)
        c.ioff = off
    elif len(values) != rows:
        raise ValueError("a column of another length")
    if not hasattr(values, "buffers"):   # an object ndarray: its buffer stays exported
        PyObject_GetBuffer(values, vbuf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        views.append(values)
        if vbuf.itemsize != sizeof(PyObject *) or vbuf.format == NULL \
                or vbuf.format[0] != 79 or vbuf.format[1] != 0:   # "O"
            raise ValueError("not an object array")
        c.kind = SC_OBJECT
        c.objs = <PyObject **>vbuf.buf
        c.nvals = vbuf.len // sizeof(PyObject *)
        c.valid = NULL
        c.off = 0
        return object_column_plain(c.objs, c.nvals, <PyObject *>na)
    return plain_setup(c, values)


cdef int object_column_plain(PyObject **objs, Py_ssize_t n, PyObject *na) noexcept:
    """0 when every item is a str or a null and one at least is a str (pyarrow
    makes a string column of that), else 1: pyarrow must convert the column.

    Every row is looked at, including those whose line is skipped: pyarrow
    refuses a column of mixed types whatever the rows.
    """
    cdef Py_ssize_t i
    cdef bint text = False
    cdef PyObject *o
    for i in range(n):
        o = objs[i]
        if dt_str_exact(o):
            text = True
        elif not (o == <PyObject *>None or o == na
                  or (dt_float_check(o) and isnan(dt_float_value(o)))):
            return 1
    return 0 if text else 1


cdef int plain_setup(StrCol *c, object values) except -1:
    cdef Py_ssize_t off, n
    tid = values.type.id
    if tid != _STRING_IDS[0] and tid != _STRING_IDS[1]:
        raise ValueError("not a string array")
    c.kind = SC_LARGE if tid == _STRING_IDS[1] else SC_UTF8
    off = values.offset
    n = len(values)
    b = values.buffers()
    c.off = off
    c.nvals = n
    c.valid = buffer_at(b[0], (off + n + 7) // 8) if values.null_count else NULL
    if c.kind == SC_LARGE:
        c.o64 = <const int64_t *>buffer_at(b[1], (off + n + 1) * 8)
    else:
        c.o32 = <const int32_t *>buffer_at(b[1], (off + n + 1) * 4)
    c.data_len = b[2].size if b[2] is not None else 0
    c.data = buffer_at(b[2], 0) if b[2] is not None else <const uint8_t *>""
    return 0


cdef inline int str_at(StrCol *c, Py_ssize_t row, PyObject *na, const uint8_t **p,
                       Py_ssize_t *n) noexcept:
    cdef Py_ssize_t j = row
    cdef int64_t a, b
    cdef PyObject *o
    if c.idx != NULL:
        if c.ivalid != NULL and not bit(c.ivalid, c.ioff + row):
            return V_NULL
        j = c.idx[c.ioff + row]
        if j < 0 or j >= c.nvals:
            return V_BAD
    if c.kind == SC_OBJECT:
        o = c.objs[j]
        if dt_str_exact(o):
            p[0] = <const uint8_t *>dt_str_utf8(o, n)
            if p[0] == NULL:
                PyErr_Clear()
                return V_OTHER
            return V_OK
        if o == <PyObject *>None or o == na or (dt_float_check(o) and isnan(dt_float_value(o))):
            return V_NULL
        return V_OTHER
    if c.valid != NULL and not bit(c.valid, c.off + j):
        return V_NULL
    if c.kind == SC_UTF8:
        a = c.o32[c.off + j]
        b = c.o32[c.off + j + 1]
    else:
        a = c.o64[c.off + j]
        b = c.o64[c.off + j + 1]
    if a < 0 or b < a or b > c.data_len:
        return V_BAD
    p[0] = c.data + a
    n[0] = <Py_ssize_t>(b - a)
    return V_OK


cdef int num_setup(NumCol *c, object arr, Py_ssize_t rows, bint is_int) except -1:
    if len(arr) != rows:
        raise ValueError("a column of another length")
    cdef Py_ssize_t off = arr.offset
    b = arr.buffers()
    c.off = off
    c.valid = buffer_at(b[0], (off + rows + 7) // 8) if arr.null_count else NULL
    c.f64 = NULL
    c.i64 = NULL
    if is_int:
        c.i64 = <const int64_t *>buffer_at(b[1], (off + rows) * 8)
    else:
        c.f64 = <const double *>buffer_at(b[1], (off + rows) * 8)
    return 0


cdef inline bint num_null(NumCol *c, Py_ssize_t row) noexcept nogil:
    return c.valid != NULL and not bit(c.valid, c.off + row)


cdef inline Py_ssize_t code_points(const uint8_t *u, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, k = 0
    for i in range(n):
        k += (u[i] & 0xC0) != 0x80
    return k


# The body is written straight into a bytes object, grown (realloc) as it
# fills and cut to size at the end: EncodedTable(body) then makes the one
# copy the bytes subclass needs.  No Python code runs between a growth and
# the writes that use the new address.
cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject **obj, Py_ssize_t newsize) except -1


cdef struct Body:
    PyObject *obj          # an unshared bytes object (owned), or NULL
    char *buf
    Py_ssize_t len
    Py_ssize_t cap


cdef int body_reserve(Body *o, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = grown(o.cap, o.len + extra)
    if o.obj == NULL:
        obj = PyBytes_FromStringAndSize(NULL, cap)
        Py_INCREF(obj)
        o.obj = <PyObject *>obj
    else:
        _PyBytes_Resize(&o.obj, cap)   # on failure o.obj is NULL and MemoryError set
    o.buf = PyBytes_AS_STRING(<object>o.obj)
    o.cap = cap
    return 0


cdef inline void put(Body *o, const char *s, Py_ssize_t n) noexcept nogil:
    """Append n bytes the caller has made room for."""
    dt_copy(o.buf + o.len, s, n)
    o.len += n


cdef object body_take(Body *o):
    """The body as bytes, cut to size (the caller's reference)."""
    if o.obj == NULL:
        body_reserve(o, 1)
    _PyBytes_Resize(&o.obj, o.len)
    out = <object>o.obj
    Py_DECREF(out)   # <object> took a new reference; this drops ours
    o.obj = NULL
    o.len = o.cap = 0
    return out


cdef enum:
    # what escape_value does with a byte >= 128
    NONASCII_REFUSE = 0    # the line goes to the reference (Encoder with options)
    NONASCII_TRUSTED = 1   # UTF-8 of a str: copied as is
    NONASCII_CHECKED = 2   # bytes from a buffer: copied when a valid UTF-8 sequence


cdef Py_ssize_t escape_value(const uint8_t *u, Py_ssize_t vn, char *w,
                             int nonascii) noexcept nogil:
    """A dimension value with , = SP \\ " escaped (mirrors _escape_value) into ``w``
    (room for 2 * vn); the bytes written, or -1 when the Encoder refuses it (a
    control character, or non-ASCII as ``nonascii`` says).  The one escaping
    loop of the C core: Encoder (write_dimension) and encode_columns."""
    cdef Py_ssize_t i = 0, start, k
    cdef char *w0 = w
    cdef uint8_t c
    while i < vn:
        start = i
        if nonascii == NONASCII_TRUSTED:
            while i < vn and (CLS[u[i]] & C_BARE_PLAIN or u[i] >= 128):
                i += 1
        else:
            while i < vn and CLS[u[i]] & C_BARE_PLAIN:
                i += 1
        dt_copy(w, <const char *>u + start, i - start)
        w += i - start
        if i >= vn:
            break
        c = u[i]
        if c >= 128:
            if nonascii != NONASCII_CHECKED:
                return -1
            k = utf8_seq(u, i, vn)
            if k == 0:
                return -1
            memcpy(w, u + i, k)
            w += k
            i += k
            continue
        if is_control(c):
            return -1
        w[0] = 92  # , = SP \ " get a backslash
        w[1] = <char>c
        w += 2
        i += 1
    return w - w0


cdef inline int put_dim_value(Body *o, const uint8_t *u, Py_ssize_t vn) except -1:
    """The escaped dimension value; 0 if the Encoder refuses it.

    Unlike write_dimension the bytes need not come from a str: non-ASCII
    sequences are checked (an Arrow buffer can hold anything).
    """
    cdef Py_ssize_t n
    if vn > MAX_DIMENSION_VALUE and code_points(u, vn) > MAX_DIMENSION_VALUE:
        return 0
    if o.len + 2 * vn > o.cap:
        body_reserve(o, 2 * vn)
    n = escape_value(u, vn, o.buf + o.len, NONASCII_CHECKED)
    if n < 0:
        return 0
    o.len += n
    return 1


cdef inline int put_number(Body *o, double v) noexcept nogil:
    """The number (room made by the caller: <= 32 bytes); 0 if not finite."""
    cdef Py_ssize_t n = format_double(v, o.buf + o.len)
    o.len += n
    return n != 0


cdef inline int put_uint(Body *o, int64_t v) noexcept nogil:
    """v >= 0 in decimal (room made by the caller: <= 20 bytes); 0 if negative."""
    if v < 0:
        return 0
    o.len += format_u64(<uint64_t>v, o.buf + o.len)
    return 1


_STRING_IDS = None   # pyarrow's type ids of string and large_string


def encode_columns(list batches, list specs, list dims, Py_ssize_t ts_col, int kind,
                   Py_ssize_t nfloat, object na):
    """The lines of a table's rows (dtproto.arrow's C path; see _vector_lines there).

    ``batches``: ``[(rows, strs, nums)]``, the table cut where its chunks
    end.  ``strs``: per string column ``(values, indices or None)``,
    ``values`` an Arrow string/large_string array or an object ndarray;
    ``nums``: ``nfloat`` Arrow float64 arrays, then int64 ones (timestamp,
    counts), numbered as ``specs`` and ``ts_col`` use them.
    ``specs``: ``[(key, value, summary)]``: ``key`` a string column number
    or a checked constant (bytes), ``value`` a number column or the
    constant payload (bytes, " gauge,1.5"), ``summary`` None or the
    (min, max, sum, count) column numbers.  ``dims``: ``[(key, string
    column number)]`` (keys checked).  ``kind``: 0 gauge, 1 count, 2 summary.
    ``na``: what else an object column holds for null (pandas.NA).

    Returns ``(status, body, lines, skipped, row, seconds)``: status 0 done
    (``body`` a buffer), 1 stopped at ``row`` (absolute), which the Encoder
    must diagnose, 2 an object column holds something other than str/null.
    """
    global _STRING_IDS
    if _STRING_IDS is None:
        import pyarrow
        _STRING_IDS = (pyarrow.string().id, pyarrow.large_string().id)
    cdef Py_ssize_t nspecs = len(specs), ndims = len(dims), nstr = 0, nnum = 0
    cdef Py_ssize_t s, d, r, rows, row0 = 0, lines = 0, skipped = 0, start, line_start
    cdef Py_ssize_t dims_at, dims_len, n, present, nviews = 0, total
    cdef int got, status = ST_DONE
    cdef unsigned slot
    cdef bint seconds = False, null
    cdef int64_t tsv
    cdef double x, mn, mx, sm
    cdef const uint8_t *p
    cdef PyObject *na_p = <PyObject *>na
    cdef SpecC *sp
    cdef StrCol *kc
    cdef Body o
    if not batches:
        return (ST_DONE, b"", 0, 0, 0, False)
    nstr = len(batches[0][1])
    nnum = len(batches[0][2])
    cdef StrCol *strs = <StrCol *>PyMem_Malloc(sizeof(StrCol) * (nstr + 1))
    cdef NumCol *nums = <NumCol *>PyMem_Malloc(sizeof(NumCol) * (nnum + 1))
    cdef SpecC *sc = <SpecC *>PyMem_Malloc(sizeof(SpecC) * (nspecs + 1))
    cdef int *dim_col = <int *>PyMem_Malloc(sizeof(int) * (ndims + 1))
    cdef Py_buffer *vbufs = <Py_buffer *>PyMem_Malloc(sizeof(Py_buffer) * (nstr + 1))
    cdef list keep = []   # the objects whose memory the pointers above point into
    cdef list views = []
    o.obj = NULL
    o.len = o.cap = 0
    try:
        if strs == NULL or nums == NULL or sc == NULL or dim_col == NULL or vbufs == NULL:
            raise MemoryError()
        for s in range(nspecs):
            key, value, summary = specs[s]
            sp = &sc[s]
            keep.append((key, value))
            if isinstance(key, bytes):
                sp.key_col = -1
                sp.key_text = PyBytes_AS_STRING(key)
                sp.key_len = PyBytes_GET_SIZE(key)
            else:
                sp.key_col = key
            if isinstance(value, bytes):
                sp.value_col = -1
                sp.value_text = PyBytes_AS_STRING(value)
                sp.value_len = PyBytes_GET_SIZE(value)
                if sp.value_len > 200:
                    raise ValueError("a constant payload that long")
            elif value is None:
                sp.value_col = -1
                sp.value_len = 0
            else:
                sp.value_col = value
            for d in range(4):
                sp.sum_cols[d] = summary[d] if summary is not None else -1
            # float columns come first, then int64 ones: a pointer of the right kind
            if (sp.key_col >= nstr or sp.value_col >= nfloat or (kind == K_SUMMARY) !=
                    (summary is not None) or (summary is not None and (
                        max(sp.sum_cols[0], sp.sum_cols[1], sp.sum_cols[2]) >= nfloat
                        or min(sp.sum_cols[0], sp.sum_cols[1], sp.sum_cols[2]) < 0
                        or sp.sum_cols[3] < nfloat or sp.sum_cols[3] >= nnum))):
                raise ValueError("a spec names a column that is not there")
        for d in range(ndims):
            dkey, col = dims[d]
            kb = dkey.encode("utf-8")
            if len(kb) > 100 or col >= nstr or col < 0:
                raise ValueError("a dimension key or column out of range")
            dim_col[d] = col
            strs[col].head[0] = 44
            memcpy(strs[col].head + 1, PyBytes_AS_STRING(kb), len(kb))
            strs[col].head[len(kb) + 1] = 61
            strs[col].head_len = len(kb) + 2
        if ts_col >= nnum or (ts_col >= 0 and ts_col < nfloat) or nfloat > nnum:
            raise ValueError("no such timestamp column")
        total = sum(b[0] for b in batches)
        # a first guess; after SAMPLE_ROWS rows, room for all at their size (+1/8),
        # so that the body rarely grows (a realloc that may copy it)
        body_reserve(&o, 128 * nspecs * min(total, SAMPLE_ROWS) + 1024)
        for batch in batches:
            rows, bstrs, bnums = batch
            for d in range(nviews):
                PyBuffer_Release(&vbufs[d])
            nviews = 0
            del views[:]
            del keep[nspecs:]
            keep.append(batch)
            for d in range(nstr):
                values, indices = bstrs[d]
                got = str_setup(&strs[d], values, indices, rows, views, &vbufs[nviews], na)
                if strs[d].kind == SC_OBJECT:
                    nviews += 1
                if got:
                    return (ST_UNSUPPORTED, None, 0, 0, 0, False)
            for d in range(nnum):
                num_setup(&nums[d], bnums[d], rows, d >= nfloat)
            for r in range(rows):
                if row0 + r == SAMPLE_ROWS and total > 2 * SAMPLE_ROWS:
                    n = o.len // SAMPLE_ROWS * (total - SAMPLE_ROWS)
                    body_reserve(&o, n + n // 8 + 4096)
                dims_at = -1
                dims_len = 0
                for s in range(nspecs):
                    sp = &sc[s]
                    # a null value (or summary field) skips the line and its checks
                    if kind == K_SUMMARY:
                        null = (num_null(&nums[sp.sum_cols[0]], r)
                                or num_null(&nums[sp.sum_cols[1]], r)
                                or num_null(&nums[sp.sum_cols[2]], r)
                                or num_null(&nums[sp.sum_cols[3]], r))
                    elif sp.value_col >= 0:
                        null = num_null(&nums[sp.value_col], r)
                    else:
                        null = sp.value_len == 0
                    if null:
                        skipped += 1
                        continue
                    line_start = o.len
                    # room for the key (<= 250 bytes once checked); the dimensions
                    # reserve their own, then the rest of the line
                    if o.len + LINE_ROOM > o.cap:
                        body_reserve(&o, LINE_ROOM)
                    if sp.key_col < 0:
                        put(&o, sp.key_text, sp.key_len)
                    else:
                        kc = &strs[sp.key_col]
                        got = str_at(kc, r, na_p, &p, &n)
                        if got != V_OK:
                            status = ST_UNSUPPORTED if got == V_OTHER else ST_ROW
                            break
                        # keys repeat: each is checked once per batch (a cache of
                        # the keys seen, by their bytes)
                        slot = dt_key_slot(p, n)
                        if n != kc.seen_n[slot] or (p != kc.seen_p[slot]
                                                    and not dt_equal(p, kc.seen_p[slot], n)):
                            if not metric_key_ok(p, n):
                                status = ST_ROW
                                break
                            kc.seen_p[slot] = p
                            kc.seen_n[slot] = n
                        put(&o, <const char *>p, n)
                    if dims_at < 0:
                        dims_at = o.len
                        present = 0
                        for d in range(ndims):
                            kc = &strs[dim_col[d]]
                            got = str_at(kc, r, na_p, &p, &n)
                            if got == V_NULL:
                                continue
                            if got != V_OK:
                                status = ST_UNSUPPORTED if got == V_OTHER else ST_ROW
                                break
                            present += 1
                            if o.len + kc.head_len + 2 * n > o.cap:
                                body_reserve(&o, kc.head_len + 2 * n)
                            put(&o, kc.head, kc.head_len)
                            if present > MAX_DIMENSIONS or not put_dim_value(&o, p, n):
                                status = ST_ROW
                                break
                        if status != ST_DONE:
                            break
                        dims_len = o.len - dims_at
                    elif dims_len:
                        if o.len + dims_len > o.cap:
                            body_reserve(&o, dims_len)
                        memcpy(o.buf + o.len, o.buf + dims_at, dims_len)
                        o.len += dims_len
                    if o.len + LINE_ROOM > o.cap:   # payload, timestamp, LF
                        body_reserve(&o, LINE_ROOM)
                    if kind == K_SUMMARY:
                        mn = nums[sp.sum_cols[0]].f64[nums[sp.sum_cols[0]].off + r]
                        mx = nums[sp.sum_cols[1]].f64[nums[sp.sum_cols[1]].off + r]
                        sm = nums[sp.sum_cols[2]].f64[nums[sp.sum_cols[2]].off + r]
                        tsv = nums[sp.sum_cols[3]].i64[nums[sp.sum_cols[3]].off + r]
                        put(&o, " gauge,min=", 11)
                        got = put_number(&o, mn)
                        put(&o, ",max=", 5)
                        got = got and put_number(&o, mx)
                        put(&o, ",sum=", 5)
                        got = got and put_number(&o, sm)
                        put(&o, ",count=", 7)
                        if not (got and put_uint(&o, tsv) and summary_ok(mn, mx, sm, tsv)):
                            status = ST_ROW
                            break
                    elif sp.value_col < 0:
                        put(&o, sp.value_text, sp.value_len)
                    else:
                        x = nums[sp.value_col].f64[nums[sp.value_col].off + r]
                        if kind == K_GAUGE:
                            put(&o, " gauge,", 7)
                        else:
                            put(&o, " count,delta=", 13)
                        if not put_number(&o, x):
                            status = ST_ROW
                            break
                    if ts_col >= 0 and not num_null(&nums[ts_col], r):
                        tsv = nums[ts_col].i64[nums[ts_col].off + r]
                        o.buf[o.len] = 32
                        o.len += 1
                        if not put_uint(&o, tsv):
                            status = ST_ROW
                            break
                        if tsv < SECONDS_TIMESTAMP_BELOW:
                            seconds = True
                    if o.len - line_start > MAX_LINE_CHARS and \
                            code_points(<const uint8_t *>o.buf + line_start,
                                        o.len - line_start) > MAX_LINE_CHARS:
                        status = ST_ROW
                        break
                    o.buf[o.len] = 10
                    o.len += 1
                    lines += 1
                if status != ST_DONE:
                    break
            if status != ST_DONE:
                return (status, None, lines, skipped, row0 + r, seconds)
            row0 += rows
        return (ST_DONE, body_take(&o), lines, skipped, row0, seconds)
    finally:
        for d in range(nviews):
            PyBuffer_Release(&vbufs[d])
        Py_XDECREF(o.obj)
        PyMem_Free(strs)
        PyMem_Free(nums)
        PyMem_Free(sc)
        PyMem_Free(dim_col)
        PyMem_Free(vbufs)
