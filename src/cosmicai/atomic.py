"""Write outputs under a temporary name and rename them into place only when complete."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` on success, delete it on error."""
    final = Path(path)
    # Only when missing: mkdir of an existing directory (and unlink of a missing file) takes the directory's lock,
    # which a thousand threads writing into one predictions directory contend for.
    if not final.parent.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError) or exc.filename not in (None, str(tmp)):
            raise
        # A failed write names no file (ENOSPC from write(), pyarrow, h5py): name the output it was for, in one line.
        text = str(exc)
        problem = "No space left on device" if exc.errno == errno.ENOSPC or "No space left on device" in text else None
        problem = problem or exc.strerror or (text.strip().splitlines() or [type(exc).__name__])[0]
        raise OSError(exc.errno, f"cannot write it: {problem}", str(final)) from None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` (one open, write, close and rename: no buffered file object)."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Atomically write `obj` as JSON, indented unless `indent` is None (compact: json's C encoder, several times faster)."""
    write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=False, default=float) + "\n").encode())
