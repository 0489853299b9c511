"""An inference job under backend lambda, typed: the rule builds a `LambdaJobSpec` (workflow/rules/common.smk's
`lambda_job`), the cosmicai-lambda executor runs it as it is (cosmicai.aws.dispatch), and another executor runs
the rule's shell command, `workflow/scripts/lambda_invoke.py` with `LambdaJobSpec.argv()`, which parses back to the
same spec. Nothing here imports boto3: the Snakefile builds specs in an install without the lambda extra.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from cosmicai.aws.settings import INLINE_MAX_BYTES, LambdaSettings
from cosmicai.engines.base import CPU_PRECISIONS, RUNTIMES
from cosmicai.errors import CosmicaiError

if TYPE_CHECKING:  # types only: the engines and the local inference path are not imported on the submitting side
    from cosmicai.engines.base import Precision, Runtime
    from cosmicai.infer import OnInvalid


def build_parser() -> argparse.ArgumentParser:
    """Arguments of one inference job under backend lambda (a group of consecutive partitions)."""
    p = argparse.ArgumentParser(prog="lambda_invoke.py", description="Infer a job's partitions on AWS Lambda (see cosmicai.aws.lambda_job)")
    p.add_argument("--manifest", required=True, help="partition manifest (cosmicai partition)")
    p.add_argument("--job", required=True, help="the job's name (job_00003)")
    p.add_argument("--partitions", required=True, nargs="+", help="its partitions' names in the manifest (part_00024 ...)")
    p.add_argument("--predictions-dir", required=True, help="where each partition's .parquet and .json (sidecar) go")
    p.add_argument("--record", required=True, help="the job's record to write when every partition is done")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (staged in S3 once, content-addressed, unless --onnx)")
    p.add_argument("--onnx", help="exported ONNX graph: staged instead of the checkpoint, for the CPU runtimes")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="inference runtime in the function (auto: ONNX Runtime/OpenVINO for a graph, PyTorch for a checkpoint)",
    )
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="cosmicai")
    p.add_argument("--function-name", required=True)
    p.add_argument("--region", default="", help="empty: boto3's default")
    p.add_argument("--timeout-s", type=int, default=300, help="the function's timeout (the read timeout is 60 s longer)")
    p.add_argument("--memory-mb", type=int, default=2048, help="the function's memory (checked against it before anything is sent)")
    p.add_argument("--architecture", choices=("x86_64", "arm64"), default="x86_64", help="for pricing")
    p.add_argument("--ephemeral-storage-mb", type=int, default=512, help="for pricing")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=8,
        help="invocation attempts on throttling, 5xx and lost responses (function crashes, timeouts, "
        "out of memory and S3 unavailable: fewer, cosmicai.aws.invoker.FUNCTION_ERROR_ATTEMPTS)",
    )
    p.add_argument(
        "--inline-max-bytes",
        type=int,
        default=INLINE_MAX_BYTES,
        help="predictions up to this size come back in the function's response (no S3 object); 0: always via S3",
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--precision", choices=CPU_PRECISIONS, default="fp32", help="int8: --onnx is the int8 graph (rule quantize_int8)")
    p.add_argument("--on-invalid", choices=("fail", "flag"), default="fail")
    return p


# The Lambda settings a job carries (and its script's options of the same names).
SPEC_SETTINGS = (
    "bucket",
    "prefix",
    "function_name",
    "region",
    "timeout_s",
    "memory_mb",
    "architecture",
    "ephemeral_storage_mb",
    "max_attempts",
    "inline_max_bytes",
)


@dataclasses.dataclass(frozen=True)
class LambdaJobSpec:
    """One inference job under backend lambda: what the rule gives the executor (no command line in between)."""

    manifest: str
    job: str
    partitions: tuple[str, ...]
    predictions_dir: str
    record: str
    checkpoint: str
    settings: LambdaSettings
    onnx: str | None = None
    runtime: Runtime = "auto"
    batch_size: int = 512
    precision: Precision = "fp32"
    on_invalid: OnInvalid = "fail"

    def __post_init__(self) -> None:
        object.__setattr__(self, "partitions", tuple(self.partitions))
        if not self.partitions:
            raise CosmicaiError(self.job, "a job needs at least one partition")

    def argv(self) -> list[str]:
        """The same job as `workflow/scripts/lambda_invoke.py`'s arguments (for executors that run the rule's shell command)."""
        args = ["--manifest", self.manifest, "--job", self.job, "--partitions", *self.partitions]
        args += ["--predictions-dir", self.predictions_dir, "--record", self.record, "--checkpoint", self.checkpoint]
        args += ["--onnx", self.onnx] if self.onnx else []
        args += ["--runtime", self.runtime, "--batch-size", str(self.batch_size), "--precision", self.precision]
        args += ["--on-invalid", self.on_invalid]
        for name in SPEC_SETTINGS:
            args += [f"--{name.replace('_', '-')}", str(getattr(self.settings, name))]
        return args

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> LambdaJobSpec:
        """The job the script's parsed arguments describe."""
        settings = LambdaSettings(**{name: getattr(a, name) for name in SPEC_SETTINGS})
        fields = (
            "manifest",
            "job",
            "partitions",
            "predictions_dir",
            "record",
            "checkpoint",
            "onnx",
            "runtime",
            "batch_size",
            "precision",
        )
        return cls(settings=settings, on_invalid=a.on_invalid, **{name: getattr(a, name) for name in fields})

    @classmethod
    def from_argv(cls, argv: list[str]) -> LambdaJobSpec:
        """Parse the script's arguments (a bad list exits with argparse's message, as a script does)."""
        return cls.from_args(build_parser().parse_args(argv))
