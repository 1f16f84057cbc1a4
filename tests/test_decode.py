"""decode(): every rule and limit of the strict profile (docs/protocol.md §2–§9).

Each limit is tested at the boundary and one past it; each error asserts its
stable code and 1-based column (code points), and valid lines assert the
model values.  Every test runs against each implementation (``impl``).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strategies as S
from dtproto import DecodeError, ErrorCode, Metadata, Metric

E = ErrorCode
NOW = 1_700_000_000_000
MAX_INT64 = 2**63 - 1


def fail(impl, data, **kw) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        impl.decode(data, **kw)
    return info.value


def check(impl, data, code, column, line=1, **kw) -> DecodeError:
    e = fail(impl, data, **kw)
    assert (e.code, e.line, e.column) == (code, line, column), (
        e.code, e.line, e.column, e.reason)
    assert isinstance(e.reason, str) and e.reason
    return e


def one(impl, data, **kw):
    recs = impl.decode(data, **kw)
    assert len(recs) == 1, recs
    return recs[0]


# ---------------------------------------------------------------------------
# §4 metric key
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", [
    "abc", "a.b", "A_B", "_ab", "_._", "a-b", "Ab.C-d_e", "a.1m", "system.load.average.1m",
    "a.0.0", "a._", "dtx.foo", "my.dt.foo", "DT.foo", "dt_x", "x" * 255,
    "a." + "b" * 253,
])
def test_metric_key_valid(impl, key):
    m = one(impl, key + " 1")
    assert m.key == key and type(m.key) is str


def test_metric_key_length_boundaries(impl):
    assert one(impl, "abc 1").key == "abc"
    assert one(impl, "k" * 255 + " 1").key == "k" * 255
    assert one(impl, "k" * 255 + ",a=b 1").key == "k" * 255
    e = check(impl, "ab 1", E.METRIC_KEY_LENGTH, 1)
    assert e.reason == "metric key length: 2 not in 3..255"
    e = check(impl, "k" * 256 + " 1", E.METRIC_KEY_LENGTH, 1)
    assert e.reason == "metric key length: 256 not in 3..255"
    check(impl, "a 1", E.METRIC_KEY_LENGTH, 1)
    check(impl, "dt 1", E.METRIC_KEY_LENGTH, 1)  # length before the reservation
    check(impl, "a.b" * 86 + " 1", E.METRIC_KEY_LENGTH, 1)  # 258 with sections


@pytest.mark.parametrize("line,column", [
    ("1abc 1", 1),            # first section starts with a letter or "_"
    ("-abc 1", 1),
    (".abc 1", 1),
    ("a.-b 1", 3),            # later sections: not "-"
    ("a..b 1", 3),            # empty section
    ("ab. 1", 4),             # trailing dot: error at the terminator
    ("abc.,k=v 1", 5),
    ("a:b 1", 2),
    ("a/b 1", 2),
    ("a=b 1", 2),
    ('a"b 1', 2),
    ("a\\b 1", 2),
    ("äbc 1", 1),             # ASCII letters only
    ("abä 1", 3),
    ("ab\u00a0c 1", 3),
    ("ab! 1", 3),             # a bad character wins over the length
    ("k" * 256 + "! 1", 257),
    ("#", 2),                 # a lone "#" is a metadata line without key
])
def test_metric_key_invalid(impl, line, column):
    code = E.MISSING_METRIC_KEY if line == "#" else E.INVALID_METRIC_KEY
    check(impl, line, code, column)


def test_metric_key_server_style_message(impl):
    # Real server text: "failed to parse metric key ...; error at '1' (index 20)" (§10.3)
    e = check(impl, "my.metric.-bad 1", E.INVALID_METRIC_KEY, 11)
    assert e.reason == "invalid metric key in message 'my.metric.-'; error at '-' (index 10)"
    e = check(impl, "ab. 1", E.INVALID_METRIC_KEY, 4)
    assert e.reason == "invalid metric key in message 'ab. '; error at ' ' (index 3)"


def test_metric_key_digit_leading_later_section_allowed(impl):
    # servers were seen rejecting it, the strict profile allows it.
    assert one(impl, "system.load.average.1m 0.5").key == "system.load.average.1m"
    assert one(impl, "a.1.2 1").key == "a.1.2"


def test_reserved_dt_prefix(impl):
    e = check(impl, "dt.abc 1", E.RESERVED_PREFIX, 1)
    assert e.reason.startswith("reserved dt. prefix")
    check(impl, "dt.a 1", E.RESERVED_PREFIX, 1)
    check(impl, "dt.x,k=v gauge,1", E.RESERVED_PREFIX, 1)
    # lowercase "dt." only
    for key in ("DT.abc", "Dt.abc", "dtx.abc", "my.dt.abc", "dt_abc", "dt-a"):
        assert one(impl, key + " 1").key == key


def test_missing_metric_key(impl):
    check(impl, ",k=v 1", E.MISSING_METRIC_KEY, 1)
    check(impl, "# gauge dt.meta.unit=x", E.MISSING_METRIC_KEY, 2)


# ---------------------------------------------------------------------------
# §5 dimension keys
# ---------------------------------------------------------------------------

def test_dimension_key_length_boundaries(impl):
    assert one(impl, "abc,k=v 1").dimensions == (("k", "v"),)
    assert one(impl, "abc," + "k" * 100 + "=v 1").dimensions == (("k" * 100, "v"),)
    e = check(impl, "abc," + "k" * 101 + "=v 1", E.DIMENSION_KEY_TOO_LONG, 5)
    assert e.reason == "dimension key too long: 101 > 100"
    # the key's own rules come before the missing "="
    check(impl, "abc," + "k" * 101 + " 1", E.DIMENSION_KEY_TOO_LONG, 5)


@pytest.mark.parametrize("key", [
    "k", "_", "a.b", "_a._b", "a:b", "a-b", "a_1", "x:1-2_3", "dt.entity.host",
    "dt.metrics.source", "dt.meta.unit", "a.b.c.d.e", "z" * 100,
])
def test_dimension_key_valid(impl, key):
    assert one(impl, "abc,%s=v 1" % key).dimensions == ((key, "v"),)


@pytest.mark.parametrize("line,column", [
    ("abc,K=v 1", 5),          # uppercase is rejected, not lowercased
    ("abc,kA=v 1", 6),
    ("abc,1k=v 1", 5),         # sections start with [a-z_]
    ("abc,a.1=v 1", 7),
    ("abc,-a=v 1", 5),
    ("abc,a.-b=v 1", 7),
    ("abc,:a=v 1", 5),
    ("abc,a..b=v 1", 7),
    ("abc,.a=v 1", 5),
    ("abc,a.=v 1", 7),         # trailing dot: error at "="
    ("abc,kä=v 1", 6),
    ("abc,k/x=v 1", 6),
    ('abc,k"=v 1', 6),
    ("abc,k=v,K=w 1", 9),
])
def test_dimension_key_invalid(impl, line, column):
    check(impl, line, E.INVALID_DIMENSION_KEY, column)


def test_dimension_key_server_style_message(impl):
    # Real server text (micrometer#2295): "invalid dimension key in message
    # '...cacheM'; error at 'M' (index 63)".
    e = check(impl, "abc,cacheM=v 1", E.INVALID_DIMENSION_KEY, 10)
    assert e.reason == "invalid dimension key in message 'abc,cacheM'; error at 'M' (index 9)"


def test_dimension_key_empty_or_without_value(impl):
    check(impl, "abc,=v 1", E.EMPTY_DIMENSION_KEY, 5)
    check(impl, "abc, 1", E.EMPTY_DIMENSION_KEY, 5)
    check(impl, "abc,k=v,,j=w 1", E.EMPTY_DIMENSION_KEY, 9)
    check(impl, "abc,k=v, 1", E.EMPTY_DIMENSION_KEY, 9)
    check(impl, "abc,k 1", E.DIMENSION_WITHOUT_VALUE, 6)
    check(impl, "abc,k,j=v 1", E.DIMENSION_WITHOUT_VALUE, 6)
    check(impl, "abc,k", E.DIMENSION_WITHOUT_VALUE, 6)
    check(impl, "abc,k\t1", E.DIMENSION_WITHOUT_VALUE, 6)


def test_dimensions_count_boundary(impl):
    dims50 = ",".join("k%d=v" % i for i in range(50))
    m = one(impl, "abc," + dims50 + " 1")
    assert len(m.dimensions) == 50
    assert m.dimensions[49] == ("k49", "v")
    line = "abc," + dims50 + ",k50=v 1"
    e = check(impl, line, E.TOO_MANY_DIMENSIONS, len("abc," + dims50 + ",") + 1)
    assert e.reason == "too many dimensions: more than 50"


def test_dimensions_wire_order_and_duplicates(impl):
    # §5: all pairs in wire order, duplicates kept
    m = one(impl, "abc,k=1,k=2,j=3,k=1,a=0 1")
    assert m.dimensions == (("k", "1"), ("k", "2"), ("j", "3"), ("k", "1"), ("a", "0"))
    assert m.dimension_dict() == {"k": "1", "j": "3", "a": "0"}
    dup50 = ",".join("k=%d" % i for i in range(50))
    assert len(one(impl, "abc," + dup50 + " 1").dimensions) == 50  # duplicates count
    check(impl, "abc," + dup50 + ",k=x 1", E.TOO_MANY_DIMENSIONS, len("abc," + dup50) + 2)


# ---------------------------------------------------------------------------
# §6 dimension values
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("wire,decoded", [
    ("v", "v"),
    ("", ""),
    ('""', ""),
    ('"a b,c=d"', "a b,c=d"),                  # no escaping needed inside quotes
    ('"devops\\\\bugfixing"', "devops\\bugfixing"),              # §6.1 doc example
    ('"\\"product\\"_improvement"', '"product"_improvement'),    # §6.1 doc example
    ("a\\ b", "a b"),
    ("a\\,b\\=c", "a,b=c"),
    ('\\"x\\"', '"x"'),
    ("\\\\", "\\"),
    ('"\\,\\=\\ "', ",= "),                    # same escapes inside quotes
    ("a\\nb", "a\\nb"),                        # unknown escapes kept literally
    ('"a\\nb"', "a\\nb"),
    ("\\t", "\\t"),
    ("\\x41", "\\x41"),
    ("\\ü", "\\ü"),
    ("\\😀", "\\😀"),
    ("\\\\n", "\\n"),
    ("\\#", "\\#"),
    ("üñí漢😀", "üñí漢😀"),
    ("a\u00a0b", "a\u00a0b"),                  # NBSP is not a control
    ("\u0085\u2028\ufeff\u200d", "\u0085\u2028\ufeff\u200d"),
    ("HOST-06F288EE2A930951", "HOST-06F288EE2A930951"),
    ("#", "#"),
    ("a.b:c/d", "a.b:c/d"),
])
def test_dimension_value_forms_and_escapes(impl, wire, decoded):
    m = one(impl, "abc,k=%s,z=1 1" % wire)
    assert m.dimensions == (("k", decoded), ("z", "1"))
    assert type(m.dimensions[0][1]) is str
    m = one(impl, "abc,k=%s 1" % wire)
    assert m.dimensions == (("k", decoded),)


def test_quoted_value_may_be_followed_by_tab(impl):
    assert one(impl, 'abc,k="v"\t1').dimensions == (("k", "v"),)
    assert one(impl, 'abc,k="v" \t 1 \t5').timestamp == 5


def test_bare_value_ends_at_space(impl):
    # §6.1 real failure: the rest after the raw space is read as payload
    e = check(impl, "abc,id=Compressed Class Space 1073741824", E.INVALID_PAYLOAD, 19)
    assert e.reason.startswith("invalid metric type in message")
    e = check(impl, "abc,k=a b 1", E.INVALID_PAYLOAD, 9)
    assert e.reason == "invalid metric type in message 'abc,k=a b'; error at 'b' (index 8)"


@pytest.mark.parametrize("line,code,column", [
    ("abc,k=a=b 1", E.UNESCAPED_SPECIAL, 8),
    ('abc,k=a"b 1', E.UNESCAPED_SPECIAL, 8),
    ("abc,k== 1", E.UNESCAPED_SPECIAL, 7),
    ('abc,k="ab"c 1', E.GARBAGE_AFTER_QUOTED_VALUE, 11),
    ('abc,k="ab""c" 1', E.GARBAGE_AFTER_QUOTED_VALUE, 11),
    ('abc,k="ab"=c 1', E.GARBAGE_AFTER_QUOTED_VALUE, 11),
    ('abc,k="ab 1', E.UNTERMINATED_QUOTED_VALUE, 7),
    ('abc,k="ab\\" 1', E.UNTERMINATED_QUOTED_VALUE, 7),
    ('abc,k="', E.UNTERMINATED_QUOTED_VALUE, 7),
    ("abc,k=a\\", E.DANGLING_ESCAPE, 8),
    ('abc,k="a\\', E.DANGLING_ESCAPE, 9),
    ("abc,k=a\tb 1", E.CONTROL_CHARACTER, 8),         # HTAB inside a bare value
    ("abc,k=v\t1", E.CONTROL_CHARACTER, 8),           # only SP ends a bare value
    ('abc,k="a\tb" 1', E.CONTROL_CHARACTER, 9),
    ("abc,k=a\x01 1", E.CONTROL_CHARACTER, 8),
    ("abc,k=a\x00 1", E.CONTROL_CHARACTER, 8),
    ("abc,k=a\x1f 1", E.CONTROL_CHARACTER, 8),
    ("abc,k=a\x7f 1", E.CONTROL_CHARACTER, 8),
    ('abc,k="\x7f" 1', E.CONTROL_CHARACTER, 8),
    ("abc,k=a\r 1", E.CONTROL_CHARACTER, 8),
    ("abc,k=\\\x01 1", E.CONTROL_CHARACTER, 8),       # an escaped control is still one
    ('abc,k="\\\t" 1', E.CONTROL_CHARACTER, 9),
])
def test_dimension_value_errors(impl, line, code, column):
    check(impl, line, code, column)


def test_dimension_value_error_messages(impl):
    e = check(impl, "abc,k=a=b 1", E.UNESCAPED_SPECIAL, 8)
    assert e.reason == "unescaped special character in value: '='"
    e = check(impl, "abc,k=a\x01 1", E.CONTROL_CHARACTER, 8)
    assert e.reason == "control character in value: '\\x01'"
    e = check(impl, "abc,k=a\\", E.DANGLING_ESCAPE, 8)
    assert e.reason == "dangling escape: '\\\\'"


@pytest.mark.parametrize("unit", ["a", "ü", "😀", "\\,", '\\"', "\\n"])
def test_dimension_value_length_boundary(impl, unit):
    # <= 255 code points *decoded*; "\n" (unknown escape) decodes to 2.
    per = 2 if unit == "\\n" else 1
    n = 255 // per
    decoded_unit = {"\\,": ",", '\\"': '"'}.get(unit, unit)
    ok = decoded_unit * n + ("x" if per == 2 else "")
    m = one(impl, "abc,k=%s 1" % (unit * n + ("x" if per == 2 else "")))
    assert m.dimensions[0][1] == ok and len(ok) == 255
    over = unit * n + ("xy" if per == 2 else "y")
    e = check(impl, "abc,k=%s 1" % over, E.DIMENSION_VALUE_TOO_LONG, 7)
    assert e.reason == "dimension value length exceeded: 256 > 255"
    # quoted: column of the opening quote
    check(impl, 'abc,j=1,k="%s" 1' % over, E.DIMENSION_VALUE_TOO_LONG, 11)
    assert one(impl, 'abc,k="%s" 1' % (unit * n + ("x" if per == 2 else ""))
               ).dimensions[0][1] == ok


# ---------------------------------------------------------------------------
# §2 line length, blank lines, CR, leading whitespace, numbering
# ---------------------------------------------------------------------------

def _meta_line(total: int, ch: str = "x") -> str:
    head = "#abc gauge dt.meta.description="
    return head + ch * (total - len(head))


@pytest.mark.parametrize("ch", ["x", "ü", "漢", "😀"])
def test_line_length_boundary_in_code_points(impl, ch):
    line = _meta_line(50_000, ch)
    assert len(line) == 50_000
    md = one(impl, line.encode("utf-8"))
    assert len(md.description) == 50_000 - len("#abc gauge dt.meta.description=")
    assert one(impl, line + "\r\n") == md               # the terminator is not counted
    e = check(impl, _meta_line(50_001, ch), E.LINE_TOO_LONG, 50_001)
    assert e.reason == "line too long: more than 50000 characters"
    assert e.text == _meta_line(50_001, ch)[:100]


def test_line_length_counts_trailing_blanks_and_applies_first(impl):
    check(impl, _meta_line(49_999) + "  ", E.LINE_TOO_LONG, 50_001)
    check(impl, "ab" + "!" * 60_000, E.LINE_TOO_LONG, 50_001)   # before any other rule
    check(impl, " " * 50_001, E.LINE_TOO_LONG, 50_001)          # all lines
    assert impl.decode(" " * 50_000 + "\nabc 1") == [Metric.gauge("abc", 1)]   # blank
    check(impl, "abc 1\n" + _meta_line(50_001), E.LINE_TOO_LONG, 50_001, line=2)
    assert impl.decode(_meta_line(50_000) + "\n" + "abc 1")[1] == Metric.gauge("abc", 1)


def test_blank_lines_are_skipped(impl):
    assert impl.decode(b"") == []
    assert impl.decode(b"\n") == []
    assert impl.decode(b"\n\n\r\n \n\t\n  \t  \r\n") == []
    assert impl.decode(b"\nabc 1\n\n \nabc 2\n\n") == [Metric.gauge("abc", 1),
                                                       Metric.gauge("abc", 2)]


def test_cr_handling(impl):
    g = Metric.gauge("abc", 1)
    assert impl.decode(b"abc 1\r\n") == [g]
    assert impl.decode(b"abc 1\r") == [g]                 # CR at end of body
    assert impl.decode(b"abc 1\r\nabc 1\r\n") == [g, g]
    assert impl.decode(b"abc 1 \t\r\n") == [g]            # trailing blanks, then CR
    check(impl, b"abc 1\r\r\n", E.INVALID_NUMBER, 5)      # a single CR only
    check(impl, b"abc 1\rx\n", E.INVALID_NUMBER, 5)
    check(impl, b"ab\rc 1", E.INVALID_METRIC_KEY, 3)
    check(impl, b"\r\r", E.INVALID_METRIC_KEY, 1)
    e = check(impl, b"abc,k=v\r\n", E.MISSING_PAYLOAD, 8)
    assert e.text == "abc,k=v"                            # the CR is not part of the text


def test_trailing_blanks_are_trimmed(impl):
    assert one(impl, "abc 1 5 \t ") == Metric.gauge("abc", 1, timestamp=5)
    assert one(impl, "#abc gauge dt.meta.unit=s  ").unit == "s"


def test_escaped_blank_at_end_of_line_is_part_of_the_value(impl):
    # §6.3 "\ " is an escape, not a trailing blank
    md = one(impl, "#abc gauge dt.meta.displayName=x\\ ")
    assert md.display_name == "x "
    assert one(impl, "#abc gauge dt.meta.displayName=x\\  \t").display_name == "x "
    assert one(impl, "#abc gauge dt.meta.displayName=x\\\\ ").display_name == "x\\"
    assert one(impl, "#abc gauge dt.meta.displayName=\\ \\ ").display_name == "  "
    check(impl, "#abc gauge dt.meta.displayName=x\\\t", E.CONTROL_CHARACTER, 34)


def test_leading_whitespace(impl):
    e = check(impl, " abc 1", E.LEADING_WHITESPACE, 1)
    assert e.reason == "leading whitespace: ' '"
    check(impl, "\tabc 1", E.LEADING_WHITESPACE, 1)
    check(impl, "abc 1\n  #abc gauge dt.meta.unit=s", E.LEADING_WHITESPACE, 1, line=2)


def test_line_numbering_counts_every_line(impl):
    body = "abc 1\n\n#abc gauge dt.meta.unit=s\n \t\r\nabc 2\r\nab 3\nabc 4\n"
    e = check(impl, body, E.METRIC_KEY_LENGTH, 1, line=6)
    assert e.text == "ab 3"
    assert str(e) == "metric key length: 2 not in 3..255 (line 6, column 1)"
    check(impl, "\n" * 9 + "x", E.METRIC_KEY_LENGTH, 1, line=10)
    check(impl, "abc 1\r\n" * 1000 + "abc x", E.INVALID_PAYLOAD, 5, line=1001)


def test_first_invalid_line_wins(impl):
    check(impl, "abc 1\nab 1\ndt.abc 1\n", E.METRIC_KEY_LENGTH, 1, line=2)


def test_decode_error_attributes(impl):
    line = "abc,k=" + "v" * 300 + " 1"
    e = check(impl, "abc 1\n" + line, E.DIMENSION_VALUE_TOO_LONG, 7, line=2)
    assert e.text == line[:100]
    assert isinstance(e, ValueError)
    assert e.code is E.DIMENSION_VALUE_TOO_LONG
    assert repr(e) == "DecodeError(dimension_value_too_long, line=2, column=7)"


# ---------------------------------------------------------------------------
# §3, §7 payload and numbers
# ---------------------------------------------------------------------------

def test_payload_forms(impl):
    assert one(impl, "abc 1") == Metric("abc", (), "gauge", 1.0)
    assert one(impl, "abc gauge,1") == Metric("abc", (), "gauge", 1.0)
    assert one(impl, "abc count,delta=1") == Metric("abc", (), "count", 1.0)
    s = one(impl, "abc gauge,min=1,max=3,sum=4,count=2")
    assert s == Metric("abc", (), "summary", None, 1.0, 3.0, 4.0, 2)
    assert (s.kind, s.value, s.min, s.max, s.sum, s.count) == ("summary", None, 1, 3, 4, 2)
    for rec in (one(impl, "abc 1"), one(impl, "abc count,delta=1")):
        assert rec.min is rec.max is rec.sum is rec.count is rec.timestamp is None
        assert type(rec.value) is float
    assert type(s.min) is float and type(s.count) is int


def test_separators_are_lenient(impl):
    # 1+ SP/HTAB between key/dims, payload and timestamp
    want = Metric.gauge("abc", 1, timestamp=5)
    for line in ("abc 1 5", "abc  1  5", "abc\t1\t5", "abc \t 1\t \t5", "abc\t\t1 5 "):
        assert one(impl, line) == want, line
    assert one(impl, 'abc,k="v"\t\t1') == Metric.gauge("abc", 1, {"k": "v"})


@pytest.mark.parametrize("line,code,column", [
    ("abc", E.MISSING_PAYLOAD, 4),
    ("abc,k=v", E.MISSING_PAYLOAD, 8),
    ("abc   ", E.MISSING_PAYLOAD, 4),
    ("abc gauge", E.MISSING_DATA_POINT, 10),
    ("abc count", E.MISSING_DATA_POINT, 10),
    ("abc gauge 5", E.MISSING_DATA_POINT, 10),
    ("abc gauge,", E.INVALID_NUMBER, 11),
    ("abc gauge, 1", E.INVALID_NUMBER, 11),          # no whitespace inside the payload
    ("abc count,", E.COUNT_REQUIRES_DELTA, 11),
    ("abc count,5", E.COUNT_REQUIRES_DELTA, 11),     # deprecated total counter
    ("abc count,Delta=5", E.COUNT_REQUIRES_DELTA, 11),
    ("abc count,delta=", E.INVALID_NUMBER, 17),
    ("abc count,delta=x", E.INVALID_NUMBER, 17),
    ("abc count,delta= 5", E.INVALID_NUMBER, 17),
    ("abc GAUGE,1", E.INVALID_PAYLOAD, 5),           # keywords are case-sensitive
    ("abc Gauge,1", E.INVALID_PAYLOAD, 5),
    ("abc COUNT,delta=1", E.INVALID_PAYLOAD, 5),
    ("abc gaugex,1", E.INVALID_PAYLOAD, 5),
    ("abc summary,1", E.INVALID_PAYLOAD, 5),
    ("abc foo", E.INVALID_PAYLOAD, 5),
    ("abc e5", E.INVALID_PAYLOAD, 5),
    ("abc nanx", E.INVALID_PAYLOAD, 5),
    ("abc =1", E.INVALID_NUMBER, 5),
    ("abc ,1", E.INVALID_NUMBER, 5),
])
def test_payload_errors(impl, line, code, column):
    check(impl, line, code, column)


def test_invalid_payload_server_message(impl):
    e = check(impl, "abc foo 1", E.INVALID_PAYLOAD, 5)
    assert e.reason == "invalid metric type in message 'abc f'; error at 'f' (index 4)"


@pytest.mark.parametrize("text,value", [
    ("1", 1.0), ("-1", -1.0), ("+1", 1.0), (".5", 0.5), ("5.", 5.0), ("-.5", -0.5),
    ("+5.", 5.0), ("007", 7.0), ("00.50", 0.5), ("1e3", 1000.0), ("1E3", 1000.0),
    ("1e+3", 1000.0), ("1e-3", 0.001), ("1.0E20", 1e20), ("1.0e+20", 1e20),
    ("1e-05", 1e-05), ("1e+21", 1e21), (".5e1", 5.0), ("5.e1", 50.0), ("1e0003", 1000.0),
    ("0", 0.0), ("0.0", 0.0), ("1e-400", 0.0), ("1.7976931348623157e308",
                                                 1.7976931348623157e308),
    ("4.9e-324", 5e-324), ("2.4703282292062328e-324", 5e-324),
    ("9007199254740993", 9007199254740992.0),         # §7.1: stored as a double
    ("0.1", 0.1), ("3.141592653589793238462643383279", math.pi),
    ("17976931348623157" + "0" * 292, 1.7976931348623157e308),
    ("0." + "0" * 400 + "1", 0.0), ("0" * 500 + "1.5", 1.5),
])
def test_number_accepted(impl, text, value):
    for line in ("abc " + text, "abc gauge," + text, "abc count,delta=" + text):
        got = one(impl, line).value
        assert got == value and type(got) is float, (line, got)


def test_number_signed_zero_and_underflow(impl):
    assert math.copysign(1, one(impl, "abc -0").value) == -1
    assert math.copysign(1, one(impl, "abc -0.0e5").value) == -1
    assert math.copysign(1, one(impl, "abc 0").value) == 1
    assert math.copysign(1, one(impl, "abc -1e-400").value) == -1   # underflow to -0
    assert one(impl, "abc 1e-400").value == 0.0


@pytest.mark.parametrize("text,code", [
    ("nan", E.NON_FINITE_NUMBER), ("NaN", E.NON_FINITE_NUMBER), ("-nan", E.NON_FINITE_NUMBER),
    ("+NAN", E.NON_FINITE_NUMBER), ("inf", E.NON_FINITE_NUMBER), ("-inf", E.NON_FINITE_NUMBER),
    ("+Inf", E.NON_FINITE_NUMBER), ("Infinity", E.NON_FINITE_NUMBER),
    ("-Infinity", E.NON_FINITE_NUMBER),
    ("1e400", E.NON_FINITE_NUMBER), ("-1e400", E.NON_FINITE_NUMBER),   # overflow
    ("1e309", E.NON_FINITE_NUMBER), ("1.8e308", E.NON_FINITE_NUMBER),
    ("1.7976931348623159e308", E.NON_FINITE_NUMBER), ("9" * 400, E.NON_FINITE_NUMBER),
    ("0x10", E.INVALID_NUMBER), ("0X1p3", E.INVALID_NUMBER), ("1_000", E.INVALID_NUMBER),
    ("1.2.3", E.INVALID_NUMBER), ("1e", E.INVALID_NUMBER),
    ("1e+", E.INVALID_NUMBER), ("1e1.5", E.INVALID_NUMBER), ("--1", E.INVALID_NUMBER),
    ("+-1", E.INVALID_NUMBER), (".", E.INVALID_NUMBER), ("-", E.INVALID_NUMBER),
    ("+", E.INVALID_NUMBER), ("-.", E.INVALID_NUMBER), (".e1", E.INVALID_NUMBER),
    ("1d", E.INVALID_NUMBER), ("1f", E.INVALID_NUMBER), ("1L", E.INVALID_NUMBER),
    ("١", E.INVALID_NUMBER), ("１", E.INVALID_NUMBER), ("1\u00a0", E.INVALID_NUMBER),
    ("1j", E.INVALID_NUMBER), ("0b1", E.INVALID_NUMBER), ("1e-", E.INVALID_NUMBER),
    ("\\1", E.INVALID_NUMBER), ('"1"', E.INVALID_NUMBER),
])
def test_number_rejected(impl, text, code):
    check(impl, "abc " + text, code, 5)
    check(impl, "abc gauge," + text, code, 11)
    check(impl, "abc count,delta=" + text, code, 17)
    check(impl, "abc gauge,min=%s,max=1,sum=1,count=1" % text, code, 15)
    check(impl, "abc gauge,min=1,max=1,sum=%s,count=1" % text, code, 27)


def test_number_error_messages(impl):
    assert check(impl, "abc nan", E.NON_FINITE_NUMBER, 5).reason == "non-finite number: 'nan'"
    assert check(impl, "abc 1_0 5", E.INVALID_NUMBER, 5).reason == "invalid number: '1_0'"
    e = check(impl, "abc " + "9" * 400, E.NON_FINITE_NUMBER, 5)
    assert e.reason == "non-finite number: '%s...'" % ("9" * 64)
    # a decimal comma splits the payload (§7.1)
    check(impl, "abc 1,5", E.INVALID_NUMBER, 5)
    check(impl, "abc gauge,1,5", E.INVALID_NUMBER, 11)
    check(impl, "abc count,delta=1,5", E.INVALID_NUMBER, 17)
    check(impl, "abc gauge,min=1,5,max=1,sum=1,count=1", E.INVALID_SUMMARY_FIELD, 17)


# ---------------------------------------------------------------------------
# §7.3 summaries
# ---------------------------------------------------------------------------

def test_summary_any_order_and_leading_zeros(impl):
    want = Metric("abc", (), "summary", None, 1.0, 3.0, 4.0, 2)
    assert one(impl, "abc gauge,count=2,sum=4,max=3,min=1") == want
    assert one(impl, "abc gauge,sum=4,min=1,count=2,max=3") == want
    assert one(impl, "abc gauge,min=1,max=3,sum=4,count=002") == want
    assert one(impl, "abc gauge,min=1,max=3,sum=4,count=" + "0" * 30 + "2") == want


@pytest.mark.parametrize("payload,code,column", [
    ("gauge,min=1,max=3,sum=4", E.INCOMPLETE_SUMMARY, 5),
    ("gauge,min=1", E.INCOMPLETE_SUMMARY, 5),
    ("gauge,count=1", E.INCOMPLETE_SUMMARY, 5),
    ("gauge,min=1,min=1,max=3,sum=4,count=2", E.INVALID_SUMMARY_FIELD, 17),
    ("gauge,min=1,max=3,sum=4,count=2,count=2", E.INVALID_SUMMARY_FIELD, 37),
    ("gauge,min=1,max=3,sum=4,count=2,avg=2", E.INVALID_SUMMARY_FIELD, 37),
    ("gauge,min=1,max=3,sum=4,count=2,", E.INVALID_SUMMARY_FIELD, 37),
    ("gauge,min=1,,max=3,sum=4,count=2", E.INVALID_SUMMARY_FIELD, 17),
    ("gauge,min,max=3,sum=4,count=2", E.INVALID_SUMMARY_FIELD, 11),
    ("gauge,MIN=1,max=3,sum=4,count=2", E.INVALID_SUMMARY_FIELD, 11),
    ("gauge,1,min=1,max=3,sum=4,count=2", E.INVALID_SUMMARY_FIELD, 11),
    ("gauge,delta=1", E.INVALID_SUMMARY_FIELD, 11),
    ("gauge,min=1,max=3,sum=4,count=2.0", E.SUMMARY_COUNT_NOT_INTEGER, 35),
    ("gauge,min=1,max=3,sum=4,count=-2", E.SUMMARY_COUNT_NOT_INTEGER, 35),
    ("gauge,min=1,max=3,sum=4,count=+2", E.SUMMARY_COUNT_NOT_INTEGER, 35),
    ("gauge,min=1,max=3,sum=4,count=2e0", E.SUMMARY_COUNT_NOT_INTEGER, 35),
    ("gauge,min=1,max=3,sum=4,count=", E.SUMMARY_COUNT_NOT_INTEGER, 35),
    ("gauge,min=1,max=3,sum=4,count=٢", E.SUMMARY_COUNT_NOT_INTEGER, 35),
    ("gauge,min=0,max=0,sum=0,count=9223372036854775808", E.SUMMARY_COUNT_OVERFLOW, 35),
    ("gauge,min=0,max=0,sum=0,count=99999999999999999999", E.SUMMARY_COUNT_OVERFLOW, 35),
    ("gauge,min=3,max=1,sum=4,count=2", E.SUMMARY_MIN_GT_MAX, 5),
    ("gauge,min=0,max=1,sum=0,count=0", E.SUMMARY_COUNT_ZERO, 5),
    ("gauge,min=0,max=0,sum=1,count=0", E.SUMMARY_COUNT_ZERO, 5),
    ("gauge,min=-1,max=0,sum=0,count=0", E.SUMMARY_COUNT_ZERO, 5),
    ("gauge,min=2,max=3,sum=2,count=2", E.SUMMARY_INCONSISTENT, 5),
    ("gauge,min=1,max=2,sum=10,count=2", E.SUMMARY_INCONSISTENT, 5),
])
def test_summary_errors(impl, payload, code, column):
    check(impl, "abc " + payload, code, column)


def test_summary_count_bounds(impl):
    m = one(impl, "abc gauge,min=0,max=0,sum=0,count=9223372036854775807")
    assert m.count == MAX_INT64 and type(m.count) is int
    assert one(impl, "abc gauge,min=0,max=0,sum=0,count=0").count == 0
    assert one(impl, "abc gauge,min=-0,max=0,sum=-0.0,count=0").count == 0


def test_summary_server_messages(impl):
    # Real server rejection text (micrometer#5037), §7.3
    e = check(impl, "abc gauge,min=35.689672,max=35.689672,sum=35.669104,count=1",
              E.SUMMARY_INCONSISTENT, 5)
    assert e.reason == (
        "inconsistent gauge fields: min <= avg <= max doesn't hold: min: 35.689672, "
        "max: 35.689672, sum: 35.669104, count: 1, avg: 35.669104, tolerance: 0.000001")
    e = check(impl, "abc gauge,min=3,max=1,sum=4,count=2", E.SUMMARY_MIN_GT_MAX, 5)
    assert e.reason == ("inconsistent gauge fields: min <= max doesn't hold: "
                        "min: 3.000000, max: 1.000000")
    e = check(impl, "abc gauge,min=0,max=1.5,sum=0,count=0", E.SUMMARY_COUNT_ZERO, 5)
    assert e.reason == ("inconsistent gauge fields: count == 0 => min, max, sum == 0: "
                        "min: 0.000000, max: 1.500000, sum: 0.000000, count: 0")


def test_summary_tolerance_is_inclusive_absolute_1e6(impl):
    # min - avg <= 1e-6 and avg - max <= 1e-6, exactly at the boundary
    assert one(impl, "abc gauge,min=1e-6,max=1,sum=0,count=1").min == 1e-6
    check(impl, "abc gauge,min=1.0000000000000002e-06,max=1,sum=0,count=1",
          E.SUMMARY_INCONSISTENT, 5)
    assert one(impl, "abc gauge,min=-1,max=-1e-6,sum=0,count=1").max == -1e-6
    check(impl, "abc gauge,min=-1,max=-1.0000000000000002e-06,sum=0,count=1",
          E.SUMMARY_INCONSISTENT, 5)
    eps_ok, eps_bad = 2.0**-20, 2.0**-19    # 9.5e-7 and 1.9e-6
    assert one(impl, "abc gauge,min=0.5,max=0.5,sum=%r,count=1" % (0.5 - eps_ok))
    check(impl, "abc gauge,min=0.5,max=0.5,sum=%r,count=1" % (0.5 - eps_bad),
          E.SUMMARY_INCONSISTENT, 5)
    assert one(impl, "abc gauge,min=0.5,max=0.5,sum=%r,count=2" % (2 * (0.5 + eps_ok)))
    check(impl, "abc gauge,min=0.5,max=0.5,sum=%r,count=2" % (2 * (0.5 + eps_bad)),
          E.SUMMARY_INCONSISTENT, 5)


def test_summary_min_equals_max(impl):
    m = one(impl, "abc gauge,min=2,max=2,sum=6,count=3")
    assert (m.min, m.max, m.sum, m.count) == (2.0, 2.0, 6.0, 3)


# ---------------------------------------------------------------------------
# §7.4 count
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("-5", -5.0), ("0", 0.0), ("+1.5e3", 1500.0),
                                        ("1e-400", 0.0), ("-0", -0.0)])
def test_count_delta_values(impl, text, value):
    m = one(impl, "abc.count count,delta=" + text)
    assert m.kind == "count" and m.value == value


# ---------------------------------------------------------------------------
# §8 timestamps
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("0", 0), ("1", 1), ("1700000000000", NOW),
                                        ("9223372036854775807", MAX_INT64),
                                        ("0000000000000000001", 1)])
def test_timestamp_accepted_without_window(impl, text, value):
    m = one(impl, "abc 1 " + text)
    assert m.timestamp == value and type(m.timestamp) is int
    assert one(impl, "abc count,delta=1 " + text).timestamp == value
    assert one(impl, "abc gauge,min=1,max=1,sum=1,count=1 " + text).timestamp == value


@pytest.mark.parametrize("text", [
    "9223372036854775808", "12345678901234567890", "00000000000000000001", "-1", "+1",
    "1.5", "1e3", "1_0", "0x1", "٣", "1,2", "x", "nan",
])
def test_timestamp_invalid(impl, text):
    e = check(impl, "abc 1 " + text, E.INVALID_TIMESTAMP, 7)
    assert e.reason.startswith("invalid timestamp: ")


def test_unexpected_trailing_content(impl):
    e = check(impl, "abc 1 123 456", E.UNEXPECTED_TRAILING, 11)
    assert e.reason == "unexpected trailing content: '456'"
    check(impl, "abc 1 123\t\tx y", E.UNEXPECTED_TRAILING, 12)


def test_timestamp_window_only_with_now(impl):
    lo, hi = NOW - 3_600_000, NOW + 600_000
    for ts in (lo, hi, NOW):
        assert one(impl, "abc 1 %d" % ts, now_ms=NOW).timestamp == ts    # inclusive
    for ts, line in ((lo - 1, "abc 1 %d"), (hi + 1, "abc 1 %d"),
                     (lo - 1, "abc count,delta=1\t%d"), (0, "abc 1 %d")):
        e = check(impl, line % ts, E.TIMESTAMP_OUT_OF_RANGE, line.index("%") + 1, now_ms=NOW)
        assert e.reason == ("timestamp out of range: '%d' not within now-1h..now+10min" % ts)
        assert one(impl, line % ts).timestamp == ts          # no window without now_ms
    assert one(impl, "abc 1", now_ms=NOW).timestamp is None
    # the window is checked after the grammar
    check(impl, "abc 1 -5", E.INVALID_TIMESTAMP, 7, now_ms=NOW)
    # a trailing token after an out-of-window timestamp: the window wins (first error)
    check(impl, "abc 1 5 x", E.TIMESTAMP_OUT_OF_RANGE, 7, now_ms=NOW)


def test_timestamp_window_summary_and_lines(impl):
    body = "abc gauge,min=1,max=1,sum=1,count=1 %d\nabc 1 %d" % (NOW, NOW + 600_001)
    check(impl, body, E.TIMESTAMP_OUT_OF_RANGE, 7, line=2, now_ms=NOW)


# ---------------------------------------------------------------------------
# §9 metadata
# ---------------------------------------------------------------------------

def test_metadata_valid_forms(impl):
    md = one(impl, "#abc gauge dt.meta.displayName=CPU,dt.meta.description=Load,"
                   "dt.meta.unit=Percent")
    assert md == Metadata("abc", "gauge", (("dt.meta.displayName", "CPU"),
                                           ("dt.meta.description", "Load"),
                                           ("dt.meta.unit", "Percent")))
    assert (md.display_name, md.description, md.unit) == ("CPU", "Load", "Percent")
    assert type(md) is Metadata
    # both spellings, names as written; optional SP after the comma
    md = one(impl, '#a.b count dt.meta.displayname="My name", dt.meta.unit=MiB/s')
    assert md.properties == (("dt.meta.displayname", "My name"), ("dt.meta.unit", "MiB/s"))
    assert (md.key, md.metric_type, md.display_name, md.unit) == ("a.b", "count", "My name",
                                                                 "MiB/s")
    assert md.description is None
    md = one(impl, "#abc\tgauge \t dt.meta.description=a\\ b\\,c")
    assert md.description == "a b,c"
    # repeated properties are kept in order; the conveniences take the first
    md = one(impl, "#abc gauge dt.meta.unit=s,dt.meta.unit=ms")
    assert md.properties == (("dt.meta.unit", "s"), ("dt.meta.unit", "ms")) and md.unit == "s"
    assert one(impl, "#abc gauge dt.meta.displayName=").display_name == ""
    assert one(impl, '#abc gauge dt.meta.displayName=""').display_name == ""
    assert one(impl, '#abc gauge dt.meta.unit="%[]{}/_"').unit == "%[]{}/_"


def test_metadata_lengths(impl):
    assert one(impl, "#abc gauge dt.meta.unit=" + "u" * 63).unit == "u" * 63
    check(impl, "#abc gauge dt.meta.unit=" + "u" * 64, E.INVALID_UNIT, 25)
    for name in ("dt.meta.displayName", "dt.meta.displayname"):
        head = "#abc gauge %s=" % name
        assert one(impl, head + "ü" * 300).display_name == "ü" * 300
        e = check(impl, head + "ü" * 301, E.DISPLAY_NAME_LENGTH, len(head) + 1)
        assert e.reason == "display name length: 301 > 300"
        check(impl, head + "\\," * 301, E.DISPLAY_NAME_LENGTH, len(head) + 1)
    # a description of any length the line allows (65,535 is above the line limit)
    head = "#abc gauge dt.meta.description="
    assert len(one(impl, head + "d" * (50_000 - len(head))).description) == 50_000 - len(head)


@pytest.mark.parametrize("unit", ["", "a.b", "µs", "a-b", "a\\,b", '"a b"', '"a,b"', "a:b"])
def test_metadata_invalid_unit(impl, unit):
    check(impl, "#abc gauge dt.meta.description=x,dt.meta.unit=" + unit, E.INVALID_UNIT, 47)


@pytest.mark.parametrize("line,code,column", [
    ("#abc", E.INVALID_METADATA_LINE, 5),
    ("#abc gauge", E.INVALID_METADATA_LINE, 11),
    ("#abc gauge ", E.INVALID_METADATA_LINE, 11),
    ("#abc summary dt.meta.unit=s", E.INVALID_METADATA_LINE, 6),
    ("#abc GAUGE dt.meta.unit=s", E.INVALID_METADATA_LINE, 6),
    ("#abc gauge,dt.meta.unit=s", E.INVALID_METADATA_LINE, 6),
    ("#abc,k=v gauge dt.meta.unit=s", E.INVALID_METADATA_LINE, 5),
    ("#abc gauge =s", E.INVALID_METADATA_LINE, 12),
    ("#abc gauge dt.meta.unit", E.INVALID_METADATA_LINE, 24),
    ("#abc gauge dt.meta.unit,s", E.INVALID_METADATA_LINE, 24),
    ("#abc gauge dt.meta.unit=s,", E.INVALID_METADATA_LINE, 27),
    ("#abc gauge dt.meta.unit=s,,dt.meta.unit=s", E.INVALID_METADATA_LINE, 27),
    ("#abc gauge dt.meta.unit=s,  dt.meta.unit=s", E.INVALID_METADATA_LINE, 28),
    ("#abc gauge dt.meta.unit=s,\tdt.meta.unit=s", E.INVALID_METADATA_LINE, 27),
    ("#abc gauge dt.meta.unit=s 1700000000000", E.UNEXPECTED_TRAILING, 27),
    ("#abc gauge dt.meta.unit=s dt.meta.unit=s", E.UNEXPECTED_TRAILING, 27),
    ("#abc gauge dt.meta.foo=x", E.UNKNOWN_METADATA_PROPERTY, 12),
    ("#abc gauge dt.meta.DisplayName=x", E.UNKNOWN_METADATA_PROPERTY, 12),
    ("#abc gauge dt.meta.minValue=1", E.UNKNOWN_METADATA_PROPERTY, 12),
    ("#abc gauge k=v", E.UNKNOWN_METADATA_PROPERTY, 12),
    ("#abc gauge dt.meta.unit=s,k=v", E.UNKNOWN_METADATA_PROPERTY, 27),
    ("#dt.abc gauge dt.meta.unit=s", E.RESERVED_PREFIX, 2),
    ("#ab gauge dt.meta.unit=s", E.METRIC_KEY_LENGTH, 2),
    ("#1ab gauge dt.meta.unit=s", E.INVALID_METRIC_KEY, 2),
    ("##abc gauge dt.meta.unit=s", E.INVALID_METRIC_KEY, 2),
    ('#abc gauge dt.meta.displayName="x', E.UNTERMINATED_QUOTED_VALUE, 32),
    ("#abc gauge dt.meta.displayName=a=b", E.UNESCAPED_SPECIAL, 33),
    ("#abc gauge dt.meta.displayName=a\x01", E.CONTROL_CHARACTER, 33),
    ("#abc gauge dt.meta.displayName=a\\", E.DANGLING_ESCAPE, 33),
])
def test_metadata_errors(impl, line, code, column):
    check(impl, line, code, column)


def test_metadata_line_is_never_a_comment(impl):
    # "#" starts a metadata line, there are no comments
    check(impl, "# this is a comment", E.MISSING_METRIC_KEY, 2)
    check(impl, "#comment", E.INVALID_METADATA_LINE, 9)


# ---------------------------------------------------------------------------
# invalid UTF-8 and input types
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [b"\xff", b"\x80", b"\xc3", b"\xc0\xaf", b"\xe2\x82",
                                 b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"])
def test_invalid_utf8_everywhere(impl, bad):
    check(impl, b"abc,k=" + bad + b" 1", E.INVALID_UTF8, 7)
    check(impl, b'abc,k="' + bad + b'" 1', E.INVALID_UTF8, 8)
    check(impl, b"abc,k=\\" + bad + b" 1", E.INVALID_UTF8, 8)
    check(impl, b"abc,k=\xc3\xbc" + bad + b" 1", E.INVALID_UTF8, 8)   # after "ü": code points
    check(impl, b"#abc gauge dt.meta.displayName=" + bad, E.INVALID_UTF8, 32)
    check(impl, b"ab" + bad + b"c 1", E.INVALID_METRIC_KEY, 3)
    check(impl, b"abc,k" + bad + b"=v 1", E.INVALID_DIMENSION_KEY, 6)
    check(impl, b"abc 1" + bad, E.INVALID_NUMBER, 5)
    check(impl, b"abc 1 12" + bad, E.INVALID_TIMESTAMP, 7)
    check(impl, bad, E.INVALID_METRIC_KEY, 1)
    check(impl, b"abc 1\n\n" + bad + b"\nabc 1", E.INVALID_METRIC_KEY, 1, line=3)


def test_invalid_utf8_message_and_text(impl):
    e = check(impl, b"abc,k=\xff 1", E.INVALID_UTF8, 7)
    assert e.reason == "invalid UTF-8: '\\udcff'"
    assert e.text == "abc,k=\udcff 1"


def test_column_counts_code_points(impl):
    check(impl, "abc,k=üü😀,K=v 1", E.INVALID_DIMENSION_KEY, 11)
    check(impl, 'abc,k="漢 字",x=a=b 1', E.UNESCAPED_SPECIAL, 16)


def test_str_with_lone_surrogate(impl):
    check(impl, "abc,k=\ud800 1", E.INVALID_UTF8, 7)
    a = fail(impl, "abc,k=\ud800 1")
    b = fail(impl, b"abc,k=\xed\xa0\x80 1")
    assert (a.code, a.column, a.reason, a.text) == (b.code, b.column, b.reason, b.text)


def test_input_types(impl):
    body = "abc,k=ü 1\n#abc gauge dt.meta.unit=s\n"
    want = impl.decode(body.encode())
    for data in (body, bytearray(body.encode()), memoryview(body.encode())):
        assert impl.decode(data) == want
    with pytest.raises(TypeError):
        impl.decode(123)
    with pytest.raises(TypeError):
        impl.decode(None)


def _outcome(impl, data, **kw):
    try:
        recs = impl.decode(data, **kw)
    except DecodeError as e:
        return ("error", type(e), e.code, e.line, e.column, e.reason, e.text)
    return ("ok", [(type(r), r) for r in recs])


@given(st.one_of(S.bodies().map(lambda t: t[0]), S.mutated_bodies()))
def test_input_types_are_equivalent(impl, body):
    want = _outcome(impl, body)
    assert _outcome(impl, bytearray(body)) == want
    assert _outcome(impl, memoryview(body)) == want
    assert _outcome(impl, memoryview(b"xx" + body + b"yy")[2:-2]) == want
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert _outcome(impl, text) == want


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

@given(S.bodies())
def test_generated_valid_bodies_decode_to_their_records(impl, case):
    body, records = case
    got = impl.decode(body)
    assert got == records
    assert [type(r) for r in got] == [type(r) for r in records]
    for g, r in zip(got, records):
        if type(r) is Metric:
            for a, b in zip(g[3:7], r[3:7]):   # signs of zero survive
                assert (a is None and b is None) or math.copysign(1, a) == math.copysign(1, b)


@given(S.number_texts())
def test_generated_numbers_are_correctly_rounded(impl, case):
    text, value = case
    got = one(impl, "abc " + text).value
    assert got == value and math.copysign(1, got) == math.copysign(1, value)


@given(st.one_of(st.binary(max_size=200), S.mutated_bodies(), S.any_lines()))
def test_arbitrary_bytes_raise_only_decode_error(impl, data):
    try:
        recs = impl.decode(data)
    except DecodeError as e:
        assert e.line >= 1 and e.column >= 1 and isinstance(e.code, ErrorCode)
        assert isinstance(e.reason, str) and e.reason
        assert len(e.text) <= 100
        return
    assert all(type(r) in (Metric, Metadata) for r in recs)


NOWS = [None, NOW, 0, MAX_INT64]


@given(st.one_of(S.any_lines(), S.plain_lines().map(lambda t: t[0].encode()),
                 S.mutated_lines(), S.valid_lines().map(lambda t: t[0].encode())),
       st.sampled_from(NOWS + ["ts"]))
def test_fast_path_agrees(py, data, now):
    """``_fast_line`` is None or exactly the exact scanner's record; ``_fast_check``
    (validate's) is None or agrees on key, kind, values and timestamp.

    tests/test_fastpath.py holds the same property over lines in the fast
    path's own shape (escapes, quotes, unicode, 50 dimensions, long values).
    """
    from dtproto import _codec_py, _scan

    text = _codec_py._text_of(data)
    for raw in text.split("\n"):
        for raw2 in (raw, raw + "\r"):
            n = now
            if n == "ts":  # a "now" right at the line's own timestamp window edges
                tail = raw2.rstrip().rsplit(" ", 1)[-1]
                n = int(tail) + 3_600_000 if tail.isdigit() and len(tail) < 19 else None
            check = _scan._fast_check(raw2, n)
            if check is not None:
                exact = _codec_py._scan_line(raw2, n)  # must not raise
                assert (check[0], check[2:]) == (exact[0], exact[2:])
            fast = _codec_py._fast_line(raw2, n)
            if fast is None:
                continue
            exact = _codec_py._scan_line(raw2, n)  # must not raise
            assert type(fast) is type(exact) is Metric
            assert tuple(fast) == tuple(exact)
            for a, b in zip(fast[3:7], exact[3:7]):
                assert (a is None and b is None) or math.copysign(1, a) == math.copysign(1, b)


def test_fast_path_is_taken_for_ordinary_lines(py):
    from dtproto import _codec_py

    for line in ("abc 1", "abc,k=v 1 5", "abc gauge,1.5", "abc count,delta=-1 5",
                 "abc,k=v,j=w gauge,min=1,max=2,sum=3,count=2 7"):
        assert _codec_py._fast_line(line, None) == _codec_py._scan_line(line, None)
        assert _codec_py._fast_line(line, None) is not None
