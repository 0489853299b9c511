"""S3 objects for the Lambda backend: upload unless the same content is there, download atomically.

Objects carry their sha256 in user metadata (`x-amz-meta-sha256`), so "is it already there?" is one
HEAD request, and multipart ETags (which are not content hashes) never matter.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from cosmicai.atomic import atomic_path
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

SHA256_META = "sha256"
SINGLE_PUT_BYTES = 8 * 2**20  # boto3's multipart threshold: smaller files go up in one PUT
# Answers S3 gives when it sheds load or fails inside: botocore retries them; if they outlast its retries, so may we.
UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}


class S3Unavailable(CosmicaiError):
    """S3 kept answering 5xx/SlowDown through botocore's retries: transient, worth another attempt later."""


def client_error_code(exc: ClientError) -> tuple[str, int]:
    """The error code and HTTP status of a botocore ClientError."""
    return exc.response.get("Error", {}).get("Code", ""), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def s3_error(exc: Exception, bucket: str, key: str, doing: str) -> CosmicaiError:
    """One clear line for an S3 failure, naming the object, what was being done and the likely fix."""
    uri = f"s3://{bucket}/{key}"
    if isinstance(exc, NoCredentialsError):
        return CosmicaiError(uri, f"{doing}: no AWS credentials found (boto3's chain: environment, ~/.aws, instance role)")
    if isinstance(exc, EndpointConnectionError):
        return CosmicaiError(uri, f"{doing}: cannot reach the S3 endpoint ({exc}); is AWS_ENDPOINT_URL_S3 or the region right?")
    if isinstance(exc, ClientError):
        code, status = client_error_code(exc)
        if code == "NoSuchBucket":
            return CosmicaiError(uri, f"{doing}: bucket '{bucket}' does not exist (set lambda.bucket to an existing bucket)")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return CosmicaiError(uri, f"{doing}: access denied ({code}); the credentials need s3:GetObject and s3:PutObject "
                                      "on this bucket and prefix (check them and the IAM policy)")
        if code in ("NoSuchKey", "404", "NotFound"):
            return CosmicaiError(uri, f"{doing}: no such object")
        if status >= 500 or code in UNAVAILABLE_CODES:
            message = exc.response.get("Error", {}).get("Message", "")
            return S3Unavailable(uri, f"{doing}: {code or status}: {message} (HTTP {status}, still after botocore's retries)")
        return CosmicaiError(uri, f"{doing}: {code or status}: {exc.response.get('Error', {}).get('Message', exc)}")
    return CosmicaiError(uri, f"{doing}: {exc}")


def stored_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The sha256 recorded on an object, or None if there is no such object (or it has none).

    A HEAD answered 403 counts as missing: S3 answers 403 instead of 404 for a missing key when the
    caller may not list the bucket (the README's policy grants only Get/PutObject), and a HEAD has no
    body to say which. A real permission problem then shows at the upload that follows, named there.
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code, status = client_error_code(exc)
        if status == 404 and code != "NoSuchBucket":
            return None
        if status == 403 and code in ("403", "Forbidden", "AccessDenied"):
            return None
        raise
    # Metadata keys are case-insensitive HTTP headers (AWS lowercases them; other servers may not).
    return {k.lower(): v for k, v in head.get("Metadata", {}).items()}.get(SHA256_META)


def ensure_uploaded(s3: Any, path: str | os.PathLike, bucket: str, key: str, sha256: str | None = None) -> tuple[str, bool]:
    """Upload a file unless an object with the same sha256 is at the key; return (sha256, uploaded)."""
    sha = sha256 or sha256_file(path)
    doing = f"uploading {Path(path).name}"
    try:
        if stored_sha256(s3, bucket, key) == sha:
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
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                      Metadata={SHA256_META: hashlib.sha256(body).hexdigest()})
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
