# Two entry points for a fresh clone: `make demo` (set up, run the pipeline on the built-in example) and
# `make test` (set up, run the test suite). Both build a local virtual environment in $(VENV).
#
# torch: without a GPU we install the pinned CPU build ($(TORCH_CPU)) first, so that resolving the project's
# open `torch>=2.2` does not pull a multi-GB CUDA build. With `nvidia-smi` present, pip picks the default
# (CUDA) build. Override with e.g. `make test TORCH_CPU="torch==2.5.1"`.

PYTHON ?= python3
VENV ?= .venv
TORCH_CPU ?= torch==2.13.0
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup demo test browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing the default (CUDA) torch build"; \
		$(PY) -m pip install --quiet "torch>=2.2"; \
	else \
		echo "no GPU: installing the CPU torch build $(TORCH_CPU)"; \
		$(PY) -m pip install --quiet "$(TORCH_CPU)"; \
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

clean:
	rm -rf $(VENV) demo-out .pytest_cache
