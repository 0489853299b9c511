"""Read an S3 object as a seekable file through ranged GETs, and one-line messages for S3 failures.

`S3RangeFile` is what h5py opens for an `s3://` dataset: HDF5 asks for small metadata reads and
large data reads. Small reads go through an LRU cache of `block_size` blocks, at most `cache_bytes`
in all, fetched with read-ahead that grows while reads stay sequential (1, 2, 4 ... up to `readahead`
blocks fetched with the missing one, consecutive blocks as one GET of up to `part_size`), so a chunked
dataset read from start to end costs few round trips while a few rows, or the scattered metadata reads
of opening a file, fetch one block each; a read of `part_size` or more (a contiguous dataset's rows, a
large chunk) bypasses the cache and is split into `part_size` ranged GETs run concurrently. What a file
holds is bounded (`cache_bytes` plus the reads in progress) and freed when it is closed, so a warm
function's memory stays flat from one invocation to the next. Every response is checked: its ETag must be the one the file was opened
with (the object was not replaced mid-read) and its length the one asked for (no truncation).
"""

from __future__ import annotations

import collections
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from cosmicai.errors import CosmicaiError, remote_message

MIB = 1 << 20
# An open file's block cache: small blocks, so that the scattered metadata reads of opening a file and the few
# rows of a small partition fetch little (256 KiB each), and few of them, so that what a file holds stays small
# (4 MiB) however many functions (or thread-mode environments of the stand-in) read at once. Read-ahead (up to
# 15 blocks, one GET) keeps sequential reads of a chunked dataset at a few round trips per 4 MiB.
BLOCK_BYTES = 256 << 10
CACHE_BYTES = 4 * MIB
# Answers S3 gives when it sheds load or fails inside: botocore retries them; if they outlast its retries, so may we.
UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}


class S3Unavailable(CosmicaiError):
    """S3 kept answering 5xx/SlowDown through botocore's retries: transient, worth another attempt later."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3://BUCKET/KEY URI; a malformed one raises CosmicaiError."""
    rest = uri[len("s3://") :] if uri.startswith("s3://") else ""
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise CosmicaiError(uri, "not an S3 object URI (expected s3://BUCKET/KEY)")
    return bucket, key


def client_error_code(exc: ClientError) -> tuple[str, int]:
    """The error code and HTTP status of a botocore ClientError."""
    return exc.response.get("Error", {}).get("Code", ""), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


DENIED_CODES = ("AccessDenied", "403", "Forbidden", "AllAccessDisabled")
REFUSED_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken")


def s3_error(exc: Exception, bucket: str, key: str, doing: str, permission: str | None = None, s3: Any = None) -> CosmicaiError:
    """One clear line for an S3 failure, naming the object, what was being done and the likely fix.

    `permission`: the IAM action the call needs (s3:GetObject, s3:PutObject ...), named when it is denied.
    A HEAD has no body, so its 403 cannot say whether the object is missing (S3 answers 403 for a missing
    key to a caller without s3:ListBucket): given the client `s3`, one listing of the key tells which.
    """
    uri = f"s3://{bucket}/{key}"
    if isinstance(exc, NoCredentialsError):
        return CosmicaiError(uri, f"{doing}: no AWS credentials found (boto3's chain: environment, ~/.aws, instance role)")
    if isinstance(exc, EndpointConnectionError):
        return CosmicaiError(uri, f"{doing}: cannot reach the S3 endpoint ({exc}); is AWS_ENDPOINT_URL_S3 or the region right?")
    if isinstance(exc, ClientError):
        code, status = client_error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code == "NoSuchBucket":
            return CosmicaiError(uri, f"{doing}: bucket '{bucket}' does not exist (set lambda.bucket to an existing bucket)")
        if code in REFUSED_CREDENTIALS:
            return CosmicaiError(uri, f"{doing}: access denied: the credentials were refused ({code}); check boto3's credentials")
        if code in DENIED_CODES:
            needs = permission or "s3:GetObject/s3:PutObject"
            if code in ("403", "Forbidden") and s3 is not None:  # a HEAD: denied, or missing and not listable?
                needs, missing = diagnose_head(s3, bucket, key, needs)
                if needs in REFUSED_CREDENTIALS:
                    return CosmicaiError(uri, f"{doing}: access denied: the credentials were refused ({needs}); check boto3's credentials")
                if missing:
                    return CosmicaiError(
                        uri,
                        f"{doing}: no such object (S3 answered 403: if it should be there, the credentials need {needs} on {arn(bucket, key)})",
                    )
            return CosmicaiError(uri, f"{doing}: access denied ({code}): the credentials need {needs} on {arn(bucket, key, needs)}")
        if code in ("NoSuchKey", "404", "NotFound"):
            return CosmicaiError(uri, f"{doing}: no such object")
        if code in ("NoSuchVersion", "InvalidArgument") and "version" in str(exc).lower():
            return CosmicaiError(uri, f"{doing}: the version recorded at partitioning is gone (deleted; {code}); re-partition")
        if status >= 500 or code in UNAVAILABLE_CODES:
            return S3Unavailable(uri, f"{doing}: {remote_message(code, status, message, 'still after botocore' + chr(39) + 's retries')}")
        return CosmicaiError(uri, f"{doing}: {remote_message(code, status, message or str(exc))}")
    return CosmicaiError(uri, f"{doing}: {exc}")


def arn(bucket: str, key: str, permission: str = "") -> str:
    """The resource ARN an S3 permission applies to: the bucket for s3:ListBucket, else the object."""
    return f"arn:aws:s3:::{bucket}" if permission == "s3:ListBucket" else f"arn:aws:s3:::{bucket}/{key}"


def diagnose_head(s3: Any, bucket: str, key: str, wanted: str) -> tuple[str, bool]:
    """After a HEAD answered 403, one listing of the key: (the permission to name, whether the key is absent).

    Listing denied: s3:ListBucket (without it S3 answers 403 for a missing key too). Listed: `wanted`
    (the read is denied). Not listed: the object is missing, or `wanted` is denied as well. Credentials
    refused: the listing's error code.
    """
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents") or []
    except ClientError as exc:
        code = client_error_code(exc)[0]
        if code in DENIED_CODES:
            return f"s3:ListBucket (prefix {key})", False  # without it a missing key also answers 403
        return (code, False) if code in REFUSED_CREDENTIALS else (wanted, False)
    except BotoCoreError:
        return wanted, False
    return wanted, not any(o.get("Key") == key for o in listed)


def head(s3: Any, bucket: str, key: str, version_id: str | None = None, doing: str = "reading the dataset") -> dict:
    """HEAD an object: {size, etag, version_id} (version_id None when the bucket is not versioned)."""
    try:
        h = s3.head_object(Bucket=bucket, Key=key, **({"VersionId": version_id} if version_id else {}))
    except (ClientError, BotoCoreError) as exc:
        if version_id and isinstance(exc, ClientError) and client_error_code(exc)[1] in (404, 405):
            # 404: that version was deleted; 405: it is a delete marker. Either way the pinned bytes are gone.
            raise CosmicaiError(
                f"s3://{bucket}/{key}", f"{doing}: version {version_id}, recorded at partitioning, is gone (deleted); re-partition"
            ) from None
        permission = "s3:GetObjectVersion" if version_id else "s3:GetObject"
        raise s3_error(exc, bucket, key, doing + (f" (version {version_id})" if version_id else ""), permission, s3) from None
    vid = h.get("VersionId")
    return {"size": int(h["ContentLength"]), "etag": h["ETag"].strip('"'), "version_id": None if vid in (None, "null") else vid}


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable view of one S3 object (one version of it) over ranged GETs."""

    totals: ClassVar[dict[str, int]] = {"requests": 0, "bytes": 0}  # over all files of this process: what a function reports it read

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        version_id: str | None = None,
        block_size: int = BLOCK_BYTES,
        readahead: int = 15,
        cache_bytes: int = CACHE_BYTES,
        part_size: int = 8 * MIB,
        max_workers: int = 8,
    ) -> None:
        super().__init__()
        self.s3, self.bucket, self.key, self.uri = s3, bucket, key, f"s3://{bucket}/{key}"
        meta = head(s3, bucket, key, version_id)
        self.size, self.etag, self.version_id = meta["size"], meta["etag"], version_id or meta["version_id"]
        # The cache holds at least the blocks of one round (the missing one and its read-ahead).
        self.cache_blocks = max(1, cache_bytes // block_size)
        self.block_size, self.readahead, self.part_size = block_size, min(readahead, self.cache_blocks - 1), part_size
        self._last_fetched = -2  # the last block fetched: a miss on the block after it is a sequential read
        self._ahead = 0  # blocks read ahead at the last sequential miss (doubles while reads stay sequential)
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3range")
        self._pos = 0
        self.requests = 0  # ranged GETs made
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self._pos))
        if n:
            self._read_into(self._pos, view[:n])
            self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        n = self.size - self._pos if size is None or size < 0 else size
        buf = bytearray(max(0, min(n, self.size - self._pos)))
        self.readinto(buf)
        return bytes(buf)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._cache.clear()
        super().close()

    def _get(self, start: int, stop: int) -> bytes:
        """One ranged GET of [start, stop), checked for length and ETag."""
        args = {"VersionId": self.version_id} if self.version_id else {}
        try:
            r = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{stop - 1}", **args)
            data = r["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            permission = "s3:GetObjectVersion" if self.version_id else "s3:GetObject"
            raise s3_error(exc, self.bucket, self.key, f"reading bytes {start}-{stop - 1}", permission) from None
        if r.get("ETag", "").strip('"') not in ("", self.etag):
            raise CosmicaiError(self.uri, f"the object changed while being read (ETag {self.etag} -> {r['ETag'].strip(chr(34))})")
        if len(data) != stop - start:
            raise CosmicaiError(self.uri, f"truncated read: bytes {start}-{stop - 1} returned {len(data)} bytes, expected {stop - start}")
        with self._lock:
            self.requests += 1
            self.bytes_fetched += len(data)
            S3RangeFile.totals["requests"] += 1
            S3RangeFile.totals["bytes"] += len(data)
        return data

    def _fetch_parallel(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        if len(ranges) == 1:
            return [self._get(*ranges[0])]
        return list(self._pool.map(lambda r: self._get(*r), ranges))

    def _read_into(self, pos: int, out: memoryview) -> None:
        n, bs, ps = len(out), self.block_size, self.part_size
        if n >= ps:  # large read: concurrent part-sized GETs straight into the caller's buffer
            ranges = [(a, min(a + ps, pos + n)) for a in range(pos, pos + n, ps)]
            for (a, b), data in zip(ranges, self._fetch_parallel(ranges)):
                out[a - pos : b - pos] = data
            return
        first, last = pos // bs, (pos + n - 1) // bs
        missing = [i for i in range(first, last + 1) if i not in self._cache]
        ahead: range = range(0)
        if missing:
            sequential = missing[0] == self._last_fetched + 1
            self._ahead = min(self.readahead, max(1, 2 * self._ahead)) if sequential else 0
            ahead = range(last + 1, min(last + 1 + self._ahead, -(-self.size // bs)))
            fetch = missing + [i for i in ahead if i not in self._cache]
            # Runs of consecutive blocks, at most part_size each, are one GET (fewer round trips).
            runs: list[list[int]] = []
            for i in fetch:
                if runs and i == runs[-1][-1] + 1 and len(runs[-1]) * bs < ps:
                    runs[-1].append(i)
                else:
                    runs.append([i])
            ranges = [(r[0] * bs, min((r[-1] + 1) * bs, self.size)) for r in runs]
            for run, data in zip(runs, self._fetch_parallel(ranges)):
                for j, i in enumerate(run):
                    self._cache[i] = data[j * bs : (j + 1) * bs]
            self._last_fetched = fetch[-1]
        for i in range(first, last + 1):
            block = self._cache[i]
            self._cache.move_to_end(i)
            a, b = max(pos, i * bs), min(pos + n, (i + 1) * bs)
            out[a - pos : b - pos] = block[a - i * bs : b - i * bs]
        for i in ahead:  # what was read ahead is what comes next: blocks just read are evicted first
            if i in self._cache:
                self._cache.move_to_end(i)
        while len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
