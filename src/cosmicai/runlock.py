"""One run per results folder: a lock inside the folder, held by the workflow's main process for the whole run.

Snakemake's own lock is per working directory, so two checkouts (or two working directories) given the
same absolute `results` ran at once, and one failed reading the other's half-written Parquet. This lock
is an advisory `flock` on `RESULTS/.cosmicai.lock`: the kernel drops it when the holding process ends,
however it ends, so a run that was killed (SIGKILL, power loss of a client) never leaves a lock that
blocks the next run. The file records its holder (host, pid, working directory, start time) for the
message a second run gets, and whether the holder released it: a record left unreleased tells the next
run that the previous one was killed, which it reports before taking the lock.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from cosmicai.errors import CosmicaiError

LOCK_NAME = ".cosmicai.lock"
_held: dict[str, int] = {}  # lock path -> open descriptor of this process's lock (closing it releases the lock)


def lock_path(results: str | os.PathLike) -> Path:
    """The lock file of a results folder."""
    return Path(results).absolute() / LOCK_NAME


def _describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"(working directory {holder.get('workdir', '?')}), since {holder.get('started_at', '?')}"
    )


def _record(fd: int) -> dict:
    """The holder recorded in the lock file (empty when it has none yet or is unreadable)."""
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def acquire(results: str | os.PathLike) -> str | None:
    """Take the results folder's lock for this process, or raise CosmicaiError naming the folder and its holder.

    Returns a one-line note when the previous holder ended without releasing it (a killed run), else None.
    """
    path = lock_path(results)
    if str(path) in _held:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _record(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise CosmicaiError(
                path.parent,
                f"results folder in use by another run: {_describe(holder)} (lock {path}); wait for it to end, or give this run another `results`",
            ) from None
        raise CosmicaiError(path, f"cannot lock the results folder ({exc.strerror}); its filesystem may not support locks") from None
    previous = _record(fd)
    note = None
    if previous and not previous.get("released_at"):
        note = f"{path.parent}: the previous run on this results folder ({_describe(previous)}) ended without releasing its lock (killed?); taking it"
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "workdir": os.getcwd(),
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write(fd, holder)
    _held[str(path)] = fd
    return note


def release(results: str | os.PathLike) -> None:
    """Mark the lock released and drop it (nothing when this process does not hold it)."""
    path = lock_path(results)
    fd = _held.pop(str(path), None)
    if fd is None:
        return
    try:
        _write(fd, {**_record(fd), "released_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    finally:
        os.close(fd)  # releases the flock


def _write(fd: int, record: dict) -> None:
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
