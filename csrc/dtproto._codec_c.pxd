# cdef declarations of the Cython core (dtproto._codec_c).
# Named after the *qualified* module name: csrc/ is not a package, and for a
# module built as "dtproto._codec_c" Cython looks for "dtproto._codec_c.pxd"
# beside the .pyx (a plain "_codec_c.pxd" would be silently ignored).

from libc.stdint cimport int64_t, uint64_t


cdef struct DimSpan:
    Py_ssize_t ks         # dimension key: start offset within the line
    Py_ssize_t kl         # dimension key: length in bytes (ASCII)
    Py_ssize_t vs         # value: first byte after '=' (or after the opening quote)
    Py_ssize_t ve         # value: end (exclusive; before the closing quote)
    int escaped           # the value holds at least one backslash escape


cdef struct LineScan:
    Py_ssize_t keylen     # metric key length (ASCII, starts at offset 0)
    Py_ssize_t head_end   # offset of the separator after key and dimensions
    int ndims
    DimSpan dims[50]      # MAX_DIMENSIONS; the scanner refuses a 51st
    int kind              # KIND_* below
    double value          # gauge value or count delta
    double mn, mx, sm     # summary fields
    int64_t cnt
    int has_ts
    int64_t ts
    uint64_t head_hash    # hash of the head when scan_data stored it in the cache


cdef struct HeadEntry:
    uint64_t hash         # of the head's bytes up to its first SP (``prefix``)
    Py_ssize_t prefix     # offset of the head's first SP: inside a quoted value or == length
    Py_ssize_t length     # bytes of the cached head (an SP follows it); 0 = empty slot
    char *data            # PyMem copy of the head bytes
    Py_ssize_t keylen     # metric key length within the head
    void *key             # owned reference to the key str, or NULL (validate only)
    void *dims            # owned reference to the dims tuple, or NULL (validate only)
    unsigned int epoch    # validate's live-set window in which it was last hit (0: never)


cdef class Encoder:
    cdef char *_blk       # PyObject_Malloc block laid out as a bytes object, or NULL
                          # while getvalue()'s bytes hold the lines (_value)
    cdef char *_buf       # the data of _blk: finished lines, grows geometrically
    cdef Py_ssize_t _len  # bytes in use
    cdef Py_ssize_t _cap  # bytes of data _blk has room for
    cdef object _value    # the bytes getvalue() handed out while _blk is NULL
    cdef Py_ssize_t _lines
    cdef object _ref      # reference Encoder holding the options, or None
    cdef object _ref_log  # empty NormalizationLog of a plain encoder (lazily)
    cdef bint _ascii_only # with options: non-ASCII values go to the reference
    cdef bint _fastnorm   # normalize only: input it leaves unchanged takes the C path
    cdef int _via_ref(self, object method, tuple args) except -1
    cdef int _point(self, int kind, object key, object a, object b, object c, object d,
                    object dimensions, object timestamp) except -1
    cdef bint _c_path(self, object dimensions)
    cdef int _direct(self, int kind, object key, object value, object dimensions,
                     object timestamp) except -1
    cdef int _write_direct(self, int kind, object key, double v, object dims,
                           object timestamp) except -1
    cdef int _grow(self, Py_ssize_t n) except -1
    cdef int _append(self, const char *s, Py_ssize_t n, Py_ssize_t lines) except -1
