"""Partition integrity: check a file's sha256 against the value the partition manifest recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file


def manifest_sha256(manifest: str | os.PathLike, partition: str | os.PathLike) -> str:
    """The sha256 the manifest records for this partition (matched by file name)."""
    try:
        plan = json.loads(Path(manifest).read_text())
        entries = {e["file"]: e["sha256"] for e in plan["partitions"]}
    except FileNotFoundError:
        raise CosmicaiError(manifest, "no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CosmicaiError(manifest, f"not a readable partition manifest ({type(exc).__name__}: {exc})") from None
    name = Path(partition).name
    if name not in entries:
        raise CosmicaiError(partition, f"not listed in the partition manifest {manifest}")
    return entries[name]


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise CosmicaiError unless the file's sha256 is `expected` (hex)."""
    if not Path(path).is_file():
        raise CosmicaiError(path, "no such file")
    found = sha256_file(path)
    if found != expected.lower():
        raise CosmicaiError(path, f"sha256 mismatch: expected {expected.lower()}, found {found} (corrupted or replaced?)")
