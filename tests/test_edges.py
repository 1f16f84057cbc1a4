"""Edge cases of the codec found by a red-team pass, over both implementations.

Each test names the issue item it guards: reads that return ``None`` or a
``bytearray``, integers too large to print, lying ``int`` subclasses,
``max_errors``/``max_warnings`` edge values, bodies of nothing but newlines,
huge dimension mappings, OneAgent files that never end; and the one meaning
of every input (lines vs chunks, paths), timestamps people actually pass.
"""

from __future__ import annotations

import datetime
import gzip
import itertools
import os
import threading
import time
import tracemalloc
import warnings

import pytest
from conftest import NEUTRAL_DIR  # noqa: E402

import dtproto
from dtproto import DecodeError, EncodeError, ErrorCode as E, Metric
from dtproto.errors import TimestampWarning


class _Stream:
    """A non-blocking-style stream: ``read()`` returns the scripted values in turn."""

    def __init__(self, *script):
        self.script = list(script)

    def read(self, n=-1):
        return self.script.pop(0) if self.script else b""


# --- issue 9 item 9: a read() that returns None is not the end ------------------

def test_read_returning_none_is_waited_for(impl):
    src = lambda: _Stream(b"a.b 1\nc.d ", None, b"2\n", None, None, b"e.f 3\n")  # noqa: E731
    report = impl.validate(src())
    assert (report.lines_ok, report.lines_total) == (3, 3)
    assert [r.key for r in impl.iter_decode(src())] == ["a.b", "c.d", "e.f"]


def test_read_returning_none_on_a_pipe_waits_for_the_writer(impl):
    r, w = os.pipe()
    os.set_blocking(r, False)

    def writer():
        time.sleep(0.2)
        os.write(w, b"a.b 1\n")
        time.sleep(0.2)
        os.write(w, b"c.d 2\n")
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    with open(r, "rb", buffering=0) as f:  # read() gives None while the pipe is empty
        report = impl.validate(f)
    t.join()
    assert (report.lines_ok, report.lines_total) == (2, 2)


# --- issue 9 item 17: reads of other bytes-like types, numbers, limits ----------

@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_read_returning_other_bytes_like_types(impl, kind):
    report = impl.validate(_Stream(kind(b"a.b 1\nc.d"), kind(b" 2\n")))
    assert (report.lines_ok, report.lines_invalid) == (2, 0)


@pytest.mark.parametrize("call", [
    lambda e: e.gauge("a.b", 10**5000),
    lambda e: e.gauge("a.b", 1, None, 10**5000),
    lambda e: e.summary("a.b", 1, 1, 1, 10**5000),
    lambda e: e.count("a.b", -(10**5000)),
])
def test_integers_too_large_to_print_are_encode_errors(impl, call):
    enc = impl.Encoder()
    with pytest.raises(EncodeError) as info:
        call(enc)
    assert "bit-int" in str(info.value)
    assert enc.getvalue() == b""


def test_encode_names_the_record_of_a_huge_integer(impl):
    recs = [Metric.gauge("a.b", 1), Metric("a.b", (), "gauge", 1.0, None, None, None, None,
                                           10**5000)]
    with pytest.raises(EncodeError) as info:
        impl.encode(recs)
    assert (info.value.record, info.value.field) == (1, "timestamp")


class _Liar(int):
    """An int whose every conversion lies about its value (5)."""

    def __str__(self):
        return "-1"

    __repr__ = __str__

    def __index__(self):
        return -1

    def __int__(self):
        return -1

    def __float__(self):
        return -1.0

    def __lt__(self, other):
        return True


class _FloatLiar(float):
    def __float__(self):
        return -7.0

    def __repr__(self):
        return "-7.0"


def test_number_subclasses_are_read_by_their_value(impl):
    enc = impl.Encoder()
    enc.gauge("a.b", _Liar(5), None, 1_700_000_000_000 + _Liar(5) - 5)
    enc.gauge("a.b", _FloatLiar(2.5), None, _Liar(1_700_000_000_000))
    enc.summary("a.b", _Liar(1), _Liar(3), _FloatLiar(4.0), _Liar(2))
    assert enc.getvalue() == (b"a.b gauge,5 1700000000000\n"
                              b"a.b gauge,2.5 1700000000000\n"
                              b"a.b gauge,min=1,max=3,sum=4,count=2\n")
    assert dtproto.validate(enc.getvalue()).lines_ok == 3


@pytest.mark.parametrize("value, error", [
    (float("inf"), TypeError), (0.5, TypeError), (True, TypeError), ("3", TypeError),
    (-1, ValueError),
])
@pytest.mark.parametrize("name", ["max_errors", "max_warnings"])
def test_limits_must_be_none_or_a_non_negative_int(impl, name, value, error):
    with pytest.raises(error, match=name):
        impl.validate(b"a.b 1\n", **{name: value})


@pytest.mark.parametrize("name", ["max_errors", "max_warnings"])
def test_huge_limits_mean_no_limit(impl, py, name):
    body = b"a.b count,delta=1\nbad\n" * 5
    want = py.validate(body, max_errors=None, max_warnings=None)
    assert impl.validate(body, **{name: 10**20}) == want
    assert impl.validate(body, **{name: 0}) == py.validate(body, **{name: 0})


# --- issue 9 item 18: bounded time and memory on hostile bodies ------------------

def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fn", ["validate", "decode"])
def test_body_of_newlines_in_bounded_memory(impl, fn):
    body = b"\n" * 2_000_000
    result, peak = _peak(lambda: getattr(impl, fn)(body))
    if fn == "validate":
        assert (result.lines_total, result.lines_ok, result.lines_invalid) == (2_000_000, 0, 0)
    else:
        assert result == []
    # The reference once split the whole body at once: here 2 M strings in a
    # list of 16 MB (100 MB of newlines took 858 MB); now a slice at a time
    # (peak ~5 MB, the 2 MB body included).
    assert peak < 10_000_000, peak


@pytest.mark.parametrize("value", [1, 1.0])   # 1.0: the fast path's own check
@pytest.mark.parametrize("options", [{}, {"prefix": "p"}, {"default_dimensions": {"a": "b"}}])
def test_huge_dimension_mapping_is_refused_before_it_is_escaped(impl, options, value):
    """Refused before it is copied: the pure fast path copied and joined a
    dict of 300,000 pairs (15 MB) before its missing template refused it."""
    dims = {"k%d" % i: "v %d" % i for i in range(300_000)}
    enc = impl.Encoder(**options)

    def attempt():
        with pytest.raises(EncodeError) as info:
            enc.gauge("a.b", value, dims)
        return info.value

    error, peak = _peak(attempt)
    assert error.code == E.TOO_MANY_DIMENSIONS
    # Escaping all of them first cost about 250 MB per million entries.
    assert peak < 2_000_000, peak


def test_endless_dimension_iterator_is_refused(impl):
    pairs = (("k%d" % i, "v") for i in itertools.count())
    with pytest.raises(EncodeError) as info:
        impl.Encoder().gauge("a.b", 1, pairs)
    assert info.value.code == E.TOO_MANY_DIMENSIONS
    assert info.value.message == "too many dimensions: more than 50"


def test_too_many_dimensions_after_merging_defaults_says_so_once(impl):
    enc = impl.Encoder(normalize=True, default_dimensions={"d%d" % i: "v" for i in range(30)})
    with pytest.raises(EncodeError) as info:
        enc.gauge("a.b", 1, {"k%d" % i: "v" for i in range(21)})
    assert info.value.code == E.TOO_MANY_DIMENSIONS
    assert info.value.message == "too many dimensions: more than 50"
    assert len(enc) == 0


def _indirection(tmp_path, target) -> str:
    ind = tmp_path / "dt_metadata_e617c525669e072eebe3d0f08212e8f2.properties"
    ind.write_text(str(target) + "\n")
    return str(ind)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_oneagent_file_naming_an_endless_device(tmp_path):
    from dtproto.normalize import read_oneagent_metadata

    assert read_oneagent_metadata(_indirection(tmp_path, "/dev/zero"), alternative=None) == {}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_oneagent_file_naming_a_fifo_does_not_hang(tmp_path):
    from dtproto.normalize import read_oneagent_metadata

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done: list = []
    t = threading.Thread(target=lambda: done.append(
        read_oneagent_metadata(_indirection(tmp_path, fifo), alternative=None)), daemon=True)
    t.start()
    t.join(5)
    assert done == [{}]


def test_oneagent_file_too_large_is_ignored(tmp_path):
    from dtproto.normalize import ONEAGENT_MAX_FILE_BYTES, read_oneagent_metadata

    big = tmp_path / "big.properties"
    big.write_bytes(b"a=b\n" * (ONEAGENT_MAX_FILE_BYTES // 4 + 1))
    assert read_oneagent_metadata(_indirection(tmp_path, big), alternative=None) == {}
    small = tmp_path / "small.properties"
    small.write_bytes(b"dt.entity.host=HOST-1\n")
    assert read_oneagent_metadata(_indirection(tmp_path, small), alternative=None) == {
        "dt.entity.host": "HOST-1"}


# --- issue 10: one meaning for every input ------------------------------------------

def test_a_list_of_str_is_a_list_of_lines(impl):
    lines = ["a.b 1", "c.d 2", "e.f 3\n", ""]
    report = impl.validate(lines)
    assert (report.lines_ok, report.lines_invalid, report.lines_total) == (3, 0, 4)
    assert [r.key for r in impl.iter_decode(lines)] == ["a.b", "c.d", "e.f"]


def test_bytes_items_are_pieces_of_a_stream(impl):
    assert [r.key for r in impl.iter_decode([b"a.b 1\nc.", b"d 2\n"])] == ["a.b", "c.d"]
    # a str item after an unfinished byte chunk starts a line of its own
    report = impl.validate([b"a.b 1\nc.d 2", "e.f 3"])
    assert (report.lines_ok, report.lines_total) == (3, 3)


def test_an_iterable_of_something_else_is_a_clear_error(impl):
    with pytest.raises(TypeError, match="byte chunks .bytes. or lines .str."):
        impl.validate([1, 2])


def test_a_path_is_the_file_it_names(impl, tmp_path):
    body = b"a.b 1\nbad line\nc.d count,delta=2\n" * 1000
    f = tmp_path / "m.txt"
    f.write_bytes(body)
    with open(f, "rb") as fh:
        want = impl.validate(fh)
    assert impl.validate(f) == want
    gz = tmp_path / "m.txt.gz"
    gz.write_bytes(gzip.compress(body))
    assert impl.validate(gz) == want
    assert list(impl.iter_decode(gz, errors="skip")) == list(impl.iter_decode(body, errors="skip"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("split", [1, 2, 7])
def test_a_fifo_is_read_once_and_gzip_told_by_its_bytes(impl, tmp_path, gz, split):
    # Found by a red-team pass: peek(2) on a pipe gave the one byte the
    # writer had sent, so a gzip body was read as text; and a gzip FIFO was
    # closed and opened again, losing what the first open had buffered.
    body = b"a.b 1\nbad line\nc.d count,delta=2\n" * 50
    payload = gzip.compress(body) if gz else body
    fifo = tmp_path / "m.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb", buffering=0) as w:
            w.write(payload[:split])
            time.sleep(0.2)          # the reader peeks while only these bytes came
            w.write(payload[split:])

    t = threading.Thread(target=write)
    t.start()
    try:
        got = impl.validate(fifo)
    finally:
        t.join(10)
    assert got == impl.validate(body)
    assert (got.lines_ok, got.lines_invalid) == (100, 50)


def test_a_body_of_the_magic_s_first_byte_only(impl, tmp_path):
    f = tmp_path / "one"
    f.write_bytes(b"\x1f")
    assert impl.validate(f) == impl.validate(b"\x1f")


def test_a_str_is_never_a_path(impl, tmp_path):
    f = tmp_path / "m.txt"
    f.write_bytes(b"a.b 1\n")
    with pytest.raises(DecodeError):
        impl.decode(str(f))


# --- issue 10: timestamps people actually pass ----------------------------------

def test_validate_warns_about_a_timestamp_in_seconds(impl):
    report = impl.validate(b"a.b 1 1717243200\nc.d 2 1717243200000\n")
    assert report.ok and report.warnings_total == 1
    (w,) = report.warnings
    assert (w.line, w.code) == (1, "timestamp_in_seconds")
    assert "seconds" in w.message and "1717243200000" in w.message
    # the server does not report it: it is dtproto's own hint
    assert report.to_response()["warnings"] is None


def test_validate_seconds_and_key_warnings_together(impl, py):
    body = b"a.b count,delta=1 1717243200\n" * 3
    report = impl.validate(body, max_warnings=2)
    assert report == py.validate(body, max_warnings=2)
    # max_warnings caps each kind: two renames and two hints, in input order
    assert report.warnings_total == 6 and len(report.warnings) == 4
    assert [w.code for w in report.warnings] == ["changed_metric_key", "timestamp_in_seconds"] * 2
    assert len(report.to_response()["warnings"]["changedMetricKeys"]) == 2


def test_encoder_takes_aware_datetimes(impl):
    enc = impl.Encoder()
    utc = datetime.timezone.utc
    enc.gauge("a.b", 1, timestamp=datetime.datetime(2024, 6, 1, tzinfo=utc))
    cest = datetime.timezone(datetime.timedelta(hours=2))
    enc.count("a.b", 1, timestamp=datetime.datetime(2024, 6, 1, 2, 0, 0, 1500, tzinfo=cest))
    assert enc.getvalue() == b"a.b gauge,1 1717200000000\na.b count,delta=1 1717200000001\n"
    with pytest.raises(EncodeError, match="naive datetime") as info:
        enc.gauge("a.b", 1, timestamp=datetime.datetime(2024, 6, 1))
    assert info.value.field == "timestamp"
    assert enc.lines == 2


def test_encoder_warns_about_a_timestamp_in_seconds(impl):
    enc = impl.Encoder()
    with pytest.warns(TimestampWarning, match="seconds") as record:
        enc.gauge("a.b", 1, timestamp=1717243200)
    assert record[0].filename == __file__  # points at the caller's line
    assert enc.getvalue() == b"a.b gauge,1 1717243200\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.gauge("a.b", 1, timestamp=1717243200000)  # milliseconds: no warning


@pytest.mark.parametrize("options", [{}, {"prefix": "p"}, {"default_dimensions": {"z": "y"}}])
@pytest.mark.parametrize("dims, field", [
    ([("a",)], "dimensions[0]"),
    ([("ok", "v"), (1, "v")], "dimensions[1].key"),
    ({"ok": "v", "bad key": "v"}, "dimensions[1].key"),
    ([("a", 1)], "dimensions[0].value"),
])
def test_a_bad_dimension_is_named_the_same_with_or_without_options(impl, options, dims, field):
    with pytest.raises(EncodeError) as info:
        impl.Encoder(**options).gauge("a.b", 1, dims)
    assert info.value.field == field


# --- issue 12: warnings stay compact until read ----------------------------------

def test_warnings_are_built_only_when_read(impl, py):
    import gc

    body = b"".join(b"m.k%d count,delta=1 1717243200\n" % (i % 7) for i in range(20_000))
    collections = []
    hook = lambda phase, info: collections.append(phase)  # noqa: E731
    gc.collect()
    gc.callbacks.append(hook)
    try:
        report = impl.validate(body)
    finally:
        gc.callbacks.remove(hook)
    if impl.__name__.endswith("_codec_c"):
        # 20,000 LineWarning objects would have started dozens of collections
        assert len(collections) <= 2, len(collections)
    want = py.validate(body)
    assert report.warnings_total == want.warnings_total == 40_000
    assert report == want  # builds them, identical to the reference's
    assert report.warnings[:2] == want.warnings[:2]
    assert report.to_response() == want.to_response()


def test_long_numbers_cannot_make_the_fast_path_backtrack(impl):
    """Three 15,000-digit numbers in a summary whose count is invalid: a
    number pattern that can split a run of digits many ways once took
    O(n**3) here.  Run in a subprocess with a generous bound: linear time
    finishes in milliseconds, the old pattern not in a lifetime."""
    import subprocess
    import sys

    code = (
        "import dtproto._impl as I, sys\n"
        "m = I.available_implementations()[%r]\n"
        "n = '1' + '0' * 15000\n"
        "for count in ('-1', '', '1.0'):\n"
        "    line = 'abc gauge,min=%%s,max=%%s,sum=%%s,count=%%s' %% (n, n, n, count)\n"
        "    assert not m.validate(line.encode()).ok\n"
        "print('ok')\n" % ("cython" if impl.__name__.endswith("_codec_c") else "python"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                       cwd=NEUTRAL_DIR)
    assert p.returncode == 0 and p.stdout.strip() == b"ok", p.stderr[-2000:]


# ---------------------------------------------------------------------------
# a body given as a subclass is read as its contents
# ---------------------------------------------------------------------------

_BODY = b"cpu.temp,host=a gauge,55 1700000000000\nbad line\nm.x count,delta=2\n"
_EVIL = b"evil.key gauge,1\n"


class _LyingBytes(bytes):
    """bytes whose methods describe another body."""

    def split(self, *a, **k):
        return [_EVIL]

    def find(self, *a, **k):
        return -1

    def count(self, *a, **k):
        return 0

    def endswith(self, *a, **k):
        return True

    def __len__(self):
        return 0

    def __bytes__(self):
        return _EVIL

    def decode(self, *a, **k):
        return _EVIL.decode()


class _LyingStr(str):
    """str whose methods describe another body (or none)."""

    def encode(self, *a, **k):
        return _EVIL

    def endswith(self, *a, **k):
        return True

    def __len__(self):
        return 0


class _PlainBytes(bytes):
    pass


class _Reads:
    """A file whose read() hands out the body in subclass blocks."""

    def __init__(self, blocks):
        self.blocks = list(blocks)

    def read(self, size=-1):
        return self.blocks.pop(0) if self.blocks else b""


def _outcomes(impl, make):
    out = []
    for fn in (lambda d: [repr(r) for r in impl.decode(d)],
               lambda d: (lambda r: (r.lines_total, r.lines_ok, r.lines_invalid))(impl.validate(d)),
               lambda d: [repr(r) for r in impl.iter_decode([d], errors="skip")]):
        try:
            out.append(fn(make()))
        except Exception as e:  # the error itself is the outcome
            out.append((type(e).__name__, str(e)))
    return out


@pytest.mark.parametrize("wrap", [_LyingBytes, _PlainBytes, _LyingStr])
def test_a_body_subclass_is_read_as_its_contents(impl, wrap):
    """decode, validate and iter_decode read a subclass body's contents, with
    the base type's own functions: the pure decoder used a bytes subclass's
    split/find and a str subclass's encode(), and the Cython core refused
    any bytes subclass (TypeError), where the same bytes decode."""
    body = _BODY.decode() if wrap is _LyingStr else _BODY
    assert _outcomes(impl, lambda: wrap(body)) == _outcomes(impl, lambda: body)


@pytest.mark.parametrize("wrap", [_LyingBytes, _LyingStr])
def test_file_blocks_that_say_they_are_empty_are_still_read(impl, wrap):
    """A read() block whose __len__ says 0 does not end the stream: every
    line is read (it used to end there, the rest of the file unread)."""
    text = wrap is _LyingStr
    blocks = [_BODY[:30], _BODY[30:]]
    f = _Reads([wrap(b.decode()) if text else wrap(b) for b in blocks])
    assert [repr(r) for r in impl.iter_decode(f, errors="skip")] == \
        [repr(r) for r in impl.iter_decode([_BODY], errors="skip")]


def test_sender_items_that_are_subclasses_send_their_contents():
    """str and bytes items given to the sender as subclasses send their
    contents (a str subclass's encode() or a bytes subclass's __bytes__ is
    not asked); every line is accounted for."""
    from dtproto import Sender
    from dtproto.server import IngestServer

    items = [_LyingStr("a.b 1"), _LyingBytes(b"c.d 2\nbad key\n"), _LyingStr("e.f 3\n")]
    with IngestServer() as srv:
        with Sender(srv.url, "t0k3n", retry_budget=1.0) as s:
            r = s.send(items)
        assert srv.accepted_lines == [b"a.b 1", b"c.d 2", b"e.f 3"]
    assert (r.lines_ok, r.lines_invalid) == (3, 1)


@pytest.mark.parametrize("wrap", [_LyingBytes, _LyingStr])
def test_sender_bodies_and_added_items_that_are_subclasses_send_their_contents(wrap):
    """A whole body given to ``send()`` and items given to ``add()`` as
    subclasses send their contents: a str body whose __len__ said 0 sent
    nothing (every line lost, silently), an added bytes item was its
    __bytes__."""
    from dtproto import Sender
    from dtproto.server import IngestServer

    body = b"a.b,host=a gauge,55\nbad line\nm.x count,delta=2\n"  # no timestamp: stored now

    def as_wrapped(b):
        return wrap(b.decode()) if wrap is _LyingStr else wrap(b)

    with IngestServer() as srv:
        with Sender(srv.url, "t0k3n", retry_budget=1.0) as s:
            r = s.send(as_wrapped(body))
        assert srv.accepted_lines == [b"a.b,host=a gauge,55", b"m.x count,delta=2"]
        assert (r.lines_ok, r.lines_invalid) == (2, 1)
        srv.reset()
        with Sender(srv.url, "t0k3n", retry_budget=1.0) as s:
            for line in body.splitlines():
                s.add(as_wrapped(line))
            r = s.flush()
        assert srv.accepted_lines == [b"a.b,host=a gauge,55", b"m.x count,delta=2"]
        assert (r.lines_ok, r.lines_invalid) == (2, 1)


def _pairs_then(exc: BaseException, *pairs):
    yield from pairs
    raise exc


@pytest.mark.parametrize("method", ["gauge", "count", "summary", "record"])
@pytest.mark.parametrize("exc_type", [TypeError, ValueError, RuntimeError])
def test_dimensions_that_break_part_way_raise_their_error_and_write_nothing(impl, method,
                                                                           exc_type):
    """A generator of pairs that raises after a pair (a bug in the caller's
    code): its error, nothing written.  The Cython core took a TypeError for
    "not iterable" and wrote the line without the pair it had read."""
    enc = impl.Encoder()

    def call():
        dims = _pairs_then(exc_type("the caller's bug"), ("host", "a"))
        if method == "gauge":
            enc.gauge("cpu.temp", 55.0, dims)
        elif method == "count":
            enc.count("cpu.temp", 2, dims)
        elif method == "summary":
            enc.summary("cpu.temp", 1.0, 2.0, 3.0, 2, dims)
        else:   # only tuple.__new__ puts a generator in a Metric
            rec = tuple.__new__(Metric, ("cpu.temp", dims, "gauge", 55.0, None, None, None,
                                         None, None))
            enc.add(rec)

    with pytest.raises(exc_type, match="the caller's bug"):
        call()
    assert enc.getvalue() == b"" and enc.lines == 0


def test_a_bad_pair_before_a_broken_one_is_the_error(impl):
    """The reference reads pair by pair: a bad first pair is reported before
    the iterable's own error is reached."""
    dims = _pairs_then(RuntimeError("never reached"), ("Bad Key", "a"))
    with pytest.raises(EncodeError) as info:
        impl.Encoder().gauge("cpu.temp", 1.0, dims)
    assert info.value.field == "dimensions[0].key"


def _pair_that_breaks(exc: BaseException):
    yield "host"
    raise exc


@pytest.mark.parametrize("exc_type", [TypeError, ValueError])
def test_a_pair_that_breaks_while_unpacked_is_not_a_pair(impl, exc_type):
    for dims in ([_pair_that_breaks(exc_type("x"))],
                 (p for p in [_pair_that_breaks(exc_type("x"))])):
        with pytest.raises(EncodeError, match="a dimension must be a") as info:
            impl.Encoder().gauge("cpu.temp", 1.0, dims)
        assert (info.value.field, info.value.code) == ("dimensions[0]", E.INVALID_RECORD)


def test_a_pair_that_breaks_with_another_error_raises_it_where_it_is_reached(impl):
    dims = [("ok", "v"), _pair_that_breaks(RuntimeError("broke")), ("Bad Key", "v")]
    with pytest.raises(RuntimeError, match="broke"):
        impl.Encoder().gauge("cpu.temp", 1.0, dims)
    dims = [("Bad Key", "v"), _pair_that_breaks(RuntimeError("broke"))]
    with pytest.raises(EncodeError) as info:
        impl.Encoder().gauge("cpu.temp", 1.0, dims)
    assert info.value.field == "dimensions[0].key"


def test_a_records_kind_is_compared_once_as_the_reference_does(impl):
    class Flip(str):
        """Equal to "gauge" the first time it is asked only."""
        n = 0

        def __eq__(self, other):
            self.n += 1
            return self.n == 1 and str.__eq__(self, other)

        __hash__ = str.__hash__

    rec = tuple.__new__(Metric, ("a.b", (), Flip("gauge"), 1.0, 2.0, 3.0, 2.5, 1, None))
    assert impl.encode([rec]) == b"a.b gauge,1\n"


class _ItemsOnly:
    """A mapping-like object known only by items(): fresh pairs per call."""

    def __init__(self, pairs):
        self.pairs = pairs

    def items(self):
        return list(self.pairs)


class _TuplePair(tuple):
    pass


class _DictSub(dict):
    pass


@pytest.mark.parametrize("make", [
    lambda: _ItemsOnly([("k", "v")]),
    lambda: iter([("k", "v")]),
    lambda: (iter(("k", "v")),),
    lambda: (_TuplePair(("k", "v")),),
    lambda: _DictSub(k="v"),
], ids=["items-only", "iterator", "iterator-pair", "tuple-subclass-pair", "dict-subclass"])
def test_a_record_with_unusual_dimensions_is_written(impl, make):
    """Only tuple.__new__ puts such dimensions in a Metric; the reference
    reads them, once (the Cython core once called that a disagreement:
    found by the fuzzer and a review)."""
    def rec():
        return tuple.__new__(Metric, ("abc", make(), "gauge", 1.0, None, None, None, None, None))

    enc = impl.Encoder()
    enc.add(rec())
    assert enc.getvalue() == impl.encode([rec()]) == b"abc,k=v gauge,1\n"


def test_a_records_one_shot_metadata_properties_are_read_once(impl):
    from dtproto import Metadata

    bad = tuple.__new__(Metadata, ("a.b", "gauge", (p for p in [("dt.meta.unit", "Byte"),
                                                               ("dt.meta.bogus", "x")])))
    with pytest.raises(EncodeError) as info:
        impl.encode([bad])
    assert (info.value.code, info.value.field, info.value.record) == (
        E.UNKNOWN_METADATA_PROPERTY, "properties[1]", 0)
    good = tuple.__new__(Metadata, ("a.b", "gauge", (p for p in [("dt.meta.unit", "Byte")])))
    assert impl.encode([good]) == b"#a.b gauge dt.meta.unit=Byte\n"
