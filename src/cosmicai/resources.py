"""Process resource readings shared by the inference paths (local, Slurm, Lambda), and the CPU share Lambda gives."""

from __future__ import annotations

import hashlib
import math
import os
import resource
import sys

LAMBDA_MB_PER_VCPU = 1769  # Lambda's CPU share: one vCPU's worth at 1,769 MB, in proportion to memory


def lambda_threads(memory_mb: float) -> int:
    """Engine threads for a Lambda function of `memory_mb`: the vCPUs its memory buys, rounded up.

    Lambda shows every function two or more CPUs but gives it a CPU quota in proportion to memory; below one
    vCPU a second thread only waits on the quota (OpenVINO int8 at 768 MB: 657-663 samples/s per vCPU with one
    thread, 467-580 with two, alternated under a 0.434-CPU CFS quota here).
    """
    return max(1, math.ceil(memory_mb / LAMBDA_MB_PER_VCPU))


def peak_rss_mb() -> float:
    """Peak resident set size of this process image in MB.

    Linux's VmHWM, not ru_maxrss: ru_maxrss survives execve, so a job would report its parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
