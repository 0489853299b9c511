"""Model commands: demo training, checkpoint conversion, ONNX export, int8 quantization."""

from __future__ import annotations

import argparse
import json

from cosmicai.engines.base import RUNTIMES


def _train(a: argparse.Namespace) -> None:
    from cosmicai.model.train import train

    stats = train(a.data, a.output, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed, max_minutes=a.max_minutes)
    print(json.dumps(stats))


def _convert_checkpoint(a: argparse.Namespace) -> None:
    from cosmicai.data.import_cai import convert_checkpoint

    n = convert_checkpoint(a.model, a.output)
    print(f"wrote {n} tensors to {a.output}")


def _export_onnx(a: argparse.Namespace) -> None:
    from cosmicai.engines.onnx_engine import export_onnx

    export_onnx(a.checkpoint, a.output)


def _quantize(a: argparse.Namespace) -> None:
    from cosmicai.int8_gate import BOUNDS, gate_line, prepare_int8, run_reads

    bounds = {"d_sigma_nmad": a.max_d_sigma_nmad, "d_outlier_frac": a.max_d_outlier_frac}
    _, report = prepare_int8(
        a.graph,
        run_reads(a.manifest, a.data),
        a.output,
        a.gate_report,
        a.runtime,
        a.threads,
        {**BOUNDS, **{k: v for k, v in bounds.items() if v is not None}},
    )
    print(gate_line(report))


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("train", help="train the AstroMAE architecture on a labelled dataset")
    s.add_argument("data")
    s.add_argument("--output", required=True, help=".safetensors checkpoint to write")
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    s.set_defaults(fn=_train)
    s = sub.add_parser("convert-checkpoint", help="convert the original pickled AstroMAE model to .safetensors (no pickled code runs)")
    s.add_argument("model", help="whole pickled model, e.g. Mixed_Inception_z_VITAE_Base_Img_Full_New_Full.pt")
    s.add_argument("output", help=".safetensors checkpoint to write")
    s.set_defaults(fn=_convert_checkpoint)
    s = sub.add_parser("export-onnx", help="export a checkpoint as an ONNX graph for the CPU runtimes")
    s.add_argument("checkpoint")
    s.add_argument("--output", required=True, help=".onnx file to write")
    s.set_defaults(fn=_export_onnx)
    s = sub.add_parser(
        "quantize",
        help="int8 graph of an exported fp32 graph, calibrated on a sample of the data, checked by the accuracy gate against fp32",
    )
    s.add_argument("graph", help="the fp32 ONNX graph (cosmicai export-onnx)")
    s.add_argument("data", nargs="?", help="the dataset to calibrate on (path or s3:// URI); or --manifest")
    s.add_argument("--manifest", help="partition manifest: calibrate on a sample of its partitions")
    s.add_argument("--output", required=True, help="int8 .onnx to write (only when the gate passes)")
    s.add_argument("--gate-report", help="JSON report of the accuracy gate (for the run summary)")
    s.add_argument(
        "--runtime", choices=[r for r in RUNTIMES if r != "torch"], default="auto", help="the runtime the gate runs both graphs in"
    )
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--max-d-sigma-nmad", type=float, default=None, help="gate bound on int8 minus fp32 sigma_NMAD (default 0.002)")
    s.add_argument("--max-d-outlier-frac", type=float, default=None, help="gate bound on int8 minus fp32 outlier fraction (default 0.005)")
    s.set_defaults(fn=_quantize)
