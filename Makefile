# edgelearn developer entry points. `make demo` and `make test` work on a fresh machine with Python + pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned to a CPU build where one is offered (a local wheel here); set
# TORCH_SPEC / TORCH_PIP_ARGS to pick another build, e.g. TORCH_PIP_ARGS="--index-url <your CPU index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# The demo needs the package alone; tests add the dev tools and Ray (the distributed executor's extra).
TEST_EXTRAS ?= dev,ray

.PHONY: install install-dev demo test test-avx2 lint clean

install: $(VENV)/.installed-base
install-dev: $(VENV)/.installed-$(TEST_EXTRAS)

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".$(if $(filter base,$*),,[$*])"
	@$(PY) -c "import torch; torch.version.cuda and not torch.cuda.is_available() and print('warning: a CUDA build of torch is installed on a machine without a GPU')"
	touch $@

demo: install
	$(VENV)/bin/edgelearn demo

test: install-dev
	$(PY) -m pytest -p no:cacheprovider

# The kernel-sensitive tests again with the kernels an AVX2-only x86-64 CPU runs: ATen's (ATEN_CPU_CAPABILITY)
# and oneDNN's convolutions (ONEDNN_MAX_CPU_ISA; the ATen variable alone leaves oneDNN on AVX-512, and it was
# oneDNN's AVX2 convolutions that broke a tolerance tuned on AVX-512). Both work on any x86-64 CPU.
test-avx2: install-dev
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -p no:cacheprovider -m kernel_sensitive

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache
