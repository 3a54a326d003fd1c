# `make book` builds the rendered book; `make test` runs every test. Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: book test lab clean system-deps outputs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,test,trunks]"
	touch $@

# Programs the tests drive: node runs the calculator's JavaScript, chromium the browser tests.
system-deps:
	@command -v node >/dev/null && command -v chromium >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "Please install node and chromium" >&2; exit 1; }; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs chromium; }

book: $(STAMP)
	$(BIN)/jupyter-book build --warningiserror --nitpick --keep-going book
	@echo "The book is at book/_build/html/index.html"

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --nbval

lab: $(STAMP)
	$(BIN)/jupyter lab book/chapters

clean:
	rm -rf book/_build $(VENV)

# The committed outputs of every notebook, re-created in fast mode (pytest --nbval compares them).
outputs: $(STAMP)
	$(BIN)/python -c "from fcnlib import book; print(book.refresh_outputs())"
