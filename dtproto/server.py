"""A local metric ingest endpoint that answers like the real API (docs/protocol.md §10).

Use it to test pipelines offline, or in your own tests::

    from dtproto.server import IngestServer, Fault

    with IngestServer(tokens={"secret": ["metrics.ingest"]}) as srv:
        ...  # POST to srv.url with "Authorization: Api-Token secret"
        srv.accepted_lines   # what was stored, as bytes lines
        srv.requests         # what was received, one RequestRecord each

Endpoints:

* ``POST /api/v2/metrics/ingest`` and ``POST /e/{environment}/api/v2/metrics/ingest``:
  ``Authorization: Api-Token <token>`` checked against ``tokens`` (scheme
  word case-insensitive): 401 when missing or unknown, 403 when the token
  lacks ``metrics.ingest``.  Answers 202 or 400 with the ValidationResponse
  (``linesOk``, ``linesInvalid``, ``error`` with ``invalidLines`` capped at
  10 and ``"First 10 errors reported"``, ``warnings``), ``empty request`` for
  an empty body, 413 above 1,048,576 bytes (after gzip decoding too).
* ``POST /metrics/ingest``: the OneAgent local form: no token, at most 1,000
  lines (413 beyond), answers ``{"error": ..., "linesValid": n, "linesInvalid": m}``.
* Anything else: 404; other methods on an ingest path: 405 (``Allow: POST``); a
  method http.server does not know: 501, with the same JSON error envelope.

Bodies may be gzip-compressed (``Content-Encoding: gzip``).  Every body is
validated with :func:`dtproto.validate` against the current clock (or a
fixed ``now_ms``).  Accepted lines (valid, non-blank, trailing CR removed) are
appended to ``store`` and kept in memory.

Fault injection (:class:`Fault`) by rate or by request number: any status
(429 with or without ``Retry-After``, 5xx, ...), slow responses, and dropped
connections, either **before** the body is processed (nothing stored: a
retry is safe) or **after** the lines were stored (a retry duplicates them).

The server is a :class:`http.server.ThreadingHTTPServer` with HTTP/1.1
keep-alive: one thread per client connection.  A body must arrive within
``request_timeout`` seconds in all (408 and the connection closed past it);
the request line and headers only within ``idle_timeout`` between bytes, so
keep it on loopback unless you mean to expose it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import urllib.parse
import zlib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import (IO, Any, Callable, Deque, Dict, FrozenSet, Iterable, List, Mapping, Optional,
                    Tuple, Union)

from ._constants import (BLANK_CHARS, ENVIRONMENT_PREFIX, INGEST_PATH, INGEST_SCOPE,
                         ONEAGENT_MAX_LINES, ONEAGENT_PATH, RESPONSE_MAX_ERRORS,
                         RESPONSE_WARNINGS_KEY, RESPONSE_WARNINGS_KEY_SEEN, SERVER_MAX_BODY_BYTES,
                         TOKEN_SCHEME)
from ._input import GZIP_MAGIC as _GZIP_MAGIC

__all__ = ["IngestServer", "Fault", "RequestRecord", "parse_fault", "INGEST_SCOPE"]

log = logging.getLogger("dtproto.server")

# INGEST_SCOPE (exported here too): the token scope the ingest API requires.
_API_PATH = INGEST_PATH
_MANAGED_PATH = re.compile("^%s[^/]+%s$" % (re.escape(ENVIRONMENT_PREFIX), re.escape(INGEST_PATH)))
_ONEAGENT_PATH = ONEAGENT_PATH
# A rejected (413) body up to this size is read and discarded so the client
# sees the answer on an intact connection; beyond it the connection is closed.
_DRAIN_LIMIT = 16 * 1024 * 1024
_DROP_KINDS = frozenset({"drop-before", "drop-after"})
_MAX_DELAY = 86_400       # a fault delay above a day is a typo
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_BLANK = BLANK_CHARS.encode("ascii")
# Counters of :attr:`IngestServer.stats` that exist from the start (0 until counted).
_STATS = ("requests", "faults", "bytes_received", "lines_ok", "lines_invalid", "lines_stored")


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """One fault-injection rule.

    Args:
        kind: what to do:
            * a 3-digit HTTP status (``"429"``, ``"500"``, ``"502"``,
              ``"503"``, ``"504"``, or any other such as ``"401"``): answer it
              with an ErrorEnvelope body, without processing the body
              (nothing stored);
            * ``"slow"``: wait ``delay`` seconds, then process normally;
            * ``"drop-before"``: read the request, then close the connection
              without processing it or answering (nothing stored, so a client
              retry stores the lines exactly once);
            * ``"drop-after"``: process and **store** the lines, then close
              the connection without answering (a client retry stores them
              twice: the ambiguous case).
        rate: probability (0..1) that a request gets this fault.
        requests: ingest request numbers (1-based, counted per server) that
            always get this fault.
        retry_after: for status faults, the ``Retry-After`` header value in
            seconds (``None``: no header).
        delay: seconds to wait for ``"slow"`` (and before any other kind).

    Rules are checked in order; the first that matches applies.  Requests
    rejected by authentication (401/403) or size (413) do not consult faults
    but are counted.
    """

    kind: str
    rate: float = 0.0
    requests: FrozenSet[int] = frozenset()
    retry_after: Optional[float] = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if not (self.kind in ("slow",) or self.kind in _DROP_KINDS
                or (len(self.kind) == 3 and self.kind.isdigit())):
            raise ValueError("unknown fault kind %r: use a 3-digit status, 'slow', "
                             "'drop-before' or 'drop-after'" % (self.kind,))
        if not 0.0 <= self.rate <= 1.0:     # also refuses nan
            raise ValueError("fault rate must be within 0..1")
        # Checked here, not when a request comes: a delay or Retry-After that
        # time.sleep() or the header cannot take would fail every request
        # (the connection just drops), which looks like a network fault.
        if not 0.0 <= self.delay <= _MAX_DELAY:
            raise ValueError("fault delay must be within 0..%d seconds, not %r"
                             % (_MAX_DELAY, self.delay))
        if self.retry_after is not None and not 0.0 <= self.retry_after < 1e15:
            raise ValueError("fault retry_after must be a number of seconds >= 0, not %r"
                             % (self.retry_after,))
        numbers = frozenset(int(n) for n in self.requests)
        if any(n < 1 for n in numbers):
            raise ValueError("fault request numbers start at 1")
        object.__setattr__(self, "requests", numbers)

    @property
    def status(self) -> Optional[int]:
        """The HTTP status this fault answers, or ``None``."""
        return int(self.kind) if self.kind.isdigit() else None


def parse_fault(spec: str) -> Fault:
    """Parse a fault from text (for command lines and configuration files).

    Syntax: ``KIND[:key=value[,key=value...]]`` with keys ``rate``,
    ``requests`` (numbers joined by ``+``), ``retry_after`` and ``delay``.
    Examples: ``429:rate=0.05``, ``429:rate=0.05,retry_after=2``,
    ``503:requests=2+3``, ``drop-before:rate=0.01``, ``slow:rate=0.1,delay=2``.
    """
    kind, _, rest = spec.strip().partition(":")
    kwargs: Dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError("fault option %r needs a value (key=value)" % (item,))
        if key not in ("rate", "requests", "retry_after", "delay"):
            raise ValueError("unknown fault option %r" % (key,))
        try:
            if key == "requests":
                kwargs[key] = frozenset(int(n) for n in value.split("+") if n.strip())
            else:
                kwargs[key] = float(value)
        except ValueError:
            raise ValueError("fault option %s=%r: %s" % (
                key, value.strip(), "request numbers joined by '+', e.g. 2+3"
                if key == "requests" else "a number of %s" % (
                    "seconds" if key != "rate" else "0..1"))) from None
    return Fault(kind.strip().lower(), **kwargs)


# --------------------------------------------------------------------------- records

_QUERY_VALUE = re.compile(r"([?&][^=&\s\"]*=)[^&\s\"]*")


def _logged_path(raw: str) -> str:
    """A request path, or a log line holding one, as records and logs keep
    it: the query's values masked (``?api-token=...``), since a client may
    put a token there; clipped as :func:`_clipped`."""
    return _clipped(_QUERY_VALUE.sub(r"\1...", raw))


# What a RequestRecord keeps of a client's path and headers: enough to read
# in a log.  A header line may hold 64 KB, and the server keeps the last
# 10,000 records: whole fields let clients grow its memory by gigabytes.
_LOGGED_CHARS = 256


def _clipped(text: str) -> str:
    if len(text) <= _LOGGED_CHARS:
        return text
    return "%s... (%d characters)" % (text[:_LOGGED_CHARS], len(text))


@dataclass
class RequestRecord:
    """What the server saw and did for one request (never holds a token).

    Attributes:
        number: ingest request number (1-based), 0 for other paths.
        method, path: from the request line (the query's values masked).
        status: the answer's status, or ``None`` when the connection was dropped.
        fault: the fault kind applied (``"429+retry-after"`` when a
            ``Retry-After`` header was sent), or ``None``.
        auth: ``"none"`` (no header), ``"valid"``, ``"unknown"`` (token not
            configured), ``"scope"`` (lacks metrics.ingest), ``"bad-scheme"``
            or ``"not-checked"`` (no tokens configured / OneAgent form).
        wire_bytes: request body size as received.
        body_bytes: body size after gzip decoding.
        lines_ok, lines_invalid: the validation counts.
        stored: lines appended to the store.
        duration: seconds spent handling the request.
        user_agent, content_type, content_encoding: request headers (path and
            headers clipped to 256 characters and their length).
        client: ``"host:port"`` of the client (one per connection: shows keep-alive).
        body: the decoded body, only with ``keep_bodies=True``.
    """

    number: int
    method: str
    path: str
    status: Optional[int] = None
    fault: Optional[str] = None
    auth: str = "none"
    wire_bytes: int = 0
    body_bytes: int = 0
    lines_ok: int = 0
    lines_invalid: int = 0
    stored: int = 0
    duration: float = 0.0
    user_agent: str = ""
    content_type: str = ""
    content_encoding: str = ""
    client: str = ""
    body: Optional[bytes] = None


# --------------------------------------------------------------------------- HTTP plumbing


class _Drop(Exception):
    """Close the connection without answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the real API
    server_version = "dtproto-ingest"
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        try:
            # One write per response anyway; NODELAY avoids Nagle/delayed-ACK stalls.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        if log.isEnabledFor(logging.DEBUG):
            from .cli import _printable   # the request line is the client's text

            # the request line's query values masked, as in the records;
            # each argument clipped alone, so the status after a long path stays
            log.debug("%s %s", self.address_string(),
                      _printable(format % tuple(_logged_path(a) if isinstance(a, str) else a
                                                for a in args)))

    def do_POST(self) -> None:
        self.server.app._handle(self)

    def _not_allowed(self) -> None:
        self.server.app._handle_other(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed
    do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def send_error(self, code: int, message: Optional[str] = None,
                   explain: Optional[str] = None) -> None:
        """http.server's own answers (a malformed request line or header, a
        method no ``do_`` serves: 501) in the JSON error envelope of every
        other answer rather than its HTML page; the connection is closed, as
        http.server does."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        text = message or self.responses.get(code, ("Error",))[0]
        body = b"" if code < 200 or code in (204, 304) or self.command == "HEAD" \
            else _envelope(code, text)
        self.respond(code, body)

    def respond(self, status: int, body: bytes, headers: Optional[Dict[str, str]] = None,
                content_type: str = "application/json; charset=utf-8") -> None:
        """Write the whole response in one call (status line, headers, body)."""
        reason = self.responses.get(status, ("",))[0]
        out = ["HTTP/1.1 %d %s" % (status, reason),
               "Server: %s" % self.server_version,
               "Date: %s" % email.utils.formatdate(usegmt=True),
               "Content-Length: %d" % len(body)]
        if body:
            out.append("Content-Type: %s" % content_type)
        for k, v in (headers or {}).items():
            out.append("%s: %s" % (k, v))
        if self.close_connection:
            out.append("Connection: close")
        data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body
        self.wfile.write(data)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False      # IngestServer.close() waits for in-flight requests itself
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: Any, handler: Any, app: "IngestServer") -> None:
        self.app = app
        self.connections: set = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client vanishing mid-request is routine under fault injection.
        log.debug("error while serving %s", client_address, exc_info=True)


# --------------------------------------------------------------------------- the server


TokenConfig = Union[None, str, Mapping[str, Iterable[str]], Iterable[str]]


class IngestServer:
    """A local ingest endpoint; see the module docstring for the HTTP contract.

    Args:
        host: address to bind (default ``127.0.0.1``; keep it on loopback
            unless you mean to expose it).
        port: TCP port; 0 picks a free one (see :attr:`port`, :attr:`url`).
        tokens: accepted API tokens.  ``None`` disables the check (any or no
            token is accepted); a ``str`` is one token with ``metrics.ingest``;
            an iterable of ``str`` is several such tokens; a mapping gives each
            token its scopes (e.g. ``{"ro": ["metrics.read"]}`` answers 403).
        store: where accepted lines are appended (one per line, LF): a path
            (opened in append mode) or a binary file object; ``None`` for none.
        keep: also keep accepted lines in memory (:attr:`accepted_lines`).
            Turn off for long runs.
        keep_bodies: keep each decoded request body in its :class:`RequestRecord`.
        faults: :class:`Fault` rules (or their text form, see :func:`parse_fault`).
        seed: seed of the random generator behind fault rates.
        max_body: largest body in bytes, before and after gzip decoding
            (default 1,048,576, [A-21]); larger answers 413.
        oneagent_max_lines: line limit of the OneAgent form (default 1,000).
        max_reported_errors: entries in ``invalidLines`` (default 10, as the
            real API; ``None`` lists every invalid line, which the real API
            never does but which lets tests check every reason).
        warnings_key: ``"changedMetricKeys"`` (documented) or
            ``"warningLines"`` (what real responses carry, [A-18]).
        now_ms: the validation clock: ``None`` for the real clock, an int
            (epoch ms) or a callable returning one.
        log_size: how many :class:`RequestRecord` entries :attr:`requests` keeps.
        idle_timeout: seconds an idle keep-alive connection is kept open.
        request_timeout: seconds a request's body may take to arrive in all,
            a body it refuses and drains included (``idle_timeout`` bounds
            each wait for the next bytes, not a client that trickles them);
            past it the answer is 408 (or the refusal) and the connection is
            closed.  ``None``: no limit.  The request line and headers are
            bounded by ``idle_timeout`` between bytes only.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: TokenConfig = None,
        store: Union[None, str, "os.PathLike[str]", IO[bytes]] = None,
        keep: bool = True,
        keep_bodies: bool = False,
        faults: Iterable[Union[Fault, str]] = (),
        seed: Optional[int] = 0,
        max_body: int = SERVER_MAX_BODY_BYTES,
        oneagent_max_lines: int = ONEAGENT_MAX_LINES,
        max_reported_errors: Optional[int] = RESPONSE_MAX_ERRORS,
        warnings_key: str = RESPONSE_WARNINGS_KEY,
        now_ms: Union[None, int, Callable[[], int]] = None,
        log_size: int = 10_000,
        idle_timeout: float = 30.0,
        request_timeout: Optional[float] = 60.0,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be an integer in 0..65535 (0 picks a free one), not %r"
                             % (port,))
        if warnings_key not in (RESPONSE_WARNINGS_KEY, RESPONSE_WARNINGS_KEY_SEEN):
            raise ValueError("warnings_key must be %r or %r" % (RESPONSE_WARNINGS_KEY,
                                                                 RESPONSE_WARNINGS_KEY_SEEN))
        self._tokens = _token_table(tokens)
        self.faults: List[Fault] = [parse_fault(f) if isinstance(f, str) else f for f in faults]
        self._rng = random.Random(seed)
        self.max_body = int(max_body)
        if request_timeout is not None and not 0 < float(request_timeout) < math.inf:
            raise ValueError("request_timeout must be a number of seconds above 0 or None,"
                             " not %r" % (request_timeout,))
        self.request_timeout = None if request_timeout is None else float(request_timeout)
        self.oneagent_max_lines = int(oneagent_max_lines)
        self.max_reported_errors = max_reported_errors
        self.warnings_key = warnings_key
        self._now_ms = now_ms
        self.keep = keep
        self.keep_bodies = keep_bodies
        #: Accepted lines (bytes, no newline) in arrival order, when ``keep``.
        self.accepted_lines: List[bytes] = []
        #: The last ``log_size`` requests, oldest first.
        self.requests: Deque[RequestRecord] = deque(maxlen=log_size)
        #: Running totals: requests, faults, bytes_received, lines_ok,
        #: lines_invalid, lines_stored, and per-status counts ("status_202", ...).
        self.stats: Dict[str, int] = dict.fromkeys(_STATS, 0)
        self._lock = threading.Lock()
        self._number = 0
        self._logged = 0      # records ever appended to ``requests`` (not reset)
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self._store_owned = False
        self._store: Optional[IO[bytes]] = None
        if store is not None:
            if hasattr(store, "write"):
                self._store = store  # type: ignore[assignment]
            else:
                self._store = open(os.fspath(store), "ab")  # type: ignore[arg-type]
                self._store_owned = True
        handler = type("_BoundHandler", (_Handler,), {"timeout": idle_timeout})
        self._httpd = _HTTPServer((host, port), handler, self)
        self._thread: Optional[threading.Thread] = None
        self._serving = False
        self._closed = False

    # ---------------------------------------------------------------- addresses

    @property
    def host(self) -> str:
        """The bound address."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port`` without a path."""
        host = self.host
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d" % (host, self.port)

    @property
    def url(self) -> str:
        """The API v2 ingest URL: ``http://host:port/api/v2/metrics/ingest``."""
        return self.base_url + _API_PATH

    @property
    def oneagent_url(self) -> str:
        """The OneAgent-form URL: ``http://host:port/metrics/ingest``."""
        return self.base_url + _ONEAGENT_PATH

    def managed_url(self, environment: str = "env") -> str:
        """The Managed/ActiveGate-form URL: ``http://host:port/e/{environment}/api/v2/metrics/ingest``."""
        return "%s/e/%s%s" % (self.base_url, environment, _API_PATH)

    def __repr__(self) -> str:
        return "IngestServer(%r, tokens=%d, faults=%d)" % (
            self.base_url, len(self._tokens or {}), len(self.faults))

    # ---------------------------------------------------------------- life cycle

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown` is called (from another thread or a signal handler)."""
        self._serving = True
        try:
            self._httpd.serve_forever(poll_interval)
        finally:
            self._serving = False

    def start(self) -> "IngestServer":
        """Serve in a background daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, args=(0.05,),
                                            name="dtproto-ingest", daemon=True)
            self._thread.start()
            while not self._serving and self._thread.is_alive():
                time.sleep(0.001)
        return self

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop serving, close idle connections, wait up to ``timeout`` seconds
        for requests in flight, then close the socket and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._serving:
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
        self._httpd.server_close()
        # Wake connections waiting for their next request: reading sees EOF,
        # while a request being processed can still write its answer.
        with self._httpd.conn_lock:
            conns = list(self._httpd.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(0.05)
        if self._store is not None:
            with self._lock:
                try:
                    self._store.flush()
                finally:
                    if self._store_owned:
                        self._store.close()

    close = shutdown

    def __enter__(self) -> "IngestServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()

    def reset(self) -> None:
        """Forget accepted lines, the request log, the counters and the request numbers."""
        with self._lock:
            self.accepted_lines.clear()
            self.requests.clear()
            self.stats.clear()
            self.stats.update(dict.fromkeys(_STATS, 0))
            self._number = 0

    def requests_since(self, seen: int) -> Tuple[int, List[RequestRecord], int]:
        """The request records logged after the first ``seen`` ones.

        Returns ``(logged, records, missed)``: how many records were ever
        logged (pass it as ``seen`` next time), the newer ones still in
        :attr:`requests`, oldest first, and how many newer ones already fell
        out of that bounded log.  One consistent snapshot, so a reader that
        polls (``dtproto serve``) counts every request even when it falls
        behind.
        """
        with self._lock:
            logged = self._logged
            new = max(logged - seen, 0)
            kept = min(new, len(self.requests))
            recs = list(self.requests)[len(self.requests) - kept:] if kept else []
        return logged, recs, new - kept

    # ---------------------------------------------------------------- handling

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _handle_other(self, h: _Handler) -> None:
        path = urllib.parse.urlsplit(h.path).path.rstrip("/")
        is_ingest = path == _API_PATH or path == _ONEAGENT_PATH or bool(_MANAGED_PATH.match(path))
        status = 405 if is_ingest else 404
        self._discard_body(h)
        rec = RequestRecord(0, h.command, _logged_path(h.path), status,
                            client="%s:%d" % h.client_address[:2])
        with self._lock:
            self.requests.append(rec)
            self._logged += 1
            self._count("status_%d" % status)
        body = b"" if h.command == "HEAD" else _envelope(status, "Method Not Allowed" if is_ingest
                                                          else "Not Found")
        h.respond(status, body, {"Allow": "POST"} if is_ingest else None)

    def _discard_body(self, h: _Handler) -> None:
        length = _content_length(h)
        if length is None:
            # Where this body ends is unknown: what follows cannot be read as
            # the next request.
            h.close_connection = True
        elif 0 < length <= _DRAIN_LIMIT:
            if _read_body(h, length, self.request_timeout) is None:
                h.close_connection = True   # answered, then closed: the rest is not read
        elif length:
            h.close_connection = True

    def _handle(self, h: _Handler) -> None:
        t0 = time.perf_counter()
        path = urllib.parse.urlsplit(h.path).path.rstrip("/")
        oneagent = path == _ONEAGENT_PATH
        if not (oneagent or path == _API_PATH or _MANAGED_PATH.match(path)):
            self._handle_other(h)
            return
        with self._lock:
            self._number += 1
            number = self._number
            self._active += 1
            self._count("requests")
        rec = RequestRecord(
            number, "POST", _logged_path(h.path),
            user_agent=_clipped(h.headers.get("User-Agent", "")),
            content_type=_clipped(h.headers.get("Content-Type", "")),
            content_encoding=_clipped(h.headers.get("Content-Encoding", "")),
            client="%s:%d" % h.client_address[:2])
        rec.duration = t0  # start time until _log() turns it into a duration
        try:
            self._process(h, rec, oneagent)
        except _Drop:
            rec.status = None
            self._log(rec)
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            self._log(rec)
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _log(self, rec: RequestRecord) -> None:
        # Logged once, *before* the answer is written, so that a client that
        # got its answer always finds the request in ``requests``.
        if getattr(rec, "_logged", False):
            return
        object.__setattr__(rec, "_logged", True)
        rec.duration = time.perf_counter() - rec.duration
        with self._lock:
            self.requests.append(rec)
            self._logged += 1
            self._count("status_%s" % rec.status if rec.status else "dropped")

    def _answer(self, h: _Handler, rec: RequestRecord, status: int, doc: Any,
                headers: Optional[Dict[str, str]] = None) -> None:
        rec.status = status
        body = b"" if doc is None else json.dumps(doc, separators=(",", ":")).encode()
        self._log(rec)
        h.respond(status, body, headers)

    def _process(self, h: _Handler, rec: RequestRecord, oneagent: bool) -> None:
        codings = [c.strip(" \t").lower() for f in h.headers.get_all("Transfer-Encoding") or ()
                   for c in f.split(",")]
        if any(c not in ("", "identity") for c in codings):
            # The real API wants Content-Length too; chunked uploads are not
            # supported.  Every field counts: a second one saying chunked
            # was read as a body of 0 bytes, and its chunks as a request.
            h.close_connection = True
            self._answer(h, rec, 411, _doc(411, "Content-Length required"))
            return
        length = _content_length(h)
        if length is None:
            h.close_connection = True
            self._answer(h, rec, 400, _doc(400, "invalid Content-Length"))
            return
        rec.wire_bytes = length
        if length > self.max_body:
            self._discard_body(h)
            self._answer(h, rec, 413, _doc(413, "Payload too large: %s bytes > %d"
                                           % (_declared_length(h), self.max_body)))
            return
        raw = _read_body(h, length, self.request_timeout) if length else b""
        if raw is None:
            h.close_connection = True
            self._answer(h, rec, 408, _doc(408, "Request Timeout: the body took longer than"
                                                " %g s" % (self.request_timeout or 0)))
            return
        if len(raw) < length:        # client went away mid-body
            raise _Drop()
        with self._lock:
            self._count("bytes_received", length)

        if not oneagent and self._tokens is not None:
            rec.auth = self._check_token(h.headers.get("Authorization"))
            if rec.auth in ("none", "unknown", "bad-scheme"):
                msg = ("Missing authorization parameter." if rec.auth == "none"
                       else "Token Authentication failed")
                self._answer(h, rec, 401, _doc(401, msg),
                             {"WWW-Authenticate": '%s realm="DTAPI"' % TOKEN_SCHEME})
                return
            if rec.auth == "scope":
                self._answer(h, rec, 403, _doc(
                    403, "Token is missing required scope. Use one of: %s (Ingest metrics)"
                    % INGEST_SCOPE))
                return
        else:
            rec.auth = "not-checked"

        fault = self._pick_fault(rec.number)
        if fault is not None:
            rec.fault = fault.kind
            with self._lock:
                self._count("faults")
            if fault.delay:
                time.sleep(fault.delay)
            status = fault.status
            if status is not None:
                headers = {}
                if fault.retry_after is not None:
                    ra = fault.retry_after
                    headers["Retry-After"] = str(int(ra)) if ra == int(ra) else repr(ra)
                    rec.fault += "+retry-after"
                self._answer(h, rec, status, _doc(status, _FAULT_TEXT.get(status, "Injected fault")),
                             headers)
                return
            if fault.kind == "drop-before":
                raise _Drop()

        body = raw
        if rec.content_encoding.strip().lower() == "gzip":
            try:
                body = _gunzip(raw, self.max_body)
            except _TooBig:
                self._answer(h, rec, 413, _doc(413, "Payload too large after decompression"))
                return
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                self._answer(h, rec, 400, _doc(400, "invalid gzip body: %s" % (
                    exc if isinstance(exc, _BadGzip) else "damaged or truncated data")))
                return
        elif rec.content_encoding.strip().lower() not in ("", "identity"):
            self._answer(h, rec, 415, _doc(415, "unsupported Content-Encoding"))
            return
        rec.body_bytes = len(body)
        if self.keep_bodies:
            rec.body = body
        if oneagent and body.count(b"\n") + (0 if body.endswith(b"\n") else 1) > self.oneagent_max_lines:
            self._answer(h, rec, 413, _doc(413, "The payload is limited to %d lines"
                                           % self.oneagent_max_lines))
            return

        from . import validate   # late: dtproto imports this module's siblings first
        report = validate(body, now_ms=self._clock(), max_errors=None, max_warnings=None)
        rec.lines_ok = report.lines_ok
        rec.lines_invalid = report.lines_invalid
        rec.stored = self._store_lines(body, report)
        doc = report.to_response(max_reported_errors=self.max_reported_errors,
                                 warnings_key=self.warnings_key, oneagent=oneagent)
        if fault is not None and fault.kind == "drop-after":
            raise _Drop()
        self._answer(h, rec, 202 if report.lines_invalid == 0 and report.lines_ok else 400, doc)

    def _clock(self) -> int:
        n = self._now_ms
        if n is None:
            # The real clock: the timestamp window (now-1h..now+10min) is checked.
            return int(time.time() * 1000)
        return int(n() if callable(n) else n)

    def _check_token(self, header: Optional[str]) -> str:
        if not header:
            return "none"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != TOKEN_SCHEME.lower():
            return "bad-scheme"
        scopes = self._tokens.get(token.strip()) if self._tokens is not None else None
        if scopes is None:
            return "unknown"
        return "valid" if INGEST_SCOPE in scopes else "scope"

    def _pick_fault(self, number: int) -> Optional[Fault]:
        with self._lock:
            for f in self.faults:
                if number in f.requests:
                    return f
                if f.rate and self._rng.random() < f.rate:
                    return f
        return None

    def _store_lines(self, body: bytes, report: Any) -> int:
        accepted = []
        if report.lines_ok:
            bad = {e.line for e in report.errors}
            for i, line in enumerate(body.split(b"\n"), 1):
                if line.endswith(b"\r"):
                    line = line[:-1]
                if i in bad or not line.strip(_BLANK):   # blank: docs/protocol.md §2
                    continue
                accepted.append(line)
        if len(accepted) != report.lines_ok:   # would mean the line counting disagrees
            log.warning("stored %d lines but the validator counted %d ok",
                        len(accepted), report.lines_ok)
        with self._lock:
            if self._store is not None and accepted:
                self._store.write(b"\n".join(accepted) + b"\n")
                self._store.flush()
            if self.keep:
                self.accepted_lines.extend(accepted)
            self._count("lines_ok", report.lines_ok)
            self._count("lines_invalid", report.lines_invalid)
            self._count("lines_stored", len(accepted))
        return len(accepted)


_FAULT_TEXT = {
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


class _TooBig(Exception):
    pass


class _BadGzip(ValueError):
    pass


def _read_body(h: "_Handler", length: int, timeout: Optional[float]) -> Optional[bytes]:
    """``length`` bytes of body, or fewer when the client closes; None when
    they take more than ``timeout`` seconds in all (each wait for more is
    still bounded by the handler's idle timeout)."""
    if timeout is None:
        return h.rfile.read(length)
    deadline = time.monotonic() + timeout
    idle = h.connection.gettimeout()
    parts: List[bytes] = []
    got = 0
    try:
        while got < length:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            h.connection.settimeout(left if idle is None else min(idle, left))
            try:
                chunk = h.rfile.read1(min(length - got, 1 << 16))
            except socket.timeout:    # TimeoutError from 3.10 on
                if time.monotonic() >= deadline:
                    return None
                raise                 # idle past idle_timeout: dropped, as before
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    finally:
        h.connection.settimeout(idle)
    return b"".join(parts)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decode a gzip body: every member, in order (``cat a.gz b.gz`` and
    ``gzip -c >> x.gz`` make several), at most ``limit`` bytes in all.

    Raises :class:`_TooBig` past the limit (a small gzip bomb never expands
    further), :class:`_BadGzip` for anything after a member that is not
    another member, and ``zlib.error``/``EOFError`` for damaged or truncated
    data: lines are never dropped silently.
    """
    out: List[bytes] = []
    total = 0
    view = memoryview(data)
    pos, size = 0, len(data)
    while True:
        d = zlib.decompressobj(wbits=31)
        # A member's input goes in windows that double from 256 bytes: at
        # its end zlib copies what is left of the window (unused_data), so
        # that copy stays within twice the member's size.  Handing it the
        # whole rest copied the rest once per member: quadratic in the
        # number of members (a red-team finding, 52,000 members: 0.57 s).
        w = 256
        while True:
            chunk = view[pos:pos + w]
            piece = d.decompress(chunk, limit - total + 1)
            total += len(piece)
            if total > limit or d.unconsumed_tail:
                raise _TooBig()
            out.append(piece)
            if d.eof:
                pos += len(chunk) - len(d.unused_data)
                break
            pos += len(chunk)
            if pos >= size:
                raise EOFError("truncated gzip body")
            w = min(2 * w, 1 << 16)
        if pos >= size:
            return b"".join(out)
        if data[pos:pos + 2] != _GZIP_MAGIC:
            raise _BadGzip("%d bytes of trailing data after the gzip stream" % (size - pos))


def _content_length(h: _Handler) -> Optional[int]:
    """The body length the request declares: 0 without Content-Length, ``None``
    when it is not one valid length.

    RFC 9110 §8.6: the value is ``1*DIGIT`` (not what ``int()`` takes: ``+5``,
    ``1_2``, `` 5`` folded onto a new line); several Content-Length fields, or
    a list, must all carry the same value, else the message framing is
    ambiguous (request smuggling) and the request is rejected.
    """
    fields = h.headers.get_all("Content-Length") or []
    values = {v.strip(" \t") for f in fields for v in f.split(",")} if fields else set()
    if not values:
        return 0
    if len(values) != 1:
        return None
    (value,) = values
    if not _DIGITS.fullmatch(value):
        return None
    # Far beyond any limit either way; int() refuses more than 4,300 digits.
    # (Leading zeros first: 0000000000000000000006 is 6.)
    digits = value.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10 ** 18


def _declared_length(h: _Handler) -> str:
    """The Content-Length a request declared (checked by :func:`_content_length`),
    as digits for a message: not the clamp of 10^18 that stands for a huge one."""
    (field,) = {v.strip(" \t") for f in h.headers.get_all("Content-Length") or ()
                for v in f.split(",")}
    return _clipped(field.lstrip("0") or "0")


def _doc(code: int, message: str) -> Dict[str, Any]:
    """The API's ErrorEnvelope."""
    return {"error": {"code": code, "message": message}}


def _envelope(code: int, message: str) -> bytes:
    return json.dumps(_doc(code, message), separators=(",", ":")).encode()


def _token_table(tokens: TokenConfig) -> Optional[Dict[str, FrozenSet[str]]]:
    if tokens is None:
        return None
    if isinstance(tokens, str):
        return {tokens: frozenset([INGEST_SCOPE])}
    if isinstance(tokens, Mapping):
        return {str(k): frozenset([v] if isinstance(v, str) else v) for k, v in tokens.items()}
    return {str(t): frozenset([INGEST_SCOPE]) for t in tokens}

