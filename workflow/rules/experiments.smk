# The experiment grid (config `experiments`: a grid file, config/experiments/*.yaml): every cell runs
# as its own sub-run of this workflow, with its own results folder, under profiles/<backend> (the
# backend this invocation's profile names); then one table and the plots of measured against planned.
# The work is done by `cosmicai experiments` (cosmicai.planning.experiments explains the choice); the
# rule passes it this invocation's whole config, so each cell is the same run on fewer rows.
from cosmicai.planning.experiments import load_grid

GRID = load_grid(config["experiments"])
GRID_DIR = f"{R}/experiments/{GRID['name']}"


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
        " --snakefile {params.snakefile:q} --profiles {params.profiles:q} > {log} 2>&1"
