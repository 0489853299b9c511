"""The `cosmicai` command line: one subcommand per workflow step, each a thin call into the package."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

from cosmicai.errors import CosmicaiError

Command = Callable[[argparse.Namespace], None]


def _synth(a: argparse.Namespace) -> None:
    from cosmicai.synth import synthesize

    synthesize(a.output, a.n, seed=a.seed, size=a.size, labelled=not a.unlabelled)


def _train(a: argparse.Namespace) -> None:
    from cosmicai.train import train

    stats = train(a.data, a.output, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed, max_minutes=a.max_minutes)
    print(json.dumps(stats))


def _partition(a: argparse.Namespace) -> None:
    from cosmicai.partition import write_partitions

    plan = write_partitions(a.data, a.outdir, a.partition_mb, a.manifest)
    print(f"{plan['rows']} rows -> {len(plan['partitions'])} partitions of <= {a.partition_mb} MiB in {a.outdir}")


def _infer(a: argparse.Namespace) -> None:
    from cosmicai.infer import run_infer

    t = run_infer(a.partition, a.checkpoint, a.output, a.sidecar, a.batch_size, a.device, a.precision, a.on_invalid, a.compile, a.threads)
    print(f"{t['partition']}: {t['rows']} rows, {t['samples_per_s']:.0f} samples/s on {t['device']} ({t['precision']}), peak RSS {t['peak_rss_mb']:.0f} MB")


def _merge(a: argparse.Namespace) -> None:
    from cosmicai.merge import merge_predictions

    n = merge_predictions(a.manifest, a.predictions_dir, a.output)
    print(f"merged {n} rows into {a.output}")


def _metrics(a: argparse.Namespace) -> None:
    from cosmicai.metrics import compute_metrics

    result = compute_metrics(a.predictions, a.output, a.by_zspec, a.by_rmag)
    print(json.dumps(result["metrics"] if result["metrics"] else result["reason"], indent=2))


def _plots(a: argparse.Namespace) -> None:
    from cosmicai import plots

    plots.plot_z_pred_vs_spec(a.predictions, f"{a.outdir}/z_pred_vs_z_spec.png")
    plots.plot_delta_vs_z(a.predictions, f"{a.outdir}/delta_vs_z_spec.png")
    plots.plot_partition_timings(a.sidecars, f"{a.outdir}/partition_timings.png")


def _summarize(a: argparse.Namespace) -> None:
    from cosmicai.summary import write_summaries

    rates = json.loads(a.rates) if a.rates else {}
    summary, cost = write_summaries(a.sidecars, a.backend, rates, a.run_output, a.cost_output)
    print(f"{summary['rows']} rows in {summary['wall_s']:.1f} s wall ({summary['samples_per_s']:.0f} samples/s), cost ${cost['total_usd']:.4f}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="cosmicai", description="AstroMAE photometric-redshift inference at scale")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write synthetic SDSS-like galaxies with known redshift")
    s.add_argument("output")
    s.add_argument("--n", type=int, default=10000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=32, help="image side in pixels (SDSS cutouts: 64)")
    s.add_argument("--unlabelled", action="store_true", help="omit the redshift dataset")
    s.set_defaults(fn=_synth)

    s = sub.add_parser("train", help="train the AstroMAE architecture on a labelled dataset")
    s.add_argument("data")
    s.add_argument("--output", required=True, help=".safetensors checkpoint to write")
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    s.set_defaults(fn=_train)

    s = sub.add_parser("partition", help="split a dataset into partitions with a manifest")
    s.add_argument("data")
    s.add_argument("--partition-mb", type=float, required=True)
    s.add_argument("--outdir", required=True)
    s.add_argument("--manifest", required=True)
    s.set_defaults(fn=_partition)

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
    s.set_defaults(fn=_infer)

    s = sub.add_parser("merge", help="merge per-partition predictions, checking every row")
    s.add_argument("--manifest", required=True)
    s.add_argument("--predictions-dir", required=True)
    s.add_argument("--output", required=True)
    s.set_defaults(fn=_merge)

    s = sub.add_parser("metrics", help="photo-z metrics of a predictions table")
    s.add_argument("predictions")
    s.add_argument("--output", required=True)
    s.add_argument("--by-zspec", help="CSV of metrics binned by z_spec")
    s.add_argument("--by-rmag", help="CSV of metrics binned by r magnitude")
    s.set_defaults(fn=_metrics)

    s = sub.add_parser("plots", help="diagnostic PNG plots")
    s.add_argument("predictions")
    s.add_argument("--sidecars", nargs="+", required=True)
    s.add_argument("--outdir", required=True)
    s.set_defaults(fn=_plots)

    s = sub.add_parser("summarize", help="run summary and cost summary from the timing sidecars")
    s.add_argument("--backend", default=None, help="local, slurm or lambda (default: detected from the sidecars)")
    s.add_argument("--sidecars", nargs="+", required=True)
    s.add_argument("--rates", help="JSON object of prices, e.g. '{\"cpu_hour_usd\": 0.02}'")
    s.add_argument("--run-output", required=True)
    s.add_argument("--cost-output", required=True)
    s.set_defaults(fn=_summarize)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; user errors become one line on stderr and exit status 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "sidecar", "unset") is None and args.command == "infer":
            args.sidecar = str(args.output).rsplit(".", 1)[0] + ".json"
        args.fn(args)
    except CosmicaiError as exc:
        print(f"cosmicai {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cosmicai {args.command}: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
