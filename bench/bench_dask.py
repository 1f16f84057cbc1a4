"""One process against 2 Dask workers on the same big file (the README's "Scaling out").

Writes (once) a seeded file of about 400 MB: 7.5 M gauge lines over 50,000
series, 0.1% invalid lines, 0.2% blank lines, every third line ending in CRLF.
Then, alternating, ``dtproto.validate`` in this process and
``dtproto.dask.validate_files`` on a local cluster of 2 worker processes (1
thread each, started once, outside the timing; default 64 MiB blocks), checks
that both reports are equal, and prints the medians and their ratio::

    python bench/bench_dask.py [--path big.txt] [--rounds 5]

The ratio needs two idle cores: on a machine that runs other work, the second
worker gets no core of its own and the figure says nothing about Dask.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import dtproto

SIZE = 400 << 20


def write_corpus(path: str) -> None:
    """The seeded corpus described in the module docstring."""
    rnd = random.Random(7)
    size = i = 0
    with open(path, "wb") as out:
        while size < SIZE:
            lines = []
            for _ in range(10_000):
                i += 1
                r = rnd.random()
                if r < 0.001:
                    line = f"bad line {i} no value"
                elif r < 0.003:
                    line = ""
                else:
                    line = (f"cpu.load,host=h{i % 50_000},region=r{i % 7} "
                            f"gauge,{i % 100}.5 1700000000000")
                lines.append(line + ("\r\n" if i % 3 == 0 else "\n"))
            block = "".join(lines).encode()
            out.write(block)
            size += len(block)


def main() -> None:
    from distributed import Client, LocalCluster

    from dtproto.dask import validate_files

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="big.txt")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    path = os.path.abspath(args.path)
    if not os.path.exists(path):
        write_corpus(path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, \
            Client(cluster) as client:
        one, dask = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            with open(path, "rb") as f:
                here = dtproto.validate(f)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            there = validate_files([path], client=client)[path]
            dask.append(time.perf_counter() - t)
            assert here.to_response() == there.to_response(), "reports differ"
            assert (here.lines_ok, here.lines_invalid) == (there.lines_ok, there.lines_invalid)
    mb = os.path.getsize(path) / 1e6
    m1, m2 = statistics.median(one), statistics.median(dask)
    print(f"{'dtproto.validate, one process':40} {m1:7.2f} s {mb / m1:7.0f} MB/s")
    print(f"{'validate_files, 2 Dask workers':40} {m2:7.2f} s {mb / m2:7.0f} MB/s")
    print(f"speed-up: {m1 / m2:.2f}x (median of {args.rounds}, "
          f"{dtproto.IMPLEMENTATION} implementation)")


if __name__ == "__main__":
    main()
