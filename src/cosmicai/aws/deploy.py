"""Deploy the function: create or update it from a container image (idempotent) and stage the model in S3;
render the two IAM policies (the function's execution role, the identity that runs the workflow).

The function's environment names its scope (cosmicai.function.scope: bucket, prefix, dataset locations),
from the same settings its policy is rendered for. Credentials come only from boto3's standard chain and
are never printed or written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from cosmicai.aws.settings import LambdaSettings
from cosmicai.aws.storage import ensure_model
from cosmicai.config import load_config
from cosmicai.data.s3io import client_error_code, parse_s3_uri
from cosmicai.errors import CosmicaiError, remote_message
from cosmicai.function.scope import BUCKET_ENV, DATASETS_ENV, PREFIX_ENV

DESCRIPTION = "cosmicai: AstroMAE photometric-redshift inference, one partition per invocation"
PolicyName = Literal["function", "submitter"]
POLICY_FILES: dict[str, str] = {"function": "function-policy.json", "submitter": "submitter-policy.json"}


def lambda_settings(configfiles: list[str | os.PathLike]) -> tuple[LambdaSettings, dict]:
    """The `lambda:` settings of the workflow config files (cosmicai.config.load_config: merged and validated); and the whole config."""
    config = load_config(configfiles)  # the schema requires the lambda: block
    return LambdaSettings.from_config(config["lambda"]), config


def _wanted(settings: LambdaSettings, datasets: tuple[str, ...] = ()) -> dict[str, Any]:
    variables = {BUCKET_ENV: settings.bucket, PREFIX_ENV: settings.prefix.strip("/")}
    if datasets:
        variables[DATASETS_ENV] = " ".join(datasets)
    return {
        "MemorySize": settings.memory_mb,
        "Timeout": settings.timeout_s,
        "EphemeralStorage": {"Size": settings.ephemeral_storage_mb},
        # The function refuses anything outside this scope, as its IAM policy does.
        "Environment": {"Variables": variables},
    }


def dataset_locations(uris: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The `s3://` dataset locations the function may read in place (an object, or a prefix ending in /); others refused."""
    found = []
    for uri in uris:
        bucket, _, key = uri[len("s3://") :].partition("/") if uri.startswith("s3://") else ("", "", "")
        if not bucket or not key or any(segment in (".", "..") for segment in key.split("/")) or "//" in key:
            raise CosmicaiError("--dataset", f"'{uri}' is not an s3://BUCKET/KEY object or s3://BUCKET/PREFIX/ location")
        found.append(uri)
    return tuple(dict.fromkeys(found))


def deploy_function(
    settings: LambdaSettings, role_arn: str | None = None, client: Any = None, datasets: tuple[str, ...] = ()
) -> tuple[str, list[str]]:
    """Create the function, or bring its image, architecture, memory, timeout and /tmp to the settings; return (ARN, actions)."""
    if not settings.image_uri:
        raise CosmicaiError(
            "lambda.image_uri", "empty: build deploy/lambda/Dockerfile, push it to ECR and set lambda.image_uri (or --image-uri)"
        )
    if client is None:
        import boto3

        client = boto3.client("lambda", region_name=settings.region or None)
    name, arch = settings.function_name, settings.architecture
    where = f"lambda:{name}"
    try:
        try:
            current = client.get_function(FunctionName=name)
        except ClientError as exc:
            if client_error_code(exc)[0] != "ResourceNotFoundException":
                raise
            if not role_arn:
                raise CosmicaiError(
                    where,
                    "does not exist yet; creating it needs --role-arn (an execution role carrying deploy/lambda/function-policy.json)",
                ) from None
            created = client.create_function(
                FunctionName=name,
                Role=role_arn,
                PackageType="Image",
                Code={"ImageUri": settings.image_uri},
                Architectures=[arch],
                Description=DESCRIPTION,
                **_wanted(settings, datasets),
            )
            client.get_waiter("function_active_v2").wait(FunctionName=name)
            return created["FunctionArn"], ["created"]
        config, actions = current["Configuration"], []
        # A tag may have moved to a new image since the last deploy; a digest cannot.
        if (
            current.get("Code", {}).get("ImageUri") != settings.image_uri
            or "@sha256:" not in settings.image_uri
            or config.get("Architectures", ["x86_64"]) != [arch]
        ):
            client.update_function_code(FunctionName=name, ImageUri=settings.image_uri, Architectures=[arch])
            client.get_waiter("function_updated_v2").wait(FunctionName=name)
            actions.append("code updated")
        changed = {k: v for k, v in _wanted(settings, datasets).items() if config.get(k) != v}
        if role_arn and config.get("Role") != role_arn:
            changed["Role"] = role_arn
        if changed:
            client.update_function_configuration(FunctionName=name, **changed)
            client.get_waiter("function_updated_v2").wait(FunctionName=name)
            actions.append("configuration updated: " + ", ".join(sorted(changed)))
        return config["FunctionArn"], actions or ["unchanged"]
    except ClientError as exc:
        code, status = client_error_code(exc)
        raise CosmicaiError(where, remote_message(code, status, exc.response.get("Error", {}).get("Message", ""))) from None
    except BotoCoreError as exc:
        raise CosmicaiError(where, str(exc)) from None


def upload_model(settings: LambdaSettings, checkpoint: str | os.PathLike, s3: Any = None) -> tuple[str, bool]:
    """Stage the checkpoint at its content-addressed key (skipped when already there); return (key, uploaded)."""
    if not Path(checkpoint).is_file():
        raise CosmicaiError(checkpoint, "checkpoint not found")
    if s3 is None:
        import boto3

        s3 = boto3.client("s3", region_name=settings.region or None)
    key, _, uploaded = ensure_model(s3, checkpoint, settings.bucket, settings.model_key)
    return key, uploaded


def policy_template(name: PolicyName, folder: str | os.PathLike = "deploy/lambda") -> str:
    """The policy template in deploy/lambda/ of the checkout (the command runs from its root)."""
    path = Path(folder) / POLICY_FILES[name]
    try:
        return path.read_text()
    except OSError as exc:
        raise CosmicaiError(path, f"cannot read the policy template ({exc.strerror}); run from the repository's root") from None


def _dataset_statements(datasets: tuple[str, ...]) -> list[dict]:
    """Reading datasets in place: their objects (every version, for pinned reads) and their listing (a missing one answers 404)."""
    if not datasets:
        return []
    objects = [f"arn:aws:s3:::{uri[len('s3://') :]}" + ("*" if uri.endswith("/") else "") for uri in datasets]
    statements = [{"Sid": "ReadDatasetsInPlace", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": objects}]
    buckets: dict[str, list[str]] = {}
    for uri in datasets:
        bucket, _, key = uri[len("s3://") :].partition("/")
        buckets.setdefault(bucket, []).append(key + ("*" if key.endswith("/") else ""))
    statements += [
        {
            "Sid": f"ListDataset{i}",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": keys}},
        }
        for i, (bucket, keys) in enumerate(sorted(buckets.items()))
    ]
    return statements


def render_policy(template: str, settings: LambdaSettings, account_id: str, region: str, datasets: tuple[str, ...] = ()) -> dict:
    """A policy template (deploy/lambda/*-policy.json, with <PLACEHOLDERS>) for these settings and dataset locations."""
    prefix = settings.prefix.strip("/")
    values = {
        "<PREFIX>/": f"{prefix}/" if prefix else "",  # an empty prefix leaves no leading slash
        "<BUCKET>": settings.bucket,
        "<REGION>": region,
        "<ACCOUNT_ID>": account_id,
        "<FUNCTION_NAME>": settings.function_name,
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    policy = json.loads(template)
    policy["Statement"] += _dataset_statements(datasets)
    return policy


def deploy_lambda(
    configfiles: list[str],
    image_uri: str | None,
    role_arn: str | None,
    checkpoint: str | None,
    print_policy: PolicyName | None = None,
    datasets: list[str] | None = None,
    account_id: str | None = None,
    overrides: dict[str, str] | None = None,
) -> list[str]:
    """The `cosmicai deploy-lambda` command: stage the model, create or update the function; lines to print.

    With `print_policy`, only that policy is printed (rendered for the settings and the dataset locations).
    The dataset locations default to the config's `dataset` when it is an s3:// URI.
    """
    import dataclasses

    import boto3

    settings, config = lambda_settings(configfiles)
    settings = dataclasses.replace(settings, **(overrides or {}), **({"image_uri": image_uri} if image_uri else {}))
    if not settings.bucket:
        raise CosmicaiError("lambda.bucket", "empty: set it in config/lambda.yaml (the bucket must exist)")
    if datasets is None:
        datasets = [config["dataset"]] if str(config.get("dataset", "")).startswith("s3://") else []
    locations = dataset_locations(datasets)
    for uri in locations:
        if not uri.endswith("/"):
            parse_s3_uri(uri)
    session = boto3.session.Session(region_name=settings.region or None)
    region = session.region_name
    if not region:
        raise CosmicaiError("lambda.region", "empty and boto3 has no default region (set lambda.region or AWS_DEFAULT_REGION)")
    if print_policy:
        if not account_id:
            try:
                account_id = session.client("sts").get_caller_identity()["Account"]
            except (ClientError, BotoCoreError) as exc:
                raise CosmicaiError("sts", f"cannot read the account id (or give --account-id): {exc}") from None
        policy = render_policy(policy_template(print_policy), settings, str(account_id), region, locations)
        return [json.dumps(policy, indent=2)]
    lines = []
    checkpoint = checkpoint or config.get("checkpoint")
    if checkpoint:
        key, uploaded = upload_model(settings, checkpoint, session.client("s3"))
        lines.append(f"model: s3://{settings.bucket}/{key} ({'uploaded' if uploaded else 'already there'})")
    arn, actions = deploy_function(settings, role_arn, session.client("lambda"), locations)
    lines.append(
        f"function: {arn} ({'; '.join(actions)}; {settings.memory_mb} MB, {settings.timeout_s} s, "
        f"/tmp {settings.ephemeral_storage_mb} MB, {settings.architecture})"
    )
    return lines
