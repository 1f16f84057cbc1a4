"""validate(), ValidationReport.to_response() and classic_key() (docs/protocol.md §4.1, §10.3)."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strategies as S
from dtproto import DecodeError, ErrorCode, ValidationReport
from dtproto.report import LineError, LineWarning

E = ErrorCode
NOW = 1_700_000_000_000


def test_counts_errors_and_warnings(impl):
    body = (b"abc 1\n"                                   # 1 ok
            b"\n"                                        # 2 blank
            b"#abc gauge dt.meta.unit=s\n"               # 3 ok (metadata)
            b"ab 1\n"                                    # 4 invalid
            b"req count,delta=1\n"                       # 5 ok + warning
            b" \t\r\n"                                   # 6 blank
            b"abc,K=v 1\n"                               # 7 invalid
            b"x.count gauge,min=1,max=1,sum=1,count=1\n"  # 8 ok + warning
            b"x.count count,delta=1\n")                  # 9 ok
    r = impl.validate(body)
    assert type(r) is ValidationReport
    assert (r.lines_ok, r.lines_invalid, r.warnings_total, r.lines_total) == (5, 2, 2, 9)
    assert not r.ok
    assert r.errors == [
        LineError(4, 1, E.METRIC_KEY_LENGTH, "metric key length: 2 not in 3..255", "ab 1"),
        LineError(7, 5, E.INVALID_DIMENSION_KEY,
                  "invalid dimension key in message 'abc,K'; error at 'K' (index 4)",
                  "abc,K=v 1"),
    ]
    assert r.warnings == [
        LineWarning(5, "metric key 'req' changed to 'req.count'"),
        LineWarning(8, "metric key 'x.count' changed to 'x.count.gauge'"),
    ]
    assert r.error_counts == {E.METRIC_KEY_LENGTH: 1, E.INVALID_DIMENSION_KEY: 1}
    assert type(r.errors[0].code) is ErrorCode


def test_error_entries_equal_decode_errors(impl):
    body = b"abc 1\nabc 1 5 6\n"
    with pytest.raises(DecodeError) as info:
        impl.decode(body)
    d = info.value
    (e,) = impl.validate(body).errors
    assert (e.line, e.column, e.code, e.message, e.text) == (d.line, d.column, d.code,
                                                             d.reason, d.text)


def test_response_all_ok(impl):
    r = impl.validate(b"abc 1\nabc 2\n#abc gauge dt.meta.unit=s\nabc.count count,delta=1")
    assert r.ok
    assert r.to_response() == {"linesOk": 4, "linesInvalid": 0, "error": None,
                               "warnings": None}
    assert json.dumps(r.to_response()) == (
        '{"linesOk": 4, "linesInvalid": 0, "error": null, "warnings": null}')


def test_response_one_invalid_line(impl):
    resp = impl.validate(b"abc 1\n1bc 1\n").to_response()
    assert resp == {
        "linesOk": 1, "linesInvalid": 1,
        "error": {"code": 400, "message": "1 invalid lines", "invalidLines": [
            {"line": 2, "error": "invalid metric key in message '1'; error at '1' (index 0)"}]},
        "warnings": None,
    }
    assert list(resp) == ["linesOk", "linesInvalid", "error", "warnings"]
    assert list(resp["error"]) == ["code", "message", "invalidLines"]


@pytest.mark.parametrize("n_invalid,message,listed", [
    (1, "1 invalid lines", 1), (9, "9 invalid lines", 9), (10, "10 invalid lines", 10),
    (11, "First 10 errors reported", 10), (29, "First 10 errors reported", 10),
])
def test_response_error_cap(impl, n_invalid, message, listed):
    body = b"".join(b"abc 1\nab %d\n" % i for i in range(n_invalid))
    resp = impl.validate(body).to_response()
    assert (resp["linesOk"], resp["linesInvalid"]) == (n_invalid, n_invalid)
    assert resp["error"]["code"] == 400
    assert resp["error"]["message"] == message
    assert [e["line"] for e in resp["error"]["invalidLines"]] == [2 * i + 2 for i in range(listed)]


@pytest.mark.parametrize("body", [b"", b"\n", b"\n\n  \n\t\r\n", ""])
def test_response_empty_request(impl, body):
    r = impl.validate(body)
    assert (r.lines_ok, r.lines_invalid, r.errors, r.warnings) == (0, 0, [], [])
    assert r.to_response() == {
        "linesOk": 0, "linesInvalid": 0,
        "error": {"code": 400, "message": "empty request", "invalidLines": []},
        "warnings": None,
    }


def test_response_warnings(impl):
    resp = impl.validate(b"a.b count,delta=1\nabc 1\nx.count 1\n").to_response()
    assert resp == {
        "linesOk": 3, "linesInvalid": 0, "error": None,
        "warnings": {"message": "First 2 warnings reported", "changedMetricKeys": [
            {"line": 1, "warning": "metric key 'a.b' changed to 'a.b.count'"},
            {"line": 3, "warning": "metric key 'x.count' changed to 'x.count.gauge'"},
        ]},
    }


def test_response_errors_and_warnings_together(impl):
    resp = impl.validate(b"abc count,delta=1\nab 1").to_response()
    assert resp["error"]["message"] == "1 invalid lines"
    assert resp["warnings"]["changedMetricKeys"] == [
        {"line": 1, "warning": "metric key 'abc' changed to 'abc.count'"}]


def test_warning_texts_from_server(impl):
    # real server texts (micrometer#5037), §4.1
    r = impl.validate(b"executor.completed count,delta=1\njvm.buffer.count 5\n")
    assert [w.message for w in r.warnings] == [
        "metric key 'executor.completed' changed to 'executor.completed.count'",
        "metric key 'jvm.buffer.count' changed to 'jvm.buffer.count.gauge'",
    ]


def test_metadata_and_invalid_lines_never_warn(impl):
    r = impl.validate(b"#abc count dt.meta.unit=s\n#x.count gauge dt.meta.unit=s\n"
                      b"abc count,1\n")
    assert r.warnings == [] and r.lines_ok == 2 and r.lines_invalid == 1


@pytest.mark.parametrize("key,kind,classic", [
    ("a", "count", "a.count"),
    ("abc", "count", "abc.count"),
    ("abc.count", "count", "abc.count"),
    ("abc.count", "gauge", "abc.count.gauge"),
    ("abc.count", "summary", "abc.count.gauge"),
    ("abc", "gauge", "abc"),
    ("abc", "summary", "abc"),
    ("queue_count", "gauge", "queue_count"),
    ("queue_count", "count", "queue_count.count"),
    ("count", "count", "count.count"),            # literal ".count" match
    ("count", "gauge", "count"),
    ("a.Count", "count", "a.Count.count"),        # case-sensitive
    ("a.Count", "gauge", "a.Count"),
    ("a.COUNT", "summary", "a.COUNT"),
    ("a.countx", "gauge", "a.countx"),
    ("a.count.gauge", "gauge", "a.count.gauge"),
    ("a.count.count", "count", "a.count.count"),
    ("a.count.count", "gauge", "a.count.count.gauge"),
    ("a.gauge", "count", "a.gauge.count"),
    ("k" * 255, "count", "k" * 255 + ".count"),   # no length check after the suffix
])
def test_classic_key(impl, key, kind, classic):
    assert impl.classic_key(key, kind) == classic


def test_classic_key_rejects_unknown_kind(impl):
    for kind in ("meta", "Gauge", "", None):
        with pytest.raises(ValueError):
            impl.classic_key("abc", kind)


def test_warnings_agree_with_classic_key(impl):
    lines = [b"abc 1", b"abc count,delta=1", b"a.count 1", b"a.count count,delta=1",
             b"count count,delta=1", b"a.Count count,delta=1",
             b"a.count gauge,min=1,max=1,sum=1,count=1"]
    r = impl.validate(b"\n".join(lines))
    recs = impl.decode(b"\n".join(lines))
    want = [LineWarning(i + 1, "metric key '%s' changed to '%s'" % (m.key,
                        impl.classic_key(m.key, m.kind)))
            for i, m in enumerate(recs) if impl.classic_key(m.key, m.kind) != m.key]
    assert r.warnings == want and r.warnings_total == 5


def test_max_errors_and_max_warnings(impl):
    body = b"".join(b"ab %d\nabc count,delta=%d\n" % (i, i) for i in range(30))
    r = impl.validate(body)
    assert len(r.errors) == 30 and len(r.warnings) == 30
    r = impl.validate(body, max_errors=3, max_warnings=2)
    assert (r.lines_invalid, len(r.errors), r.warnings_total, len(r.warnings)) == (30, 3, 30, 2)
    assert [e.line for e in r.errors] == [1, 3, 5]
    assert [w.line for w in r.warnings] == [2, 4]
    assert r.error_counts == {E.METRIC_KEY_LENGTH: 30}
    resp = r.to_response()
    assert resp["error"]["message"] == "First 10 errors reported"
    assert len(resp["error"]["invalidLines"]) == 3
    assert resp["warnings"]["message"] == "First 2 warnings reported"
    r = impl.validate(body, max_errors=0, max_warnings=0)
    assert (r.errors, r.warnings, r.lines_invalid, r.lines_ok) == ([], [], 30, 30)
    r = impl.validate(body, max_errors=None, max_warnings=None)
    assert len(r.errors) == 30 and len(r.warnings) == 30
    big = b"ab 1\n" * 20_000
    r = impl.validate(big)
    assert r.lines_invalid == 20_000 and len(r.errors) == 10_000     # default cap


def test_max_warnings_caps_each_kind_so_hints_never_crowd_out_renames(impl):
    """dtproto's timestamp-in-seconds hints and the renames the server reports
    are capped apart: 10,000 hints (the default cap) used to leave no room
    for a rename after them, and the response said "warnings": null where
    the server reports it."""
    body = b"a.b 1 1700000000\n" * 10_000 + b"x.y count,delta=1\n"
    r = impl.validate(body)
    assert r.warnings_total == len(r.warnings) == 10_001
    assert r.to_response()["warnings"]["changedMetricKeys"] == [
        {"line": 10_001, "warning": "metric key 'x.y' changed to 'x.y.count'"}]
    # each kind its first N, in input order, across the blocks of a stream
    lines = [b"a.b 1 5\n", b"x.y count,delta=1\n"] * 3 + [b"c.d count,delta=1 7\n"] * 2
    for source in (b"".join(lines), lines, iter([b"".join(lines[:3]), b"".join(lines[3:])])):
        r = impl.validate(source, max_warnings=2)
        assert [(w.line, w.code) for w in r.warnings] == [
            (1, "timestamp_in_seconds"), (2, "changed_metric_key"),
            (3, "timestamp_in_seconds"), (4, "changed_metric_key")]
        assert r.warnings_total == 10
        assert len(r.to_response()["warnings"]["changedMetricKeys"]) == 2
    r = impl.validate(b"".join(lines), max_warnings=0)
    assert r.warnings == [] and r.warnings_total == 10 and r.to_response()["warnings"] is None
    # a cap for each kind (the CLI's segments continue a report): none built past it
    r = impl._validate_kinds(lines, None, None, 0, 1)
    assert [(w.line, w.code) for w in r.warnings] == [(1, "timestamp_in_seconds")]
    r = impl._validate_kinds(lines, None, None, 1, None)
    assert [w.line for w in r.warnings] == [1, 2, 3, 5, 7, 8]
    assert r.warnings_total == 10 and r._kept_hints == 5


def test_now_ms_window(impl):
    body = b"abc 1 %d\nabc 1 %d\n" % (NOW, NOW - 3_600_001)
    assert impl.validate(body).ok
    r = impl.validate(body, now_ms=NOW)
    assert (r.lines_ok, r.lines_invalid) == (1, 1)
    assert r.errors[0][:3] == (2, 7, E.TIMESTAMP_OUT_OF_RANGE)


def test_source_types(impl, tmp_path):
    body = "abc 1\nab 2\nabc,k=ü count,delta=1\n"
    want = impl.validate(body.encode())
    p = tmp_path / "body.txt"
    p.write_bytes(body.encode())
    with open(p, "rb") as f:
        assert impl.validate(f) == want
    for src in (body, bytearray(body.encode()), memoryview(body.encode()),
                io.BytesIO(body.encode()), [body.encode()[:7], body.encode()[7:]],
                iter([body.encode()])):
        assert impl.validate(src) == want


def test_report_equality_and_repr(impl):
    a = impl.validate(b"abc 1\nab 1")
    b = impl.validate(b"abc 1\nab 1")
    assert a == b and a != impl.validate(b"abc 1")
    assert "lines_ok=1" in repr(a) and "lines_invalid=1" in repr(a)


def _decode_outcome(impl, body):
    try:
        return impl.decode(body), None
    except DecodeError as e:
        return None, e


@given(st.one_of(st.binary(max_size=300), S.mutated_bodies(), S.bodies().map(lambda t: t[0])))
def test_validate_never_raises_and_agrees_with_decode(impl, body):
    r = impl.validate(body)
    resp = r.to_response()
    json.dumps(resp)
    recs, err = _decode_outcome(impl, body)
    assert r.lines_ok + r.lines_invalid <= body.count(b"\n") + 1
    if err is None:
        assert r.lines_invalid == 0 and r.lines_ok == len(recs)
        assert resp["error"] is None or resp["error"]["message"] == "empty request"
    else:
        first = r.errors[0]
        assert (first.line, first.column, first.code, first.message, first.text) == (
            err.line, err.column, err.code, err.reason, err.text)
        assert resp["error"]["invalidLines"][0] == {"line": err.line, "error": err.reason}
    assert r.lines_invalid == sum(r.error_counts.values())


@given(S.mutated_bodies())
def test_skip_mode_yields_exactly_the_valid_lines(impl, body):
    kept = list(impl.iter_decode([body], errors="skip"))
    r = impl.validate(body)
    assert len(kept) == r.lines_ok
    for line_no, rec in zip(_valid_line_numbers(impl, body), kept):
        assert impl.decode(body.split(b"\n")[line_no - 1]) == [rec]


def _valid_line_numbers(impl, body):
    out = []
    for i, line in enumerate(body.split(b"\n"), 1):
        try:
            if impl.decode(line):
                out.append(i)
        except DecodeError:
            pass
    return out
