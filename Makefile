# One-command set-up, lab, release and tests. See README.md.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# nbgrader and nbclient start `alembic` and kernels by name: the environment's come first.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# The course installs from PyPI alone: local pip configuration (find-links, extra indexes) is
# ignored so that torch and torchvision are PyPI's matched builds. Override to use a mirror:
#   make PIP_ENV= PIP_ARGS='--index-url https://mirror.example/simple'
PIP_ENV  ?= PIP_CONFIG_FILE=/dev/null
PIP_ARGS ?= --isolated
PIP      := $(PIP_ENV) $(PY) -m pip install $(PIP_ARGS) --disable-pip-version-check
LAB_ARGS ?=
PYTEST_ARGS ?=
# The student edition (what a course hands to students): make edition [EDITION=dir] [EDITION_ARGS=--force]
EDITION ?= build/student-edition
EDITION_ARGS ?=

.PHONY: env lab test lint release release-check edition clean-env

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the course environment into $(VENV) (first time: about 5 GB, 1-3 minutes)..."
	$(PIP) --quiet -r requirements.txt -c constraints.txt
	$(PIP) --quiet --no-deps -r requirements-nodeps.txt
	$(PIP) --quiet --no-deps --no-build-isolation -e .
	@touch $@
	@echo "environment ready: $(VENV)"

# Ctrl-C stops the server without asking (answer_yes); root (containers) needs --allow-root.
lab: env
	$(VENV)/bin/jupyter lab --notebook-dir=chapters --ServerApp.answer_yes=True \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

lint: env
	$(VENV)/bin/ruff check grader tests

release: env
	$(PY) -m grader release

release-check: env
	$(PY) -m grader release --check

edition: env
	$(PY) -m grader edition $(EDITION) --zip $(EDITION_ARGS)

test: env
	$(VENV)/bin/ruff check grader tests
	$(PY) -m grader release --check
	GRADER_FAST=1 GRADER_STRICT=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
