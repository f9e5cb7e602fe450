# Two commands do everything on a fresh machine:
#   make run   - set up .venv, fetch + verify MNIST, train the book's recipe, evaluate
#   make test  - set up .venv with dev extras, lint, format-check, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(shell date +%Y%m%d-%H%M%S)
RUN_DIR ?= runs/book-$(STAMP)

.PHONY: run test lint reproduce accuracy speed clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/deepconvnet data
	$(BIN)/deepconvnet train --out $(RUN_DIR)
	$(BIN)/deepconvnet evaluate $(RUN_DIR)
	@echo "Run saved in $(RUN_DIR)"

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

reproduce: $(VENV)/.installed
	$(BIN)/python bench/reproduce_book.py

accuracy: $(VENV)/.installed
	$(BIN)/python bench/accuracy.py

speed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/speed.py --threads 2

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
