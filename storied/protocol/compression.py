"""Optional compression of large data between hosts (``comm.compression``, as Dask names it).

Off by default, as in Dask. ``"auto"`` means lz4 when the ``lz4`` package is installed (else
off); ``"lz4"`` and ``"zlib"`` name a codec. A link compresses only when both ends chose the
same codec and they are on different hosts: over loopback, compressing costs more than it
saves. Only out-of-band buffers (arrays, large ``bytes``, large pickles) are compressed; a
buffer is sent compressed only if a sample and then the whole of it shrink to at most
``MAX_RATIO`` of their size, so incompressible data (random numbers, already compressed
files) costs one small trial and travels as it is.

Pure functions, no I/O: the connection layer decides per link and calls them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, NamedTuple


class Codec(NamedTuple):
    compress: Callable[[memoryview], bytes]
    #: (compressed data, original size) -> a writable buffer of the original bytes
    decompress: Callable[[bytes | memoryview, int], Any]


def _zlib_decompress(data: bytes | memoryview, size: int) -> bytearray:
    inflater = zlib.decompressobj()
    out = bytearray(inflater.decompress(data, size))
    if len(out) != size or inflater.unconsumed_tail:
        raise ValueError(f"zlib data does not inflate to the {size} bytes announced")
    return out


CODECS: dict[str, Codec] = {
    "zlib": Codec(lambda view: zlib.compress(view, 1), _zlib_decompress),
}

try:
    import lz4.block
except ImportError:  # optional: ``pip install 'storied[compression]'``
    pass
else:
    CODECS["lz4"] = Codec(
        lambda view: lz4.block.compress(view, store_size=False),
        lambda data, size: lz4.block.decompress(
            data, uncompressed_size=size, return_bytearray=True
        ),
    )

#: buffers smaller than this are not worth a trial
MIN_SIZE = 64 * 1024
#: lz4's block format takes at most ~2 GiB at once; larger buffers travel uncompressed
MAX_SIZE = 2**31 - 2**25
#: compressed data must be at most this fraction of the original to be worth sending
MAX_RATIO = 0.7
_SAMPLE_SIZE = 16 * 1024
_SAMPLES = 4


def resolve(setting: Any) -> str | None:
    """The codec a ``comm.compression`` setting names on this machine, or None for off.

    Raises ``ValueError`` for an unknown setting or a codec whose package is not installed.
    """
    if setting in (None, False, "none", "None", "false", "False", ""):
        return None
    if setting == "auto":
        return "lz4" if "lz4" in CODECS else None
    if isinstance(setting, str) and setting in CODECS:
        return setting
    if setting == "lz4":
        raise ValueError(
            "comm.compression is 'lz4' but the lz4 package is not installed: "
            "pip install 'storied[compression]', or set comm.compression to 'auto' or false"
        )
    raise ValueError(f"comm.compression must be false, 'auto', 'lz4' or 'zlib', not {setting!r}")


def link_codec(local: str | None, remote: Any, same_host: bool) -> str | None:
    """The codec a link uses: the one both ends chose, and none between processes on one host
    (as Dask does) or when the ends disagree or the peer named something unknown."""
    if same_host or local is None or remote != local:
        return None
    return local


def maybe_compress(buffer: Any, codec: str) -> bytes | None:
    """``buffer`` compressed with ``codec`` if that pays (see ``MAX_RATIO``), else None."""
    view = memoryview(buffer).cast("B")
    size = view.nbytes
    if not MIN_SIZE <= size <= MAX_SIZE:
        return None
    compress = CODECS[codec].compress
    step = size // _SAMPLES
    sample = b"".join(view[i * step : i * step + _SAMPLE_SIZE] for i in range(_SAMPLES))
    if len(compress(sample)) > MAX_RATIO * len(sample):
        return None
    compressed = compress(view)
    return compressed if len(compressed) <= MAX_RATIO * size else None


def decompress(codec: str, data: bytes | memoryview, size: int) -> Any:
    """A writable buffer of ``size`` bytes; ``ValueError`` for an unknown codec or bad data."""
    entry = CODECS.get(codec)
    if entry is None:
        raise ValueError(f"data compressed with {codec!r}, which this side cannot decompress")
    try:
        out = entry.decompress(data, size)
    except Exception as exc:  # lz4's LZ4BlockError, zlib.error, MemoryError for a bad size
        raise ValueError(f"corrupt {codec} data: {exc}") from None
    if len(out) != size:
        raise ValueError(f"{codec} data does not decompress to the {size} bytes announced")
    return out
