# Two entry points for a fresh clone: `make demo` (set up, run the pipeline on the built-in example) and
# `make test` (set up, run the test suite). Both build a local virtual environment in $(VENV).
#
# torch, pinned to $(TORCH_VERSION): without a GPU we first ask pip for the CPU build ($(TORCH_CPU)), so that
# resolving the project's open `torch>=2.2` does not pull the CUDA build with its nvidia-* packages.
# pip finds the CPU build only where its configuration serves it (a wheel directory or PyTorch's CPU index);
# public PyPI has no +cpu builds, and then we say so and install PyPI's default build of the same version.
# With `nvidia-smi` present we install the default (CUDA) build. Override with e.g. `make TORCH_VERSION=2.5.1`.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_CPU ?= torch==$(TORCH_VERSION)+cpu
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup demo test browser readme clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing the default (CUDA) torch build torch==$(TORCH_VERSION)"; \
		$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	elif $(PY) -m pip install --quiet "$(TORCH_CPU)"; then \
		echo "no GPU: installed the CPU torch build $(TORCH_CPU)"; \
	else \
		echo "no GPU, and pip's configured indexes do not serve $(TORCH_CPU) (public PyPI has no +cpu builds):"; \
		echo "installing PyPI's default torch==$(TORCH_VERSION). It runs on the CPU, but on Linux it is the CUDA"; \
		echo "build (a 527 MB wheel plus the nvidia-* CUDA packages). To avoid that, add PyTorch's CPU wheel"; \
		echo "index to your pip configuration, then make clean and make again."; \
		$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	fi
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/bioaug demo --out demo-out

test: setup
	$(PY) -m pytest -q

# The system's Chromium and its driver for the browser tests (tests/test_study_browser.py, which skip without
# them); apt runs only when one is missing, so reruns are fast. Nothing is downloaded at test time.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "browser tests: $$(chromium --version 2>/dev/null) already installed"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "no apt-get: install chromium and chromedriver yourself, or the browser tests skip"; \
	fi

# Regenerate the README's synopsis blocks from the command line's options and defaults (tests/test_cli.py fails
# when they drift).
readme: setup
	$(PY) -c 'import pathlib; from bioaug.cli import render_synopses; p = pathlib.Path("README.md"); p.write_text(render_synopses(p.read_text()))'

clean:
	rm -rf $(VENV) demo-out .pytest_cache
