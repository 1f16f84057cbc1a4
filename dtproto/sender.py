"""A thin, streaming HTTP sender for ``POST /api/v2/metrics/ingest`` (docs/protocol.md §10).

Pure Python on the standard library (``http.client``, worker threads for
``concurrency > 1``); no runtime dependency.  The chunking, accounting, retry
policy and response parsing live in the I/O-free :mod:`dtproto._send_core`,
which :class:`dtproto.aio.AsyncSender` drives as well.

What it guarantees:

* **Chunking.** Input is streamed into request bodies of at most ``max_bytes``
  (default 1,000,000 bytes, *uncompressed*) and at most ``max_lines`` lines
  (off by default; forced to 1,000 for the OneAgent local endpoint).  A chunk
  always ends at a line boundary, so no line is ever split.  Memory stays
  bounded by about one chunk plus one read block, whatever the input size.
* **Line numbers.** Every line the server rejects or warns about is reported
  with its line number in *your* input (1-based).  The server numbers lines
  1-based within each request body, counting blank and metadata lines
  (docs/protocol.md §10.3); the sender forwards blank lines unchanged, so the
  mapping is ``input_line = first_line_of_chunk + server_line - 1``.
* **Oversized lines.** A line whose bytes plus its newline exceed
  ``max_bytes`` can never be delivered: it is reported as rejected by the
  client (``InvalidLine.source == "client"``) with its line number and is
  never sent.
* **Retries.** 429, 500, 502, 503, 504 and connection failures are retried
  with exponential backoff and full jitter; ``Retry-After`` is honoured up to
  the backoff cap; a per-request time budget bounds the whole thing.  400,
  401, 403, 404, 405 and 413 are never retried.
* **Exactly once, or said so.** A failure *after* the whole request was
  handed to the network (a read timeout, or the connection dropped before a
  response arrived) is *ambiguous*: the server may already have stored the
  lines.  Re-sending then can duplicate ``count,delta`` lines (and add extra
  gauge samples), so it is only done with ``retry_ambiguous=True``.  By
  default such a chunk is reported as not delivered, with
  ``Undelivered.ambiguous == True``.
* **No silent loss.** A chunk that cannot be delivered stops the send and
  raises a :class:`~dtproto.errors.SendError` subclass whose ``result``
  attribute holds everything known so far (what was accepted, rejected,
  and which input lines were not delivered, and why).
* **Untrusted answers.**  Each answer is read up to ``MAX_RESPONSE_BYTES``
  and must be complete within ``read_timeout``; an answer that is not a
  usable ValidationResponse stops the send with a ``SendError`` (the lines
  may be stored: ``ambiguous``).  Line numbers outside the request are
  ignored and counts are clamped to it.
* **Token hygiene.** The API token is never part of a ``repr``, a log record
  or an exception message.

Threads: with ``concurrency > 1`` a pool of worker threads carries the
requests; with ``flush_interval`` set, the batching API (:meth:`Sender.add`)
starts one background thread that flushes lines left queued that long.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import io
import random
import select
import socket
import ssl
import threading
import time
import warnings
import weakref
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from ._constants import MAX_BODY_BYTES
from ._send_core import (  # noqa: F401  (re-exported: the names have always lived here)
    AUTH_PREFIX,
    DEFAULT_CONCURRENCY,
    INGEST_PATH,
    MAX_CONCURRENCY,
    MAX_RESPONSE_BYTES,
    ONEAGENT_PATH,
    ONEAGENT_PORT,
    RETRY_STATUSES,
    TOKEN_ENV,
    URL_ENV,
    InvalidLine,
    RequestInfo,
    SendResult,
    Undelivered,
    WarnedLine,
    _READ_BLOCK,
    _READ_ERRORS,
    _Attempt,
    _Batch,
    _BadLine,
    _blocks,
    _Chunk,
    _chunk_stream,
    _configure,
    _Delivery,
    _env_id,
    _is_loopback,
    _items,
    _next_line,
    _proxy_address,
    _proxy_headers,
    _Reject,
    _Rejected,
    _ReadFailed,
    _connect_failure,
    _connect_target,
    _safe_url,
    _Secret,
    _sender_repr,
    _Session,
    _UrlHelpers,
    _text_lines,
    _TextEncoder,
    _with_rejects,
    env_settings,
    ingest_url,
    log,
    only_blank_lines,
)
from .errors import (
    AuthenticationError,
    ConfigurationError,
    DeliveryError,
    DtprotoError,
    EndpointNotFoundError,
    InputReadError,
    MissingScopeError,
    PayloadTooLargeError,
    SendError,
)

__all__ = [
    "Sender",
    "SendResult",
    "RequestInfo",
    "InvalidLine",
    "WarnedLine",
    "Undelivered",
    "ConfigurationError",
    "AuthenticationError",
    "MissingScopeError",
    "EndpointNotFoundError",
    "PayloadTooLargeError",
    "DeliveryError",
    "InputReadError",
    "ingest_url",
    "INGEST_PATH",
    "ONEAGENT_PATH",
    "ONEAGENT_PORT",
    "RETRY_STATUSES",
    "URL_ENV",
    "TOKEN_ENV",
    "env_settings",
    "MAX_RESPONSE_BYTES",
]

# The exception classes live in dtproto.errors; ``_SendFailure`` is the old
# name of their base.
_SendFailure = SendError


# --------------------------------------------------------------------------- transport


class _Deadline:
    """The absolute time (``time.monotonic()``) by which the answer must be read."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: Optional[float] = None


class _DeadlineReader(io.RawIOBase):
    """Raw reader over a socket that gives every ``recv`` only the time left.

    ``http.client`` has one timeout per socket operation, so a server that
    trickles its answer a byte at a time would never time out.  With this
    reader under the response, status line, headers and body together must
    arrive before the deadline.
    """

    def __init__(self, sock: Any, raw: Any, deadline: _Deadline) -> None:
        super().__init__()
        self._sock = sock
        # The socket's own raw reader (from makefile): it keeps the socket
        # open while the response is read, even after the connection object
        # closed it ("Connection: close").
        self._raw = raw
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> Optional[int]:
        at = self._deadline.at
        if at is not None:
            left = at - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self._sock.settimeout(left)
        return self._raw.readinto(b)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """An ``HTTPResponse`` that reads through a :class:`_DeadlineReader`."""

    def __init__(self, sock: Any, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        raw = self.fp.detach()   # type: ignore[attr-defined]
        self.fp = io.BufferedReader(_DeadlineReader(sock, raw, deadline))


def _read_answer(resp: http.client.HTTPResponse) -> Optional[bytes]:
    """The response body, or None when it is larger than MAX_RESPONSE_BYTES.

    Memory stays bounded whatever the server sends (a huge Content-Length, an
    endless chunked body); the deadline of the reader bounds the time.
    """
    if resp.length is not None and resp.length > MAX_RESPONSE_BYTES:
        return None
    data = resp.read(MAX_RESPONSE_BYTES + 1)
    if len(data) > MAX_RESPONSE_BYTES:
        return None
    if resp.length:   # the connection closed before Content-Length bytes came
        raise http.client.IncompleteRead(data, resp.length)
    return data



def _close_quietly(resp: Optional[http.client.HTTPResponse]) -> None:
    # A response given up on: release its socket now, not whenever the
    # garbage collector finds it (an exception chain can keep it alive).
    if resp is not None:
        try:
            resp.close()
        except Exception:
            pass



class _Connection:
    """One keep-alive ``http.client`` connection to the endpoint of a sender
    (each request in flight has its own)."""

    def __init__(self, s: Any) -> None:
        self._s = s
        self._conn: Optional[http.client.HTTPConnection] = None
        self._deadline = _Deadline()

    def _connection(self) -> http.client.HTTPConnection:
        s = self._s
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # A pooled connection the server closed while idle is readable
            # (EOF): detect that before writing, so a stale keep-alive
            # connection never turns into an ambiguous failure (urllib3 does
            # the same check).
            try:
                readable = select.select([conn.sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [True]
            if not readable:
                return conn
            conn.close()
        elif conn is not None:
            conn.close()
        self._conn = None
        p = s._proxy
        if p is not None:
            host, port = _proxy_address(p)
        else:
            host, port = s._host, s._port
        if s._https:
            conn = http.client.HTTPSConnection(host, port, timeout=s.connect_timeout,
                                               context=s._ssl)
            if p is not None:
                conn.set_tunnel(s._host, s._port, headers=_proxy_headers(p))
        else:
            conn = http.client.HTTPConnection(host, port, timeout=s.connect_timeout)
        conn.response_class = functools.partial(_Response, deadline=self._deadline)  # type: ignore[assignment]
        conn.connect()
        # Separate read timeout: http.client has a single timeout, which was
        # the connect timeout until now.
        if conn.sock is not None:
            conn.sock.settimeout(s.read_timeout)
            try:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def post(self, payload: bytes) -> Tuple[int, Dict[str, str], Optional[bytes]]:
        """One POST; returns (status, headers, body) or raises :class:`_Attempt`.

        ``body`` is None when the answer was larger than ``MAX_RESPONSE_BYTES``
        (a protocol error; the connection is dropped).
        """
        s = self._s
        where = _connect_target(s._host, s._port, s._proxy)
        self._deadline.at = None
        try:
            conn = self._connection()
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise DeliveryError(
                "TLS certificate verification failed for %s: %s (pass verify='/path/to/ca.pem' "
                "for a private CA)" % (where, exc.verify_message or exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _Attempt(_connect_failure(where, exc, isinstance(exc, ConnectionRefusedError),
                                            s._proxy is not None),
                           ambiguous=False, cause=exc) from None
        target = s._path
        if s._proxy is not None and not s._https:
            target = "http://%s:%d%s" % (s._host, s._port, s._path)
        try:
            if conn.sock is not None:
                conn.sock.settimeout(s.read_timeout)   # the previous answer's deadline
            conn.putrequest("POST", target, skip_accept_encoding=True)
            conn.putheader("Content-Type", "text/plain; charset=utf-8")
            conn.putheader("Accept", "application/json")
            conn.putheader("User-Agent", s.user_agent)
            if s._token:
                # No local variable: a traceback's frames must not hold the token.
                conn.putheader("Authorization", AUTH_PREFIX + (s._token.reveal() or ""))
            if s.gzip:
                conn.putheader("Content-Encoding", "gzip")
            if s._proxy is not None and not s._https:
                for k, v in _proxy_headers(s._proxy).items():
                    conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(payload)))
            conn.endheaders(payload)
        except (OSError, http.client.HTTPException) as exc:
            # The request did not leave completely, so the server cannot have
            # processed it: retrying is safe.  The server may still have
            # answered early (e.g. 413 before reading the body); use that.
            early = self._early_response(conn)
            if early is not None:
                return early
            self.close()
            raise _Attempt("connection failed while sending to %s: %s: %s"
                           % (where, type(exc).__name__, exc), ambiguous=False,
                           cause=exc) from None
        # From here on the whole answer (status, headers, body) must arrive
        # within read_timeout: a server trickling it byte by byte is abandoned.
        self._deadline.at = time.monotonic() + s.read_timeout
        resp = None
        try:
            resp = conn.getresponse()
            data = _read_answer(resp)
        except socket.timeout as exc:
            self.close()
            _close_quietly(resp)
            if resp is None:
                raise _Attempt("no response from %s within read_timeout=%gs after the request "
                               "was sent" % (where, s.read_timeout), ambiguous=True,
                               cause=exc) from None
            raise _Attempt("HTTP %d from %s, but the response was not complete within "
                           "read_timeout=%gs after the request was sent"
                           % (resp.status, where, s.read_timeout), ambiguous=True,
                           cause=exc) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            _close_quietly(resp)
            raise _Attempt("connection to %s dropped after the request was sent (%s: %s)"
                           % (where, type(exc).__name__, exc), ambiguous=True,
                           cause=exc) from None
        finally:
            self._deadline.at = None
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if data is None or resp.will_close:
            self.close()
            _close_quietly(resp)
        return resp.status, headers, data

    def _early_response(self, conn: http.client.HTTPConnection) -> Optional[Tuple[int, Dict[str, str], Optional[bytes]]]:
        try:
            if conn.sock is None:
                return None
            self._deadline.at = time.monotonic() + min(1.0, self._s.read_timeout)
            resp = conn.getresponse()
            data = _read_answer(resp)
        except Exception:
            return None
        finally:
            self._deadline.at = None
        headers = {k.lower(): v for k, v in resp.getheaders()}
        self.close()
        return resp.status, headers, data


# --------------------------------------------------------------------------- sender

# Senders with queued lines, flushed (or counted in a warning) at interpreter exit.
_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _flush_at_exit() -> None:
    for s in list(_LIVE):
        s._exit_flush()


atexit.register(_flush_at_exit)


def _exit_warning(kind: str, lines: int, url: str, exc: BaseException) -> None:
    warnings.warn("%s: %d queued lines for %s could not be flushed at interpreter exit: %s"
                  % (kind, lines, url, exc), RuntimeWarning, stacklevel=2)


class Sender(_UrlHelpers):
    """Stream protocol lines to a Dynatrace ingest endpoint.

    Two ways to use it:

    * ``send(data)``: send a whole input (bytes, str, a binary or text file,
      an iterable, an :class:`~dtproto.Encoder`, records) and get a
      :class:`SendResult`; line numbers in the result are 1-based positions
      in ``data``.
    * Batching: ``with Sender(...) as s: s.add(...)``.  Lines accumulate and
      are flushed when a trigger fires (bytes, lines, interval), on
      :meth:`flush` and on :meth:`close` / leaving the ``with`` block, so
      nothing is lost at exit.  The bytes and lines triggers are checked
      inside :meth:`add`; ``flush_interval`` is also honoured by a
      background thread, so lines of a producer that goes quiet still leave
      within the interval.  A failure of such a background flush is raised
      by the next call of :meth:`add`, :meth:`flush` or :meth:`close`.
      Lines still queued when the interpreter exits are flushed then (or a
      warning gives their count).  Line numbers count every line added since
      the sender was created.

    Failures are never swallowed: a 400 comes back in the result (per-line
    reasons mapped to input lines); anything that leaves lines undelivered
    raises a :class:`~dtproto.errors.SendError` subclass carrying the partial
    :class:`SendResult` as ``exc.result``.

    With ``concurrency=N`` up to N chunks are in flight at once, each on its
    own keep-alive connection (worker threads; chunking and encoding stay on
    the caller's thread, and memory stays bounded by about N + 1 chunks).
    Results are merged in input order and line numbers do not change, but
    the server may *store* the chunks out of order (which means nothing for
    lines with timestamps).  A 429 halves the number of requests in flight
    (at least 1); each accepted request grows it back by one, up to N.

    A Sender is not meant to be shared between threads; use one per thread.

    Args:
        url: the full ingest URL, e.g.
            ``https://{env}.live.dynatrace.com/api/v2/metrics/ingest``,
            ``https://{host}:9999/e/{env}/api/v2/metrics/ingest`` or
            ``http://localhost:14499/metrics/ingest`` (OneAgent).  See the
            :meth:`saas`, :meth:`managed`, :meth:`activegate` and
            :meth:`oneagent` helpers and :func:`ingest_url`.
        token: API token with the ``metrics.ingest`` scope (not for OneAgent).
        max_bytes: upper bound of each uncompressed request body.  Default
            1,000,000 (the documented "1 MB", read conservatively).
        max_lines: upper bound of lines per request; ``None`` means no line
            cap (bytes govern).  The OneAgent endpoint forces at most 1,000.
        gzip: compress bodies (``Content-Encoding: gzip``).  The public API
            does not document gzip; the local endpoint accepts it.
        gzip_level: compression level 1..9.
        connect_timeout: seconds to establish the connection (TLS included).
        read_timeout: seconds to send the body, and then for the whole answer
            (status line, headers and body) to arrive: a server that trickles
            its answer is abandoned at this deadline (an ambiguous failure).
        retries: retries per chunk after the first attempt (default 3).
        backoff_base: first backoff ceiling in seconds (default 1); attempt
            ``n`` sleeps ``uniform(0, min(backoff_cap, backoff_base * 2**n))``
            ("full jitter").
        backoff_cap: largest sleep, also the cap for ``Retry-After`` (default 30).
        retry_budget: seconds one chunk may take from its first attempt to its
            last, backoff included (default 120); no retry starts that would
            end beyond it.
        retry_ambiguous: re-send a chunk after an *ambiguous* failure (read
            timeout, or connection dropped after the request was fully sent).
            The server may have stored that chunk already, so this can store
            ``count,delta`` lines twice (double counting) and gauge lines
            twice.  Default ``False``: such a chunk is reported as
            undelivered with ``ambiguous=True`` and the send stops.  Set it
            to ``True`` when duplicates are acceptable or impossible (e.g. the
            receiver is known to drop connections before processing).
        verify: TLS verification: ``True`` (system CAs), a path to a CA bundle,
            or ``False`` (not recommended; logged as a warning).
        ssl_context: a ready :class:`ssl.SSLContext` (overrides ``verify``).
        proxy: ``True`` (default) to honour ``HTTPS_PROXY``/``HTTP_PROXY`` and
            ``NO_PROXY`` from the environment, ``False`` for none, or a proxy
            URL.  Loopback destinations never use a proxy.  Only ``http://``
            proxies are supported (``https://`` ones raise
            :class:`ConfigurationError`: their credentials would otherwise
            travel in clear).
        user_agent: ``User-Agent`` header; default ``dtproto/<version> Python/<x.y>``.
        flush_bytes: batching trigger: flush when this many bytes are pending
            (default ``max_bytes``; a line that would overflow it flushes first).
        flush_lines: batching trigger: flush when this many lines are pending
            (default ``max_lines``, i.e. off except for OneAgent).
        flush_interval: batching trigger: flush queued lines this many seconds
            after the last flush, checked in ``add`` and by a background
            thread (default 1.0; ``None`` = off).
        allow_insecure: allow sending a token over plain HTTP to a host that is
            not loopback (otherwise :class:`ConfigurationError`); logged as a warning.
        check_url: reject URLs whose path is not an ingest path (default True).
        on_flush: optional callback called with the :class:`SendResult` of
            every successful flush of the batching API (from the background
            thread too).
        concurrency: chunks in flight at once, 1..256 (default 4; 1 sends
            one request at a time, and the server then stores the chunks in
            input order).  When a chunk fails for good no new chunk starts, the
            chunks in flight finish and are accounted for, and the
            ``SendError`` carries the merged result (``stopped_at`` is the
            first line never attempted).
        validate: check every line with the codec before sending it; an
            invalid line is never sent and is reported as
            ``InvalidLine(source="client")`` with its line number and reason
            (the server lists only 10 invalid lines per request; this lists
            them all).  The timestamp window is applied only with ``now_ms``.
        now_ms: "now" (milliseconds since the epoch) for the timestamp window
            of ``validate``; ``None`` (default) skips that check, since client
            and server clocks differ.
        on_request: optional callback, called as each request completes (its
            retries included) with its final :class:`RequestInfo` (status,
            attempts, latency, bytes; never the token) and the number of
            requests still in flight.  It runs on the thread that called
            :meth:`send`/:meth:`add`/:meth:`flush` (the background flush
            thread for its flushes); an exception it raises is logged and
            ignored.  ``dtproto send -v`` and ``dtproto load`` use it.

    Raises:
        ConfigurationError: bad URL, a token for the OneAgent endpoint, a token
            over plain HTTP to a remote host, a malformed token, a proxy that
            is not ``http://``.
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
        ssl_context: Optional[ssl.SSLContext] = None,
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
        on_request: Optional[Callable[[RequestInfo, int], None]] = None,
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
        # Idle connections; a request in flight takes one (or opens a new one).
        self._idle: List[_Connection] = []
        self._idle_lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._rng = random.Random()
        self._closed = False
        # Batching state (add/flush), guarded by _lock (the flush thread uses it too).
        self._batch = _Batch(time.monotonic)
        self._lock = threading.RLock()
        self._timer: Optional[threading.Thread] = None
        self._timer_stop = threading.Event()
        self._background_error: Optional[BaseException] = None
        #: Cumulative :class:`SendResult` of every flush of the batching API.
        self.totals = SendResult()

    def __repr__(self) -> str:
        return _sender_repr(self)

    def __reduce__(self) -> Any:
        # Pickling (and copy.copy) would write the token out; refuse rather
        # than leak it.  Build a new Sender in the other process instead.
        raise TypeError("a Sender cannot be pickled or copied (it holds a token and a "
                        "connection); create one where it is used, e.g. Sender.from_env()")

    # ---------------------------------------------------------------- transport loop

    def _take_connection(self) -> _Connection:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return _Connection(self)

    def _give_back(self, conn: _Connection) -> None:
        with self._idle_lock:
            if not self._closed and len(self._idle) < self.concurrency:
                self._idle.append(conn)
                return
        conn.close()

    def _drop_connection(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def _deliver(self, d: _Delivery) -> _Delivery:
        """Run one chunk's attempts to their end (the policy is ``d``'s)."""
        conn: Optional[_Connection] = self._take_connection()
        try:
            while True:
                d.begin()
                try:
                    status, headers, body = conn.post(d.payload)  # type: ignore[union-attr]
                except _Attempt as exc:
                    delay = d.on_failure(exc, time.monotonic())
                except SendError as exc:     # TLS verification: no retry can mend it
                    d.on_fatal(exc, time.monotonic())
                    return d
                else:
                    delay = d.on_response(status, headers, body, time.monotonic())
                if delay is None:
                    return d
                time.sleep(delay)
        except BaseException:
            # Stopped mid-request (Ctrl-C): the answer to it may still arrive
            # on this connection and would be read as the next request's.
            conn.close()  # type: ignore[union-attr]
            conn = None
            raise
        finally:
            if conn is not None:
                self._give_back(conn)

    def _run(self, session: _Session) -> SendResult:
        """Drive a session: one chunk at a time, or up to ``concurrency`` in flight.

        Anything else that stops it (Ctrl-C, an error of the caller's input)
        leaves with the result so far attached (:meth:`_Session.interrupt`).
        """
        try:
            if self.concurrency == 1:
                while True:
                    d = session.next_delivery()
                    if d is None:
                        break
                    session.complete(self._deliver(d))  # type: ignore[arg-type]
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency,
                                                    thread_name_prefix="dtproto-sender")
                futures: Set["Future[_Delivery]"] = set()
                try:
                    while True:
                        # What finished is settled now (its on_request too), not
                        # only when the window is full.
                        finished = [f for f in futures if f.done()]
                        for f in finished:
                            futures.discard(f)
                            session.complete(f.result())
                        while futures and (not session.room() or session.failed):
                            done, futures = wait(futures, return_when=FIRST_COMPLETED)
                            for f in done:
                                session.complete(f.result())
                        if session.failed:
                            break
                        d = session.next_delivery()
                        if d is None:
                            break
                        futures.add(self._submit(d))
                        log.debug("%d requests in flight (window %d of %d)", len(futures),
                                  session.window.size, session.window.limit)
                finally:
                    # The chunks in flight finish and are accounted for, whatever
                    # happened; interrupted again while waiting, what has not
                    # started never will (what has is reported as ambiguous).
                    try:
                        for f in futures:
                            f_d = f.result()
                            session.complete(f_d)
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
            stopped_at = session.stop_line() if session.failed else None
        except BaseException as exc:
            session.interrupt(exc)
            raise
        return session.finish(stopped_at)  # type: ignore[arg-type]

    def _submit(self, d: Any) -> "Future[_Delivery]":
        """Start a delivery on the pool, or in this thread when the pool
        refuses: the interpreter is shutting down (concurrent.futures stops
        its pools before atexit runs, and before a background flush under way
        submits its next chunk), and what is queued is still sent, one
        chunk at a time."""
        assert self._pool is not None
        try:
            return self._pool.submit(self._deliver, d)
        except RuntimeError:
            done: "Future[_Delivery]" = Future()
            done.set_result(self._deliver(d))
            return done

    def _session(self, blocks: Any, first_line: int) -> _Session:
        return _Session(self, blocks, first_line, self._rng, time.monotonic)

    # ---------------------------------------------------------------- public API

    def send(self, data: Any) -> SendResult:
        """Send ``data`` in chunks and return what happened to every line.

        ``data`` may be: ``bytes``/``bytearray``/``memoryview`` or ``str``
        (protocol text); a binary or text file object (read in blocks); an
        :class:`~dtproto.Encoder` (its content; it is not cleared); a
        :class:`~dtproto.Metric`/:class:`~dtproto.Metadata`; or an iterable
        whose items are ``str`` (each one line; a missing newline is added),
        bytes-like (pieces of a byte stream, concatenated as they are, like
        file reads) or records (encoded in batches; a record that cannot be
        encoded is reported as a client-side invalid line at its position and
        the others still go); or a table with :func:`dtproto.arrow.decode_table`'s
        columns (a pyarrow Table, a pandas or Polars frame; ``pip install
        dtproto[arrow]``): one line per row, in row order, then the metadata
        lines ``decode_table`` kept in its schema.  A row that gives no line
        (a null value, a row that cannot be encoded) is a client-side invalid
        line at its own position, so line ``n`` is row ``n - 1``.

        Line numbers in the result are 1-based positions in ``data``, blank
        lines included.  Blank lines are forwarded unchanged (the server
        skips them), so server line numbers map back by a plain offset.  A
        ``str`` line with a lone surrogate (which no UTF-8 can hold) is
        rejected by the client as ``invalid UTF-8`` and the others still go.
        A file whose ``read()`` returns ``None`` (non-blocking, no data yet) is
        waited for, not taken as ended.

        Returns:
            :class:`SendResult`.  ``result.ok`` is True when every line was
            delivered and accepted.

        Raises:
            AuthenticationError, MissingScopeError, EndpointNotFoundError,
            PayloadTooLargeError, DeliveryError: a chunk could not be
            delivered, or its answer could not be used (not a
            ValidationResponse, over ``MAX_RESPONSE_BYTES``, not complete
            within ``read_timeout``).  No new chunk starts after that (later
            input is not read), the chunks in flight finish; ``exc.result``
            holds the merged result, whose ``undelivered`` names the failed
            line ranges and ``stopped_at`` the first line never attempted.
            InputReadError: ``data`` failed to read part-way (``__cause__`` is
                the ``OSError``, ``EOFError``, ... of the input); ``exc.result``
                holds what happened to the lines before, ``exc.unsent`` the
                bytes read but not delivered.
        """
        self._check_open()
        return self._run(self._session(_blocks(data), 1))

    def add(self, item: Any) -> Optional[SendResult]:
        """Queue one record, or protocol text, for the next flush.

        ``item`` is a :class:`~dtproto.Metric`/:class:`~dtproto.Metadata`
        (encoded now: an :class:`~dtproto.EncodeError` is raised here and
        nothing is queued), ``str`` or bytes-like protocol text (one or more
        lines; a missing final newline is added; a ``str`` line with a lone
        surrogate is rejected by the client as ``invalid UTF-8`` at the
        flush), or an :class:`~dtproto.Encoder` (its content is taken and
        the encoder is cleared).

        Flush triggers are checked here: before queueing, if the item would
        push the pending bytes past ``flush_bytes`` or the pending lines past
        ``flush_lines``; after queueing, if either limit is reached or
        ``flush_interval`` seconds passed since the last flush.  A background
        thread flushes by ``flush_interval`` as well.

        Returns:
            The :class:`SendResult` of a flush this call triggered, else ``None``.

        Raises:
            The errors of :meth:`flush`, when a triggered flush fails (or a
            background flush failed since the last call).  If it ran *before*
            ``item`` was queued, ``item`` is not queued: its bytes end
            ``exc.unsent``, after the lines of the failed flush.  Any other
            exception (Ctrl-C in that flush, say) leaves ``item`` queued.
        """
        self._check_open()
        data, lines, bad = _Batch.encode(item)
        if not data:
            return None
        with self._lock:
            self._check_open()   # again: a close() may have finished while this waited
            batch = self._batch
            out: Optional[SendResult] = None
            try:
                self._raise_background_error()
                if batch.would_overflow(self, len(data), lines):
                    out = self._flush_locked()
            except SendError as exc:
                # The item was not queued: it goes back to the caller with the
                # other lines that were not delivered.
                exc.unsent = (exc.unsent or b"") + data
                raise
            except BaseException:
                # Ctrl-C in the flush (its lines are queued again) or another
                # error: the item is queued after them, never dropped.
                batch.put(data, lines, bad)
                raise
            batch.put(data, lines, bad)
            _LIVE.add(self)
            self._start_timer()
            if batch.due(self):
                r = self._flush_locked()
                if out is None:
                    out = r
                else:
                    out.merge(r)
            return out

    @property
    def pending_bytes(self) -> int:
        """Bytes queued by :meth:`add` and not flushed yet."""
        return len(self._batch.pending)

    @property
    def pending_lines(self) -> int:
        """Lines queued by :meth:`add` and not flushed yet."""
        return self._batch.lines

    def flush(self) -> SendResult:
        """Send everything queued by :meth:`add` now.

        The queue is handed over to the send first, so a failed flush does not
        send the same lines again on the next one.

        Returns:
            The :class:`SendResult` of this flush (also merged into :attr:`totals`).

        Raises:
            The errors of :meth:`send` (or of a background flush that failed
            since the last call); ``exc.unsent`` then holds the bytes that were
            not delivered (or — if ``exc.ambiguous`` — possibly delivered),
            so they can be re-sent or saved, and ``exc.result`` their line
            numbers.
        """
        with self._lock:
            self._raise_background_error()
            return self._flush_locked()

    def _flush_locked(self) -> SendResult:
        body, rejects, first = self._batch.take()
        if not body:
            return SendResult()
        try:
            result = self._run(self._session(_Batch.blocks(body, rejects), first))
        except SendError as exc:
            exc.unsent = _Batch.unsent(body, first, exc.result)
            if exc.result is not None:
                self.totals.merge(exc.result)
            raise
        except BaseException as exc:   # Ctrl-C: nothing queued is dropped
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

    # ---------------------------------------------------------------- background flush

    def _start_timer(self) -> None:
        if self._timer is not None or self.flush_interval is None:
            return
        self._timer = threading.Thread(
            target=_flush_loop, args=(weakref.ref(self), self._timer_stop, self.flush_interval),
            name="dtproto-flush", daemon=True)
        self._timer.start()

    def _flush_if_due(self) -> float:
        """Flush when the interval passed (background thread); seconds until the next check."""
        if not self._lock.acquire(timeout=0.05):
            return 0.05
        try:
            if self._closed or self._background_error is not None:
                return self.flush_interval or 1.0
            batch = self._batch
            if batch.pending and batch.due(self):
                try:
                    self._flush_locked()
                except SendError as exc:
                    self._background_error = exc
                    log.warning("background flush failed (raised by the next add/flush/close): "
                                "%s", exc)
                except Exception as exc:   # e.g. on_flush raised: keep it for the caller
                    self._background_error = exc
            return max(0.01, batch.last_flush + (self.flush_interval or 1.0) - time.monotonic())
        finally:
            self._lock.release()

    def _exit_flush(self) -> None:
        """At interpreter exit: flush what is queued, or warn with the count.

        The queue is looked at under the lock: a background flush under way
        holds it (all of it, maybe) and finishes first.  A failure of a
        background flush has no caller left to raise it to: it is warned
        of here, and what is queued is sent all the same.
        """
        if self._closed:
            return
        with self._lock:
            failed, self._background_error = self._background_error, None
            lines = self._batch.lines
        if failed is not None:
            unsent = getattr(failed, "unsent", None) or b""
            _exit_warning("Sender (a background flush)", unsent.count(b"\n"), self.url, failed)
        try:
            self.close()
        except Exception as exc:
            _exit_warning("Sender", lines, self.url, exc)

    def close(self) -> SendResult:
        """Flush what is queued, then close the connections. Idempotent.

        Returns:
            The :class:`SendResult` of the final flush.

        Raises:
            The errors of :meth:`flush` (the sender is closed all the same,
            unless lines are still queued: after Ctrl-C in the final flush,
            say, it stays open so that ``close()`` again sends them).
        """
        with self._lock:
            if self._closed:
                return SendResult()
            try:
                self._raise_background_error()
                return self._flush_locked()
            finally:
                # Lines still queued (the final flush was interrupted, or a
                # background failure was raised first): the sender stays
                # open, so that close() again, or the exit flush, sends them.
                self._closed = not self._batch.lines
                if self._closed:
                    self._timer_stop.set()
                    _LIVE.discard(self)
                else:
                    # still open: the background flush goes on honouring
                    # flush_interval for what is queued, and what add() queues
                    log.warning("close() did not finish: %d lines still queued; close() "
                                "again sends them (so does the exit flush)", self._batch.lines)
                self._drop_connection()
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                    self._pool = None

    def _check_open(self) -> None:
        if self._closed:
            raise DtprotoError("this Sender is closed")

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # Flush even when the block raised: queued lines are not dropped.  If
        # the flush fails too, its error propagates with the block's error as
        # its __context__.
        self.close()


def _flush_loop(ref: "weakref.ReferenceType[Sender]", stop: threading.Event,
                interval: float) -> None:
    """The background flush thread: holds the sender only while it checks."""
    wait_for = interval
    while not stop.wait(wait_for):
        s = ref()
        if s is None:
            return
        wait_for = s._flush_if_due()
        del s
