"""Validate and send metric files on a Dask cluster (``pip install dtproto[dask]``).

Each file is cut into byte ranges of whole lines by the splitter of
``dtproto validate --jobs`` (:func:`dtproto._ranges.block_ranges`); every
range is one task.  A worker opens the file itself and reads only its range,
so what travels between the client, the scheduler and the workers is a path,
two offsets and a compact result (a :class:`~dtproto.ValidationReport` with
at most ``max_errors`` errors, or a :class:`~dtproto.SendResult`).  The
results of a file's ranges are combined in input order, line numbers shifted
by the lines of the ranges before (:meth:`ValidationReport.merge
<dtproto.ValidationReport.merge>`), so the outcome is the one of one process.

What a worker can open: local paths (absolute paths are safest: a worker's
working directory is not the client's), paths on a filesystem every worker
mounts (NFS, Lustre, GPFS...), and, when ``fsspec`` (and the filesystem's
package, such as ``s3fs``) is installed on the workers, fsspec URLs such as
``s3://bucket/metrics.txt``.  A gzip file (recognised by its first two
bytes, as everywhere in dtproto) cannot be cut: it is one task.
"""

from __future__ import annotations

import gzip as _gzip
import os
import pickle
import uuid
from typing import (IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

try:
    import distributed
except ImportError as _exc:  # pragma: no cover - exercised in a venv without dask
    raise ImportError("dtproto.dask needs Dask's distributed scheduler: "
                      "pip install dtproto[dask]") from _exc

from ._constants import VALIDATE_MAX_LISTED
from ._input import GZIP_MAGIC
from ._ranges import Segments, block_ranges
from .report import ValidationReport

__all__ = ["validate_files", "send_files", "get_client", "DEFAULT_BLOCKSIZE"]

DEFAULT_BLOCKSIZE = 64 << 20
"""Bytes per task (``"64 MiB"``): big enough that a task's overhead (a few
milliseconds) vanishes, small enough to spread a file over many workers."""

# Bytes read at a time by a worker.  Small enough to stay below glibc's mmap
# threshold, which Dask's nanny pins (MALLOC_TRIM_THRESHOLD_): 1 MiB reads
# there cost a fresh mapping and its page faults each, about a third more CPU.
_READ = 64 << 10

PathArg = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- client


def get_client(client: Optional["distributed.Client"] = None) -> "distributed.Client":
    """``client``, or the current default Dask client; a clear error without one."""
    if client is not None:
        return client
    try:
        return distributed.default_client()
    except ValueError:
        raise ValueError(
            "no Dask client: pass client=..., or create one first: "
            "distributed.Client('tcp://scheduler:8786') connects to a running scheduler, "
            "distributed.Client() starts a local cluster (see the README, 'Scaling out')"
        ) from None


def _blocksize(value: Union[int, str]) -> int:
    if isinstance(value, str):
        from dask.utils import parse_bytes

        value = parse_bytes(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("blocksize must be a positive number of bytes, not %r" % (value,))
    return value


# --------------------------------------------------------------------------- what workers run


def _is_url(path: str) -> bool:
    return "://" in path


def _open(path: str) -> IO[bytes]:
    """The file, raw (never decompressed): a local path or an fsspec URL."""
    if _is_url(path):
        try:
            import fsspec
        except ImportError:
            raise ImportError("%s: URLs need fsspec on the workers (pip install fsspec, and "
                              "e.g. s3fs for s3://)" % path) from None
        return fsspec.open(path, "rb").open()  # type: ignore[no-any-return]
    return open(path, "rb")


def _plan(path: str, blocksize: int) -> Tuple[bool, List[Tuple[int, int]]]:
    """Run on a worker: is the file gzip, and its byte ranges (one for gzip)."""
    with _open(path) as f:
        if f.read(2) == GZIP_MAGIC:
            return True, [(0, -1)]
        return False, block_ranges(f, blocksize)


def _range_chunks(path: str, start: int, end: int, gz: bool) -> Iterator[bytes]:
    """The bytes of ``path`` from ``start`` to ``end`` (gzip: the whole file,
    decompressed), a piece at a time."""
    with _open(path) as raw:
        if gz:
            f: Any = _gzip.GzipFile(fileobj=raw, mode="rb")
            while True:
                data = f.read(_READ)
                if not data:
                    return
                yield data
        raw.seek(start)
        left = end - start
        while left > 0:
            data = raw.read(min(_READ, left))
            if not data:
                raise EOFError("%s: ends before byte %d (the file changed while it was "
                               "read)" % (path, end))
            left -= len(data)
            yield data


def _validate_range(path: str, start: int, end: int, gz: bool, now_ms: Optional[int],
                    max_errors: Optional[int], max_warnings: Optional[int],
                    _key: str = "") -> ValidationReport:
    from . import validate

    return validate(_range_chunks(path, start, end, gz), now_ms=now_ms, max_errors=max_errors,
                    max_warnings=max_warnings)


# --------------------------------------------------------------------------- mapping blocks


def _submit_blocks(client: "distributed.Client", paths: Sequence[str], blocksize: int,
                   task: Callable[..., Any], args: Tuple[Any, ...], name: str
                   ) -> List[List["distributed.Future"]]:
    """Plan every file on the workers (gzip? its ranges), then submit
    ``task(path, start, end, gz, *args, key)`` for each range, ``key`` being
    the task's key ``"{name}-{file index}-{range index}"``; the futures per file."""
    plans = client.gather([client.submit(_plan, p, blocksize, pure=False,
                                         key="%s-plan-%d" % (name, i))
                           for i, p in enumerate(paths)])
    jobs = []
    for i, (path, (gz, ranges)) in enumerate(zip(paths, plans)):
        keys = ["%s-%d-%d" % (name, i, k) for k in range(len(ranges))]
        jobs.append([client.submit(task, path, a, b, gz, *args, key, pure=False, key=key)
                     for key, (a, b) in zip(keys, ranges)])
    return jobs


def _task_name(kind: str) -> str:
    return "dtproto-%s-%s" % (kind, uuid.uuid4().hex[:16])


class _ByPath(dict):  # type: ignore[type-arg]
    """The results, keyed by the paths as strings; a ``pathlib.Path`` finds its entry too."""

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(_key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(_key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(_key(key), default)


def _key(key: Any) -> Any:
    return os.fspath(key) if isinstance(key, os.PathLike) else key


def _names(paths: Union[PathArg, Iterable[PathArg]]) -> List[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [os.fspath(p) for p in paths]


def validate_files(paths: Union[PathArg, Iterable[PathArg]], *,
                   client: Optional["distributed.Client"] = None,
                   blocksize: Union[int, str] = "64 MiB", now_ms: Optional[int] = None,
                   max_errors: Optional[int] = VALIDATE_MAX_LISTED,
                   max_warnings: Optional[int] = VALIDATE_MAX_LISTED
                   ) -> Dict[str, ValidationReport]:
    """Validate files on a Dask cluster: ``{path: report}``, in the order given
    (keys are the paths as strings; looking one up by its ``pathlib.Path`` works too).

    Each report equals :func:`dtproto.validate` of the whole file in one
    process (``dtproto.validate(pathlib.Path(path), ...)``; for a file that
    is not gzip, the same as ``dtproto.validate(open(path, "rb"), ...)``):
    the counts, every listed error (line, column, code, message, text) and
    warning, and so ``to_response()``.  Every range is validated with the same
    ``now_ms`` and caps and the reports are merged in input order with
    :meth:`ValidationReport.merge`, whose result is exactly that.

    Args:
        paths: one path or several: local or shared-filesystem paths that the
            workers can open, or fsspec URLs (``s3://...``) with fsspec there.
        client: a ``distributed.Client``; default the current one.
        blocksize: bytes per task, an int or a string such as ``"64 MiB"``.
        now_ms, max_errors, max_warnings: as for :func:`dtproto.validate`.

    Raises:
        ValueError: no client and no default one.
        OSError: a file cannot be opened or read (raised by the worker).
    """
    client = get_client(client)
    names = _names(paths)
    size = _blocksize(blocksize)
    jobs = _submit_blocks(client, names, size, _validate_range,
                          (now_ms, max_errors, max_warnings), _task_name("validate"))
    out: Dict[str, ValidationReport] = _ByPath()
    try:
        for name, futures in zip(names, jobs):
            out[name] = ValidationReport.combine(client.gather(futures), max_errors=max_errors,
                                                 max_warnings=max_warnings)
    finally:
        for futures in jobs:
            client.cancel(futures)
    return out


# --------------------------------------------------------------------------- sending


def _shift(result: Any, offset: int) -> Any:
    """A copy of a :class:`SendResult` with its line numbers moved down ``offset`` lines."""
    import dataclasses

    from .sender import SendResult

    if not offset:
        return result
    out = SendResult()
    out.merge(result)
    out.invalid_lines = [dataclasses.replace(i, line=i.line + offset)
                         for i in out.invalid_lines]
    out.warnings = [dataclasses.replace(w, line=w.line + offset) for w in out.warnings]
    out.undelivered = [dataclasses.replace(u, first_line=u.first_line + offset,
                                           last_line=u.last_line + offset)
                       for u in out.undelivered]
    for r in out.requests:
        r.first_line += offset
    if result.stopped_at is not None:
        out.stopped_at = result.stopped_at + offset
    return out


class _Ledger:
    """Where a send task records its progress: the scheduler's task metadata
    (``[run, task key]``), so that a second run of the task on another worker
    (its first worker died) finds what was already delivered."""

    def __init__(self, key: str) -> None:
        self.client = distributed.get_client()
        self.keys = [key.rsplit("-", 2)[0], key]

    def get(self) -> Optional[Dict[str, Any]]:
        data = self.client.get_metadata(self.keys, None)
        return None if data is None else pickle.loads(data)  # type: ignore[no-any-return]

    def set(self, state: Dict[str, Any]) -> None:
        self.client.set_metadata(self.keys, pickle.dumps(state))


class _Tracked:
    """A range's chunks, remembering whether the last byte read was a newline."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.last = b"\n"

    def read(self, _n: int) -> bytes:
        data = next(self._chunks, b"")
        if data:
            self.last = data[-1:]
        return data


def _send_range(path: str, start: int, end: int, gz: bool, url: str, token: Optional[str],
                options: Dict[str, Any], segment: int, ledger_name: str) -> Dict[str, Any]:
    """Run on a worker: send the lines of one range with a Sender of its own.

    The range is sent in segments of whole lines of about ``segment`` bytes;
    after each one the result so far is recorded in the ledger.  A second run
    of the task (its first worker died) skips the segments recorded and sends
    the one that was in progress again: only that segment's lines can have
    been stored twice, and ``resent`` names them.  When a segment fails for
    good (the Sender raises), the rest of the range is not sent: one
    :class:`~dtproto.sender.Undelivered` range says so.

    When the range fails to read (a damaged gzip file, a file cut short),
    what was read is accounted as one process accounts it (the lines read but
    not sent undelivered, ``input_error``, ``stopped_at`` the first line not
    read) and ``"lines"`` is None: how many lines the range holds is unknown.
    The error travels as text: an exception whose cause chain loops back (the
    InputReadError and its cause) does not survive Dask's pickling.

    Returns ``{"result": SendResult (line numbers of the range), "lines":
    lines in the range or None, "resent": [(first, last), ...], "error": text
    or None, "read_error": text or None}``.
    """
    from ._send_core import _READ_ERRORS
    from .errors import SendError
    from .sender import SendResult, Sender, Undelivered

    ledger = _Ledger(ledger_name)
    state = ledger.get() or {"done": 0, "result": SendResult(), "resent": [], "runs": 0}
    if state.get("final") is not None:
        return state["final"]         # an earlier run finished; its worker died after
    state["runs"] += 1
    ledger.set(state)
    total = state["result"]
    done = state["done"]              # segments delivered by an earlier run
    feed = _Tracked(_range_chunks(path, start, end, gz))
    segs = Segments(feed.read, lambda: None, _READ)
    index = 0
    first = 1
    error: Optional[str] = None
    read_error: Optional[str] = None
    stop_line: Optional[int] = None
    with Sender(url, token, **options) as sender:
        try:
            while not segs.eof:
                first = segs.newlines + 1
                chunks = segs.segment(segment)
                if index < done or error is not None:
                    for _ in chunks:      # delivered by an earlier run, or not to be sent
                        pass
                    index += 1
                    continue
                if index == done and state["runs"] > 1:
                    # In progress when the earlier run's worker died: it may be
                    # stored already, and is sent again.
                    body = list(chunks)
                    lines = sum(c.count(b"\n") for c in body)
                    if body and not body[-1].endswith(b"\n"):
                        lines += 1
                    if lines:
                        state["resent"].append((first, first + lines - 1))
                    chunks = iter(body)
                try:
                    part = sender.send(chunks)
                except SendError as exc:   # InputReadError too
                    part = getattr(exc, "result", None) or SendResult()
                    if part.input_error is not None:
                        # The range failed to read (a chunk may have failed
                        # too): its result says what was read and not sent,
                        # and stopped_at; nothing more of the range can be read.
                        read_error = part.input_error
                        error = str(exc)
                        total.merge(_shift(part, first - 1))
                        break
                    error = str(exc) or type(exc).__name__
                    if part.stopped_at is not None:   # the first line never attempted
                        stop_line = first - 1 + part.stopped_at
                    part.stopped_at = None
                total.merge(_shift(part, first - 1))
                index += 1
                for _ in chunks:          # a send that stopped did not read to the end
                    pass
                if error is not None and stop_line is None:
                    stop_line = segs.newlines + 1
                if error is None:
                    state.update(done=index, result=total)
                    ledger.set(state)
        except _READ_ERRORS as exc:
            # A segment that is not sent (after a failure) or is read whole
            # before it is sent again failed to read.
            if index < done:
                raise OSError("cannot read %s again (a second run of its range): %s: %s"
                              % (path, type(exc).__name__, exc)) from None
            read_error = "%s: %s" % (type(exc).__name__, exc)
            if total.input_error is None:
                total.input_error = read_error
            total.stopped_at = stop_line if stop_line is not None else first
    lines: Optional[int] = None       # unknown when the range failed to read
    if read_error is None:
        lines = segs.newlines + (0 if feed.last == b"\n" else 1)
        if stop_line is not None and stop_line <= lines:
            total.undelivered.append(Undelivered(
                stop_line, lines, lines - stop_line + 1,
                "not sent: the send of this block stopped at the failure before (%s)"
                % (error or "")[:300]))
    out = {"result": total, "lines": lines, "resent": list(state["resent"]), "error": error,
           "read_error": read_error}
    state.update(done=index, result=total, final=out)
    ledger.set(state)
    return out


def _merge_ranges(path: str, parts: List[Dict[str, Any]]) -> Any:
    """One file's result from its ranges' (:func:`_send_range`), in input
    order, with file line numbers; ``resent`` holds the file's resent lines.

    A range that failed to read is accounted exactly when it is the file's
    last (always so for gzip, which is one range): its ``input_error`` and
    ``stopped_at`` are the file's.  Before the last, the ranges after it
    cannot be numbered (how many lines it holds is unknown): OSError.
    """
    from .sender import SendResult

    total = SendResult()
    total.resent = []  # type: ignore[attr-defined]
    offset = 0
    for i, part in enumerate(parts):
        if part.get("read_error") is not None and i < len(parts) - 1:
            raise OSError("cannot read %s: %s (the lines after it cannot be numbered)"
                          % (path, part["read_error"]))
        total.merge(_shift(part["result"], offset))
        total.resent.extend((a + offset, b + offset)  # type: ignore[attr-defined]
                            for a, b in part["resent"])
        if part["lines"] is not None:
            offset += part["lines"]
    return total


def send_files(paths: Union[PathArg, Iterable[PathArg]], url: str, token: Optional[str] = None,
               *, client: Optional["distributed.Client"] = None,
               blocksize: Union[int, str] = "64 MiB", **sender_options: Any) -> Dict[str, Any]:
    """Send files to an ingest endpoint from a Dask cluster: ``{path: SendResult}``.

    Every range of every file (see :func:`validate_files`) is one task, sent
    by a :class:`~dtproto.Sender` of the worker's own, made from ``url``,
    ``token`` and ``sender_options`` (``max_bytes``, ``gzip``,
    ``concurrency``, ``validate``, ...; not ``on_flush``).  The ranges'
    results are merged per file in input order with file line numbers
    (:meth:`SendResult.merge <dtproto.SendResult.merge>`), so a file's
    result counts every line once: accepted, rejected (by the server or, with
    ``validate=True``, by the client) or undelivered.

    Unlike one :meth:`Sender.send <dtproto.Sender.send>`, a failure does not
    stop the other ranges: they are sent at the same time.  Where a range's
    send failed for good, the failed chunk is in ``undelivered`` as usual
    and the rest of that range is one more ``undelivered`` range ("not sent:
    ...").  ``stopped_at`` stays ``None``.

    Retries of Dask: when a worker dies, Dask runs its tasks again on another
    worker.  A send task records its progress on the scheduler after every
    segment of about ``8 * max_bytes`` (``4 * concurrency * max_bytes`` at
    least) bytes, and a second run skips what was recorded (the records are
    cleared when send_files returns).  Only the lines of the segment that
    was in progress when the worker died can have been stored twice: they
    are listed in the result's ``resent`` attribute
    (``[(first_line, last_line), ...]``, file line numbers; empty when no
    task ran twice).  The counts of the result are those of the last
    delivery of each line.

    Raises:
        ConfigurationError: the url, token or options are refused (checked
            on the client, by building a Sender, before anything is sent).
        ValueError: no client and no default one.
        OSError: a file cannot be opened, or a range before a file's last
            fails to read (the lines after it cannot be numbered).  A
            file's last range that fails to read (a damaged gzip file, which
            is one range) is accounted as one process accounts it: what was
            read and sent counts, the lines read but not sent are
            ``undelivered``, ``input_error`` names the error and
            ``stopped_at`` is the first line not read.
    """
    from .sender import Sender

    client = get_client(client)
    names = _names(paths)
    size = _blocksize(blocksize)
    if "on_flush" in sender_options:
        raise TypeError("send_files() takes no on_flush: the workers' senders send, not flush")
    with Sender(url, token, **sender_options) as probe:   # refuse bad options here
        max_bytes, concurrency = getattr(probe, "max_bytes"), getattr(probe, "concurrency")
    segment = max_bytes * max(8, 4 * concurrency)
    # also the name of the ledgers on the scheduler (task metadata), cleared below
    task_name = _task_name("send")
    jobs = _submit_blocks(client, names, size, _send_range,
                          (url, token, sender_options, segment), task_name)
    out: Dict[str, Any] = _ByPath()
    try:
        for path, futures in zip(names, jobs):
            out[path] = _merge_ranges(path, client.gather(futures))
    finally:
        for futures in jobs:
            client.cancel(futures)
        try:
            # the ledgers (the scheduler keeps a None).  A loop variable that
            # reused the task's name once made this clear a path's key instead,
            # and every ledger stayed on the scheduler (a red-team finding).
            client.set_metadata(task_name, None)
        except Exception:  # pragma: no cover - the scheduler went away
            pass
    return out
