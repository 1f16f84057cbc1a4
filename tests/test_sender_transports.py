"""Both transports behind one interface, for the sender tests.

``open_sender("sync", ...)`` is a :class:`dtproto.Sender`;
``open_sender("async", ...)`` an :class:`dtproto.aio.AsyncSender` behind
:class:`AsyncAdapter`, which runs it on an event loop of its own (in a
thread, so its background flush task runs between calls) and exposes the
blocking ``send``/``add``/``flush``/``close``.  The sender test modules
import the autouse ``transport`` fixture, so every test there runs over
both (the same scenarios; the policy behind them is one core).

The module holds no tests of its own apart from the adapter's.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from dtproto.sender import Sender

try:
    from dtproto.aio import AsyncSender
except ImportError:   # aiohttp missing: the async runs are skipped
    AsyncSender = None  # type: ignore[assignment,misc]

TRANSPORTS = ["sync", "async"]


class AsyncAdapter:
    """An AsyncSender with the blocking interface of a Sender."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.aio = AsyncSender(*args, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @classmethod
    def oneagent(cls, *args: Any, **kwargs: Any) -> "AsyncAdapter":
        s = AsyncSender.oneagent(*args, **kwargs)
        self = cls.__new__(cls)
        self.aio = s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def send(self, data: Any) -> Any:
        return self._call(self.aio.send(data))

    def add(self, item: Any) -> Any:
        return self._call(self.aio.add(item))

    def flush(self) -> Any:
        return self._call(self.aio.flush())

    def close(self) -> Any:
        if self._loop.is_closed():
            return self.aio.totals.__class__()
        try:
            return self._call(self.aio.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def idle(self) -> None:
        """Wait until no flush runs (the background task's included)."""
        async def wait() -> None:
            async with self.aio._get_lock():
                pass
        self._call(wait())

    def __repr__(self) -> str:
        return repr(self.aio)

    def __reduce__(self) -> Any:
        return self.aio.__reduce__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.aio, name)

    def __enter__(self) -> "AsyncAdapter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SyncSender(Sender):
    def idle(self) -> None:
        with self._lock:
            pass


CURRENT = {"transport": "sync"}


def sender_class() -> Any:
    return AsyncAdapter if CURRENT["transport"] == "async" else SyncSender


def open_sender(*args: Any, **kwargs: Any) -> Any:
    """A sender of the transport under test."""
    return sender_class()(*args, **kwargs)


@pytest.fixture(params=TRANSPORTS, autouse=True)
def transport(request: Any) -> Any:
    if request.param == "async" and AsyncSender is None:
        pytest.skip("aiohttp is not installed (pip install dtproto[aio])")
    CURRENT["transport"] = request.param
    yield request.param
    CURRENT["transport"] = "sync"


def test_adapter_sends_over_the_transport_under_test(transport):
    from dtproto.server import IngestServer
    with IngestServer() as srv:
        with open_sender(srv.url, None) as s:
            assert s.send(b"a.b 1\n").lines_ok == 1
        assert isinstance(s, AsyncAdapter) == (transport == "async")
