"""What a killed workflow run left: finished partitions, Snakemake's incomplete markers, surviving jobs."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path


def done_partitions(pred_dir: Path) -> dict[str, tuple[int, int]]:
    """Partitions with both outputs in place, with (mtime_ns, inode) of their predictions file."""
    out = {}
    for p in sorted(pred_dir.glob("part_*.parquet")):
        if p.with_suffix(".json").exists():
            st = p.stat()
            out[p.stem] = (st.st_mtime_ns, st.st_ino)
    return out


def incomplete_outputs(workdir: Path) -> set[str]:
    """Stems of outputs Snakemake had marked incomplete (jobs running when it was killed)."""
    stems = set()
    for f in (workdir / ".snakemake" / "incomplete").glob("*"):
        try:
            stems.add(Path(base64.urlsafe_b64decode(f.name).decode()).stem)
        except ValueError:
            continue  # not a record (e.g. migration_underway)
    return stems


def group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """Whether every live process of the process group has exited within timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [pid for pid in os.listdir("/proc") if pid.isdigit() and _pgid_of(int(pid)) == pgid and not _zombie(int(pid))]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
