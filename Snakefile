# cosmicai: AstroMAE photometric-redshift inference, partitioned, on local / Slurm / AWS Lambda.
# The Snakefile only wires: configuration, the rule files, and the default target.
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/infer.smk"
include: "rules/report.smk"
include: "rules/plan.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
