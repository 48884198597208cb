# `make run` and `make test` install what they need first (into .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test test-fast lint bench figure clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the project with its test tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)  ## stylise the default pair (Tübingen x Starry Night) into outputs/<date>/<time>/
	$(BIN)/python -m src.run $(ARGS)

test: $(STAMP)  ## run the whole test suite (two worker processes)
	$(BIN)/python -m pytest -q -n 2 $(ARGS)

test-fast: $(STAMP)  ## the tests not marked slow (about a minute)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" $(ARGS)

lint: $(STAMP)  ## ruff (style, imports, bugbear, pyupgrade) and mypy
	$(BIN)/ruff check src tests
	$(BIN)/mypy

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -not -path './.venv/*' -exec rm -rf {} +

bench: $(STAMP)  ## measure speed and memory (minutes; not a test): outputs/bench/<date-time>/bench.json
	$(BIN)/python -m src.tools.bench $(ARGS)

figure: $(STAMP)  ## README banner from a finished run: make figure RUN=outputs/<date>/<time>
	$(BIN)/python -m src.tools.figure $(RUN) docs/images/readme_banner.png
