/* Skipping runs of ordinary bytes 16 at a time (dtproto._codec_c).
 *
 * The scanners of _codec_c.pyx walk a line token by token; inside a token they
 * skip "plain" bytes (key characters, value characters that need no special
 * handling) until a byte that ends the token or needs a closer look.  A byte
 * loop pays a table lookup per byte and, worse, a mispredicted branch at the
 * end of every token, whose length varies from line to line.  These functions
 * classify 16 bytes at once with SSE2 (part of every x86-64 CPU, so there is
 * nothing to choose at run time) and jump straight to the first byte that is
 * not plain.  Elsewhere they skip nothing and the byte loop does all the work.
 *
 * Contract, for every skipper: it returns the first offset j >= i with
 * j == n or p[j] not in the class, exactly what a byte loop over the class
 * table would return; the caller needs no byte loop of its own, which takes
 * a load and a test off the critical path of every token.  Only bytes
 * inside p[0:n] are read (16-byte loads lie inside it; a line shorter than
 * 16 bytes takes the byte loop).
 *
 * The classes must equal the CLS table bits of the .pyx, which is built from
 * dtproto._constants; _codec_c checks every byte value at every position
 * of lines of up to 40 bytes against CLS when it is imported
 * (blocks_self_check), so a divergence cannot go unnoticed.
 */
#ifndef DTPROTO_BLOCKS_H
#define DTPROTO_BLOCKS_H

#include <stdint.h>
#include <string.h>
#include <Python.h>

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define DT_BLOCKS 1

static inline int dt_ctz(unsigned m) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(m);
#else
    unsigned long r;
    _BitScanForward(&r, m);
    return (int)r;
#endif
}

/* Bytes v with lo <= v <= lo + span (unsigned). */
static inline __m128i dt_in_range(__m128i v, char lo, char span) {
    __m128i t = _mm_sub_epi8(v, _mm_set1_epi8(lo));
    return _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(span)), t);
}

/* One block: a mask of the bytes NOT in the class. */
static inline unsigned dt_stop_bare(__m128i v) {
    /* plain: 0x21..0x7E but , \ = "  (signed: bytes >= 0x80 are below 0x21) */
    __m128i s = _mm_or_si128(_mm_cmpgt_epi8(_mm_set1_epi8(0x21), v),
                             _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F)));
    s = _mm_or_si128(s, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(',')),
                                     _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    s = _mm_or_si128(s, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('=')),
                                     _mm_cmpeq_epi8(v, _mm_set1_epi8('"'))));
    return (unsigned)_mm_movemask_epi8(s);
}

static inline unsigned dt_stop_quoted(__m128i v) {
    /* plain: 0x20..0x7E but \ "  */
    __m128i s = _mm_or_si128(_mm_cmpgt_epi8(_mm_set1_epi8(0x20), v),
                             _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F)));
    s = _mm_or_si128(s, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')),
                                     _mm_cmpeq_epi8(v, _mm_set1_epi8('"'))));
    return (unsigned)_mm_movemask_epi8(s);
}

static inline unsigned dt_stop_metric_key(__m128i v) {
    /* in: - 0-9 A-Z _ a-z  (not "."; the scanner handles sections) */
    __m128i in = _mm_or_si128(dt_in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 25),
                              dt_in_range(v, '0', 9));
    in = _mm_or_si128(in, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('_')),
                                       _mm_cmpeq_epi8(v, _mm_set1_epi8('-'))));
    return (unsigned)_mm_movemask_epi8(in) ^ 0xFFFFu;
}

static inline unsigned dt_stop_dimension_key(__m128i v) {
    /* in: - 0-9 : _ a-z  (not "."; the scanner handles sections) */
    __m128i in = _mm_or_si128(dt_in_range(v, 'a', 25), dt_in_range(v, '0', 9));
    in = _mm_or_si128(in, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('_')),
                                       _mm_cmpeq_epi8(v, _mm_set1_epi8('-'))));
    in = _mm_or_si128(in, _mm_cmpeq_epi8(v, _mm_set1_epi8(':')));
    return (unsigned)_mm_movemask_epi8(in) ^ 0xFFFFu;
}

/* One 16-byte block of a key for the two functions below: ``stop`` marks
 * the bytes that end the key, ``dot`` its dots, ``bad`` the bytes that may
 * not start a section; ``*carry`` is 1 when the block's first byte must
 * start one.  1 when the block decides (*res: the offset of the end, or -1),
 * 0 to go on with the next block. */
static inline int dt_key_block(unsigned stop, unsigned dot, unsigned bad, unsigned *carry,
                               Py_ssize_t i, Py_ssize_t *res) {
    unsigned after = ((dot << 1) | *carry) & 0xFFFFu;   /* bytes right after a "." */
    if (stop) {
        unsigned e = (unsigned)dt_ctz(stop);
        unsigned upto = (2u << e) - 1u;   /* bits 0..e */
        *res = (after & (bad | stop) & upto) ? -1 : i + (Py_ssize_t)e;
        return 1;
    }
    if (after & bad) {
        *res = -1;
        return 1;
    }
    *carry = dot >> 15;
    return 0;
}

/* A whole metric key at p[0:n] whose first byte the caller has checked:
 * the offset of the first byte that is neither a key character nor ".", or
 * -1 when a "." is not followed by a section start (a letter, digit or "_")
 * before that byte, or -2 when the line ends within 16 bytes of it (the
 * byte loop decides).  The byte loop pays a mispredicted branch at every
 * "." of "k8s.pod.memory.working_set"; here the dots of 16 bytes are
 * checked at once: a bit after a "." must not be "-", "." or the end. */
static inline Py_ssize_t dt_metric_key_end(const uint8_t *p, Py_ssize_t n) {
    Py_ssize_t i = 0, res;
    unsigned carry = 0;   /* 1: the previous block ended with a "." */
    for (; n - i >= 16; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        unsigned dot = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('.')));
        unsigned bad = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('-'))) | dot;
        if (dt_key_block(dt_stop_metric_key(v) & ~dot, dot, bad, &carry, i, &res))
            return res;
    }
    return -2;
}

/* A whole dimension key at p[0:n], the same way: the offset of the first
 * byte that is neither a dimension key character nor ".", or -1 when the
 * first byte or a byte after a "." is not a section start (a lowercase
 * letter or "_"), or -2 when the line ends within 16 bytes of it. */
static inline Py_ssize_t dt_dimension_key_end(const uint8_t *p, Py_ssize_t n) {
    Py_ssize_t i = 0, res;
    unsigned carry = 1;   /* the first byte starts a section */
    for (; n - i >= 16; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i digit = dt_in_range(v, '0', 9);
        __m128i other = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('-')),
                                     _mm_cmpeq_epi8(v, _mm_set1_epi8(':')));
        __m128i dotv = _mm_cmpeq_epi8(v, _mm_set1_epi8('.'));
        __m128i section = _mm_or_si128(dt_in_range(v, 'a', 25),
                                       _mm_cmpeq_epi8(v, _mm_set1_epi8('_')));
        __m128i badv = _mm_or_si128(_mm_or_si128(digit, other), dotv);
        unsigned dot = (unsigned)_mm_movemask_epi8(dotv);
        unsigned bad = (unsigned)_mm_movemask_epi8(badv);     /* key bytes, no section start */
        unsigned key = (unsigned)_mm_movemask_epi8(_mm_or_si128(section, badv));
        if (dt_key_block(~key & 0xFFFFu, dot, bad, &carry, i, &res))
            return res;
    }
    return -2;
}

/* Whether a[0:n] == b[0:n], without a libc call for the common sizes: the
 * head cache compares a cached head of ~100 bytes with the line on every
 * hit, the column decoder a metric key of 8-16.  Overlapping loads cover
 * the last partial block. */
static inline int dt_equal(const void *a, const void *b, Py_ssize_t n) {
    const char *x = (const char *)a, *y = (const char *)b;
    Py_ssize_t i = 0;
    if (n < 16) {
        uint64_t s, t, u, v;
        if (n < 8)
            return memcmp(x, y, (size_t)n) == 0;
        memcpy(&s, x, 8); memcpy(&t, y, 8);
        memcpy(&u, x + n - 8, 8); memcpy(&v, y + n - 8, 8);
        return s == t && u == v;
    }
    for (; n - i > 16; i += 16) {
        __m128i d = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(x + i)),
                                   _mm_loadu_si128((const __m128i *)(y + i)));
        if (_mm_movemask_epi8(d) != 0xFFFF)
            return 0;
    }
    i = n - 16;
    return _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(x + i)),
                                            _mm_loadu_si128((const __m128i *)(y + i))))
           == 0xFFFF;
}

/* The skipper of one class: the first j >= i with j == n or p[j] not in the
 * class.  Whole blocks first; the last partial block is the line's last 16
 * bytes, shifted so that bytes before i do not count; a line shorter than
 * 16 bytes takes the byte loop over the class table of the .pyx (cls/bit). */
#define DT_SKIP(name, stop)                                                        \
    static inline Py_ssize_t name(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,    \
                                  const uint16_t *cls, unsigned bit) {             \
        unsigned m;                                                                \
        while (n - i >= 16) {                                                      \
            m = stop(_mm_loadu_si128((const __m128i *)(p + i)));                   \
            if (m)                                                                 \
                return i + dt_ctz(m);                                              \
            i += 16;                                                               \
        }                                                                          \
        if (i >= n)                                                                \
            return n;                                                              \
        if (n >= 16) {                                                             \
            m = stop(_mm_loadu_si128((const __m128i *)(p + n - 16))) >> (16 - (n - i)); \
            return m ? i + dt_ctz(m) : n;                                          \
        }                                                                          \
        while (i < n && (cls[p[i]] & bit))                                         \
            i++;                                                                   \
        return i;                                                                  \
    }

/* The next line: the offset of the first LF in q[0:avail] (avail when there
 * is none) and, in *sp, the first SP before it (-1: none).  One pass finds
 * both while no SP has been seen, then memchr finds the LF: the head is
 * read once, where two memchr calls (LF, then SP within the line) read it
 * twice and pay two calls a line. */
static inline Py_ssize_t dt_line_sp(const uint8_t *q, Py_ssize_t avail, Py_ssize_t *sp) {
    const __m128i lf = _mm_set1_epi8('\n'), space = _mm_set1_epi8(' ');
    const void *nl;
    Py_ssize_t i = 0;
    unsigned ml, ms;
    *sp = -1;
    while (avail - i >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(q + i));
        ml = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));
        ms = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, space));
        if (ms) {
            ms &= ml ? (ml ^ (ml - 1)) >> 1 : 0xFFFFu;   /* SPs before the first LF */
            if (ms)
                *sp = i + dt_ctz(ms);
            if (ml)
                return i + dt_ctz(ml);
            i += 16;
            nl = memchr(q + i, '\n', (size_t)(avail - i));
            return nl != NULL ? (const uint8_t *)nl - q : avail;
        }
        if (ml)
            return i + dt_ctz(ml);
        i += 16;
    }
    for (; i < avail; i++) {
        if (q[i] == '\n')
            return i;
        if (q[i] == ' ' && *sp < 0)
            *sp = i;
    }
    return avail;
}

#else  /* no SSE2: the byte loops do everything */
static inline int dt_equal(const void *a, const void *b, Py_ssize_t n) {
    return memcmp(a, b, (size_t)n) == 0;
}
#define DT_BLOCKS 0
static inline Py_ssize_t dt_line_sp(const uint8_t *q, Py_ssize_t avail, Py_ssize_t *sp) {
    const void *nl = memchr(q, '\n', (size_t)avail);
    Py_ssize_t n = nl != NULL ? (const uint8_t *)nl - q : avail;
    const void *s = memchr(q, ' ', (size_t)n);
    *sp = s != NULL ? (const uint8_t *)s - q : -1;
    return n;
}
static inline Py_ssize_t dt_metric_key_end(const uint8_t *p, Py_ssize_t n) {
    (void)p; (void)n;
    return -2;
}
static inline Py_ssize_t dt_dimension_key_end(const uint8_t *p, Py_ssize_t n) {
    (void)p; (void)n;
    return -2;
}

#define DT_SKIP(name, stop)                                                        \
    static inline Py_ssize_t name(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,    \
                                  const uint16_t *cls, unsigned bit) {             \
        while (i < n && (cls[p[i]] & bit))                                         \
            i++;                                                                   \
        return i;                                                                  \
    }
#endif

DT_SKIP(dt_skip_bare, dt_stop_bare)
DT_SKIP(dt_skip_quoted, dt_stop_quoted)
DT_SKIP(dt_skip_metric_key, dt_stop_metric_key)
DT_SKIP(dt_skip_dimension_key, dt_stop_dimension_key)

/* Numbers: plain 64-bit arithmetic (SWAR), no SSE2 needed. */

/* 0x80 in each byte of x that is not an ASCII digit, exact up to and including
 * the first such byte (a carry or borrow only reaches the bytes after it);
 * 0 exactly when all 8 bytes are digits. */
static inline uint64_t dt_nondigits8(uint64_t x) {
    return ((x + 0x4646464646464646ULL) | (x - 0x3030303030303030ULL)) & 0x8080808080808080ULL;
}

/* The value of 8 digit values (0-9, most significant in the lowest byte). */
static inline uint64_t dt_value8(uint64_t v) {
    v = v * 10 + (v >> 8);
    return (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32)))
            + (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
}

/* The run of ASCII digits at p[0:8] (8 readable bytes): its length (0-8)
 * and, in *val, its value; or -1 where this is not a little-endian machine
 * (the caller's byte loop then does the work).  The byte loop mispredicts
 * the end of every number, whose length varies from line to line; here a
 * number's digits are found and converted with a few multiplies (the
 * digit test and the conversion are simdjson's).  A borrow or carry from a
 * non-digit byte only reaches the bytes after it, which are shifted out. */
static inline int dt_digits8(const uint8_t *p, uint64_t *val) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t x, m;
    int len;
    memcpy(&x, p, 8);
    m = dt_nondigits8(x);
#if defined(__GNUC__) || defined(__clang__)
    len = m ? (__builtin_ctzll(m) >> 3) : 8;
#else
    len = 0;
    while (len < 8 && !(m & (0x80ULL << (8 * len))))
        len++;
#endif
    if (len == 0) {
        *val = 0;
        return 0;
    }
    *val = dt_value8((x - 0x3030303030303030ULL) << (8 * (8 - len)));
    return len;
#else
    (void)p; (void)val;
    return -1;
#endif
}

/* Whether p[0:n], 9 <= n <= 16 readable bytes, is all ASCII digits; if so its
 * value in *val.  Two overlapping 8-byte loads cover the run, so a timestamp
 * (13 digits) that ends its line is read without a byte past the line; the
 * second word's first 16 - n digits are the first word's and are masked out.
 * 0 (not all digits, or not a little-endian machine): use the byte loop. */
static inline int dt_digits16_exact(const uint8_t *p, Py_ssize_t n, uint64_t *val) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    static const uint64_t pow10[9] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL,
                                      1000000ULL, 10000000ULL, 100000000ULL};
    uint64_t x, y;
    int r = (int)n - 8;   /* 1..8 digits after the first 8 */
    memcpy(&x, p, 8);
    memcpy(&y, p + n - 8, 8);
    if (dt_nondigits8(x) | dt_nondigits8(y))
        return 0;
    x -= 0x3030303030303030ULL;
    y -= 0x3030303030303030ULL;
    /* keep y's last r bytes (its high bytes): the bytes below become 0,
     * i.e. leading zeros of an 8-digit number */
    y &= ~0ULL << (8 * (8 - r));
    *val = dt_value8(x) * pow10[r] + dt_value8(y);
    return 1;
#else
    (void)p; (void)n; (void)val;
    return 0;
#endif
}

#endif
