# Planning: the run's plan context (a declared file), the plan block every invocation prints, the run's
# calibration, the scaling plot and the report's tables. The model lives in cosmicai.planning.
#
# Nothing here reaches another rule except through a declared file: write_plan_context writes what a
# plan of this run needs (the backend the profile's config file names, the config's plan blocks, the
# cores given, the calibration named) to results/plan/context.json, an input of summarize_run and
# plot_plan. The backend comes from the config (`backend:` set by config/slurm.yaml, slurm-gpu.yaml,
# lambda.yaml, which each profile names), not from guessing the executor out of Snakemake's internals.
#
# The plan block is printed while the Snakefile is read (plain Python at the top level of a rule file,
# a supported part of every Snakefile), in the main Snakemake process only (`workflow.is_main_process`,
# so not again in every Slurm job's log): in a dry-run it is the plan, in a run the estimate the run
# summary will compare against. Snakemake's hooks do not fit: `onstart` is skipped in dry-runs and no
# hook sees the job list, and a handler on Snakemake's logger depends on its log record format.
from cosmicai.planning import calibration as plan_calibration
from cosmicai.planning.context import PLAN_KEYS, workflow_settings
from cosmicai.planning.formatting import format_dry_run
from cosmicai.planning.estimate import estimate
from cosmicai.planning.recommend import workflow_recommendation
from cosmicai.planning.units import parse_duration, parse_money


def given_cores():
    """The cores this invocation was given (--cores or the profile's), or None (workflow.cores raises when unset)."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


PLAN_CONTEXT = {
    "backend": config["backend"],
    "config": {k: config[k] for k in PLAN_KEYS},
    "cores": given_cores(),
    "calibration": config["plan_calibration"],
}


def plan_block() -> str:
    """This run's plan (and, with plan_recommend, the recommendation) as the block a dry-run prints."""
    try:
        cals = plan_calibration.load(config["plan_calibration"] or None)
        plan = estimate(workflow_settings(PLAN_CONTEXT, N_ROWS * ROW_BYTES), cals)
        rec = ""
        if config["plan_recommend"]:
            deadline = (
                parse_duration(config["plan_deadline"], "plan_deadline")
                if config["plan_deadline"]
                else None
            )
            budget = (
                parse_money(config["plan_budget"], "plan_budget")
                if config["plan_budget"]
                else None
            )
            rec = workflow_recommendation(plan, cals, deadline, budget)
        return format_dry_run(plan, config["backend"], rec)
    except CosmicaiError as exc:
        return f"cosmicai plan: no estimate: {exc}"


if (
    workflow.is_main_process and not config["experiments"]
):  # a grid prints its own cells' plans (experiments.smk)
    print(plan_block(), flush=True)


def check_run_settings() -> None:
    """A run (not a dry-run: Snakemake skips `onstart`, which calls this, there) under the lambda backend needs a bucket."""
    if config["backend"] == "lambda" and not config["lambda"]["bucket"]:
        raise WorkflowError(
            "config: lambda.bucket is required to run on Lambda (a dry-run needs none): --config 'lambda={bucket: my-bucket}'"
        )


localrules:
    write_plan_context,
    calibrate_run,
    plot_plan,
    report_tables,


rule write_plan_context:
    output:
        f"{R}/plan/context.json",
    log:
        "logs/write_plan_context.log",
    params:
        context=json.dumps(PLAN_CONTEXT, sort_keys=True),
    shell:
        "printf '%s\\n' {params.context:q} > {output:q} 2> {log:q}"


rule calibrate_run:
    input:
        timings=job_records(),
        run=f"{R}/summary/run_summary.json",
        cost=f"{R}/summary/cost_summary.json",  # after the estimate, which used the calibration the run named
    output:
        f"{R}/calibration.json",
    log:
        "logs/calibrate_run.log",
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai calibrate --sidecars {input.timings:q} --run-summary {input.run:q} --output {output:q} > {log:q} 2>&1"


rule plot_plan:
    input:
        calibration=f"{R}/calibration.json",
        context=f"{R}/plan/context.json",
        run=f"{R}/summary/run_summary.json",
        cost=f"{R}/summary/cost_summary.json",
    output:
        report(
            f"{R}/plots/plan_scaling.png",
            caption="../report/plan_scaling.rst",
            category="Plan",
        ),
    log:
        "logs/plot_plan.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        # int8 runs on CPUs only: no GPU backend to compare
        backends=["--backend", "local,slurm,lambda"] if INT8 else ["--compare"],
    shell:
        "cosmicai plan {params.backends:q} --context {input.context:q} --calibration {input.calibration:q}"
        " --plot {output:q} --run-summary {input.run:q} --cost-summary {input.cost:q} > {log:q} 2>&1"


rule report_tables:
    input:
        metrics=f"{R}/metrics/metrics.json",
        run=f"{R}/summary/run_summary.json",
        cost=f"{R}/summary/cost_summary.json",
    output:
        metrics=report(
            f"{R}/report/metrics.html",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
        run=report(
            f"{R}/report/run_summary.html",
            caption="../report/run_summary.rst",
            category="Run",
        ),
        cost=report(
            f"{R}/report/cost_summary.html",
            caption="../report/cost_summary.rst",
            category="Run",
        ),
        plan=report(
            f"{R}/report/plan_vs_actual.html",
            caption="../report/plan_vs_actual.rst",
            category="Plan",
        ),
    log:
        "logs/report_tables.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        outdir=lambda wc, output: os.path.dirname(output.metrics),
    shell:
        "cosmicai report-tables --metrics {input.metrics:q} --run-summary {input.run:q} --cost-summary {input.cost:q}"
        " --outdir {params.outdir:q} > {log:q} 2>&1"
