# Set-up, the demo run, tests, lint and benchmarks. Every target creates the virtualenv first if needed.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

# torch/torchvision: the pair that installs and imports together on x86_64 here. This is the one place
# the pins live (docs/getting-started.md); on aarch64: make setup TORCH_PINS="torch==2.9.1 torchvision==0.24.1".
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-all lint fmt bench bench-scaling bench-lambda-scale bench-gpu bench-s3-read bench-lambda-s3 clean

# Everything a new user needs for the demo and the tests: the package with all its extras
# (pyproject.toml: torch, cpu, workflow, plots, lambda, dev) and the local AWS stand-ins.
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml standins/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_PINS)
	$(VENV)/bin/pip install --quiet -e ".[all]" -e ./standins
	touch $@

demo: setup
	snakemake --profile profiles/local

# The fast loop: unit, integration and the end-to-end runs that matter (local, Slurm, Lambda stand-in
# workflows); tests marked slow (load, fault runs, the other Slurm/Lambda scenarios) are left out.
test: setup
	pytest -q -m "not slow"

# Everything, the slow tests included: what CI (.ci/run) runs.
test-all: setup
	pytest -q

# Check mode (CI): ruff, ruff format --check, snakefmt --check, snakemake --lint, copy-paste and import cycles, the docs site (mkdocs build --strict).
lint: setup
	bash scripts/lint.sh

# Apply the formatters and ruff's safe fixes.
fmt: setup
	ruff format src tests standins workflow/scripts
	ruff check --fix src tests standins workflow/scripts
	snakefmt workflow/Snakefile workflow/rules

bench: setup
	cosmicai bench --output results/bench/bench.json

bench-scaling: setup
	cosmicai bench --scaling --output results/bench/scaling.json

# 2,000 partitions through profiles/lambda on the stand-ins' scale mode (deploy/lambda/standin-scale.yaml); figures in docs/performance.md.
bench-lambda-scale: setup
	python -m cosmicai.bench.lambda_scale --partitions 2000 --layout contiguous --output results/bench/lambda_scale.json
	python -m cosmicai.bench.lambda_scale --partitions 2000 --layout chunked --chunk-rows 10 --output results/bench/lambda_scale_chunked.json

# On a CUDA machine: GPU engines vs the CAI method, then the local profile on 12.6 GiB (docs/performance.md).
bench-gpu: setup
	cosmicai bench --gpu --output results/bench/gpu.json

# Reading one 100 MiB row range from S3 (rclone serve s3 here) in four layouts, against one download (docs/performance.md).
bench-s3-read: setup
	python -m cosmicai.bench.s3_read --workdir results/bench/s3-read --mib 100

# The submitting host's traffic when profiles/lambda runs on a 100 MiB dataset already in S3 (the stand-ins);
# CHECKPOINT: the model (the demo's, after `make demo`).
CHECKPOINT ?= results/model/demo.safetensors
bench-lambda-s3: setup
	python -m cosmicai.bench.lambda_s3 --workdir results/bench/lambda-s3 --mib 100 --partition-mb 10 --checkpoint $(CHECKPOINT)

clean:
	rm -rf results logs benchmarks .snakemake
