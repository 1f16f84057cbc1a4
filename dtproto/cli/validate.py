"""``dtproto validate``: check files offline, any size, like the ingest API.

Streaming: an input is validated in segments of whole lines (bounded memory);
``--jobs N`` validates byte ranges of a regular file on N processes.  Either
way the per-piece reports are combined in input order, so the output does not
depend on how the input was cut.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ._common import (_BLOCK, EXIT_INVALID, EXIT_OK, EXIT_USAGE, UsageError, _count, _err,
                      _Input, _input_names, _n, _plural, _positive, _printable, _Progress,
                      _shown, _size, _write_json, add_inputs, add_window)

_SEGMENT = 4 << 20          # bytes validated per validate() call (bounded memory)
_MIN_JOB_BYTES = 256 << 10  # a --jobs byte range is never smaller than this
_SEGMENT_ERRORS = 1_000     # errors listed per segment at least (examples per code)


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
        from ..report import ValidationReport

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
    from .. import validate

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


def add_parser(sub: Any) -> None:
    """The ``validate`` subcommand of the ``dtproto`` parser."""
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
