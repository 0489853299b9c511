"""Sweeps: one plan per combination of data size, partition size, Lambda memory, concurrency, precision and backend."""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

from cosmicai.errors import CosmicaiError
from cosmicai.planning.calibration import Calibration
from cosmicai.planning.estimate import Plan, Settings, estimate

MAX_CELLS = 100_000  # a sweep larger than this is a typo, not a plan


@dataclasses.dataclass(frozen=True)
class Axes:
    """The values to sweep; an empty axis keeps the base settings' value."""

    backends: tuple[str, ...] = ()
    data_bytes: tuple[float, ...] = ()
    partition_mb: tuple[float, ...] = ()
    memory_mb: tuple[int, ...] = ()
    concurrency: tuple[int, ...] = ()
    precision: tuple[str, ...] = ()

    def size(self) -> int:
        """Number of combinations."""
        n = 1
        for axis in dataclasses.astuple(self):
            n *= max(1, len(axis))
        return n


def sweep(base: Settings, axes: Axes, calibrations: dict[str, Calibration]) -> list[Plan]:
    """One plan per combination, in the order of the axes (backend outermost). Lambda memory only varies Lambda
    plans: other backends get one plan per remaining combination, not one per memory size."""
    if axes.size() > MAX_CELLS:
        raise CosmicaiError("plan", f"{axes.size():,} combinations: sweep at most {MAX_CELLS:,}")
    plans = []
    for backend, size, mb, prec, conc in itertools.product(
        axes.backends or (base.backend,),
        axes.data_bytes or (base.data_bytes,),
        axes.partition_mb or (base.partition_mb,),
        axes.precision or (base.precision,),
        axes.concurrency or (base.concurrency,),
    ):
        memories = (axes.memory_mb or (base.memory_mb,)) if backend == "lambda" else (base.memory_mb,)
        for mem in memories:
            s = dataclasses.replace(
                base, backend=backend, data_bytes=size, partition_mb=mb, precision=prec, concurrency=conc, memory_mb=int(mem)
            )
            plans.append(estimate(s, calibrations))
    return plans


def rows(plans: list[Plan]) -> list[dict]:
    """The sweep as records of numbers (one per plan)."""
    return [p.row() for p in plans]


def calibrations_of(plans: list[Plan]) -> list[str]:
    """The distinct calibrations the plans used, each once (a file's header, not a column repeated per row)."""
    return list(dict.fromkeys(p.calibration["label"] for p in plans))


def write_table(plans: list[Plan], path: str | os.PathLike) -> None:
    """The sweep as a table, its format from the file name, the same columns and types in each, the calibration once:
    .csv (a leading `# calibration:` comment line per calibration: pandas.read_csv(path, comment="#")), .json
    ({"calibrations": [...], "rows": [...]}) or .parquet (the calibrations in the file's key-value metadata)."""
    import json

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cosmicai.atomic import atomic_path

    path = Path(path)
    frame = pd.DataFrame(rows(plans))
    kind = path.suffix.lower()
    if kind not in (".csv", ".json", ".parquet"):
        raise CosmicaiError(path, "write a sweep to .csv, .json or .parquet")
    cals = calibrations_of(plans)
    with atomic_path(path) as tmp:
        if kind == ".csv":
            with open(tmp, "w", newline="") as f:
                f.writelines(f"# calibration: {c.replace(chr(10), ' ')}\n" for c in cals)
                frame.to_csv(f, index=False)
        elif kind == ".json":
            Path(tmp).write_text(json.dumps({"calibrations": cals, "rows": json.loads(frame.to_json(orient="records"))}, indent=1))
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            meta = {**(table.schema.metadata or {}), b"cosmicai.calibrations": json.dumps(cals).encode()}
            pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_table(path: str | os.PathLike):
    """A sweep written by write_table, as a pandas DataFrame with the same dtypes whatever the format."""
    import json

    import pandas as pd

    path = Path(path)
    kind = path.suffix.lower()
    if kind == ".csv":
        return pd.read_csv(path, comment="#")
    if kind == ".json":
        frame = pd.DataFrame(json.loads(path.read_text())["rows"])
        empty = [c for c in frame.columns if frame[c].isna().all()]  # all null (NaN written as null): numbers, as in CSV
        return frame.astype({c: float for c in empty})
    return pd.read_parquet(path)
