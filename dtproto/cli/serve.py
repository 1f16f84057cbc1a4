"""``dtproto serve``: a local ingest endpoint (dtproto.server) until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Tuple

from .._constants import ONEAGENT_PORT, RESPONSE_WARNINGS_KEY, RESPONSE_WARNINGS_KEY_SEEN
from ._common import (EXIT_OK, UsageError, _err, _log_to_stderr, _n, _now_arg, _plural,
                      _port, _printable)


def _cmd_serve(args: argparse.Namespace) -> int:
    import socket

    _log_to_stderr()
    from ..server import IngestServer, parse_fault

    try:
        faults = [parse_fault(f) for f in args.fault]
    except ValueError as exc:
        raise UsageError("--fault: %s" % exc) from None
    store = None
    if args.store:
        # Opened here, so that its failure is named as such (not as "cannot listen").
        try:
            store = open(args.store, "ab")
        except OSError as exc:
            raise UsageError("cannot open --store %s: %s" % (
                _printable(args.store), exc.strerror or exc)) from None
    try:
        srv = IngestServer(
            args.host, args.port, tokens=args.token or None, store=store, keep=False,
            faults=faults, seed=args.seed, now_ms=args.now,
            warnings_key=RESPONSE_WARNINGS_KEY_SEEN if args.warning_lines else RESPONSE_WARNINGS_KEY)
    except (OSError, OverflowError, ValueError) as exc:
        if store is not None:
            store.close()
        why = getattr(exc, "strerror", None) or exc
        if isinstance(exc, socket.gaierror):
            why = "unknown host (%s)" % why
        raise UsageError("cannot listen on %s:%d: %s" % (
            _printable(args.host), args.port, why)) from None
    try:
        return _serve(args, srv)
    finally:
        if store is not None:
            store.close()


def _serve(args: argparse.Namespace, srv: Any) -> int:
    import signal
    import time

    # The handler only appends to a list: it runs in the main thread between
    # two bytecodes, possibly while that thread holds a lock, so it must take
    # none.  (It used to call threading.Event.set(), which deadlocked when
    # SIGTERM arrived while the loop below was inside Event.wait() holding
    # the event's lock: the process never stopped.)
    stop: list = []

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signum)

    previous = signal.signal(signal.SIGTERM, on_signal)
    out = sys.stdout
    out.write("dtproto ingest endpoint: %s\n" % srv.url)
    out.write("  OneAgent form: %s\n" % srv.oneagent_url)
    out.write("  tokens: %s\n" % (_n(len(args.token)) if args.token
                                  else "not checked (any or no token is accepted)"))
    if args.store:
        out.write("  accepted lines appended to: %s\n" % _printable(args.store))
    for f in args.fault:
        out.write("  fault: %s\n" % _printable(f))
    out.write("Ctrl-C or SIGTERM to stop\n")
    out.flush()
    srv.start()
    seen, served = 0, 0
    try:
        while True:
            time.sleep(0.2)  # a signal's handler runs at once; the sleep then ends on time
            stopping = bool(stop)
            seen, n = _log_requests(srv, seen, args.quiet)
            served += n
            if stopping:
                break
    except KeyboardInterrupt:
        pass
    finally:
        srv.shutdown()
        signal.signal(signal.SIGTERM, previous)
    served += _log_requests(srv, seen, args.quiet)[1]
    st = srv.stats
    _err("stopped after %s: %s stored, %s invalid" % (
        _plural(served, "request"), _plural(st.get("lines_stored", 0), "line"),
        _plural(st.get("lines_invalid", 0), "line")))
    return EXIT_OK


def _log_requests(srv: Any, seen: int, quiet: bool) -> Tuple[int, int]:
    """Print the requests logged after the first ``seen`` (stderr).

    Returns the new ``seen`` and how many requests were new.  The count is
    exact even when this reader fell behind the server's bounded request log
    (then the requests that fell out of it are counted, and said to be missing
    from the log, rather than lost).  Every field that comes from the client
    (the path above all) is escaped: with ``--host 0.0.0.0`` anyone could
    otherwise write to the operator's terminal.
    """
    seen, recs, missed = srv.requests_since(seen)
    if not quiet and sys.stderr is not None:
        err = sys.stderr
        if missed:
            err.write("dtproto: %s not shown (the request log fell behind)\n"
                      % _plural(missed, "request"))
        for rec in recs:
            err.write("%s %s %s %s ok=%d invalid=%d stored=%d %dB %.1fms%s\n" % (
                _printable(rec.client), _printable(rec.method), _printable(rec.path),
                rec.status if rec.status is not None else "dropped",
                rec.lines_ok, rec.lines_invalid, rec.stored, rec.wire_bytes,
                rec.duration * 1000, " fault=%s" % _printable(rec.fault) if rec.fault else ""))
        err.flush()
    return seen, missed + len(recs)


def add_parser(sub: Any) -> None:
    """The ``serve`` subcommand of the ``dtproto`` parser."""
    p = sub.add_parser("serve", allow_abbrev=False, help="run a local ingest endpoint until Ctrl-C",
                       description="A local metric ingest endpoint that validates like the "
                                   "real API (dtproto.server.IngestServer).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=ONEAGENT_PORT,
                   help="TCP port (default %d, the OneAgent's; 0 picks a free one)"
                        % ONEAGENT_PORT)
    p.add_argument("--token", action="append", default=[], metavar="T",
                   help="accepted API token (repeatable); without any, tokens are not checked")
    p.add_argument("--store", metavar="FILE", help="append accepted lines to FILE")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="inject faults, e.g. 429:rate=0.1,retry_after=2 or 503:requests=2+3 "
                        "or drop-after:rate=0.01 or slow:rate=0.1,delay=2 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed for fault rates (default 0)")
    p.add_argument("--now", type=_now_arg, metavar="TIME",
                   help="validation clock (epoch ms or ISO 8601); default: the real clock")
    p.add_argument("--warning-lines", action="store_true",
                   help="answer warnings under '%s' (what real responses carry) instead "
                        "of the documented '%s'" % (RESPONSE_WARNINGS_KEY_SEEN,
                                                    RESPONSE_WARNINGS_KEY))
    p.add_argument("-q", "--quiet", action="store_true", help="do not log each request")
    p.set_defaults(func=_cmd_serve, parser=p)
