"""What the function may touch: its bucket, its prefix and the dataset locations given at deploy time.

All three come from the function's environment, set by `cosmicai deploy-lambda` from the same settings
its IAM policy is rendered for (deploy/lambda/function-policy.json), so an event cannot widen them:
- BUCKET_ENV: the one bucket it reads its model from and writes predictions to;
- PREFIX_ENV: the prefix it works under (empty: the whole bucket). A run's `lambda.prefix` is this
  prefix or a folder under it; under the run's prefix each key's first folder says what it holds:
  `models/` (read), `datasets/` and `partitions/` (staged data, read), `predictions/` (written);
- DATASETS_ENV: `s3://` locations it may also read data from (space-separated; one ending in `/` is
  a prefix), the workflow's own datasets in place.
Without BUCKET_ENV and PREFIX_ENV the function refuses every event.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Literal

from cosmicai.errors import CosmicaiError

BUCKET_ENV = "COSMICAI_S3_BUCKET"
PREFIX_ENV = "COSMICAI_S3_PREFIX"
DATASETS_ENV = "COSMICAI_DATASETS"

Role = Literal["models", "datasets", "partitions", "predictions"]
ROLES: tuple[Role, ...] = ("models", "datasets", "partitions", "predictions")


def key_problem(key: str, prefix: str) -> str | None:
    """Why an S3 key is not plainly inside `prefix` (None when it is)."""
    prefix = prefix.strip("/")
    if key.startswith("/") or any(segment in ("", ".", "..") for segment in key.split("/")):
        # S3 keeps such keys literally; S3-compatible stores on a filesystem resolve them elsewhere.
        return f"key '{key}' has an empty, '.' or '..' segment"
    if prefix and not key.startswith(prefix + "/"):
        return f"key '{key}' is outside the prefix '{prefix}/'"
    return None


def role_of(key: str, prefix: str) -> str | None:
    """The folder that says what a key holds: the first of ROLES among its folders under `prefix` (None if none)."""
    prefix = prefix.strip("/")
    rest = key[len(prefix) + 1 :] if prefix else key
    folders = rest.split("/")[:-1]
    return next((f for f in folders if f in ROLES), None)


@dataclasses.dataclass(frozen=True)
class Scope:
    """The bucket, prefix and extra dataset locations this function may use."""

    bucket: str
    prefix: str
    datasets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Scope:
        """The scope the function's environment sets; refused (one line) when the bucket or prefix is not set."""
        env = os.environ if env is None else env
        for name in (BUCKET_ENV, PREFIX_ENV):
            if name not in env or (name == BUCKET_ENV and not env[name].strip()):
                raise CosmicaiError(
                    f"environment {name}", "not set: the function refuses to run without its scope (deploy it with cosmicai deploy-lambda)"
                )
        return cls(env[BUCKET_ENV].strip(), env[PREFIX_ENV].strip().strip("/"), tuple(env.get(DATASETS_ENV, "").split()))

    def check_key(self, field: str, bucket: str, key: str, role: Role) -> None:
        """Refuse (one line naming the field) an object outside the bucket, the prefix or the folder its role allows."""
        if bucket != self.bucket:
            raise CosmicaiError(
                "event", f"'{field}.bucket' is '{bucket}', not the function's bucket '{self.bucket}' ({BUCKET_ENV}): refused"
            )
        if problem := key_problem(key, self.prefix):
            raise CosmicaiError("event", f"'{field}.key': {problem}: refused ({PREFIX_ENV}={self.prefix!r})")
        if (found := role_of(key, self.prefix)) != role:
            where = f"under a '{found}/' folder" if found else "in none of its folders"
            raise CosmicaiError("event", f"'{field}.key': key '{key}' is {where}; {field} must lie under '{role}/': refused")

    def check_source(self, uri: str) -> None:
        """Refuse a data source that is neither staged data under the prefix nor a deploy-time dataset location."""
        if any(uri == loc or (loc.endswith("/") and uri.startswith(loc)) for loc in self.datasets):
            if "/../" in uri or "/./" in uri or "//" in uri[len("s3://") :]:
                raise CosmicaiError("event", f"'source.uri' {uri!r} has an empty, '.' or '..' segment: refused")
            return
        bucket, _, key = uri[len("s3://") :].partition("/")
        staged = bucket == self.bucket and key_problem(key, self.prefix) is None and role_of(key, self.prefix) in ("datasets", "partitions")
        if not staged:
            allowed = " ".join([f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}[…/]datasets/", *self.datasets])
            raise CosmicaiError(
                "event", f"'source.uri' {uri!r} is outside the function's data locations ({allowed}; {DATASETS_ENV} at deploy): refused"
            )
