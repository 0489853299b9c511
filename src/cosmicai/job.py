"""A job: the consecutive partitions that one inference job infers (`inference.partitions_per_job`).

The workflow's DAG has one job per group of partitions, not per partition, so 10,486 partitions of a 1 TiB
dataset make hundreds of jobs, and a job pays its start-up (interpreter, imports, model load, a
Slurm allocation) once for many partitions. Each partition still has its own outputs:

- `{predictions_dir}/{name}.parquet`, then `{predictions_dir}/{name}.json` (its timings, written
  last: its presence commits the partition). The sidecar's `key` names what produced the
  predictions (the source's identity and row range, the model file, the engine settings).
- When every partition of the job is done, the job writes its record,
  `{predictions_dir}/jobs/{job}.json`: the list of its partitions' sidecars. The record is
  the job's only output as Snakemake sees it, and what the report rules read.

A rerun of a job (after a failure, a kill or a timeout) reuses every partition whose sidecar
carries the same key and infers only the others; a changed model, source or engine setting
changes the key, so nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosmicai.atomic import write_json
from cosmicai.errors import CosmicaiError

if TYPE_CHECKING:
    from cosmicai.data.integrity import PartitionRead

JOB_DIR = "jobs"
# partitions_per_job: auto puts this many inference jobs in the workflow at most (Snakemake spends
# ~1.3 ms of CPU per job building the DAG, and more scheduling and finishing it).
MAX_AUTO_JOBS = 500


def job_name(index: int) -> str:
    return f"job_{index:05d}"


def per_job(setting: int | str, n_partitions: int) -> int:
    """Partitions per inference job: the setting, or for `auto` as many as keep MAX_AUTO_JOBS jobs at most."""
    if setting == "auto":
        return max(1, -(-n_partitions // MAX_AUTO_JOBS))
    return int(setting)


def job_count(n_partitions: int, per_job: int) -> int:
    return -(-n_partitions // per_job)


def job_index(job: str) -> int:
    return int(job.rsplit("_", 1)[1])


def part_paths(predictions_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """A partition's predictions and its sidecar (timings and key)."""
    d = Path(predictions_dir)
    return d / f"{name}.parquet", d / f"{name}.json"


def record_path(predictions_dir: str | os.PathLike, job: str) -> Path:
    return Path(predictions_dir) / JOB_DIR / f"{job}.json"


def file_identity(path: str | os.PathLike | None) -> dict | None:
    """What identifies a local model file for reuse: its absolute path, size and modification time."""
    if path is None:
        return None
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def digest(**fields: Any) -> str:
    """A short digest of what produces a partition's predictions (JSON-serialisable fields)."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def reuse_key(kind: str, read: PartitionRead, model: dict | None, **settings: Any) -> str:
    """A partition's reuse key: where it ran (`kind`), its data (source identity or copy, row range), the model file's
    identity (`file_identity`) and the settings that shape its predictions."""
    source = read.source or {"uri": read.uri, "sha256": read.sha256}
    return digest(kind=kind, source=source, start=read.start, stop=read.stop, model=model, **settings)


def finished(predictions_dir: str | os.PathLike, name: str, key: str) -> dict | None:
    """The sidecar of partition `name` if it is done with this key (its predictions present), else None."""
    parquet, sidecar = part_paths(predictions_dir, name)
    try:
        timings = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(timings, dict) or timings.get("key") != key or not parquet.exists():
        return None
    return timings


class JobLedger:
    """One job's bookkeeping, the same for every backend: which partitions an earlier attempt finished with the
    same reuse key (reused), which are still to do, each one's outputs, and the job's record once all are done.

    `run_job` (local and Slurm) and `LambdaJob` (Lambda) differ only in how a partition is inferred.
    """

    def __init__(
        self, job: str, reads: list[PartitionRead], keys: dict[str, str], predictions_dir: str | os.PathLike, record: str | os.PathLike
    ) -> None:
        self.job, self.reads, self.keys = job, reads, keys
        self.predictions_dir, self.record = Path(predictions_dir), Path(record)
        self.sidecars: dict[str, dict | None] = {r.name: finished(predictions_dir, r.name, keys[r.name]) for r in reads}
        self.reused = [name for name, timings in self.sidecars.items() if timings is not None]  # by an earlier attempt

    @property
    def todo(self) -> list[PartitionRead]:
        """The partitions still to infer (not reused), in order."""
        return [r for r in self.reads if self.sidecars[r.name] is None]

    def outputs(self, name: str) -> tuple[Path, Path]:
        """Partition `name`'s predictions and sidecar."""
        return part_paths(self.predictions_dir, name)

    def done(self, name: str, timings: dict) -> None:
        """Partition `name` is finished: its sidecar (with this job's key) is on disk."""
        self.sidecars[name] = timings

    def commit(self, name: str, timings: dict) -> None:
        """Write partition `name`'s sidecar with its key, last (its presence commits the partition), and mark it done."""
        timings.update(key=self.keys[name], job=self.job)
        write_json(self.outputs(name)[1], timings)
        self.done(name, timings)

    def write_record(self) -> list[dict]:
        """The job's record: its partitions' sidecars in partition order, and which were reused; all must be done."""
        timings = [self.sidecars[r.name] for r in self.reads]
        missing = [r.name for r, t in zip(self.reads, timings) if t is None]
        if missing:
            raise CosmicaiError(self.record, f"not written: partition {missing[0]} of {self.job} is not done")
        # compact (json's C encoder): a run writes hundreds of records, read by programs only
        write_json(self.record, {"job": self.job, "partitions": timings, "reused": self.reused}, indent=None)
        return timings  # type: ignore[return-value]


def load_sidecars(paths: list[str | os.PathLike]) -> list[dict]:
    """Per-partition timings from sidecars or job records (a record expands to its partitions)."""
    runs: list[dict] = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except FileNotFoundError:
            raise CosmicaiError(p, "no such file") from None
        except (OSError, ValueError) as exc:
            raise CosmicaiError(p, f"not a readable timings file ({exc})") from None
        if isinstance(data, dict) and "partitions" in data and "job" in data:
            runs.extend(data["partitions"])
        else:
            runs.append(data)
    return runs
