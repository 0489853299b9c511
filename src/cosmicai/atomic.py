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
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        if exc.filename not in (None, str(tmp)):
            raise
        # A failed write names no file (ENOSPC from write(), pyarrow, h5py): name the output it was for, in one line.
        text = str(exc)
        problem = "No space left on device" if exc.errno == errno.ENOSPC or "No space left on device" in text else None
        problem = problem or exc.strerror or (text.strip().splitlines() or [type(exc).__name__])[0]
        raise OSError(exc.errno, f"cannot write it: {problem}", str(final)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Atomically write `obj` as JSON, indented unless `indent` is None (compact: json's C encoder, several times faster)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False, default=float) + "\n")
