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
    from cosmicai.integrity import manifest_sha256

    sha256 = manifest_sha256(a.manifest, a.partition) if a.manifest else a.sha256
    t = run_infer(a.partition, a.checkpoint, a.output, a.sidecar, a.batch_size, a.device, a.precision, a.on_invalid, a.compile, a.threads,
                  sha256=sha256, runtime=a.runtime, onnx=a.onnx)
    print(f"{t['partition']}: {t['rows']} rows, {t['samples_per_s']:.0f} samples/s on {t['device']} ({t['precision']}), peak RSS {t['peak_rss_mb']:.0f} MB")


def _export_onnx(a: argparse.Namespace) -> None:
    from cosmicai.engine_onnx import export_onnx

    export_onnx(a.checkpoint, a.output)


def _bench(a: argparse.Namespace) -> None:
    if a.scaling:
        from cosmicai.bench_scaling import run_scaling

        run_scaling(a.checkpoint, a.output, sizes=a.sizes)
        return
    from cosmicai.bench import run_bench

    result = run_bench(a.n, a.checkpoint, a.batch_size, a.device, a.rounds, a.variants, a.output, memory=not a.no_memory)
    if a.calibration:
        from cosmicai.calibration import from_bench, write

        write(a.calibration, from_bench(result, f"`cosmicai bench` on {result['rows']} rows, {result['threads']} threads, {result['device']}"))


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
    plan = json.loads(a.plan) if a.plan else None
    summary, cost = write_summaries(a.sidecars, a.backend, rates, a.run_output, a.cost_output, a.manifest, a.predictions_dir, plan)
    print(f"{summary['rows']} rows in {summary['wall_s']:.1f} s wall ({summary['samples_per_s']:.0f} samples/s), cost ${cost['total_usd']:.4f}")
    pva = cost.get("plan_vs_actual")
    if pva and "error" in pva:
        print(f"plan: no estimate: {pva['error']}", file=sys.stderr)
    elif pva:
        print(f"plan: {pva['rows'][0]['estimate']:.1f} s estimated ({pva['backend']}), actual / estimate = {pva['time_ratio']:.2f}")


def _plan(a: argparse.Namespace) -> None:
    from cosmicai.plan import run_plan

    print(run_plan(a))


def _calibrate(a: argparse.Namespace) -> None:
    from cosmicai.calibration import calibrate_run, persistent_path

    name, cal = calibrate_run(a.sidecars, a.run_summary, a.output, persist=not a.no_persist)
    where = f" and {persistent_path()}" if not a.no_persist else ""
    print(f"{name}: {cal.samples_per_s:.0f} samples/s at {cal.threads:g} threads, {cal.fixed_s:.2f} s fixed + {cal.overhead_s:.2f} s between jobs -> {a.output}{where}")


def _report_tables(a: argparse.Namespace) -> None:
    from cosmicai.report_tables import write_tables

    for path in write_tables(a.metrics, a.run_summary, a.cost_summary, a.outdir):
        print(path)


def _import_pt(a: argparse.Namespace) -> None:
    from cosmicai.import_cai import import_pt

    n = import_pt(a.data, a.output, id_start=a.id_start)
    print(f"imported {n} rows into {a.output} (object ids {a.id_start}..{a.id_start + n - 1} assigned)")


def _convert_checkpoint(a: argparse.Namespace) -> None:
    from cosmicai.import_cai import convert_checkpoint

    n = convert_checkpoint(a.model, a.output)
    print(f"wrote {n} tensors to {a.output}")


def _deploy_lambda(a: argparse.Namespace) -> None:
    from cosmicai.aws.deploy import deploy_lambda

    for line in deploy_lambda(a.configfile, a.image_uri, a.role_arn, a.checkpoint, a.print_policy):
        print(line)


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
    s.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="auto: ONNX Runtime for CPU fp32, OpenVINO for CPU bf16, PyTorch on CUDA")
    s.add_argument("--onnx", help="exported ONNX graph of the checkpoint, for the CPU runtimes (default: export and cache)")
    check = s.add_mutually_exclusive_group()
    check.add_argument("--sha256", help="refuse the partition unless its sha256 is this (hex)")
    check.add_argument("--manifest", help="refuse the partition unless its sha256 is the one this partition manifest records")
    s.set_defaults(fn=_infer)

    s = sub.add_parser("export-onnx", help="export a checkpoint as an ONNX graph for the CPU runtimes")
    s.add_argument("checkpoint")
    s.add_argument("--output", required=True, help=".onnx file to write")
    s.set_defaults(fn=_export_onnx)

    s = sub.add_parser("bench", help="benchmark the CAI method against this project's engines, side by side")
    s.add_argument("--n", type=int, default=4096, help="synthetic rows to infer")
    s.add_argument("--checkpoint", help="default: the demo model if trained, else random weights")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is reported")
    s.add_argument("--variants", nargs="+", help="subset of variants (default: all for the device)")
    s.add_argument("--no-memory", action="store_true", help="skip the 100/200 MiB peak-RSS runs")
    s.add_argument("--scaling", action="store_true", help="instead: the local pipeline on three sizes, time vs size")
    s.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000], help="rows per scaling run")
    s.add_argument("--output", help="JSON file for the results")
    s.add_argument("--calibration", help="also write a calibration file for `cosmicai plan --calibration` from the results")
    s.set_defaults(fn=_bench)

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
    s.add_argument("--manifest", help="partition manifest: record rows in (manifest) and rows out (predictions) per partition")
    s.add_argument("--predictions-dir", help="per-partition predictions (with --manifest)")
    s.add_argument("--plan", help="JSON: put the plan's estimate beside the actuals (keys: config, jobs, cores; see cosmicai.plan.run_estimate)")
    s.set_defaults(fn=_summarize)

    s = sub.add_parser("plan", help="partitions, jobs, wall time and cost of a run on each backend, before running it")
    size = s.add_mutually_exclusive_group()
    size.add_argument("--data-size", help="dataset size of model-ready rows, binary units: 12.6GB, 1TB, 500MB")
    size.add_argument("--rows", type=int, help="instead of --data-size: number of galaxies")
    s.add_argument("--partition-mb", type=float, help="partition size in MiB (default: the config's partition_mb)")
    s.add_argument("--backend", choices=("local", "slurm", "slurm-gpu", "lambda"))
    s.add_argument("--compare", action="store_true", help="every backend side by side")
    s.add_argument("--memory-mb", type=int, help="Lambda memory, 128-10240 MB (default: lambda.memory_mb)")
    s.add_argument("--concurrency", type=int, help="most jobs at once (Lambda default: the account's 1,000)")
    s.add_argument("--architecture", choices=("x86_64", "arm64"), help="Lambda architecture (default: lambda.architecture)")
    s.add_argument("--data-in-s3", action="store_true", help="Lambda: the partitions are already in S3 (no upload from here)")
    s.add_argument("--nodes", type=int, help="Slurm CPU nodes (default 1)")
    s.add_argument("--cores-per-node", type=int, help="Slurm cores per node (default 64)")
    s.add_argument("--gpus", type=int, help="Slurm GPUs, one job each (default 1)")
    s.add_argument("--queue-wait-s", type=float, help="Slurm queue wait before the first job (default 0)")
    s.add_argument("--threads", type=int, help="threads (cores) per job (default: inference.threads)")
    s.add_argument("--cores", type=int, help="local: cores of the machine (default: this one's)")
    s.add_argument("--cpu-hour-usd", type=float, help="price per CPU-hour (default: cost.cpu_hour_usd)")
    s.add_argument("--gpu-hour-usd", type=float, help="price per GPU-hour (default: cost.gpu_hour_usd)")
    s.add_argument("--calibration", help="calibration file (default: the persistent one the workflow updates, over config/calibration.yaml)")
    s.add_argument("--configfile", nargs="+", help="workflow config files, merged in order (default: config/config.yaml)")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--plot", help="PNG of estimated wall time and cost against data size, 1 GB to 1 TB")
    s.add_argument("--run-summary", help="a run's run_summary.json: its rows (without --data-size/--rows); with --plot and --cost-summary, the run marked")
    s.add_argument("--cost-summary", help="the run's cost summary (with --run-summary)")
    s.set_defaults(fn=_plan)

    s = sub.add_parser("calibrate", help="record a run's measured speeds for `cosmicai plan` (the workflow runs this)")
    s.add_argument("--sidecars", nargs="+", required=True, help="the run's per-partition timing .json files")
    s.add_argument("--run-summary", required=True, help="the run's run_summary.json")
    s.add_argument("--output", required=True, help="calibration .json to write (this run's backend only)")
    s.add_argument("--no-persist", action="store_true", help="do not merge it into the persistent calibration")
    s.set_defaults(fn=_calibrate)

    s = sub.add_parser("report-tables", help="HTML tables of the metrics, run and cost summaries and plan-vs-actual, for the report")
    s.add_argument("--metrics", required=True)
    s.add_argument("--run-summary", required=True)
    s.add_argument("--cost-summary", required=True)
    s.add_argument("--outdir", required=True)
    s.set_defaults(fn=_report_tables)

    s = sub.add_parser("import-pt", help="import a CAI TensorDataset .pt file as an HDF5 dataset (no pickled code runs)")
    s.add_argument("data", help="torch.save'd TensorDataset of (images, magnitudes, redshifts)")
    s.add_argument("output", help=".h5 dataset to write")
    s.add_argument("--id-start", type=int, default=0, help="first object id assigned (ids are row index + this)")
    s.set_defaults(fn=_import_pt)

    s = sub.add_parser("convert-checkpoint", help="convert the original pickled AstroMAE model to .safetensors (no pickled code runs)")
    s.add_argument("model", help="whole pickled model, e.g. Mixed_Inception_z_VITAE_Base_Img_Full_New_Full.pt")
    s.add_argument("output", help=".safetensors checkpoint to write")
    s.set_defaults(fn=_convert_checkpoint)

    s = sub.add_parser("deploy-lambda", help="create or update the AWS Lambda function from its image and stage the model in S3")
    s.add_argument("--configfile", nargs="+", default=["config/config.yaml", "config/lambda.yaml"],
                   help="workflow config files whose lambda: block is used, merged in order")
    s.add_argument("--image-uri", help="container image URI (default: lambda.image_uri)")
    s.add_argument("--role-arn", help="execution role ARN (needed to create the function)")
    s.add_argument("--checkpoint", help="checkpoint or .onnx graph to stage in S3 (default: the config's checkpoint, if set)")
    s.add_argument("--print-policy", action="store_true", help="only print the execution role's IAM policy for these settings")
    s.set_defaults(fn=_deploy_lambda)
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
