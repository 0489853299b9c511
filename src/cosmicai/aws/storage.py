"""S3 objects for the Lambda backend: upload unless the same content is there, download atomically.

A local dataset is staged once, as one object (`ensure_dataset`); the functions read row ranges of it.

Objects carry their sha256 in user metadata (`x-amz-meta-sha256`), so "is it already there?" is one
HEAD request, and multipart ETags (which are not content hashes) never matter.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from cosmicai.atomic import atomic_path
from cosmicai.data.s3io import UNAVAILABLE_CODES, S3Unavailable, client_error_code, head, s3_error  # noqa: F401 - re-exported
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

SHA256_META = "sha256"
SINGLE_PUT_BYTES = 8 * 2**20  # boto3's multipart threshold: smaller files go up in one PUT
# A local dataset staged for the functions carries the identity it was partitioned with (see
# cosmicai.data.source): a rerun finds it by one HEAD and uploads nothing.
IDENTITY_META = ("size", "mtime", "meta_sha256", "sample_sha256")
MULTIPART_MB = 64  # part size of the concurrent multipart upload


def stored_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The sha256 recorded on an object, or None if there is no such object (or it has none)."""
    return (_metadata(s3, bucket, key) or {}).get(SHA256_META)


def _metadata(s3: Any, bucket: str, key: str) -> dict[str, str] | None:
    """An object's user metadata (keys lowercased), or None when there is no such object.

    A HEAD answered 403 counts as missing: S3 answers 403 instead of 404 for a missing key when the
    caller may not list the bucket (the README's policy grants only Get/PutObject), and a HEAD has no
    body to say which. A real permission problem then shows at the upload that follows, named there.
    """
    try:
        h = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code, status = client_error_code(exc)
        if status == 404 and code != "NoSuchBucket":
            return None
        if status == 403 and code in ("403", "Forbidden", "AccessDenied"):
            return None
        raise
    return {k.lower(): v for k, v in h.get("Metadata", {}).items()}


def ensure_dataset(s3: Any, identity: dict, bucket: str, key: str) -> tuple[dict, bool]:
    """Stage a local dataset as one object unless it is there with the same identity; return (S3 identity, uploaded).

    One multipart upload with concurrent parts (boto3's transfer manager); the local identity (size,
    mtime, hashes from partitioning) goes into the object's metadata, so a rerun needs one HEAD.
    Concurrent jobs on this machine wait for one upload.
    """
    from boto3.s3.transfer import TransferConfig

    path = identity["uri"]
    want = {k.replace("_", "-"): str(identity[k]) for k in IDENTITY_META}
    uploaded = False
    with host_lock(f"{bucket}/{key}"):
        try:
            found = _metadata(s3, bucket, key)
            if found is None or any(found.get(k) != v for k, v in want.items()):
                part = MULTIPART_MB << 20
                config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=8, use_threads=True)
                s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": want}, Config=config)
                uploaded = True
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, bucket, key, f"uploading {Path(path).name}") from None
        except S3UploadFailedError as exc:  # boto3's transfer manager wraps the ClientError
            cause = exc.__context__ if isinstance(exc.__context__, (ClientError, BotoCoreError)) else exc
            raise s3_error(cause, bucket, key, f"uploading {Path(path).name}") from None
    return {**head(s3, bucket, key), "uri": f"s3://{bucket}/{key}"}, uploaded


def ensure_uploaded(s3: Any, path: str | os.PathLike, bucket: str, key: str, sha256: str | None = None) -> tuple[str, bool]:
    """Upload a file unless an object with the same sha256 is at the key; return (sha256, uploaded)."""
    sha = sha256 or sha256_file(path)
    doing = f"uploading {Path(path).name}"
    try:
        if (_metadata(s3, bucket, key) or {}).get(SHA256_META) == sha:
            return sha, False
        if os.path.getsize(path) <= SINGLE_PUT_BYTES:  # one PUT on this thread; the transfer manager's threads only pay off when large
            with open(path, "rb") as f:
                s3.put_object(Bucket=bucket, Key=key, Body=f, Metadata={SHA256_META: sha})
        else:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {SHA256_META: sha}})
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, doing) from None
    except S3UploadFailedError as exc:  # boto3's transfer manager wraps the ClientError
        cause = exc.__context__ if isinstance(exc.__context__, (ClientError, BotoCoreError)) else exc
        raise s3_error(cause, bucket, key, doing) from None
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
        raise s3_error(exc, bucket, key, "downloading") from None


def upload_bytes(s3: Any, bucket: str, key: str, body: bytes, content_type: str) -> None:
    """Put a small object (timings JSON)."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata={SHA256_META: hashlib.sha256(body).hexdigest()})
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, "uploading") from None


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
