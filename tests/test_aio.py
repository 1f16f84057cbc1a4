"""dtproto.aio: the optional extra, its import error, and what only the async sender has
(async iterables, the background flush task, token hygiene of its objects)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any, List

import pytest
from conftest import NEUTRAL_DIR  # noqa: E402

from dtproto.server import IngestServer
from dtproto.errors import SendError

TOKEN = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.TOPSECRETPARTOFTHETOKEN0123456789"


def test_core_and_sync_sender_import_no_aiohttp() -> None:
    code = ("import sys, dtproto, dtproto.sender, dtproto._send_core\n"
            "dtproto.Sender\n"
            "assert 'aiohttp' not in sys.modules, 'aiohttp imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=NEUTRAL_DIR)


def test_missing_aiohttp_says_what_to_install() -> None:
    code = ("import sys\n"
            "sys.modules['aiohttp'] = None\n"
            "try:\n"
            "    import dtproto.aio\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=NEUTRAL_DIR,
                       timeout=60, env=dict(os.environ))
    assert "pip install dtproto[aio]" in p.stdout, p.stdout + p.stderr


aio = pytest.importorskip("dtproto.aio")
AsyncSender = aio.AsyncSender


def test_async_iterable_of_lines_records_and_bytes() -> None:
    import dtproto

    async def source():
        for i in range(1, 3001):
            if i % 3 == 0:
                yield dtproto.Metric.gauge("r.m", float(i), {"i": str(i)})
            elif i % 3 == 1:
                yield "s.m,i=%d gauge,1" % i
            else:
                yield b"b.m,i=%d gauge,1\n" % i
            if i % 500 == 0:
                await asyncio.sleep(0)

    async def main() -> Any:
        with IngestServer() as srv:
            async with AsyncSender(srv.url, None, concurrency=4, max_bytes=5000) as s:
                r = await s.send(source())
            return r, list(srv.accepted_lines)

    r, stored = asyncio.run(main())
    assert r.ok and r.lines_ok == 3000 and len(r.requests) > 10
    assert len(stored) == 3000 and len(set(stored)) == 3000
    # Input order kept in the line numbers: every line carries its own.
    assert sorted(int(x.split(b"i=")[1].split(b" ")[0].split(b",")[0]) for x in stored) == \
        list(range(1, 3001))


def test_background_task_flushes_a_quiet_producer() -> None:
    async def main() -> Any:
        with IngestServer() as srv:
            async with AsyncSender(srv.url, None, flush_interval=0.1) as s:
                await s.add("a.b 1")
                assert s.pending_lines == 1
                for _ in range(200):
                    await asyncio.sleep(0.01)
                    if s.pending_lines == 0 and s.totals.lines_ok:
                        break
                assert s.pending_lines == 0 and s.totals.lines_ok == 1
            return list(srv.accepted_lines)

    assert asyncio.run(main()) == [b"a.b 1"]


def test_dropped_with_queued_lines_warns_with_the_count() -> None:
    s = AsyncSender("http://127.0.0.1:1/api/v2/metrics/ingest", None, flush_interval=None)
    s._batch.put(b"a.b 1\nc.d 2\n", 2, [])
    with pytest.warns(RuntimeWarning, match="2 queued lines"):
        s.__del__()
    s._closed = True


def _everything_reachable(root: Any, depth: int = 6) -> List[Any]:
    """root and what its exception chain, args and attributes reach (a few levels)."""
    seen: dict = {}
    todo = [(root, 0)]
    while todo:
        v, d = todo.pop()
        if id(v) in seen or d > depth:
            continue
        seen[id(v)] = v
        more: List[Any] = []
        if isinstance(v, BaseException):
            more += [v.__cause__, v.__context__, *v.args]
        if isinstance(v, (list, tuple, set, frozenset)):
            more += list(v)
        elif isinstance(v, dict) or hasattr(v, "items"):
            try:
                more += [x for kv in v.items() for x in kv]
            except Exception:
                pass
        if hasattr(v, "__dict__") and not isinstance(v, type):
            more += list(vars(v).values())
        for name in getattr(type(v), "__slots__", ()) or ():
            more.append(getattr(v, name, None))
        if not isinstance(v, type):   # attrs / namedtuple style objects
            more += [getattr(v, a, None) for a in ("request_info", "headers", "history")]
        todo += [(x, d + 1) for x in more if x is not None]
    return list(seen.values())


def test_token_is_not_in_the_chain_of_a_malformed_answer() -> None:
    # aiohttp's ClientResponseError carries the request's headers (request_info)
    import socket
    import threading

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def serve() -> None:
        c, _ = ls.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            piece = c.recv(65536)
            if not piece:
                break
            data += piece
        c.sendall(b"HTTP/1.1 2x2 Weird\r\nContent-Length: 0\r\n\r\n")
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    url = "http://127.0.0.1:%d/api/v2/metrics/ingest" % ls.getsockname()[1]

    async def main() -> BaseException:
        async with AsyncSender(url, TOKEN, retries=0) as s:
            with pytest.raises(SendError) as info:
                await s.send(b"a.b 1\n")
            return info.value

    try:
        exc = asyncio.run(main())
    finally:
        ls.close()
    assert exc.__cause__ is not None   # the network error is still chained ...
    reached = _everything_reachable(exc)
    assert len(reached) > 5
    for v in reached:                  # ... without the token anywhere in reach
        assert "TOPSECRET" not in repr(v), (type(v), repr(v)[:300])


def test_token_is_never_visible_in_the_async_sender() -> None:
    async def main() -> List[Any]:
        with IngestServer(tokens=TOKEN) as srv:
            s = AsyncSender(srv.url, TOKEN)
            r = await s.send(b"a.b 1\n")
            assert r.ok and srv.requests[-1].auth == "valid"
            seen = [s, *vars(s).values()]
            for v in list(vars(s).values()):
                if hasattr(v, "__dict__"):
                    seen.extend(vars(v).values())
            await s.aclose()
            return seen

    for v in asyncio.run(main()):
        assert "TOPSECRET" not in repr(v)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(AsyncSender("https://abc.live.dynatrace.com/api/v2/metrics/ingest", TOKEN))


def test_an_async_input_that_fails_to_read_after_a_failed_chunk_is_accounted():
    # From a review: the OSError of an async iterable escaped raw, and the
    # DeliveryError of the chunk that failed before it was lost; a sync
    # input's read error is a read failure of the send (input_error).
    from dtproto.errors import DeliveryError
    from dtproto.server import Fault

    async def pieces():
        # 17 pieces: the error comes with a later batch of the input, after
        # the first chunk left; line 2 never ends (the read would decide it)
        for b in b"a.b 1\na.b 2" + b" " * 6:
            yield bytes([b])
        raise OSError(5, "Input/output error")

    async def main() -> Any:
        async with AsyncSender(srv.url, None, max_lines=1, retries=0, concurrency=1) as s:
            with pytest.raises(DeliveryError) as ei:
                await s.send(pieces())
        return ei.value.result

    with IngestServer(faults=[Fault("503", requests={1})]) as srv:
        r = asyncio.run(main())
    assert [(u.first_line, u.last_line, u.status) for u in r.undelivered] == \
        [(1, 1, 503), (2, 2, None)]
    assert r.stopped_at == 3 and r.input_error == "OSError: [Errno 5] Input/output error"
