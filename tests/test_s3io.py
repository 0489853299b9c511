"""S3RangeFile's bounds: what an open file over S3 keeps (block cache, read-ahead) and that closing frees it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cosmicai.data.s3io import MIB, S3RangeFile
from cosmicai.data.source import open_h5


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


class FakeS3:
    """head_object and ranged get_object over bytes in memory, counting GETs."""

    def __init__(self, data: bytes) -> None:
        self.data, self.gets = data, []

    def head_object(self, Bucket: str, Key: str, **_: object) -> dict:
        return {"ContentLength": len(self.data), "ETag": '"e"'}

    def get_object(self, Bucket: str, Key: str, Range: str, **_: object) -> dict:
        a, b = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        self.gets.append((a, b + 1))
        return {"Body": _Body(self.data[a : b + 1]), "ETag": '"e"'}


def test_cache_stays_within_its_bytes_and_readahead_grows_only_while_sequential() -> None:
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB
    s3 = FakeS3(data)
    f = S3RangeFile(s3, "b", "k", block_size=64 << 10, readahead=7, cache_bytes=512 << 10)
    assert f.read(10) == data[:10]
    assert s3.gets == [(0, 64 << 10)]  # a first read fetches its block only: no read-ahead yet
    pos, rounds = 64 << 10, []
    while pos < 4 * MIB:  # sequential small reads: read-ahead doubles (1, 2, 4, then its cap of 7 blocks)
        f.seek(pos)
        before = len(s3.gets)
        assert f.read(1000) == data[pos : pos + 1000]
        if len(s3.gets) > before:
            rounds.append((s3.gets[-1][1] - s3.gets[-1][0]) // (64 << 10))
        assert len(f._cache) <= 8  # 512 KiB of 64 KiB blocks
        pos += 64 << 10
    assert rounds[:4] == [2, 3, 5, 8]  # the missing block plus 1, 2, 4, 7 ahead
    f.seek(12 * MIB)  # a jump: no read-ahead
    f.read(10)
    assert s3.gets[-1] == (12 * MIB, 12 * MIB + (64 << 10))
    f.close()
    assert not f._cache


@pytest.fixture
def h5_bytes(tmp_path) -> bytes:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(100_000, dtype=np.float32), chunks=(1000,))
    return path.read_bytes()


def test_open_h5_over_s3_closes_its_range_file(h5_bytes: bytes) -> None:
    s3 = FakeS3(h5_bytes)
    ctx = open_h5("s3://b/k.h5", s3=s3)
    with ctx as f:
        assert f["x"][5000:5010].tolist() == list(range(5000, 5010))
        raw = ctx.raw
        assert not raw.closed and raw._cache
    assert raw.closed and not raw._cache and not f.id.valid
