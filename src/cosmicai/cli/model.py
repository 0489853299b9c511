"""Model commands: demo training, checkpoint conversion, ONNX export."""

from __future__ import annotations

import argparse
import json


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
