"""iter_decode() and validate() over streams: any chunking gives the whole-buffer result.

Lines may straddle chunk boundaries; file objects and iterables of chunks are
read with bounded memory; an over-long line is skipped without buffering it.
"""

from __future__ import annotations

import io
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strategies as S
from dtproto import DecodeError, ErrorCode, Metric

E = ErrorCode


def _outcome(fn):
    out = []
    try:
        for rec in fn():
            out.append((type(rec), rec))
    except DecodeError as e:
        return out, (type(e), e.code, e.line, e.column, e.reason, e.text)
    return out, None


def _decode_outcome(impl, body):
    """What a stream must give: decode()'s records, or the records of the
    lines before decode()'s error followed by that error."""
    recs, err = _outcome(lambda: impl.decode(body))
    if err is not None:
        before = b"\n".join(body.split(b"\n")[: err[2] - 1])
        recs = [(type(r), r) for r in impl.decode(before)]
    return recs, err


class SmallReads(io.RawIOBase):
    """A binary file whose read(n) returns at most ``size`` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self._buf = io.BytesIO(data)
        self._size = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n, self._size) if n >= 0 else self._size)


@st.composite
def chunked_bodies(draw):
    body = draw(st.one_of(S.bodies().map(lambda t: t[0]), S.mutated_bodies()))
    return body, draw(S.chunkings(body))


@given(chunked_bodies())
def test_iter_decode_any_chunking_equals_decode(impl, case):
    body, chunks = case
    assert b"".join(chunks) == body
    want = _decode_outcome(impl, body)
    assert _outcome(lambda: impl.iter_decode(chunks)) == want
    assert _outcome(lambda: impl.iter_decode(iter(chunks))) == want
    assert _outcome(lambda: impl.iter_decode(body)) == want


@given(chunked_bodies())
def test_validate_any_chunking_equals_whole(impl, case):
    body, chunks = case
    want = impl.validate(body)
    assert impl.validate(chunks) == want
    assert impl.validate(iter(chunks)) == want
    assert impl.validate(SmallReads(body, 17)).to_response() == want.to_response()


@given(chunked_bodies())
def test_skip_mode_any_chunking(impl, case):
    body, chunks = case
    whole = list(impl.iter_decode([body], errors="skip"))
    assert list(impl.iter_decode(chunks, errors="skip")) == whole
    assert len(whole) == impl.validate(body).lines_ok


@given(st.sampled_from([5, 64, 1000]), S.bodies(max_lines=12))
def test_file_objects(impl, size, case):
    body, records = case
    assert list(impl.iter_decode(io.BytesIO(body))) == records
    assert list(impl.iter_decode(SmallReads(body, size))) == records
    assert impl.validate(SmallReads(body, size)) == impl.validate(body)


def test_real_file(impl, tmp_path):
    body = b"".join(b"abc,k=v%d %d\r\n\n" % (i, i) for i in range(5000)) + b"ab 1\nabc 2"
    p = tmp_path / "body.txt"
    p.write_bytes(body)
    with open(p, "rb") as f:
        recs = list(impl.iter_decode(f, errors="skip"))
    assert len(recs) == 5001 and recs[-1] == Metric.gauge("abc", 2)
    with open(p, "rb") as f:
        r = impl.validate(f)
    assert (r.lines_ok, r.lines_invalid, r.errors[0].line) == (5001, 1, 10_001)
    with open(p, "rb", buffering=0) as f:
        with pytest.raises(DecodeError) as info:
            list(impl.iter_decode(f))
    assert (info.value.line, info.value.code) == (10_001, E.METRIC_KEY_LENGTH)
    # A text file is its text (newline="" keeps line ends as they are).
    with open(p, "r", encoding="utf-8", newline="") as f:
        with pytest.raises(DecodeError) as info:
            list(impl.iter_decode(f))
    assert (info.value.line, info.value.code) == (10_001, E.METRIC_KEY_LENGTH)
    # A path is the file it names.
    assert impl.validate(p) == r
    assert list(impl.iter_decode(p, errors="skip")) == recs


def test_records_before_the_error_are_yielded(impl):
    it = impl.iter_decode([b"abc 1\nab", b"c 2\nab 3\nabc 4\n"])
    assert next(it) == Metric.gauge("abc", 1)
    assert next(it) == Metric.gauge("abc", 2)
    with pytest.raises(DecodeError) as info:
        next(it)
    assert (info.value.line, info.value.code) == (3, E.METRIC_KEY_LENGTH)


def test_errors_argument(impl):
    with pytest.raises(ValueError):
        impl.iter_decode([b"abc 1"], errors="ignore")   # checked at the call
    assert list(impl.iter_decode([b"ab 1\nabc 1\n"], errors="skip")) == [Metric.gauge("abc", 1)]


def test_now_ms_in_streams(impl):
    now = 1_700_000_000_000
    body = b"abc 1 %d\nabc 1 %d\n" % (now, now + 600_001)
    assert list(impl.iter_decode([body], now_ms=now, errors="skip")) == [
        Metric.gauge("abc", 1, timestamp=now)]
    assert impl.validate([body], now_ms=now).lines_invalid == 1


def test_str_and_empty_chunks(impl):
    assert list(impl.iter_decode([b"", b"abc", b"", b" 1", b""])) == [Metric.gauge("abc", 1)]
    assert list(impl.iter_decode([])) == []
    assert list(impl.iter_decode(b"")) == []
    assert list(impl.iter_decode("abc 1\n")) == [Metric.gauge("abc", 1)]
    assert list(impl.iter_decode([bytearray(b"abc 1\n")])) == [Metric.gauge("abc", 1)]


# ---------------------------------------------------------------------------
# the streaming cap: an over-long line is not buffered
# ---------------------------------------------------------------------------

def _chunks(data: bytes, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [4096, 65_536, 1 << 20])
@pytest.mark.parametrize("filler", [b"x", "ü".encode(), "😀".encode(), b"\xff"])
def test_line_longer_than_streaming_cap(impl, size, filler):
    long_line = filler * (250_000 // len(filler))
    body = b"abc 1\n\n" + long_line + b"\r\nabc 2\n#abc gauge dt.meta.unit=s\nab 3\n"
    want = _decode_outcome(impl, body)
    assert want[1][1:4] == (E.LINE_TOO_LONG, 3, 50_001)
    assert _outcome(lambda: impl.iter_decode(_chunks(body, size))) == want
    recs = list(impl.iter_decode(_chunks(body, size), errors="skip"))
    assert recs == [Metric.gauge("abc", 1), Metric.gauge("abc", 2)] + impl.decode(
        b"#abc gauge dt.meta.unit=s")
    r = impl.validate(_chunks(body, size))
    assert r == impl.validate(body)
    assert (r.lines_ok, r.lines_invalid) == (3, 2)
    assert [(e.line, e.code) for e in r.errors] == [(3, E.LINE_TOO_LONG),
                                                    (6, E.METRIC_KEY_LENGTH)]
    assert r.errors[0].message == "line too long: more than 50000 characters"


def test_over_long_last_line_without_lf(impl):
    body = b"abc 1\n" + b"y" * 300_000
    for chunks in (_chunks(body, 8192), [body]):
        r = impl.validate(chunks)
        assert (r.lines_ok, r.lines_invalid, r.errors[0].line) == (1, 1, 2)
        with pytest.raises(DecodeError) as info:
            list(impl.iter_decode(chunks))
        assert (info.value.line, info.value.column, info.value.text) == (2, 50_001, "y" * 100)


def test_long_valid_line_in_small_chunks(impl):
    head = "#abc gauge dt.meta.description="
    line = (head + "😀" * (50_000 - len(head))).encode()      # ~200 kB, 50,000 code points
    body = b"abc 1\n" + line + b"\r\nabc 2"
    want = impl.decode(body)
    assert len(want) == 3
    assert list(impl.iter_decode(_chunks(body, 1000))) == want
    assert impl.validate(_chunks(body, 1000)).lines_ok == 3


# ---------------------------------------------------------------------------
# bounded memory (not a timing test)
# ---------------------------------------------------------------------------

def _stream(total_bytes: int, chunk_lines: int = 200):
    """~50 kB chunks of long lines (a few KB each: the per-line cost stays low
    under tracemalloc), a few distinct heads, one invalid line in 100."""
    heads = []
    for h in range(8):
        dims = ",".join("dim%02d=%s" % (d, ("host-%d-%d-" % (h, d)) * 20) for d in range(12))
        heads.append(("service.metric.m%d,%s" % (h, dims)).encode())
    lines = []
    for i in range(chunk_lines):
        head = heads[i % len(heads)]
        if i % 100 == 7:
            lines.append(b"bad line %d" % i)
        elif i % 3 == 0:
            lines.append(head + b" count,delta=%d 1700000000%03d" % (i, i % 1000))
        elif i % 3 == 1:
            lines.append(head + b" gauge,min=1,max=%d,sum=%d,count=2" % (i + 2, i + 3))
        else:
            lines.append(head + b" %d.25" % i)
    chunk = b"\n".join(lines) + b"\n"
    sent = 0
    while sent < total_bytes:
        yield chunk
        sent += len(chunk)


def test_bounded_memory_on_a_50_mb_stream(impl):
    total = 50 * 1000 * 1000
    tracemalloc.start()
    try:
        r = impl.validate(_stream(total))
        _, peak_validate = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        n = 0
        for _rec in impl.iter_decode(_stream(total // 5), errors="skip"):
            n += 1
        _, peak_iter = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.lines_ok + r.lines_invalid > 15_000 and r.lines_invalid > 150
    assert n > 3_000
    assert peak_validate < 30 * 1000 * 1000, peak_validate
    assert peak_iter < 30 * 1000 * 1000, peak_iter
