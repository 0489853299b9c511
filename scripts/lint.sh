#!/usr/bin/env bash
# The checks that keep the code base as designed (check mode; `make fmt` applies the formatters).
# Run by .ci/run before the tests and by `make lint`. Each step prints its name; the script fails at the
# end if any step found something, so one run shows every finding.
#   ruff check / ruff format --check   Python lint (rules in pyproject.toml) and formatting
#   snakefmt --check                   the Snakefile and rules' formatting
#   snakemake --lint                   Snakemake's own lints, none unexplained (ALLOWED_SNAKEMAKE_LINTS)
#   pylint duplicate-code, cyclic-import  no copied blocks and no import cycles in src/ (function-level
#                                      imports count: a cycle through a lazy import is still a cycle)
#   docs-config.py --check             the configuration reference (docs/configuration.md) matches the schema
#   mkdocs build --strict              the docs site builds: every link, anchor and page in the nav
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY_PATHS=(src tests standins workflow/scripts)
failed=()

step() {  # step NAME COMMAND...: run it, remember a failure
    echo "== $1"
    if ! "${@:2}"; then failed+=("$1"); fi
}

# Snakemake lints that are accepted, one per line as "rule NAME: MESSAGE" or "snakefile FILE: MESSAGE",
# each with the reason. Anything else snakemake --lint reports fails the check.
ALLOWED_SNAKEMAKE_LINTS=(
    # The folder params name where a job reads or writes many files (the partitions, the predictions, the
    # plots); every profile runs its jobs on one shared filesystem (local, Slurm's shared home, the Lambda
    # invokers run locally), which is the case this lint warns about.
    "rule partition_dataset: Param outdir is a prefix of input or output file but hardcoded"
    # The dataset is a param because it may be an s3:// URI (read in place, not a Snakemake input); a local
    # dataset is also the rule's input, so Snakemake still tracks it.
    "rule partition_dataset: Param dataset is a prefix of input or output file but hardcoded"
    "rule merge_predictions: Param pred_dir is a prefix of input or output file but hardcoded"
    "rule plot_results: Param outdir is a prefix of input or output file but hardcoded"
    "rule summarize_run: Param pred_dir is a prefix of input or output file but hardcoded"
    # plan.smk keeps the functions that build the dry-run's plan block beside the rules that use them.
    "snakefile plan.smk: Mixed rules and functions in same snakefile."
    # write_plan_context runs printf only: no software to pin beyond the shell.
    "rule write_plan_context: Specify a conda environment or container for each rule."
)

snakemake_lint() {
    local dir out found unexplained
    dir=$(mktemp -d)
    out=$(snakemake -s "$PWD/workflow/Snakefile" --directory "$dir" --lint 2>&1)
    rm -rf "$dir"
    # "Lints for rule X (line..." / "Lints for snakefile PATH:" headers, then "    * MESSAGE:" bullets.
    found=$(awk '/^Lints for rule /{ctx="rule " $4}
                 /^Lints for snakefile /{n=split($4, p, "/"); sub(/:$/, "", p[n]); ctx="snakefile " p[n]}
                 /^    \* /{m=$0; sub(/^    \* /, "", m); sub(/:$/, "", m); sub(/ in line [0-9]+\.?$/, "", m); print ctx ": " m}' <<<"$out")
    unexplained=$(grep -vxF -f <(printf '%s\n' "${ALLOWED_SNAKEMAKE_LINTS[@]}") <<<"$found" || true)
    if [[ -n "$unexplained" ]]; then
        echo "$out"
        echo "snakemake --lint: unexplained findings (fix them, or add each to ALLOWED_SNAKEMAKE_LINTS with its reason):"
        echo "$unexplained"
        return 1
    fi
    if [[ -z "$found" ]] && ! grep -q "Congratulations" <<<"$out"; then
        echo "$out"  # neither lints nor a clean bill: snakemake failed to parse the workflow
        return 1
    fi
    echo "snakemake --lint: $(grep -c . <<<"$found") accepted finding(s), none unexplained"
}

step "ruff check" ruff check "${PY_PATHS[@]}"
step "ruff format --check" ruff format --check "${PY_PATHS[@]}"
step "snakefmt --check" snakefmt --check workflow/Snakefile workflow/rules
step "snakemake --lint" snakemake_lint
mapfile -t PACKAGES < <(find src -mindepth 2 -maxdepth 2 -name __init__.py -printf '%h\n' | sort)  # cosmicai and the executor plugin
step "pylint duplicate-code, cyclic-import (src)" pylint --disable=all --enable=duplicate-code,cyclic-import --score=n "${PACKAGES[@]}"
step "docs-config.py --check" python scripts/docs-config.py --check
docs_site() {  # into a temporary folder: the check leaves no site/ behind
    local dir rc
    dir=$(mktemp -d)
    NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$dir"
    rc=$?
    rm -rf "$dir"
    return $rc
}
step "mkdocs build --strict" docs_site

if ((${#failed[@]})); then
    printf 'lint: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "lint: all checks passed"
