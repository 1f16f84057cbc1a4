"""The ``dtproto`` command line (also ``python -m dtproto``).

Commands::

    dtproto validate FILE... [-]      check files offline, any size, like the ingest API
    dtproto send FILE... [-] --url U  send them (token from DT_API_TOKEN or --token-file)
    dtproto serve                     a local ingest endpoint (dtproto.server)
    dtproto bench                     codec throughput on a seeded corpus
    dtproto --version                 "dtproto 0.1.0 (cython)"

Conventions: ``-`` reads stdin; a FILE whose content is
gzip-compressed is read transparently; results go to stdout, diagnostics,
timings and the progress bar (only when stderr is a terminal) to stderr.
Exit codes: 0 all good, 1 invalid lines or rejected data, 2 usage or I/O
error.

Start-up stays light: the sender (http.client, ssl), the server,
multiprocessing, gzip and json are imported inside the commands that need
them, never at module level.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import time
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

_BLOCK = 1 << 20            # bytes per read()
_SEGMENT = 4 << 20          # bytes validated per validate() call (bounded memory)
_MIN_JOB_BYTES = 256 << 10  # a --jobs byte range is never smaller than this
_SEGMENT_ERRORS = 1_000     # errors listed per segment at least (examples per code)
_GZIP_MAGIC = b"\x1f\x8b"
_STDIN = "<stdin>"


class UsageError(Exception):
    """A usage, configuration or I/O problem: reported on stderr, exit code 2."""


# --------------------------------------------------------------------------- output helpers


# What must not reach a terminal raw: C0 and C1 controls and DEL (escape
# sequences, carriage returns that overwrite a line, newlines that forge one),
# line/paragraph separators, bidirectional overrides (text shown reordered),
# and lone surrogates (undecodable input bytes, kept by surrogateescape).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")
# The same less C0, which JSON escapes itself (and uses, as indentation, outside strings).
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")
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
            head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        except (OSError, ValueError) as exc:
            self.close()
            raise UsageError("cannot read %s: %s" % (
                self.name, getattr(exc, "strerror", None) or exc)) from None
        if head == _GZIP_MAGIC:
            import gzip

            import zlib

            self.gzip = True
            self._file = gzip.GzipFile(fileobj=raw, mode="rb")
            # Damaged deflate data raises zlib.error (not an OSError).
            self._errors = self._errors + (zlib.error,)
        else:
            self._file = raw

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


class _Segments:
    """Cuts a byte stream into segments of whole lines, streaming.

    ``segment()`` yields the chunks of the next segment: at least ``size``
    bytes (unless the input ends), ending right after a newline, so no line
    straddles two segments.  A line longer than a segment is never
    buffered: its chunks pass through as they are read (the validator cuts
    over-long lines itself).  ``newlines`` counts the newlines handed out so
    far, which is the line-number offset of the next segment.
    """

    def __init__(self, read: Callable[[int], bytes], on_read: Callable[[], None]) -> None:
        self._read = read
        self._on_read = on_read
        self._carry = b""
        self.eof = False
        self.newlines = 0
        self.bytes = 0

    def _next(self) -> bytes:
        if self._carry:
            chunk, self._carry = self._carry, b""
            return chunk
        chunk = self._read(_BLOCK)
        self.bytes += len(chunk)
        self._on_read()
        return chunk

    def segment(self, size: int) -> Iterator[bytes]:
        got = 0
        chunk = self._next()
        while chunk:
            got += len(chunk)
            if got >= size:
                i = chunk.rfind(b"\n")
                if i >= 0:
                    self._carry = chunk[i + 1:]
                    self.newlines += chunk.count(b"\n", 0, i + 1)
                    yield chunk[: i + 1]
                    return
            self.newlines += chunk.count(b"\n")
            yield chunk
            chunk = self._next()
        self.eof = True


# --------------------------------------------------------------------------- validation tally


class _Tally:
    """A :class:`~dtproto.ValidationReport` assembled from pieces, in input order.

    Pieces are the reports of consecutive segments (or of ``--jobs`` byte
    ranges), each numbered from line 1; ``add`` shifts their line numbers.
    Because every kept list is "the first N in input order", merging the
    pieces in order gives exactly what one pass over the whole input gives:
    that is what makes ``--jobs N`` output identical to ``--jobs 1``.

    Besides the report (errors capped at ``max_errors``, warnings at
    ``max_warnings``, counts exact) it keeps the first ``examples`` errors of
    *each* reason code, so every code gets examples even when the capped list
    is full of another code.
    """

    def __init__(self, max_errors: Optional[int], max_warnings: Optional[int],
                 examples: int) -> None:
        from .report import ValidationReport

        self.report = ValidationReport()
        self.max_errors = max_errors
        self.max_warnings = max_warnings
        self.examples_per_code = examples
        self.examples: Dict[Any, list] = {}
        self.bytes = 0

    @staticmethod
    def room(kept: list, cap: Optional[int]) -> Optional[int]:
        return None if cap is None else max(cap - len(kept), 0)

    def errors_wanted(self) -> Optional[int]:
        """How many errors the next segment must list: enough for the capped
        list, and at least _SEGMENT_ERRORS for examples of every code."""
        room = self.room(self.report.errors, self.max_errors)
        return None if room is None else max(room, _SEGMENT_ERRORS)

    def needs_all_errors(self, part: Any) -> bool:
        """True when ``part`` listed too few errors to give some code its examples.

        Validating with a cap keeps the cost and memory of error-heavy input
        low; this rare case (a code first seen after the cap within one
        segment) validates that segment again without a cap.
        """
        if len(part.errors) >= part.lines_invalid:
            return False
        listed: Dict[Any, int] = {}
        for e in part.errors:
            listed[e.code] = listed.get(e.code, 0) + 1
        k = self.examples_per_code
        for code, n in part.error_counts.items():
            want = min(k - len(self.examples.get(code, ())), n)
            if want > listed.get(code, 0):
                return True
        return False

    def add(self, part: Any, shift: int) -> None:
        """Add a ValidationReport (or a _Tally) whose line 1 is input line ``shift + 1``."""
        r = self.report
        p = part.report if isinstance(part, _Tally) else part
        r.lines_ok += p.lines_ok
        r.lines_invalid += p.lines_invalid
        r.warnings_total += p.warnings_total
        if p.lines_total:
            r.lines_total = shift + p.lines_total
        for code, n in p.error_counts.items():
            r.error_counts[code] = r.error_counts.get(code, 0) + n
        _extend_shifted(r.errors, p.errors, self.max_errors, shift)
        _extend_shifted(r.warnings, p.warnings, self.max_warnings, shift)
        if isinstance(part, _Tally):
            self.bytes += part.bytes
            for code, errs in part.examples.items():
                _extend_shifted(self.examples.setdefault(code, []), errs,
                                self.examples_per_code, shift)
        else:
            k = self.examples_per_code
            for e in p.errors:
                kept = self.examples.setdefault(e.code, [])
                if len(kept) < k:
                    kept.append(e._replace(line=e.line + shift))


def _extend_shifted(into: list, items: Sequence[Any], cap: Optional[int], shift: int) -> None:
    room = len(items) if cap is None else min(cap - len(into), len(items))
    if room > 0:
        into.extend(x._replace(line=x.line + shift) for x in items[:room])


def _validate_stream(inp: _Input, now_ms: Optional[int], tally: _Tally,
                     on_read: Callable[[int], None], first: int = 0,
                     limit: Optional[int] = None) -> int:
    """Validate ``inp`` segment by segment into ``tally``; returns the newlines read.

    With ``limit``, reads only that many bytes (a ``--jobs`` range).
    """
    from . import validate

    read = inp.read
    if limit is not None:
        left = [limit]

        def read(n: int) -> bytes:  # noqa: F811 (a bounded view of the same input)
            data = inp.read(min(n, left[0])) if left[0] > 0 else b""
            left[0] -= len(data)
            return data

    segs = _Segments(read, lambda: on_read(inp.position()))
    while not segs.eof:
        shift = segs.newlines
        kept: Optional[List[bytes]] = []

        def chunks() -> Iterator[bytes]:
            # Keeps the segment's chunks (up to 2 segments' worth) for a rare
            # second pass; a giant line simply is not kept.
            nonlocal kept
            size = 0
            for chunk in segs.segment(_SEGMENT):
                if kept is not None:
                    size += len(chunk)
                    kept = kept + [chunk] if size <= 2 * _SEGMENT else None
                yield chunk

        part = validate(chunks(), now_ms=now_ms, max_errors=tally.errors_wanted(),
                        max_warnings=tally.room(tally.report.warnings, tally.max_warnings))
        if kept and tally.needs_all_errors(part):
            part = validate(kept, now_ms=now_ms, max_errors=None,
                            max_warnings=tally.room(tally.report.warnings, tally.max_warnings))
        kept = None
        tally.add(part, first + shift)
    tally.bytes += segs.bytes
    return segs.newlines


# The --jobs workers.  Module-level functions so that every multiprocessing
# start method (fork, forkserver, spawn) can find them.

_shared_progress: Any = None


def _job_init(progress: Any) -> None:
    global _shared_progress
    _shared_progress = progress
    # Ctrl-C reaches every process of the terminal's process group: the
    # parent handles it (and terminates the pool); a worker must not print
    # its own KeyboardInterrupt traceback.
    _ignore_sigint()


def _ignore_sigint() -> Any:
    """Ignore SIGINT; returns the previous handler (None when not possible here)."""
    import signal

    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):   # not the main thread
        return None


def _job_validate(job: Tuple[int, str, int, int, Optional[int], Optional[int], Optional[int], int]
                  ) -> Tuple[_Tally, int]:
    index, path, start, end, now_ms, max_errors, max_warnings, examples = job
    tally = _Tally(max_errors, max_warnings, examples)
    inp = _Input(path)
    try:
        inp._raw.seek(start)
        inp._file = inp._raw   # ranges are only made for uncompressed files

        def on_read(_pos: int) -> None:
            if _shared_progress is not None:
                _shared_progress[index] = inp._count

        newlines = _validate_stream(inp, now_ms, tally, on_read, 0, end - start)
        on_read(0)
    finally:
        inp.close()
    return tally, newlines


def _split_ranges(path: str, size: int, jobs: int) -> List[Tuple[int, int]]:
    """``jobs`` byte ranges of ``path`` (fewer for small files), each ending after a newline."""
    jobs = max(1, min(jobs, size // _MIN_JOB_BYTES))
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, jobs):
            pos = max(size * i // jobs, cuts[-1])
            f.seek(pos)
            while True:
                block = f.read(64 * 1024)
                if not block:
                    pos = size
                    break
                j = block.find(b"\n")
                if j >= 0:
                    pos += j + 1
                    break
                pos += len(block)
            if pos >= size:
                break
            cuts.append(pos)
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a] or [(0, size)]


def _validate_parallel(inp: _Input, jobs: int, now_ms: Optional[int], tally: _Tally) -> int:
    """Validate ``inp`` on up to ``jobs`` processes; returns how many were used."""
    import multiprocessing

    assert inp.path is not None and inp.size is not None
    ranges = _split_ranges(inp.path, inp.size, jobs)
    if len(ranges) == 1:
        _validate_stream(inp, now_ms, tally, lambda _p: None)
        return 1
    progress = _Progress(inp.size, inp.name)
    shared = multiprocessing.Array("q", len(ranges), lock=False)
    work = [(i, inp.path, a, b, now_ms, tally.max_errors, tally.max_warnings,
             tally.examples_per_code) for i, (a, b) in enumerate(ranges)]
    # Workers start with SIGINT ignored (inherited, so also before _job_init
    # runs); the parent gets it back at once.
    previous = _ignore_sigint()
    try:
        pool = multiprocessing.Pool(len(ranges), _job_init, (shared,))
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGINT, previous)
    with pool:
        pending = pool.map_async(_job_validate, work, chunksize=1)
        while not pending.ready():
            pending.wait(0.1)
            progress.update(sum(shared))
        parts = pending.get()
    progress.close()
    shift = 0
    for part, newlines in parts:
        tally.add(part, shift)
        shift += newlines
    return len(ranges)


# --------------------------------------------------------------------------- validate: reports


def _parse_now(text: Optional[str]) -> Optional[int]:
    """``--now``: epoch milliseconds, ISO 8601 (naive means UTC), or ``now``."""
    if text is None:
        return None
    t = text.strip()
    if t.lower() == "now":
        return int(time.time() * 1000)
    if t.isdigit():
        return int(t)
    from datetime import datetime, timezone

    iso = t[:-1] + "+00:00" if t[-1:] in ("Z", "z") else t
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "invalid time %r: use epoch milliseconds, ISO 8601 "
            "(2024-06-01T12:00:00Z) or 'now'" % text) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def _code_order(tally: _Tally) -> List[Any]:
    # Most frequent first, then by name: deterministic whatever the merge order.
    return sorted(tally.report.error_counts, key=lambda c: (-tally.report.error_counts[c], str(c)))


def _human_validation(name: str, tally: _Tally, out: IO[str]) -> None:
    r = tally.report
    name = _printable(name)
    blank = r.lines_total - r.lines_ok - r.lines_invalid
    out.write("%s: %s: %s ok, %s invalid, %s; %s\n" % (
        name, _plural(r.lines_total, "line"), _n(r.lines_ok), _n(r.lines_invalid),
        _plural(blank, "blank line"), _plural(r.warnings_total, "warning")))
    if r.lines_ok == 0 and r.lines_invalid == 0:
        out.write("  (nothing to ingest: the API would answer 400 'empty request')\n")
    codes = _code_order(tally)
    if codes:
        width = max(len(str(c)) for c in codes)
        out.write("invalid lines by reason:\n")
        for code in codes:
            out.write("  %-*s %s\n" % (width, code, _n(r.error_counts[code])))
        for code in codes if tally.examples_per_code else ():
            shown = tally.examples.get(code, [])
            out.write("%s (%s%s):\n" % (code, _plural(r.error_counts[code], "line"), _shown(
                len(shown), r.error_counts[code])))
            for e in shown:
                out.write("  %s:%d: %s\n      %s\n" % (name, e.line, _printable(e.message),
                                                    _printable(e.text)))
    if r.warnings_total:
        shown = r.warnings[: tally.examples_per_code]
        out.write("warnings: Metrics Classic key renames (%s%s)%s\n" % (
            _plural(r.warnings_total, "line"), _shown(len(shown), r.warnings_total),
            ":" if shown else ""))
        for w in shown:
            out.write("  %s:%d: %s\n" % (name, w.line, _printable(w.message)))


def _json_validation(name: str, tally: _Tally) -> Dict[str, Any]:
    r = tally.report
    return {
        "file": name,
        "response": r.to_response(),
        "error_counts": {str(c): r.error_counts[c] for c in _code_order(tally)},
        "lines_total": r.lines_total,
        "warnings_total": r.warnings_total,
        "errors": [{"line": e.line, "column": e.column, "code": str(e.code),
                    "message": e.message, "text": e.text} for e in r.errors],
    }


def _cmd_validate(args: argparse.Namespace) -> int:
    names = _input_names(args)
    now_ms = args.now
    rc = EXIT_OK
    results: List[Dict[str, Any]] = []
    out = sys.stdout
    t0 = time.perf_counter()
    nbytes = nlines = done = 0
    jobs_used = 1
    for i, name in enumerate(names):
        tally = _Tally(args.max_errors, args.max_warnings, args.examples)
        try:
            inp = _Input(name)
        except UsageError as exc:
            _err(str(exc))
            rc = EXIT_USAGE
            if args.json:
                results.append({"file": name, "io_error": str(exc)})
            continue
        try:
            jobs = args.jobs
            if jobs > 1 and (inp.gzip or inp.size is None):
                _err("%s: %s cannot be split; validating with 1 job" % (
                    inp.name, "gzip input" if inp.gzip else "a stream"))
                jobs = 1
            if jobs > 1:
                # Small files get fewer ranges than --jobs: say what was used.
                jobs_used = max(jobs_used, _validate_parallel(inp, jobs, now_ms, tally))
            else:
                progress = _Progress(inp.size, inp.name)
                try:
                    _validate_stream(inp, now_ms, tally, progress.update)
                finally:
                    progress.close()
        except UsageError as exc:
            _err(str(exc))
            rc = EXIT_USAGE
            if args.json:
                results.append({"file": inp.name, "io_error": str(exc)})
            continue
        finally:
            inp.close()
        nbytes += tally.bytes
        nlines += tally.report.lines_total
        done += 1
        if tally.report.lines_invalid and rc == EXIT_OK:
            rc = EXIT_INVALID
        if args.json:
            results.append(_json_validation(inp.name, tally))
        else:
            if i:
                out.write("\n")
            _human_validation(inp.name, tally, out)
            out.flush()
    seconds = time.perf_counter() - t0
    if args.json:
        reports = [x for x in results if "response" in x]
        doc = {
            "files": results,
            "lines_ok": sum(x["response"]["linesOk"] for x in reports),
            "lines_invalid": sum(x["response"]["linesInvalid"] for x in reports),
            "warnings_total": sum(x["warnings_total"] for x in reports),
        }
        _write_json(doc, out)
    if done and not args.quiet:
        _err("validated %s, %s in %.2f s: %.1f MB/s, %s lines/s (%s)" % (
            _plural(done, "input"), _size(nbytes), seconds,
            nbytes / 1e6 / max(seconds, 1e-9), _n(int(nlines / max(seconds, 1e-9))),
            _plural(jobs_used, "job")))
    return rc


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


# --------------------------------------------------------------------------- send


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
    from .sender import env_settings

    return env_settings()[1]


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
    ("Sender(url, token, ...)", "--url"),
)


def _cli_text(text: str) -> str:
    """A library message with its Python parameter names replaced by CLI flags."""
    for python, flag in _CLI_WORDS:
        text = text.replace(python, flag)
    return text


class _Feed:
    """The file-like view of an :class:`_Input` that ``send`` reads: moves the
    progress bar, and turns a read failure into a clean end of input.

    Only complete lines are handed out while more input may follow: a line is
    held back until its newline (or the end of the input) arrives.  When a
    read fails part-way (a truncated or damaged ``.gz``), the error is kept in
    :attr:`error`, the partial last line is dropped, and the input ends there,
    so the sender delivers exactly the ``lines`` complete lines read and its
    result says what happened to them.  A held-back piece longer than
    ``max_bytes`` is passed on: that line is rejected as too long anyway.
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
    from . import validate
    # The sender's own chunker: a dry run must show exactly the chunks that
    # ``send`` would make, and a second implementation here could drift.
    from .sender import _chunk_stream, only_blank_lines

    rc = EXIT_OK
    docs: List[Dict[str, Any]] = []
    out = sys.stdout
    for name in names:
        try:
            inp = _Input(name)
        except UsageError as exc:
            _err(str(exc))
            rc = EXIT_USAGE
            if args.json:
                docs.append({"file": name, "io_error": str(exc)})
            continue
        progress = _Progress(inp.size, inp.name)
        tally = _Tally(args.max_errors, None, args.examples)
        chunks: List[Dict[str, Any]] = []
        rejected: List[Dict[str, Any]] = []
        feed = _Feed(inp, progress, max_bytes)
        try:
            blocks = iter(lambda: feed.read(_BLOCK), b"")
            for item in _chunk_stream(blocks, 1, max_bytes, max_lines):
                if hasattr(item, "body"):
                    body = item.body
                    blank = only_blank_lines(body)
                    chunks.append({"first_line": item.first_line, "lines": item.lines,
                                   "bytes": len(body), "sent": not blank})
                    tally.add(validate(body, now_ms=args.now, max_errors=None,
                                       max_warnings=None), item.first_line - 1)
                else:
                    rejected.append({"line": item.line, "reason": item.reason})
        finally:
            progress.close()
            inp.close()
        r = tally.report
        if (r.lines_invalid or rejected) and rc == EXIT_OK:
            rc = EXIT_INVALID
        if feed.error is not None:
            _err(feed.failure())
            rc = EXIT_USAGE
        if args.json:
            doc = _json_validation(inp.name, tally)
            doc["chunks"] = chunks
            doc["rejected_by_client"] = rejected
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
        if feed.error is not None:
            out.write("  %s\n" % _printable(feed.failure()))
        _human_validation(inp.name, tally, out)
    if args.json:
        _write_json({"dry_run": True, "files": docs}, out)
    return rc


def _result_doc(name: str, result: Any) -> Dict[str, Any]:
    import dataclasses

    doc = {"file": name}
    doc.update(dataclasses.asdict(result))
    doc["ok"] = result.ok
    doc["unreported_invalid"] = result.unreported_invalid
    doc["lines_not_delivered"] = result.lines_not_delivered
    return doc


def _human_send(name: str, url: str, result: Any, error: Optional[str], limit: int,
                verbose: bool, read_error: Optional[str] = None,
                never_sent: Optional[int] = None) -> None:
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
        for q in result.requests:
            out.write("  request %d: %s, %s: %s after %s, %.1f ms\n" % (
                q.index + 1, _line_range(q.first_line, q.lines),
                _plural(q.bytes, "byte"), q.status if q.status is not None else "no answer",
                _plural(q.attempts, "attempt"), q.latency * 1000))
    for i in result.invalid_lines[:limit]:
        out.write("  %s:%d: %s%s\n" % (name, i.line, _printable(i.reason),
                                        " (not sent)" if i.source == "client" else ""))
    if len(result.invalid_lines) > limit:
        out.write("  ... %s more rejected lines (see --json)\n"
                  % _n(len(result.invalid_lines) - limit))
    if result.unreported_invalid:
        out.write("  %s more invalid lines were counted but not listed by the server "
                  "(it lists at most 10 per request)\n" % _n(result.unreported_invalid))
    for w in result.warnings[:limit]:
        out.write("  %s:%d: warning: %s\n" % (name, w.line, _printable(w.message)))
    for u in result.undelivered:
        out.write("  %s:%d-%d: not delivered%s: %s\n" % (
            name, u.first_line, u.last_line, " (may have been stored: ambiguous)"
            if u.ambiguous else "", _printable(u.reason)))
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
    from . import sender as _sender

    url = args.url
    if url is None:
        try:
            url = _sender.env_settings()[0]     # DT_URL, as Sender.from_env() reads it
        except ValueError as exc:
            raise UsageError("invalid %s: %s" % (_sender.URL_ENV, exc)) from None
    if url is None and not args.dry_run:
        raise UsageError("send needs --url or %s (or --dry-run)" % _sender.URL_ENV)
    _log_to_stderr(_cli_text)

    sender = None
    max_bytes, max_lines = args.max_bytes, args.max_lines
    if url is not None:
        proxy: Any = True
        if args.no_proxy:
            proxy = False
        elif args.proxy:
            proxy = args.proxy
        try:
            sender = _sender.Sender(
                _sender.ingest_url(url), _read_token(args), max_bytes=args.max_bytes,
                max_lines=args.max_lines, gzip=args.gzip, retries=args.retries,
                read_timeout=args.timeout, retry_ambiguous=args.retry_ambiguous,
                allow_insecure=args.allow_insecure, verify=args.ca_file or True, proxy=proxy)
        except _sender.ConfigurationError as exc:
            raise UsageError(_cli_text(str(exc))) from None
        except ValueError as exc:   # urllib.parse on a malformed URL ('http://[::1')
            raise UsageError("invalid --url %r: %s" % (url, exc)) from None
        except OSError as exc:      # --ca-file cannot be read or holds no certificate
            raise UsageError("cannot use --ca-file %s: %s" % (
                args.ca_file, getattr(exc, "strerror", None) or exc)) from None
        max_bytes, max_lines = sender.max_bytes, sender.max_lines
    if args.dry_run:
        return _dry_run(args, names, max_bytes, max_lines)
    assert sender is not None
    rc = EXIT_OK
    docs: List[Dict[str, Any]] = []
    skipped: List[str] = []
    with sender:
        for k, name in enumerate(names):
            try:
                inp = _Input(name)
            except UsageError as exc:
                _err(str(exc))
                rc = EXIT_USAGE
                if args.json:
                    docs.append({"file": name, "io_error": str(exc)})
                continue
            progress = _Progress(inp.size, inp.name)
            feed = _Feed(inp, progress, max_bytes)
            error = None
            never_sent: Optional[int] = None
            try:
                result = sender.send(feed)
            except _sender.SendError as exc:
                result = getattr(exc, "result", None) or _sender.SendResult()
                error = _cli_text(str(exc))
                if result.stopped_at is not None and feed.error is None:
                    never_sent = _count_rest(feed, inp, result.stopped_at)
                if isinstance(exc, (_sender.AuthenticationError, _sender.MissingScopeError)):
                    _err("the API token comes from --token-file or DT_API_TOKEN and needs "
                         "the metrics.ingest scope")
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
                            read_error, never_sent)
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


# --------------------------------------------------------------------------- serve


def _cmd_serve(args: argparse.Namespace) -> int:
    import socket

    _log_to_stderr()
    from .server import IngestServer, parse_fault

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
            warnings_key="warningLines" if args.warning_lines else "changedMetricKeys")
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
    import threading

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

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
            stopping = stop.wait(0.2)
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


# --------------------------------------------------------------------------- bench


def _best(fn: Callable[[], Any], repeat: int, budget: float = 1.0) -> Tuple[float, Any]:
    """(fastest time, last result) of up to ``repeat`` runs; stops repeating once
    ``budget`` seconds are spent."""
    import gc

    best = float("inf")
    spent = 0.0
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = min(best, dt)
        spent += dt
        if spent > budget:
            break
    return best, out


def _peers(metrics: list, data: bytes, slow_lines: int) -> List[Tuple[str, str, int, int, Any]]:
    """(name, operation, lines, input bytes or 0, callable) for every peer installed here.

    Encoders get their input objects built outside the timing; their MB/s
    counts the bytes they produce."""
    import warnings
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return "%s %s" % (dist, version(dist))
        except PackageNotFoundError:
            return dist

    out: List[Tuple[str, str, int, int, Any]] = []
    rows = [(m[2], m[0], dict(m[1]), m[3], m[4], m[5], m[6], m[7], m[8]) for m in metrics]
    try:
        from dynatrace.metric.utils import DynatraceMetricsFactory, DynatraceMetricsSerializer
    except ImportError:
        pass
    else:
        factory = DynatraceMetricsFactory()
        ser = DynatraceMetricsSerializer(enrich_with_dynatrace_metadata=False)
        few = rows[:slow_lines]

        def dmu() -> bytes:
            make = {"gauge": factory.create_float_gauge,
                    "count": factory.create_float_counter_delta}
            return "".join(ser.serialize(factory.create_float_summary(k, mn, mx, sm, c, d, ts)
                                         if kind == "summary" else make[kind](k, v, d, ts)) + "\n"
                           for kind, k, d, v, mn, mx, sm, c, ts in few).encode()
        out.append((ver("dynatrace-metric-utils"), "encode", len(few), 0, dmu))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from questdb.ingress import Buffer, ServerTimestamp, TimestampNanos
    except ImportError:
        pass
    else:
        qrows = [(k, {dk.replace(".", "_"): dv for dk, dv in d.items()},
                  {"min": mn, "max": mx, "sum": sm, "count": c} if kind == "summary"
                  else {"value": v}, ServerTimestamp if ts is None else TimestampNanos(ts * 10**6))
                 for kind, k, d, v, mn, mx, sm, c, ts in rows]

        def qdb() -> bytes:
            buf = Buffer(protocol_version=1)
            for k, sym, cols, at in qrows:
                buf.row(k, symbols=sym, columns=cols, at=at)
            return bytes(buf)
        out.append((ver("questdb") + " (ILP)", "encode", len(rows), 0, qdb))
    try:
        from line_protocol_parser import parse_line
    except ImportError:
        pass
    else:
        from ._corpus import to_influx

        influx = to_influx(data)
        out.append((ver("line-protocol-parser") + " (ILP)", "decode",
                    len(rows), len(influx),
                    lambda: [parse_line(x) for x in influx.split(b"\n") if x]))
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    import platform

    from . import __version__
    from ._corpus import cpu_model, make_corpus
    from ._impl import available_implementations, extension_error

    if args.lines < 1:
        raise UsageError("--lines must be at least 1")
    out = sys.stdout
    t = time.perf_counter()
    data = make_corpus(args.lines, seed=args.seed, escape_heavy=args.escape_heavy)
    impls = available_implementations()
    fastest = impls.get("cython", impls["python"])
    metrics = fastest.decode(data)
    mb = len(data) / 1e6
    out.write("dtproto %s bench: %s lines, %.1f MB (%s corpus, seed %d), best of %d "
              "(generated in %.1f s)\n" % (
                  __version__, _n(args.lines), mb, "escape-heavy" if args.escape_heavy
                  else "realistic", args.seed, args.repeat, time.perf_counter() - t))
    out.write("machine: %s, %d CPUs, %s %s\n" % (cpu_model(), os.cpu_count() or 1,
                                               platform.system(), platform.machine()))
    out.write("python: %s %s\n" % (platform.python_implementation(), platform.python_version()))
    if "cython" not in impls:
        out.write("cython core: not loaded (%s)\n" % extension_error())
    out.write("\n%-36s %-9s %12s %9s\n" % ("implementation", "operation", "lines/s", "MB/s"))
    out.flush()
    def row(name: str, op: str, lines: int, nbytes: int, fn: Callable[[], Any]) -> None:
        s, result = _best(fn, args.repeat)
        if not nbytes and isinstance(result, bytes):
            nbytes = len(result)      # an encoder: the bytes it produced
        out.write("%-36s %-9s %12s %9.1f\n" % (name, op, _n(int(lines / s)), nbytes / s / 1e6))
        out.flush()

    n = len(data)
    for name, codec in sorted(impls.items(), key=lambda kv: kv[0] != "cython"):
        label = "dtproto %s" % name
        row(label, "decode", args.lines, n, lambda c=codec: c.decode(data))
        row(label, "validate", args.lines, n, lambda c=codec: c.validate(data))
        row(label, "encode", args.lines, 0, lambda c=codec: c.encode(metrics))
    if not args.no_peers:
        for name, op, lines, nbytes, fn in _peers(metrics, data, args.slow_lines):
            row(name, op, lines, nbytes, fn)
    out.write("\nMB/s: bytes parsed or produced (ILP = InfluxDB line protocol, the same data "
              "points);\nencoders' input objects are built outside the timing.\n")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _version_text() -> str:
    from . import IMPLEMENTATION, __version__
    from ._impl import extension_error

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


def _now_arg(text: str) -> int:
    value = _parse_now(text)
    assert value is not None
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dtproto`` command."""
    # allow_abbrev=False everywhere: "--token x" must not silently mean "--token-file x".
    parser = argparse.ArgumentParser(
        prog="dtproto", allow_abbrev=False,
        description="Validate, send and serve Dynatrace metric ingestion lines; benchmark "
                    "the codec.",
        epilog="Exit codes: 0 all good, 1 invalid lines or rejected data, 2 usage or I/O error.",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version and the loaded implementation, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_inputs(p: argparse.ArgumentParser) -> None:
        p.add_argument("files", nargs="*", metavar="FILE",
                       help="input files ('-' = stdin, the default when piped); "
                            "gzip-compressed files are read transparently")

    def add_window(p: argparse.ArgumentParser) -> None:
        p.add_argument("--now", type=_now_arg, metavar="TIME",
                       help="apply the timestamp window (now-1h .. now+10min) around TIME: "
                            "epoch ms, ISO 8601 (naive = UTC) or 'now'; default: no window")

    p = sub.add_parser("validate", allow_abbrev=False, help="check files like the ingest API would, any size",
                       description="Validate metric lines offline, streaming, with the rules "
                                   "of the ingest API.")
    add_inputs(p)
    add_window(p)
    p.add_argument("--json", action="store_true",
                   help="print a JSON document: per file the API's ValidationResponse, "
                        "counts per reason code and the listed errors")
    p.add_argument("--max-errors", type=_count, default=10_000, metavar="N",
                   help="list at most N invalid lines per file in --json (counts stay "
                        "exact; default 10,000)")
    p.add_argument("--max-warnings", type=_count, default=10_000, metavar="N",
                   help="keep at most N warnings per file (default 10,000)")
    p.add_argument("--examples", type=_count, default=3, metavar="N",
                   help="examples shown per reason code and of warnings (default 3)")
    p.add_argument("-j", "--jobs", type=_positive, default=1, metavar="N",
                   help="validate each (uncompressed, regular) file on N processes, split "
                        "at line boundaries; the output is identical to --jobs 1")
    p.add_argument("-q", "--quiet", action="store_true", help="no timing line on stderr")
    p.set_defaults(func=_cmd_validate, parser=p)

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
    p.add_argument("--max-errors", type=_count, default=100, metavar="N",
                   help="rejected lines and warnings shown per file (default 100; --json "
                        "lists all)")
    p.add_argument("--examples", type=_count, default=3, metavar="N",
                   help="with --dry-run: examples shown per reason code (default 3)")
    add_window(p)
    p.add_argument("-v", "--verbose", action="store_true", help="one line per request")
    p.set_defaults(func=_cmd_send, parser=p)

    p = sub.add_parser("serve", allow_abbrev=False, help="run a local ingest endpoint until Ctrl-C",
                       description="A local metric ingest endpoint that validates like the "
                                   "real API (dtproto.server.IngestServer).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=14499,
                   help="TCP port (default 14499; 0 picks a free one)")
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
                   help="answer warnings under 'warningLines' (what real responses carry) "
                        "instead of the documented 'changedMetricKeys'")
    p.add_argument("-q", "--quiet", action="store_true", help="do not log each request")
    p.set_defaults(func=_cmd_serve, parser=p)

    p = sub.add_parser("bench", allow_abbrev=False, help="codec throughput on a seeded corpus",
                       description="Decode/validate/encode throughput per implementation, "
                                   "and of peer libraries that are installed.")
    p.add_argument("--lines", type=_positive, default=100_000, metavar="N",
                   help="corpus size (default 100,000 lines, ~13 MB)")
    p.add_argument("--seed", type=int, default=20240601, help="corpus seed")
    p.add_argument("--repeat", type=_positive, default=3, metavar="N",
                   help="best of N runs (fewer when a run takes over a second)")
    p.add_argument("--escape-heavy", action="store_true",
                   help="dimension values full of quotes, escapes and non-ASCII text")
    p.add_argument("--no-peers", action="store_true", help="skip peer libraries")
    p.add_argument("--slow-lines", type=_positive, default=10_000, metavar="N",
                   help="lines for dynatrace-metric-utils, ~200 us/line (default 10,000)")
    p.set_defaults(func=_cmd_bench, parser=p)
    return parser


class _OutputError(Exception):
    """Standard output cannot be written (full disk, closed, reader gone)."""


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
            raise _OutputError(getattr(exc, "strerror", None) or str(exc)) from None

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``dtproto`` console script; returns the exit code."""
    real_stdout = sys.stdout
    sys.stdout = _Stdout(real_stdout)    # type: ignore[assignment]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
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
        # Also a reader that went away (dtproto validate big.txt | head): the
        # output is incomplete, which is an I/O error.
        _err("cannot write the output: %s" % exc)
        _drop_stdout(real_stdout)
        return EXIT_USAGE
    finally:
        sys.stdout = real_stdout
