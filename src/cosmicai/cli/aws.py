"""AWS commands: deploy the Lambda function."""

from __future__ import annotations

import argparse


def _deploy_lambda(a: argparse.Namespace) -> None:
    from cosmicai.aws.deploy import deploy_lambda

    overrides = {k: v for k, v in (("bucket", a.bucket), ("region", a.region)) if v}
    for line in deploy_lambda(a.configfile, a.image_uri, a.role_arn, a.checkpoint, a.print_policy, a.dataset, a.account_id, overrides):
        print(line)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("deploy-lambda", help="create or update the AWS Lambda function from its image and stage the model in S3")
    s.add_argument(
        "--configfile",
        nargs="+",
        default=["config/config.yaml", "config/lambda.yaml"],
        help="workflow config files whose lambda: block is used, merged in order",
    )
    s.add_argument("--image-uri", help="container image URI (default: lambda.image_uri)")
    s.add_argument("--bucket", help="the bucket (default: lambda.bucket)")
    s.add_argument("--region", help="the region (default: lambda.region, else boto3's default)")
    s.add_argument("--role-arn", help="execution role ARN (needed to create the function)")
    s.add_argument("--checkpoint", help="checkpoint or .onnx graph to stage in S3 (default: the config's checkpoint, if set)")
    s.add_argument(
        "--print-policy",
        nargs="?",
        const="function",
        choices=("function", "submitter"),
        help="only print an IAM policy for these settings: the function's execution role (the default), or the "
        "identity that runs the workflow (submitter)",
    )
    s.add_argument(
        "--dataset",
        action="append",
        metavar="S3_URI",
        help="an s3:// dataset (or prefix ending in /) the function may read in place; repeat for more "
        "(default: the config's dataset when it is s3://); set in its environment and in both policies",
    )
    s.add_argument("--account-id", help="the AWS account id for --print-policy (default: asked of STS)")
    s.set_defaults(fn=_deploy_lambda)
