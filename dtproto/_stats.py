"""Cardinality of metric lines: what ``dtproto stats`` counts, in bounded memory.

Per metric key: its data lines, its distinct series (key + dimension set,
order-insensitive; a dimension given twice counts with its last value, as
the server stores it), the distinct values of each dimension key, and the
kinds seen.  A :class:`FileStats` is built block by block and two of them
merge (``--jobs`` combines the states of byte ranges in input order).

Counting is exact while it fits: every series is kept as a stable 64-bit
hash (BLAKE2b, so the states of different processes merge; two series
colliding has odds of about n²/2⁶⁵, negligible at 10⁷ series), every
dimension value as itself.  Beyond that a count switches to a HyperLogLog
estimate (:class:`HyperLogLog`, 2¹⁴ registers, about 0.8% standard error),
marked ``estimated``.  Which counts are estimated depends only on the
counts, never on the order of the lines or on how ``--jobs`` cut the file
(:func:`_fit`): the series of a key are exact when the key has at most a
threshold of them, the largest of :data:`EXACT_SERIES`, half that, a
quarter... (not below :data:`EXACT_FLOOR`) at which the keys' series, each
key's taken up to the threshold, total at most :data:`EXACT_SERIES`; the
values of a dimension key likewise, from :data:`EXACT_VALUES` within
:data:`EXACT_VALUES_TOTAL`.  Memory does not grow with the file's size: the
exact items fit those totals, or the threshold is down to EXACT_FLOOR items
per key, about the 16 KB of registers of an estimate; it grows with the number
of distinct keys and (key, dimension) pairs, by about that much for each.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ._constants import LIMIT_METRIC_KEYS, LIMIT_SERIES_CUSTOM, LIMIT_SERIES_PER_METRIC
from .model import Metric

__all__ = ["HyperLogLog", "Distinct", "FileStats", "EXACT_SERIES", "EXACT_VALUES",
           "EXACT_FLOOR", "ESTIMATOR"]

EXACT_SERIES = 2_000_000     # series counted exactly per file (then the largest keys estimate)
EXACT_VALUES = 200_000       # values of one dimension key (of one metric) counted exactly, at most
EXACT_VALUES_TOTAL = 2_000_000   # dimension values kept per file in all
# A count this small always stays exact, so that the threshold cannot fall to
# nothing.  200 hashes in a set take ~15.6 KB, about what an estimate's 16 KB
# of registers take, so a count at the floor costs no more memory than it
# would estimated: with many keys, memory grows by about 16 KB per key, beyond
# the exact totals (more per (key, dimension) pair: its 200 values are kept
# as strings, up to 250 characters each).  (At 1,000, 4,000 keys of 1,000 series each took 505 MB
# of memory in `dtproto stats`; at 200, 344 MB.)
EXACT_FLOOR = 200
HLL_P = 14
ESTIMATOR = "HyperLogLog (2^14 registers, 64-bit BLAKE2b hashes, ~0.8% standard error)"

_MASK64 = (1 << 64) - 1


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


class HyperLogLog:
    """Flajolet et al.'s distinct-count estimate over 64-bit hashes (mergeable)."""

    __slots__ = ("registers",)
    M = 1 << HLL_P

    def __init__(self) -> None:
        self.registers = bytearray(self.M)

    def add(self, h: int) -> None:
        idx = h >> (64 - HLL_P)
        w = (h << HLL_P) & _MASK64
        rank = 65 - w.bit_length() if w else 64 - HLL_P + 1
        if rank > self.registers[idx]:
            self.registers[idx] = rank

    def merge(self, other: "HyperLogLog") -> None:
        r = self.registers
        for i, v in enumerate(other.registers):
            if v > r[i]:
                r[i] = v

    def estimate(self) -> int:
        m = self.M
        alpha = 0.7213 / (1 + 1.079 / m)
        total = sum(2.0 ** -v for v in self.registers)
        e = alpha * m * m / total
        zeros = self.registers.count(0)
        if e <= 2.5 * m and zeros:
            e = m * math.log(m / zeros)     # linear counting for small sets
        return int(round(e))


class Distinct:
    """A distinct count: an exact set until it is switched to a HyperLogLog."""

    __slots__ = ("exact", "hll", "hashed")

    def __init__(self, hashed: bool) -> None:
        self.exact: Optional[Set[Any]] = set()
        self.hll: Optional[HyperLogLog] = None
        self.hashed = hashed      # items are 64-bit hashes already (else strings)

    @property
    def estimated(self) -> bool:
        return self.hll is not None

    def count(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        assert self.hll is not None
        return self.hll.estimate()

    def _hash(self, item: Any) -> int:
        return item if self.hashed else stable_hash(item)

    def to_estimate(self) -> None:
        if self.hll is not None:
            return
        hll = HyperLogLog()
        for item in self.exact or ():
            hll.add(self._hash(item))
        self.hll, self.exact = hll, None

    def add_all(self, items: Iterable[Any]) -> None:
        if self.exact is not None:
            self.exact.update(items)
        else:
            assert self.hll is not None
            add = self.hll.add
            for item in items:
                add(self._hash(item))

    def merge(self, other: "Distinct") -> None:
        if other.exact is not None:
            self.add_all(other.exact)
            return
        self.to_estimate()
        assert self.hll is not None and other.hll is not None
        self.hll.merge(other.hll)


def _fit(counts: List[Distinct], limit: int, budget: int) -> int:
    """The threshold of exact counts after items were added, from the one
    before (``limit``): every count above it switched to an estimate.

    While the counts, each taken up to the threshold, total more than
    ``budget``, the threshold is halved (not below :data:`EXACT_FLOOR`).
    That total only grows as items come (whatever they are, and an estimated
    count is over the threshold: it adds the threshold), so the threshold
    is lowered only past values that the whole input rules out too, and ends
    at the largest one that fits the whole input: the same threshold, and so
    the same exact counts, whatever the order of the items and however they
    were split into states that :meth:`FileStats.merge` combined (starting
    from the smaller of their thresholds, each at least the whole input's).
    """
    while True:
        total = 0
        for d in counts:
            if d.exact is not None and len(d.exact) > limit:
                d.to_estimate()
            total += limit if d.exact is None else len(d.exact)
        if total <= budget or limit <= EXACT_FLOOR:
            return limit
        limit = max(limit // 2, EXACT_FLOOR)


def _share(d: Distinct, limit: int) -> int:
    """What a count adds to the total :func:`_fit` weighs: itself up to the threshold."""
    return limit if d.exact is None else len(d.exact)


def _grow(d: Distinct, items: Iterable[Any], limit: int) -> int:
    """Add ``items`` to ``d``, switched to an estimate when it passes ``limit``
    (as :func:`_fit` would); returns how much its share of the total grew."""
    before = _share(d, limit)
    d.add_all(items)
    if d.exact is not None and len(d.exact) > limit:
        d.to_estimate()
    return _share(d, limit) - before


class MetricStats:
    __slots__ = ("lines", "kinds", "series", "dims")

    def __init__(self) -> None:
        self.lines = 0
        self.kinds: Set[str] = set()
        self.series = Distinct(hashed=True)
        self.dims: Dict[str, Distinct] = {}

    def merge(self, other: "MetricStats") -> None:
        self.lines += other.lines
        self.kinds |= other.kinds
        self.series.merge(other.series)
        for k, d in other.dims.items():
            mine = self.dims.get(k)
            if mine is None:
                self.dims[k] = d
            else:
                mine.merge(d)


class FileStats:
    """The counts of one input (or of a byte range of it, to :meth:`merge`)."""

    def __init__(self) -> None:
        self.metrics: Dict[str, MetricStats] = {}
        self.lines = 0            # every line read
        self.data_lines = 0
        self.metadata_lines = 0
        # The thresholds of exact counts (_fit): only ever lowered.
        self.series_limit = EXACT_SERIES
        self.values_limit = EXACT_VALUES
        # The totals _fit weighs, kept up to date block by block, so that a
        # block walks only the counts it touched: walking every key's counts
        # after every block took time quadratic in the input when most lines
        # bring a new key (1M distinct keys: 29 s against 4.7 s for 250k).
        self._series_total = 0
        self._values_total = 0

    # -- counting
    def add_block(self, block: bytes, codec: Any) -> None:
        """Count a block of whole lines (invalid lines are skipped: ``dtproto validate``
        says why)."""
        self.lines += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        series: Dict[str, List[int]] = {}
        values: Dict[Tuple[str, str], Set[str]] = {}
        metrics = self.metrics
        for rec in codec.iter_decode(block, errors="skip"):
            if type(rec) is not Metric:
                self.metadata_lines += 1
                continue
            key = rec[0]
            st = metrics.get(key)
            if st is None:
                st = metrics[key] = MetricStats()
            st.lines += 1
            st.kinds.add(rec[2])
            dims = rec[1]
            if dims:
                d = dict(dims)
                text = key + "\x00" + "\x00".join(sorted([k + "=" + v for k, v in d.items()]))
                for kv in d.items():
                    got = values.get((key, kv[0]))
                    if got is None:
                        values[(key, kv[0])] = {kv[1]}
                    else:
                        got.add(kv[1])
            else:
                text = key
            got_series = series.get(key)
            if got_series is None:
                series[key] = [stable_hash(text)]
            else:
                got_series.append(stable_hash(text))
            self.data_lines += 1
        limit = self.series_limit
        grew = 0
        for key, hashes in series.items():
            grew += _grow(metrics[key].series, hashes, limit)
        self._series_total += grew
        limit = self.values_limit
        grew = 0
        for (key, dkey), vals in values.items():
            dims_of = metrics[key].dims
            dist = dims_of.get(dkey)
            if dist is None:
                dist = dims_of[dkey] = Distinct(hashed=False)
            grew += _grow(dist, vals, limit)
        self._values_total += grew
        # Every count above its threshold is an estimate now (only the ones
        # touched can have grown past it): _fit has more to do only when a
        # total is over its budget and the threshold can still come down.
        if ((self._series_total > EXACT_SERIES and self.series_limit > EXACT_FLOOR)
                or (self._values_total > EXACT_VALUES_TOTAL
                    and self.values_limit > EXACT_FLOOR)):
            self._bound()

    def add_invalid(self, lines: int = 1) -> None:
        """Lines that could not even be read (over-long ones)."""
        self.lines += lines

    def _bound(self) -> None:
        """Switch the counts above the thresholds to estimates (:func:`_fit`),
        walking every count; the totals counted again."""
        metrics = self.metrics.values()
        series = [m.series for m in metrics]
        values = [d for m in metrics for d in m.dims.values()]
        self.series_limit = limit = _fit(series, self.series_limit, EXACT_SERIES)
        self._series_total = sum(_share(d, limit) for d in series)
        self.values_limit = limit = _fit(values, self.values_limit, EXACT_VALUES_TOTAL)
        self._values_total = sum(_share(d, limit) for d in values)

    def merge(self, other: "FileStats") -> None:
        """Add the counts of ``other`` (another range of the same input)."""
        self.lines += other.lines
        self.data_lines += other.data_lines
        self.metadata_lines += other.metadata_lines
        # Each threshold is at least the one of all the input (see _fit).
        self.series_limit = min(self.series_limit, other.series_limit)
        self.values_limit = min(self.values_limit, other.values_limit)
        for key, m in other.metrics.items():
            mine = self.metrics.get(key)
            if mine is None:
                self.metrics[key] = m
            else:
                mine.merge(m)
        self._bound()

    # -- results
    def to_dict(self, name: str, top: int = 10) -> Dict[str, Any]:
        """The JSON document of ``dtproto stats --json`` for this input."""
        metrics = []
        estimated = False
        for key, m in self.metrics.items():
            series = m.series.count()
            estimated = estimated or m.series.estimated
            dims = {k: d.count() for k, d in sorted(m.dims.items())}
            entry: Dict[str, Any] = {
                "key": key, "lines": m.lines, "series": series,
                "series_estimated": m.series.estimated,
                "kinds": sorted(m.kinds), "dimensions": dims,
            }
            est_dims = sorted(k for k, d in m.dims.items() if d.estimated)
            if est_dims:
                entry["dimensions_estimated"] = est_dims
                estimated = True
            metrics.append(entry)
        metrics.sort(key=lambda e: (-e["series"], e["key"]))
        total_series = sum(e["series"] for e in metrics)
        return {
            "file": name,
            "lines": self.lines,
            "data_lines": self.data_lines,
            "metadata_lines": self.metadata_lines,
            "other_lines": self.lines - self.data_lines - self.metadata_lines,
            "metric_keys": len(metrics),
            "series": total_series,
            "estimated": estimated,
            "estimator": ESTIMATOR if estimated else None,
            "top": [e["key"] for e in metrics[:top]],
            "metrics": metrics,
            "warnings": warnings_of(metrics, total_series),
        }


def warnings_of(metrics: List[Dict[str, Any]], total_series: int) -> List[str]:
    """The Dynatrace limits these counts already reach (docs/protocol.md §11).

    The limits are over 30 days: one file's counts are a lower bound.
    """
    out = []
    for e in metrics:
        if e["series"] > LIMIT_SERIES_PER_METRIC:
            worst = max(e["dimensions"].items(), key=lambda kv: kv[1], default=None)
            out.append("metric %s has %s series%s, over the limit of %s per metric (30 days)%s"
                       % (e["key"], format(e["series"], ","),
                          " (estimated)" if e["series_estimated"] else "",
                          format(LIMIT_SERIES_PER_METRIC, ","),
                          "; dimension %s has %s distinct values%s" % (
                              worst[0], format(worst[1], ","),
                              " (estimated)" if worst[0] in e.get("dimensions_estimated", ())
                              else "") if worst else ""))
    if total_series > LIMIT_SERIES_CUSTOM:
        out.append("%s series in all, over the limit of %s for all custom metrics (30 days)"
                   % (format(total_series, ","), format(LIMIT_SERIES_CUSTOM, ",")))
    if len(metrics) > LIMIT_METRIC_KEYS:
        out.append("%s metric keys, over the limit of %s"
                   % (format(len(metrics), ","), format(LIMIT_METRIC_KEYS, ",")))
    return out
