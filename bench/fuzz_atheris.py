"""Coverage-guided differential fuzzing of the Cython core with atheris.

Every input drives both implementations, the Cython core and the pure-Python
reference, and they must agree exactly (records with their types and the sign
of zero, errors with code/line/column/text, validation reports, bytes out,
Encoder state); a disagreement or an undocumented exception is a crash, and
libFuzzer writes the input to ``crash-<sha1>``.  The comparison rules are
those of ``tests/stress_fuzz.py`` (imported from there), the input generation
is coverage-guided: atheris instruments the pure-Python reference (and, with a
clang build, libFuzzer sees the C core's edges too), so inputs that reach new
branches of the reference are kept and mutated further.

An input is a 3-byte header and a payload::

    byte 0  what to do: 0-1 body, 2 Encoder calls, 3 body with a long line
    byte 1  options: input type (bytes, bytearray, memoryview, str), now_ms,
            max_errors/max_warnings, iter_decode errors= (raise/skip)
    byte 2  chunking: the seed of the chunk split and of the read size
    rest    the body (modes 0, 1, 3) or the bytes the Encoder calls are
            drawn from (mode 2)

Body inputs (decode, validate, the columnar ``decode_columns`` against its
contract ``dtproto.arrow._decode_columns_py`` when pyarrow is installed, with
every line accounted for, iter_decode over a chunk split and over a file
object with short reads, validate over chunks; then, when the body decodes,
the round trip decode -> encode -> decode: both encoders write the same
bytes, ``Encoder.add`` of each record writes them too, and both decoders give
back the same records).  Mode 3 first expands the payload into a line around
the 50,000-character and 200,001-byte limits: the bytes between the first two
``\\x01`` are repeated.

Encoder inputs: the payload is read as a stream of choices (one byte per
decision, zeros when it runs out): Encoder options (prefix, default and static
dimensions, normalize), then up to 12 calls of gauge/count/summary/metadata/add
with keys, dimension keys and values taken from the payload's own text or from
tricky pools, dimensions as dict, tuple, list, iterator, an items()-only
object or a ``collections.abc.Mapping``, then ``encode`` of records.  What the
encoder wrote must decode, identically in both implementations.

Usage (under the sanitizer build, see README "Fuzzing")::

    python bench/fuzz_atheris.py CORPUS_DIR [libFuzzer flags, e.g. -runs=1000000]
    python bench/fuzz_atheris.py crash-...          # replay one input
    python bench/fuzz_atheris.py --make-seeds DIR   # write the seed corpus and stop

An empty (or new) CORPUS_DIR is first filled with the generated seed corpus:
``dtproto._corpus`` lines (plain, escape-heavy, with invalid lines) and
hand-written edge cases (escapes, quoted values, 50 dimensions, 50,000-char
lines, summaries, metadata lines, CRLF, invalid UTF-8).  ``-max_len`` defaults
to 60000 so that the literal 50,000-character ASCII seeds load whole (the
50,000 x "é" seed, 99,983 bytes, is cut anyway); long runs do better with
``-max_len=4096`` (see README "Fuzzing": mode 3 still builds lines around the
limits from short inputs).

Needs atheris (``pip install atheris``: wheels for CPython on Linux x86_64)
and the Cython core; without them it exits with status 2 and says why.
"""

from __future__ import annotations

import collections.abc
import hashlib
import os
import random
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

try:
    import atheris
except ImportError as exc:  # pragma: no cover - depends on the environment
    print("fuzz_atheris: atheris is not installed (%s): pip install atheris" % exc,
          file=sys.stderr)
    sys.exit(2)

# Coverage of the pure-Python reference: its branches are a coverage signal of
# their own, and the only one when the C core is not built with
# -fsanitize=fuzzer-no-link.  --no-python-coverage leaves it out (faster).
PYTHON_COVERAGE = "--no-python-coverage" not in sys.argv
if not PYTHON_COVERAGE:
    sys.argv.remove("--no-python-coverage")
    import dtproto  # noqa: F401
    from dtproto import _impl
    from dtproto._corpus import make_corpus
else:
    with atheris.instrument_imports(include=["dtproto"]):
        import dtproto  # noqa: F401
        from dtproto import _impl
        from dtproto._corpus import make_corpus
        try:
            import dtproto.arrow  # noqa: F401  (instrumented here, imported below)
        except ImportError:
            pass

try:  # the columnar decoder's contract (needs pyarrow: pip install '.[arrow]')
    from dtproto.arrow import _decode_columns_py, _record_lines
except ImportError:
    _decode_columns_py = None  # type: ignore[assignment]

import stress_fuzz as sf  # noqa: E402  (the comparison rules and value pools)

MAX_LINE_CHARS = sf.MAX_LINE_CHARS
MAX_LINE_BYTES = sf.MAX_LINE_BYTES
SECONDS_TIMESTAMP_BELOW = sf.SECONDS_TIMESTAMP_BELOW
NOWS = [None, 1_700_000_000_000, 0, 1_717_243_200_000]
MAX_ERRORS = [None, 0, 1, 3, 10_000]
MAX_WARNINGS = [None, 0, 2, 10_000]
LONG_TARGETS = [MAX_LINE_CHARS - 1, MAX_LINE_CHARS, MAX_LINE_CHARS + 1, MAX_LINE_CHARS + 2,
                MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1, MAX_LINE_CHARS - 40]

_impls = _impl.available_implementations()
if "cython" not in _impls:
    print("fuzz_atheris: the Cython core is not importable: %s" % _impl.extension_error(),
          file=sys.stderr)
    sys.exit(2)
PY = _impls["python"]
C = _impls["cython"]


class Divergence(AssertionError):
    """The implementations disagree (or one raised an undocumented exception)."""


def both(what: str, fn: Any) -> Any:
    a = fn(PY)
    b = fn(C)
    if a != b:
        where, x, y = sf.first_difference(a, b)
        raise Divergence("%s differs at %s\n  python: %s\n  cython: %s" % (
            what, where or "top", sf.short(x), sf.short(y)))
    return a


# --------------------------------------------------------------------------- choices

class ByteChoices:
    """The subset of random.Random that tests/stress_fuzz.py's generators use,
    drawing every decision from the fuzz bytes (one byte per small decision, so
    that a mutated byte changes one decision), zeros once they run out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos < len(self.data):
            b = self.data[self.pos]
            self.pos += 1
            return b
        self.pos += 1
        return 0

    def exhausted(self) -> bool:
        return self.pos >= len(self.data)

    def random(self) -> float:
        return self.byte() / 256.0

    def getrandbits(self, k: int) -> int:
        v = 0
        for _ in range((k + 7) // 8):
            v = (v << 8) | self.byte()
        return v & ((1 << k) - 1)

    def randrange(self, start: int, stop: Optional[int] = None) -> int:
        if stop is None:
            start, stop = 0, start
        n = stop - start
        if n <= 0:
            raise ValueError("empty range for randrange")
        if n <= 256:
            return start + self.byte() % n
        nbytes = min(8, (n.bit_length() + 7) // 8)
        return start + self.getrandbits(8 * nbytes) % n

    def randint(self, a: int, b: int) -> int:
        return self.randrange(a, b + 1)

    def choice(self, seq: Any) -> Any:
        return seq[self.randrange(len(seq))]

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * (self.getrandbits(16) / 65536.0)

    def shuffle(self, x: List[Any]) -> None:
        for i in range(len(x) - 1, 0, -1):
            j = self.randrange(i + 1)
            x[i], x[j] = x[j], x[i]

    def text(self, limit: int = 40) -> str:
        """A string from the fuzz bytes: mostly ASCII (the bytes as they are),
        sometimes a code point beyond (surrogates and astral ones included)."""
        n = self.byte() % (limit + 1)
        out = []
        for _ in range(n):
            b = self.byte()
            if b < 0xF0:
                out.append(chr(b) if b < 0x80 else chr(0x80 + (b - 0x80) * 7))
            else:
                cp = ((b & 0x0F) << 16 | self.byte() << 8 | self.byte()) % 0x110000
                out.append(chr(cp))
        return "".join(out)


class FrozenMap(collections.abc.Mapping):  # type: ignore[type-arg]
    """A Mapping that is not a dict (only the abstract methods)."""

    def __init__(self, pairs: List[Tuple[Any, Any]]) -> None:
        self._d = dict(pairs)

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return "FrozenMap(%r)" % (self._d,)


def a_key(r: ByteChoices) -> Any:
    k = r.byte() % 4
    if k == 0:
        return r.text(60)
    if k == 1:
        return r.choice(sf.KEYS) + r.text(4)
    return r.choice(sf.KEYS)


def a_dim_key(r: ByteChoices) -> Any:
    return r.text(20) if r.byte() % 3 == 0 else r.choice(sf.DIM_KEYS)


def a_dim_value(r: ByteChoices) -> Any:
    k = r.byte() % 4
    if k == 0:
        return r.text(80)
    if k == 1:
        return r.choice(sf.DIM_VALUES) + r.text(6)
    return r.choice(sf.DIM_VALUES)


def dimensions(r: ByteChoices) -> Any:
    form = r.byte() % 8
    if form == 7:   # the stress fuzzer's shapes (Items, iterators, odd pairs, wild objects)
        return sf.no_inner_iterators(sf.random_dimensions(r))
    n = r.choice([0, 1, 2, 3, 4, 5, 49, 50, 51])
    pairs = [(a_dim_key(r), a_dim_value(r)) for _ in range(n)]
    if form == 0:
        return dict(pairs)
    if form == 1:
        return FrozenMap(pairs)
    if form == 2:
        return pairs
    if form == 3:
        return tuple(pairs)
    if form == 4:
        return iter(pairs)
    if form == 5:
        return sf.Items(pairs)
    return None


def encoder_options(r: ByteChoices) -> Dict[str, Any]:
    if r.byte() % 3:
        return {}
    opts: Dict[str, Any] = {}
    if r.byte() & 1:
        opts["prefix"] = r.text(12) if r.byte() & 1 else r.choice(
            ["app", "app.", "my.prefix", "", "1x", "a b", "dt", "é", None, 5, "x" * 250])
    for name in ("default_dimensions", "static_dimensions"):
        if r.byte() % 3 == 0:
            opts[name] = sf.reiterable(dimensions(r))
    if r.byte() & 1:
        opts["normalize"] = bool(r.byte() & 1)
    return opts


def encoder_call(r: ByteChoices) -> Tuple[str, List[Any], Dict[str, Any]]:
    """Like stress_fuzz.encoder_call, with keys and dimensions from the fuzz bytes."""
    name = r.choice(list(sf.ENCODER_METHODS))
    params = sf.ENCODER_METHODS[name]
    values: List[Any] = []
    for param in params:
        if r.byte() < 20:
            v = sf.random_object(r)
        elif param == "key":
            v = a_key(r)
        elif param in ("value", "delta", "min", "max", "sum"):
            v = r.choice(sf.FLOATS) if r.byte() < 200 else r.choice(sf.INTS)
        elif param == "count":
            v = r.choice([1, 2, 3, 0, -1, 2**63 - 1, 2**63])
        elif param == "dimensions":
            v = dimensions(r)
        elif param == "timestamp":
            v = r.choice([None, None, 1_717_243_200_000, 0, -1, 2**63 - 1, 2**63, 1.5, True,
                          SECONDS_TIMESTAMP_BELOW - 1, SECONDS_TIMESTAMP_BELOW])
        elif param == "metric_type":
            v = r.choice(["gauge", "count", "summary"])
        elif param in ("display_name", "description", "unit"):
            v = r.text(30) if r.byte() % 4 == 0 else r.choice(
                [None, None, "My name", "MilliSecond", "a,b", "x" * 300, "x" * 301, "%", "\ud800"])
        else:
            v = sf.random_record(r)
        values.append(v)
    if name == "summary" and all(type(v) is float for v in values[1:4]) and r.byte() & 1:
        mn = values[1]
        if mn == mn:
            values[2] = mn
            values[3] = mn * (values[4] if type(values[4]) is int and 0 < values[4] < 5 else 1)
    npos = r.randint(0, len(values))
    args = values[:npos]
    kwargs = {p: v for p, v in zip(params[npos:], values[npos:])
              if p in sf.REQUIRED[name] or r.byte() & 3}
    return name, args, kwargs


# --------------------------------------------------------------------------- cases

def body_case(opts: int, chunk_seed: int, body: bytes) -> None:
    form = opts & 3
    now = NOWS[(opts >> 2) & 3]
    max_errors = MAX_ERRORS[((opts >> 4) & 3) + (1 if opts >= 0xF0 else 0)]
    max_warnings = MAX_WARNINGS[(opts >> 6) & 3]
    errors = "skip" if opts & 0x20 else "raise"
    if form == 1:
        data: Any = bytearray(body)
    elif form == 2:
        data = memoryview(b"xx" + body + b"yy")[2:-2]
    elif form == 3:
        try:
            data = body.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            data = body.decode("utf-8", "replace")
    else:
        data = body

    def dec(m: Any) -> Any:
        o = sf.outcome(lambda: m.decode(data, now_ms=now), "decode")
        return (o[0], [sf.value_key(x) for x in o[1]]) if o[0] == "ok" else o
    decoded = both("decode", dec)

    def val(m: Any) -> Any:
        o = sf.outcome(lambda: m.validate(data, now_ms=now, max_errors=max_errors,
                                          max_warnings=max_warnings), "validate")
        return (o[0], sf.report_key(o[1])) if o[0] == "ok" else o
    report = both("validate", val)
    # decode and validate agree with each other (in the reference; both sides are equal)
    if (decoded[0] == "ok") != (report[0] == "ok" and report[1][2] == 0):
        raise Divergence("decode %s but validate %s" % (sf.short(decoded, 300),
                                                        sf.short(report, 300)))

    columns_case(body, chunk_seed, now, errors == "skip")
    r = random.Random(chunk_seed)
    if len(body) > 20_000 and chunk_seed & 3:
        return   # a long line: decode and validate only, most of the time
    chunks = sf.chunkings(r, body)
    # one-byte reads of a 200 kB line cost minutes under the sanitizers: short
    # reads for short bodies only
    read_size = r.choice([1, 3, 64, 1 << 20] if len(body) <= 4096 else [4096, 1 << 20])
    both("iter_decode(chunks, errors=%r)" % errors,
         lambda m: sf.stream_key(lambda: m.iter_decode(iter(chunks), now_ms=now, errors=errors)))
    both("iter_decode(file)",
         lambda m: sf.stream_key(lambda: m.iter_decode(sf.SmallReads(body, read_size),
                                                       now_ms=now)))
    both("validate(chunks)",
         lambda m: (lambda o: (o[0], sf.report_key(o[1])) if o[0] == "ok" else o)(
             sf.outcome(lambda: m.validate(iter(chunks), now_ms=now, max_errors=max_errors,
                                           max_warnings=max_warnings), "validate")))
    if decoded[0] == "ok" and decoded[1]:
        round_trip(PY.decode(data, now_ms=now), now)


def columns_key(cols: Any) -> Tuple[Any, ...]:
    """A decode_columns result as plain values: the keys by row (the table's
    order and duplicates are free), floats with their sign and NaN."""
    keys = list(cols["keys"])
    rows = cols["rows"]
    plain = [cols["rows"], cols["lines"], [keys[i] for i in memoryview(cols["key_index"])]]
    for name in ("line", "kind", "count", "timestamp", "dim_offsets"):
        plain.append(list(memoryview(cols[name])))
    for name in ("value", "min", "max", "sum"):
        plain.append([sf.value_key(x) for x in memoryview(cols[name])])
    for name in ("dim_keys", "dim_values"):
        v = cols[name]
        plain.append(v.to_pylist() if hasattr(v, "to_pylist") else list(v))
    plain.append([(n, sf.value_key(m)) for n, m in cols["metadata"]])
    plain.append([tuple(e) for e in cols["skipped"]])
    if len(plain[3]) != rows or len(plain[7]) != rows + 1:
        raise Divergence("decode_columns: %d rows but %d lines, %d offsets" % (
            rows, len(plain[3]), len(plain[7])))
    return tuple(plain)


def columns_case(body: bytes, chunk_seed: int, now: Optional[int], skip: bool) -> None:
    """The Cython core's decode_columns against the reference's contract
    (dtproto.arrow._decode_columns_py over the pure-Python codec): the same
    columns, or the same DecodeError; every line accounted for."""
    if _decode_columns_py is None:
        return
    first = 1 if chunk_seed & 1 else 1 + chunk_seed * 1_000_003
    raw = bytes(body)
    want = sf.outcome(lambda: _decode_columns_py(raw, first, now, skip, _codec=PY),
                      "decode_columns (reference)")
    got = sf.outcome(lambda: C.decode_columns(raw, first, now, skip), "decode_columns")
    want, got = [(o[0], columns_key(o[1])) if o[0] == "ok" else o for o in (want, got)]
    if got != want:
        where, x, y = sf.first_difference(want, got)
        raise Divergence("decode_columns differs at %s\n  python: %s\n  cython: %s" % (
            where or "top", sf.short(x), sf.short(y)))
    if want[0] == "ok":
        rows, metadata, skipped = want[1][0], want[1][-2], want[1][-1]
        filled = len(_record_lines(raw, first))  # the lines that are not blank
        if rows + len(metadata) + len(skipped) != filled:
            raise Divergence("decode_columns: %d rows + %d metadata + %d skipped != %d lines"
                             " that are not blank" % (rows, len(metadata), len(skipped), filled))


def round_trip(recs: List[Any], now: Optional[int]) -> None:
    """decode -> encode -> decode: the same bytes from both encoders (encode and
    Encoder.add) and the same records back from both decoders."""
    out = both("encode(decoded)", lambda m: sf.outcome(lambda: m.encode(recs), "encode"))

    def add_all(m: Any) -> Any:
        enc = m.Encoder()
        for rec in recs:
            enc.add(rec)
        return enc.getvalue(), enc.lines, len(enc)
    added = both("Encoder.add(decoded)", lambda m: sf.outcome(lambda: add_all(m), "Encoder.add"))
    if out[0] != "ok":
        return   # e.g. a key the decoder accepts and the encoder refuses: both agree
    if added[0] != "ok" or added[1][0] != out[1]:
        raise Divergence("encode() and Encoder.add() disagree: %s vs %s" % (
            sf.short(out, 300), sf.short(added, 300)))
    again = both("decode(encode(decoded))", lambda m: sf.dec_plain(m, out[1]))
    if again != ("ok", [sf.value_key(x) for x in recs]):
        raise Divergence("decode(encode(records)) is not the records\n  records: %s\n"
                         "  encoded: %s\n  decoded: %s" % (sf.short(recs), sf.short(out[1]),
                                                           sf.short(again)))


def encoder_case(payload: bytes) -> None:
    def run(m: Any) -> Any:
        r = ByteChoices(payload)   # the same choices (fresh objects) for each implementation
        options = encoder_options(r)
        made = sf.outcome(lambda: m.Encoder(**options), "Encoder(**options)",
                          sf.ALLOWED + (ValueError,))
        if made[0] != "ok":
            return [(sf.scrub("Encoder(%s)" % sf.short(options, 500)), made)], b""
        enc = made[1]
        trace: List[Any] = []
        for _ in range(1 + r.byte() % 12):
            if r.exhausted():
                break
            name, args, kwargs = encoder_call(r)
            call = sf.describe_call(name, args, kwargs)
            o = sf.outcome(lambda: getattr(enc, name)(*args, **kwargs), "Encoder." + name)
            trace.append((call, o, enc.lines, len(enc)))
            if r.byte() == 255:
                enc.clear()
        body = enc.getvalue()
        recs = [sf.random_record(r) for _ in range(r.byte() % 4)]
        call = sf.scrub("encode(%s)" % sf.short(recs, 2000))
        trace.append((call, sf.outcome(lambda: m.encode(recs), "encode")))
        return trace, body

    a = run(PY)
    b = run(C)
    if a != b:
        ta, tb = a[0], b[0]
        i = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        raise Divergence("Encoder calls differ at call %d\n  call:   %s\n  python: %s\n"
                         "  cython: %s\n  bytes python: %s\n  bytes cython: %s" % (
                             i, ta[i][0] if i < len(ta) else None,
                             sf.short(ta[i][1:] if i < len(ta) else None),
                             sf.short(tb[i][1:] if i < len(tb) else None),
                             sf.short(a[1], 300), sf.short(b[1], 300)))
    trace, body = a
    blobs = [body]
    if trace[-1][1][0] == "ok":
        blobs.append(trace[-1][1][1])
    for blob in blobs:
        d = both("decode(encoded)", lambda m: sf.dec_plain(m, blob))
        if d[0] != "ok":
            raise Divergence("the Encoder wrote a line the decoder rejects: %s\n%r" % (
                sf.short(d), blob[:300]))


def long_line(opts: int, payload: bytes) -> bytes:
    """The payload's first line grown to around a length limit: the bytes between
    the first two \\x01 (or the last byte before the first space) repeated."""
    target = LONG_TARGETS[opts & 7]
    first, nl, rest = payload.partition(b"\n")
    parts = first.split(b"\x01", 2)
    if len(parts) == 3:
        head, unit, tail = parts
    else:
        sp = first.find(b" ")
        if sp <= 0:
            head, unit, tail = first, b"a", b""
        else:
            head, unit, tail = first[:sp - 1], first[sp - 1:sp], first[sp:]
    unit = unit[:8] or b"a"
    if target > MAX_LINE_BYTES - 100:
        size = len(unit)
    else:   # the code point limit counts code points (an invalid byte is one)
        size = max(1, len(unit.decode("utf-8", "surrogateescape")))
    count = max(0, target - len(head) - len(tail)) // size
    return head + unit * count + tail + nl + rest


def TestOneInput(data: bytes) -> None:
    if len(data) < 3:
        return
    mode, opts, chunk_seed = data[0] & 3, data[1], data[2]
    payload = data[3:]
    if mode == 2:
        encoder_case(payload)
    elif mode == 3:
        body_case(opts, chunk_seed, long_line(opts, payload))
    else:
        body_case(opts, chunk_seed, payload)


# --------------------------------------------------------------------------- seeds

def seed_inputs() -> Iterator[bytes]:
    """The seed corpus: dtproto._corpus lines and hand-written edge cases, each
    behind a few headers (mode, options, chunking)."""
    bodies: List[bytes] = []
    for seed, heavy, invalid in [(1, False, 0.0), (2, True, 0.0), (3, False, 0.3),
                                 (4, True, 0.3)]:
        lines = make_corpus(60, seed=seed, escape_heavy=heavy, invalid_ratio=invalid)
        split = lines.split(b"\n")[:-1]
        bodies.extend(split[:20])
        bodies.append(lines)                       # a block of 60 lines
        bodies.append(b"\r\n".join(split[20:30]) + b"\r\n")
    fifty = b"my.metric," + b",".join(b"k%d=v%d" % (i, i) for i in range(50))
    bodies += [
        # escapes and quoted values
        b'a.b,k=a\\,b\\ c\\=d\\\\e\\"f gauge,1',
        b'a.b,k="a, b \\"c\\" = d",l="\xc3\xa9\\\\" 1 1717243200000',
        b'a.b,k="unterminated gauge,1',
        b'a.b,k=""\nx.y,k="\\" 1',
        b'a.b,k=v\\ 1',
        b'a.b,k="q"x 1',
        # 50 dimensions (the limit) and 51
        fifty + b" gauge,1",
        fifty + b",k50=v50 gauge,1",
        # summaries, counts, classic count keys, timestamps
        b"a.b gauge,min=1,max=3,sum=4,count=2 1717243200000",
        b"a.b gauge,min=5,max=1,sum=3,count=1",
        b"a.b gauge,min=1,max=1,sum=1,count=1",
        b"a.b count,delta=5\na.b.count count,delta=-0.0 1700000000000",
        b"x.count gauge,1\nx count,12",
        b"a.b 1e308\na.b -1.7976931348623157e308\na.b 5e-324\na.b nan\na.b 1e400",
        b"a.b 1 9223372036854775808\na.b 1 -1\na.b 1 17e11",
        # metadata lines
        b'#my.metric gauge dt.meta.displayName="My metric",dt.meta.unit=MilliSecond',
        b"#my.count count dt.meta.description=a\\ description",
        b"#a.b gauge dt.meta.unit=Byte/Second,dt.meta.x=1",
        b"#a.b summary dt.meta.unit=%",
        # line breaks, blank lines, comments-ish
        b"a.b 1\r\na.b 2\r\n\r\na.b 3\r",
        b"\n\n\r\n \n\t\n",
        b"a.b 1\\\na.b 2",
        # invalid UTF-8
        b"a.b,k=\xff\xfe 1",
        b"a.b,k=\xed\xa0\x80 1\na.b,k=\xc3 1",
        b"a.\xc3\xa9b,k=\xf0\x9f\x98\x80 1",
        b"a.b,k=\xc0\xaf 1\x00",
        # odd keys
        b"dt.x 1\n1abc 1\n" + b"a" * 255 + b" 1\n" + b"a" * 256 + b" 1",
        b"a..b 1\n_._ 1\na.b,1k=v 1\na.b,K=v 1\na.b,k=" + b"x" * 256 + b" 1",
        b"",
    ]
    headers = [(0, 0, 0), (1, 0x25, 7), (0, 0x06, 200), (1, 0xF3, 1), (0, 0x41, 99)]
    for i, body in enumerate(bodies):
        for j, (m, o, c) in enumerate(headers[: 2 if i % 3 else 5]):
            yield bytes([m, o, c]) + body
    # literal 50,000-character lines (and one past), plain and multi-byte
    for n, unit in [(MAX_LINE_CHARS, b"a"), (MAX_LINE_CHARS + 1, b"a"),
                    (MAX_LINE_CHARS, b"\xc3\xa9")]:
        head, tail = b"my.metric,k=", b" gauge,1"
        fill = n - len(head) - len(tail)   # code points: each "é" is one
        yield bytes([0, 0, 3]) + head + unit * fill + tail
    # compact long lines (mode 3), every target
    for t in range(len(LONG_TARGETS)):
        yield bytes([3, t, 5]) + b"my.metric,k=\x01a\x01 gauge,1 1717243200000\na.b 1"
        yield bytes([3, t | 0x20, 9]) + b"m\x01\xc3\xa9\x01 1"
        yield bytes([3, t, 11]) + b'a.b,k="\x01\\"\x01" 1'
    # Encoder calls: some fixed choice streams and some random ones
    rnd = random.Random(1)
    yield bytes([2, 0, 0])
    for _ in range(120):
        yield bytes([2, 0, 0]) + rnd.randbytes(rnd.choice([8, 30, 100, 400]))
    yield bytes([2, 0, 0]) + bytes([0, 0, 0] + [3, 1, 7, 0, 60, 0] * 5)


def write_seeds(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    n = 0
    for data in seed_inputs():
        name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
        n += 1
    return n


def main(argv: List[str]) -> None:
    if len(argv) >= 2 and argv[1] == "--make-seeds":
        if len(argv) != 3:
            raise SystemExit("usage: fuzz_atheris.py --make-seeds DIR")
        print("wrote %d seed inputs to %s" % (write_seeds(argv[2]), argv[2]))
        return
    args = list(argv)
    dirs = [a for a in args[1:] if not a.startswith("-") and not os.path.isfile(a)]
    for d in dirs[:1]:   # libFuzzer writes new inputs to the first corpus directory
        if not os.path.isdir(d) or not os.listdir(d):
            print("fuzz_atheris: %d seed inputs written to %s" % (write_seeds(d), d),
                  file=sys.stderr)
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=60000")
    if not any(a.startswith("-rss_limit_mb=") for a in args):
        args.append("-rss_limit_mb=6144")   # ASan's quarantine and shadow memory count too
    print("fuzz_atheris: implementations %s vs %s" % (PY.__name__, C.__name__),
          file=sys.stderr)
    atheris.Setup(args, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
