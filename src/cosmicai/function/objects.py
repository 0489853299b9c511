"""The function's own S3 calls: its client, the model's download (verified by sha256) and the predictions' PUT."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cosmicai.atomic import atomic_path
from cosmicai.data.s3io import s3_error
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

_s3: Any = None  # created on first use, then reused by warm calls


def function_s3_client() -> Any:
    """The function's boto3 S3 client (region, endpoint and credentials from the environment Lambda provides)."""
    global _s3
    if _s3 is None:
        import boto3

        _s3 = boto3.client("s3")
    return _s3


def model_etag(s3: Any, bucket: str, key: str) -> str:
    """The model object's ETag (one HEAD): with the key, what identifies the model cached in this environment."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, "reading the model", "s3:GetObject") from None


def download_model(s3: Any, bucket: str, key: str, path: str | os.PathLike, sha256: str | None) -> None:
    """Download the model to `path`, which appears only when complete and (given `sha256`) verified."""
    try:
        with atomic_path(path) as tmp:
            s3.download_file(bucket, key, str(tmp))
            if sha256 and (actual := sha256_file(tmp)) != sha256:
                raise CosmicaiError(f"s3://{bucket}/{key}", f"sha256 {actual} is not the expected {sha256} (changed meanwhile, or corrupt)")
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, "downloading the model", "s3:GetObject") from None


def put_predictions(s3: Any, bucket: str, key: str, body: bytes) -> str:
    """PUT the predictions (their sha256 in the metadata, for the submitter's check); return the sha256."""
    sha = hashlib.sha256(body).hexdigest()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/vnd.apache.parquet", Metadata={"sha256": sha})
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, bucket, key, "writing the predictions", "s3:PutObject") from None
    return sha
