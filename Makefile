# Two commands on a fresh machine:  make demo  and  make test.
# Both create (or reuse) the virtualenv in $(VENV) and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.advgrid-installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# test-only reference implementation; its declared pins conflict with MLflow's, and
	# at run time it needs only torch, numpy, scipy and tqdm (installed above)
	$(BIN)/python -m pip install --quiet --no-deps torchattacks
	touch $(STAMP)

demo: venv
	$(BIN)/advgrid run examples/quickstart.yaml

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# Debian's chromium + chromedriver for the HTML report's browser test (no-op when present)
	.ci/install-chromium
	# Debian's full Fashion-MNIST for the tests on real data (no-op when present)
	.ci/install-datasets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf .advgrid
