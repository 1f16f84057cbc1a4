"""The pure-Python Encoder's memos, emptied for a test (tests/test_fastpath.py,
tests/test_differential.py): a test sets them up through a MonkeyPatch, which
puts the module's own memos back afterwards."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from dtproto import _encode_py as _enc


def fresh_memo(mp: Any, small: Optional[int]) -> None:
    """An empty memo, consulted whatever ran before; with ``small``, at most
    ``small`` entries (it starts again empty beyond) and a first-sighting
    table of ``small`` places, so texts also evict each other and collide."""
    memo: dict = {}
    mp.setattr(_enc, "_memo", memo)
    mp.setattr(_enc, "_memo_get", memo.get)
    mp.setattr(_enc, "_memo_stat", [0, 0, 0])
    mp.setattr(_enc, "_memo_rest", iter(()))
    if small is not None:
        mp.setattr(_enc, "_MEMO_MAX", small)
        mp.setattr(_enc, "_MEMO_SEEN_MASK", small - 1)
        mp.setattr(_enc, "_memo_seen", bytearray(small))
    else:
        mp.setattr(_enc, "_memo_seen", bytearray(len(_enc._memo_seen)))


def fresh_escapes(mp: Any, most: Optional[int] = None) -> dict:
    """An empty memo of escaped values (at most ``most`` - 50 before it
    starts again), the memo of texts resting: every line with a value to
    escape goes through _escaped_from_memo."""
    from itertools import repeat

    kept: dict = {}
    mp.setattr(_enc, "_escapes", kept)
    mp.setattr(_enc, "_escapes_get", kept.get)
    mp.setattr(_enc, "_memo_rest", repeat(True))
    if most is not None:
        mp.setattr(_enc, "_ESCAPES_MAX", most)
    return kept


# Dimension values for the memo tests: values to escape, plain ones, invalid
# ones (tab, DEL, lone surrogate, U+2028) and too long ones (256).
ESCAPED_VALUES = ["G1 Old Gen", 'say "hi"', "a,b", "k=v", "C:\\x", "ü c", "x", "y", "",
                  "v" * 255 + " ", "v" * 256, "tab\tx", "\x7f", "\ud800 ", "a\u2028 b", "😀 x"]


def dims_of(pairs: List[Tuple[str, str]]) -> Any:
    """The pairs as a tuple, or as a dict when its keys are distinct and
    there is an odd number of them: both forms in one list of lines."""
    if len(dict(pairs)) == len(pairs) and len(pairs) % 2:
        return dict(pairs)
    return tuple(pairs)
