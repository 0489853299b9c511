"""S3 objects for the Lambda backend: upload unless the same content is there, verify what landed, download atomically.

A local dataset is staged once, as one object (`ensure_dataset`); the functions read row ranges of it.

Objects carry their sha256 in user metadata (`x-amz-meta-sha256`), so "is it already there?" is one
HEAD request, and multipart ETags (which are not content hashes) never matter. Every upload is then
checked: a HEAD of the key must show the size of the file and the ETag the PUT (or the multipart
completion) answered, so a denied read of what was uploaded stops the run here, before any
invocation, with one line naming s3:GetObject. A HEAD answered 403 is not taken for "missing": the
submitter's policy grants s3:ListBucket on its prefix, so S3 answers 404 for a missing key, and a 403
means denied (the line names the permission; cosmicai.data.s3io.s3_error tells which by one listing).
A failed multipart upload is aborted, so its parts are not left behind (billed); a denied abort says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cosmicai.atomic import atomic_path
from cosmicai.data.s3io import client_error_code, diagnose_head, head, s3_error
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

SHA256_META = "sha256"
SINGLE_PUT_BYTES = 8 * 2**20  # smaller files go up in one PUT
# A local dataset staged for the functions carries the identity it was partitioned with (see
# cosmicai.data.source): a rerun finds it by one HEAD and uploads nothing.
IDENTITY_META = ("size", "mtime", "meta_sha256", "sample_sha256")
MULTIPART_MB = 64  # part size of the concurrent multipart upload
MULTIPART_THREADS = 8


def stored_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The sha256 recorded on an object, or None if there is no such object (or it has none)."""
    return (_metadata(s3, bucket, key) or {}).get(SHA256_META)


def _metadata(s3: Any, bucket: str, key: str, doing: str = "checking what is there") -> dict[str, str] | None:
    """An object's user metadata (keys lowercased), or None when there is no such object (404).

    A 403 is an error naming the missing permission (s3:GetObject, or s3:ListBucket without which S3
    answers 403 for a missing key too): taking it for "missing" would upload again on every run.
    """
    try:
        h = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code, status = client_error_code(exc)
        if status == 404 and code != "NoSuchBucket":
            return None
        # Not listed either: missing (S3 may answer 403 for that); the HEAD after the upload tells a denied read apart.
        if status == 403 and code in ("403", "Forbidden") and diagnose_head(s3, bucket, key, "s3:GetObject")[1]:
            return None
        raise s3_error(exc, bucket, key, doing, "s3:GetObject", s3) from None
    except BotoCoreError as exc:
        raise s3_error(exc, bucket, key, doing, "s3:GetObject") from None
    return {k.lower(): v for k, v in h.get("Metadata", {}).items()}


def _put(s3: Any, path: str | os.PathLike, bucket: str, key: str, metadata: dict[str, str], part_bytes: int, doing: str) -> str:
    """Upload a file (one PUT, or a concurrent multipart upload); return the ETag S3 answered."""
    size = os.path.getsize(path)
    # Larger objects go up in parts even when one part would do: a single PUT stores a whole-object checksum
    # that some S3-compatible servers (rclone) send with every ranged GET, which botocore then rejects.
    if size <= SINGLE_PUT_BYTES:
        with open(path, "rb") as f:
            return s3.put_object(Bucket=bucket, Key=key, Body=f, Metadata=metadata)["ETag"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]

    def part(number: int) -> dict:
        with open(path, "rb") as f:
            f.seek((number - 1) * part_bytes)
            body = f.read(part_bytes)
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": r["ETag"]}

    try:
        with ThreadPoolExecutor(MULTIPART_THREADS, thread_name_prefix="upload") as pool:
            parts = list(pool.map(part, range(1, -(-size // part_bytes) + 1)))
        return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})["ETag"]
    except (ClientError, BotoCoreError) as exc:
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        except ClientError as abort_exc:
            if client_error_code(abort_exc)[0] in ("AccessDenied", "403", "Forbidden"):
                cause = s3_error(exc, bucket, key, doing, "s3:PutObject").problem
                raise CosmicaiError(
                    f"s3://{bucket}/{key}",
                    f"{cause}; aborting the upload was denied too: the credentials need s3:AbortMultipartUpload on "
                    f"arn:aws:s3:::{bucket}/{key} (its parts stay, and are billed, until aborted or a lifecycle rule ends them)",
                ) from None
        raise


def upload_verified(
    s3: Any, path: str | os.PathLike, bucket: str, key: str, metadata: dict[str, str], part_bytes: int = MULTIPART_MB << 20
) -> dict:
    """Upload a file, then check what landed (one HEAD: the file's size, the ETag the upload answered, the metadata); return its identity."""
    doing = f"uploading {Path(path).name}"
    try:
        etag = _put(s3, path, bucket, key, metadata, part_bytes, doing).strip('"')
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, doing, "s3:PutObject") from None
    checking = f"checking the upload of {Path(path).name}"
    try:
        h = s3.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, checking, "s3:GetObject", s3) from None
    size, landed = os.path.getsize(path), h["ETag"].strip('"')
    found = {k.lower(): v for k, v in h.get("Metadata", {}).items()}
    # A server that names a multipart upload by another ETag form (rclone: the whole file's MD5) is held
    # to the size and the metadata sent with it.
    same_etag = landed == etag or ("-" in etag) != ("-" in landed)
    if h["ContentLength"] != size or not same_etag or any(found.get(k) != v for k, v in metadata.items()):
        raise CosmicaiError(
            f"s3://{bucket}/{key}",
            f"{checking}: what landed is not what was sent (size {h['ContentLength']}, ETag {landed}; sent {size} bytes, "
            f"ETag {etag}): another writer at this key? rerun",
        )
    vid = h.get("VersionId")
    return {"size": size, "etag": landed, "version_id": None if vid in (None, "null") else vid}


def ensure_dataset(s3: Any, identity: dict, bucket: str, key: str, part_bytes: int = MULTIPART_MB << 20) -> tuple[dict, bool]:
    """Stage a local dataset as one object unless it is there with the same identity; return (S3 identity, uploaded).

    One multipart upload with concurrent parts; the local identity (size, mtime, hashes from
    partitioning) goes into the object's metadata, so a rerun needs one HEAD. Concurrent jobs on this
    machine wait for one upload.
    """
    path = identity["uri"]
    want = {k.replace("_", "-"): str(identity[k]) for k in IDENTITY_META}
    with host_lock(f"{bucket}/{key}"):
        found = _metadata(s3, bucket, key, f"uploading {Path(path).name}")
        if found is not None and all(found.get(k) == v for k, v in want.items()):
            return {**head(s3, bucket, key, doing="reading the staged dataset"), "uri": f"s3://{bucket}/{key}"}, False
        landed = upload_verified(s3, path, bucket, key, want, part_bytes)
    return {**landed, "uri": f"s3://{bucket}/{key}"}, True


def ensure_uploaded(s3: Any, path: str | os.PathLike, bucket: str, key: str, sha256: str | None = None) -> tuple[str, bool]:
    """Upload a file unless an object with the same sha256 is at the key; return (sha256, uploaded)."""
    sha = sha256 or sha256_file(path)
    if (_metadata(s3, bucket, key, f"uploading {Path(path).name}") or {}).get(SHA256_META) == sha:
        return sha, False
    upload_verified(s3, path, bucket, key, {SHA256_META: sha})
    return sha, True


def download(s3: Any, bucket: str, key: str, path: str | os.PathLike, sha256: str | None = None, small: bool = False) -> None:
    """Download an object to `path`, which appears only when complete (and, given `sha256`, verified).

    `small`: one GET on this thread (the transfer manager's HEAD, ranged GETs and threads only pay off for large objects).
    """
    try:
        with atomic_path(path) as tmp:
            if small:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"]
                with open(tmp, "wb") as f:
                    while chunk := body.read(1 << 20):
                        f.write(chunk)
            else:
                s3.download_file(bucket, key, str(tmp))
            if sha256 and (actual := sha256_file(tmp)) != sha256:
                raise CosmicaiError(f"s3://{bucket}/{key}", f"sha256 {actual} is not the expected {sha256} (changed meanwhile, or corrupt)")
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, "downloading", "s3:GetObject", s3) from None


def check_bucket(s3: Any, bucket: str, prefix: str) -> None:
    """Before any upload: the bucket exists and the prefix may be listed (one LIST), or one line naming what is missing."""
    prefix = prefix.strip("/")
    try:
        s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
    except ClientError as exc:
        if client_error_code(exc)[0] in ("AccessDenied", "403", "Forbidden"):
            raise CosmicaiError(
                f"s3://{bucket}/{prefix}",
                f"listing the prefix: access denied: the credentials need s3:ListBucket on arn:aws:s3:::{bucket} "
                f"(prefix {prefix}/*; without it S3 answers 403 for every missing key)",
            ) from None
        raise s3_error(exc, bucket, prefix, "listing the prefix", "s3:ListBucket") from None
    except BotoCoreError as exc:
        raise s3_error(exc, bucket, prefix, "listing the prefix", "s3:ListBucket") from None


@contextlib.contextmanager
def host_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by this machine's processes (concurrent jobs upload the model once)."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"cosmicai-{digest}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_model(s3: Any, checkpoint: str | os.PathLike, bucket: str, key_for: Any) -> tuple[str, str, bool]:
    """Upload a checkpoint to its content-addressed key unless there; return (key, sha256, uploaded).

    `key_for(name, sha256)` names the key. Concurrent jobs on this machine wait for one upload.
    """
    sha = sha256_file(checkpoint)
    key = key_for(Path(checkpoint).name, sha)
    with host_lock(f"{bucket}/{key}"):
        _, uploaded = ensure_uploaded(s3, checkpoint, bucket, key, sha)
    return key, sha, uploaded
