# `make book` builds the rendered book; `make test` runs every test. Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test lab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build --warningiserror --nitpick --keep-going book
	@echo "The book is at book/_build/html/index.html"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --nbval

lab: $(STAMP)
	$(BIN)/jupyter lab book/chapters

clean:
	rm -rf book/_build $(VENV)
