# MedLSDM: `make demo` and `make test` create .venv (PyTorch first, then the package) and run the
# demo (the bundled model on the bundled example map) or the test suite.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch before MONAI, so that pip keeps this build (CPU or your CUDA one) instead of pulling another
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/medlsdm demo -o medlsdm-demo

test: $(VENV)/.installed
	$(PY) -m pytest Testing -q

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
