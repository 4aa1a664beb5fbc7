"""The pieces of one same-host handover of a result through ``/dev/shm``, each timed alone.

Run: ``.venv/bin/python bench/shm_handover.py [--megabytes 100] [--repeats 5]``. Prints the
best of ``repeats`` for each piece, in ms and MB/s:

- the producer's copy of the result into a segment: into a fresh one (the kernel allocates
  and zeroes every tmpfs page as it goes), into one written before (a pooled segment: its pages
  are there already), into one ``fallocate`` d first, and a memcpy into private memory already
  faulted, for reference;
- the reader's side: mapping a segment copy-on-write and reading a byte of every page, plainly,
  with ``MAP_POPULATE`` and with ``madvise(MADV_POPULATE_READ)``;
- giving a segment back (``unlink``) and shrinking a pooled one (``ftruncate``).

Pieces are interleaved round by round in one process, so ratios between them hold on a busy
machine better than their absolute times. The memcpy pieces use glibc's ``memcpy``: to time
them as a worker with shared memory on does them (non-temporal stores, ``storied.shm.nontemporal``),
run the script again with ``GLIBC_TUNABLES=glibc.cpu.x86_non_temporal_threshold=0x400000``
and compare (2026-12-02, CPU ms, two runs each, alternating: into a mapped pooled segment 20.2
and 17.9 without, 13.3 and 12.6 with; within private memory 15.6 and 15.6, 8.4 and 8.8).
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import time
from collections.abc import Callable
from typing import Any

import numpy

DIRECTORY = "/dev/shm"
#: ``madvise`` advice that faults a mapping's pages in for reading (Linux 5.14), which Python
#: 3.11's ``mmap`` module does not name
MADV_POPULATE_READ = 22
#: the same for writing
MADV_POPULATE_WRITE = 23
PAGE = mmap.PAGESIZE


def _path(name: str) -> str:
    return os.path.join(DIRECTORY, f"storied-handover-bench-{os.getpid()}-{name}")


def _write(fd: int, data: memoryview) -> None:
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], written)


def _fresh(path: str) -> int:
    with open(path, "wb"):
        pass
    return os.open(path, os.O_WRONLY)


def _touch(view: memoryview) -> None:
    numpy.frombuffer(view, dtype="u1")[::PAGE].sum()


#: a piece of a handover: its name, an untimed setup, and the timed run given what setup made
Piece = tuple[str, Callable[[], Any], Callable[[Any], None]]


def pieces(nbytes: int) -> list[Piece]:
    data = memoryview(numpy.full(nbytes, 1, dtype="u1")).cast("B")
    fresh, pooled = _path("fresh"), _path("pooled")
    with open(pooled, "wb") as file:
        file.write(data)

    def new_segment() -> int:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fresh)  # the previous round's pages go first, untimed
        with open(fresh, "wb"):
            pass
        return os.open(fresh, os.O_WRONLY)

    def mapped_pooled() -> mmap.mmap:
        fd = os.open(pooled, os.O_RDWR)
        try:
            mapped = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        _touch(memoryview(mapped))  # faulted in already, as a writer keeping its map would be
        return mapped

    def map_shared(path: str, populate: bool) -> mmap.mmap:
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, nbytes)
            mapped = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        if populate:
            mapped.madvise(MADV_POPULATE_WRITE)
        return mapped

    def copy_into(mapped: mmap.mmap) -> None:
        numpy.frombuffer(mapped, dtype="u1")[:] = numpy.frombuffer(data, dtype="u1")
        mapped.close()

    private = numpy.zeros(nbytes, dtype="u1")

    def read(flags: int, advise: bool) -> Callable[[Any], None]:
        def run(_: Any) -> None:
            fd = os.open(pooled, os.O_RDONLY)
            try:
                prot = mmap.PROT_READ | mmap.PROT_WRITE
                mapped = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE | flags, prot=prot)
            finally:
                os.close(fd)
            if advise:
                mapped.madvise(MADV_POPULATE_READ)
            _touch(memoryview(mapped))
            mapped.close()

        return run

    def written() -> str:
        path = _path("gone")
        with open(path, "wb") as file:
            file.write(data)
        return path

    def halve(path: str) -> None:
        with open(path, "r+b") as file:
            os.ftruncate(file.fileno(), nbytes // 2)

    def nothing() -> None:
        return None

    return [
        ("pwrite into a fresh segment", new_segment, lambda fd: (_write(fd, data), os.close(fd))),
        (
            "fallocate + pwrite, fresh segment",
            new_segment,
            lambda fd: (os.posix_fallocate(fd, 0, nbytes), _write(fd, data), os.close(fd)),
        ),
        (
            "pwrite into a pooled segment",
            lambda: os.open(pooled, os.O_WRONLY),
            lambda fd: (_write(fd, data), os.close(fd)),
        ),
        ("memcpy into a mapped pooled segment", mapped_pooled, copy_into),
        (
            "map a pooled segment, memcpy into it",
            nothing,
            lambda _: copy_into(map_shared(pooled, False)),
        ),
        (
            "the same, MADV_POPULATE_WRITE first",
            nothing,
            lambda _: copy_into(map_shared(pooled, True)),
        ),
        (
            "map a fresh segment, memcpy into it",
            lambda: os.close(new_segment()),
            lambda _: copy_into(map_shared(fresh, False)),
        ),
        (
            "memcpy into faulted private memory",
            nothing,
            lambda _: numpy.copyto(private, numpy.frombuffer(data, dtype="u1")),
        ),
        ("reader: map copy-on-write, read every page", nothing, read(0, False)),
        ("reader: the same, MAP_POPULATE", nothing, read(mmap.MAP_POPULATE, False)),
        ("reader: the same, MADV_POPULATE_READ", nothing, read(0, True)),
        ("unlink a written segment", written, os.unlink),
        ("ftruncate a written segment to half", written, halve),
    ]


def measure(nbytes: int, repeats: int) -> dict[str, tuple[float, float]]:
    """The best wall and CPU seconds of each piece over ``repeats`` rounds, the pieces
    interleaved within each round (so a busy spell on the machine hits them alike)."""
    best: dict[str, tuple[float, float]] = {}
    try:
        listed = pieces(nbytes)
        for _ in range(repeats):
            for name, setup, run in listed:
                state = setup()
                started, started_cpu = time.perf_counter(), time.process_time()
                run(state)
                wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
                previous = best.get(name, (wall, cpu))
                best[name] = (min(wall, previous[0]), min(cpu, previous[1]))
    finally:
        for name in ("fresh", "pooled", "gone"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_path(name))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    nbytes = args.megabytes * 10**6
    print(f"{'piece (best of ' + str(args.repeats) + ')':45} {'wall':>8}    {'CPU':>8}")
    for piece, (wall, cpu) in measure(nbytes, args.repeats).items():
        rate = nbytes / 1e6 / wall
        print(f"{piece:45} {wall * 1000:8.1f} ms {cpu * 1000:8.1f} ms {rate:9,.0f} MB/s")


if __name__ == "__main__":
    main()
