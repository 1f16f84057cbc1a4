"""An asyncio sender: :class:`AsyncSender`, on aiohttp (``pip install dtproto[aio]``).

The same options, results and errors as :class:`dtproto.Sender`, and the
same I/O-free core (:mod:`dtproto._send_core`: chunking, line numbers, retry
policy, AIMD window, response parsing, accounting); only the transport
differs::

    async with AsyncSender(url, token, concurrency=8) as s:
        result = await s.send(data)

``data`` is anything :meth:`dtproto.Sender.send` takes, or an async
iterable of lines, byte chunks or records.  The batching API is
``await s.add(...)``, ``await s.flush()``, ``await s.aclose()``; with
``flush_interval`` a background task flushes lines left queued that long.

aiohttp cannot always tell "failed while sending" from "sent, then
dropped": every failure after the connection was made is treated as
ambiguous (possibly stored), the safe reading, so it is retried only with
``retry_ambiguous=True``.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from typing import Any, AsyncIterable, Callable, Dict, Optional, Set, Tuple, Union

try:
    import aiohttp
except ImportError as _exc:   # pragma: no cover - depends on the environment
    raise ImportError(
        "dtproto.aio needs aiohttp, an optional dependency: pip install dtproto[aio]"
    ) from _exc

from ._send_core import (
    AUTH_PREFIX,
    DEFAULT_CONCURRENCY,
    MAX_RESPONSE_BYTES,
    SendResult,
    _Attempt,
    _Batch,
    _blocks,
    _configure,
    _Delivery,
    _items,
    _connect_failure,
    _connect_target,
    _proxy_address,
    _proxy_headers,
    _READ_ERRORS,
    _sender_repr,
    _Session,
    _STARVE,
    _UrlHelpers,
    log,
)
from ._constants import MAX_BODY_BYTES
from .errors import ConfigurationError, DeliveryError, DtprotoError, SendError

__all__ = ["AsyncSender"]

# Items taken from an async iterable before the chunker runs again.
_ASYNC_BATCH = 512


class _AsyncInput:
    """An async iterable as the synchronous item stream of :func:`_items`.

    The stream yields ``_STARVE`` when its queue is empty; the driver then
    awaits :meth:`refill` and resumes the same generators.
    """

    def __init__(self, source: AsyncIterable[Any]) -> None:
        self._it = source.__aiter__()
        self._queue: list = []
        self._pos = 0
        self.ended = False
        self._error: Optional[BaseException] = None

    def items(self) -> Any:
        while True:
            if self._pos < len(self._queue):
                item = self._queue[self._pos]
                self._pos += 1
                yield item
            elif self.ended:
                if self._error is not None:
                    # Raised where a sync input's read error is (the session's
                    # _guarded makes it a read failure): after what came before.
                    raise self._error
                return
            else:
                yield _STARVE

    async def refill(self) -> None:
        self._queue = []
        self._pos = 0
        try:
            while len(self._queue) < _ASYNC_BATCH:
                self._queue.append(await self._it.__anext__())
                if isinstance(self._queue[-1], (bytes, bytearray)) and len(self._queue) > 16:
                    break
        except StopAsyncIteration:
            self.ended = True
        except _READ_ERRORS as exc:
            # A read error of the input (an OSError from a file or socket it
            # reads): accounted as a sync input's is (found by a review: it
            # escaped raw, and a chunk's failure before it was lost).
            self._error = exc
            self.ended = True


class _AttemptState:
    """What one attempt got to: when its request headers left, its status."""

    __slots__ = ("sent_at", "status")

    def __init__(self) -> None:
        self.sent_at: Optional[float] = None
        self.status: Optional[int] = None


async def _on_headers_sent(session: Any, ctx: Any, params: Any) -> None:
    state = ctx.trace_request_ctx
    if isinstance(state, _AttemptState):
        state.sent_at = asyncio.get_running_loop().time()


def _trace_config() -> "aiohttp.TraceConfig":
    tc = aiohttp.TraceConfig()
    tc.on_request_headers_sent.append(_on_headers_sent)
    return tc


class AsyncSender(_UrlHelpers):
    """Send protocol lines from asyncio code (see :class:`dtproto.Sender` for
    every option; they mean the same here).

    ``concurrency`` (default 4) requests are in flight at once on as many
    keep-alive connections of one ``aiohttp.ClientSession``, created on first
    use inside the running event loop.  Chunking, encoding and validation run
    on the event loop (they take about 1-10 ms per 1 MB chunk); a synchronous
    file passed as ``data`` is read there too (use an async iterable to keep
    the loop free while waiting for input).
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        max_bytes: int = MAX_BODY_BYTES,
        max_lines: Optional[int] = None,
        gzip: bool = False,
        gzip_level: int = 6,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        retry_budget: float = 120.0,
        retry_ambiguous: bool = False,
        verify: Union[bool, str] = True,
        ssl_context: Any = None,
        proxy: Union[bool, str] = True,
        user_agent: Optional[str] = None,
        flush_bytes: Optional[int] = None,
        flush_lines: Optional[int] = None,
        flush_interval: Optional[float] = 1.0,
        allow_insecure: bool = False,
        check_url: bool = True,
        on_flush: Optional[Callable[[SendResult], None]] = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        validate: bool = False,
        now_ms: Optional[int] = None,
        on_request: Optional[Callable[[Any, int], None]] = None,
    ) -> None:
        _configure(
            self, url, token, max_bytes=max_bytes, max_lines=max_lines, gzip=gzip,
            gzip_level=gzip_level, connect_timeout=connect_timeout, read_timeout=read_timeout,
            retries=retries, backoff_base=backoff_base, backoff_cap=backoff_cap,
            retry_budget=retry_budget, retry_ambiguous=retry_ambiguous, verify=verify,
            ssl_context=ssl_context, proxy=proxy, user_agent=user_agent,
            flush_bytes=flush_bytes, flush_lines=flush_lines, flush_interval=flush_interval,
            allow_insecure=allow_insecure, check_url=check_url, on_flush=on_flush,
            concurrency=concurrency, validate=validate, now_ms=now_ms,
            on_request=on_request)
        scheme = "https" if self._https else "http"
        host = "[%s]" % self._host if ":" in self._host else self._host
        self._target = "%s://%s:%d%s" % (scheme, host, self._port, self._path)
        self._http: Optional[aiohttp.ClientSession] = None
        self._rng = random.Random()
        self._closed = False
        self._batch = _Batch(time.monotonic)
        self._lock: Optional[asyncio.Lock] = None
        self._timer: Optional["asyncio.Task[None]"] = None
        self._background_error: Optional[BaseException] = None
        #: Cumulative :class:`SendResult` of every flush of the batching API.
        self.totals = SendResult()

    def __repr__(self) -> str:
        return _sender_repr(self)

    def __reduce__(self) -> Any:
        raise TypeError("an AsyncSender cannot be pickled or copied (it holds a token and "
                        "connections); create one where it is used")

    # ---------------------------------------------------------------- transport

    def _client(self) -> "aiohttp.ClientSession":
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                limit=self.concurrency, ssl=self._ssl if self._https else False)
            self._http = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                              sock_connect=self.connect_timeout),
                auto_decompress=False,            # never inflate an answer (bounded size)
                skip_auto_headers=("Accept-Encoding",),
                trust_env=False,                  # the proxy is chosen by _configure
                trace_configs=[_trace_config()],
            )
        return self._http

    def _headers(self, size: int) -> Dict[str, str]:
        h = {"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json",
             "User-Agent": self.user_agent, "Content-Length": str(size)}
        if self._token:
            h["Authorization"] = AUTH_PREFIX + (self._token.reveal() or "")
        if self.gzip:
            h["Content-Encoding"] = "gzip"
        return h

    async def _post(self, payload: bytes) -> Tuple[int, Dict[str, str], Optional[bytes]]:
        """One POST: (status, headers, body or None when over MAX_RESPONSE_BYTES),
        or :class:`_Attempt`.

        Deadlines as in the sync sender: ``connect_timeout`` to connect, then
        ``read_timeout`` to send the request, and once it is sent the whole
        answer (status, headers and body) must arrive within ``read_timeout``.
        A failure before the request headers left is safe to retry; any
        failure after that is ambiguous (the server may have stored the lines).
        """
        where = _connect_target(self._host, self._port, self._proxy)
        http = self._client()
        loop = asyncio.get_running_loop()
        proxy = None
        proxy_headers = None
        if self._proxy is not None:
            p = self._proxy
            host, port = _proxy_address(p)
            proxy = "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)
            proxy_headers = _proxy_headers(p) or None
        state = _AttemptState()

        request_headers = self._headers(len(payload))
        if proxy_headers and not self._https:
            # A plain-HTTP request goes to the proxy itself, which wants its
            # credentials on it (as the sync sender sends them); aiohttp puts
            # proxy_headers only on the CONNECT of a tunnel, and sent none here.
            request_headers.update(proxy_headers)

        async def exchange() -> Tuple[int, Dict[str, str], Optional[bytes]]:
            async with http.post(self._target, data=payload, headers=request_headers,
                                 proxy=proxy, proxy_headers=proxy_headers,
                                 allow_redirects=False, trace_request_ctx=state) as resp:
                state.status = resp.status
                headers = {k.lower(): v for k, v in resp.headers.items()}
                if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
                    resp.close()
                    return resp.status, headers, None
                parts = []
                size = 0
                while True:
                    piece = await resp.content.read(65536)
                    if not piece:
                        break
                    parts.append(piece)
                    size += len(piece)
                    if size > MAX_RESPONSE_BYTES:
                        resp.close()
                        return resp.status, headers, None
                return resp.status, headers, b"".join(parts)

        task = asyncio.ensure_future(exchange())
        start = loop.time()
        try:
            while True:
                if state.sent_at is None:
                    deadline = start + self.connect_timeout + self.read_timeout
                else:
                    deadline = state.sent_at + self.read_timeout
                left = max(0.0, deadline - loop.time())
                if state.sent_at is None:
                    left = min(left, 0.02)    # until the request leaves: then its deadline
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    return task.result()
                if loop.time() >= deadline:
                    break
        except asyncio.CancelledError:
            task.cancel()
            raise
        except aiohttp.ClientConnectorCertificateError as exc:
            raise DeliveryError(
                "TLS certificate verification failed for %s: %s (pass verify='/path/to/ca.pem' "
                "for a private CA)" % (where, exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(getattr(exc, "os_error", None), ConnectionRefusedError)
            raise _Attempt(_connect_failure(where, exc, refused, self._proxy is not None),
                           ambiguous=False, cause=_without_credentials(exc)) from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            if state.sent_at is None:
                raise _Attempt("connection failed while sending to %s: %s: %s"
                               % (where, type(exc).__name__, exc), ambiguous=False,
                               cause=_without_credentials(exc)) from None
            raise _Attempt("connection to %s dropped after the request was sent (%s: %s)"
                           % (where, type(exc).__name__, exc), ambiguous=True,
                           cause=_without_credentials(exc)) from None
        # The deadline passed: give the attempt up (its connection is closed).
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        if state.sent_at is None:
            raise _Attempt("cannot send to %s within connect_timeout=%gs + read_timeout=%gs"
                           % (where, self.connect_timeout, self.read_timeout),
                           ambiguous=False, cause=asyncio.TimeoutError()) from None
        if state.status is None:
            raise _Attempt("no response from %s within read_timeout=%gs after the request "
                           "was sent" % (where, self.read_timeout), ambiguous=True,
                           cause=asyncio.TimeoutError()) from None
        raise _Attempt("HTTP %d from %s, but the response was not complete within "
                       "read_timeout=%gs after the request was sent"
                       % (state.status, where, self.read_timeout), ambiguous=True,
                       cause=asyncio.TimeoutError()) from None

    async def _deliver(self, d: _Delivery) -> _Delivery:
        loop = asyncio.get_running_loop()
        while True:
            d.begin()
            try:
                status, headers, body = await self._post(d.payload)
            except _Attempt as exc:
                delay = d.on_failure(exc, loop.time())
            except SendError as exc:
                d.on_fatal(exc, loop.time())
                return d
            else:
                delay = d.on_response(status, headers, body, loop.time())
            if delay is None:
                return d
            await asyncio.sleep(delay)

    async def _run(self, session: _Session, feed: Optional[_AsyncInput]) -> SendResult:
        try:
            stopped_at = await self._drive(session, feed)
        except BaseException as exc:   # a cancellation: the result so far goes with it
            session.interrupt(exc)
            raise
        return session.finish(stopped_at)  # type: ignore[arg-type]

    async def _drive(self, session: _Session, feed: Optional[_AsyncInput]) -> Optional[int]:
        """Run the session's chunks (see :meth:`dtproto.Sender._run`); the
        first line never attempted after a failure, or None."""
        tasks: Set["asyncio.Task[_Delivery]"] = set()
        try:
            while True:
                # What finished is settled now (its on_request too), not only
                # when the window is full.
                for t in [t for t in tasks if t.done()]:
                    tasks.discard(t)
                    session.complete(t.result())
                while tasks and (not session.room() or session.failed):
                    done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        session.complete(t.result())
                if session.failed:
                    break
                d = session.next_delivery()
                if d is _STARVE:
                    assert feed is not None
                    await feed.refill()
                    continue
                if d is None:
                    break
                tasks.add(asyncio.ensure_future(self._deliver(d)))  # type: ignore[arg-type]
                log.debug("%d requests in flight (window %d of %d)", len(tasks),
                          session.window.size, session.window.limit)
        finally:
            # The chunks in flight finish and are accounted for, whatever
            # happened; cancelled again while waiting, the rest are cancelled
            # too (reported as ambiguous when their request had begun).
            try:
                for t in list(tasks):
                    session.complete(await t)
            except BaseException:
                for t in tasks:
                    t.cancel()
                raise
        stopped_at = None
        if session.failed:
            while True:
                x = session.stop_line()
                if x is _STARVE:
                    assert feed is not None
                    await feed.refill()
                    continue
                stopped_at = x
                break
        return stopped_at  # type: ignore[return-value]

    def _session(self, blocks: Any, first_line: int) -> _Session:
        return _Session(self, blocks, first_line, self._rng, time.monotonic)

    # ---------------------------------------------------------------- public API

    async def send(self, data: Any) -> SendResult:
        """Send ``data`` and return what happened to every line (see
        :meth:`dtproto.Sender.send`; an async iterable of lines, byte chunks or
        records is accepted as well)."""
        self._check_open()
        feed = None
        if hasattr(data, "__aiter__"):
            feed = _AsyncInput(data)
            blocks = _items(feed.items())
        else:
            blocks = _blocks(data)
        return await self._run(self._session(blocks, 1), feed)

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def add(self, item: Any) -> Optional[SendResult]:
        """Queue one record or protocol text (see :meth:`dtproto.Sender.add`)."""
        self._check_open()
        data, lines, bad = _Batch.encode(item)
        if not data:
            return None
        async with self._get_lock():
            self._check_open()   # again: an aclose() may have finished while this waited
            batch = self._batch
            out: Optional[SendResult] = None
            try:
                self._raise_background_error()
                if batch.would_overflow(self, len(data), lines):
                    out = await self._flush_locked()
            except SendError as exc:
                exc.unsent = (exc.unsent or b"") + data
                raise
            except BaseException:   # a cancelled flush: the item is queued after its lines
                batch.put(data, lines, bad)
                raise
            batch.put(data, lines, bad)
            self._start_timer()
            if batch.due(self):
                r = await self._flush_locked()
                if out is None:
                    out = r
                else:
                    out.merge(r)
            return out

    @property
    def pending_bytes(self) -> int:
        return len(self._batch.pending)

    @property
    def pending_lines(self) -> int:
        return self._batch.lines

    async def flush(self) -> SendResult:
        """Send everything queued by :meth:`add` now (see :meth:`dtproto.Sender.flush`)."""
        async with self._get_lock():
            self._raise_background_error()
            return await self._flush_locked()

    async def _flush_locked(self) -> SendResult:
        body, rejects, first = self._batch.take()
        if not body:
            return SendResult()
        try:
            result = await self._run(self._session(_Batch.blocks(body, rejects), first), None)
        except SendError as exc:
            exc.unsent = _Batch.unsent(body, first, exc.result)
            if exc.result is not None:
                self.totals.merge(exc.result)
            raise
        except BaseException as exc:   # a cancellation: nothing queued is dropped
            self._batch.interrupted(self, exc, body, rejects, first)
            raise
        self.totals.merge(result)
        if self.on_flush is not None:
            self.on_flush(result)
        return result

    def _raise_background_error(self) -> None:
        exc, self._background_error = self._background_error, None
        if exc is not None:
            raise exc

    def _start_timer(self) -> None:
        if self._timer is None and self.flush_interval is not None:
            self._timer = asyncio.ensure_future(_flush_task(weakref.ref(self)))

    async def aclose(self) -> SendResult:
        """Flush what is queued, then close the connections. Idempotent.

        Cancelled (a timeout around it) before its final flush began, it
        changes nothing: a background flush under way goes on.  Cancelled
        during it, the lines not sent stay queued and the sender open, so
        that ``aclose()`` again sends them (and garbage collection warns).
        """
        if self._closed:
            return SendResult()
        async with self._get_lock():
            if self._closed:   # closed by another aclose() while this one waited
                return SendResult()
            try:
                self._raise_background_error()
                return await self._flush_locked()
            finally:
                # Decided here, holding the lock: what a background flush has
                # taken is not in the batch until it is done with it.
                self._closed = not self._batch.lines
                if self._closed:
                    if self._timer is not None:
                        self._timer.cancel()
                        self._timer = None
                    if self._http is not None:
                        await self._http.close()
                        self._http = None
                else:
                    log.warning("aclose() did not finish: %d lines still queued; aclose() "
                                "again sends them", self._batch.lines)

    def _check_open(self) -> None:
        if self._closed:
            raise DtprotoError("this AsyncSender is closed")

    async def __aenter__(self) -> "AsyncSender":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Queued lines are never dropped silently: the event loop may be gone,
        # so say how many there are.
        try:
            lines = self._batch.lines
        except AttributeError:
            return
        if lines and not self._closed:
            import warnings
            warnings.warn("AsyncSender for %s dropped with %d queued lines never flushed "
                          "(await aclose() or use 'async with')" % (self.url, lines),
                          RuntimeWarning, stacklevel=2)


# Request headers that hold credentials: the API token, a proxy's.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})


def _without_credentials(exc: BaseException) -> BaseException:
    """``exc`` to chain to a SendError: an aiohttp error that carries the
    request (``request_info``: a malformed answer, a proxy's refusal) holds
    its headers, the token among them, so a copy without those headers
    stands in for it; its traceback and context go (they reach the
    original)."""
    info = getattr(exc, "request_info", None)
    if info is None or not isinstance(exc, aiohttp.ClientResponseError):
        return exc
    try:
        from multidict import CIMultiDict, CIMultiDictProxy   # aiohttp's own dependency

        headers = CIMultiDictProxy(CIMultiDict(
            (k, v) for k, v in info.headers.items() if k.lower() not in _CREDENTIAL_HEADERS))
        clean = aiohttp.RequestInfo(info.url, info.method, headers, info.real_url)
        return type(exc)(clean, (), status=exc.status, message=exc.message,
                         headers=exc.headers)
    except Exception:   # another aiohttp's signature: the words only, no request
        return aiohttp.ClientError("%s: %s" % (type(exc).__name__, exc))


async def _flush_task(ref: "weakref.ReferenceType[AsyncSender]") -> None:
    """The background flush task: holds the sender only while it checks."""
    s = ref()
    if s is None or s.flush_interval is None:
        return
    wait_for = s.flush_interval
    del s
    while True:
        await asyncio.sleep(wait_for)
        s = ref()
        if s is None or s._closed:
            return
        interval = s.flush_interval or 1.0
        async with s._get_lock():
            batch = s._batch
            if batch.pending and s._background_error is None and batch.due(s):
                try:
                    await s._flush_locked()
                except Exception as exc:
                    s._background_error = exc
                    log.warning("background flush failed (raised by the next add/flush/aclose): "
                                "%s", exc)
            wait_for = max(0.01, batch.last_flush + interval - time.monotonic())
        del s
