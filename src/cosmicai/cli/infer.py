"""The inference command: a job (consecutive partitions of a manifest, one engine for all), or a whole dataset file."""

from __future__ import annotations

import argparse
from pathlib import Path

from cosmicai.engines.base import DEVICES, PRECISIONS, RUNTIMES
from cosmicai.errors import CosmicaiError


def _infer(a: argparse.Namespace) -> None:
    try:
        runs, reused = _infer_job(a) if a.manifest or a.partitions else ([_infer_file(a)], [])
    except CosmicaiError as exc:
        if a.failure_record:  # a retry's resource functions read it: bad input is not retried bigger
            from cosmicai.atomic import write_json

            write_json(a.failure_record, {"partitions": a.partitions or [a.data], "retryable": False, "error": str(exc)})
        raise
    if a.failure_record:
        Path(a.failure_record).unlink(missing_ok=True)
    for t in runs:
        print(_line(t) + (" (reused: done by an earlier attempt)" if t["partition"] in reused else ""))


def _line(t: dict) -> str:
    return f"{t['partition']}: {t['rows']} rows, {t['samples_per_s']:.0f} samples/s on {t['device']} ({t['precision']}), peak RSS {t['peak_rss_mb']:.0f} MB"


def _infer_job(a: argparse.Namespace) -> tuple[list[dict], list[str]]:
    from cosmicai.infer_job import run_job

    if not (a.manifest and a.job and a.partitions and a.predictions_dir and a.record) or a.data or a.output or a.sha256:
        raise CosmicaiError(
            "cosmicai infer",
            "a job needs --manifest, --job, --partitions, --predictions-dir and --record (and no dataset file, --output or --sha256)",
        )
    return run_job(a.manifest, a.job, a.partitions, a.predictions_dir, a.record, **_engine(a))


def _infer_file(a: argparse.Namespace) -> dict:
    from cosmicai.infer import run_infer

    if not (a.data and a.output) or a.job or a.predictions_dir or a.record:
        raise CosmicaiError("cosmicai infer", "give a dataset file and --output, or a job (--manifest, --job, --partitions ...)")
    return run_infer(a.data, output=a.output, sidecar=a.sidecar, sha256=a.sha256, **_engine(a))


def _engine(a: argparse.Namespace) -> dict:
    """The engine options, as run_infer and run_job both take them."""
    keys = ("checkpoint", "batch_size", "device", "precision", "on_invalid", "compile", "threads", "runtime", "onnx")
    return {k: getattr(a, k) for k in keys}


def _engine_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", required=True, help="model checkpoint")
    s.add_argument("--device", choices=DEVICES, default="auto")
    s.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="int8 (CPU): the graph quantized for this data (cached) and checked by the accuracy gate first, unless --onnx is int8",
    )
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores allotted)")
    s.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="auto: on CPU OpenVINO when installed, else ONNX Runtime (fp32, int8); PyTorch on CUDA",
    )
    s.add_argument("--onnx", help="exported ONNX graph of the checkpoint, for the CPU runtimes (default: export and cache)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("infer", help="predict redshifts for a job (consecutive partitions of a manifest) or a whole dataset file")
    s.add_argument(
        "data", nargs="?", help="a whole dataset file (path or s3:// URI), with --output; or a job: --manifest, --job, --partitions ..."
    )
    _engine_args(s)
    s.add_argument("--output", help="predictions .parquet (a dataset file)")
    s.add_argument("--sidecar", help="timings .json (a dataset file; default: OUTPUT with .json)")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--on-invalid", choices=("fail", "flag"), default="fail")
    s.add_argument("--failure-record", help="on bad input write this JSON (read when sizing a retry); removed on success")
    s.add_argument("--sha256", help="refuse the dataset file unless its sha256 is this (hex)")
    s.add_argument(
        "--manifest", help="partition manifest (cosmicai partition): a job reads its partitions' rows, refusing a changed source"
    )
    s.add_argument(
        "--partitions",
        nargs="+",
        help="a job: these partitions of the manifest with one engine, each written to --predictions-dir "
        "(NAME.parquet, NAME.json), then --record; partitions already done with the same data, model and settings are reused",
    )
    s.add_argument("--job", help="the job's name (job_00003, with --partitions)")
    s.add_argument("--predictions-dir", help="where a job's partitions' predictions and timings go (with --partitions)")
    s.add_argument("--record", help="the job's record, written when all its partitions are done (with --partitions)")
    s.set_defaults(fn=_infer)
