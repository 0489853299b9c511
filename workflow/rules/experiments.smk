# The experiment grid (config `experiments`: a grid file, config/experiments/*.yaml): every cell runs
# as its own sub-run of this workflow, with its own results folder, under profiles/<backend> (the
# backend this invocation's profile names); then one table and the plots of measured against planned.
# The work is done by `cosmicai experiments` (cosmicai.planning.experiments explains the choice); the
# rule passes it this invocation's whole config, so each cell is the same run on fewer rows.
# Every invocation prints the grid's plan (each cell, the plan-only ones too, and the total) once, in the main
# process: in a dry-run it is the plan of the whole grid.
from cosmicai.planning.experiments import format_grid_plan, load_grid, plan_grid

GRID = load_grid(config["experiments"])
GRID_DIR = f"{R}/experiments/{GRID['name']}"


def grid_plan_block() -> str:
    """The grid's plan as the block a dry-run prints (one line of error instead when it cannot be planned)."""
    try:
        return format_grid_plan(GRID, *plan_grid(GRID, config))
    except CosmicaiError as exc:
        return f"cosmicai plan: no estimate of the grid: {exc}"


if workflow.is_main_process:
    print(grid_plan_block(), flush=True)


localrules:
    run_experiments,


rule run_experiments:
    input:
        grid=config["experiments"],
    output:
        table=f"{GRID_DIR}/table.csv",
        vs=report(
            f"{GRID_DIR}/measured_vs_planned.png",
            caption="../report/plan_scaling.rst",
            category="Experiments",
        ),
        by_size=report(
            f"{GRID_DIR}/wall_cost_by_size.png",
            caption="../report/plan_scaling.rst",
            category="Experiments",
        ),
    log:
        "logs/run_experiments.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        outdir=GRID_DIR,
        config=json.dumps(config, sort_keys=True),
        snakefile=f"{workflow.basedir}/Snakefile",
        profiles=f"{workflow.basedir}/../profiles",
    shell:
        "cosmicai experiments {input.grid:q} --outdir {params.outdir:q} --config-json {params.config:q}"
        " --snakefile {params.snakefile:q} --profiles {params.profiles:q} > {log:q} 2>&1"
