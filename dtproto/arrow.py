"""Arrow tables in and out: ``decode_table``, ``iter_batches``, ``encode_table``.

Needs pyarrow (``pip install dtproto[arrow]``); pandas and Polars work through
Arrow (``table.to_pandas()``, ``polars.from_arrow(table)``, and any frame with
``__arrow_c_stream__`` as input), neither is a dependency.  The rest of
dtproto never imports this module: the core stays dependency-free.

Decoding
    :func:`decode_table` gives one row per data line with the columns of
    :data:`SCHEMA`.  Metadata lines are never dropped: :func:`decode_tables`
    returns them as a second table (:data:`METADATA_SCHEMA`), and
    :func:`decode_table` keeps them in the table's schema metadata, which
    :func:`metadata_of` reads back.  :func:`iter_batches` streams record
    batches from input of any size; the :class:`BatchReader` it returns
    holds the metadata lines and, with ``errors="skip"``, the skipped lines
    and why.

    The columns come from ``decode_columns`` of the loaded implementation
    when it has one (the Cython core writes them without a Python object
    per line), else from :func:`_decode_columns_py`; its docstring is the
    contract both follow.

Encoding
    :func:`encode_table` writes the same bytes, with the same validation and
    options, as :class:`dtproto.Encoder` fed row by row (``tests/test_arrow.py``
    checks it); without options the lines are assembled column-wise by Arrow
    compute kernels.  :func:`table_chunks` cuts a table's lines into bodies
    for a sender.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left
from itertools import compress
from operator import itemgetter
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

try:
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as _exc:  # pragma: no cover - exercised only without pyarrow
    raise ImportError(
        "dtproto.arrow needs pyarrow: pip install dtproto[arrow] (%s)" % (_exc,)
    ) from _exc

from . import _impl
from ._constants import (
    KIND_COUNT,
    KIND_GAUGE,
    KIND_SUMMARY,
    KINDS,
    MAX_DIMENSION_VALUE,
    MAX_DIMENSIONS,
    MAX_INT64,
    MAX_LINE_CHARS,
    MAX_METRIC_KEY,
    MIN_METRIC_KEY,
    RESERVED_PREFIX,
    SECONDS_TIMESTAMP_BELOW,
    SUMMARY_TOLERANCE,
    VALIDATE_MAX_LISTED,
)
from ._encode_py import _has_options
from ._input import TooLong as _TooLong, after_lfs as _after_lfs, line_blocks as _line_blocks
from .errors import DecodeError, EncodeError
from .model import Metadata, Metric
from .report import LineError

__all__ = [
    "SCHEMA", "METADATA_SCHEMA", "decode_table", "decode_tables", "DecodedTables",
    "metadata_of", "iter_batches", "BatchReader", "encode_table", "EncodedTable",
    "table_chunks", "is_table",
]

# --------------------------------------------------------------------------- schemas

_MAP = pa.map_(pa.string(), pa.string())
_KEY_TYPE = pa.dictionary(pa.int32(), pa.string())
_KIND_TYPE = pa.dictionary(pa.int8(), pa.string())
_TS_TYPE = pa.timestamp("ms", tz="UTC")

SCHEMA = pa.schema([
    pa.field("line", pa.int64(), nullable=False),
    pa.field("key", _KEY_TYPE, nullable=False),
    pa.field("kind", _KIND_TYPE, nullable=False),
    pa.field("value", pa.float64()),
    pa.field("min", pa.float64()),
    pa.field("max", pa.float64()),
    pa.field("sum", pa.float64()),
    pa.field("count", pa.int64()),
    pa.field("timestamp", _TS_TYPE),
    pa.field("dimensions", _MAP, nullable=False),
])
"""The columns of :func:`decode_table` (and of every :func:`iter_batches` batch)."""

METADATA_SCHEMA = pa.schema([
    pa.field("line", pa.int64(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("metric_type", pa.string(), nullable=False),
    pa.field("properties", _MAP, nullable=False),
])
"""The metadata lines' table (:func:`decode_tables`): one row per ``#key ...`` line."""

_META_KEY = b"dtproto.metadata"   # decode_table's schema metadata: the metadata lines (JSON)
_SKIP_KEY = b"dtproto.skipped"    # ... and, with errors="skip", the skipped lines (JSON)
_KIND_DICT = pa.array(list(KINDS), pa.string())
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}   # gauge 0, count 1, summary 2
_SUMMARY = _KIND_CODE[KIND_SUMMARY]


# --------------------------------------------------------------------------- the contract


def _decode_columns_py(buf: bytes, first_line: int, now_ms: Optional[int], skip: bool,
                       *, _codec: Any = None) -> Dict[str, Any]:
    """Decode a block of whole lines into plain columns (no pyarrow objects).

    This is the contract of ``decode_columns`` in an implementation module
    (``dtproto._impl.codec``); :func:`decode_table` and :func:`iter_batches`
    use the implementation's function when it exists, this one otherwise,
    and ``tests/test_arrow.py`` compares the two column by column.

    Arguments:
        buf: ``bytes`` holding whole lines (LF-separated; the last one may
            lack its LF).  Exactly what ``decode(buf)`` reads.
        first_line: the 1-based number of ``buf``'s first line; every line
            number below is absolute (``first_line`` + index within ``buf``).
        now_ms: ``None`` or an ``int``: the timestamp window, as for ``decode``.
        skip: ``False``: an invalid line raises :class:`~dtproto.DecodeError`
            exactly as ``decode(buf)`` would, except that its ``line`` is
            absolute.  ``True``: invalid lines are left out and listed in
            ``"skipped"``.

    Returns a ``dict`` with exactly these entries (``n`` data lines, ``m``
    dimension pairs in all):

    ======================  =========================  =====================================
    name                    type                       meaning
    ======================  =========================  =====================================
    ``"rows"``              ``int``                    ``n``
    ``"lines"``             ``int``                    lines in ``buf`` (LF count, plus one
                                                       if the last line has no LF)
    ``"line"``              ``array('q')``, n          line number of each data line
    ``"key_index"``         ``array('i')``, n          index into ``"keys"``
    ``"keys"``              ``list`` of ``str``        distinct metric keys, first seen first
    ``"kind"``              ``array('b')``, n          0 gauge, 1 count, 2 summary
    ``"value"``             ``array('d')``, n          gauge value / count delta; 0.0 for
                                                       a summary
    ``"min"``, ``"max"``,   ``array('d')``, n          summary fields; 0.0 unless a summary
    ``"sum"``
    ``"count"``             ``array('q')``, n          summary count; 0 unless a summary
    ``"timestamp"``         ``array('q')``, n          epoch ms; **-1 when absent** (a valid
                                                       timestamp is never negative)
    ``"dim_offsets"``       ``array('i')``, n + 1      row i's pairs are entries
                                                       ``dim_offsets[i]`` to
                                                       ``dim_offsets[i+1]`` (exclusive) of
                                                       the two arrays below, in line order,
                                                       duplicates kept; ``dim_offsets[0]``
                                                       is 0
    ``"dim_keys"``          strings, m                 the pairs' keys, in pair order
    ``"dim_values"``        strings, m                 the pairs' (unescaped) values, in
                                                       pair order
    ``"metadata"``          ``list`` of                the metadata lines, in order
                            ``(int, Metadata)``
    ``"skipped"``           ``list`` of                ``skip=True``: every invalid line, in
                            ``LineError``              order (``LineError(line, column,
                                                       code, message, text)`` as
                                                       ``validate`` lists them); ``[]``
                                                       otherwise
    ======================  =========================  =====================================

    Nulls are not stored: ``value`` is null exactly for summaries,
    ``min``/``max``/``sum``/``count`` exactly for the other kinds, and
    ``timestamp`` where it holds -1.  Accounting: ``rows + len(metadata) +
    len(skipped) + blank lines == lines``.  Index arrays may be any buffer of
    the stated item size (``array`` is what this reference returns).  The
    ``keys`` table may hold entries no row uses, in any order, and need not
    be distinct.  "strings" are a pyarrow ``StringArray`` (both
    implementations return one: the pairs are a million strings in a
    300,000-line block, and an index into a table of distinct keys costs a
    ``take`` of every one of them later) or anything ``pyarrow.array``
    accepts as strings.
    """
    codec = _codec if _codec is not None else _impl.codec
    nlines = buf.count(b"\n") + (0 if not buf or buf.endswith(b"\n") else 1)
    skipped: List[LineError] = []
    if skip:
        records = list(codec.iter_decode(buf, now_ms=now_ms, errors="skip"))
    else:
        try:
            records = codec.decode(buf, now_ms=now_ms)
        except DecodeError as e:
            if first_line == 1:
                raise
            raise DecodeError(e.code, e.reason, e.line + first_line - 1, e.column,
                              e.text) from None
    if len(records) == nlines:   # no blank or invalid line: the common case
        numbers: Any = range(first_line, first_line + nlines)
    else:
        numbers = _record_lines(buf, first_line)
        if skip and len(numbers) != len(records):
            report = codec.validate(buf, now_ms=now_ms, max_errors=None, max_warnings=0)
            skipped = [LineError(e.line + first_line - 1, e.column, e.code, e.message, e.text)
                       for e in report.errors]
            bad = {e.line for e in skipped}
            numbers = [n for n in numbers if n not in bad]
    metadata: List[Tuple[int, Metadata]] = []
    if Metadata in set(map(type, records)):
        metadata = [(n, r) for n, r in zip(numbers, records) if type(r) is Metadata]
        keep = [type(r) is Metric for r in records]
        records = list(compress(records, keep))
        numbers = list(compress(numbers, keep))
    return _columns_of(records, numbers, nlines, metadata, skipped)


def _record_lines(buf: bytes, first_line: int) -> List[int]:
    """The numbers of the lines of ``buf`` that are not blank (docs/protocol.md §2)."""
    pieces = buf.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    out = []
    for n, p in enumerate(pieces, first_line):
        if p[-1:] == b"\r":
            p = p[:-1]
        if p.strip(b" \t") or len(p) > MAX_LINE_CHARS:
            out.append(n)
    return out


_g0, _g1, _g2, _g3 = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_g4, _g5, _g6, _g7, _g8 = itemgetter(4), itemgetter(5), itemgetter(6), itemgetter(7), itemgetter(8)


def _index(values: List[str]) -> Tuple[array, List[str]]:
    """Dictionary-encode strings: (int32 indices, distinct values, first seen first)."""
    uniq = dict.fromkeys(values)
    pos = dict(zip(uniq, range(len(uniq))))
    return array("i", map(pos.__getitem__, values)), list(uniq)


def _array_of(typecode: str, arr: Any) -> array:
    """A pyarrow primitive array without nulls as an ``array`` (one copy)."""
    out = array(typecode)
    if len(arr):
        size = out.itemsize
        data = arr.buffers()[1]
        out.frombytes(memoryview(data)[arr.offset * size:(arr.offset + len(arr)) * size])
    return out


def _columns_of(records: List[Any], numbers: Any, nlines: int,
                metadata: List[Tuple[int, Metadata]], skipped: List[LineError]) -> Dict[str, Any]:
    # Python lists of the fields, then pyarrow's C++ conversion for what is
    # nested or nullable: the fallback's cost is the records, not the columns.
    n = len(records)
    key_index, keys = _index(list(map(_g0, records)))
    code = _KIND_CODE
    kinds = list(map(_g2, records))
    kind = array("b", bytes(map(code.__getitem__, kinds)))
    f64 = pa.float64()

    def floats(values: List[Any]) -> array:
        return _array_of("d", pc.fill_null(pa.array(values, f64), 0.0))

    if KIND_SUMMARY in kinds:
        mn, mx, sm = (floats(list(map(g, records))) for g in (_g4, _g5, _g6))
        ct = _array_of("q", pc.fill_null(pa.array(list(map(_g7, records)), pa.int64()), 0))
    else:
        zero = array("d", bytes(8 * n))
        mn, mx, sm, ct = zero, zero, zero, array("q", bytes(8 * n))
    stamps = pc.fill_null(pa.array(list(map(_g8, records)), pa.int64()), -1)
    dims = pa.array(list(map(_g1, records)), type=_MAP)
    offsets = dims.offsets
    if dims.offset or (len(offsets) and offsets[0].as_py()):
        offsets = pc.subtract(offsets, offsets[0])
    return {
        "rows": n,
        "lines": nlines,
        "line": array("q", numbers),
        "key_index": key_index,
        "keys": keys,
        "kind": kind,
        "value": floats(list(map(_g3, records))),
        "min": mn, "max": mx, "sum": sm, "count": ct,
        "timestamp": _array_of("q", stamps),
        "dim_offsets": _array_of("i", offsets),
        "dim_keys": dims.keys,
        "dim_values": dims.items,
        "metadata": metadata,
        "skipped": skipped,
    }


def _decode_columns(codec: Any) -> Any:
    fn = getattr(codec, "decode_columns", None)
    if fn is not None:
        return fn
    return lambda buf, first, now, skip: _decode_columns_py(buf, first, now, skip, _codec=codec)


# --------------------------------------------------------------------------- columns -> Arrow


def _buffer_array(typ: Any, n: int, data: Any) -> Any:
    return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(data)])


def _strings(values: Any) -> Any:
    if isinstance(values, pa.Array):
        return values
    return pa.array(values, pa.string())


def _batch_of(cols: Dict[str, Any]) -> Any:
    """A RecordBatch with :data:`SCHEMA` from ``decode_columns`` output."""
    n = cols["rows"]
    kind_idx = _buffer_array(pa.int8(), n, cols["kind"])
    summary = pc.equal(kind_idx, _SUMMARY)
    any_summary = n > 0 and pc.any(summary).as_py()
    all_summary = n > 0 and pc.all(summary).as_py()

    def only(mask_true_keeps: bool, arr: Any, null_type: Any) -> Any:
        # summary fields live where summary is true; value where it is false
        if not any_summary:
            return arr if not mask_true_keeps else pa.nulls(n, null_type)
        if all_summary:
            return arr if mask_true_keeps else pa.nulls(n, null_type)
        nul = pa.scalar(None, null_type)
        return pc.if_else(summary, arr, nul) if mask_true_keeps else pc.if_else(summary, nul, arr)

    f64 = pa.float64()
    value = only(False, _buffer_array(f64, n, cols["value"]), f64)
    mn = only(True, _buffer_array(f64, n, cols["min"]), f64)
    mx = only(True, _buffer_array(f64, n, cols["max"]), f64)
    sm = only(True, _buffer_array(f64, n, cols["sum"]), f64)
    ct = only(True, _buffer_array(pa.int64(), n, cols["count"]), pa.int64())
    ts = _buffer_array(pa.int64(), n, cols["timestamp"])
    absent = pc.equal(ts, -1)
    if n and pc.any(absent).as_py():
        ts = pc.if_else(absent, pa.scalar(None, pa.int64()), ts)
    ts = ts.cast(_TS_TYPE)
    keys = _strings(cols["keys"])
    key = pa.DictionaryArray.from_arrays(_buffer_array(pa.int32(), n, cols["key_index"]), keys)
    kind = pa.DictionaryArray.from_arrays(kind_idx, _KIND_DICT)
    pkeys = _strings(cols["dim_keys"])
    pvals = _strings(cols["dim_values"])
    offsets = _buffer_array(pa.int32(), n + 1, cols["dim_offsets"])
    dims = pa.MapArray.from_arrays(offsets, pkeys, pvals)
    line = _buffer_array(pa.int64(), n, cols["line"])
    return pa.RecordBatch.from_arrays(
        [line, key, kind, value, mn, mx, sm, ct, ts, dims], schema=SCHEMA)


def _metadata_table(metadata: Sequence[Tuple[int, Metadata]]) -> Any:
    props = [list(m[2]) for _, m in metadata]
    return pa.Table.from_arrays([
        pa.array([n for n, _ in metadata], pa.int64()),
        pa.array([m[0] for _, m in metadata], pa.string()),
        pa.array([m[1] for _, m in metadata], pa.string()),
        pa.array(props, _MAP),
    ], schema=METADATA_SCHEMA)


# --------------------------------------------------------------------------- decoding API


class DecodedTables(NamedTuple):
    """What :func:`decode_tables` returns."""

    data: Any            #: pyarrow.Table with :data:`SCHEMA`: one row per data line
    metadata: Any        #: pyarrow.Table with :data:`METADATA_SCHEMA`: one row per metadata line
    skipped: List[LineError]   #: with ``errors="skip"``: the invalid lines, in order
    lines: int           #: lines read (blank, metadata and invalid lines included)


def _check_errors(errors: str) -> bool:
    if errors not in ("raise", "skip"):
        raise ValueError("errors must be 'raise' or 'skip', not %r" % (errors,))
    return errors == "skip"


from ._codec_py import _now  # noqa: E402  (one reading of now_ms for every entry point)


def _decode_all(data: Any, now_ms: Any, errors: str, codec: Any) -> Tuple[Any, Dict[str, Any]]:
    from ._input import as_bytes

    skip = _check_errors(errors)
    buf = as_bytes(data)
    cols = _decode_columns(codec if codec is not None else _impl.codec)(
        buf, 1, _now(now_ms), skip)
    return pa.Table.from_batches([_batch_of(cols)], schema=SCHEMA), cols


def decode_tables(data: Any, *, now_ms: Optional[int] = None, errors: str = "raise",
                  _codec: Any = None) -> DecodedTables:
    """Decode a whole body into a data table and a metadata table.

    ``data`` is what :func:`dtproto.decode` accepts (bytes-like or ``str``);
    for files and streams of any size use :func:`iter_batches`.  ``errors``:
    ``"raise"`` (a :class:`~dtproto.DecodeError` at the first invalid line)
    or ``"skip"`` (invalid lines are left out and listed in ``skipped``).
    """
    table, cols = _decode_all(data, now_ms, errors, _codec)
    return DecodedTables(table, _metadata_table(cols["metadata"]), cols["skipped"], cols["lines"])


def decode_table(data: Any, *, now_ms: Optional[int] = None, errors: str = "raise",
                 _codec: Any = None) -> Any:
    """Decode a whole body into a ``pyarrow.Table``, one row per data line (:data:`SCHEMA`).

    Row ``i`` holds what ``decode(data)`` gives for the same line (metadata
    records aside) and ``line`` its 1-based input line number.  Metadata
    lines are kept in the schema metadata: :func:`metadata_of` gives them
    back as ``(line, Metadata)`` pairs (:func:`decode_tables` gives them as a
    table).  With ``errors="skip"`` the skipped lines are kept there too
    (:func:`metadata_of` ``(table, "skipped")``).
    """
    table, cols = _decode_all(data, now_ms, errors, _codec)
    extra = {}
    if cols["metadata"]:
        extra[_META_KEY] = json.dumps(
            [[n, m[0], m[1], [list(p) for p in m[2]]] for n, m in cols["metadata"]]).encode()
    if cols["skipped"]:
        extra[_SKIP_KEY] = json.dumps([list(e[:2]) + [e.code.value, e.message, e.text]
                                       for e in cols["skipped"]]).encode()
    if extra:
        table = table.replace_schema_metadata(extra)
    return table


def metadata_of(table: Any, what: str = "metadata") -> List[Any]:
    """The metadata lines :func:`decode_table` kept with ``table``: ``(line, Metadata)`` pairs.

    ``what="skipped"`` gives the lines ``errors="skip"`` left out, as
    :class:`~dtproto.report.LineError`.
    """
    from .errors import ErrorCode

    meta = table.schema.metadata or {}
    if what == "metadata":
        return [(n, Metadata(k, t, [tuple(p) for p in props]))
                for n, k, t, props in json.loads(meta.get(_META_KEY, b"[]"))]
    if what == "skipped":
        return [LineError(n, c, ErrorCode(code), msg, text)
                for n, c, code, msg, text in json.loads(meta.get(_SKIP_KEY, b"[]"))]
    raise ValueError("what must be 'metadata' or 'skipped', not %r" % (what,))


_SLICE = 1 << 20    # bytes decoded at a time by iter_batches


class BatchReader:
    """The record batches of :func:`iter_batches`, and what it saw on the way.

    Iterate it for ``pyarrow.RecordBatch`` objects (:data:`SCHEMA`).  After
    (or during) the iteration:

    * ``metadata``: the metadata lines so far, ``(line, Metadata)`` pairs;
    * ``skipped``: with ``errors="skip"``, the skipped lines as
      :class:`~dtproto.report.LineError`, the first ``max_listed`` of them;
      ``skipped_total`` counts them all;
    * ``lines``, ``rows``: lines read and data rows yielded.

    ``rows + len(metadata) + skipped_total + blank lines == lines``.
    """

    def __init__(self, source: Any, batch_lines: int, now_ms: Optional[int], skip: bool,
                 codec: Any, max_listed: Optional[int]) -> None:
        self.metadata: List[Tuple[int, Metadata]] = []
        self.skipped: List[LineError] = []
        self.skipped_total = 0
        self.lines = 0
        self.rows = 0
        self._it = self._batches(source, batch_lines, now_ms, skip,
                                 _decode_columns(codec if codec is not None else _impl.codec),
                                 max_listed)

    def __iter__(self) -> "BatchReader":
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def _skip(self, errors: List[LineError], cap: Optional[int]) -> None:
        self.skipped_total += len(errors)
        room = len(errors) if cap is None else max(0, cap - len(self.skipped))
        self.skipped.extend(errors[:room])

    def _batches(self, source: Any, batch_lines: int, now_ms: Optional[int], skip: bool,
                 decode_columns: Any, cap: Optional[int]) -> Iterator[Any]:
        from ._scan import _fault_to_error, _too_long_fault

        pending: List[bytes] = []
        pending_lines = 0
        first = 1

        def flush() -> Any:
            nonlocal pending, pending_lines, first
            buf = b"".join(pending)
            cols = decode_columns(buf, first, now_ms, skip)
            self.lines += cols["lines"]
            self.metadata.extend(cols["metadata"])
            self._skip(cols["skipped"], cap)
            first += pending_lines
            pending, pending_lines = [], 0
            if cols["rows"]:
                self.rows += cols["rows"]
                return _batch_of(cols)
            return None

        for lineno, block in _line_blocks(source):
            if isinstance(block, _TooLong):
                if pending:
                    batch = flush()
                    if batch is not None:
                        yield batch
                f, raw = _too_long_fault(block)
                err = _fault_to_error(f, raw, lineno)
                if not skip:
                    raise err
                self._skip([LineError(lineno, err.column, err.code, err.reason, err.text)], cap)
                self.lines += 1
                first = lineno + 1
                continue
            if not pending:
                first = lineno
            for sub in _slices(block):
                # The slice's LFs are counted once and it is cut by position:
                # counting and copying what is left at every cut made small
                # batch_lines quadratic (a red-team finding: 1 line a batch,
                # 512 KiB: 25 s).
                pos, size = 0, len(sub)
                lfs = sub.count(b"\n")
                last = 0 if sub.endswith(b"\n") else 1  # a last line without LF
                while pos < size:
                    room = batch_lines - pending_lines
                    if lfs + last <= room:  # the lines left in sub[pos:] all fit
                        pending.append(sub[pos:] if pos else sub)
                        pending_lines += lfs + last
                        pos = size
                    else:   # cut right after the room-th LF
                        cut = _after_lfs(sub, pos, room)
                        pending.append(sub[pos:cut])
                        pending_lines += room
                        lfs -= room
                        pos = cut
                    if pending_lines >= batch_lines:
                        batch = flush()
                        if batch is not None:
                            yield batch
        if pending:
            batch = flush()
            if batch is not None:
                yield batch


def _slices(block: bytes) -> Iterator[bytes]:
    """``block`` in pieces of about ``_SLICE`` bytes, each but the last ending after an LF."""
    n = len(block)
    if n <= _SLICE:
        yield block
        return
    pos = 0
    while pos < n:
        end = block.find(b"\n", min(pos + _SLICE, n) - 1)
        end = n if end < 0 else end + 1
        yield block[pos:end]
        pos = end


def iter_batches(source: Any, *, batch_lines: int = 65_536, now_ms: Optional[int] = None,
                 errors: str = "raise", max_listed: Optional[int] = VALIDATE_MAX_LISTED,
                 _codec: Any = None) -> BatchReader:
    """Stream ``pyarrow.RecordBatch`` objects (:data:`SCHEMA`) from input of any size.

    ``source`` is anything :func:`dtproto.iter_decode` reads (a path, a
    binary file, an iterable of byte chunks, a whole body).  Each batch
    covers at most ``batch_lines`` input lines, so memory stays bounded by
    about ``batch_lines`` lines whatever the input's size; batches without a
    data row are not yielded.  ``errors="skip"`` leaves invalid lines out;
    the returned :class:`BatchReader` lists them (``skipped``, the first
    ``max_listed``; ``skipped_total`` counts all) with the metadata lines.
    """
    skip = _check_errors(errors)
    if isinstance(batch_lines, bool) or not isinstance(batch_lines, int) or batch_lines < 1:
        raise ValueError("batch_lines must be an int >= 1, not %r" % (batch_lines,))
    return BatchReader(source, batch_lines, _now(now_ms), skip, _codec, max_listed)


# --------------------------------------------------------------------------- encoding


def is_table(data: Any) -> bool:
    """Whether ``data`` is something :func:`encode_table` reads: a pyarrow
    Table/RecordBatch, or a frame that speaks the Arrow PyCapsule stream
    protocol (``__arrow_c_stream__``) or is a pandas DataFrame."""
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        return True
    if hasattr(data, "__arrow_c_stream__"):
        return True
    t = type(data)
    return t.__name__ == "DataFrame" and t.__module__.split(".")[0] in ("pandas", "polars")


def _as_table(data: Any) -> Any:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    mod = type(data).__module__.split(".")[0]
    if mod == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if mod == "polars":
        return data.to_arrow()
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise TypeError("encode_table needs a pyarrow Table or RecordBatch, a pandas or Polars "
                    "DataFrame, or an object with __arrow_c_stream__, not %s" % type(data).__name__)


class EncodedTable(bytes):
    """The body :func:`encode_table` wrote (a ``bytes``), with its counts.

    * ``lines``: lines written;
    * ``rows``: table rows read;
    * ``skipped_null``: (row, metric) values left out because the value (or
      a summary field) was null;
    * ``dropped``: lines ``normalize=True`` dropped (their key cannot be saved);
    * ``normalizations``: the :class:`~dtproto.normalize.NormalizationLog`
      (empty without options).
    """

    lines: int
    rows: int
    skipped_null: int
    dropped: int
    normalizations: Any


class _Spec(NamedTuple):
    key: Any          # metric key: ("col", name) or ("const", str)
    kind: Any         # ("const", kind) or ("col", name)
    value: Any        # ("col", name) / ("const", number) / None for summaries only
    summary: Tuple[str, ...]   # min, max, sum, count columns; () when not a summary


_KEY_RE = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$"
_BAD_VALUE_RE = "[\\x00-\\x1f\\x7f]"


def _specs(table: Any, key: Any, value: Any, kind: Any, summary: Tuple[str, str, str, str]
           ) -> List[_Spec]:
    names = set(table.column_names)

    def ref(x: Any, what: str) -> Any:
        if isinstance(x, str) and x in names:
            return ("col", x)
        return ("const", x)

    if isinstance(kind, str) and kind in KINDS:
        k = ("const", kind)
    elif isinstance(kind, str) and kind in names:
        k = ("col", kind)
    else:
        raise ValueError("kind must be one of %r or the name of a column of kinds, not %r"
                         % (KINDS, kind))
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and key is None):
        # a wide frame: one value column per metric
        pairs = list(value.items()) if isinstance(value, dict) else [(c, c) for c in value]
        out = []
        for mkey, col in pairs:
            if col not in names:
                raise KeyError("no column %r" % (col,))
            out.append(_Spec(("const", mkey), k, ("col", col), ()))
        return out
    if key is None:
        raise ValueError("key is required (a column name or a constant metric key), unless "
                         "value maps metric keys to columns")
    if value is None and k != ("const", KIND_SUMMARY):
        raise ValueError("value is required (a column name or a constant number)")
    if k[0] == "col" or k[1] == KIND_SUMMARY:
        for col in summary:
            if col not in names:
                if k[0] == "col":
                    summary = ()  # type: ignore[assignment]
                    break
                raise KeyError("a summary needs the column %r (min=, max=, sum=, count= name "
                               "them)" % (col,))
    if not (k[0] == "col" or k[1] == KIND_SUMMARY):
        summary = ()  # type: ignore[assignment]
    v = None if value is None else ref(value, "value")
    if v is not None and v[0] == "const" and isinstance(value, str):
        raise KeyError("no column %r" % (value,))
    return [_Spec(ref(key, "key"), k, v, summary)]


def _dimension_refs(table: Any, dimensions: Any) -> Tuple[List[Tuple[str, str]], Optional[str]]:
    """``[(dimension key, column)]`` and the name of a map column, if any."""
    names = set(table.column_names)
    if dimensions is None:
        return [], None
    if isinstance(dimensions, str):
        if dimensions not in names:
            raise KeyError("no column %r" % (dimensions,))
        if pa.types.is_map(table.schema.field(dimensions).type):
            return [], dimensions
        dimensions = [dimensions]
    pairs = list(dimensions.items()) if isinstance(dimensions, dict) \
        else [(c, c) for c in dimensions]
    for _, col in pairs:
        if col not in names:
            raise KeyError("no column %r" % (col,))
        t = table.schema.field(col).type
        if pa.types.is_map(t):
            raise ValueError("a map column of dimensions is given alone: dimensions=%r" % (col,))
    return pairs, None


def _nulls_as_empty(arr: Any) -> Any:
    """A list or map column with each null row an empty one (no dimensions)."""
    if not arr.null_count:
        return arr
    return pc.if_else(pc.is_valid(arr), arr, pa.scalar([], arr.type))


def _pair_lists_as_map(arr: Any, field: str, row_errors: Dict[int, Any]) -> Any:
    """A column of lists of (key, value) pairs as the map column it stands
    for; None when ``arr`` is not such a column.

    pandas gives :func:`decode_table`'s ``map<string, string>`` column back
    as lists of tuples, which pyarrow reads as ``list<list<string>>``
    (``list<null>`` when no row has a dimension); a list of 2-field structs
    is the other common spelling: fields named ``key`` and ``value`` are
    read by name, any others as (key, value) in their order.  Each entry
    must be a pair: a row with anything else
    (an entry of one or three items, a null entry, a null key) gets no
    dimensions here and its error in ``row_errors`` (row -> the
    EncodeError's arguments), for the row path to report at that row.  A
    null row has no dimensions, as in a map column.  Keys that are not text
    are the column's error, raised.
    """
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return None
    vt = t.value_type
    structs = pa.types.is_struct(vt) and vt.num_fields == 2
    if pa.types.is_null(vt):   # no row has an entry (or every row is null)
        if pc.any(pc.greater(pc.fill_null(pc.list_value_length(arr), 0), 0)).as_py():
            return None   # entries that are all null: not pairs
        return pa.MapArray.from_arrays(pa.array([0] * (len(arr) + 1), pa.int32()),
                                       pa.array([], pa.string()), pa.array([], pa.string()))
    if not (structs or pa.types.is_list(vt) or pa.types.is_large_list(vt)
            or pa.types.is_fixed_size_list(vt)):
        return None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], t)
    arr = _nulls_as_empty(arr)   # a null row: no pairs (and offsets that start at 0)
    entries = arr.flatten()   # every row's entries, in row order
    if structs:
        bad = entries.is_null()
    else:   # an entry of one or three items, or a null one
        bad = pc.invert(pc.fill_null(pc.equal(pc.list_value_length(entries), 2), False))
    if not pc.any(bad).as_py():
        if structs:
            named = {vt.field(0).name, vt.field(1).name} == {"key", "value"}
            keys = entries.field("key" if named else 0)
            items = entries.field("value" if named else 1)
        else:   # every entry holds two items
            keys, items = pc.list_element(entries, 0), pc.list_element(entries, 1)
        bad = keys.is_null() if keys.null_count else None
    if bad is not None:
        parents = pc.list_parent_indices(arr)
        for at in pc.indices_nonzero(pc.fill_null(bad, False)).to_pylist():
            row = parents[at].as_py()
            if row not in row_errors:   # the first bad entry of its row
                try:
                    what = repr(entries[at].as_py())
                except UnicodeDecodeError:   # text that is not UTF-8 (see _texts)
                    what = "an entry holding invalid UTF-8"
                row_errors[row] = ("a dimension must be a (key, value) pair with a key, "
                                   "not %s" % (what,), field, _E.INVALID_RECORD)
        rows = pa.array(sorted(row_errors), pa.int64())
        arr = pc.if_else(pc.is_in(pa.array(range(len(arr)), pa.int64()), value_set=rows),
                         pa.scalar([], arr.type), arr)
        return _pair_lists_as_map(arr, field, row_errors)
    kt = keys.type
    if pa.types.is_dictionary(kt):
        keys = keys.cast(kt.value_type)
        kt = keys.type
    if not (pa.types.is_string(kt) or pa.types.is_large_string(kt)
            or pa.types.is_string_view(kt)):
        raise EncodeError("a dimension key must be a str, not %s" % kt, field,
                          _E.INVALID_DIMENSION_KEY)
    offsets = arr.offsets
    if offsets.type != pa.int32():
        offsets = offsets.cast(pa.int32())   # map offsets are int32
    offsets = pc.subtract(offsets, offsets[0])
    return pa.MapArray.from_arrays(offsets, keys.cast(pa.string()),
                                   _text_column(items, field))


def _whole_floats_as_ints(arr: Any) -> Any:
    """A float column whose values are all whole numbers in 0..2**63-1 as
    int64 (pandas keeps an integer column with a missing value as float64,
    its NaN a null); None for any other column, whose values the Encoder
    judges as they are."""
    if not pa.types.is_floating(arr.type) or pa.types.is_float16(arr.type):
        return None   # (float16 has no floor kernel, and holds no count worth reading)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], arr.type)
    valid = arr.drop_null()
    if len(valid) and not pc.all(pc.and_(
            pc.equal(valid, pc.floor(valid)),
            pc.and_(pc.greater_equal(valid, 0.0), pc.less(valid, 2.0 ** 63)))).as_py():
        return None
    return arr.cast(pa.int64())


def _from_pandas_spellings(table: Any, dimensions: Any, specs: List[_Spec],
                           row_errors: Dict[int, Any]) -> Any:
    """``table`` with the columns pandas changes read as what they were:
    a ``dimensions`` column of lists of pairs as a map, a summary's count
    column of whole floats as int64 (see :func:`_pair_lists_as_map`,
    :func:`_whole_floats_as_ints`).  What ``decode_table(...).to_pandas()``
    gives then encodes as the table itself does."""
    fixes = {}
    if isinstance(dimensions, str) and dimensions in table.column_names:
        m = _pair_lists_as_map(_col(table, dimensions), dimensions, row_errors)
        if m is not None:
            fixes[dimensions] = m
    for spec in specs:
        if spec.summary:
            c = _whole_floats_as_ints(_col(table, spec.summary[3]))
            if c is not None:
                fixes[spec.summary[3]] = c
    for name, arr in fixes.items():
        table = table.set_column(table.column_names.index(name), name, arr)
    return table


def _text_column(arr: Any, field: str) -> Any:
    """A dimension column as strings: strings, dictionaries (categoricals), integers,
    and nulls only (Arrow's type of a column without a value: left out, as a null is)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return arr.cast(pa.string())
    if pa.types.is_integer(t) or pa.types.is_null(t):
        return arr.cast(pa.string())
    raise EncodeError("a dimension value must be a str (strings, categoricals or integers), "
                      "not %s" % t, field, _E.INVALID_RECORD)


def _float_column(arr: Any, field: str, code: Any) -> Any:
    t = arr.type
    if pa.types.is_floating(t):
        return arr.cast(pa.float64())
    if pa.types.is_integer(t):
        return arr.cast(pa.float64(), safe=False)
    if pa.types.is_null(t):
        return arr.cast(pa.float64())
    raise EncodeError("a number is required, not %s" % t, field, code)


def _int_column(arr: Any, field: str, code: Any) -> Any:
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_null(t):
        return arr
    raise EncodeError("an integer is required, not %s" % t, field, code)


def _int63(arr: Any) -> Tuple[Any, Any]:
    """(where an integer column is outside 0..2**63-1, the column with those
    values zeroed, so that Arrow can compare and cast the rest).

    A uint64 column is compared in its own type: an int64 scalar made Arrow
    cast it and raise its own ArrowInvalid for a value past int64, instead
    of the row's EncodeError (a red-team finding).  The rows flagged are
    suspects: the row path names their error.
    """
    if arr.type == pa.uint64():
        over = pc.greater(arr, pa.scalar(MAX_INT64, arr.type))
        return over, pc.if_else(over, pa.scalar(0, arr.type), arr).cast(pa.int64())
    return pc.less(arr, 0), arr   # no narrower type holds more than int64


_MAX_SECONDS = MAX_INT64 // 1000   # the epoch seconds whose milliseconds fit int64 (+ or -)


def _ts_column(arr: Any) -> Any:
    """Timestamps as int64 epoch ms (nulls kept); naive datetimes are refused, as by Encoder.

    Seconds whose milliseconds do not fit int64 are out of the Encoder's
    range (0..2**63-1) either way; they become -1000, which every path
    refuses for its row like any negative timestamp (unless the row is
    skipped for a null value).  Arrow's checked multiply raised its own
    ArrowInvalid for the whole table (a red-team finding).  The row path
    reads the exact values (:func:`_ts_values`), which its error names.
    """
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise EncodeError("a naive datetime has no time zone; give it one, e.g. "
                              "tzinfo=datetime.timezone.utc (tz_localize('UTC') in pandas)",
                              "timestamp", _E.INVALID_TIMESTAMP)
        raw = arr.cast(pa.int64())
        per = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[t.unit]
        if per is None:
            fits = pc.and_(pc.greater_equal(raw, -_MAX_SECONDS), pc.less_equal(raw, _MAX_SECONDS))
            if not pc.all(fits).as_py():   # (nulls aside)
                raw = pc.if_else(fits, raw, pa.scalar(-1, pa.int64()))
            return pc.multiply(raw, 1000)
        if per == 1:
            return raw
        # floor division, as Encoder's (ts - epoch) // 1 ms: negative stays negative
        q = pc.divide(raw, per)
        neg = pc.less(raw, 0)
        if pc.any(neg).as_py():
            q = pc.if_else(pc.and_(neg, pc.not_equal(pc.multiply(q, per), raw)),
                           pc.subtract(q, 1), q)
        return q
    if pa.types.is_integer(t) or pa.types.is_null(t):
        return arr
    raise EncodeError("an integer is required, not %s" % t, "timestamp", _E.INVALID_TIMESTAMP)


def _ts_values(arr: Any) -> List[Optional[int]]:
    """:func:`_ts_column` as Python ints for the row path, exact where int64 is not:
    seconds are multiplied here, so that the Encoder's error names the
    milliseconds of a timestamp past int64, not a stand-in."""
    t = arr.type
    if pa.types.is_timestamp(t) and t.unit == "s" and t.tz is not None:
        return [None if v is None else v * 1000 for v in arr.cast(pa.int64()).to_pylist()]
    return _ts_column(arr).to_pylist()  # type: ignore[no-any-return]


from ._scan import E as _E  # noqa: E402
from builtins import min as builtins_min  # noqa: E402  (encode_table has a 'min' argument)


def _format_floats(arr: Any) -> Any:
    """float64 -> the Encoder's text (shortest round trip, docs/protocol.md §13)."""
    from ._encode_py import _format_number

    text = arr.cast(pa.string())
    # Arrow writes what repr writes (digits and all) except where repr uses an
    # exponent (|v| < 1e-4 or >= 1e16) and where Arrow does (>= 1e15 or so):
    # those few are formatted by the reference.
    absv = pc.abs(arr)
    small = pc.and_(pc.not_equal(arr, 0.0), pc.less(absv, 1e-4))
    if (pc.max(absv).as_py() or 0.0) >= 1e9:   # Arrow may use an exponent up there
        odd = pc.or_(pc.match_substring(text, "e"), small)
    else:
        odd = small
    odd = pc.fill_null(odd, False)
    if pc.any(odd).as_py():
        where = pc.indices_nonzero(odd)
        vals = arr.take(where).to_pylist()
        fixed = pa.array([_format_number(v, "value") for v in vals], pa.string())
        text = pc.replace_with_mask(text, odd, fixed)
    return text


def _first_true(mask: Any) -> Optional[int]:
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return None
    return int(pc.indices_nonzero(mask)[0].as_py())


class _NeedRows(Exception):
    """The vectorized path found something only the row path can say (an error)."""

    def __init__(self, row: int) -> None:
        self.row = row


def _col(table: Any, name: str) -> Any:
    c = table.column(name)
    return c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c




def _data_bytes(arr: Any) -> bytes:
    """The character data of a string array (its values, back to back)."""
    if len(arr) == 0:
        return b""
    bufs = arr.buffers()
    offs, data = bufs[1], bufs[2]
    if data is None:
        return b""
    o = memoryview(offs).cast("q" if pa.types.is_large_string(arr.type) else "i")
    start, end = o[arr.offset], o[arr.offset + len(arr)]
    return bytes(memoryview(data)[start:end])


_CONTROLS = bytes(range(32)) + b"\x7f"
_NOT_SPECIAL = bytes(b for b in range(256) if b >= 32 and b != 127 and b not in b',= \\"')


def _specials(d: Any) -> Tuple[bool, bytes]:
    """One pass over the data: (a control character is there, the escaped characters there)."""
    found = _data_bytes(d).translate(None, _NOT_SPECIAL)
    escaped = found.translate(None, _CONTROLS)
    return len(escaped) < len(found), bytes(sorted(set(escaped)))


def _value_problems(d: Any, control: bool) -> Any:
    """Which values (a string array) the Encoder refuses: controls, > 255 code points.
    None when none is."""
    masks = []
    if control:
        masks.append(pc.match_substring_regex(d, _BAD_VALUE_RE))
    if len(d) and (pc.max(pc.binary_length(d)).as_py() or 0) > MAX_DIMENSION_VALUE:
        masks.append(pc.greater(pc.utf8_length(d), MAX_DIMENSION_VALUE))
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else pc.or_(masks[0], masks[1])


def _escaped(d: Any, chars: bytes) -> Any:
    """The values with ``chars`` (the escaped characters they hold) escaped."""
    if not chars:
        return d
    if len(d) > 1000:   # few distinct values (the usual case): escape those only
        enc = d.dictionary_encode()
        if len(enc.dictionary) * 4 < len(d):
            return _escaped(enc.dictionary, chars).take(enc.indices)
    if b"\\" in chars:   # first, so that the escapes it adds stay as they are
        d = pc.replace_substring(d, "\\", "\\\\")
    for c in chars.decode("ascii"):
        if c != "\\":
            d = pc.replace_substring(d, c, "\\" + c)
    return d


class _BadText(bytes):
    """A text value whose bytes are not valid UTF-8 (see :func:`_texts`)."""


def _texts(arr: Any) -> List[Any]:
    """``arr.to_pylist()`` for a text column, with a :class:`_BadText` for each
    value that is not valid UTF-8 instead of an exception for the whole column.

    Arrow requires UTF-8 in string arrays but does not check it when an array
    is built from buffers.  Such a value is an error (``invalid_utf8``) for its
    row in every path of encode_table, unless the row is skipped for a null
    value; the C loop and the vector path hand such rows to the row path.
    """
    try:
        return arr.to_pylist()
    except UnicodeDecodeError:
        pass
    out: List[Any] = []
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            words = _texts(chunk.dictionary)
            out.extend(None if i is None else words[i] for i in chunk.indices.to_pylist())
            continue
        for x in chunk:
            if not x.is_valid:
                out.append(None)
                continue
            raw = bytes(x.as_buffer())
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(_BadText(raw))
    return out


def _bad_text_error(value: Any, field: str, row: int) -> EncodeError:
    text = bytes(value).decode("utf-8", "surrogateescape")
    return EncodeError("invalid UTF-8: %r" % (text,), field, _E.INVALID_UTF8, row)


def _bad_utf8_mask(arr: Any) -> Optional[Any]:
    """Rows of a text column holding invalid UTF-8 (a boolean array), or None."""
    try:
        arr.validate(full=True)
        return None
    except pa.ArrowInvalid as exc:
        if "UTF8" not in str(exc):
            raise ValueError("a malformed Arrow array: %s" % exc) from None
    return pa.array([type(v) is _BadText for v in _texts(arr)], pa.bool_())


def _encoded(arr: Any) -> Tuple[Any, Any]:
    """A column of strings, categoricals or integers as (indices, dictionary of
    strings), or (None, the column as strings) when it is not a dictionary."""
    t = arr.type
    if pa.types.is_dictionary(t):
        d = arr.dictionary
        if pa.types.is_integer(d.type) or pa.types.is_string(d.type) or \
                pa.types.is_large_string(d.type):
            return arr.indices, d.cast(pa.string())
    return None, _text_column(arr, "dimensions")



def _vector_lines(table: Any, specs: List[_Spec], dims: List[Tuple[str, str]],
                  map_col: Optional[str], ts_name: Any) -> Tuple[Any, int, bool]:
    """The lines of every row (a string array, "" where skipped), the null count, and
    whether a timestamp looks like seconds.

    Raises _NeedRows at the first row that does not pass every check.
    """
    from ._scan import _dimension_key_problem

    n = table.num_rows
    seconds = False          # a timestamp that looks like seconds (warned by the caller)
    common: List[Any] = []   # checks of the row (dimensions, timestamp)
    bad = common
    suspects: List[Any] = []
    keep_any: Any = None
    # heads: key + dimensions
    dim_parts: List[Any] = []
    if len(dims) > MAX_DIMENSIONS:
        present = None
        for _, col in dims:
            v = pc.cast(pc.is_valid(_col(table, col)), pa.int32())
            present = v if present is None else pc.add(present, v)
        bad.append(pc.greater(present, MAX_DIMENSIONS))
    for dkey, col in dims:
        if not isinstance(dkey, str) or _dimension_key_problem(dkey) is not None:
            raise _NeedRows(0)
        utf8 = _bad_utf8_mask(_col(table, col))
        if utf8 is not None:   # rows with invalid UTF-8: the row path names them
            bad.append(utf8)
        idx, d = _encoded(_col(table, col))   # idx None: d is the column itself
        control, chars = _specials(d)
        prob = _value_problems(d, control)
        if prob is not None:
            bad.append(prob if idx is None else prob.take(idx))
        if idx is None and not d.null_count:   # straight into the line's join
            dim_parts.extend(["," + dkey + "=", _escaped(d, chars)])
            continue
        seg = pc.binary_join_element_wise("," + dkey + "=", _escaped(d, chars), "")
        if idx is not None:
            seg = seg.take(idx)
        dim_parts.append(pc.fill_null(seg, "") if seg.null_count else seg)
    if map_col is not None:
        m = _col(table, map_col)
        m = _nulls_as_empty(m)
        if _bad_utf8_mask(m.keys) is not None or _bad_utf8_mask(m.items) is not None:
            raise _NeedRows(0)   # the row path finds the row
        keys = m.keys.cast(pa.string())
        items = _text_column(m.items, "dimensions")
        ukeys = pc.unique(keys).to_pylist()
        if any(k is None or _dimension_key_problem(k) is not None for k in ukeys):
            raise _NeedRows(0)
        entry_bad = pc.or_(pc.match_substring_regex(items, _BAD_VALUE_RE),
                           pc.greater(pc.utf8_length(items), MAX_DIMENSION_VALUE))
        if pc.any(pc.fill_null(entry_bad, False)).as_py():
            raise _NeedRows(0)
        esc = pc.replace_substring_regex(items, r'([,= \\"])', r"\\\1")
        seg = pc.fill_null(pc.binary_join_element_wise(",", keys, "=", esc, ""), "")
        offsets = m.offsets
        if pc.any(pc.greater(pc.subtract(offsets[1:], offsets[:-1]), MAX_DIMENSIONS)).as_py():
            raise _NeedRows(0)
        # null values are omitted: their segment is ""; a key given twice keeps
        # its first place and its last value, as Encoder's dict does
        lists = pa.ListArray.from_arrays(offsets, seg)
        if _has_duplicate_keys(m):
            raise _NeedRows(0)
        dim_parts.append(pc.binary_join(lists, ""))
    parts_all: List[Any] = []
    skipped = 0
    ts_text = None
    if ts_name is not None:
        ts = _ts_column(_col(table, ts_name))
        mm = pc.min_max(ts) if len(ts) else None
        lo: Optional[int] = mm["min"].as_py() if mm is not None else None
        hi: Optional[int] = mm["max"].as_py() if mm is not None else None
        if lo is not None and hi is not None and (lo < 0 or hi > MAX_INT64):
            over, ts = _int63(ts)
            bad.append(over)
        if lo is not None and lo < SECONDS_TIMESTAMP_BELOW:
            seconds = True
        if ts.null_count:
            ts_text = [pc.fill_null(pc.binary_join_element_wise(" ", ts.cast(pa.string()), ""),
                                    "")]
        else:
            ts_text = [" ", ts.cast(pa.string())]
    for spec in specs:
        bad = []   # checks of this spec's line
        if spec.key[0] == "const":
            key = spec.key[1]
            if not isinstance(key, str):
                raise _NeedRows(0)
            from ._scan import _metric_key_problem

            if _metric_key_problem(key) is not None:
                raise _NeedRows(0)
            key_text: Any = key
        else:
            kc = _col(table, spec.key[1])
            if _bad_utf8_mask(kc) is not None:
                raise _NeedRows(0)   # the row path names the row
            if pa.types.is_dictionary(kc.type) and pa.types.is_string(kc.type.value_type):
                kidx, kd = kc.indices, kc.dictionary
            elif pa.types.is_string(kc.type) or pa.types.is_large_string(kc.type):
                kc = kc.cast(pa.string())
                enc = kc.dictionary_encode()
                kidx, kd = enc.indices, enc.dictionary
            else:
                raise _NeedRows(0)
            from ._scan import _metric_key_problem

            if len(kd) <= 100_000:
                kbad = pa.array([None if k is None else _metric_key_problem(k) is not None
                                 for k in kd.to_pylist()], pa.bool_())
            else:
                ln = pc.utf8_length(kd)
                kbad = pc.or_(pc.invert(pc.match_substring_regex(kd, _KEY_RE)),
                              pc.or_(pc.or_(pc.less(ln, MIN_METRIC_KEY),
                                            pc.greater(ln, MAX_METRIC_KEY)),
                                     pc.starts_with(kd, RESERVED_PREFIX)))
            # a null in a categorical's dictionary is a null key (is_null below sees
            # only null indices): bad, not a null mask that passes it
            kbad = pc.fill_null(kbad, True)
            if pc.any(kbad).as_py():
                bad.append(kbad.take(kidx))
            if kc.null_count:
                bad.append(pc.is_null(kc))
            key_text = kd.take(kidx) if pa.types.is_dictionary(kc.type) else kc
        head = [key_text, *dim_parts]
        kinds = [spec.kind[1]] if spec.kind[0] == "const" else None
        kind_col = None
        is_kind: Dict[str, Any] = {}   # kind -> the rows of that kind
        if kinds is None:
            kind_col = _col(table, spec.kind[1])
            if pa.types.is_dictionary(kind_col.type):
                kind_col = kind_col.cast(kind_col.type.value_type)
            kind_col = kind_col.cast(pa.string())
            bad.append(pc.invert(pc.fill_null(pc.is_in(kind_col, pa.array(list(KINDS))), False)))
            kinds = [k for k in pc.unique(kind_col).to_pylist() if k in KINDS]
            # False, not null, where the kind is null (a bad row, flagged above): a
            # null here went through the and/or of the skip masks into keep, and a
            # row whose keep is null was neither written, nor skipped, nor refused
            # (a red-team finding: it vanished when another row had a null value)
            is_kind = {kd: pc.fill_null(pc.equal(kind_col, kd), False) for kd in kinds}
        payloads = {}
        nulls = {}
        if (KIND_GAUGE in kinds or KIND_COUNT in kinds) and spec.value is not None:
            if spec.value[0] == "const":
                v = spec.value[1]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise _NeedRows(0)
                from ._encode_py import _format_number

                try:
                    vt: Any = _format_number(v, "value")
                except EncodeError:
                    raise _NeedRows(0) from None
                vnull = None
            else:
                va = _float_column(_col(table, spec.value[1]), "value", _E.INVALID_NUMBER)
                bad.append(pc.invert(pc.is_finite(va)))
                vt = _format_floats(va)
                vnull = pc.is_null(va)
            for kd, lead in ((KIND_GAUGE, " gauge,"), (KIND_COUNT, " count,delta=")):
                if kd in kinds:
                    payloads[kd] = pc.binary_join_element_wise(lead, vt, "") \
                        if not isinstance(vt, str) else lead + vt
                    nulls[kd] = vnull
        if KIND_SUMMARY in kinds and spec.summary:
            mnc, mxc, smc, ctc = spec.summary
            f = [_float_column(_col(table, c), nm, _E.INVALID_NUMBER)
                 for c, nm in ((mnc, "min"), (mxc, "max"), (smc, "sum"))]
            cnt = _int_column(_col(table, ctc), "count", _E.SUMMARY_COUNT_NOT_INTEGER)
            mn, mx, sm = f
            cntf = cnt.cast(pa.float64(), safe=False)
            for a in f:
                bad.append(pc.invert(pc.is_finite(a)))
            over, cnt = _int63(cnt)
            bad.append(over)
            zero = pc.equal(cnt, 0)
            avg = pc.divide(sm, pc.if_else(zero, 1.0, cntf))
            incons = pc.or_(pc.greater(pc.subtract(mn, avg), SUMMARY_TOLERANCE),
                            pc.greater(pc.subtract(avg, mx), SUMMARY_TOLERANCE))
            zbad = pc.or_(pc.or_(pc.not_equal(mn, 0.0), pc.not_equal(mx, 0.0)),
                          pc.not_equal(sm, 0.0))
            sbad = pc.or_(pc.greater(mn, mx), pc.if_else(zero, zbad, incons))
            if kind_col is not None:
                sbad = pc.and_(is_kind[KIND_SUMMARY], sbad)
            bad.append(sbad)
            payloads[KIND_SUMMARY] = pc.binary_join_element_wise(
                " gauge,min=", _format_floats(mn), ",max=", _format_floats(mx),
                ",sum=", _format_floats(sm), ",count=", cnt.cast(pa.string()), "")
            nulls[KIND_SUMMARY] = pc.or_(pc.or_(pc.is_null(mn), pc.is_null(mx)),
                                         pc.or_(pc.is_null(sm), pc.is_null(cnt)))
        if kind_col is None:
            kd = spec.kind[1]
            if kd not in payloads:
                raise _NeedRows(0)
            payload = payloads[kd]
            isnull = nulls[kd]
        else:
            payload = pa.nulls(n, pa.string())
            isnull = pa.array([False] * n) if n else pa.array([], pa.bool_())
            for kd in kinds:
                if kd not in payloads:
                    raise _NeedRows(0)
                sel = is_kind[kd]
                pk = payloads[kd]
                payload = pc.if_else(sel, pa.scalar(pk) if isinstance(pk, str) else pk, payload)
                if nulls[kd] is not None:
                    isnull = pc.or_(isnull, pc.and_(sel, nulls[kd]))
        if isinstance(payload, str):
            payload = pa.scalar(payload)
        parts = head + [payload]
        if ts_text is not None:
            parts.extend(ts_text)
        line = pc.binary_join_element_wise(*parts, "\n", "")
        if isinstance(line, (pa.Array, pa.ChunkedArray)) and line.null_count:
            # a null part: the row's value (skipped below) or what a check flags;
            # anything else is the row path's to judge, never a line left out
            bad.append(pc.is_null(line))
        if isnull is not None and not pc.any(isnull).as_py():
            isnull = None
        if isnull is not None:
            skipped += int(pc.sum(pc.cast(isnull, pa.int64())).as_py() or 0)
            # a null value: the row is skipped, and so are its checks
            keep = pc.invert(isnull)
            line = pc.if_else(keep, line, "")
            bad = [pc.and_(keep, b) for b in bad]
            keep_any = keep if keep_any is None else pc.or_(keep_any, keep)
        else:
            keep_any = True
        if not isinstance(line, (pa.Array, pa.ChunkedArray)):   # all constants
            line = pa.array([line.as_py()] * n, pa.string())
        if len(line) and (pc.max(pc.binary_length(line)).as_py() or 0) > MAX_LINE_CHARS + 1:
            bad.append(pc.greater(pc.utf8_length(line), MAX_LINE_CHARS + 1))
        suspects.extend(bad)
        parts_all.append(line)
    if keep_any is not True and keep_any is not None:
        common = [pc.and_(keep_any, b) for b in common]
        if seconds:   # the Encoder warns for lines it writes only
            seconds = _first_true(pc.and_(keep_any, pc.less(ts, SECONDS_TIMESTAMP_BELOW))) \
                is not None
    rows = [r for r in map(_first_true, common + suspects) if r is not None]
    if rows:
        raise _NeedRows(builtins_min(rows))
    if len(parts_all) == 1:
        return parts_all[0], skipped, seconds
    return pc.binary_join_element_wise(*parts_all, ""), skipped, seconds


def _vector_body(table: Any, specs: List[_Spec], dims: List[Tuple[str, str]],
                 map_col: Optional[str], ts_name: Any) -> Tuple[Any, int]:
    """:func:`_vector_lines` as a body: (bytes-like, null count); warns about seconds.

    One thread: on a busy machine, slices on several threads were slower.
    """
    lines, skipped, seconds = _vector_lines(table, specs, dims, map_col, ts_name)
    if seconds:
        from ._encode_py import _warn_seconds

        _warn_seconds()
    return _body_of(lines), skipped


class _Unsupported(Exception):
    """The C column encoder does not take this table (the pure path does)."""


_STRINGS = (pa.types.is_string, pa.types.is_large_string)


def _c_strings(arr: Any, role: str) -> Any:
    """A key or dimension column as the C encoder reads it: a string or
    large_string array, or a dictionary of strings (as the pure path
    converts them; anything else goes to the pure path)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        v = t.value_type
        if any(f(v) for f in _STRINGS) or (role == "dim" and pa.types.is_integer(v)):
            return arr
        raise _Unsupported
    if any(f(t) for f in _STRINGS):
        return arr
    if pa.types.is_string_view(t) or \
            (role == "dim" and (pa.types.is_integer(t) or pa.types.is_null(t))):
        return arr.cast(pa.string())
    raise _Unsupported


def _c_batch_strings(arr: Any) -> Tuple[Any, Any]:
    """(values, int32 indices or None) of one chunk of a _c_strings column."""
    if pa.types.is_dictionary(arr.type):
        d = arr.dictionary
        if not any(f(d.type) for f in _STRINGS):
            d = d.cast(pa.string())
        return d, arr.indices.cast(pa.int32())
    return arr, None


def _c_body(codec: Any, table: Any, objects: Dict[str, Any], nrows: int, specs: List[_Spec],
            dims: List[Tuple[str, str]], ts_name: Any) -> Tuple[Any, int, int]:
    """The body through ``codec.encode_columns`` (the Cython core): (buffer, lines, skipped).

    ``table`` holds the columns, but those in ``objects`` (pandas object
    columns, as ndarrays, read by the C loop itself).  Raises _NeedRows at
    the first row the Encoder must look at, _Unsupported for what only the
    pure path takes (a kind column, a map column, other types, an object
    column holding something but str and null).
    """
    from ._encode_py import _format_number, _warn_seconds
    from ._scan import _dimension_key_problem, _metric_key_problem

    kinds = {spec.kind for spec in specs}
    if len(kinds) != 1 or specs[0].kind[0] != "const" or (objects and not nrows):
        raise _Unsupported   # (pyarrow makes an empty object column a null one)
    kind = specs[0].kind[1]
    strs: List[Tuple[str, Any]] = []      # (column, role) in C order
    floats: List[Tuple[str, str]] = []    # (column, field)
    ints: List[Tuple[str, str]] = []

    def slot(lst: List[Any], item: Any) -> int:
        if item not in lst:
            lst.append(item)
        return lst.index(item)

    c_dims = []
    for dkey, col in dims:
        if not isinstance(dkey, str) or _dimension_key_problem(dkey) is not None:
            raise _Unsupported
        c_dims.append((dkey, slot(strs, (col, "dim"))))
    c_specs: List[Tuple[Any, Any, Any]] = []
    for spec in specs:
        if spec.key[0] == "const":
            key = spec.key[1]
            if not isinstance(key, str) or _metric_key_problem(key) is not None:
                raise _Unsupported
            ck: Any = key.encode("ascii")
        else:
            ck = slot(strs, (spec.key[1], "key"))
        if kind == KIND_SUMMARY:
            if not spec.summary:
                raise _Unsupported
            mnc, mxc, smc, ctc = spec.summary
            summ = (slot(floats, (mnc, "min")), slot(floats, (mxc, "max")),
                    slot(floats, (smc, "sum")), ("int", slot(ints, (ctc, "count"))))
            c_specs.append((ck, None, summ))
            continue
        if spec.value is None:
            raise _Unsupported
        if spec.value[0] == "const":
            v = spec.value[1]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _Unsupported
            try:
                text = _format_number(v, "value")
            except EncodeError:
                raise _Unsupported from None
            lead = " gauge," if kind == KIND_GAUGE else " count,delta="
            c_specs.append((ck, (lead + text).encode("ascii"), None))
        else:
            c_specs.append((ck, slot(floats, (spec.value[1], "value")), None))
    ts_slot = slot(ints, (ts_name, "timestamp")) if ts_name is not None else None

    # the columns, converted as the pure path converts them
    cols: Dict[Any, Any] = {}
    try:
        for col, role in strs:
            if col not in objects:
                cols[(col, role)] = _c_strings(table.column(col), role)
        for col, field in floats:
            cols[(col, field)] = _float_column(table.column(col), field, _E.INVALID_NUMBER)
        for col, field in ints:
            if field == "timestamp":
                a = _ts_column(table.column(col))
            else:
                a = _int_column(table.column(col), field, _E.SUMMARY_COUNT_NOT_INTEGER)
            cols[(col, field)] = a.cast(pa.int64())
    except (EncodeError, pa.ArrowException):
        raise _Unsupported from None   # the pure path raises it, in its order
    nf = len(floats)
    c_specs = [(k, v, None if sm is None else sm[:3] + (nf + sm[3][1],))
               for k, v, sm in c_specs]
    names = ["c%d" % i for i in range(len(cols))]
    order = list(cols)
    arrow_cols = pa.table(dict(zip(names, (cols[k] for k in order)))) if cols else None
    batches = []
    if arrow_cols is not None and arrow_cols.num_rows != nrows:
        raise _Unsupported
    chunks = arrow_cols.to_batches() if arrow_cols is not None else [None]
    start = 0
    for b in chunks:
        rows = b.num_rows if b is not None else nrows
        if rows == 0 and nrows:
            continue
        got = {k: b.column(i) for i, k in enumerate(order)} if b is not None else {}
        bstrs = []
        for col, role in strs:
            if col in objects:
                bstrs.append((objects[col][start:start + rows], None))
            else:
                bstrs.append(_c_batch_strings(got[(col, role)]))
        bnums = [got[k] for k in floats] + [got[k] for k in ints]
        batches.append((rows, bstrs, bnums))
        start += rows
    status, body, lines, skipped, row, seconds = codec.encode_columns(
        batches, c_specs, c_dims, -1 if ts_slot is None else nf + ts_slot,
        _KIND_CODE[kind], nf, _pandas_na())
    if status == 1:
        raise _NeedRows(row)
    if status != 0:
        raise _Unsupported
    if seconds:
        _warn_seconds()
    return body, lines, skipped


def _pandas_na() -> Any:
    import sys

    pd = sys.modules.get("pandas")
    return getattr(pd, "NA", None)


def _has_duplicate_keys(m: Any) -> bool:
    """Whether a row of map column ``m`` names a dimension twice."""
    n = len(m)
    if n == 0:
        return False
    offsets = m.offsets.to_pylist()
    lens = [b - a for a, b in zip(offsets, offsets[1:])]
    if max(lens, default=0) < 2:
        return False
    rows = pa.array([i for i, k in enumerate(lens) for _ in range(k)], pa.int64())
    pairs = pa.table({"r": rows, "k": m.keys.cast(pa.string())})
    return pairs.group_by(["r", "k"]).aggregate([]).num_rows != len(rows)


def _body_of(lines: Any) -> bytes:
    """The concatenated bytes of a string array without nulls (zero-copy until bytes())."""
    if isinstance(lines, pa.ChunkedArray):
        return b"".join(bytes(_body_of(c)) for c in lines.chunks)
    if len(lines) == 0:
        return b""
    lines = lines.cast(pa.string())
    _, offs, data = lines.buffers()
    o = memoryview(offs).cast("i")
    start, end = o[lines.offset], o[lines.offset + len(lines)]
    return memoryview(data.slice(start, end - start))   # type: ignore[return-value]


def _row_lines(table: Any, specs: List[_Spec], dims: List[Tuple[str, str]],
               map_col: Optional[str], ts_name: Any, encoder: Any,
               outcomes: Optional[List[Optional[str]]] = None,
               row_errors: Optional[Dict[int, Any]] = None) -> Tuple[int, int]:
    """Encode row by row with ``encoder`` (exact: the Encoder's own checks and options).

    Returns (lines written, values skipped for a null).  An EncodeError gets
    ``record`` = the row index; with ``outcomes`` (a list) it is not raised:
    each (row, metric) appends None (its line written) or why it has none
    (a null, the error), and the rows after it still go.  ``row_errors``:
    row -> the arguments of an EncodeError found before (a dimension that
    is not a pair), that row's error where it has a value.
    """
    n = table.num_rows
    pylist = {}

    def column(name: str, conv: Any = None, texts: bool = False) -> List[Any]:
        if name not in pylist:
            arr = _col(table, name)
            pylist[name] = _texts(arr) if texts else (conv(arr) if conv else arr).to_pylist()
        return pylist[name]

    dim_cols = []
    for dkey, col in dims:
        arr = _col(table, col)
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = arr.cast(t.value_type)
            t = arr.type
        if pa.types.is_integer(t):
            arr = arr.cast(pa.string())
        dim_cols.append((dkey, _texts(arr), col))
    map_vals = None
    if map_col is not None:
        try:
            map_vals = _col(table, map_col).to_pylist()
        except UnicodeDecodeError:   # the first row whose map holds invalid UTF-8
            mc = _col(table, map_col)
            for i in range(n):
                sub = mc.slice(i, 1)
                try:
                    sub.to_pylist()
                except UnicodeDecodeError:
                    if isinstance(sub, pa.ChunkedArray):
                        sub = sub.combine_chunks()
                    lo, hi = sub.offsets[0].as_py(), sub.offsets[-1].as_py()
                    words = _texts(sub.keys.slice(lo, hi - lo)) + \
                        _texts(sub.items.slice(lo, hi - lo))
                    bad = next(w for w in words if type(w) is _BadText)
                    raise _bad_text_error(bad, map_col, i) from None
            raise
    ts_vals = _ts_values(_col(table, ts_name)) if ts_name is not None else None
    skipped = 0
    before = encoder.lines
    spec_cols = []
    for spec in specs:
        keys = column(spec.key[1], texts=True) if spec.key[0] == "col" else None
        kinds = column(spec.kind[1]) if spec.kind[0] == "col" else None
        vals = None
        if spec.value is not None and spec.value[0] == "col":
            vals = column(spec.value[1])
        summ = [column(c) for c in spec.summary] if spec.summary else None
        spec_cols.append((spec, keys, kinds, vals, summ))
    for i in range(n):
        d: Dict[str, Any] = {}
        bad_text = None   # (column, value): invalid UTF-8, an error unless skipped
        for dkey, vals_, col in dim_cols:
            v = vals_[i]
            if v is not None:
                if type(v) is _BadText and bad_text is None:
                    bad_text = (col, v)
                d[dkey] = v
        if map_vals is not None and map_vals[i]:
            for k, v in map_vals[i]:
                if v is not None:
                    d[k] = v
        ts = ts_vals[i] if ts_vals is not None else None
        row_err = row_errors.get(i) if row_errors else None
        for spec, keys, kinds, vals, summ in spec_cols:
            key = keys[i] if keys is not None else spec.key[1]
            kind = kinds[i] if kinds is not None else spec.kind[1]
            try:
                if type(key) is _BadText:
                    row_bad: Any = (spec.key[1], key)
                else:
                    row_bad = bad_text
                if kind == KIND_SUMMARY:
                    if summ is None:
                        raise KeyError("a summary row needs min/max/sum/count columns")
                    fields = [c[i] for c in summ]
                    if None in fields:
                        skipped += 1
                        if outcomes is not None:
                            outcomes.append(NULL_SUMMARY_REASON)
                        continue
                    if row_bad is not None:
                        raise _bad_text_error(row_bad[1], row_bad[0], i)
                    if row_err is not None:
                        raise EncodeError(*row_err)
                    encoder.summary(key, *fields, d, ts)
                else:
                    v = vals[i] if vals is not None else (
                        spec.value[1] if spec.value is not None else None)
                    if v is None:
                        skipped += 1
                        if outcomes is not None:
                            outcomes.append(NULL_VALUE_REASON)
                        continue
                    if row_bad is not None:
                        raise _bad_text_error(row_bad[1], row_bad[0], i)
                    if row_err is not None:
                        raise EncodeError(*row_err)
                    if kind == KIND_GAUGE:
                        encoder.gauge(key, v, d, ts)
                    elif kind == KIND_COUNT:
                        encoder.count(key, v, d, ts)
                    else:
                        raise EncodeError("kind must be one of %r, not %r" % (KINDS, kind),
                                          "kind", _E.INVALID_RECORD)
            except EncodeError as e:
                if outcomes is None:
                    e.record = i
                    raise
                e.record = None   # its row is the line the reason is reported at
                outcomes.append(ROW_ERROR_REASON % (e,))
                continue
            if outcomes is not None:
                outcomes.append(None)
    return encoder.lines - before, skipped


def encode_table(data: Any, *, key: Any = None, value: Any = None, dimensions: Any = (),
                 timestamp: Optional[str] = None, kind: str = KIND_GAUGE,
                 min: str = "min", max: str = "max", sum: str = "sum", count: str = "count",
                 prefix: Optional[str] = None, default_dimensions: Any = None,
                 static_dimensions: Any = None, normalize: bool = False,
                 oneagent_enrichment: bool = False, _codec: Any = None,
                 _rows: bool = False,
                 _outcomes: Optional[List[Optional[str]]] = None) -> EncodedTable:
    """Encode a table's rows as lines: the bytes ``Encoder`` writes for the same rows.

    ``data``: a pyarrow Table or RecordBatch, a pandas or Polars DataFrame,
    or anything with ``__arrow_c_stream__``.

    * ``key``: a column of metric keys, or one constant key.
    * ``value``: a column of numbers, or a constant number.  A *wide* frame
      (one value column per metric): ``value={"metric.key": "column", ...}``
      or a list of columns whose names are the keys, with ``key=None``; each
      row then gives one line per metric, in that order.
    * ``kind``: ``"gauge"``, ``"count"`` (a delta), ``"summary"`` (from the
      ``min``/``max``/``sum``/``count`` columns, named by those arguments),
      or the name of a column holding one of the three per row.
    * ``dimensions``: columns of strings, categoricals or integers, as a list
      (the column name is the dimension key) or a ``{dimension key: column}``
      mapping, in line order; or the name of one ``map<string, string>``
      column (what :func:`decode_table` gives) or of one column of lists of
      (key, value) pairs (that map column as pandas gives it back).  A null
      is left out.
    * ``timestamp``: a column of int epoch ms or of time-zone-aware
      timestamps (Arrow ``timestamp[..., tz]``, pandas ``datetime64[ns, UTC]``);
      a null means no timestamp.  A naive one is refused, as by ``Encoder``.
    * ``prefix``, ``default_dimensions``, ``static_dimensions``,
      ``normalize``, ``oneagent_enrichment``: as for :class:`dtproto.Encoder`.

    A null value (or summary field) skips that line and is counted in
    ``skipped_null``.  Errors are the Encoder's: an
    :class:`~dtproto.EncodeError` for the first row the Encoder would refuse,
    its ``record`` the 0-based row.  Returns an :class:`EncodedTable`.
    """
    codec = _codec if _codec is not None else _impl.codec
    frame = data if _plain_pandas(data) else None
    # a pandas frame: its schema first, then only the columns used are converted
    table = _as_table(data if frame is None else data.iloc[:0])
    specs = _specs(table, key, value, kind, (min, max, sum, count))
    dims, map_col = _dimension_refs(table, dimensions)
    if timestamp is not None and timestamp not in table.column_names:
        raise KeyError("no column %r" % (timestamp,))
    options = _has_options(prefix, default_dimensions, static_dimensions, normalize,
                           oneagent_enrichment)
    used = _used_columns(specs, dims, map_col, timestamp)
    if frame is not None and _pandas_spelled(frame, dimensions, specs):
        # read through pyarrow whole, then as the columns pandas was given
        table, frame = _pandas_table(frame, used), None
    row_errors: Dict[int, Any] = {}   # row -> its EncodeError's arguments
    if frame is None and map_col is None:
        table = _from_pandas_spellings(table, dimensions, specs, row_errors)
        dims, map_col = _dimension_refs(table, dimensions)
    nrows = table.num_rows if frame is None else len(frame)
    out: Optional[EncodedTable] = None
    need: Optional[int] = None   # the first row only the Encoder can judge
    # (a row with an error of its own: the row path reports each in row order)
    plain = not options and not _rows and _outcomes is None and not row_errors
    if plain and hasattr(codec, "encode_columns") and map_col is None:
        # the Cython core's column encoder; pandas object columns read as they are
        objects: Dict[str, Any] = {}
        if frame is not None:
            import numpy   # pandas' own dependency

            # columns of text only (an object column of numbers is pyarrow's to convert),
            # contiguous: the C loop reads the array's buffer, and a view's column
            # (df.iloc[::-1]) is strided (it was refused: "ndarray is not C-contiguous")
            text = {s.key[1] for s in specs if s.key[0] == "col"} | {c for _, c in dims}
            text -= _number_columns(specs, timestamp)
            objects = {c: numpy.ascontiguousarray(frame[c].to_numpy()) for c in used
                       if c in text and frame[c].dtype == object}
            table = _pandas_columns(frame, [c for c in used if c not in objects])
        try:
            try:
                body, written, skipped = _c_body(codec, table, objects, nrows, specs, dims,
                                                 timestamp)
            except _Unsupported:
                if not objects:
                    raise
                # something but str and null in an object column: pyarrow converts it
                frame, table, objects = None, _pandas_table(frame, used), {}
                body, written, skipped = _c_body(codec, table, objects, nrows, specs, dims,
                                                 timestamp)
            out = EncodedTable(body)
            out.lines = written
            out.skipped_null = skipped
            out.dropped = 0
            out.normalizations = codec.Encoder().normalizations
        except _Unsupported:
            pass   # the pure path takes it
        except _NeedRows as e:
            need = e.row
    if out is None and frame is not None:
        table = _pandas_table(frame, used)
    if out is None and need is None and plain:
        try:
            body, skipped = _vector_body(table, specs, dims, map_col, timestamp)
            out = EncodedTable(body)
            out.lines = len(specs) * table.num_rows - skipped
            out.skipped_null = skipped
            out.dropped = 0
            out.normalizations = codec.Encoder().normalizations
        except _NeedRows as e:
            need = e.row
    if need:   # the first suspect row alone: its error, if it has one
        enc = codec.Encoder()
        try:
            _row_lines(table.slice(need, 1), specs, dims, map_col, timestamp, enc)
        except EncodeError as e:
            e.record = need
            raise
    if out is None:
        enc = codec.Encoder(prefix=prefix, default_dimensions=default_dimensions,
                            static_dimensions=static_dimensions, normalize=normalize,
                            oneagent_enrichment=oneagent_enrichment)
        written, skipped = _row_lines(table, specs, dims, map_col, timestamp, enc, _outcomes,
                                      row_errors)
        out = EncodedTable(enc.getvalue())
        out.lines = written
        out.skipped_null = skipped
        per_row = len(specs) * table.num_rows
        out.dropped = per_row - skipped - written
        out.normalizations = enc.normalizations
    out.rows = nrows
    return out


def _plain_pandas(data: Any) -> bool:
    """A pandas DataFrame whose columns are distinct strings (converted column by column)."""
    t = type(data)
    if t.__name__ != "DataFrame" or t.__module__.split(".")[0] != "pandas":
        return False
    cols = data.columns
    return cols.is_unique and all(type(c) is str for c in cols)


def _pandas_table(frame: Any, columns: List[str]) -> Any:
    """The columns of a pandas frame as pyarrow converts them (from_pandas)."""
    if not columns:
        return pa.table({"": pa.nulls(len(frame))}).drop_columns([""])
    return pa.Table.from_pandas(frame[columns], preserve_index=False)


def _pandas_spelled(frame: Any, dimensions: Any, specs: List[_Spec]) -> bool:
    """Whether a pandas frame may hold a column as pandas spells a table's
    (a dimensions column of objects: lists of pairs; a summary's count of
    floats): :func:`_from_pandas_spellings` reads those from Arrow."""
    if isinstance(dimensions, str) and dimensions in frame.columns \
            and frame[dimensions].dtype == object:
        col = frame[dimensions]
        first = col.first_valid_index()
        if first is not None and not isinstance(col[first], str):
            return True   # (a column of str is one dimension, read as it is)
    return any(spec.summary and frame[spec.summary[3]].dtype.kind == "f" for spec in specs)


def _number_columns(specs: List[_Spec], ts_name: Any) -> set:
    cols = {c for spec in specs for c in spec.summary}
    cols |= {spec.value[1] for spec in specs if spec.value is not None and spec.value[0] == "col"}
    cols |= {spec.kind[1] for spec in specs if spec.kind[0] == "col"}
    if ts_name is not None:
        cols.add(ts_name)
    return cols


def _pandas_columns(frame: Any, columns: List[str]) -> Any:
    """:func:`_pandas_table`, one ``pyarrow.array(from_pandas=True)`` per column (what
    from_pandas does for each, without its frame-wide work); a column it cannot
    convert is left to from_pandas, for its error."""
    try:
        return pa.table({c: pa.array(frame[c], from_pandas=True) for c in columns}) \
            if columns else _pandas_table(frame, columns)
    except pa.ArrowException:
        return _pandas_table(frame, columns)


def _used_columns(specs: List[_Spec], dims: List[Tuple[str, str]], map_col: Optional[str],
                  ts_name: Any) -> List[str]:
    used: List[str] = []
    for spec in specs:
        for ref in (spec.key, spec.kind, spec.value):
            if ref is not None and ref[0] == "col":
                used.append(ref[1])
        used.extend(spec.summary)
    used.extend(col for _, col in dims)
    if map_col is not None:
        used.append(map_col)
    if ts_name is not None:
        used.append(ts_name)
    return list(dict.fromkeys(used))


def _decoded_mapping(table: Any, options: Dict[str, Any]) -> Dict[str, Any]:
    """``options`` with :func:`decode_table`'s columns as the mapping when
    neither ``key`` nor ``value`` is given (ValueError if the table lacks them)."""
    if "key" in options or "value" in options:
        return options
    if not {"key", "kind", "value", "timestamp", "dimensions"} <= set(table.column_names):
        raise ValueError(
            "a table without decode_table's columns (key, kind, value, timestamp, "
            "dimensions) needs its mapping: table_chunks(table, key=..., value=..., "
            "dimensions=[...], timestamp=...) (send that to a Sender)")
    return dict(key="key", value="value", kind="kind", dimensions="dimensions",
                timestamp="timestamp", **options)


def table_chunks(data: Any, *, rows: int = 100_000, **options: Any) -> Iterator[EncodedTable]:
    """:func:`encode_table` a slice of ``rows`` rows at a time: bodies of whole lines.

    What a sender takes as an iterable of byte chunks
    (``sender.send(table_chunks(df, key=..., value=...))``), in bounded
    memory.  Without ``key`` and ``value``, the table must have
    :func:`decode_table`'s columns (``key``, ``kind``, ``value``,
    ``min``/``max``/``sum``/``count``, ``timestamp``, ``dimensions``).

    Each chunk is the :class:`EncodedTable` of its slice: its
    ``skipped_null`` and ``dropped`` say which values gave no line.  A
    sender numbers the lines written, not the rows, and an
    :class:`~dtproto.EncodeError` stops the iteration.  A table with
    :func:`decode_table`'s columns is better given to the sender itself
    (``sender.send(table)``), which accounts for every row.
    """
    table = _as_table(data)
    options = _decoded_mapping(table, options)
    for start in range(0, max(table.num_rows, 1), rows):
        body = encode_table(table.slice(start, rows), **options)
        if body:
            yield body


# Why a row of a table sent to a Sender gave no line (its client-side
# rejection, at the row's own line number).
NULL_VALUE_REASON = "no line for this row: its value is null"
NULL_SUMMARY_REASON = ("no line for this row: a summary field (min, max, sum or count) "
                       "is null")
ROW_ERROR_REASON = "cannot encode row: %s"
METADATA_ERROR_REASON = "cannot encode the metadata line decoded from line %d: %s"


def _kinds_as_text(kind: Any) -> Any:
    """A ``kind`` column as plain strings, for compute kernels: a dictionary
    decoded, a string_view (what Polars exports) cast; None when it is not
    text at all (encode_table then says what is wrong with it)."""
    if pa.types.is_dictionary(kind.type):
        kind = kind.cast(kind.type.value_type)
    if pa.types.is_string(kind.type) or pa.types.is_large_string(kind.type):
        return kind
    try:
        return kind.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _null_rows(table: Any) -> List[int]:
    """The rows :func:`encode_table` (decode_table's mapping) skips for a null:
    a summary row with a null min, max, sum or count; any other row (a null
    or unknown kind included) with a null value.  Mirrors :func:`_row_lines`;
    :func:`_encoded_rows` checks every window of rows against its counts, so
    a row foreseen wrongly costs time, never a wrong answer."""
    kind = _kinds_as_text(table.column("kind"))
    if kind is None:
        return []
    is_summary = pc.fill_null(pc.equal(kind, KIND_SUMMARY), False)
    fields = [pc.is_null(table.column(c)) for c in ("min", "max", "sum", "count")
              if c in table.column_names]
    if fields:
        summary_null = fields[0]
        for f in fields[1:]:
            summary_null = pc.or_(summary_null, f)
    else:   # encode_table's error, not a skip: a summary needs the four columns
        summary_null = pa.repeat(pa.scalar(False), table.num_rows)
    null = pc.if_else(is_summary, summary_null, pc.is_null(table.column("value")))
    return pc.indices_nonzero(null).to_pylist()


def _null_reason(table: Any, row: int) -> str:
    kind = table.column("kind")[row].as_py()
    return NULL_SUMMARY_REASON if kind == KIND_SUMMARY else NULL_VALUE_REASON


def _encoded_rows(table: Any, start: int, stop: int, options: Dict[str, Any], most: int,
                  nulls: List[int]) -> Iterator[Any]:
    """Rows ``start``..``stop - 1`` of ``table`` as bodies (bytes, one line
    per row) and, for a row that gives no line, the reason (a ``str``) in
    its place.  ``nulls``: the rows :func:`_null_rows` foresaw, sorted.

    Encoded a window at a time, null rows included (encode_table skips them
    and counts them: its lines are then cut around them, at C speed; cutting
    the windows at every null row instead cost a call each, 40x slower with
    5% of them).  After a row's error the rows before it are encoded again
    on the fast path and the rest of the window goes through the row path
    once, which reports each bad row and goes on (linear: never a call per
    bad row, nor the rest of the slice again for every error).  The window
    doubles after a success (up to ``most`` rows) and halves after an
    error.  An :class:`~dtproto.EncodeError` that names no row is the
    table's (a column of the wrong type): it is raised, not reported once
    for every row.
    """
    window = most
    while start < stop:
        size = min(window, stop - start)
        holes = nulls[bisect_left(nulls, start):bisect_left(nulls, start + size)]
        try:
            body = encode_table(table.slice(start, size), **options)
        except EncodeError as exc:
            if not isinstance(exc.record, int) or not 0 <= exc.record < size:
                raise
            bad = exc.record
            if bad:   # the rows before it are good
                yield from _encoded_rows(table, start, start + bad, options, most, nulls)
            # The rest of the window in one pass of the row path, which goes
            # on after each error (a call per bad row cost 0.6 ms each).
            outcomes: List[Optional[str]] = []
            body = encode_table(table.slice(start + bad, size - bad), _rows=True,
                                _outcomes=outcomes, **options)
            yield from _lines_and_reasons(body, outcomes)
            start += size
            window = max(size // 2, 256)
            continue
        if body.lines + body.skipped_null != size or body.skipped_null != len(holes):
            # a row gave no line (or a line) that _null_rows did not foresee:
            # the row path says which
            outcomes = []
            body = encode_table(table.slice(start, size), _rows=True, _outcomes=outcomes,
                                **options)
            yield from _lines_and_reasons(body, outcomes)
        elif not holes:
            yield bytes(body)
        else:
            reasons: List[Optional[str]] = [None] * size
            for hole in holes:
                reasons[hole - start] = _null_reason(table, hole)
            yield from _lines_and_reasons(body, reasons)
        start += size
        window = min(window * 2, most)


def _lines_and_reasons(body: bytes, outcomes: List[Optional[str]]) -> Iterator[Any]:
    """``body``'s lines, one for each None of ``outcomes``, with each other
    outcome (why a row has no line) in its place: runs of lines as bytes."""
    lines = bytes(body).split(b"\n")   # its lines, and b"" after the last LF
    if len(lines) - 1 != outcomes.count(None):   # never: the row path wrote them
        raise AssertionError("%d lines for %d rows with a line"
                             % (len(lines) - 1, outcomes.count(None)))
    at = 0
    run = 0
    for outcome in outcomes:
        if outcome is None:
            run += 1
            continue
        if run:
            yield b"\n".join(lines[at:at + run]) + b"\n"
            at += run
            run = 0
        yield outcome
    if run:
        yield b"\n".join(lines[at:at + run]) + b"\n"


def _row_stream(data: Any, rows: int = 100_000, _codec: Any = None) -> Iterator[Any]:
    """What a :class:`~dtproto.Sender` reads from a table: one line per row,
    in row order, then the metadata lines :func:`decode_table` kept in its
    schema, in their order.

    Items are bodies of whole lines (bytes) and, for a row (or metadata
    line) that gives no line, the reason (a ``str``) in its place, so that
    line ``n`` of the send is row ``n - 1`` of the table (its ``line``
    column, when it has one, says where that row was decoded from) and
    every row is accounted for: stored, rejected by the server, rejected
    by the client for this reason, or not delivered.  An error of the table
    itself (its schema metadata unreadable, a column of the wrong type, a
    summary row without the min/max/sum/count columns) is raised.
    """
    table = _as_table(data)
    options = _decoded_mapping(table, {} if _codec is None else {"_codec": _codec})
    codec = _impl.codec if _codec is None else _codec
    metadata = metadata_of(table)   # unreadable: raised before any row is read
    nulls = _null_rows(table)
    for start in range(0, table.num_rows, rows):
        yield from _encoded_rows(table, start, min(start + rows, table.num_rows), options,
                                 rows, nulls)
    for line, record in metadata:
        try:
            yield codec.encode([record])
        except (EncodeError, TypeError, ValueError) as exc:
            yield METADATA_ERROR_REASON % (line, exc)
