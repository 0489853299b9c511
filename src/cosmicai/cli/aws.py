"""AWS commands: deploy the Lambda function."""

from __future__ import annotations

import argparse


def _deploy_lambda(a: argparse.Namespace) -> None:
    from cosmicai.aws.deploy import deploy_lambda

    for line in deploy_lambda(a.configfile, a.image_uri, a.role_arn, a.checkpoint, a.print_policy):
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
    s.add_argument("--role-arn", help="execution role ARN (needed to create the function)")
    s.add_argument("--checkpoint", help="checkpoint or .onnx graph to stage in S3 (default: the config's checkpoint, if set)")
    s.add_argument("--print-policy", action="store_true", help="only print the execution role's IAM policy for these settings")
    s.set_defaults(fn=_deploy_lambda)
