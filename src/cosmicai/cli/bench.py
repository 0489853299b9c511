"""The benchmark command: the CAI method against this project's engines."""

from __future__ import annotations

import argparse

from cosmicai.engines.base import DEVICES


def _bench(a: argparse.Namespace) -> None:
    if a.gpu:
        from cosmicai.bench.gpu import run_gpu_bench

        run_gpu_bench(a.output, a.checkpoint)
        return
    if a.scaling:
        from cosmicai.bench.scaling import run_scaling

        run_scaling(a.checkpoint, a.output, sizes=a.sizes)
        return
    from cosmicai.bench.engines import run_bench

    result = run_bench(a.n, a.checkpoint, a.batch_size, a.device, a.rounds, a.variants, a.output, memory=not a.no_memory)
    if a.calibration:
        from cosmicai.planning.calibration import from_bench, write

        write(
            a.calibration, from_bench(result, f"`cosmicai bench` on {result['rows']} rows, {result['threads']} threads, {result['device']}")
        )


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("bench", help="benchmark the CAI method against this project's engines, side by side")
    s.add_argument("--n", type=int, default=4096, help="synthetic rows to infer")
    s.add_argument("--checkpoint", help="default: the demo model if trained, else random weights")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--device", choices=DEVICES, default="auto")
    s.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is reported")
    s.add_argument("--variants", nargs="+", help="subset of variants (default: all for the device)")
    s.add_argument("--no-memory", action="store_true", help="skip the 100/200 MiB peak-RSS runs")
    s.add_argument(
        "--gpu",
        action="store_true",
        help="instead: the GPU engines and the local profile on 12.6 GiB (make bench-gpu); one line and exit 0 without CUDA",
    )
    s.add_argument("--scaling", action="store_true", help="instead: the local pipeline on three sizes, time vs size")
    s.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000], help="rows per scaling run")
    s.add_argument("--output", help="JSON file for the results")
    s.add_argument("--calibration", help="also write a calibration file for `cosmicai plan --calibration` from the results")
    s.set_defaults(fn=_bench)
