"""Lambda settings (the workflow config's `lambda:` block) and where each object lives in S3."""

from __future__ import annotations

import dataclasses
from typing import Literal

from cosmicai.errors import CosmicaiError
from cosmicai.function.scope import key_problem

Architecture = Literal["x86_64", "arm64"]
# Lambda's ephemeral storage up to this size is included in the price.
FREE_EPHEMERAL_MB = 512
# Predictions up to this size come back in the function's response (base64: 5.3 MiB of 4 MiB, under Lambda's
# 6 MB synchronous response limit with the summary); the function caps it the same (handler.INLINE_LIMIT).
# A 100 MB partition (~5,000 rows) has ~100 KB of predictions.
INLINE_MAX_BYTES = 4 * 2**20


@dataclasses.dataclass(frozen=True)
class LambdaSettings:
    """The function, its bucket and prefix, and the limits the invoker and deployment use."""

    bucket: str
    function_name: str
    prefix: str = "cosmicai"
    region: str = ""  # empty: boto3's default chain (AWS_DEFAULT_REGION, ~/.aws/config)
    memory_mb: int = 2048
    timeout_s: int = 300
    ephemeral_storage_mb: int = FREE_EPHEMERAL_MB
    architecture: Architecture = "x86_64"
    image_uri: str = ""
    max_attempts: int = 8
    max_in_flight: int = 1000  # cap on invocations in flight (the function's or the account's concurrency may be lower)
    inline_max_bytes: int = INLINE_MAX_BYTES  # predictions up to this size come back in the response; 0: always via S3

    @classmethod
    def from_config(cls, block: dict) -> LambdaSettings:
        """Build from the config's `lambda:` block (keys not used here, such as prices, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in block.items() if k in names})

    def key(self, *parts: str) -> str:
        """An object key under the prefix (no leading slash); a key that would leave the prefix is refused."""
        prefix = self.prefix.strip("/")
        key = "/".join([prefix, *parts] if prefix else parts)
        if problem := key_problem(key, prefix):
            raise CosmicaiError("lambda.prefix", f"{problem}: refused (the function may only read and write under the configured prefix)")
        return key

    def partition_object_key(self, name: str) -> str:
        """Where a copied partition file (partition_copy) is staged: PREFIX/partitions/NAME."""
        return self.key("partitions", name)

    def dataset_key(self, name: str, digest: str) -> str:
        """Where a local dataset is staged, keyed by its identity: PREFIX/datasets/DIGEST[:16]/NAME (a changed file never overwrites one in use)."""
        return self.key("datasets", digest[:16], name)

    def model_key(self, name: str, sha256: str) -> str:
        """Content-addressed model key, PREFIX/models/SHA[:16]/NAME: a new checkpoint never overwrites one in use."""
        return self.key("models", sha256[:16], name)

    def output_key(self, stem: str) -> str:
        """The predictions (.parquet) key of a partition."""
        return self.key("predictions", f"{stem}.parquet")

    def uri(self, key: str) -> str:
        """s3:// URI of a key in the bucket, for messages."""
        return f"s3://{self.bucket}/{key}"
