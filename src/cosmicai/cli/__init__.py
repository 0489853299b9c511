"""The `cosmicai` command line: one subcommand per workflow step, grouped by concern, each a thin call into the package."""

from __future__ import annotations

import argparse
import logging
import sys

from cosmicai.cli import aws, bench, data, infer, model, plan, report
from cosmicai.errors import CosmicaiError

GROUPS = (data, model, infer, report, plan, bench, aws)
# The optional packages by the pyproject extra that installs them: a command that needs one names the extra.
EXTRAS = {
    "torch": "torch",
    "torchvision": "torch",
    "timm": "torch",
    "safetensors": "torch",
    "onnx": "torch",
    "onnxscript": "torch",
    "openvino": "cpu",
    "matplotlib": "plots",
    "boto3": "lambda",
    "botocore": "lambda",
    "snakemake": "workflow",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="cosmicai", description="AstroMAE photometric-redshift inference at scale")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; user errors become one line on stderr and exit status 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "sidecar", "unset") is None and args.command == "infer" and args.output:
            args.sidecar = str(args.output).rsplit(".", 1)[0] + ".json"
        args.fn(args)
    except CosmicaiError as exc:
        print(f"cosmicai {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"cosmicai {args.command}: error: this command needs {exc.name} (pip install 'cosmicai[{extra}]', or `make setup`)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cosmicai {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
