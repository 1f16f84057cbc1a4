# Stub of the compiled module dtproto._codec_c (csrc/_codec_c.pyx).
# Checked against the built extension by `python -m mypy.stubtest dtproto._codec_c`.
# Docstrings live in dtproto/_codec_py.py (the reference); signatures match it.
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

from typing_extensions import disjoint_base

from .model import Record
from .normalize import NormalizationLog
from .report import ValidationReport

__all__ = ["decode", "iter_decode", "validate", "encode", "Encoder", "classic_key"]

def decode(data: Union[bytes, bytearray, memoryview, str], *, now_ms: Optional[int] = ...) -> List[Record]: ...
def iter_decode(source: Any, *, now_ms: Optional[int] = ..., errors: str = ...) -> Iterator[Record]: ...
def validate(
    source: Any,
    *,
    now_ms: Optional[int] = ...,
    max_errors: Optional[int] = ...,
    max_warnings: Optional[int] = ...,
) -> ValidationReport: ...
def encode(records: Iterable[Record]) -> bytes: ...
def classic_key(key: str, kind: str) -> str: ...

# dtproto.arrow.encode_table's column encoder (csrc/_columns.pxi); its docstring is the contract.
def encode_columns(
    batches: List[Tuple[int, List[Tuple[Any, Any]], List[Any]]],
    specs: List[Tuple[Any, Any, Any]],
    dims: List[Tuple[str, int]],
    ts_col: int,
    kind: int,
    nfloat: int,
    na: Any,
) -> Tuple[int, Any, int, int, int, bool]: ...
def _format_float(v: float) -> Optional[str]: ...

@disjoint_base
class Encoder:
    def __init__(
        self,
        prefix: Optional[str] = ...,
        default_dimensions: Any = ...,
        static_dimensions: Any = ...,
        normalize: bool = ...,
        oneagent_enrichment: bool = ...,
    ) -> None: ...
    @property
    def normalizations(self) -> NormalizationLog: ...
    def gauge(self, key: str, value: float, dimensions: Any = ..., timestamp: Optional[int] = ...) -> None: ...
    def count(self, key: str, delta: float, dimensions: Any = ..., timestamp: Optional[int] = ...) -> None: ...
    def summary(
        self,
        key: str,
        min: float,
        max: float,
        sum: float,
        count: int,
        dimensions: Any = ...,
        timestamp: Optional[int] = ...,
    ) -> None: ...
    def metadata(
        self,
        key: str,
        metric_type: str,
        display_name: Optional[str] = ...,
        description: Optional[str] = ...,
        unit: Optional[str] = ...,
    ) -> None: ...
    def add(self, record: Record) -> None: ...
    def getvalue(self) -> bytes: ...
    def clear(self) -> None: ...
    @property
    def lines(self) -> int: ...
    def __len__(self) -> int: ...
