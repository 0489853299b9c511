"""Data commands: synthetic data, partitioning, importing CAI files, merging predictions."""

from __future__ import annotations

import argparse


def _synth(a: argparse.Namespace) -> None:
    from cosmicai.data.synth import synthesize

    synthesize(a.output, a.n, seed=a.seed, size=a.size, labelled=not a.unlabelled)


def _partition(a: argparse.Namespace) -> None:
    from cosmicai.data.partition import write_partitions

    plan = write_partitions(a.data, a.outdir, a.partition_mb, a.manifest)
    print(f"{plan['rows']} rows -> {len(plan['partitions'])} partitions of <= {a.partition_mb} MiB in {a.outdir}")


def _import_pt(a: argparse.Namespace) -> None:
    from cosmicai.data.import_cai import import_pt

    n = import_pt(a.data, a.output, id_start=a.id_start)
    print(f"imported {n} rows into {a.output} (object ids {a.id_start}..{a.id_start + n - 1} assigned)")


def _merge(a: argparse.Namespace) -> None:
    from cosmicai.data.merge import merge_predictions

    n = merge_predictions(a.manifest, a.predictions_dir, a.output)
    print(f"merged {n} rows into {a.output}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("synth", help="write synthetic SDSS-like galaxies with known redshift")
    s.add_argument("output")
    s.add_argument("--n", type=int, default=10000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=32, help="image side in pixels (SDSS cutouts: 64)")
    s.add_argument("--unlabelled", action="store_true", help="omit the redshift dataset")
    s.set_defaults(fn=_synth)
    s = sub.add_parser("partition", help="split a dataset into partitions with a manifest")
    s.add_argument("data")
    s.add_argument("--partition-mb", type=float, required=True)
    s.add_argument("--outdir", required=True)
    s.add_argument("--manifest", required=True)
    s.set_defaults(fn=_partition)
    s = sub.add_parser("import-pt", help="import a CAI TensorDataset .pt file as an HDF5 dataset (no pickled code runs)")
    s.add_argument("data", help="torch.save'd TensorDataset of (images, magnitudes, redshifts)")
    s.add_argument("output", help=".h5 dataset to write")
    s.add_argument("--id-start", type=int, default=0, help="first object id assigned (ids are row index + this)")
    s.set_defaults(fn=_import_pt)
    s = sub.add_parser("merge", help="merge per-partition predictions, checking every row")
    s.add_argument("--manifest", required=True)
    s.add_argument("--predictions-dir", required=True)
    s.add_argument("--output", required=True)
    s.set_defaults(fn=_merge)
