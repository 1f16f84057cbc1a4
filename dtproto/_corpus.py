"""Deterministic, realistic corpora for benchmarks, tests and ``dtproto bench``.

It lives inside the package so that the ``dtproto bench`` command works from
an installed wheel; ``bench/corpus.py`` re-exports it for the benchmark
scripts.

Everything here is derived from a seed with :class:`random.Random`, so the
same seed gives the same bytes on every machine and Python version.  The
module depends on nothing but the standard library (``make_records`` and
``to_influx`` import :mod:`dtproto` lazily).

What a corpus looks like (``make_corpus``):

* a fixed table of :data:`N_SERIES` = 4,000 series (metric key + dimension
  set), built from the seed; every line is one data point of a series picked
  uniformly at random, so each series emits ~250 times per million lines --
  the shape of a real export interval repeated over time;
* 33 metric keys of 20-33 characters (mean ~26), such as
  ``app.http.server.request_latency``; count keys end in ``.count`` (as
  Dynatrace recommends, so no classic-key warnings);
* 3-5 dimensions per line from realistic pools: hosts, regions, availability
  zones, services, pods, HTTP methods and status codes, environments,
  ``dt.entity.host`` ids, database systems, topics...;
* a data-point mix of ~60% gauge, ~25% count (``count,delta=``) and ~15%
  summary (``gauge,min=..,max=..,sum=..,count=..``, always consistent); gauges
  are written ``gauge,<v>`` (80%) or bare ``<v>`` (20%);
* 90% of lines carry a millisecond timestamp within the hour before
  :data:`BASE_TS_MS` (so ``now_ms=BASE_TS_MS`` accepts them all); the rest
  have none;
* ~135 bytes per line on average (~133 MB per million lines).

``escape_heavy=True`` gives the same shape, but 1-3 dimension values of every
series hold spaces, commas, quotes, backslashes, ``=`` and non-ASCII text,
written either quoted (``"a, b \\"c\\""``) or bare with backslash escapes
(``a\\,\\ b``).

``invalid_ratio`` replaces that fraction of lines with typical mistakes (bad
keys, ``nan``, missing payloads, inconsistent summaries, unterminated quotes,
bad timestamps, ...) for the error path.

``cardinality`` changes how many distinct series the lines carry (the classic
4,000-series table above is ``cardinality=None``).  An int ``k`` gives a table
of ``k`` series and :data:`UNIQUE` gives every line a series of its own (no
series ever repeats).  These series have the shape of high-cardinality
pipelines (pod names, container and host ids):

* the same 33 metrics and data-point mix; 3-4 dimensions (5-dimension
  metrics lose their last one);
* one dimension value carries an id unique to its series (``host``,
  ``k8s.pod.name`` or ``dt.entity.host`` when the metric has one, else the
  first dimension): ``web-prod-017-3f9a06c1d2e4``;
* half of the count series drop the ``.count`` suffix of their key (common
  in real data; the server warns about them: ``changed_metric_key``);
* 10% of the series hold a value with spaces, commas, quotes, backslashes or
  non-ASCII text written quoted, another 5% the same written bare with
  backslash escapes.

``escape_heavy`` and ``cardinality`` do not combine (``escape_heavy`` is
ignored when ``cardinality`` is given).
"""

from __future__ import annotations

import os
import random
from functools import lru_cache
from itertools import islice
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

__all__ = [
    "BASE_TS_MS",
    "N_SERIES",
    "DEFAULT_SEED",
    "make_corpus",
    "iter_corpus_chunks",
    "make_records",
    "Records",
    "to_influx",
    "write_file",
    "encoder_loop",
    "cpu_model",
    "UNIQUE",
    "cardinality_label",
]

BASE_TS_MS = 1_700_000_000_000   # 2023-11-14T22:13:20Z: "now" for window checks
N_SERIES = 4_000                 # distinct key + dimension combinations
DEFAULT_SEED = 20240601
_WINDOW_MS = 3_000_000           # timestamps fall in BASE - 50 min .. BASE
UNIQUE = "unique"                # cardinality: every line its own series

# ---------------------------------------------------------------------------
# Value pools
# ---------------------------------------------------------------------------

_REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2",
            "ap-northeast-1", "sa-east-1"]
_SERVICES = ["checkout-service", "payment-gateway", "cart", "frontend", "auth-service",
             "inventory", "recommendation", "shipping", "email-notifier", "search-api",
             "ad-service", "currency-converter"]
_STATUS = ["200", "200", "200", "200", "201", "204", "301", "304", "400", "401", "403",
           "404", "404", "429", "500", "502", "503"]
_METHODS = ["GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH"]
_ENVS = ["prod", "prod", "staging", "dev"]
_NAMESPACES = ["default", "payments", "storefront", "platform", "observability"]
_DB = ["postgresql", "mysql", "redis", "mongodb"]
_TOPICS = ["orders", "payments", "inventory-updates", "user-events", "audit-log"]
_POOLS = ["G1 Eden Space", "G1 Old Gen", "Metaspace", "CodeHeap"]
_ROUTES = ["/api/v1/cart", "/api/v1/checkout", "/api/v2/products", "/health",
           "/api/v1/users/login", "/static/main.js"]

# Values for the escape-heavy variant: decoded text (what the records hold).
_TRICKY = [
    "Compressed Class Space",
    "G1 Old Gen",
    "C:\\Program Files\\Dynatrace\\oneagent",
    "M\u00fcnchen, Bayern",
    "key=value;mode=fast",
    'say "hello"',
    "Z\u00fcrich \u2192 Gen\u00e8ve",
    "\u6771\u4eac (Tokyo)",
    "S\u00e3o Paulo, BR",
    "price=\u20ac5, qty=3",
    "path\\to\\file.log",
    '100% "done"',
    "rocket \U0001f680 launch",
    "a,b,c",
    "x = y",
    "na\u00efve caf\u00e9",
    "\u03a9mega\\\u0394elta",
    "SELECT * FROM orders WHERE id = 42",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "\u041c\u043e\u0441\u043a\u0432\u0430, \u0420\u043e\u0441\u0441\u0438\u044f",
]


def _host_pool(rng: random.Random) -> List[str]:
    roles = ["web", "api", "db", "cache", "worker", "kafka", "ingest"]
    return ["%s-%s-%03d" % (rng.choice(roles), rng.choice(["prod", "stg"]), i)
            for i in range(240)]


def _entity_pool(rng: random.Random) -> List[str]:
    return ["HOST-%016X" % rng.getrandbits(64) for _ in range(240)]


def _pod_pool(rng: random.Random) -> List[str]:
    alnum = "bcdfghjklmnpqrstvwxz2456789"
    out = []
    for _ in range(400):
        svc = rng.choice(_SERVICES)
        rs = "".join(rng.choice(alnum) for _ in range(9))
        pod = "".join(rng.choice(alnum) for _ in range(5))
        out.append("%s-%s-%s" % (svc, rs, pod))
    return out


# Metric keys: (kind, key, dimension keys (3..5), value generator name)
_METRICS: List[Tuple[str, str, Tuple[str, ...], str]] = [
    ("gauge", "app.http.server.request_latency", ("host", "service", "http.method", "status_code"), "latency"),
    ("gauge", "host.cpu.usage_percent", ("host", "region", "az"), "percent"),
    ("gauge", "host.mem.used_bytes", ("host", "region", "env"), "bytes"),
    ("gauge", "host.disk.free_percent", ("host", "region", "env", "dt.entity.host"), "percent"),
    ("gauge", "jvm.memory.heap.used_bytes", ("host", "service", "pool", "env"), "bytes"),
    ("gauge", "jvm.gc.pause.time_ms", ("host", "service", "env"), "latency"),
    ("gauge", "db.pool.connections.active", ("host", "service", "db.system", "env"), "small"),
    ("gauge", "kafka.consumer.lag_records", ("host", "topic", "region", "env"), "small"),
    ("gauge", "cache.redis.hit_ratio", ("host", "service", "region"), "ratio"),
    ("gauge", "k8s.pod.cpu.usage_millis", ("k8s.namespace", "k8s.pod.name", "service", "region"), "small"),
    ("gauge", "k8s.pod.memory.working_set", ("k8s.namespace", "k8s.pod.name", "service", "region", "env"), "bytes"),
    ("gauge", "app.queue.depth_messages", ("service", "topic", "region"), "small"),
    ("gauge", "net.interface.rx_bytes_rate", ("host", "region", "az", "dt.entity.host"), "bytes"),
    ("gauge", "app.thread_pool.busy_threads", ("host", "service", "env"), "small"),
    ("gauge", "app.sessions.active_users", ("service", "region", "env"), "small"),
    ("gauge", "lb.target.response_time_s", ("region", "az", "service", "http.route"), "seconds"),
    ("gauge", "process.open_file_descriptors", ("host", "service", "env"), "small"),
    ("gauge", "custom.business.cart_value", ("service", "region", "env"), "money"),
    ("gauge", "synthetic.availability_ratio", ("region", "service", "http.route"), "ratio"),
    ("gauge", "db.replication.lag_seconds", ("host", "db.system", "region"), "seconds"),
    ("count", "app.http.server.requests.count", ("host", "service", "http.method", "status_code"), "delta"),
    ("count", "app.errors.unhandled.count", ("host", "service", "env"), "delta"),
    ("count", "queue.messages.published.count", ("service", "topic", "region"), "delta"),
    ("count", "db.queries.executed.count", ("host", "service", "db.system", "env"), "delta"),
    ("count", "auth.login.failures.count", ("service", "region", "env"), "delta"),
    ("count", "k8s.container.restarts.count", ("k8s.namespace", "k8s.pod.name", "region"), "delta"),
    ("count", "net.tcp.retransmits.count", ("host", "region", "az", "dt.entity.host"), "delta"),
    ("summary", "app.http.client.duration_ms", ("host", "service", "http.method", "status_code"), "latency"),
    ("summary", "db.query.duration_ms", ("host", "service", "db.system"), "latency"),
    ("summary", "rpc.server.latency_ms", ("service", "region", "env", "az"), "latency"),
    ("summary", "app.response.size_bytes", ("service", "http.route", "region"), "bytes"),
    ("summary", "kafka.batch.size_records", ("topic", "service", "region", "env", "host"), "small"),
    ("summary", "gc.collection.time_ms", ("host", "service", "pool"), "latency"),
]
_KIND_WEIGHT = {"gauge": 0.60, "count": 0.25, "summary": 0.15}


class _Series(NamedTuple):
    kind: str
    key: str
    dims: Tuple[Tuple[str, str], ...]   # decoded values
    head: str                           # wire text of "key,dims"
    gen: str                            # value generator name


def _escape_bare(v: str) -> str:
    return (v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
            .replace(" ", "\\ ").replace('"', '\\"'))


def _escape_quoted(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dim_value(dkey: str, rng: random.Random, pools: Dict[str, List[str]]) -> str:
    if dkey == "host":
        return rng.choice(pools["host"])
    if dkey == "region":
        return rng.choice(_REGIONS)
    if dkey == "az":
        return rng.choice(_REGIONS) + rng.choice("abc")
    if dkey == "service":
        return rng.choice(_SERVICES)
    if dkey == "status_code":
        return rng.choice(_STATUS)
    if dkey == "http.method":
        return rng.choice(_METHODS)
    if dkey == "env":
        return rng.choice(_ENVS)
    if dkey == "k8s.namespace":
        return rng.choice(_NAMESPACES)
    if dkey == "k8s.pod.name":
        return rng.choice(pools["pod"])
    if dkey == "dt.entity.host":
        return rng.choice(pools["entity"])
    if dkey == "db.system":
        return rng.choice(_DB)
    if dkey == "topic":
        return rng.choice(_TOPICS)
    if dkey == "pool":
        return rng.choice(_POOLS).replace(" ", "_")
    if dkey == "http.route":
        return rng.choice(_ROUTES)
    raise AssertionError(dkey)


@lru_cache(maxsize=8)
def _series_table(seed: int, escape_heavy: bool) -> Tuple[_Series, ...]:
    """The fixed series of a seed (cached: it is immutable and used by every stream)."""
    rng = random.Random(seed * 7919 + (1 if escape_heavy else 0))
    pools = {"host": _host_pool(rng), "pod": _pod_pool(rng), "entity": _entity_pool(rng)}
    by_kind: Dict[str, List[tuple]] = {}
    for m in _METRICS:
        by_kind.setdefault(m[0], []).append(m)
    kinds = list(_KIND_WEIGHT)
    weights = [_KIND_WEIGHT[k] for k in kinds]
    seen = set()
    table: List[_Series] = []
    while len(table) < N_SERIES:
        kind = rng.choices(kinds, weights)[0]
        _, key, dkeys, gen = rng.choice(by_kind[kind])
        dims = tuple((dk, _dim_value(dk, rng, pools)) for dk in dkeys)
        if escape_heavy:
            # 1..3 values become tricky text (never the first, usually a host)
            idx = rng.sample(range(1, len(dims)), min(len(dims) - 1, rng.randint(1, 3)))
            dims = tuple((dk, rng.choice(_TRICKY) if i in idx else dv)
                         for i, (dk, dv) in enumerate(dims))
        ident = (key, dims)
        if ident in seen:
            continue
        seen.add(ident)
        parts = [key]
        for dk, dv in dims:
            if escape_heavy and rng.random() < 0.5:
                wire = _escape_quoted(dv)
            else:
                wire = _escape_bare(dv)
            parts.append(dk + "=" + wire)
        table.append(_Series(kind, key, dims, ",".join(parts), gen))
    return tuple(table)


# ---------------------------------------------------------------------------
# Series of any cardinality
# ---------------------------------------------------------------------------

_ID_DIMENSIONS = ("host", "k8s.pod.name", "dt.entity.host")
_ID_MASK = (1 << 48) - 1
_ID_MUL = 0x9E3779B97F4B          # odd: i -> i * _ID_MUL mod 2**48 is a bijection


def cardinality_label(cardinality: Any) -> str:
    """``cardinality`` as a table heading: "4,000 series", "every line unique"."""
    if cardinality is None:
        return "%s series" % "{:,}".format(N_SERIES)
    if cardinality == UNIQUE:
        return "every line unique"
    return "%s series" % "{:,}".format(cardinality)


class _SeriesMaker:
    """Series number ``i`` of a seed, for ``cardinality`` (see the module docstring).

    Series ``i`` and ``j != i`` always differ: the id in one dimension value
    is a bijection of the series number.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed * 104_729 + 17)
        rng = self.rng
        self.pools = {"host": _host_pool(rng), "pod": _pod_pool(rng),
                      "entity": _entity_pool(rng)}
        self.by_kind: Dict[str, List[tuple]] = {}
        for m in _METRICS:
            self.by_kind.setdefault(m[0], []).append(m)
        self.kinds = list(_KIND_WEIGHT)
        self.weights = [_KIND_WEIGHT[k] for k in self.kinds]
        self.salt = (seed * 0x2545F491) & _ID_MASK

    def __call__(self, i: int) -> _Series:
        rng = self.rng
        kind = rng.choices(self.kinds, self.weights)[0]
        _, key, dkeys, gen = rng.choice(self.by_kind[kind])
        dkeys = dkeys[:4]
        if kind == "count" and rng.random() < 0.5:
            key = key[:-len(".count")]          # the server warns: changed_metric_key
        dims = [_dim_value(dk, rng, self.pools) for dk in dkeys]
        at = next((n for n, dk in enumerate(dkeys) if dk in _ID_DIMENSIONS), 0)
        ident = ((i * _ID_MUL) & _ID_MASK) ^ self.salt
        dims[at] = "%s-%012x" % (dims[at], ident)
        u = rng.random()
        tricky = -1
        if u < 0.15:
            tricky = rng.choice([n for n in range(len(dims)) if n != at])
            dims[tricky] = rng.choice(_TRICKY)
        parts = [key]
        for n, (dk, dv) in enumerate(zip(dkeys, dims)):
            wire = _escape_quoted(dv) if n == tricky and u < 0.10 else _escape_bare(dv)
            parts.append(dk + "=" + wire)
        return _Series(kind, key, tuple(zip(dkeys, dims)), ",".join(parts), gen)


@lru_cache(maxsize=4)
def _cardinality_table(seed: int, k: int) -> Tuple[_Series, ...]:
    make = _SeriesMaker(seed)
    return tuple(make(i) for i in range(k))


# ---------------------------------------------------------------------------
# Data points
# ---------------------------------------------------------------------------

def _value(gen: str, rnd: Any) -> float:
    """A realistic, round-trippable float for a value generator."""
    u = rnd()
    if gen == "latency":
        return round(0.5 + 400.0 * u * u, 3)
    if gen == "percent":
        return round(100.0 * u, 2)
    if gen == "bytes":
        return float(int(1e6 + 8e9 * u))
    if gen == "small":
        return float(int(500 * u * u))
    if gen == "ratio":
        return round(u, 4)
    if gen == "seconds":
        return round(u * u * 3.0, 6) if u > 0.02 else 1.5e-05
    if gen == "money":
        return round(5.0 + 495.0 * u, 2)
    raise AssertionError(gen)


def _format(v: float) -> str:
    r = repr(v)
    return r[:-2] if r.endswith(".0") else r


class _Point(NamedTuple):
    series: _Series
    kind: str
    value: Optional[float]
    mn: Optional[float]
    mx: Optional[float]
    sm: Optional[float]
    cnt: Optional[int]
    ts: Optional[int]
    bare: bool          # gauge written without the "gauge," prefix


def _check_cardinality(cardinality: Any) -> None:
    if cardinality is None or cardinality == UNIQUE:
        return
    if isinstance(cardinality, bool) or not isinstance(cardinality, int) or cardinality < 1:
        raise ValueError("cardinality must be None, an int >= 1 or %r, not %r"
                         % (UNIQUE, cardinality))


def _points(seed: int, escape_heavy: bool, cardinality: Any = None) -> Iterator[_Point]:
    """The endless stream of data points of one seed."""
    _check_cardinality(cardinality)
    rng = random.Random(seed)
    rnd = rng.random
    unique: Any = None
    if cardinality is None:
        table = _series_table(seed, escape_heavy)
    elif cardinality == UNIQUE:
        table = ()
        unique = _SeriesMaker(seed)
    else:
        table = _cardinality_table(seed, cardinality)
    n_series = len(table)
    base = BASE_TS_MS - _WINDOW_MS
    i = 0
    while True:
        if unique is not None:
            s = unique(i)
            i += 1
        else:
            s = table[int(rnd() * n_series)]
        ts = base + int(rnd() * _WINDOW_MS) if rnd() < 0.9 else None
        kind = s.kind
        if kind == "gauge":
            yield _Point(s, kind, _value(s.gen, rnd), None, None, None, None, ts, rnd() < 0.2)
        elif kind == "count":
            delta = float(int(1 + 200 * rnd() ** 3))
            yield _Point(s, kind, delta, None, None, None, None, ts, False)
        else:
            cnt = 1 + int(1000 * rnd() ** 2)
            a = _value(s.gen, rnd)
            if cnt == 1:
                yield _Point(s, kind, None, a, a, a, 1, ts, False)
                continue
            b = _value(s.gen, rnd)
            mn, mx = (a, b) if a <= b else (b, a)
            if mx - mn < 0.01:
                mx = round(mn + 1.0, 3)
            avg = mn + (mx - mn) * (0.1 + 0.8 * rnd())
            sm = round(avg * cnt, 3)
            yield _Point(s, kind, None, mn, mx, sm, cnt, ts, False)


def _line(p: _Point) -> str:
    kind = p.kind
    if kind == "gauge":
        payload = _format(p.value) if p.bare else "gauge," + _format(p.value)
    elif kind == "count":
        payload = "count,delta=" + _format(p.value)
    else:
        payload = "gauge,min=%s,max=%s,sum=%s,count=%d" % (
            _format(p.mn), _format(p.mx), _format(p.sm), p.cnt)
    if p.ts is None:
        return p.series.head + " " + payload + "\n"
    return p.series.head + " " + payload + " " + str(p.ts) + "\n"


def _bad_line(p: _Point, which: int) -> str:
    """An invalid line built from a valid point: typical producer mistakes."""
    head = p.series.head
    if which == 0:
        return "9" + _line(p)                                # key starts with a digit
    if which == 1:
        return "dt." + _line(p)                              # reserved prefix
    if which == 2:
        return head + "\n"                                  # missing payload
    if which == 3:
        return head + " gauge,nan\n"                        # non-finite number
    if which == 4:
        return p.series.key + ",Host=web-1" + head[len(p.series.key):] + " 1\n"  # bad dim key
    if which == 5:
        return head + ',note="oops gauge,1\n'               # unterminated quoted value
    if which == 6:
        return head + " gauge,1 17e11\n"                    # invalid timestamp
    if which == 7:
        return head + " gauge,min=5,max=1,sum=3,count=1\n"  # summary min > max
    if which == 8:
        return head + " count,12\n"                         # count without delta=
    return head + " 1,5\n"                                  # decimal comma


_N_MUTATIONS = 10


def _lines(seed: int, escape_heavy: bool, invalid_ratio: float,
           cardinality: Any = None) -> Iterator[str]:
    """The endless stream of lines (LF-terminated str) of one seed."""
    points = _points(seed, escape_heavy, cardinality)
    if not invalid_ratio:
        yield from map(_line, points)
        return
    bad = random.Random(seed ^ 0x5EED)
    for p in points:
        if bad.random() < invalid_ratio:
            yield _bad_line(p, bad.randrange(_N_MUTATIONS))
        else:
            yield _line(p)


def iter_corpus_chunks(seed: int = DEFAULT_SEED, lines_per_chunk: int = 50_000,
                       escape_heavy: bool = False, invalid_ratio: float = 0.0
                       ) -> Iterator[bytes]:
    """Endless UTF-8 chunks of ``lines_per_chunk`` whole lines each.

    The concatenation of the chunks is the same stream for any chunk size:
    ``make_corpus(n, seed)`` is its first ``n`` lines.
    """
    it = _lines(seed, escape_heavy, invalid_ratio)
    join = "".join
    while True:
        yield join(islice(it, lines_per_chunk)).encode("utf-8")


def make_corpus(n_lines: int, seed: int = DEFAULT_SEED, escape_heavy: bool = False,
                invalid_ratio: float = 0.0, cardinality: Any = None) -> bytes:
    """``n_lines`` realistic lines (each ending with LF) as UTF-8 bytes.

    Args:
        n_lines: number of lines.
        seed: the same seed always gives the same bytes.
        escape_heavy: tricky dimension values (quoted and escaped forms).
        invalid_ratio: fraction of lines replaced by invalid ones (the
            error path); 0 gives a fully valid corpus.
        cardinality: None (the 4,000-series table), the number of distinct
            series, or :data:`UNIQUE` (every line its own series).
    """
    return "".join(islice(_lines(seed, escape_heavy, invalid_ratio, cardinality),
                          n_lines)).encode("utf-8")


class Records(NamedTuple):
    """The data of ``make_corpus(n, seed)`` as objects.

    ``metrics``: :class:`dtproto.Metric` records, equal to
    ``dtproto.decode(make_corpus(n, seed))``.

    ``tuples``: ``(kind, key, dims, value, min, max, sum, count, timestamp)``
    with ``dims`` a ``dict`` (the input peer encoders take), ``kind`` one of
    ``"gauge"``, ``"count"``, ``"summary"``; ``value`` is the gauge value or
    count delta (``None`` for a summary), ``timestamp`` ms or ``None``.
    Dimension dicts and tuples are shared between points of one series, as
    a real exporter holding its series would share them.
    """

    metrics: list
    tuples: list


def make_records(n: int, seed: int = DEFAULT_SEED, escape_heavy: bool = False,
                 cardinality: Any = None) -> Records:
    """The first ``n`` data points of ``make_corpus(n, seed, escape_heavy,
    cardinality=cardinality)`` as records and tuples."""
    from dtproto import Metric

    new = tuple.__new__
    points = _points(seed, escape_heavy, cardinality)
    dict_of: Dict[int, tuple] = {}     # id(series) -> (series, dims dict); holds the series
    metrics = []
    tuples = []
    for _ in range(n):
        p = next(points)
        s = p.series
        sd = dict_of.get(id(s))
        if sd is None:
            sd = dict_of[id(s)] = (s, dict(s.dims))
        d = sd[1]
        kind = p.kind
        metrics.append(new(Metric, (s.key, s.dims, kind, p.value, p.mn, p.mx, p.sm, p.cnt, p.ts)))
        tuples.append((kind, s.key, d, p.value, p.mn, p.mx, p.sm, p.cnt, p.ts))
    return Records(metrics, tuples)


# ---------------------------------------------------------------------------
# InfluxDB line protocol form (for line-protocol-parser)
# ---------------------------------------------------------------------------

def _influx_escape(s: str, measurement: bool = False) -> str:
    # A backslash stays literal in InfluxDB line protocol unless it precedes
    # a special character; none of our values has one there.
    s = s.replace(",", "\\,").replace(" ", "\\ ")
    return s if measurement else s.replace("=", "\\=")


def to_influx(corpus: bytes) -> bytes:
    """The same data points in InfluxDB line protocol.

    measurement = metric key, tags = dimensions, fields ``value=`` (gauge and
    count delta) or ``min=,max=,sum=,count=<n>i`` (summary), timestamps in
    nanoseconds (omitted where the line has none).  Only valid corpora.
    """
    from dtproto._impl import available_implementations

    decode = available_implementations()["python"].decode
    out = []
    heads: Dict[tuple, str] = {}
    for m in decode(corpus):
        key, dims = m[0], m[1]
        head = heads.get((key, dims))
        if head is None:
            head = _influx_escape(key, True) + "".join(
                "," + _influx_escape(k) + "=" + _influx_escape(v) for k, v in dims)
            heads[(key, dims)] = head
        if m[2] == "summary":
            fields = "min=%r,max=%r,sum=%r,count=%di" % (m[4], m[5], m[6], m[7])
        else:
            fields = "value=%r" % (m[3],)
        ts = m[8]
        if ts is None:
            out.append(head + " " + fields + "\n")
        else:
            out.append(head + " " + fields + " " + str(ts * 1_000_000) + "\n")
    return "".join(out).encode("utf-8")


# ---------------------------------------------------------------------------
# Large files
# ---------------------------------------------------------------------------

def write_file(path: str, target_bytes: int, seed: int = DEFAULT_SEED,
               escape_heavy: bool = False) -> Tuple[int, int]:
    """Write at least ``target_bytes`` of whole lines to ``path``, streaming.

    Memory stays at one chunk (~7 MB) whatever the size.  The file is the
    beginning of the same stream ``make_corpus`` draws from, ending at the
    first line boundary at or after ``target_bytes``.

    Returns:
        ``(bytes written, lines written)``.
    """
    written = 0
    lines = 0
    per_chunk = 50_000
    with open(path, "wb") as f:
        for chunk in iter_corpus_chunks(seed, per_chunk, escape_heavy):
            if written + len(chunk) >= target_bytes:
                need = target_bytes - written
                cut = chunk.find(b"\n", max(need - 1, 0))
                chunk = chunk[:cut + 1]
                f.write(chunk)
                written += len(chunk)
                lines += chunk.count(b"\n")
                break
            f.write(chunk)
            written += len(chunk)
            lines += per_chunk
        f.flush()
        os.fsync(f.fileno())
    return written, lines


def encoder_loop(Encoder: Any, tuples: List[tuple], **options: Any) -> Any:
    """A callable that encodes ``tuples`` (``make_records(...).tuples``) with one
    ``Encoder(**options)`` the way an exporter's hot loop does; returns the bytes."""
    def run() -> bytes:
        enc = Encoder(**options)
        gauge, count, summary = enc.gauge, enc.count, enc.summary
        for kind, key, dims, value, mn, mx, sm, cnt, ts in tuples:
            if kind == "gauge":
                gauge(key, value, dims, ts)
            elif kind == "count":
                count(key, value, dims, ts)
            else:
                summary(key, mn, mx, sm, cnt, dims, ts)
        return enc.getvalue()
    return run


def cpu_model() -> str:
    """The CPU model name, for benchmark reports."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
