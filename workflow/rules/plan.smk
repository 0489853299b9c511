# Planning: the dry-run's estimate block, the run's calibration, the plan's scaling plot and the
# report's tables. The model lives in cosmicai.planning.plan and cosmicai.planning.calibration.
import logging

from snakemake.logging import logger
from snakemake.settings.enums import Quietness

from cosmicai.planning import calibration
from cosmicai.planning.plan import estimate, format_dry_run, workflow_settings


def plan_context() -> dict:
    """What a plan of this invocation needs: the config's plan-relevant blocks, the profile's jobs and cores."""
    return {
        "config": {k: config[k] for k in ("partition_mb", "inference", "lambda", "cost")},
        "jobs": workflow.resource_settings.nodes,
        "cores": workflow.resource_settings.cores,
    }


def profile_backend() -> str:
    """The plan backend of this invocation: lambda from the config; otherwise slurm(-gpu) under a cluster executor, or local."""
    if config["backend"] == "lambda":
        return "lambda"
    # Snakemake forces threaded job handling exactly when the intended executor is not local (api.py),
    # and only that setting survives into a dry-run, whose executor is the dryrun pseudo-executor.
    if not workflow.execution_settings.use_threads:
        return "local"
    asked = {**(workflow.resource_settings.default_resources or {}), **workflow.resource_settings.overwrite_resources.get("infer_partition", {})}
    return "slurm-gpu" if {"gres", "gpu", "gpus"} & set(asked) else "slurm"


# summarize_run puts the estimate beside the actuals; it gets this invocation's jobs and cores from
# the environment, as a param or in its command they would rerun the summaries whenever they change.
os.environ["COSMICAI_PLAN_CONTEXT"] = json.dumps(plan_context())


class PlanBlock(logging.Handler):
    """In a dry-run, after Snakemake's last job-stats table, log the plan's one summary block."""

    def __init__(self) -> None:
        super().__init__()
        self.stats_seen = 0
        self.done = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.done or getattr(record, "event", None) != "run_info" or not workflow.dryrun:
            return
        self.stats_seen += 1
        # A dry-run logs the stats twice (before and after the job list), once when quiet about both.
        once = workflow.output_settings.quiet == {Quietness.RULES, Quietness.PROGRESS}
        if self.stats_seen < (1 if once else 2):
            return
        self.done = True
        backend = profile_backend()
        try:
            ctx = plan_context()
            s = workflow_settings(ctx["config"], backend, N_ROWS * ROW_BYTES, ctx["jobs"], ctx["cores"])
            block = format_dry_run(estimate(s, calibration.load()), record.stats, backend)
        except CosmicaiError as exc:
            block = f"cosmicai plan: no estimate: {exc}"
        logger.info(block)


if workflow.output_settings.dryrun:
    logging.getLogger("snakemake.logging").addHandler(PlanBlock())


localrules:
    calibrate_run,
    plot_plan,
    report_tables,


rule calibrate_run:
    input:
        timings=expand(f"{R}/predictions/{{part}}.json", part=PARTS),
        run=f"{R}/summary/run_summary.json",
        cost=f"{R}/summary/cost_summary.json",  # after the estimate, which used the calibration as it was
    output:
        f"{R}/calibration.json",
    log:
        "logs/calibrate_run.log",
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai calibrate --sidecars {input.timings} --run-summary {input.run} --output {output} > {log} 2>&1"


rule plot_plan:
    input:
        calibration=f"{R}/calibration.json",
        run=f"{R}/summary/run_summary.json",
        cost=f"{R}/summary/cost_summary.json",
    output:
        report(f"{R}/plots/plan_scaling.png", caption="../report/plan_scaling.rst", category="Plan"),
    log:
        "logs/plot_plan.log",
    params:
        mb=config["partition_mb"],
        lam_mb=config["lambda"]["memory_mb"],
        configfile=f"{workflow.basedir}/../config/config.yaml",
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai plan --compare --partition-mb {params.mb} --memory-mb {params.lam_mb} --calibration {input.calibration}"
        " --configfile {params.configfile} --plot {output} --run-summary {input.run} --cost-summary {input.cost} > {log} 2>&1"


rule report_tables:
    input:
        metrics=f"{R}/metrics/metrics.json",
        run=f"{R}/summary/run_summary.json",
        cost=f"{R}/summary/cost_summary.json",
    output:
        metrics=report(f"{R}/report/metrics.html", caption="../report/metrics.rst", category="Metrics"),
        run=report(f"{R}/report/run_summary.html", caption="../report/run_summary.rst", category="Run"),
        cost=report(f"{R}/report/cost_summary.html", caption="../report/cost_summary.rst", category="Run"),
        plan=report(f"{R}/report/plan_vs_actual.html", caption="../report/plan_vs_actual.rst", category="Plan"),
    log:
        "logs/report_tables.log",
    params:
        outdir=lambda wc, output: os.path.dirname(output.metrics),
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai report-tables --metrics {input.metrics} --run-summary {input.run} --cost-summary {input.cost}"
        " --outdir {params.outdir} > {log} 2>&1"
