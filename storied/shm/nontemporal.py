"""Copies into segments with non-temporal stores, where glibc would not choose them.

glibc's ``memcpy`` writes with non-temporal stores (straight to memory, without first reading
each destination cache line) above a threshold it derives from the last-level cache: three
quarters of a thread's share of it. A virtual machine reporting a large cache (480 MiB on the
development machine) puts that threshold above any copy (190 MB there), and then the copy of a
result into a segment reads every destination line before writing it: 100 MB in 4 MiB chunks
took 16 ms against 10 ms with non-temporal stores (one thread, ``ctypes.memmove`` into a
mapped segment, measured interleaved). glibc reads its tunables when a process starts, so a
worker gets this one from the process that starts it (``LocalCluster``, the nanny): copies of
a chunk (``writer.CHUNK``) and up go non-temporal, as glibc does on a machine whose cache it
reads as it is. Only where ``worker.shared-memory`` is on (true, or ``"auto"`` on a host whose
``/dev/shm`` it takes: ``storied.shm.setting``), and not where ``GLIBC_TUNABLES`` sets the
threshold already; other C libraries and other architectures ignore the variable.
"""

from __future__ import annotations

from storied.shm import setting
from storied.shm.writer import CHUNK

TUNABLES_ENV_VAR = "GLIBC_TUNABLES"
THRESHOLD_TUNABLE = "glibc.cpu.x86_non_temporal_threshold"


def worker_environ(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a worker process to start: with shared memory on here, glibc told to copy
    ``CHUNK`` bytes and more with non-temporal stores (unless ``env`` says otherwise)."""
    if not setting.configured().enabled_here():
        return env
    tunables = env.get(TUNABLES_ENV_VAR, "")
    if THRESHOLD_TUNABLE in tunables:
        return env
    threshold = f"{THRESHOLD_TUNABLE}={CHUNK:#x}"
    return {**env, TUNABLES_ENV_VAR: f"{tunables}:{threshold}" if tunables else threshold}
