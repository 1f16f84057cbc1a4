"""Parity: same public surface in both implementations, truthful IMPLEMENTATION,
strict environment switches, and model objects that behave like values
(pickling, copy, repr, ==, hash) whichever implementation built them.
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given

import dtproto
import strategies as S
from dtproto import DecodeError, EncodeError, ErrorCode, Metadata, Metric, _impl

from conftest import extensions_expected

ENCODER_METHODS = ["gauge", "count", "summary", "metadata", "add", "getvalue", "clear"]


@pytest.fixture(scope="module")
def c_module(cython_module):
    return cython_module


def _params(fn):
    """A signature without annotations: names, kinds and defaults.

    The compiled module carries no annotations (its stub ``_codec_c.pyi`` does),
    so only the calling convention is compared.
    """
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


_EMBEDDED_SIGNATURE = re.compile(r"\A[\w.]+\(.*?\)(?: -> [^\n]*)?\n\n", re.S)


def _doc(obj) -> str:
    """The docstring, cleaned, without a signature line Cython embeds first."""
    doc = obj.__doc__ or ""
    doc = _EMBEDDED_SIGNATURE.sub("", doc, count=1)
    return inspect.cleandoc(doc)


# ---------------------------------------------------------------------------
# public surface
# ---------------------------------------------------------------------------

def test_same_public_names(py, c_module):
    assert list(c_module.__all__) == list(py.__all__)
    for name in py.__all__:
        assert hasattr(c_module, name), name


def test_same_signatures_and_docs(py, c_module):
    for name in py.__all__:
        a, b = getattr(py, name), getattr(c_module, name)
        assert _doc(a) == _doc(b), name
        assert _doc(a), name
        if not inspect.isclass(a):
            assert _params(a) == _params(b), name
    for name in ENCODER_METHODS:
        a, b = getattr(py.Encoder, name), getattr(c_module.Encoder, name)
        assert _params(a) == _params(b), name
        assert _doc(a) == _doc(b) and _doc(a), name
    for name in ("lines", "__len__"):
        assert _doc(getattr(py.Encoder, name)) == _doc(getattr(c_module.Encoder, name)), name


def test_encoder_construction(impl):
    enc = impl.Encoder()
    assert len(enc) == 0
    with pytest.raises(TypeError):
        impl.Encoder(1)


def test_keyword_only_arguments(impl):
    with pytest.raises(TypeError):
        impl.decode(b"abc 1", 5)
    with pytest.raises(TypeError):
        impl.validate(b"abc 1", 5)
    assert impl.decode(data=b"abc 1", now_ms=None) == [Metric.gauge("abc", 1)]


def test_implementation_is_truthful(request):
    names = {"python": "dtproto._codec_py", "cython": "dtproto._codec_c"}
    assert dtproto.IMPLEMENTATION in names
    assert _impl.codec.__name__ == names[dtproto.IMPLEMENTATION]
    for fn in ("decode", "iter_decode", "validate", "encode", "Encoder", "classic_key"):
        assert getattr(dtproto, fn) is getattr(_impl.codec, fn)
    if _impl.env_flag("DTPROTO_NO_EXTENSIONS"):
        assert dtproto.IMPLEMENTATION == "python"
    elif extensions_expected(request.config):
        assert dtproto.IMPLEMENTATION == "cython", _impl.extension_error()
    assert set(_impl.available_implementations()) == (
        {"python", "cython"} if dtproto.IMPLEMENTATION == "cython" else {"python"})


@pytest.mark.parametrize("value,expected", [
    ("1", True), ("true", True), ("TRUE", True), ("True", True), ("yes", True), ("on", True),
    ("ON", True), (" 1 ", True), ("0", False), ("false", False), ("no", False), ("off", False),
    ("", False), ("2", False), ("y", False), ("enable", False), ("1.0", False), ("-1", False),
])
def test_env_flag_is_strict(monkeypatch, value, expected):
    monkeypatch.setenv("DTPROTO_TEST_FLAG", value)
    assert _impl.env_flag("DTPROTO_TEST_FLAG") is expected


def test_env_flag_unset(monkeypatch):
    monkeypatch.delenv("DTPROTO_TEST_FLAG", raising=False)
    assert _impl.env_flag("DTPROTO_TEST_FLAG") is False


def _import_in_subprocess(env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DTPROTO_NO_EXTENSIONS", "DTPROTO_REQUIRE_EXTENSIONS")}
    env.update(env_extra)
    root = Path(dtproto.__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", "import dtproto; print(dtproto.IMPLEMENTATION)"],
        env=env, cwd=str(root), capture_output=True, text=True, timeout=60)


def test_env_switches_at_import():
    has_c = "cython" in _impl.available_implementations() or (
        _impl.env_flag("DTPROTO_NO_EXTENSIONS") and _c_importable())
    default = "cython" if has_c else "python"
    for value, want in (("0", default), ("false", default), ("", default), ("1", "python"),
                        ("yes", "python")):
        p = _import_in_subprocess({"DTPROTO_NO_EXTENSIONS": value})
        assert p.returncode == 0 and p.stdout.strip() == want, (value, p.stderr)
    p = _import_in_subprocess({"DTPROTO_NO_EXTENSIONS": "1", "DTPROTO_REQUIRE_EXTENSIONS": "1"})
    assert p.returncode != 0 and "ImportError" in p.stderr
    p = _import_in_subprocess({"DTPROTO_NO_EXTENSIONS": "1", "DTPROTO_REQUIRE_EXTENSIONS": "0"})
    assert p.returncode == 0 and p.stdout.strip() == "python"


def _c_importable() -> bool:
    try:
        import dtproto._codec_c  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------
# model objects
# ---------------------------------------------------------------------------

def _check_value_semantics(rec):
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(rec, proto))
        assert back == rec and type(back) is type(rec) and hash(back) == hash(rec)
    assert copy.copy(rec) == rec and type(copy.copy(rec)) is type(rec)
    assert copy.deepcopy(rec) == rec and type(copy.deepcopy(rec)) is type(rec)
    back = eval(repr(rec), {"Metric": Metric, "Metadata": Metadata})
    assert back == rec and repr(back) == repr(rec)
    assert rec == tuple.__new__(type(rec), tuple(rec))
    assert rec != tuple(rec) and tuple(rec) != rec
    assert len({rec, copy.copy(rec)}) == 1


def test_model_value_semantics_by_hand():
    recs = [Metric.gauge("abc", 1, {"k": "v"}), Metric.delta("abc", -1.5, timestamp=5),
            Metric.summary_of("abc", 1, 3, 4, 2, [("k", "1"), ("k", "2")], 7),
            Metadata("abc", "count", [("dt.meta.unit", "s")]), Metadata("abc")]
    for rec in recs:
        _check_value_semantics(rec)
    g = Metric.gauge("abc", 1)
    assert g == Metric("abc", (), "gauge", 1.0) == Metric("abc", [], "gauge", 1)
    assert g != Metric.delta("abc", 1) and g != Metadata("abc")
    assert repr(g) == "Metric(key='abc', kind='gauge', value=1.0)"
    assert repr(recs[2]) == ("Metric(key='abc', dimensions=(('k', '1'), ('k', '2')), "
                             "kind='summary', min=1.0, max=3.0, sum=4.0, count=2, timestamp=7)")
    assert repr(recs[3]) == ("Metadata(key='abc', metric_type='count', "
                             "properties=(('dt.meta.unit', 's'),))")
    with pytest.raises(ValueError):
        Metric("abc", (), "histogram", 1)
    with pytest.raises(ValueError):
        Metadata("abc", "summary")


@given(S.bodies())
def test_decoded_records_have_value_semantics(impl, case):
    body, records = case
    got = impl.decode(body)
    for g, r in zip(got, records):
        assert type(g) is type(r)
        assert hash(g) == hash(r)
        _check_value_semantics(g)


def test_decoded_records_are_model_types(impl):
    recs = impl.decode(b"abc,k=v 1 5\n#abc gauge dt.meta.unit=s\nabc count,delta=2\n"
                       b"abc gauge,min=1,max=1,sum=1,count=1")
    assert [type(r) for r in recs] == [Metric, Metadata, Metric, Metric]
    m = recs[0]
    assert type(m.dimensions) is tuple and type(m.dimensions[0]) is tuple
    assert (type(m.key), type(m.kind), type(m.value), type(m.timestamp)) == (str, str, float, int)
    assert type(recs[1].properties) is tuple


def test_errors_pickle(impl):
    with pytest.raises(DecodeError) as info:
        impl.decode(b"abc 1\nab 1")
    e = info.value
    back = pickle.loads(pickle.dumps(e))
    assert (type(back), back.code, back.line, back.column, back.reason, back.text, str(back)) == (
        type(e), e.code, e.line, e.column, e.reason, e.text, str(e))
    with pytest.raises(EncodeError) as info:
        impl.encode([Metric.gauge("abc", 1), Metric.gauge("ab", 1)])
    e = info.value
    back = pickle.loads(pickle.dumps(e))
    assert (type(back), back.field, back.code, back.record, back.message, str(back)) == (
        type(e), e.field, e.code, e.record, e.message, str(e))
    assert e.code is ErrorCode.METRIC_KEY_LENGTH
