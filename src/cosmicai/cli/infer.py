"""The inference command: one partition through one engine."""

from __future__ import annotations

import argparse


def _infer(a: argparse.Namespace) -> None:
    from cosmicai.infer import run_infer
    from cosmicai.data.integrity import manifest_sha256

    sha256 = manifest_sha256(a.manifest, a.partition) if a.manifest else a.sha256
    t = run_infer(a.partition, a.checkpoint, a.output, a.sidecar, a.batch_size, a.device, a.precision, a.on_invalid, a.compile, a.threads,
                  sha256=sha256, runtime=a.runtime, onnx=a.onnx)
    print(f"{t['partition']}: {t['rows']} rows, {t['samples_per_s']:.0f} samples/s on {t['device']} ({t['precision']}), peak RSS {t['peak_rss_mb']:.0f} MB")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("infer", help="predict redshifts for one partition")
    s.add_argument("partition")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--output", required=True, help="predictions .parquet")
    s.add_argument("--sidecar", help="timings .json (default: OUTPUT with .json)")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--precision", choices=("fp32", "bf16", "tf32", "fp16"), default="fp32")
    s.add_argument("--on-invalid", choices=("fail", "flag"), default="fail")
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores allotted)")
    s.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="auto: on CPU OpenVINO when installed, else ONNX Runtime (fp32); PyTorch on CUDA")
    s.add_argument("--onnx", help="exported ONNX graph of the checkpoint, for the CPU runtimes (default: export and cache)")
    check = s.add_mutually_exclusive_group()
    check.add_argument("--sha256", help="refuse the partition unless its sha256 is this (hex)")
    check.add_argument("--manifest", help="refuse the partition unless its sha256 is the one this partition manifest records")
    s.set_defaults(fn=_infer)
