"""Right answers under threads and re-entrancy (both implementations).

Anything that allocates can start the garbage collector, and the collector
runs Python code (``gc.callbacks``, finalizers) that may decode, encode, or
release the GIL to another thread that does.  These tests make that happen on
purpose and check every record and every line by counting, not by sampling.
"""

from __future__ import annotations

import collections.abc
import gc
import sys
import threading
import time

import pytest

from dtproto import _codec_py


def _body(tag: str, n: int, first: int = 0) -> bytes:
    """``n`` distinct 3-dimension series; every value names its own line."""
    return "".join(
        "rt.%s.m%d,host=%s-h%d,pod=p%d,zone=z\\,%d gauge,%d 1700000000000\n"
        % (tag, i % 7, tag, i, i, i % 13, i)
        for i in range(first, first + n)
    ).encode()


def _check(records, body: bytes) -> None:
    expected = _codec_py.decode(body)
    assert len(records) == len(expected)
    for got, want in zip(records, expected):
        assert got == want


def _run_threads(work, n: int = 4) -> None:
    """Run ``work(k)`` in ``n`` threads with a tiny switch interval (many GIL handovers)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)


@pytest.fixture(autouse=True)
def _cache_always_used(request, impl):
    """The re-entrancy tests need the head cache on every line: pin it warm."""
    pin = getattr(impl, "_cache_adaptive", None)
    if pin is None or request.node.get_closest_marker("adaptive_cache"):
        yield
        return
    old = pin(False)
    try:
        yield
    finally:
        pin(old)


class _GCHook:
    """Install ``fn`` as a gc callback for the duration of a ``with`` block."""

    def __init__(self, fn, threshold: int = 50) -> None:
        self.fn = fn
        self.threshold = threshold

    def __enter__(self):
        self.old = gc.get_threshold()
        gc.set_threshold(self.threshold, 10, 10)
        gc.callbacks.append(self.fn)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self.fn)
        gc.set_threshold(*self.old)


def test_decode_from_a_gc_callback_during_decode(impl):
    """A decode started from inside a GC callback during another decode.

    The inner decodes refill the head cache with other series while the outer
    one is building objects for a head it has just stored; afterwards every
    series must still decode to its own key and dimensions.
    """
    outer_body = _body("outer", 3000)
    # The Cython core's head cache holds 32,768 heads: 20 x 8,000 series wipe
    # it several times over.  The reference has no such cache; a smaller run
    # checks the same property there.
    size = 8000 if impl.__name__.endswith("_codec_c") else 1500
    for rnd in range(3):
        inner_bodies = [_body("inner%d_%d" % (rnd, k), size) for k in range(20)]
        inner_results: list = []
        busy: list = []

        def hook(phase, info):
            if phase != "start" or busy or len(inner_results) >= len(inner_bodies):
                return
            busy.append(1)
            try:
                body = inner_bodies[len(inner_results)]
                inner_results.append((impl.decode(body), body))
            finally:
                busy.pop()

        with _GCHook(hook, threshold=200):
            outer = impl.decode(outer_body)
        assert len(inner_results) == len(inner_bodies), "the hook did not run"
        _check(outer, outer_body)
        for records, body in inner_results:
            _check(records, body)
        # What the cache holds now must be right: look lines up one by one,
        # the most recently cached series first.
        for body in reversed(inner_bodies[-8:]):
            for line, want in zip(body.splitlines(True), _codec_py.decode(body)):
                assert impl.decode(line) == [want]


def test_iter_decode_from_a_gc_callback(impl):
    outer_body = _body("iouter", 2000)
    inner_body = _body("iinner", 40_000)
    ran = []

    def hook(phase, info):
        if phase == "start" and not ran:
            ran.append(list(impl.iter_decode(iter([inner_body]))))

    with _GCHook(hook, threshold=100):
        outer = list(impl.iter_decode(iter([outer_body[:50_000], outer_body[50_000:]])))
    assert ran
    _check(outer, outer_body)
    _check(ran[0], inner_body)
    _check(impl.decode(inner_body), inner_body)
    _check(impl.decode(outer_body), outer_body)


@pytest.mark.slow
def test_threads_decoding_with_a_gil_releasing_gc_hook(impl):
    """4 threads, 50,000 series, a gc hook that releases the GIL: every record is its own."""
    bodies = [_body("t%d" % k, 12_500, first=k * 12_500) for k in range(4)]
    wanted = [_codec_py.decode(b) for b in bodies]
    failures: list = []
    stop = time.monotonic() + 3.0

    def hook(phase, info):
        time.sleep(0)  # releases the GIL, as logging or I/O in an APM hook would

    def work(k: int) -> None:
        body, want = bodies[k], wanted[k]
        try:
            while time.monotonic() < stop and not failures:
                got = impl.decode(body) if k % 2 else list(impl.iter_decode([body]))
                if got != want:
                    bad = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
                    failures.append((k, got[bad], want[bad]))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append((k, exc))

    with _GCHook(hook, threshold=700):
        _run_threads(work)
    assert not failures, failures[:3]


class _Attrs(collections.abc.Mapping):
    """A Python-level mapping, as OpenTelemetry's attributes are: iterating it runs code."""

    def __init__(self, data: dict) -> None:
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        for k in self._data:
            time.sleep(0)  # let another thread in mid-iteration
            yield k

    def __len__(self) -> int:
        return len(self._data)


def test_shared_encoder_is_line_atomic_across_threads(impl):
    enc = impl.Encoder()
    per_thread = 5_000
    errors: list = []

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                enc.gauge("thr.m%d" % k, i, _Attrs({"thread": "t%d" % k, "i": str(i)}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_threads(work)
    assert not errors, errors[:3]
    body = enc.getvalue()
    assert enc.lines == 4 * per_thread
    report = _codec_py.validate(body)
    assert report.lines_ok == 4 * per_thread and report.lines_invalid == 0
    seen = collections.Counter()
    for rec in _codec_py.decode(body):
        dims = dict(rec.dimensions)
        assert rec.key == "thr.m" + dims["thread"][1:]
        assert rec.value == float(dims["i"])
        seen[dims["thread"]] += 1
    assert seen == {"t%d" % k: per_thread for k in range(4)}


def test_lines_asked_while_threads_write_and_clear(impl):
    """``lines`` (counted when asked) while other threads append and clear:
    it never counts a line that is not in the buffer, never goes back while
    nothing is cleared, and is exact once the writers stop."""
    enc = impl.Encoder()
    per_thread = 3_000
    errors: list = []

    def work(k: int) -> None:
        try:
            if k == 0:  # the reader
                last = 0
                for _ in range(per_thread):
                    n = enc.lines
                    assert last <= n <= enc.getvalue().count(b"\n"), (last, n)
                    last = n
            else:
                for i in range(per_thread):
                    enc.gauge("thr.m", float(i), {"t": str(k), "i": str(i)}, None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_threads(work)
    assert not errors, errors[:3]
    assert enc.lines == enc.getvalue().count(b"\n") == 3 * per_thread

    def clearing(k: int) -> None:
        try:
            for i in range(per_thread):
                if k == 0 and i % 100 == 0:
                    enc.clear()
                elif k == 1:
                    enc.lines
                else:
                    enc.count("thr.c", i, {"t": str(k)})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_threads(clearing)
    assert not errors, errors[:3]
    assert enc.lines == enc.getvalue().count(b"\n")
    enc.clear()
    assert (enc.lines, len(enc)) == (0, 0)


def test_encoder_reentered_from_dimension_iteration(impl):
    """An encode started while another call of the same Encoder is mid-line."""
    enc = impl.Encoder()

    class Reentrant(collections.abc.Mapping):
        def __getitem__(self, key):
            return {"a": "1", "b": "2"}[key]

        def __iter__(self):
            yield "a"
            enc.count("inner.c", 5, {"x": "y"})
            yield "b"

        def __len__(self):
            return 2

    enc.gauge("outer.g", 1.5, Reentrant())
    lines = enc.getvalue().decode().splitlines()
    assert sorted(lines) == ["inner.c,x=y count,delta=5", "outer.g,a=1,b=2 gauge,1.5"]
    assert enc.lines == 2


def test_encoder_with_options_shared_across_threads(impl):
    enc = impl.Encoder(prefix="pfx", default_dimensions={"env": "prod"})
    per_thread = 2_000
    errors: list = []

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                enc.gauge("m%d" % k, i, _Attrs({"thread": "t%d" % k}))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    _run_threads(work)
    assert not errors, errors[:3]
    body = enc.getvalue()
    assert enc.lines == 4 * per_thread
    records = _codec_py.decode(body)
    assert len(records) == 4 * per_thread
    assert collections.Counter(r.key for r in records) == {
        "pfx.m%d" % k: per_thread for k in range(4)}


@pytest.mark.adaptive_cache
def test_head_cache_goes_cold_and_warm_with_identical_results(impl):
    """The Cython core stops using its head cache when series never repeat and
    starts again when they do; the records are the same either way.

    While cold, one line in 128 (on average) is looked up and stored: 500
    series are stored, hit and warm the cache again within ~60,000 lines
    (decode) to ~90,000 (validate, alone; here decode has stored them).
    """
    for round_ in range(2):
        for unique in (True, False):
            # never-seen series, or 500 series over and over
            if unique:
                body = _body("u%d" % round_, 40_000)
                _check(impl.decode(body), body)
            else:
                few = _body("r%d" % round_, 500)
                body = few * 300
                assert impl.decode(body) == _codec_py.decode(few) * 300
            assert impl.validate(body).lines_ok == body.count(b"\n")
            if hasattr(impl, "_cache_state"):
                state = impl._cache_state()
                assert state == (("cold", "cold") if unique else ("warm", "warm")), state


@pytest.mark.adaptive_cache
@pytest.mark.slow
def test_cold_cache_reentered_from_gc_callbacks_and_threads(impl):
    """With the head cache cold (series never repeat), the sampled lines (one
    in ~128, looked up, stored, with the next line's lookup prepared ahead)
    are re-entered from a gc callback that decodes and validates other
    never-seen series, and run from 4 threads at once; every record and every
    count is the reference's."""
    bodies = [_body("cold%d" % k, 10_000) for k in range(4)]
    wanted = [_codec_py.decode(b) for b in bodies]
    reports = [_codec_py.validate(b) for b in bodies]
    warm_up = _body("coldwarmup", 20_000)
    impl.decode(warm_up)
    impl.validate(warm_up)
    if hasattr(impl, "_cache_state"):
        assert impl._cache_state() == ("cold", "cold")
    inner = [_body("coldinner%d" % k, 600) for k in range(40)]
    done: list = []
    failures: list = []
    busy = threading.local()

    def hook(phase, info):
        if phase != "start" or getattr(busy, "on", False) or len(done) >= len(inner):
            return
        busy.on = True
        try:
            body = inner[len(done) % len(inner)]
            done.append((impl.decode(body), impl.validate(body).lines_ok, body))
        finally:
            busy.on = False
        time.sleep(0)  # and let another thread in

    def work(k: int) -> None:
        try:
            for _ in range(2):
                if impl.decode(bodies[k]) != wanted[k]:
                    failures.append(("decode", k))
                got = impl.validate(bodies[k])
                if (got.lines_ok, got.lines_invalid, got.warnings_total) != (
                        reports[k].lines_ok, reports[k].lines_invalid,
                        reports[k].warnings_total):
                    failures.append(("validate", k))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append((k, exc))

    with _GCHook(hook, threshold=200):
        _run_threads(work)
    assert not failures, failures[:3]
    assert done, "the hook did not run"
    for records, ok, body in done:
        _check(records, body)
        assert ok == 600


@pytest.mark.adaptive_cache
def test_validate_goes_cold_when_the_heads_it_hits_outgrow_the_cpu_caches(impl):
    """validate also leaves its head cache when the heads it hits are too many
    (more than 12,288 distinct in 32,768 warm lookups, two windows running),
    even at a high hit rate, and sits out 262,144 lines before trying again;
    reports stay exact."""
    if not hasattr(impl, "_cache_state"):
        pytest.skip("the pure-Python implementation has no adaptive head cache")
    big = _body("live", 20_000)
    small = _body("few", 500) * 100  # 50,000 lines of 500 series
    ref = _codec_py.validate(big)
    old = impl._cache_adaptive(False)  # pinned warm: store the 20,000 heads
    try:
        impl._cache_clear()  # else heads of earlier tests share the sets
        impl.validate(big)
        impl._cache_adaptive(True)  # adaptive again, from a fresh window
        assert impl._cache_state()[0] == "warm"
        report = impl.validate(big * 6)  # mostly hits, on ~18,000 distinct heads
        assert impl._cache_state()[0] == "cold"
        assert (report.lines_ok, report.warnings_total) == (6 * ref.lines_ok,
                                                            6 * ref.warnings_total)
        impl.validate(small)  # a small live set, but still backing off
        assert impl._cache_state()[0] == "cold"
        impl.validate(small * 6)  # the backoff (262,144 lines) is over
        assert impl._cache_state()[0] == "warm"
        assert impl.validate(small).lines_ok == 50_000
    finally:
        impl._cache_adaptive(old)


@pytest.mark.adaptive_cache
def test_validate_stays_warm_when_one_set_of_series_follows_another(impl):
    """A window of lookups that spans a switch from one set of 8,000 series to
    another for good sees 16,000 distinct heads; one such window is not
    enough to leave the cache (the live set is judged on two windows running)."""
    if not hasattr(impl, "_cache_state"):
        pytest.skip("the pure-Python implementation has no adaptive head cache")
    first, second = _body("setA", 8_000), _body("setB", 8_000)
    old = impl._cache_adaptive(False)
    try:
        impl._cache_clear()
        impl.validate(first + second)  # pinned warm: both sets stored
        impl._cache_adaptive(True)
        for body in (first * 3, second * 12, first * 12):
            assert impl.validate(body).lines_ok == len(body) // len(first) * 8_000
            assert impl._cache_state()[0] == "warm"
    finally:
        impl._cache_adaptive(old)
