"""Partition integrity: read the manifest, find what one partition reads, refuse it if it changed.

A row-range partition reads rows [start, stop) of the source, after the source's identity is
checked against the manifest's (`cosmicai.data.source.verify`); a copied partition
(`partition_copy: true`) reads its own file, after its sha256 is checked.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from cosmicai.data.source import verify
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file


@dataclasses.dataclass(frozen=True)
class PartitionRead:
    """What one partition's job reads: rows [start, stop) of `uri` (a version of it, on S3)."""

    name: str
    uri: str
    start: int
    stop: int
    version_id: str | None = None
    sha256: str | None = None  # a copied partition's file
    source: dict | None = None  # the source identity of a row-range partition

    @property
    def rows(self) -> int:
        return self.stop - self.start


def load_manifest(manifest_path: str | os.PathLike) -> dict:
    """The partition manifest (version 2); one line naming it when it is missing or unreadable."""
    try:
        manifest = json.loads(Path(manifest_path).read_text())
        if manifest.get("version") != 2:
            raise ValueError(f"version {manifest.get('version')!r}, expected 2 (re-partition with this cosmicai)")
        for e in manifest["partitions"]:
            e["name"], e["start"], e["stop"], e["rows"]
    except FileNotFoundError:
        raise CosmicaiError(manifest_path, "no such file") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CosmicaiError(manifest_path, f"not a readable partition manifest ({type(exc).__name__}: {exc})") from None
    return manifest


def partition_reads(manifest_path: str | os.PathLike, names: list[str], manifest: dict | None = None) -> list[PartitionRead]:
    """What each named partition of the manifest reads, in the order given (not yet checked: see `check`)."""
    manifest = manifest or load_manifest(manifest_path)
    entries = {e["name"]: e for e in manifest["partitions"]}
    missing = [n for n in names if n not in entries]
    if missing:
        raise CosmicaiError(manifest_path, f"no partition '{missing[0]}' in the manifest ({len(entries)} partitions)")
    return [_read(manifest_path, manifest, entries[n]) for n in names]


def _read(manifest_path: str | os.PathLike, manifest: dict, entry: dict) -> PartitionRead:
    name = entry["name"]
    # partition_copy: used by a source the jobs cannot read in place (slow or not shared with the nodes) and by a full sha256 per partition
    if manifest.get("copy"):
        return PartitionRead(name, str(Path(manifest_path).parent / entry["path"]), 0, entry["rows"], sha256=entry["sha256"])
    src = manifest["source"]
    return PartitionRead(name, src["uri"], entry["start"], entry["stop"], src.get("version_id"), source=src)


def check(read: PartitionRead) -> None:
    """Refuse a partition whose data changed since partitioning (one line naming the file and what changed)."""
    if read.sha256:
        verify_sha256(read.uri, read.sha256)
    if read.source:
        verify(read.source)


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise CosmicaiError unless the file's sha256 is `expected` (hex)."""
    if not Path(path).is_file():
        raise CosmicaiError(path, "no such file")
    found = sha256_file(path)
    if found != expected.lower():
        raise CosmicaiError(path, f"sha256 mismatch: expected {expected.lower()}, found {found} (corrupted or replaced?)")
