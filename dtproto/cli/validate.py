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
from typing import (IO, Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

from .._constants import (RESPONSE_EMPTY_REQUEST, WARNING_CHANGED_KEY,
                          WARNING_TIMESTAMP_SECONDS)
from .._ranges import line_ranges
from ..report import LineError, LineWarning, ValidationReport

from ._common import (_BLOCK, EXIT_INVALID, EXIT_OK, EXIT_USAGE, UsageError, _count, _err,
                      _Input, _input_names, _n, _open_input, _plural, _positive, _printable,
                      _Progress,
                      _shown, _size, _write_json, add_inputs, add_window)

# Bytes of whole lines validated per validate() call, at most (a longer line
# is a segment of its own).  Small enough that validating a segment again
# with every error listed stays cheap and bounded (at most _SEGMENT // 2
# invalid lines), large enough that the calls cost nothing measurable.
_SEGMENT = 64 << 10
_MIN_JOB_BYTES = 256 << 10  # a --jobs byte range is never smaller than this


class _Segments:
    """The input cut into segments for :func:`dtproto.validate`, streaming, in
    bounded memory; ``read()`` gives the next block of the input (b"" at its end).

    A segment is either ``bytes``: whole lines, at most ``size`` bytes of them
    or one longer line read whole (the last segment may lack its newline);
    or, for a line longer than ``size`` whose end is not read yet, an iterator
    over that one line's chunks, which is never held (an over-long line may
    be of any length).  So every segment with more than one line is held and
    can be validated again, and a streamed one has a single line (at most
    one error).  Each streamed segment must be read to its end before the
    next segment is asked for.
    """

    def __init__(self, read: Callable[[], bytes], size: int) -> None:
        self._read = read
        self._size = size
        self._after = b""    # what follows a streamed line in its last chunk

    def __iter__(self) -> Iterator[Union[bytes, Iterator[bytes]]]:
        size = self._size
        buf = b""
        eof = False
        while not eof:
            chunk = self._read()
            eof = not chunk
            buf = buf + chunk if buf else chunk
            pos = 0
            while len(buf) - pos > size:
                cut = buf.rfind(b"\n", pos, pos + size)
                if cut < 0:     # the line at pos is longer than size: a segment of its own
                    cut = buf.find(b"\n", pos + size)
                    if cut < 0:
                        break
                yield buf[pos:cut + 1]
                pos = cut + 1
            buf = buf[pos:]
            if len(buf) > size and not eof:
                # A line longer than size whose end is still to come.
                self._after = b""
                line = self._line(buf)
                yield line
                for _ in line:      # (validate() reads it to its end; this makes sure)
                    pass
                buf = self._after
        if buf:
            yield buf

    def _line(self, head: bytes) -> Iterator[bytes]:
        yield head
        while True:
            chunk = self._read()
            if not chunk:
                return
            nl = chunk.find(b"\n")
            if nl >= 0:
                self._after = chunk[nl + 1:]
                yield chunk[:nl + 1]
                return
            yield chunk


# --------------------------------------------------------------------------- validation


class _Caps(NamedTuple):
    """What to keep of one input's report: the lists' caps, and examples per code."""

    max_errors: Optional[int]
    max_warnings: Optional[int]
    examples: int


class _Checked(NamedTuple):
    """One input (or ``--jobs`` range) validated: its report, the first
    ``examples`` errors of each reason code, and the bytes read.

    The examples exist besides ``report.errors`` so that every code gets
    examples even when the capped list is full of another code.
    """

    report: ValidationReport
    examples: Dict[Any, List[LineError]]
    bytes: int


def _add_examples(examples: Dict[Any, List[LineError]], errors: Iterable[LineError],
                  offset: int, k: int) -> None:
    """Keep the first ``k`` of ``errors`` (in input order, numbered from line
    ``offset + 1``) under their codes."""
    for e in errors:
        kept = examples.setdefault(e.code, [])
        if len(kept) < k:
            kept.append(e._replace(line=e.line + offset))


def _checked(report: ValidationReport, k: int, nbytes: int = 0) -> _Checked:
    """One block's report with the first ``k`` examples of each of its codes."""
    examples: Dict[Any, List[LineError]] = {}
    _add_examples(examples, report.errors, 0, k)
    return _Checked(report, examples, nbytes)


def _then(done: _Checked, part: _Checked, caps: _Caps,
          line_offset: Optional[int] = None) -> _Checked:
    """``done`` followed by ``part``, the next block of the same input: the
    reports merged (ValidationReport.merge's rules, its default
    ``line_offset`` being the lines ``done`` covers), the examples shifted
    alike.

    ``done`` is the caller's running result and is extended in place: a
    file of many segments then copies each kept error once (a new report
    per segment copied every kept one again, quadratic under a large
    ``--max-errors``).
    """
    offset = done.report.lines_total if line_offset is None else line_offset
    for errs in part.examples.values():
        _add_examples(done.examples, errs, offset, caps.examples)
    done.report._extend(part.report, offset, caps.max_errors, caps.max_warnings)
    return _Checked(done.report, done.examples, done.bytes + part.bytes)


def _room(kept: Sequence[Any], cap: Optional[int]) -> Optional[int]:
    return None if cap is None else max(cap - len(kept), 0)


def _needs_all_errors(part: ValidationReport, examples: Dict[Any, List[LineError]],
                      k: int) -> bool:
    """True when ``part`` listed too few errors to give some code its examples.

    Validating with a cap keeps the cost and memory of error-heavy input
    low; in this case (a code that still lacks examples first seen after the
    cap within one segment) the segment is validated again without a cap:
    at most once per example, and a segment is small (:data:`_SEGMENT`).
    """
    if len(part.errors) >= part.lines_invalid:
        return False
    listed: Dict[Any, int] = {}
    for e in part.errors:
        listed[e.code] = listed.get(e.code, 0) + 1
    for code, n in part.error_counts.items():
        want = min(k - len(examples.get(code, ())), n)
        if want > listed.get(code, 0):
            return True
    return False


def _validate_stream(inp: _Input, now_ms: Optional[int], caps: _Caps,
                     on_read: Callable[[int], None], limit: Optional[int] = None,
                     block: Optional[int] = None) -> _Checked:
    """Validate ``inp`` segment by segment (:class:`_Segments`, bounded
    memory), merging the segments' reports in order.  Reads ``block`` bytes
    at a time (default ``_BLOCK``); with ``limit``, only that many bytes (a
    ``--jobs`` range).

    Each segment is validated with the room left in the capped lists; a
    segment whose errors were listed too few for the examples of some code
    is validated again with all its errors listed (it is held, or it is one
    line).  So every code gets its first ``caps.examples`` examples, and
    ``--max-errors`` changes only the list it caps.
    """
    from .._impl import codec

    size = _BLOCK if block is None else block
    nbytes = 0

    def read() -> bytes:
        nonlocal nbytes
        n = size if limit is None else min(size, limit - nbytes)
        data = inp.read(n) if n > 0 else b""
        nbytes += len(data)
        on_read(inp.position())
        return data

    done = _Checked(ValidationReport(), {}, 0)
    for segment in _Segments(read, _SEGMENT):
        held = isinstance(segment, bytes)
        source = [segment] if held else segment
        # the room each kind of warning has left: none is built for a full one
        renames, hints = done.report._warning_room(caps.max_warnings)
        # A streamed segment is one line: its error, if any, is always listed.
        errors = _room(done.report.errors, caps.max_errors) if held else None
        part = codec._validate_kinds(source, now_ms, errors, renames, hints)
        if held and _needs_all_errors(part, done.examples, caps.examples):
            part = codec._validate_kinds(source, now_ms, None, renames, hints)
        done = _then(done, _checked(part, caps.examples), caps)
    return done._replace(bytes=nbytes)


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


def _job_validate(job: Tuple[int, str, int, int, Optional[int], _Caps]) -> _Checked:
    index, path, start, end, now_ms, caps = job
    inp = _Input(path)
    try:
        inp._raw.seek(start)
        inp._file = inp._raw   # ranges are only made for uncompressed files

        def on_read(_pos: int) -> None:
            if _shared_progress is not None:
                _shared_progress[index] = inp._count

        checked = _validate_stream(inp, now_ms, caps, on_read, end - start)
        on_read(0)
    finally:
        inp.close()
    return checked


def _validate_parallel(inp: _Input, jobs: int, now_ms: Optional[int],
                       caps: _Caps) -> Tuple[_Checked, int]:
    """Validate ``inp`` on up to ``jobs`` processes; returns the result and
    how many processes were used."""
    import multiprocessing

    assert inp.path is not None and inp.size is not None
    ranges = line_ranges(inp.path, jobs, min_bytes=_MIN_JOB_BYTES)
    if len(ranges) == 1:
        return _validate_stream(inp, now_ms, caps, lambda _p: None), 1
    progress = _Progress(inp.size, inp.name)
    shared = multiprocessing.Array("q", len(ranges), lock=False)
    work = [(i, inp.path, a, b, now_ms, caps) for i, (a, b) in enumerate(ranges)]
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
    done = _Checked(ValidationReport(), {}, 0)
    for part in parts:           # in input order: the ranges' reports merged
        done = _then(done, part, caps)
    return done, len(ranges)


def _dask_validate(path: str, start: int, end: int, gz: bool, now_ms: Optional[int],
                   caps: _Caps, _key: str = "") -> _Checked:
    """``--dask``: one byte range of a file (gzip: the whole file) validated
    on a Dask worker, as ``--jobs`` validates it in a process."""
    inp = _Input(path)
    try:
        # Reads of 64 KiB: see dtproto.dask._READ (Dask workers pin glibc's mmap threshold).
        if gz or not inp.size:
            return _validate_stream(inp, now_ms, caps, lambda _p: None, block=64 << 10)
        inp._raw.seek(start)
        inp._file = inp._raw
        return _validate_stream(inp, now_ms, caps, lambda _p: None, end - start, 64 << 10)
    finally:
        inp.close()


# --------------------------------------------------------------------------- validate: reports


def _code_order(r: ValidationReport) -> List[Any]:
    # Most frequent first, then by name: deterministic whatever the merge order.
    return sorted(r.error_counts, key=lambda c: (-r.error_counts[c], str(c)))


def _human_validation(name: str, checked: _Checked, k: int, out: IO[str],
                      warnings_cap: Optional[int], not_sendable: int = 0,
                      cap_flag: str = "--max-warnings") -> None:
    """The report of one input for people: counts, counts per reason code,
    ``k`` examples per code and per kind of warning.  ``warnings_cap``: the
    warnings kept of each kind, set by the flag ``cap_flag``;
    ``not_sendable``: lines of the input outside the report that ``send
    --dry-run`` found too long to send."""
    r = checked.report
    name = _printable(name)
    blank = r.lines_total - r.lines_ok - r.lines_invalid - not_sendable
    out.write("%s: %s: %s ok, %s invalid, %s%s; %s\n" % (
        name, _plural(r.lines_total, "line"), _n(r.lines_ok), _n(r.lines_invalid),
        "%s not sendable, " % _n(not_sendable) if not_sendable else "",
        _plural(blank, "blank line"), _plural(r.warnings_total, "warning")))
    if r.lines_ok == 0 and r.lines_invalid == 0:
        out.write("  (nothing to ingest: the API would answer 400 '%s')\n"
                  % RESPONSE_EMPTY_REQUEST)
    codes = _code_order(r)
    if codes:
        width = max(len(str(c)) for c in codes)
        out.write("invalid lines by reason:\n")
        for code in codes:
            out.write("  %-*s %s\n" % (width, code, _n(r.error_counts[code])))
        for code in codes if k else ():
            shown = checked.examples.get(code, [])
            out.write("%s (%s%s):\n" % (code, _plural(r.error_counts[code], "line"), _shown(
                len(shown), r.error_counts[code])))
            for e in shown:
                out.write("  %s:%d: %s\n      %s\n" % (name, e.line, _printable(e.message),
                                                    _printable(e.text)))
    if r.warnings_total:
        _human_warnings(name, r, k, out, warnings_cap, cap_flag)


# The text report's heading of each kind of warning (LineWarning.code), in
# this order: what the server reports, then dtproto's own hints.
_WARNING_HEADINGS = (
    (WARNING_CHANGED_KEY, "Metrics Classic key renames"),
    (WARNING_TIMESTAMP_SECONDS, "timestamps that look like seconds, dtproto's hint the API "
                                "does not give"),
)


def _human_warnings(name: str, r: ValidationReport, k: int, out: IO[str],
                    cap: Optional[int], cap_flag: str) -> None:
    """The warnings of a report, under a heading per kind, ``k`` examples each.

    A report keeps the first ``cap`` warnings of each kind and counts them
    all, but not per kind: a kind with fewer than ``cap`` kept lost none,
    its count is exact; one with ``cap`` kept may have lost some, its count
    is that of the kept ones, and the rest is said.
    """
    kept = r.warnings
    complete = len(kept) >= r.warnings_total
    by_code: Dict[str, List[LineWarning]] = {}
    for w in kept:
        by_code.setdefault(w.code, []).append(w)
    titles = dict(_WARNING_HEADINGS)
    for code in [c for c in titles if c in by_code] + sorted(set(by_code) - set(titles)):
        found = by_code[code]
        shown = found[:k]
        count = _plural(len(found), "line")
        if not complete and cap is not None and len(found) >= cap:
            count = "the first %s kept" % count
        out.write("warnings: %s (%s%s)%s\n" % (titles.get(code, code), count,
                                              _shown(len(shown), len(found)),
                                              ":" if shown else ""))
        for w in shown:
            out.write("  %s:%d: %s\n" % (name, w.line, _printable(w.message)))
    if not complete:
        out.write("warnings: %s not kept (%s N), not counted by kind\n"
                  % (_plural(r.warnings_total - len(kept), "more warning"), cap_flag))


def _json_validation(name: str, r: ValidationReport) -> Dict[str, Any]:
    """The report of one input for programs: the API's answer, exact counts
    and the listed errors."""
    return {
        "file": name,
        "response": r.to_response(),
        "error_counts": {str(c): r.error_counts[c] for c in _code_order(r)},
        "lines_total": r.lines_total,
        "warnings_total": r.warnings_total,
        "errors": [{"line": e.line, "column": e.column, "code": str(e.code),
                    "message": e.message, "text": e.text} for e in r.errors],
        # dtproto's own hints (timestamp_in_seconds), which the response
        # leaves out as the server does: the first --max-warnings of them.
        "hints": [{"line": w.line, "code": w.code, "message": w.message}
                  for w in r.warnings if w.code != WARNING_CHANGED_KEY],
    }


def _cmd_validate(args: argparse.Namespace) -> int:
    names = _input_names(args)
    if args.dask is None:
        if args.blocksize is not None:
            raise UsageError("--blocksize is the size of a --dask task: give --dask too")
        return _validate_inputs(args, names, None)
    if args.jobs > 1:
        raise UsageError("--dask and --jobs cannot be combined: the Dask workers are the jobs")
    from ._dask import DEFAULT_BLOCKSIZE, Cluster

    with Cluster(args.dask) as cluster:
        cluster.blocksize = args.blocksize or DEFAULT_BLOCKSIZE  # type: ignore[attr-defined]
        return _validate_inputs(args, names, cluster)


def _validate_inputs(args: argparse.Namespace, names: List[str], cluster: Any) -> int:
    now_ms = args.now
    rc = EXIT_OK
    results: List[Dict[str, Any]] = []
    out = sys.stdout
    t0 = time.perf_counter()
    nbytes = nlines = done = 0
    jobs_used = 1
    caps = _Caps(args.max_errors, args.max_warnings, args.examples)
    for i, name in enumerate(names):
        inp = _open_input(name, results if args.json else None)
        if inp is None:
            rc = EXIT_USAGE
            continue
        try:
            jobs = args.jobs
            if jobs > 1 and (inp.gzip or inp.size is None):
                _err("%s: %s cannot be split; validating with 1 job" % (
                    inp.name, "gzip input" if inp.gzip else "a stream"))
                jobs = 1
            if cluster is not None and inp.size is None:
                _err("%s: a stream cannot be opened by Dask workers; validating here"
                     % inp.name)
            if cluster is not None and inp.size is not None:
                progress = _Progress(inp.size, inp.name)
                try:
                    parts = cluster.run(inp.path, inp.size, _dask_validate, (now_ms, caps),
                                        "validate", progress)
                finally:
                    progress.close()
                checked = _Checked(ValidationReport(), {}, 0)
                for part in parts:           # in input order, as --jobs merges them
                    checked = _then(checked, part, caps)
            elif jobs > 1:
                # Small files get fewer ranges than --jobs: say what was used.
                checked, used = _validate_parallel(inp, jobs, now_ms, caps)
                jobs_used = max(jobs_used, used)
            else:
                progress = _Progress(inp.size, inp.name)
                try:
                    checked = _validate_stream(inp, now_ms, caps, progress.update)
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
        nbytes += checked.bytes
        nlines += checked.report.lines_total
        done += 1
        if checked.report.lines_invalid and rc == EXIT_OK:
            rc = EXIT_INVALID
        if args.json:
            results.append(_json_validation(inp.name, checked.report))
        else:
            if i:
                out.write("\n")
            _human_validation(inp.name, checked, args.examples, out, caps.max_warnings)
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
            _plural(jobs_used, "job") if cluster is None else cluster.label()))
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
                   help="keep at most N warnings of each kind per file (renames, hints), for "
                        "the examples and counts per kind, the response and the hints of "
                        "--json (default 10,000)")
    p.add_argument("--examples", type=_count, default=3, metavar="N",
                   help="examples shown per reason code and per kind of warning (default 3)")
    p.add_argument("-j", "--jobs", type=_positive, default=1, metavar="N",
                   help="validate each (uncompressed, regular) file on N processes, split "
                        "at line boundaries; the output is identical to --jobs 1")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="validate on a Dask cluster (pip install dtproto[dask]): a scheduler "
                        "address such as tcp://host:8786, or local[:N] to start N worker "
                        "processes here; the workers open the files themselves (give paths "
                        "they can open); the output is identical to one process")
    p.add_argument("--blocksize", type=_dask_blocksize, default=None, metavar="SIZE",
                   help="with --dask: bytes per task, e.g. 8MiB (default 64MiB); gzip files "
                        "are one task each")
    p.add_argument("-q", "--quiet", action="store_true", help="no timing line on stderr")
    p.set_defaults(func=_cmd_validate, parser=p)


def _dask_blocksize(text: str) -> str:
    from ._dask import blocksize

    return blocksize(text)
