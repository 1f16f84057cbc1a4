"""The ``dtproto`` command line (also ``python -m dtproto``).

Commands::

    dtproto validate FILE... [-]      check files offline, any size, like the ingest API
    dtproto send FILE... [-] --url U  send them (token from DT_API_TOKEN or --token-file)
    dtproto serve                     a local ingest endpoint (dtproto.server)
    dtproto bench                     codec throughput on a seeded corpus
    dtproto stats FILE... [--json]    cardinality per metric key (series, dimension values)
    dtproto load --url U --rate N     generated lines at a target rate (sizing pipelines)
    dtproto --version                 "dtproto 0.1.0 (cython)"

Conventions: ``-`` reads stdin; a FILE whose content is
gzip-compressed is read transparently; results go to stdout, diagnostics,
timings and the progress bar (only when stderr is a terminal) to stderr.
Exit codes: 0 all good, 1 invalid lines or rejected data, 2 usage or I/O
error.

One module per command (``validate``, ``send``, ``serve``, ``bench``, ``load``, ``stats``), each
with its ``add_parser``; what they share is in ``_common``.  Start-up stays
light: the sender (http.client, ssl), the server, multiprocessing, gzip and
json are imported inside the commands that need them, never at module level.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Optional, Sequence

from . import bench, load, send, serve, stats, validate
from ._common import EXIT_INVALID, EXIT_OK, EXIT_READER_GONE, EXIT_USAGE, UsageError, _err
# Shared helpers other modules (and tests) use as dtproto.cli.<name>:
from ._common import _printable as _printable  # escaping for terminals (dtproto.server too)
from .send import _cli_text as _cli_text        # library wording -> CLI flags

__all__ = ["main", "build_parser", "UsageError", "EXIT_OK", "EXIT_INVALID", "EXIT_USAGE",
           "EXIT_READER_GONE"]


# --------------------------------------------------------------------------- parser


def _version_text() -> str:
    from .. import IMPLEMENTATION, __version__
    from .._impl import extension_error

    text = "dtproto %s (%s)" % (__version__, IMPLEMENTATION)
    why = extension_error()  # None when the Cython core is loaded
    return text if why is None else "%s\nwhy not cython: %s" % (text, why)


class _VersionAction(argparse.Action):
    """``--version`` that imports the codec only when asked (the parser is built first)."""

    def __init__(self, option_strings: List[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: Optional[str] = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        sys.stdout.write(_version_text() + "\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dtproto`` command."""
    # allow_abbrev=False everywhere: "--token x" must not silently mean "--token-file x".
    parser = argparse.ArgumentParser(
        prog="dtproto", allow_abbrev=False,
        description="Validate, send and serve Dynatrace metric ingestion lines; benchmark "
                    "the codec.",
        epilog="Exit codes: 0 all good, 1 invalid lines or rejected data, 2 usage or I/O error, "
               "141 the reader of the output went away (| head) before validate, stats, "
               "bench or send --dry-run was done.",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version and the loaded implementation, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (validate, send, serve, bench, load, stats):
        command.add_parser(sub)
    return parser


class _OutputError(Exception):
    """Standard output cannot be written (full disk, closed, reader gone)."""

    def __init__(self, text: str, reader_gone: bool = False) -> None:
        super().__init__(text)
        self.reader_gone = reader_gone   # EPIPE: the reader closed its end


class _Stdout:
    """``sys.stdout`` while :func:`main` runs: a failed write or flush (ENOSPC,
    EIO, EPIPE, or stdout closed at start: ``>&-``) raises :class:`_OutputError`,
    which :func:`main` reports as an I/O error instead of a traceback."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _call(self, name: str, *args: Any) -> Any:
        if self._stream is None:
            raise _OutputError("standard output is closed")
        try:
            return getattr(self._stream, name)(*args)
        except (OSError, ValueError) as exc:   # ValueError: closed under us
            raise _OutputError(getattr(exc, "strerror", None) or str(exc),
                               isinstance(exc, BrokenPipeError)) from None

    def write(self, text: str) -> int:
        return int(self._call("write", text) or 0)

    def flush(self) -> None:
        self._call("flush")

    def isatty(self) -> bool:
        return self._stream is not None and bool(self._call("isatty"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _drop_stdout(stream: Any) -> None:
    """After a write error: point fd 1 at the null device, so that the
    interpreter's final flush of what is still buffered does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def _moves_data(args: Optional[argparse.Namespace]) -> bool:
    """Whether the command sends or receives data (``send`` without
    ``--dry-run``, ``load``, ``serve``): its output is the report of that."""
    command = getattr(args, "command", None)
    return command in ("load", "serve") or (command == "send"
                                           and not getattr(args, "dry_run", False))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``dtproto`` console script; returns the exit code."""
    real_stdout = sys.stdout
    sys.stdout = _Stdout(real_stdout)    # type: ignore[assignment]
    args = None
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            # --help and --version print, then exit from in here: flushed now,
            # a failed write is said as every command says it (below), not
            # by the interpreter at exit ("Exception ignored", status 120).
            sys.stdout.flush()
            raise
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        rc = int(args.func(args))
        sys.stdout.flush()      # a full disk shows here, not at interpreter exit
        return rc
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except _OutputError as exc:
        _drop_stdout(real_stdout)
        if exc.reader_gone and not _moves_data(args):
            # The reader stopped reading (dtproto validate big.txt | head):
            # it has what it wanted, so no message, as a filter that SIGPIPE
            # ends says none.  A command that moves data says it (below):
            # the report of what it delivered or received is lost.
            return EXIT_READER_GONE
        _err("cannot write the output: %s" % exc)
        return EXIT_USAGE
    finally:
        sys.stdout = real_stdout
