"""Process resource readings shared by the inference paths (local, Slurm, Lambda)."""

from __future__ import annotations

import hashlib
import os
import resource
import sys


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
