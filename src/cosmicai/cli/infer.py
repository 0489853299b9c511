"""The inference commands: one partition through one engine, or through a group job's engine service."""

from __future__ import annotations

import argparse
from pathlib import Path

from cosmicai.errors import CosmicaiError


def _infer(a: argparse.Namespace) -> None:
    try:
        t = _infer_one(a)
    except CosmicaiError as exc:
        from cosmicai.serve import ServiceLost

        if a.failure_record and not isinstance(exc, ServiceLost):  # a retry's resource functions read it: bad input is not retried bigger
            from cosmicai.atomic import write_json

            write_json(a.failure_record, {"partition": a.partition, "retryable": False, "error": str(exc)})
        raise
    if a.failure_record:
        Path(a.failure_record).unlink(missing_ok=True)
    print(
        f"{t['partition']}: {t['rows']} rows, {t['samples_per_s']:.0f} samples/s on {t['device']} ({t['precision']}), peak RSS {t['peak_rss_mb']:.0f} MB"
    )


def _infer_one(a: argparse.Namespace) -> dict:
    from cosmicai.data.integrity import partition_read

    if bool(a.manifest) == bool(a.data) or bool(a.manifest) != bool(a.partition):
        raise CosmicaiError("cosmicai infer", "give either a dataset file or --manifest M --partition NAME")
    target = partition_read(a.manifest, a.partition) if a.manifest else a.data
    if a.server:
        from cosmicai.serve import ask

        if isinstance(target, str) or not target.sha256:  # the group service reads partition files (partition_copy)
            raise CosmicaiError(a.manifest or a.data, "--server needs a manifest of copied partitions (partition_copy: true)")
        reply = ask(
            a.server,
            {
                "partition": target.uri,
                "output": a.output,
                "sidecar": a.sidecar,
                "sha256": target.sha256,
                "batch_size": a.batch_size,
                "on_invalid": a.on_invalid,
            },
        )
        if not reply["ok"]:
            where, _, why = reply["error"].partition(": ")
            if reply["retryable"]:
                raise RuntimeError(reply["error"])  # a crash in the service: a traceback-worthy failure, retried
            raise CosmicaiError(where, why)
        return reply["timings"]
    from cosmicai.infer import run_infer

    if not a.checkpoint:
        raise CosmicaiError(a.partition or a.data, "--checkpoint is needed (or --server)")
    return run_infer(
        target,
        a.checkpoint,
        a.output,
        a.sidecar,
        a.batch_size,
        a.device,
        a.precision,
        a.on_invalid,
        a.compile,
        a.threads,
        sha256=a.sha256,
        runtime=a.runtime,
        onnx=a.onnx,
    )


def _serve(a: argparse.Namespace) -> None:
    from cosmicai.serve import serve

    serve(
        a.address,
        {
            "checkpoint": a.checkpoint,
            "device": a.device,
            "precision": a.precision,
            "runtime": a.runtime,
            "compile": a.compile,
            "threads": a.threads,
            "onnx": a.onnx,
        },
    )


def _engine_args(s: argparse.ArgumentParser, server: bool = False) -> None:
    s.add_argument("--checkpoint", required=not server, help="model checkpoint" + (" (not with --server)" if server else ""))
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--precision", choices=("fp32", "bf16", "tf32", "fp16"), default="fp32")
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores allotted)")
    s.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnxruntime", "openvino"),
        default="auto",
        help="auto: on CPU OpenVINO when installed, else ONNX Runtime (fp32); PyTorch on CUDA",
    )
    s.add_argument("--onnx", help="exported ONNX graph of the checkpoint, for the CPU runtimes (default: export and cache)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("infer", help="predict redshifts for one partition (or a whole dataset file)")
    s.add_argument("data", nargs="?", help="a whole dataset file (path or s3:// URI); or use --manifest and --partition")
    _engine_args(s, server=True)
    s.add_argument("--output", required=True, help="predictions .parquet")
    s.add_argument("--sidecar", help="timings .json (default: OUTPUT with .json)")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--on-invalid", choices=("fail", "flag"), default="fail")
    s.add_argument(
        "--server", help="address file of a running `cosmicai serve`: infer there, with its loaded engine (engine options ignored)"
    )
    s.add_argument("--failure-record", help="on bad input write this JSON (read when sizing a retry); removed on success")
    s.add_argument("--sha256", help="refuse the dataset file unless its sha256 is this (hex)")
    s.add_argument("--manifest", help="partition manifest (cosmicai partition): read the partition's rows, refusing a changed source")
    s.add_argument("--partition", help="partition name in the manifest (part_00007)")
    s.set_defaults(fn=_infer)

    s = sub.add_parser(
        "serve", help="load an engine once and infer the partitions that `cosmicai infer --server` sends (a group job's service)"
    )
    s.add_argument("--address", required=True, help="JSON file to publish the service's address in")
    _engine_args(s)
    s.set_defaults(fn=_serve)
