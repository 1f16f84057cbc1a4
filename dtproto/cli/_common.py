"""What every ``dtproto`` command shares: exit codes, the usage error, output
escaping and formatting, the progress bar, opening inputs, and the argument
types and options several commands take.

Start-up stays light: nothing here imports more than the standard library's
basics at module level (gzip, select, logging and json are imported when used).
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import time
from typing import Dict, IO, Any, Callable, List, Optional, Tuple, Type

from .._input import sniff_gzip

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
# The reader of the output went away (dtproto validate big.txt | head): what a
# shell reports for a filter that SIGPIPE ended, 128 + 13.
EXIT_READER_GONE = 141

_BLOCK = 1 << 20            # bytes per read()
_STDIN = "<stdin>"


class UsageError(Exception):
    """A usage, configuration or I/O problem: reported on stderr, exit code 2."""


# --------------------------------------------------------------------------- output helpers


# What must not reach a terminal raw: C0 and C1 controls and DEL (escape
# sequences, carriage returns that overwrite a line, newlines that forge one),
# line/paragraph separators, bidirectional overrides (text shown reordered),
# and lone surrogates (undecodable input bytes, kept by surrogateescape).
# Controls, line separators, bidirectional overrides, lone surrogates, and the
# invisible characters that make a line fail for no reason a reader can see
# (zero-width space and joiners, word joiner, a byte order mark: U+FEFF at the
# start of a file makes its first metric key invalid).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e"
                     "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]")
# The same less C0, which JSON escapes itself (and uses, as indentation, outside strings).
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e"
                          "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(m: "re.Match[str]") -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:      # an undecodable byte (surrogateescape): show the byte
        return "\\x%02x" % (n - 0xDC00)
    return "\\x%02x" % n if n < 0x100 else "\\u%04x" % n


def _printable(text: Any) -> str:
    """``text`` safe to print: control characters escaped (``\\x1b``, ``\\n``...).

    Everything the CLI prints that comes from outside (input lines, file
    names, request paths, server answers, exception text) goes through this,
    so no input can move the cursor, clear the terminal or forge a line.
    """
    s = text if isinstance(text, str) else str(text)
    return s if s.isprintable() else _UNSAFE.sub(_escape_char, s)


def _write_json(doc: Any, out: IO[str]) -> None:
    """``doc`` as indented JSON (UTF-8 text kept), with the characters
    :func:`_printable` escapes written as ``\\uXXXX`` (JSON itself escapes only C0)."""
    import json

    text = json.dumps(doc, indent=2, ensure_ascii=False)
    out.write(_UNSAFE_JSON.sub(lambda m: "\\u%04x" % ord(m.group()), text))
    out.write("\n")


def _err(message: str) -> None:
    err = sys.stderr
    if err is None:        # stderr closed (2>&-): nowhere to say it
        return
    try:
        err.write("dtproto: %s\n" % _printable(message))
        err.flush()
    except (OSError, ValueError):
        pass


def _n(x: int) -> str:
    return format(x, ",")


def _plural(n: int, word: str, plural: Optional[str] = None) -> str:
    return "%s %s" % (_n(n), word if n == 1 else (plural or word + "s"))


def _shown(shown: int, total: int) -> str:
    if shown >= total:
        return ""
    return ", first %s shown" % _n(shown) if shown else ""


def _size(nbytes: int) -> str:
    return "%.1f MB" % (nbytes / 1e6) if nbytes >= 1e6 else _plural(nbytes, "byte")


def _line_range(first: int, lines: int) -> str:
    if lines == 1:
        return "line %s" % _n(first)
    return "lines %s-%s" % (_n(first), _n(first + lines - 1))


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    ``total`` may be ``None`` (stdin): then it shows bytes and rate only.
    Redraws at most ten times a second, so it costs nothing measurable.
    """

    def __init__(self, total: Optional[int], label: str) -> None:
        try:
            self.enabled = sys.stderr is not None and sys.stderr.isatty()
        except (OSError, ValueError):
            self.enabled = False
        self.total = total
        self.label = _printable(label)
        self.start = time.monotonic()
        self._last = 0.0
        self._width = 0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        rate = done / max(now - self.start, 1e-9) / 1e6
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 24)
            text = "%s [%-24s] %3d%% %.1f/%.1f MB %.1f MB/s" % (
                self.label, bar, frac * 100, done / 1e6, self.total / 1e6, rate)
        else:
            text = "%s %.1f MB %.1f MB/s" % (self.label, done / 1e6, rate)
        self._width = max(self._width, len(text))
        self._write("\r" + text.ljust(self._width))

    def close(self) -> None:
        if self.enabled and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0

    def _write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            self.enabled = False     # the terminal went away: the work goes on


class _EscapeLogs:
    """A logging filter: the message escaped like everything else printed (a
    server's text can end up in the library's log messages)."""

    def __init__(self, rewrite: Optional[Callable[[str], str]] = None) -> None:
        self.rewrite = rewrite

    def filter(self, record: Any) -> bool:
        if record.levelno < 30 and not record.name.startswith("dtproto"):
            # Below logging.WARNING (30), another library's records (under
            # --dask, Dask's scheduler logs at INFO) are not ours to print.
            return False
        text = record.getMessage()
        if self.rewrite is not None:
            text = self.rewrite(text)
        record.msg, record.args = _printable(text), None
        return True


def _log_to_stderr(rewrite: Optional[Callable[[str], str]] = None) -> None:
    """Log the library's warnings (sender, server) to stderr as "dtproto: ...";
    ``rewrite`` adapts their text (e.g. Python parameter names to CLI flags)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="dtproto: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _EscapeLogs) for f in handler.filters):
            handler.addFilter(_EscapeLogs(rewrite))


# --------------------------------------------------------------------------- inputs


def _wait_readable(f: Any) -> None:
    """Block until ``f`` (a non-blocking stream that had no data) can be read."""
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd >= 0:
        import select

        try:
            select.select([fd], [], [])
            return
        except (OSError, ValueError):   # e.g. a Windows pipe: poll instead
            pass
    time.sleep(0.01)


class _Waiting:
    """A reader over a stream that may be non-blocking (stdin set O_NONBLOCK by
    another program): "no data yet" (``read()`` returning ``None`` or raising
    :class:`BlockingIOError`) means wait, never end of input."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def read(self, n: int = -1) -> bytes:
        while True:
            try:
                data = self._raw.read(n)
            except BlockingIOError:
                data = None
            if data is not None:
                return data
            _wait_readable(self._raw)

    def peek(self, n: int = 1) -> bytes:
        if not hasattr(self._raw, "peek"):
            return b""
        while True:
            try:
                if not os.get_blocking(self._raw.fileno()):
                    # A non-blocking peek gives b"" both at the end and when no
                    # data came yet: wait until a read would not block.
                    _wait_readable(self._raw)
            except (AttributeError, OSError, ValueError):
                pass
            try:
                return bytes(self._raw.peek(n))
            except BlockingIOError:
                _wait_readable(self._raw)

    def close(self) -> None:
        pass


class _Input:
    """One opened input: ``read(n)`` gives its (decompressed) bytes.

    ``position()`` is how far the *underlying* file was consumed, for the
    progress bar (compressed bytes for gzip); ``size`` is its size when known.
    Every failure to open or read is a :class:`UsageError` "cannot open/read
    NAME: why" (exit 2), whatever raised it: the OS, gzip or zlib.
    """

    def __init__(self, name: str) -> None:
        self.name = _STDIN if name == "-" else name
        self.path: Optional[str] = None if name == "-" else name
        self.size: Optional[int] = None
        self.gzip = False
        self._count = 0
        self._file: Any = None
        # What a read may raise (gzip.BadGzipFile is an OSError; ValueError:
        # the stream was closed under us).
        self._errors: Tuple[Type[BaseException], ...] = (OSError, EOFError, ValueError)
        if self.path is None:
            stdin = sys.stdin
            if stdin is None or getattr(stdin, "buffer", None) is None:
                raise UsageError("cannot read %s: standard input is closed" % self.name)
            raw: Any = _Waiting(stdin.buffer)
        else:
            try:
                raw = open(self.path, "rb")
            except OSError as exc:
                raise UsageError("cannot open %s: %s" % (name, exc.strerror or exc)) from None
            try:
                st = os.fstat(raw.fileno())
            except OSError as exc:
                raw.close()
                raise UsageError("cannot open %s: %s" % (name, exc.strerror or exc)) from None
            if stat.S_ISREG(st.st_mode):
                self.size = st.st_size   # else a pipe such as <(zcat ...): size unknown
        self._raw = raw
        try:
            # gzip is told by the first two bytes however they arrive (a pipe
            # may give one at a time); ``stream`` gives back what was read
            gz, stream = sniff_gzip(raw) if hasattr(raw, "peek") else (False, raw)
        except (OSError, ValueError) as exc:
            self.close()
            raise UsageError("cannot read %s: %s" % (
                self.name, getattr(exc, "strerror", None) or exc)) from None
        if gz:
            import gzip

            import zlib

            self.gzip = True
            self._file = gzip.GzipFile(fileobj=stream, mode="rb")
            # Damaged deflate data raises zlib.error (not an OSError).
            self._errors = self._errors + (zlib.error,)
        else:
            self._file = stream

    def read(self, n: int = _BLOCK) -> bytes:
        try:
            # read1() for gzip: one decompression step per call, so a read that
            # fails (truncated or damaged data) loses no data decoded before it.
            data = self._file.read1(n) if self.gzip else self._file.read(n)
        except self._errors as exc:
            raise UsageError("cannot read %s: %s" % (
                self.name, getattr(exc, "strerror", None) or exc)) from None
        self._count += len(data)
        return data

    def position(self) -> int:
        if self.gzip and self.path is not None:
            try:
                return self._raw.tell()
            except OSError:
                pass
        return self._count

    def close(self) -> None:
        try:
            if self._file is not None and self._file is not self._raw:
                self._file.close()
        except (OSError, EOFError, ValueError):
            pass
        finally:
            if self.path is not None:
                self._raw.close()



def _open_input(name: str, json_docs: Optional[List[Dict[str, Any]]]) -> "Optional[_Input]":
    """Open one input of a command, or say why not (stderr, and a ``--json`` entry).

    Returns None when it cannot be opened; the command then exits with EXIT_USAGE.
    """
    try:
        return _Input(name)
    except UsageError as exc:
        _err(str(exc))
        if json_docs is not None:
            json_docs.append({"file": name, "io_error": str(exc)})
        return None


def _input_names(args: argparse.Namespace) -> List[str]:
    names = list(args.files)
    if not names:
        if sys.stdin is None or sys.stdin.isatty():
            # Like json.tool: no input and nothing piped, so help rather than a hang.
            args.parser.print_usage(sys.stderr)
            raise UsageError("no input: give FILE arguments, or '-' to read stdin")
        names = ["-"]
    if names.count("-") > 1:
        raise UsageError("'-' (stdin) can be given only once")
    return names



# --------------------------------------------------------------------------- arguments


def _now_arg(text: str) -> int:
    """``--now TIME`` as epoch milliseconds: epoch milliseconds, ISO 8601
    (naive means UTC; fractions of a millisecond are dropped), or ``now``.

    Integer arithmetic throughout: a float of epoch seconds cannot hold every
    millisecond of today exactly (``.472`` would come out as ``.471``).
    """
    t = text.strip()
    if t.lower() == "now":
        return time.time_ns() // 1_000_000
    if t.isascii() and t.isdigit():    # not "²": str.isdigit() takes any digit character
        return int(t)
    from datetime import datetime, timedelta, timezone

    iso = t[:-1] + "+00:00" if t[-1:] in ("Z", "z") else t
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "invalid time %r: use epoch milliseconds, ISO 8601 "
            "(2024-06-01T12:00:00Z) or 'now'" % text) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1, not %d" % n)
    return n


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
    if n < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return n


def _port(text: str) -> int:
    n = _count(text)
    if n > 65535:
        raise argparse.ArgumentTypeError("a TCP port is 0..65535 (0 picks a free one), not %d"
                                         % n)
    return n


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not 0 < x < 1e6:     # also refuses nan and inf, which sockets cannot take
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 (and "
                                         "below 1,000,000), not %r" % text)
    return x


def add_inputs(p: argparse.ArgumentParser) -> None:
    """The FILE arguments of the commands that read metric lines."""
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="input files ('-' = stdin, the default when piped); "
                        "gzip-compressed files are read transparently")


def add_window(p: argparse.ArgumentParser) -> None:
    """``--now``: the timestamp window of the commands that validate."""
    p.add_argument("--now", type=_now_arg, metavar="TIME",
                   help="apply the timestamp window (now-1h .. now+10min) around TIME: "
                        "epoch ms, ISO 8601 (naive = UTC) or 'now'; default: no window")


def _url_error(url: str, exc: Exception) -> str:
    """Why ``url`` is not a URL, without its credentials: urllib's message
    may quote the host part (``netloc 'user:secret@...' contains invalid
    characters``), and whatever precedes an ``@`` can be a password."""
    text = str(exc)
    rest = url.split("//", 1)[-1]
    if "@" in rest:
        secret = rest.rsplit("@", 1)[0]
        if secret:
            text = text.replace(secret, "***")
    return text
