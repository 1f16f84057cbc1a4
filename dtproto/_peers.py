"""The peer libraries the benchmarks compare dtproto with, adapted once.

``dtproto bench`` and ``bench/compare.py`` both time the peers through these
adapters, so the two cannot measure a peer differently.  Every peer is
optional (``pip install '.[bench]'``): :func:`load_peers` says which are
installed.  Each adapter builds its peer's input objects up front (outside
the timed region) and returns a callable that does the timed work.

Input: the data points as ``(kind, key, dims, value, min, max, sum, count,
timestamp)`` tuples (``dtproto._corpus.make_records(...).tuples``), or the
corpus in InfluxDB line protocol (``dtproto._corpus.to_influx``).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["PEERS", "load_peers", "peer_version", "dmu_encoder", "sdk_encoder",
           "questdb_encoder", "lpp_decoder", "questdb_dataframe"]

# (key, distribution name) of every peer, in the order tables list them.
PEERS: Tuple[Tuple[str, str], ...] = (
    ("dmu", "dynatrace-metric-utils"),
    ("sdk", "dt-extensions-sdk"),
    ("lpp", "line-protocol-parser"),
    ("questdb", "questdb"),
)


def peer_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``"?"``."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 (not installed, or broken metadata)
        return "?"


def load_peers() -> Dict[str, Any]:
    """Each peer's entry points by key (see :data:`PEERS`), or a string
    saying why it is missing."""
    peers: Dict[str, Any] = {}
    try:
        from dynatrace.metric.utils import DynatraceMetricsFactory, DynatraceMetricsSerializer  # type: ignore[import-not-found]
        peers["dmu"] = (DynatraceMetricsFactory, DynatraceMetricsSerializer)
    except ImportError as e:
        peers["dmu"] = "not installed (%s)" % e
    try:
        from dynatrace_extension.sdk.metric import Metric, MetricType, SummaryStat  # type: ignore[import-not-found]
        peers["sdk"] = (Metric, MetricType, SummaryStat)
    except ImportError as e:
        peers["sdk"] = "not installed (%s)" % e
    try:
        from line_protocol_parser import parse_line  # type: ignore[import-not-found]
        peers["lpp"] = parse_line
    except ImportError as e:
        peers["lpp"] = "not installed (%s)" % e
    try:
        with warnings.catch_warnings():  # questdb >= 5 deprecates the module path
            warnings.simplefilter("ignore", DeprecationWarning)
            from questdb.ingress import Buffer, ServerTimestamp, TimestampNanos  # type: ignore[import-not-found]
        peers["questdb"] = (Buffer, ServerTimestamp, TimestampNanos)
    except ImportError as e:
        peers["questdb"] = "not installed (%s)" % e
    return peers


def dmu_encoder(peer: Any, tuples: List[tuple]) -> Callable[[], bytes]:
    """dynatrace-metric-utils: DynatraceMetricsFactory + DynatraceMetricsSerializer.serialize."""
    factory_cls, serializer_cls = peer
    factory = factory_cls()
    serializer = serializer_cls(enrich_with_dynatrace_metadata=False)

    def run() -> bytes:
        gauge = factory.create_float_gauge
        delta = factory.create_float_counter_delta
        summary = factory.create_float_summary
        serialize = serializer.serialize
        out = []
        for kind, key, dims, v, mn, mx, sm, cnt, ts in tuples:
            if kind == "gauge":
                m = gauge(key, v, dims, ts)
            elif kind == "count":
                m = delta(key, v, dims, ts)
            else:
                m = summary(key, mn, mx, sm, cnt, dims, ts)
            out.append(serialize(m))
        out.append("")
        return "\n".join(out).encode("utf-8")
    return run


def sdk_encoder(peer: Any, tuples: List[tuple]) -> Callable[[], bytes]:
    """dt-extensions-sdk: dynatrace_extension.sdk.metric.Metric(...).to_mint_line().

    Its timestamps are ``datetime`` objects, built here, before the timing.
    """
    metric_cls, metric_type, summary_cls = peer
    stamps = [None if t[8] is None else datetime.fromtimestamp(t[8] / 1000, tz=timezone.utc)
              for t in tuples]
    G, D = metric_type.GAUGE, metric_type.DELTA

    def run() -> bytes:
        out = []
        for (kind, key, dims, v, mn, mx, sm, cnt, _), stamp in zip(tuples, stamps):
            if kind == "gauge":
                m = metric_cls(key, v, dims, G, stamp)
            elif kind == "count":
                m = metric_cls(key, v, dims, D, stamp)
            else:
                m = metric_cls(key, summary_cls(mn, mx, sm, cnt), dims, G, stamp)
            out.append(m.to_mint_line())
        out.append("")
        return "\n".join(out).encode("utf-8")
    return run


def questdb_encoder(peer: Any, tuples: List[tuple],
                    protocol_version: int = 1) -> Callable[[], bytes]:
    """questdb: Buffer(protocol_version=N).row(table, symbols=..., columns=..., at=...).

    InfluxDB line protocol (ILP) with text floats for protocol 1, binary
    floats for protocol 2.  Its ``TimestampNanos`` are built before the timing.
    """
    buffer_cls, server_ts, nanos = peer
    stamps = [server_ts if t[8] is None else nanos(t[8] * 1_000_000) for t in tuples]
    # QuestDB column names cannot contain ".": symbols get "_" instead (the
    # renamed dicts are built here, once per series, outside the timed region).
    renamed: Dict[int, dict] = {}
    symbols = []
    for t in tuples:
        d = renamed.get(id(t[2]))
        if d is None:
            d = renamed[id(t[2])] = {k.replace(".", "_"): v for k, v in t[2].items()}
        symbols.append(d)

    def new_buffer() -> Any:
        try:
            return buffer_cls(protocol_version=protocol_version)
        except TypeError:  # questdb < 3 has no protocol versions (text only)
            return buffer_cls()

    def run() -> bytes:
        buf = new_buffer()
        row = buf.row
        for (kind, key, _, v, mn, mx, sm, cnt, _), dims, at in zip(tuples, symbols, stamps):
            if kind == "summary":
                row(key, symbols=dims, columns={"min": mn, "max": mx, "sum": sm, "count": cnt},
                    at=at)
            else:
                row(key, symbols=dims, columns={"value": v}, at=at)
        return bytes(buf)
    return run


def lpp_decoder(peer: Any, influx: bytes) -> Callable[[], list]:
    """line-protocol-parser: parse_line() per line of the InfluxDB form."""
    parse_line = peer

    def run() -> list:
        return [parse_line(line) for line in influx.split(b"\n") if line]
    return run


def questdb_dataframe(peer: Any, df: Any, key: str, symbols: List[str], at: str,
                      protocol_version: int = 1) -> Callable[[], bytes]:
    """questdb: Buffer(protocol_version=N).dataframe(df, table_name_col=key, symbols=..., at=...).

    A whole pandas DataFrame encoded in native code (InfluxDB line protocol).
    ``at`` must be a datetime64 column (questdb refuses int64 epoch ms); the
    caller converts it before the timing.
    """
    buffer_cls = peer[0]

    def run() -> bytes:
        try:
            buf = buffer_cls(protocol_version=protocol_version)
        except TypeError:  # questdb < 3
            buf = buffer_cls()
        buf.dataframe(df, table_name_col=key, symbols=symbols, at=at)
        return bytes(buf)
    return run
