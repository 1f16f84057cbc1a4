"""``dtproto send``: send files to an ingest endpoint (dtproto.sender), or
``--dry-run`` to show the chunks that would be sent."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any, Dict, List, Optional

from ._common import (_BLOCK, _STDIN, EXIT_INVALID, EXIT_OK, EXIT_USAGE, UsageError, _count,
                      _err, _Input, _input_names, _line_range, _log_to_stderr, _n, _open_input,
                      _plural,
                      _positive, _printable, _Progress, _seconds, _url_error, _write_json,
                      add_inputs,
                      add_window)
from .._constants import INGEST_SCOPE
from ..report import ValidationReport
from .validate import _Caps, _checked, _Checked, _human_validation, _json_validation, _then


def _read_token(args: argparse.Namespace) -> Optional[str]:
    if args.token_file:
        try:
            with open(args.token_file, "r", encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError("cannot read the token file %s: %s" % (
                args.token_file, getattr(exc, "strerror", None) or exc)) from None
        if not token:
            raise UsageError("the token file %s is empty" % args.token_file)
        return token
    from .._send_core import TOKEN_ENV, env_settings

    # Only the token variable: DT_URL is not this token's to parse (--url may be given).
    return env_settings({TOKEN_ENV: os.environ.get(TOKEN_ENV, "")})[1]


# Python parameters that sender messages name, and the flags that set them here.
_CLI_WORDS = (
    ("pass token=None", "give no token (no --token-file, DT_API_TOKEN unset)"),
    ("pass the API token as token=", "pass the API token with --token-file or DT_API_TOKEN"),
    ("pass it as token=", "pass it with --token-file or DT_API_TOKEN"),
    ("pass allow_insecure=True", "pass --allow-insecure"),
    ("(allow_insecure=True)", "(--allow-insecure)"),
    ("lower max_bytes", "lower --max-bytes"),
    ("below max_bytes=", "below --max-bytes "),
    ("> max_bytes ", "> --max-bytes "),
    ("(retry_ambiguous=False)", "(--retry-ambiguous not given)"),
    ("read_timeout=", "--timeout "),
    ("pass verify='/path/to/ca.pem'", "pass --ca-file FILE"),
    ("or proxy=False", "or --no-proxy"),
    ("(proxy=, or the proxy environment variables)",
     "(--proxy, or the proxy environment variables)"),
    ("in proxy= (", "in --proxy ("),
    ("Sender(url, token, ...)", "--url"),
)


def _cli_text(text: str) -> str:
    """A library message with its Python parameter names replaced by CLI flags."""
    for python, flag in _CLI_WORDS:
        text = text.replace(python, flag)
    return text


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """The flags of how requests reach the endpoint (``send`` and ``load``): the
    sender's messages name them (:data:`_CLI_WORDS`), so every command that
    sends has all of them."""
    p.add_argument("--retry-ambiguous", action="store_true",
                   help="also retry after a timeout once the request was sent (may store "
                        "lines twice)")
    p.add_argument("--allow-insecure", action="store_true",
                   help="allow sending the token over plain http:// to a host that is not "
                        "loopback (it travels in clear)")
    p.add_argument("--ca-file", metavar="FILE",
                   help="verify the server's TLS certificate with the CA bundle FILE (PEM), "
                        "e.g. for a Managed cluster or ActiveGate with a private CA")
    proxy = p.add_mutually_exclusive_group()
    proxy.add_argument("--proxy", metavar="URL",
                       help="send through this http:// proxy (default: HTTPS_PROXY/HTTP_PROXY "
                            "and NO_PROXY from the environment)")
    proxy.add_argument("--no-proxy", action="store_true",
                       help="connect directly, ignoring proxy environment variables")


def connection_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The Sender options of :func:`add_connection_args`' flags."""
    proxy: Any = True
    if args.no_proxy:
        proxy = False
    elif args.proxy is not None:
        proxy = args.proxy   # '' too: the Sender refuses it (not the environment's proxy)
    return dict(retry_ambiguous=args.retry_ambiguous, allow_insecure=args.allow_insecure,
                verify=args.ca_file or True, proxy=proxy, retries=args.retries,
                read_timeout=args.timeout, gzip=args.gzip, concurrency=args.concurrency)


def sender_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The Sender options ``dtproto send`` builds from its flags, in one process
    or on the Dask workers (``--now``: the window of ``--validate``)."""
    return dict(connection_options(args), max_bytes=args.max_bytes, max_lines=args.max_lines,
                validate=args.validate, now_ms=args.now)


def _config_text(exc: Exception, url_from_env: bool) -> str:
    """A Sender's refusal of its configuration, in the CLI's words: a bad URL
    is said to be the --url given, or DT_URL when the URL came from there."""
    from .._send_core import URL_ENV

    text = str(exc)
    if text.startswith("url "):
        return (URL_ENV if url_from_env else "--url") + text[3:]
    return _cli_text(text)


def sender_url(args: argparse.Namespace) -> Optional[str]:
    """The URL to send to: ``--url``, else ``DT_URL`` (completed with the API
    path, as Sender.from_env() reads it), else None."""
    from .._send_core import URL_ENV, env_settings

    if args.url is not None:
        return str(args.url)
    try:
        return env_settings()[0]
    except ValueError as exc:   # urllib.parse on a malformed URL ('http://[::1')
        raise UsageError("invalid %s: %s" % (URL_ENV, _url_error(os.environ.get(URL_ENV, ""),
                                                                   exc))) from None


def new_sender(args: argparse.Namespace, url: str, **options: Any) -> Any:
    """A Sender for ``url`` (:func:`sender_url`) with the token of
    ``--token-file`` or DT_API_TOKEN; what it refuses is a UsageError that
    names the flag or variable behind it."""
    from .. import sender as _sender

    token = _read_token(args)
    try:
        return _sender.Sender(_sender.ingest_url(url), token, **options)
    except _sender.ConfigurationError as exc:
        raise UsageError(_config_text(exc, args.url is None)) from None
    except ValueError as exc:   # urllib.parse on a malformed URL ('http://[::1')
        raise UsageError("invalid %s: %s" % ("--url" if args.url is not None else
                                             _sender.URL_ENV, _url_error(url, exc))) from None
    except OSError as exc:      # --ca-file cannot be read or holds no certificate
        raise UsageError("cannot use --ca-file %s: %s" % (
            args.ca_file, getattr(exc, "strerror", None) or exc)) from None


def _undelivered_text(reason: str) -> str:
    """An undelivered range's reason with the flags for the sender's parameter
    names, and a server's answer quoted in it unchanged."""
    from .._send_core import _quotes_server

    return reason if _quotes_server(reason) else _cli_text(reason)


def _invalid_text(reason: str, source: str) -> str:
    """An invalid line's reason: the server's as it came, the sender's own
    (``source == "client"``) with the CLI's flags for its parameter names."""
    return _cli_text(reason) if source == "client" else reason


class _Feed:
    """The file-like view of an :class:`_Input` that ``send`` reads: moves the
    progress bar, and turns a read failure into a clean end of input.

    Only complete lines are handed out while more input may follow: a line is
    held back until its newline (or the end of the input) arrives.  When a
    read fails part-way (a truncated or damaged ``.gz``), the error is kept in
    :attr:`error`, the partial last line is dropped, and the input ends there,
    so the sender delivers exactly the ``lines`` complete lines read and its
    result says what happened to them.  A held-back piece longer than
    ``max_bytes`` is passed on: that line is rejected as too long anyway
    (or skipped, when it is blank).
    """

    def __init__(self, inp: _Input, progress: _Progress, max_bytes: int) -> None:
        self._inp = inp
        self._progress = progress
        self._max = max_bytes
        self._tail = b""
        self._done = False
        #: The UsageError of a failed read ("cannot read NAME: why"), or None.
        self.error: Optional[UsageError] = None
        #: Newlines handed out: complete lines read so far.
        self.lines = 0
        #: The input ended with a line without a newline (handed out last).
        self.partial = False

    def read(self, n: int = _BLOCK) -> bytes:
        while not self._done:
            try:
                data = self._inp.read(n)
            except UsageError as exc:
                self.error = exc
                self._done = True
                self._tail = b""        # a line cut short: never send it
                return b""
            self._progress.update(self._inp.position())
            if not data:
                self._done = True
                out, self._tail = self._tail, b""
                self.partial = bool(out)
                return out
            i = data.rfind(b"\n")
            if i < 0:
                self._tail += data
                if len(self._tail) > self._max:
                    out, self._tail = self._tail, b""
                    return out
                continue
            out = self._tail + data[: i + 1] if self._tail else data[: i + 1]
            self._tail = data[i + 1:]
            self.lines += out.count(b"\n")
            return out
        return b""

    def failure(self) -> str:
        """The read error with where it stopped, for the output."""
        assert self.error is not None
        return "%s (after %s; the rest of the input was not read)" % (
            self.error, _plural(self.lines, "complete line"))


def _dry_run(args: argparse.Namespace, names: List[str], max_bytes: int,
             max_lines: Optional[int]) -> int:
    from .._impl import codec
    # The sender's own chunker: a dry run must show exactly the chunks that
    # ``send`` would make, and a second implementation here could drift.
    from ..sender import _Chunk, _chunk_stream, only_blank_lines

    rc = EXIT_OK
    docs: List[Dict[str, Any]] = []
    out = sys.stdout
    for name in names:
        inp = _open_input(name, docs if args.json else None)
        if inp is None:
            rc = EXIT_USAGE
            continue
        progress = _Progress(inp.size, inp.name)
        # Warnings are kept as errors are, the first --max-errors (their
        # total exact): a file of warnings held them all in memory.
        caps = _Caps(args.max_errors, args.max_errors, args.examples)
        checked = _Checked(ValidationReport(), {}, 0)
        chunks: List[Dict[str, Any]] = []
        rejected: List[Dict[str, Any]] = []   # the first --max-errors of them
        rejected_total = 0
        last_rejected = 0
        feed = _Feed(inp, progress, max_bytes)
        try:
            blocks = iter(lambda: feed.read(_BLOCK), b"")
            for item in _chunk_stream(blocks, 1, max_bytes, max_lines):
                if isinstance(item, _Chunk):
                    body = item.body
                    blank = only_blank_lines(body)
                    chunks.append({"first_line": item.first_line, "lines": item.lines,
                                   "bytes": len(body), "sent": not blank})
                    renames, hints = checked.report._warning_room(caps.max_warnings)
                    part = codec._validate_kinds(body, args.now, None, renames, hints)
                    checked = _then(checked, _checked(part, caps.examples), caps,
                                    item.first_line - 1)
                else:
                    rejected_total += 1
                    last_rejected = item.line
                    if len(rejected) < args.max_errors:
                        rejected.append({"line": item.line, "reason": _cli_text(item.reason)})
        finally:
            progress.close()
            inp.close()
        r = checked.report
        # The lines the chunker refused are lines of the input too (a last
        # one is after every chunk): counted, as not sendable, never as blank.
        r.lines_total = max(r.lines_total, last_rejected)
        if (r.lines_invalid or rejected_total) and rc == EXIT_OK:
            rc = EXIT_INVALID
        if feed.error is not None:
            _err(feed.failure())
            rc = EXIT_USAGE
        if args.json:
            doc = _json_validation(inp.name, r)
            doc["chunks"] = chunks
            doc["rejected_by_client"] = rejected
            doc["rejected_by_client_total"] = rejected_total
            if feed.error is not None:
                doc["io_error"] = str(feed.error)
                doc["lines_read"] = feed.lines
            docs.append(doc)
            continue
        sent = [c for c in chunks if c["sent"]]
        out.write("%s: dry run, nothing sent: %s of at most %s bytes%s\n" % (
            _printable(inp.name), _plural(len(sent), "request"), _n(max_bytes),
            "" if not max_lines else " and %s lines" % _n(max_lines)))
        for k, c in enumerate(chunks, 1):
            out.write("  chunk %d: %s, %s%s\n" % (
                k, _line_range(c["first_line"], c["lines"]), _plural(c["bytes"], "byte"),
                "" if c["sent"] else " (blank lines only: not sent)"))
        for x in rejected:
            out.write("  %s:%d: not sendable: %s\n" % (
                _printable(inp.name), x["line"], _printable(x["reason"])))
        if rejected_total > len(rejected):
            out.write("  ... %s more lines not sendable (--max-errors N)\n"
                      % _n(rejected_total - len(rejected)))
        if feed.error is not None:
            out.write("  %s\n" % _printable(feed.failure()))
        _human_validation(inp.name, checked, args.examples, out, caps.max_warnings,
                          rejected_total, "--max-errors")
    if args.json:
        _write_json({"dry_run": True, "files": docs}, out)
    return rc


def _result_doc(name: str, result: Any) -> Dict[str, Any]:
    import dataclasses

    doc: Dict[str, Any] = {"file": name}
    doc.update(dataclasses.asdict(result))
    # A reason the sender wrote names its Python parameters: here, the flags.
    for u in doc.get("undelivered") or ():
        u["reason"] = _undelivered_text(u["reason"])
    for i in doc.get("invalid_lines") or ():
        i["reason"] = _invalid_text(i["reason"], i["source"])
    doc["ok"] = result.ok
    doc["unreported_invalid"] = result.unreported_invalid
    doc["lines_not_delivered"] = result.lines_not_delivered
    return doc


def _request_text(q: Any) -> str:
    """One request of a SendResult (or as it completes, for -v): never the token."""
    return "request %d: %s, %s: %s after %s, %.1f ms" % (
        q.index + 1, _line_range(q.first_line, q.lines), _plural(q.bytes, "byte"),
        q.status if q.status is not None else "no answer", _plural(q.attempts, "attempt"),
        q.latency * 1000)


class _InFlight:
    """``send -v``: a line on stderr for each request as it completes, with the
    number still in flight (the sender's ``on_request``); the progress bar,
    when there is one, is cleared first and redrawn by the next read."""

    def __init__(self) -> None:
        self.progress: Optional[_Progress] = None
        self.peak = 0

    def __call__(self, info: Any, in_flight: int) -> None:
        self.peak = max(self.peak, in_flight + 1)
        if self.progress is not None:
            self.progress.close()
        _err("%s; %d in flight" % (_request_text(info), in_flight))


def _human_send(name: str, url: str, result: Any, error: Optional[str], limit: int,
                verbose: bool, read_error: Optional[str] = None,
                never_sent: Optional[int] = None, peak: int = 0) -> None:
    out = sys.stdout
    name = _printable(name)
    unanswered = sum(1 for q in result.requests if q.status is None)
    out.write("%s -> %s: %s%s, %s\n" % (
        name, _printable(url), _plural(len(result.requests), "request"),
        " (%s without an answer)" % _n(unanswered) if unanswered else "",
        _plural(result.bytes_sent, "byte")))
    out.write("  %s ok, %s invalid, %s not delivered\n" % (
        _n(result.lines_ok), _n(result.lines_invalid), _n(result.lines_not_delivered)))
    if verbose:
        if peak:
            out.write("  at most %s in flight at once\n" % _plural(peak, "request"))
        for q in result.requests:
            out.write("  %s\n" % _request_text(q))
    for i in result.invalid_lines[:limit]:
        out.write("  %s:%d: %s%s\n" % (name, i.line, _printable(_invalid_text(i.reason, i.source)),
                                        " (not sent)" if i.source == "client" else ""))
    if len(result.invalid_lines) > limit:
        out.write("  ... %s more rejected lines (see --json)\n"
                  % _n(len(result.invalid_lines) - limit))
    if result.unreported_invalid:
        out.write("  %s more invalid lines were counted but not listed by the server "
                  "(it lists at most 10 per request)\n" % _n(result.unreported_invalid))
    for w in result.warnings[:limit]:
        out.write("  %s:%d: warning: %s\n" % (name, w.line, _printable(w.message)))
    if len(result.warnings) > limit:
        out.write("  ... %s more warnings (see --json)\n" % _n(len(result.warnings) - limit))
    for u in result.undelivered:
        out.write("  %s:%d-%d: not delivered%s: %s\n" % (
            name, u.first_line, u.last_line, " (may have been stored: ambiguous)"
            if u.ambiguous else "", _printable(_undelivered_text(u.reason))))
    if error and not result.undelivered:
        out.write("  send stopped: %s\n" % _printable(error))
    if result.stopped_at is not None and read_error is None:
        if never_sent is not None:
            out.write("  %s never sent (lines %s-%s): the send stopped at the failure above\n"
                      % (_plural(never_sent, "more line"), _n(result.stopped_at),
                         _n(result.stopped_at + never_sent - 1)))
        else:
            out.write("  lines from %s on were never sent: the send stopped at the failure "
                      "above\n" % _n(result.stopped_at))
    if read_error:
        out.write("  %s\n" % _printable(read_error))


def _cmd_send(args: argparse.Namespace) -> int:
    names = _input_names(args)
    for name in names:   # fail early, before anything is sent (without opening pipes)
        if name == "-":
            continue
        try:
            is_dir = stat.S_ISDIR(os.stat(name).st_mode)
        except (OSError, ValueError) as exc:
            raise UsageError("cannot open %s: %s" % (
                name, getattr(exc, "strerror", None) or exc)) from None
        if is_dir:
            raise UsageError("cannot open %s: Is a directory" % name)
    from .. import sender as _sender

    url = sender_url(args)
    if url is None and not args.dry_run:
        raise UsageError("send needs --url or %s (or --dry-run)" % _sender.URL_ENV)
    _log_to_stderr(_cli_text)

    sender = None
    max_bytes, max_lines = args.max_bytes, args.max_lines
    in_flight = _InFlight() if args.verbose and not args.json else None
    if url is not None:
        sender = new_sender(args, url, on_request=in_flight, **sender_options(args))
        max_bytes, max_lines = sender.max_bytes, sender.max_lines
    if args.dry_run:
        return _dry_run(args, names, max_bytes, max_lines)
    assert sender is not None
    if args.dask:   # the Dask workers send, each with a Sender of its own (cli/_dask.py)
        from ._dask import send_dask

        sender.close()
        return send_dask(args, names, sender.url)
    rc = EXIT_OK
    docs: List[Dict[str, Any]] = []
    skipped: List[str] = []
    interrupted: Optional[BaseException] = None
    with sender:
        for k, name in enumerate(names):
            inp = _open_input(name, docs if args.json else None)
            if inp is None:
                rc = EXIT_USAGE
                continue
            progress = _Progress(inp.size, inp.name)
            feed = _Feed(inp, progress, max_bytes)
            if in_flight is not None:
                in_flight.progress, in_flight.peak = progress, 0
            error = None
            never_sent: Optional[int] = None
            try:
                result = sender.send(feed)
            except KeyboardInterrupt as exc:
                # Ctrl-C: say what became of the lines sent so far (a re-run
                # would send them again), then stop like any interrupted command.
                interrupted = exc
                result = getattr(exc, "dtproto_result", None) or _sender.SendResult()
                error = "interrupted (Ctrl-C)"
            except _sender.SendError as exc:
                result = getattr(exc, "result", None) or _sender.SendResult()
                error = _cli_text(str(exc))
                if result.stopped_at is not None and feed.error is None:
                    never_sent = _count_rest(feed, inp, result.stopped_at)
                if isinstance(exc, (_sender.AuthenticationError, _sender.MissingScopeError)):
                    _err("the API token comes from --token-file or DT_API_TOKEN and needs "
                         "the %s scope" % INGEST_SCOPE)
            finally:
                progress.close()
                inp.close()
            if (not result.ok or error) and rc == EXIT_OK:
                rc = EXIT_INVALID
            input_failed = getattr(result, "input_error", None) is not None
            if input_failed:
                # The sender itself met a failing read (the feed above turns
                # ours into an end of input, so this is a safety net): its
                # partial result is printed like any other; exit 2.
                rc = EXIT_USAGE
            read_error = None
            if feed.error is not None:
                # The input broke part-way: what was read has been sent and is
                # reported above; the rest never was (exit 2, I/O error).
                read_error = feed.failure()
                _err(read_error)
                rc = EXIT_USAGE
            if args.json:
                doc = _result_doc(inp.name, result)
                doc["error"] = error
                doc["lines_never_sent"] = never_sent
                if feed.error is not None:
                    doc["io_error"] = str(feed.error)
                    doc["lines_read"] = feed.lines
                docs.append(doc)
            else:
                _human_send(inp.name, sender.url, result, error, args.max_errors, args.verbose,
                            read_error, never_sent, in_flight.peak if in_flight else 0)
            if error and not input_failed:
                # The sender stops at an undeliverable chunk; so do we, and say
                # which files were not sent at all.
                skipped = names[k + 1:]
                break
    if skipped:
        _err("send stopped: %s not sent: %s" % (
            _plural(len(skipped), "remaining file"),
            ", ".join(_printable(_STDIN if n == "-" else n) for n in skipped)))
    if args.json:
        _write_json({"url": sender.url, "files": docs,
                     "skipped_files": [_STDIN if n == "-" else n for n in skipped]},
                    sys.stdout)
    if interrupted is not None:
        raise interrupted   # "dtproto: interrupted", exit 130, after the report above
    return rc


def _count_rest(feed: "_Feed", inp: "_Input", stopped_at: int) -> Optional[int]:
    """Lines of the input from ``stopped_at`` on (never sent), or ``None``
    when that is unknown: standard input (it may never end) or a read error."""
    if inp.path is None:
        return None
    try:
        while feed.read(_BLOCK):
            pass
    except Exception:
        return None
    if feed.error is not None:
        return None
    lines = feed.lines + (1 if feed.partial else 0)
    return max(lines - stopped_at + 1, 0)


def add_parser(sub: Any) -> None:
    """The ``send`` subcommand of the ``dtproto`` parser."""
    p = sub.add_parser("send", allow_abbrev=False, help="send files to an ingest endpoint",
                       description="Send metric lines in chunks of at most --max-bytes. The "
                                   "URL comes from --url or DT_URL, the API token from "
                                   "--token-file or DT_API_TOKEN. When a request fails for "
                                   "good, the send stops: the lines never sent are counted "
                                   "and the remaining FILEs are named as skipped.")
    add_inputs(p)
    p.add_argument("--url", metavar="URL",
                   help="ingest URL, or an environment base URL such as "
                        "https://{env-id}.live.dynatrace.com (the API path is added); "
                        "default: $DT_URL")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the API token from FILE (default: $DT_API_TOKEN)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and show the chunks that would be sent; send nothing")
    p.add_argument("--json", action="store_true", help="print the SendResult as JSON")
    p.add_argument("--gzip", action="store_true", help="gzip request bodies")
    p.add_argument("--max-bytes", type=_positive, default=1_000_000, metavar="N",
                   help="uncompressed bytes per request (default 1,000,000)")
    p.add_argument("--max-lines", type=_positive, default=None, metavar="N",
                   help="lines per request (default: no cap; 1,000 for OneAgent)")
    p.add_argument("--retries", type=_count, default=3, metavar="N",
                   help="retries per request on 429, 5xx and connection errors (default 3)")
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                   help="read timeout in seconds (default 30)")
    p.add_argument("--concurrency", type=_positive, default=4, metavar="N",
                   help="requests in flight at once (default 4); halved on 429, grown back "
                        "by one per accepted request; with more than 1 the chunks may be "
                        "stored out of order (nothing changes for lines with timestamps)")
    p.add_argument("--validate", action="store_true",
                   help="check every line before sending: invalid lines are listed with "
                        "their line numbers and never sent")
    add_connection_args(p)
    p.add_argument("--max-errors", type=_count, default=100, metavar="N",
                   help="rejected lines and warnings shown per file (default 100); a send's "
                        "--json lists all, that of --dry-run at most N of each kind (with "
                        "exact counts), as validate's does")
    p.add_argument("--examples", type=_count, default=3, metavar="N",
                   help="with --dry-run: examples shown per reason code (default 3)")
    add_window(p)
    p.add_argument("--dask", metavar="ADDRESS",
                   help="send from a Dask cluster (pip install dtproto[dask]): a scheduler "
                        "address such as tcp://host:8786, or local[:N] for N local worker "
                        "processes; each worker sends 64 MiB blocks of the files (paths it can "
                        "open) with a sender of its own; a failed block does not stop the others")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="a line on stderr for each request as it completes, with the number "
                        "still in flight; then one line per request with the result")
    p.set_defaults(func=_cmd_send, parser=p)
