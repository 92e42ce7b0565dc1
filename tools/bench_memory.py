"""Memory probes of a benchmark worker process (tools/bench_worker.py): its own peak resident
set size and its device memory."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's resident set size high-water mark, MiB.

    Linux carries ``ru_maxrss`` over fork and exec, so a child started by a parent holding
    torch would report at least the parent's size; VmHWM belongs to the process's own memory
    map. ``ru_maxrss`` is the fallback elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    unit = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit


def gpu_mib() -> float | None:
    """This process's device memory per nvidia-smi, or None where it cannot say."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None
