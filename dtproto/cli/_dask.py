"""``--dask ADDRESS`` of ``dtproto validate`` and ``dtproto send``: the same
work on a Dask cluster (:mod:`dtproto.dask`), the same output.

``ADDRESS`` is a scheduler address (``tcp://host:8786``) or ``local[:N]``: a
local cluster of N worker processes (default: one per CPU), one thread each.
Dask is imported only when ``--dask`` is given.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._common import UsageError, _err, _plural, _printable

DEFAULT_BLOCKSIZE = "64 MiB"


def _import() -> Any:
    try:
        from .. import dask as dtdask
    except ImportError as exc:
        raise UsageError("--dask needs Dask: %s" % exc) from None
    return dtdask


def blocksize(text: str) -> str:
    """``--blocksize``: bytes, or a size such as ``64MiB`` or ``8 MB`` (checked when used)."""
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*", text):
        raise argparse.ArgumentTypeError("%r is not a size: use bytes or e.g. 64MiB, 8MB" % text)
    return text


def _parse_size(text: str) -> int:
    from dask.utils import parse_bytes

    n = int(parse_bytes(text.replace(" ", "")))
    if n < 1:
        raise UsageError("--blocksize must be at least 1 byte, not %r" % text)
    return n


class Cluster:
    """A client for ``--dask ADDRESS`` (and the local cluster it started), closed on exit."""

    def __init__(self, address: str) -> None:
        dtdask = _import()
        import logging

        import distributed

        self.dtdask = dtdask
        self._cluster: Any = None
        m = re.fullmatch(r"local(?::(\d+))?", address.strip())
        try:
            if m:
                n = int(m.group(1)) if m.group(1) else (os.cpu_count() or 1)
                if n < 1:
                    raise UsageError("--dask local:N needs N >= 1 worker processes, not %d" % n)
                self._cluster = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                    silence_logs=logging.ERROR)
                self.client = distributed.Client(self._cluster)
            else:
                self.client = distributed.Client(address, timeout="10s")
        except UsageError:
            raise
        except (OSError, ValueError, TypeError) as exc:
            self.close()
            raise UsageError("cannot use the Dask scheduler %s: %s (ADDRESS is a scheduler "
                             "address such as tcp://host:8786, or local:N)" % (address, exc)
                             ) from None
        self.workers = len(self.client.scheduler_info().get("workers", {})) or 1

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def label(self) -> str:
        return "on Dask, %s" % _plural(self.workers, "worker")

    def run(self, path: str, size: int, task: Callable[..., Any], args: Tuple[Any, ...],
            kind: str, progress: Any) -> List[Any]:
        """``task`` over the byte ranges of the file ``path`` (all but gzip:
        split by block size), the results in input order; ``progress``
        follows the ranges done."""
        import distributed

        dtdask = self.dtdask
        block = _parse_size(getattr(self, "blocksize", DEFAULT_BLOCKSIZE))
        try:
            futures, = dtdask._submit_blocks(self.client, [os.path.abspath(path)], block, task,
                                             args, dtdask._task_name(kind))
        except (OSError, EOFError) as exc:
            raise UsageError("cannot open %s on the Dask workers: %s" % (
                path, getattr(exc, "strerror", None) or exc)) from None
        try:
            if getattr(progress, "enabled", False):   # a TTY: ranges done, as bytes
                done, each = 0, size // max(len(futures), 1)
                for _f in distributed.as_completed(futures):
                    done += each
                    progress.update(done)
            return self.client.gather(futures)  # type: ignore[no-any-return]
        except (OSError, EOFError) as exc:
            raise UsageError("cannot read %s on the Dask workers: %s" % (
                path, getattr(exc, "strerror", None) or exc)) from None
        finally:
            self.client.cancel(futures)


# --------------------------------------------------------------------------- send


def send_dask(args: argparse.Namespace, names: List[str], url: str) -> int:
    """``dtproto send --dask ADDRESS FILE...``: each file's ranges sent by the
    workers, each with a Sender of its own; printed as one process prints.

    Unlike one process, a failed range does not stop the others (they are
    sent at once), so no file is skipped; the lines never sent are in
    ``undelivered`` ("not sent: ...").
    """
    import sys

    from ._common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, _open_input, _Progress, _write_json
    from .send import _human_send, _read_token, _result_doc, sender_options

    if "-" in names:
        raise UsageError("--dask sends files the workers open: standard input cannot be sent "
                         "this way")
    options = sender_options(args)
    token = _read_token(args)
    rc = EXIT_OK
    docs: List[Dict[str, Any]] = []
    with Cluster(args.dask) as cluster:
        cluster.blocksize = getattr(args, "blocksize", None) or DEFAULT_BLOCKSIZE  # type: ignore[attr-defined]
        dtdask = cluster.dtdask
        segment = options["max_bytes"] * max(8, 4 * options["concurrency"])
        for name in names:
            inp = _open_input(name, docs if args.json else None)
            if inp is None:
                rc = EXIT_USAGE
                continue
            size = inp.size or 0
            inp.close()
            progress = _Progress(size, inp.name)
            try:
                parts = cluster.run(name, size, dtdask._send_range,
                                    (url, token, options, segment), "send", progress)
            except UsageError as exc:
                progress.close()
                _err(str(exc))
                rc = EXIT_USAGE
                if args.json:
                    docs.append({"file": name, "io_error": str(exc)})
                continue
            progress.close()
            try:
                result = dtdask._merge_ranges(name, parts)
            except OSError as exc:   # a range before the last failed to read
                _err(str(exc))
                rc = EXIT_USAGE
                if args.json:
                    docs.append({"file": name, "io_error": str(exc)})
                continue
            resent: List[Tuple[int, int]] = result.resent
            if not result.ok and rc == EXIT_OK:
                rc = EXIT_INVALID
            read_error = None
            if result.input_error is not None:
                # The file broke part-way (a damaged gzip file): what was read
                # has been sent and is reported below, as one process says it.
                read_error = _printable("cannot read %s: %s" % (name, result.input_error))
                _err(read_error)
                rc = EXIT_USAGE
            if resent:
                _err("%s: a Dask worker died while sending: lines %s may have been stored "
                     "twice" % (name, ", ".join("%d-%d" % r for r in resent)))
            if args.json:
                doc = _result_doc(inp.name, result)
                doc["error"] = None
                doc["lines_never_sent"] = None
                if read_error is not None:
                    doc["io_error"] = result.input_error
                if resent:
                    doc["resent"] = [list(r) for r in resent]
                docs.append(doc)
            else:
                _human_send(inp.name, url, result, None, args.max_errors, args.verbose,
                            read_error)
    if args.json:
        _write_json({"url": url, "files": docs, "skipped_files": []}, sys.stdout)
    return rc
