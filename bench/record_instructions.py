"""What recording transitions costs, counted in CPU instructions rather than timed.

On a shared virtual machine the CPU time of the same map swings by 2x from run to run, more
than the few percent the record costs, so timed comparisons need many repeats and still
disagree. Instructions do not swing: this runs bench/workloads.py's map, recording on
(storied) and off (storied-norecord), under valgrind's callgrind with the worker processes
followed, at two sizes, and reports instructions per task (the difference between the sizes,
so start-up cancels out) for the client-and-scheduler process and for the workers. It needs
valgrind (``apt install valgrind``) and runs about 45x slower than the real thing: a few
minutes for the default sizes.

    .venv/bin/python bench/record_instructions.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS_SCRIPT = ROOT / "bench" / "workloads.py"
SYSTEMS = ("storied", "storied-norecord")


def instructions(system: str, size: int, scratch: Path) -> dict[str, int]:
    """Instructions executed by the main process and by all workers, for one map of ``size``."""
    out = scratch / f"{system}-{size}"
    out.mkdir()
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={out}/%p.out",
            sys.executable,
            str(WORKLOADS_SCRIPT),
            *("--system", system, "--workload", "map", "--size", str(size)),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    counts = {"main": 0, "workers": 0}
    for profile in out.glob("*.out"):
        command, total = "", 0
        for line in profile.read_text(errors="replace").splitlines():
            if line.startswith("cmd:"):
                command = line
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if "workloads.py" in command:
            counts["main"] += total
        elif " worker " in command:
            counts["workers"] += total
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(3_000, 6_000), metavar="N")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind on the PATH (apt install valgrind)")
    small, large = sorted(args.sizes)
    per_task: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for system in SYSTEMS:
            before = instructions(system, small, Path(scratch))
            after = instructions(system, large, Path(scratch))
            per_task[system] = {
                role: (after[role] - before[role]) / (large - small) for role in before
            }
    on, off = (per_task[system] for system in SYSTEMS)
    print(f"instructions per task of map, {small:,} to {large:,} tasks")
    print(f"{'process':10} {'recording on':>14} {'off':>14} {'on/off':>8}")
    for role in ("main", "workers"):
        print(f"{role:10} {on[role]:14,.0f} {off[role]:14,.0f} {on[role] / off[role]:8.3f}")
    total_on, total_off = sum(on.values()), sum(off.values())
    print(f"{'all':10} {total_on:14,.0f} {total_off:14,.0f} {total_on / total_off:8.3f}")


if __name__ == "__main__":
    main()
