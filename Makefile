# Set-up, the demo run, tests and benchmarks. Every target creates the virtualenv first if needed.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

# torch/torchvision: the pair that installs and imports together on x86_64 here (see README).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench bench-scaling clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml standins/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_PINS)
	$(VENV)/bin/pip install --quiet -e ".[workflow,lambda,test]" -e ./standins
	touch $@

demo: setup
	snakemake --profile profiles/local

test: setup
	pytest -q

bench: setup
	cosmicai bench --output results/bench/bench.json

bench-scaling: setup
	cosmicai bench --scaling --output results/bench/scaling.json

clean:
	rm -rf results logs benchmarks .snakemake
