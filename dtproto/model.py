"""The record types ``decode`` returns and ``encode`` accepts, defined once.

Both implementations construct exactly these classes, so
``type(decode(b)[0])`` never depends on which implementation is loaded.

Records are immutable tuple subclasses: construction is a single
``tuple.__new__`` call (the hot path of every decoder), and equality, hashing
and pickling come from the tuple.  Equality also compares the type, so a
:class:`Metric` never equals a plain tuple or a :class:`Metadata`.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

from ._constants import (
    KIND_COUNT,
    KIND_GAUGE,
    KIND_SUMMARY,
    KINDS,
    META_DESCRIPTION,
    META_DISPLAY_NAME,
    META_DISPLAY_NAME_ALT,
    META_TYPES,
    META_UNIT,
)

__all__ = ["Metric", "Metadata", "Dimensions", "Record"]

Dimensions = Tuple[Tuple[str, str], ...]
DimensionsLike = Union[Mapping[str, str], Iterable[Tuple[str, str]], None]

_tuple_new = tuple.__new__
_tuple_eq = tuple.__eq__
_tuple_ne = tuple.__ne__
_tuple_hash = tuple.__hash__


def as_dimensions(dimensions: DimensionsLike) -> Dimensions:
    """Turn a mapping or an iterable of pairs into a tuple of ``(str, str)`` pairs."""
    if dimensions is None:
        return ()
    if isinstance(dimensions, Mapping):
        items: Iterable[Any] = dimensions.items()
    else:
        items = dimensions
    out = []
    for pair in items:
        k, v = pair
        out.append((k, v))
    return tuple(out)


def _number(x: Any) -> Optional[float]:
    # Values are IEEE doubles on the wire (§7.1); store them as float so that
    # decode(encode(m)) == m holds and repr is stable.  bool is not a number here.
    if x is None:
        return None
    if isinstance(x, bool):
        raise TypeError("a metric value must be a number, not bool")
    return float(x)


class _SummaryCount:
    """``Metric.count``: the summary's count field on a record.

    On the class it is not a constructor (the three kinds are built with
    ``Metric.gauge``, ``Metric.delta`` and ``Metric.summary_of``): calling it
    says which one is meant instead of failing with "'property' object is not
    callable".
    """

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is not None:
            return tuple.__getitem__(obj, 7)

        def count(*args: Any, **kwargs: Any) -> Any:
            raise TypeError(
                "Metric.count is the count field of a summary, not a constructor: build a "
                "count data point with Metric.delta(key, delta, dimensions, timestamp), a "
                "summary with Metric.summary_of(key, min, max, sum, count, ...)")

        return count


class Metric(tuple):
    """One data point (an immutable tuple of nine fields).

    Build one with the constructor of its kind:

    * ``Metric.gauge(key, value, dimensions=None, timestamp=None)``
    * ``Metric.delta(key, delta, dimensions=None, timestamp=None)`` — a ``count,delta=``
    * ``Metric.summary_of(key, min, max, sum, count, dimensions=None, timestamp=None)``

    Attributes:
        key: the metric key as written (see :func:`dtproto.classic_key`).
        dimensions: ``(key, value)`` pairs in wire order, duplicates kept,
            values unescaped.
        kind: ``"gauge"``, ``"count"`` or ``"summary"``.
        value: the gauge value or the count delta; ``None`` for a summary.
        min, max, sum, count: the summary fields (``None`` unless a summary).
        timestamp: UTC epoch milliseconds, or ``None``.
    """

    __slots__ = ()

    def __new__(
        cls,
        key: str,
        dimensions: DimensionsLike = (),
        kind: str = KIND_GAUGE,
        value: Optional[float] = None,
        min: Optional[float] = None,
        max: Optional[float] = None,
        sum: Optional[float] = None,
        count: Optional[int] = None,
        timestamp: Optional[int] = None,
    ) -> "Metric":
        if kind not in KINDS:
            raise ValueError("kind must be one of %r, not %r" % (KINDS, kind))
        return _tuple_new(
            cls,
            (
                key,
                as_dimensions(dimensions),
                kind,
                _number(value),
                _number(min),
                _number(max),
                _number(sum),
                count,
                timestamp,
            ),
        )

    @classmethod
    def gauge(
        cls, key: str, value: float, dimensions: DimensionsLike = None,
        timestamp: Optional[int] = None,
    ) -> "Metric":
        """A gauge data point."""
        return cls(key, dimensions, KIND_GAUGE, value, timestamp=timestamp)

    @classmethod
    def delta(
        cls, key: str, delta: float, dimensions: DimensionsLike = None,
        timestamp: Optional[int] = None,
    ) -> "Metric":
        """A ``count,delta=`` data point."""
        return cls(key, dimensions, KIND_COUNT, delta, timestamp=timestamp)

    @classmethod
    def summary_of(
        cls, key: str, min: float, max: float, sum: float, count: int,
        dimensions: DimensionsLike = None, timestamp: Optional[int] = None,
    ) -> "Metric":
        """A pre-aggregated ``gauge,min=,max=,sum=,count=`` data point."""
        return cls(key, dimensions, KIND_SUMMARY, None, min, max, sum, count, timestamp)

    key: str = property(itemgetter(0))  # type: ignore[assignment]
    dimensions: Dimensions = property(itemgetter(1))  # type: ignore[assignment]
    kind: str = property(itemgetter(2))  # type: ignore[assignment]
    value: Optional[float] = property(itemgetter(3))  # type: ignore[assignment]
    min: Optional[float] = property(itemgetter(4))  # type: ignore[assignment]
    max: Optional[float] = property(itemgetter(5))  # type: ignore[assignment]
    sum: Optional[float] = property(itemgetter(6))  # type: ignore[assignment]
    count: Optional[int] = _SummaryCount()  # type: ignore[assignment]
    timestamp: Optional[int] = property(itemgetter(8))  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and _tuple_eq(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return _tuple_hash(self)

    def __repr__(self) -> str:
        parts = ["key=%r" % (self[0],)]
        if self[1]:
            parts.append("dimensions=%r" % (self[1],))
        parts.append("kind=%r" % (self[2],))
        if self[2] == KIND_SUMMARY:
            parts.append("min=%r, max=%r, sum=%r, count=%r" % self[4:8])
        else:
            parts.append("value=%r" % (self[3],))
        if self[8] is not None:
            parts.append("timestamp=%r" % (self[8],))
        return "Metric(%s)" % ", ".join(parts)

    def __reduce__(self) -> Any:
        return (_make_metric, (tuple(self),))

    def dimension_dict(self) -> dict:
        """Dimensions as a dict; for a duplicated key the last value wins [A-7]."""
        return dict(self[1])


def _make_metric(fields: tuple) -> Metric:
    return _tuple_new(Metric, fields)


class Metadata(tuple):
    """A metadata line (``#key gauge dt.meta.displayName=...``).

    Attributes:
        key: the metric key as written.
        metric_type: ``"gauge"`` or ``"count"`` (``count`` addresses ``<key>.count``).
        properties: ``(name, value)`` pairs in wire order, names as written.
    """

    __slots__ = ()

    def __new__(
        cls, key: str, metric_type: str = KIND_GAUGE,
        properties: DimensionsLike = (),
    ) -> "Metadata":
        if metric_type not in META_TYPES:
            raise ValueError("metric_type must be 'gauge' or 'count', not %r" % (metric_type,))
        return _tuple_new(cls, (key, metric_type, as_dimensions(properties)))

    key: str = property(itemgetter(0))  # type: ignore[assignment]
    metric_type: str = property(itemgetter(1))  # type: ignore[assignment]
    properties: Dimensions = property(itemgetter(2))  # type: ignore[assignment]

    def _first(self, *names: str) -> Optional[str]:
        for name, value in self[2]:
            if name in names:
                return value
        return None

    @property
    def display_name(self) -> Optional[str]:
        """The first ``dt.meta.displayName`` (or ``displayname``) value, if any."""
        return self._first(META_DISPLAY_NAME, META_DISPLAY_NAME_ALT)

    @property
    def description(self) -> Optional[str]:
        """The first ``dt.meta.description`` value, if any."""
        return self._first(META_DESCRIPTION)

    @property
    def unit(self) -> Optional[str]:
        """The first ``dt.meta.unit`` value, if any."""
        return self._first(META_UNIT)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and _tuple_eq(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return _tuple_hash(self)

    def __repr__(self) -> str:
        return "Metadata(key=%r, metric_type=%r, properties=%r)" % tuple(self)

    def __reduce__(self) -> Any:
        return (_make_metadata, (tuple(self),))


def _make_metadata(fields: tuple) -> Metadata:
    return _tuple_new(Metadata, fields)


Record = Union[Metric, Metadata]
