"""Data commands: synthetic data, partitioning, importing CAI files, merging predictions."""

from __future__ import annotations

import argparse
from pathlib import Path


def _synth(a: argparse.Namespace) -> None:
    from cosmicai.data.synth import synthesize

    synthesize(a.output, a.n, seed=a.seed, size=a.size, labelled=not a.unlabelled)


def _partition(a: argparse.Namespace) -> None:
    from cosmicai.data.partition import write_partitions

    manifest = write_partitions(a.data, a.outdir, a.partition_mb, a.manifest, copy=a.copy)
    kind = f"files in {a.outdir or Path(a.manifest).parent}" if a.copy else "row ranges (no data copied)"
    print(
        f"{manifest['rows']} rows -> {len(manifest['partitions'])} partitions of <= {a.partition_mb} MiB as {kind}; manifest {a.manifest}"
    )


def _rechunk(a: argparse.Namespace) -> None:
    from cosmicai.data.rechunk import rechunk

    chunk_rows = rechunk(a.data, a.output, a.partition_mb, a.layout)
    print(f"wrote {a.output}: {a.layout} layout" + (f", chunks of {chunk_rows} rows" if chunk_rows else ""))


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
    s = sub.add_parser("partition", help="split a dataset into partitions: a manifest of row ranges (no data copied)")
    s.add_argument("data", help="HDF5 dataset: a path or s3://BUCKET/KEY")
    s.add_argument("--partition-mb", type=float, required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--copy", action="store_true", help="also write each partition as its own file (a slow or non-shared source)")
    s.add_argument("--outdir", help="where --copy writes partition files (default: the manifest's folder)")
    s.set_defaults(fn=_partition)
    s = sub.add_parser("rechunk", help="rewrite a dataset in the layout that reads fastest by row range (S3 especially)")
    s.add_argument("data", help="HDF5 dataset: a path or s3://BUCKET/KEY")
    s.add_argument("output", help=".h5 file to write (local)")
    s.add_argument("--partition-mb", type=float, default=25, help="the partition size it will be read in (sets the chunk rows)")
    s.add_argument("--layout", choices=("chunked", "contiguous"), default="chunked")
    s.set_defaults(fn=_rechunk)
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
