"""Benchmark (not a test): thousands of partitions through `snakemake --profile profiles/lambda` on the stand-ins.

The stand-ins run in their scale mode (deploy/lambda/standin-scale.yaml: the real handler without the
model compute). Run from the repository root (the workflow, profiles and stand-ins are the checkout's):

    make bench-lambda-scale            # 2,000 partitions, on a contiguous then on a chunked dataset
    python -m cosmicai.bench.lambda_scale --partitions 500
    python -m cosmicai.bench.lambda_scale --partitions-per-job 16 --drop-metadata --output results/bench/k16.json

Measures peak invocations in flight (the stand-in's busiest moment), sustained invocations per second
(partitions / span of the inference jobs, from their timing sidecars; and the rate at which invocations
began in the function, which the function's hold does not dilute), peak memory of Snakemake and every
process it starts (the process tree's RSS, sampled every 0.2 s), the stand-in's own peak RSS, rows
lost (dataset rows missing from the merged predictions), and where the CPU went: Snakemake with every
process it started, the Lambda stand-in and the S3 server, in seconds and per invocation, with the
load average at the start and end (the stand-ins share this machine's cores). Partitioning and the
ONNX export run first in a separate, unmeasured Snakemake run. Prints the table row and writes JSON.
A work directory keeps its dataset between runs: one per layout and partition count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import yaml

from cosmicai.bench.scaling import repository_root

KEY, SECRET, BUCKET = "bench-key", "bench-secret", "cosmicai"  # the bucket standin-scale.yaml gives the function


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TreeSampler:
    """Peak summed RSS of a process and all its descendants, and the process's own CPU seconds over time, sampled on a thread."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid, self.interval_s, self.peak_mb, self.peak_processes = pid, interval_s, 0.0, 0
        self.own_cpu: list[tuple[float, float]] = []  # (time.time(), the root's user + system seconds, its children not counted)
        self.main_cpu: list[tuple[float, float]] = []  # (time.time(), the root's main thread's seconds: Snakemake's scheduler loop)
        self.tree_cpu: list[tuple[float, float]] = []  # (time.time(), the seconds of the root and every process it started)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            try:
                now = time.time()
                self.own_cpu.append((now, cpu_s(root)))
                self.main_cpu.append((now, thread_cpu_s(self.pid, self.pid)))
            except (psutil.NoSuchProcess, OSError):
                return
            self.tree_cpu.append((now, tree_cpu_s(procs)))
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self.peak_processes = max(self.peak_processes, len(procs))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def own_cpu_between(self, start: float, end: float, main_thread: bool = False, tree: bool = False) -> float:
        """The root's (its main thread's, or its whole tree's) CPU seconds between two times (the nearest samples inside them)."""
        series = self.tree_cpu if tree else self.main_cpu if main_thread else self.own_cpu
        inside = [c for t, c in series if start <= t <= end]
        return inside[-1] - inside[0] if len(inside) > 1 else 0.0


def tree_cpu_s(procs: list[psutil.Process]) -> float:
    """CPU seconds of live processes and of the children each has reaped (every process counted once)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:  # ended between the listing and now: its parent's children_* count it once reaped
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def thread_cpu_s(pid: int, tid: int) -> float:
    """CPU seconds (user + system) of one thread of a process, from /proc (clock ticks: 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_inputs(
    work: Path, partitions: int, rows_per_partition: int, layout: str = "contiguous", chunk_rows: int = 10
) -> tuple[Path, Path, float]:
    """A synthetic dataset of exactly `partitions` partitions, a random checkpoint, and the partition_mb for them.

    layout: `synth` keeps what `cosmicai synth` writes (256-row, 5 MiB chunks: a 5-row partition's read
    fetches whole chunks); `contiguous` is what `cosmicai rechunk` gives such small partitions (the
    README's advice), so a function reads about its own rows; `chunked` has chunks of `chunk_rows` rows
    (many small chunks: a partition's read touches one or two, and the file's chunk index is large).
    """
    from cosmicai.data.dataset import ROW_BYTES
    from cosmicai.data.partition import partition_count
    from cosmicai.data.rechunk import rechunk
    from cosmicai.data.synth import synthesize

    rows = partitions * rows_per_partition
    synth, checkpoint = work / "data-synth.h5", work / "random.safetensors"
    dataset = synth if layout == "synth" else work / (f"data-chunked{chunk_rows}.h5" if layout == "chunked" else f"data-{layout}.h5")
    if not synth.exists():
        synthesize(synth, rows, seed=11, size=32)
    if not dataset.exists():
        rechunk(synth, dataset, layout=layout, chunk_rows=chunk_rows if layout == "chunked" else None)
    if not checkpoint.exists():
        import torch

        from cosmicai.model.astromae import build_model
        from cosmicai.model.checkpoint import save_checkpoint

        torch.manual_seed(0)
        save_checkpoint(build_model(), checkpoint)
    mb = rows_per_partition * ROW_BYTES / 2**20 * (1 + 1e-6)
    assert partition_count(rows, mb) == partitions, (partition_count(rows, mb), partitions)
    return dataset, checkpoint, mb


def snakemake(repo: Path, work: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """`snakemake --profile profiles/lambda` on the bench's config in `work`, its output appended to snakemake.log."""
    cmd = [
        "snakemake",
        *args,
        "-s",
        str(repo / "workflow" / "Snakefile"),
        "--profile",
        str(repo / "profiles" / "lambda"),
        "--configfile",
        str(work / "bench-config.yaml"),
        str(repo / "config" / "lambda.yaml"),
    ]
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=(work / "snakemake.log").open("ab"), stderr=subprocess.STDOUT)


def cpu_s(proc: psutil.Process) -> float:
    """CPU seconds a live process has used (user + system)."""
    t = proc.cpu_times()
    return t.user + t.system


def wait_tree(run: subprocess.Popen, standin: psutil.Process, standin_limit_mb: float) -> tuple[float, float]:
    """Wait for the run; its CPU seconds with every descendant it waited for (wait4's rusage), and the stand-in's peak RSS.

    A stand-in past `standin_limit_mb` ends the run (SIGTERM to Snakemake) rather than the machine.
    """
    standin_peak = 0.0
    while True:
        pid, status, usage = os.wait4(run.pid, os.WNOHANG)
        if pid:
            run.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, standin_peak
        standin_peak = max(standin_peak, standin.memory_info().rss / 2**20)
        if standin_peak > standin_limit_mb:
            print(f"stand-in RSS {standin_peak:.0f} MB passed --standin-limit-mb {standin_limit_mb:.0f}: stopping the run", file=sys.stderr)
            run.terminate()
            standin_limit_mb = float("inf")
        time.sleep(0.2)


def profile(pid: int, output: Path) -> subprocess.Popen:
    """py-spy sampling a process's threads at 100 Hz without pausing it (its own CPU is py-spy's, not the process's)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--nonblocking", "--rate", "100", "--format", "raw", "--output", str(output)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def clean(work: Path) -> None:
    """Remove what an earlier run left (its outputs, logs and S3 objects; not the partitions or the model), so every partition is invoked."""
    for path in [*(work / "results").glob("*"), work / "logs", work / "aws"]:
        if path.name not in ("partitions", "model"):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partitions", type=int, default=2000)
    p.add_argument("--rows-per-partition", type=int, default=5)
    p.add_argument(
        "--workdir",
        type=Path,
        help="where the dataset, the stand-ins and the run live (default: results/bench/lambda_scale_LAYOUT_PARTITIONS)",
    )
    p.add_argument("--output", type=Path, default=Path("results/bench/lambda_scale.json"))
    p.add_argument("--partitions-per-job", type=int, help="inference.partitions_per_job (default: config/lambda.yaml's)")
    p.add_argument("--drop-metadata", action="store_true", help="run Snakemake with --drop-metadata")
    p.add_argument(
        "--layout", choices=("contiguous", "chunked", "synth"), default="contiguous", help="the dataset's HDF5 layout (see make_inputs)"
    )
    p.add_argument("--chunk-rows", type=int, default=10, help="rows per chunk of --layout chunked")
    p.add_argument("--standin-limit-mb", type=float, default=8192, help="stop the run if the stand-in's RSS passes this")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="PATH",
        help="sample Snakemake's own process, every thread, with py-spy (the dev extra) into PATH (raw, collapsed stacks)",
    )
    a = p.parse_args(argv)
    repo = repository_root()
    work = (a.workdir or Path(f"results/bench/lambda_scale_{a.layout}_{a.partitions}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    dataset, checkpoint, mb = make_inputs(work, a.partitions, a.rows_per_partition, a.layout, a.chunk_rows)
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config.update(dataset=str(dataset), checkpoint=str(checkpoint), partition_mb=mb)
    config["lambda"].update(bucket=BUCKET, prefix="cosmicai", function_name="cosmicai-infer", timeout_s=300, memory_mb=2048)
    (work / "bench-config.yaml").write_text(yaml.safe_dump(config))

    s3_port, lambda_port = free_port(), free_port()
    aws = {
        "LOCAL_AWS_DIR": str(work / "aws"),
        "LOCAL_AWS_S3_PORT": str(s3_port),
        "LOCAL_AWS_LAMBDA_PORT": str(lambda_port),
        "LOCAL_AWS_KEY": KEY,
        "LOCAL_AWS_SECRET": SECRET,
        "LOCAL_AWS_BUCKETS": BUCKET,
        "LOCAL_AWS_PYTHON": sys.executable,
        "LOCAL_AWS_FUNCTIONS": str(repo / "deploy" / "lambda" / "standin-scale.yaml"),
        "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo / "standins")]),
    }
    env = {
        **os.environ,
        **aws,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{lambda_port}",
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    clean(work)
    script = str(repo / "scripts" / "local-aws.sh")
    subprocess.run(["bash", script, "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        prep = snakemake(repo, work, env, "results/partitions/manifest.json", "results/model/astromae.onnx")
        if prep.wait():
            print(f"preparation failed: see {work / 'snakemake.log'}", file=sys.stderr)
            return 1
        standin = psutil.Process(int((work / "aws" / "lambda.pid").read_text()))
        rclone = psutil.Process(int((work / "aws" / "s3.pid").read_text()))
        extra = ["--config", f"inference={{partitions_per_job: {a.partitions_per_job}}}"] if a.partitions_per_job else []
        extra += ["--drop-metadata"] if a.drop_metadata else []
        cpu_before = {"standin": cpu_s(standin), "s3": cpu_s(rclone)}
        load_before, t = os.getloadavg()[0], time.perf_counter()
        run = snakemake(repo, work, env, *extra)
        spy = profile(run.pid, a.py_spy) if a.py_spy else None
        sampler = TreeSampler(run.pid)
        run_cpu, standin_peak = wait_tree(run, standin, a.standin_limit_mb)
        sampler.stop()
        wall = time.perf_counter() - t
        if spy is not None:
            spy.wait(timeout=60)  # it stops when Snakemake exits
        cpu = {"snakemake_tree": run_cpu, "standin": cpu_s(standin) - cpu_before["standin"], "s3": cpu_s(rclone) - cpu_before["s3"]}
        load_after = os.getloadavg()[0]
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{lambda_port}/_standin/stats").read())["functions"]["cosmicai-infer"]
    finally:
        subprocess.run(["bash", script, "stop"], env=env, stdout=subprocess.DEVNULL)
    if run.returncode:
        print(f"workflow failed ({run.returncode}): see {work / 'snakemake.log'}", file=sys.stderr)
        return 1
    config_k = yaml.safe_load((repo / "config" / "lambda.yaml").read_text())["inference"]["partitions_per_job"]
    k = a.partitions_per_job or config_k
    sidecars = [json.loads(f.read_text()) for f in (work / "results" / "predictions").glob("part_*.json")]
    span = max(s["ended_at"] for s in sidecars) - min(s["started_at"] for s in sidecars)
    starts = sorted(s["remote_started_at"] for s in sidecars)  # when each invocation began in the function
    # The dispatch: from the first invocation sent to the last one begun, Snakemake's own process (scheduler, executor
    # plugin, dispatcher threads) sends every invocation; the report rules (its children) run after.
    first_sent, last_begun = min(s["started_at"] for s in sidecars), starts[-1]
    dispatch_cpu = sampler.own_cpu_between(first_sent, last_begun)
    # From the first invocation sent to the last one ended: every invocation's sending and its response's handling
    # (the dispatch window above misses the responses that come after the last invocation began).
    invoking_cpu = sampler.own_cpu_between(first_sent, max(s["ended_at"] for s in sidecars))
    main_thread_cpu = sampler.own_cpu_between(first_sent, max(s["ended_at"] for s in sidecars), main_thread=True)
    tree_invoking_cpu = sampler.own_cpu_between(first_sent, max(s["ended_at"] for s in sidecars), tree=True)
    begun = sum(first_sent <= t <= last_begun for t in starts)
    main_cpu = sampler.own_cpu[-1][1] if sampler.own_cpu else 0.0
    rows_in = a.partitions * a.rows_per_partition
    rows_out = pq.read_metadata(work / "results" / "predictions.parquet").num_rows
    result = {
        "partitions": a.partitions,
        "partitions_per_job": k,
        "inference_jobs": -(-a.partitions // k),
        "drop_metadata": a.drop_metadata,
        "layout": a.layout,
        "chunk_rows": a.chunk_rows if a.layout == "chunked" else None,
        "rows": rows_in,
        "invocations": stats["invocations"],
        "peak_in_flight": stats["peak_concurrency"],
        "throttles": stats["throttles"],
        "inference_span_s": round(span, 2),
        "invocations_per_s": round(len(sidecars) / span, 1),
        "invocations_started_per_s": round((len(starts) - 1) / (starts[-1] - starts[0]), 1),
        "workflow_wall_s": round(wall, 1),
        "peak_rss_snakemake_tree_mb": round(sampler.peak_mb),
        "peak_processes": sampler.peak_processes,
        "peak_rss_standin_mb": round(standin_peak),
        "rows_lost": rows_in - rows_out,
        "cpu_s": {name: round(v, 1) for name, v in cpu.items()},  # the workflow run's span: Snakemake's tree, the stand-ins
        "cpu_ms_per_invocation": {name: round(v / a.partitions * 1000, 1) for name, v in cpu.items()},
        # Snakemake's tree split: its own process (start-up, DAG, scheduling, the executor plugin and its dispatcher)
        # and the processes it started (the local rules: merge, metrics, plots, report), per invocation.
        "cpu_ms_per_invocation_snakemake": {
            "own_process": round(main_cpu / a.partitions * 1000, 1),
            "started_processes": round((cpu["snakemake_tree"] - main_cpu) / a.partitions * 1000, 1),
            # while invocations were being sent: what one more invocation costs the submitting host
            "own_process_while_dispatching": round(dispatch_cpu / max(1, begun) * 1000, 2),
            "own_process_while_invoking": round(invoking_cpu / len(sidecars) * 1000, 2),
            # the same window, every process Snakemake started included: the "Snakemake, the executor and everything it starts"
            "tree_while_invoking": round(tree_invoking_cpu / len(sidecars) * 1000, 2),
            # of which the invoking threads (each invocation's staging, Invoke call, response checks: its thread's CPU)
            "invoking_threads": round(sum(s["lambda"].get("host_cpu_s", 0.0) for s in sidecars) / len(sidecars) * 1000, 2),
            # and Snakemake's main thread (its scheduler: each job's submission, bookkeeping, metadata, log lines)
            "main_thread_while_invoking": round(main_thread_cpu / len(sidecars) * 1000, 2),
        },
        "dispatch_window_s": round(last_begun - first_sent, 1),
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],  # at the run's start and end (2 cores, shared)
    }
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
