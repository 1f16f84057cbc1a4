"""The C core's direct path for ``Encoder.gauge``/``count`` at its edges.

The Cython ``Encoder`` writes the common call (no options; an exact float, or
an int a double holds exactly; an exact dict or None; an exact int timestamp
or None) straight into its buffer and hands anything else, and any point that
is not plainly valid, to the general path.  Each case here sits on one side of
one of those edges; the C core must give the reference's bytes, error and
buffer state on both sides.  Then the buffer's own edges (growth mid-line,
after ``getvalue()``), and threads and a garbage-collector hook that encode
into the same encoder while it writes, counted line by line.
"""

from __future__ import annotations

import gc
import sys
import threading
import warnings

import pytest

from dtproto import EncodeError, _codec_py, _impl
from dtproto._constants import MAX_LINE_CHARS, SECONDS_TIMESTAMP_BELOW
from stress_fuzz import FloatSub, IntSub, StrSub

if _impl.env_flag("DTPROTO_NO_EXTENSIONS"):
    pytest.skip("DTPROTO_NO_EXTENSIONS is set: only the pure-Python implementation",
                allow_module_level=True)


@pytest.fixture(scope="module")
def cmod(cython_module):
    return cython_module


def _outcome(enc, method, args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            getattr(enc, method)(*args)
            out = ("ok",)
        except EncodeError as e:
            out = ("error", e.field, e.code, e.message, str(e))
        except Exception as e:  # a crash in either is a bug: compared all the same
            out = ("crash", type(e), str(e))
    return out + (tuple((w.category, str(w.message)) for w in caught),
                  enc.getvalue(), enc.lines, len(enc))


def _alike(cmod, calls, prefill=b""):
    """Every call on a fresh reference and C encoder (after ``prefill`` lines):
    same outcome, warnings, bytes and line count after each."""
    encs = [_codec_py.Encoder(), cmod.Encoder()]
    for enc in encs:
        for i in range(prefill.count(b"\n")):
            enc.gauge("pre.fill", float(i))
    for method, args in calls:
        got = [_outcome(enc, method, args) for enc in encs]
        assert got[0] == got[1], (method, args)
    return got[0]


BIG = 2**53
VALUES = [0, 1, -1, BIG - 1, BIG, BIG + 1, -BIG, -BIG - 1, 2**63 - 1, 2**63, -2**63, 10**400,
          True, False, IntSub(5), 0.0, -0.0, 1.5, 1e300, -1e-300, 5e-324, float("inf"),
          float("nan"), FloatSub(2.5), "1", None]
TIMESTAMPS = [None, 0, -1, SECONDS_TIMESTAMP_BELOW - 1, SECONDS_TIMESTAMP_BELOW,
              1_700_000_000_000, 2**63 - 1, 2**63, True, IntSub(1_700_000_000_000), 1.7e12]


@pytest.mark.parametrize("method", ["gauge", "count"])
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_on_both_sides_of_the_direct_path(cmod, method, value):
    _alike(cmod, [(method, ("v.k", value, {"a": "b"}, 1_700_000_000_000)),
                  (method, ("v.k", value))])


@pytest.mark.parametrize("method", ["gauge", "count"])
@pytest.mark.parametrize("ts", TIMESTAMPS, ids=repr)
def test_timestamps_on_both_sides_of_the_direct_path(cmod, method, ts):
    _alike(cmod, [(method, ("t.k", 2.0, {"a": "b"}, ts)), (method, ("t.k", 2, None, ts))])


DIMS = [
    {}, {"a": ""}, {"a": "b c,d=e\\f\"g"}, {"a": "naïve café", "b": "日本"},
    {"a": "x" * 255}, {"a": "x" * 256}, {"a": "é" * 255}, {"a": "\ud800"}, {"\ud800": "v"},
    {"Bad Key": "v"}, {"a": 1}, {1: "v"}, {"a": None}, {StrSub("k"): StrSub("v")},
    {"a": "line\nfeed"}, {"a": "\x00"}, {"dt.entity.host": "HOST-1"},
    {"k%d" % i: "v" for i in range(50)}, {"k%d" % i: "v" for i in range(51)},
]


@pytest.mark.parametrize("method", ["gauge", "count"])
@pytest.mark.parametrize("dims", DIMS, ids=lambda d: repr(d)[:40])
def test_dimensions_on_both_sides_of_the_direct_path(cmod, method, dims):
    _alike(cmod, [(method, ("d.k", 3.25, dims, 1_700_000_000_000)), (method, ("d.k", 3.25, dims))])


@pytest.mark.parametrize("key", ["ab", "a" * 3, "a" * 255, "a" * 256, "a..b", "é.b", "\ud800ab",
                                 StrSub("sub.key"), 5, None, "dt.x"], ids=repr)
def test_keys_on_both_sides_of_the_direct_path(cmod, key):
    _alike(cmod, [("gauge", (key, 1.0, {"a": "b"})), ("count", (key, 1, None, 1_700_000_000_000))])


@pytest.mark.parametrize("char", ["x", " ", "\\", "é", "日", "\U0001f600"], ids=ascii)
def test_the_longest_lines_measured_in_bytes_and_in_characters(cmod, char):
    """The direct path gives a line of more than 50,000 bytes to the general
    path, which counts characters: 50 values of 255 four-byte characters are
    51,000 bytes and ~13,000 characters, a valid line.  (With at most 50
    dimensions of 255 characters and a key of 255, no line the Encoder is
    given reaches 50,000 characters.)"""
    dims = {"k%02d" % i: char * 255 for i in range(50)}
    out = _alike(cmod, [("gauge", ("len.k", 1.0, dims, 1_700_000_000_000)),
                        ("count", ("a" * 255, 2, dims))])
    assert out[0] == "ok" and out[-2] == 2
    assert MAX_LINE_CHARS < 50 * 255 * 4 < 2 * MAX_LINE_CHARS


def test_a_line_that_grows_the_buffer_mid_line(cmod):
    """The buffer is nearly full when a long, escaped line starts: it grows
    between two dimensions, and after getvalue() handed the block out."""
    dims = {"k%02d" % i: " " * 255 for i in range(50)}  # every byte escaped
    for fill in (0, 1, 65536 // 20 - 40, 65536 // 20):
        calls = [("gauge", ("g.k", float(i))) for i in range(fill)]
        calls += [("gauge", ("g.k", 1.0, dims, 1_700_000_000_000))] * 3
        encs = [_codec_py.Encoder(), cmod.Encoder()]
        for j, (method, args) in enumerate(calls):
            for enc in encs:
                getattr(enc, method)(*args)
                if j == len(calls) - 2:
                    enc.getvalue()   # the C core's block becomes these bytes
        assert encs[0].getvalue() == encs[1].getvalue()
        assert encs[0].lines == encs[1].lines == fill + 3


def test_a_failed_direct_call_leaves_the_buffer_as_it_was(cmod):
    """A point refused late (a bad value after the key and dimensions were
    written past the end of the lines) leaves no byte behind."""
    enc = cmod.Encoder()
    enc.gauge("ok.k", 1.0, {"a": "b"})
    before = enc.getvalue()
    for args in [("ok.k", float("nan"), {"a": "b" * 200}), ("ok.k", 1.0, {"a": "b", "B K": "v"}),
                 ("ok.k", 1.0, {"a": "x" * 255 * 4}), ("ok.k", 1.0, {"a": "b"}, 2**63)]:
        with pytest.raises(EncodeError):
            enc.gauge(*args)
        assert enc.getvalue() == before and enc.lines == 1
    enc.count("ok.k", 2, {"a": "b"})
    assert enc.getvalue() == before + b"ok.k,a=b count,delta=2\n"


def test_threads_and_a_gc_hook_share_one_encoder(cmod):
    """Four threads write plain-dict points through the direct path while a
    garbage-collector callback writes into the same encoder from whichever
    thread allocated: every line whole, each counted exactly once."""
    enc = cmod.Encoder()
    per_thread = 4_000
    hooked = [0]
    errors: list = []

    def hook(phase, info):
        if phase == "start":
            hooked[0] += 1
            enc.gauge("gc.hook", float(hooked[0]), {"n": str(hooked[0])}, 1_700_000_000_000)

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                # fresh dicts and strings: allocations that start collections
                dims = {"thread": "t%d" % k, "i": str(i), "pad": "p q" * (i % 5)}
                if i % 2:
                    enc.gauge("thr.m%d" % k, float(i), dims, 1_700_000_000_000 + i)
                else:
                    enc.count("thr.m%d" % k, i, dims)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    old_switch = sys.getswitchinterval()
    old_threshold = gc.get_threshold()
    sys.setswitchinterval(1e-5)
    gc.set_threshold(20, 5, 5)
    gc.callbacks.append(hook)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.callbacks.remove(hook)
        gc.set_threshold(*old_threshold)
        sys.setswitchinterval(old_switch)
    assert not errors, errors[:3]
    assert hooked[0] > 0
    body = enc.getvalue()
    assert enc.lines == 4 * per_thread + hooked[0]
    records = _codec_py.decode(body)
    assert len(records) == enc.lines
    seen: dict = {}
    hook_values = set()
    for rec in records:
        dims = dict(rec.dimensions)
        if rec.key == "gc.hook":
            assert float(dims["n"]) == rec.value
            hook_values.add(rec.value)
            continue
        k = dims["thread"]
        assert rec.key == "thr.m" + k[1:]
        i = int(dims["i"])
        assert rec.value == float(i) and dims["pad"] == "p q" * (i % 5)
        assert rec.kind == ("gauge" if i % 2 else "count")
        assert rec.timestamp == (1_700_000_000_000 + i if i % 2 else None)
        seen[(k, i)] = seen.get((k, i), 0) + 1
    assert hook_values == {float(n) for n in range(1, hooked[0] + 1)}
    assert len(seen) == 4 * per_thread and set(seen.values()) == {1}


def _legacy_str(n: int) -> str:
    """A str made by the deprecated PyUnicode_FromUnicode (before 3.12): not
    "ready" until something reads it, and until then its length reads 0."""
    ctypes = pytest.importorskip("ctypes")
    api = ctypes.pythonapi
    if sys.version_info >= (3, 12) or not hasattr(api, "PyUnicode_FromUnicode"):
        pytest.skip("no legacy (not ready) str on Python 3.12+")
    api.PyUnicode_FromUnicode.restype = ctypes.py_object
    api.PyUnicode_FromUnicode.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    api.PyUnicode_AsUnicode.restype = ctypes.c_void_p
    api.PyUnicode_AsUnicode.argtypes = [ctypes.py_object]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        s = api.PyUnicode_FromUnicode(None, n)
    chars = ctypes.sizeof(ctypes.c_wchar)
    (ctypes.c_uint32 * n if chars == 4 else ctypes.c_uint16 * n).from_address(
        api.PyUnicode_AsUnicode(s))[:] = [97] * n
    return s


@pytest.mark.parametrize("n", [255, 256, 300])
@pytest.mark.parametrize("form", ["dict", "pairs"])
def test_a_str_not_yet_ready_is_measured_after_it_is_read(cmod, n, form):
    """Found by review: the C core read the length of a legacy str before
    reading its characters, got 0, and wrote a 300-character value."""
    got = []
    for mod in (_codec_py, cmod):
        value = _legacy_str(n)   # a fresh one each: reading it makes it ready
        dims = {"k": value} if form == "dict" else [("k", value)]
        got.append(_outcome(mod.Encoder(), "gauge", ("a.b", 1.0, dims)))
    assert got[0] == got[1]
    assert got[0][0] == ("ok" if n <= 255 else "error")
