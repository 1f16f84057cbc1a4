"""ValidationReport: merging the reports of consecutive blocks, and the API response.

The property that matters: validating a body in pieces cut at line boundaries
and merging the pieces' reports in order gives exactly the report of
validating the body whole, with ``max_errors``/``max_warnings`` caps too, over
both implementations.  ``dtproto validate`` (segments and ``--jobs``) and the
Dask integration rely on it.
"""

from __future__ import annotations

import inspect
import pickle
import random
from typing import List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dtproto
from dtproto import _constants as K
from dtproto.errors import ErrorCode
from dtproto.report import LineError, LineWarning, ValidationReport

import strategies as S

NOW = 1717243200000

# Lines of every kind a report counts: valid, invalid (several codes), blank,
# renamed keys (warnings), timestamps in seconds (dtproto's hint), metadata.
KINDS = [
    b"a.b 1",
    b"a.b,x=y 2 %d" % NOW,
    b"a.b count,delta=1",          # warning: changed to a.b.count
    b"x.count 5",                  # warning: changed to x.count.gauge
    b"a.b 1 1717243200",           # warning: a timestamp in seconds (and out of the window)
    b"1ab 1",                      # invalid metric key
    b"ab 1",                       # key too short
    b"a.b count,1",                # count without delta=
    b"a.b gauge,min=3,max=1,sum=2,count=2",
    b"#a.b gauge dt.meta.unit=s",
    b"",
    b"  \t",
    b"\x0b",                       # not blank: invalid
]


def _cut(body: bytes, cuts: List[int]) -> List[bytes]:
    """``body`` cut after the newlines at the given indexes (sorted, deduplicated)."""
    ends = [i + 1 for i, c in enumerate(body) if c == 0x0A]
    points = sorted({ends[k % len(ends)] for k in cuts}) if ends else []
    pieces, start = [], 0
    for p in points:
        pieces.append(body[start:p])
        start = p
    pieces.append(body[start:])
    return pieces


def _whole_and_merged(impl, body: bytes, pieces: List[bytes], max_errors: Optional[int],
                      max_warnings: Optional[int], now_ms: Optional[int] = NOW):
    whole = impl.validate(body, now_ms=now_ms, max_errors=max_errors, max_warnings=max_warnings)
    parts = [impl.validate(p, now_ms=now_ms, max_errors=max_errors, max_warnings=max_warnings)
             for p in pieces]
    merged = ValidationReport()
    for part in parts:
        merged = merged.merge(part, max_errors=max_errors, max_warnings=max_warnings)
    combined = ValidationReport.combine(parts, max_errors=max_errors, max_warnings=max_warnings)
    return whole, merged, combined


caps = st.one_of(st.none(), st.integers(0, 6))


@pytest.mark.hypothesis
@given(lines=st.lists(st.sampled_from(KINDS) | S.mutated_lines(), max_size=40),
       cuts=st.lists(st.integers(0, 200), max_size=6), crlf=st.booleans(),
       final_newline=st.booleans(), max_errors=caps, max_warnings=caps)
def test_merged_pieces_equal_the_whole(impl, lines, cuts, crlf, final_newline, max_errors,
                                       max_warnings):
    nl = b"\r\n" if crlf else b"\n"
    body = nl.join(lines) + (nl if final_newline and lines else b"")
    pieces = _cut(body, cuts)
    assert b"".join(pieces) == body
    whole, merged, combined = _whole_and_merged(impl, body, pieces, max_errors, max_warnings)
    assert merged == whole
    assert combined == whole
    assert merged.to_response() == whole.to_response()


@pytest.mark.hypothesis
@given(body=st.one_of(S.mutated_bodies(), S.bodies().map(lambda t: t[0])),
       cuts=st.lists(st.integers(0, 50), max_size=4), max_errors=caps, max_warnings=caps)
def test_merged_pieces_equal_the_whole_on_generated_bodies(impl, body, cuts, max_errors,
                                                           max_warnings):
    whole, merged, combined = _whole_and_merged(impl, body, _cut(body, cuts), max_errors,
                                                max_warnings, now_ms=None)
    assert merged == whole and combined == whole


def test_merge_with_the_defaults_keeps_validates_default_caps(impl):
    # 12,000 errors and warnings per piece: more than validate() lists by default.
    piece = b"ab 1\na.b count,delta=1\n" * 12_000
    parts = [impl.validate(piece), impl.validate(piece)]
    assert len(parts[0].errors) == K.VALIDATE_MAX_LISTED
    merged = parts[0].merge(parts[1])
    assert merged == impl.validate(piece * 2)
    assert len(merged.errors) == len(merged.warnings) == K.VALIDATE_MAX_LISTED
    assert merged.lines_invalid == merged.warnings_total == 24_000
    assert merged.error_counts == {ErrorCode.METRIC_KEY_LENGTH: 24_000}


def test_merge_defaults_are_validates_defaults(py):
    params = inspect.signature(py.validate).parameters
    merge = inspect.signature(ValidationReport.merge).parameters
    for name in ("max_errors", "max_warnings"):
        assert merge[name].default == params[name].default == K.VALIDATE_MAX_LISTED


def test_merge_shifts_line_numbers_and_adds_counts(impl):
    a = impl.validate(b"a.b 1\n1ab 1\n\n", now_ms=NOW)
    b = impl.validate(b"a.b count,delta=1\nab 1\n", now_ms=NOW)
    m = a.merge(b)
    assert (m.lines_ok, m.lines_invalid, m.lines_total, m.warnings_total) == (2, 2, 5, 1)
    assert [e.line for e in m.errors] == [2, 5]
    assert [w.line for w in m.warnings] == [4]
    assert m.error_counts == {ErrorCode.INVALID_METRIC_KEY: 1, ErrorCode.METRIC_KEY_LENGTH: 1}
    # an explicit offset: b's line 1 is input line 101
    m = a.merge(b, 100)
    assert [e.line for e in m.errors] == [2, 102] and m.lines_total == 102
    assert [w.line for w in m.warnings] == [101]


def test_merge_changes_neither_report(impl):
    a = impl.validate(b"1ab 1\n")
    b = impl.validate(b"ab 1\nx.count 1\n")
    before = (pickle.dumps(a), pickle.dumps(b))
    m = a.merge(b)
    assert (pickle.dumps(a), pickle.dumps(b)) == before
    assert m.errors is not a.errors and m.error_counts is not a.error_counts
    m.errors.clear()
    assert len(a.errors) == 1


def test_merge_caps_the_lists_but_not_the_counts():
    a, b = ValidationReport(), ValidationReport()
    for r, n in ((a, 3), (b, 4)):
        r.lines_invalid = r.lines_total = n
        r.error_counts = {ErrorCode.INVALID_METRIC_KEY: n}
        r.errors = [LineError(i, 1, ErrorCode.INVALID_METRIC_KEY, "m") for i in range(1, n + 1)]
        r.warnings_total = n
        r.warnings = [LineWarning(i, "w") for i in range(1, n + 1)]
    m = a.merge(b, max_errors=5, max_warnings=2)
    assert [e.line for e in m.errors] == [1, 2, 3, 4, 5]
    assert [w.line for w in m.warnings] == [1, 2]
    assert (m.lines_invalid, m.warnings_total, m.lines_total) == (7, 7, 7)
    assert m.error_counts == {ErrorCode.INVALID_METRIC_KEY: 7}
    m = a.merge(b, max_errors=0, max_warnings=None)
    assert m.errors == [] and len(m.warnings) == 7
    # a cap below what the first report already lists cuts that list too
    assert [e.line for e in a.merge(b, max_errors=2).errors] == [1, 2]


def test_combine_extends_one_report_in_place():
    """combine() copies each entry once: it appends every block to one
    report (merge() building a new report per block copied the kept entries
    again at each one, quadratic with no cap), and gives what merge gives."""
    blocks = [dtproto.validate(b"a.b 1\n1ab 1\nx.count 1\n", max_errors=None)
              for _ in range(50)]
    total = ValidationReport()
    errors, warnings = total.errors, total.warnings
    for block in blocks:
        total._extend(block, None, None, None)
        assert total.errors is errors and total.warnings is warnings
    chained = ValidationReport()
    for block in blocks:
        chained = chained.merge(block, max_errors=None, max_warnings=None)
    assert total == chained == ValidationReport.combine(blocks, max_errors=None,
                                                        max_warnings=None)
    assert [e.line for e in total.errors] == list(range(2, 150, 3))
    assert [w.line for w in total.warnings] == list(range(3, 151, 3))
    assert all(len(b.errors) == 1 and b.errors[0].line == 2 for b in blocks)


def test_merge_caps_each_kind_of_warning(impl):
    """merge() keeps the first N warnings of each kind, as validate() does,
    also when a report kept more (validated with a larger cap), after a
    pickle round trip and after ``warnings`` was set."""
    hint, rename = b"a.b 1 5\n", b"x.y count,delta=1\n"
    a = impl.validate(hint * 3 + rename, max_warnings=None)
    b = impl.validate(rename * 3 + hint, max_warnings=None)
    for left in (a, pickle.loads(pickle.dumps(a))):
        m = left.merge(b, max_warnings=2)
        assert [(w.line, w.code[0]) for w in m.warnings] == [(1, "t"), (2, "t"), (4, "c"),
                                                             (5, "c")]
        assert m == impl.validate(hint * 3 + rename * 4 + hint, max_warnings=2)
    c = ValidationReport()
    c.warnings = list(a.warnings)             # 3 hints, 1 rename
    c.lines_total = 4
    m = c.merge(b, max_warnings=3)
    assert [w.line for w in m.warnings] == [1, 2, 3, 4, 5, 6]
    assert m._warning_room(3) == (0, 0) and m._warning_room(None) == (None, None)
    assert c._warning_room(5) == (4, 2)          # 1 rename and 3 hints kept


def test_a_refused_extend_changes_nothing():
    r = dtproto.validate(b"a.b 1\n1ab 1\n")
    before = pickle.dumps(r)
    for args in ((r, 1, None, None), (r, None, -1, None), (r, None, None, -2),
                 ({"lines_ok": 1}, None, None, None), (r, 2.0, None, None)):
        with pytest.raises((TypeError, ValueError)):
            r._extend(*args)  # type: ignore[arg-type]
        assert pickle.dumps(r) == before


def test_merging_empty_reports():
    empty = ValidationReport()
    r = dtproto.validate(b"a.b 1\n1ab 1\n")
    assert empty.merge(r) == r
    assert r.merge(empty) == r
    assert ValidationReport.combine([]) == empty
    assert ValidationReport.combine([r]) == r
    assert empty.merge(empty).to_response()["error"]["message"] == "empty request"


def test_merge_refuses_overlapping_blocks_and_other_types():
    r = dtproto.validate(b"a.b 1\na.b 2\n")
    with pytest.raises(ValueError, match="consecutive blocks"):
        r.merge(r, 1)
    with pytest.raises(TypeError):
        r.merge({"lines_ok": 1})        # type: ignore[arg-type]
    with pytest.raises(TypeError):
        r.merge(r, 2.0)                 # type: ignore[arg-type]
    with pytest.raises(ValueError):
        r.merge(r, max_errors=-1)


def test_reports_pickle_for_worker_processes(impl):
    r = impl.validate(b"a.b 1\n1ab 1\nx.count 1\n")
    assert type(r) is ValidationReport
    assert pickle.loads(pickle.dumps(r)) == r


def test_merge_in_a_random_block_order_of_a_tree_reduction(impl):
    """Merging is associative: (a+b)+c == a+(b+c), as a tree reduction (Dask) needs,
    given offsets that say where each block starts."""
    rng = random.Random(7)
    lines = [rng.choice(KINDS) for _ in range(300)]
    body = b"\n".join(lines) + b"\n"
    pieces = _cut(body, [rng.randrange(300) for _ in range(8)])
    parts = [impl.validate(p, now_ms=NOW, max_errors=7, max_warnings=3) for p in pieces]
    starts, n = [], 0
    for p in parts:
        starts.append(n)
        n += p.lines_total

    def tree(lo: int, hi: int) -> ValidationReport:
        if hi - lo == 1:
            return parts[lo]
        mid = (lo + hi) // 2
        left, right = tree(lo, mid), tree(mid, hi)
        return left.merge(right, starts[mid] - starts[lo], max_errors=7, max_warnings=3)

    assert tree(0, len(parts)) == impl.validate(body, now_ms=NOW, max_errors=7, max_warnings=3)


# --------------------------------------------------------------------------- to_response


def test_to_response_uses_the_vocabulary_constants():
    r = dtproto.validate(b"ab 1\n" * 11 + b"a.b count,delta=1\n")
    doc = r.to_response()
    assert doc["error"]["message"] == K.RESPONSE_FIRST_ERRORS % 10 == "First 10 errors reported"
    assert doc["warnings"]["message"] == K.RESPONSE_FIRST_WARNINGS % 1
    assert K.RESPONSE_WARNINGS_KEY in doc["warnings"]
    assert dtproto.validate(b"").to_response()["error"]["message"] == K.RESPONSE_EMPTY_REQUEST


def test_to_response_cap_and_shapes():
    r = dtproto.validate(b"ab 1\n" * 7 + b"a.b 1\na.b count,delta=1\n")
    doc = r.to_response(max_reported_errors=5)
    assert doc["error"]["message"] == "First 5 errors reported"
    assert [e["line"] for e in doc["error"]["invalidLines"]] == [1, 2, 3, 4, 5]
    doc = r.to_response(max_reported_errors=None)
    assert doc["error"]["message"] == "7 invalid lines"
    assert len(doc["error"]["invalidLines"]) == 7
    doc = r.to_response(warnings_key="warningLines")
    assert list(doc["warnings"]) == ["message", "warningLines"]
    doc = r.to_response(oneagent=True)
    assert list(doc) == ["error", "linesValid", "linesInvalid"]
    assert (doc["linesValid"], doc["linesInvalid"]) == (2, 7)
    assert doc["error"]["message"] == "7 invalid lines"
    with pytest.raises(ValueError):
        r.to_response(warnings_key="warnings")


# --------------------------------------------------------------------------- byte ranges


@pytest.mark.hypothesis
@given(lines=st.lists(st.sampled_from(KINDS) | st.binary(min_size=0, max_size=30).map(
           lambda b: b.replace(b"\n", b"")), max_size=60),
       parts=st.integers(1, 9), min_bytes=st.integers(1, 40), final_newline=st.booleans())
def test_line_ranges_validated_apart_and_merged_equal_the_whole(tmp_path_factory, lines, parts,
                                                                min_bytes, final_newline):
    """What ``dtproto validate --jobs`` (and a Dask reduction) does: cut a file
    at line boundaries, validate each range on its own, merge in order."""
    from dtproto._ranges import line_ranges

    body = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    path = tmp_path_factory.mktemp("ranges") / "body.txt"
    path.write_bytes(body)
    ranges = line_ranges(path, parts, min_bytes=min_bytes)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(body)
    assert all(a < b for a, b in ranges) or ranges == [(0, 0)]
    assert all(x[1] == y[0] for x, y in zip(ranges, ranges[1:]))
    assert len(ranges) <= max(1, min(parts, len(body) // min_bytes))
    assert all(body[b - 1:b] == b"\n" for _, b in ranges[:-1])
    with open(path, "rb") as f:
        assert line_ranges(f, parts, min_bytes=min_bytes) == ranges
    reports = [dtproto.validate(body[a:b], now_ms=NOW, max_errors=4, max_warnings=2)
               for a, b in ranges]
    assert ValidationReport.combine(reports, max_errors=4, max_warnings=2) == \
        dtproto.validate(body, now_ms=NOW, max_errors=4, max_warnings=2)


def test_line_ranges_edges(tmp_path):
    from dtproto._ranges import line_ranges

    f = tmp_path / "x.txt"
    f.write_bytes(b"")
    assert line_ranges(f, 4) == [(0, 0)]
    f.write_bytes(b"x" * 1000)                        # one line, no newline: one range
    assert line_ranges(str(f), 4) == [(0, 1000)]
    f.write_bytes(b"a.b 1\n" * 100)                   # 600 bytes
    assert line_ranges(f, 3) == [(0, 204), (204, 402), (402, 600)]
    assert line_ranges(f, 3, min_bytes=300) == [(0, 306), (306, 600)]
    assert line_ranges(f, 3, min_bytes=10_000) == [(0, 600)]
    with pytest.raises(ValueError):
        line_ranges(f, 0)


# --------------------------------------------------------------------------- vocabulary


# The modules that speak the ingest API's vocabulary and take it from
# _constants (the sender's modules are to follow).
VOCABULARY_USERS = ("report.py", "server.py", "cli/*.py")


def _code_strings(tree):
    """String and int constants of a module, docstrings left out."""
    import ast

    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            yield node


def test_the_ingest_vocabulary_is_spelled_only_in_constants():
    import ast
    import pathlib

    exact = {K.RESPONSE_EMPTY_REQUEST, K.RESPONSE_INVALID_LINES, K.RESPONSE_FIRST_ERRORS,
             K.RESPONSE_FIRST_WARNINGS, K.RESPONSE_WARNINGS_KEY, K.RESPONSE_WARNINGS_KEY_SEEN,
             K.TOKEN_SCHEME}
    inside = (K.INGEST_SCOPE, K.INGEST_PATH, K.ONEAGENT_PATH)
    root = pathlib.Path(dtproto.__file__).resolve().parent
    offenders = []
    paths = sorted(p for pattern in VOCABULARY_USERS for p in root.glob(pattern))
    assert len(paths) >= 7
    for path in paths:
        rel = path.relative_to(root).as_posix()
        for node in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
            v = node.value
            if (isinstance(v, str) and (v in exact or any(w in v for w in inside))) or \
                    (type(v) is int and v == K.ONEAGENT_PORT):
                offenders.append("%s:%d: %r" % (rel, node.lineno, v))
    assert not offenders, "use the constants of dtproto._constants:\n" + "\n".join(offenders)
