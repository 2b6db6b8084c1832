# Two commands a new user needs:  `make run`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[test,dev]'
	@touch $@

# Run the default demo host in the foreground (Ctrl-C stops it cleanly).
run: $(VENV)/.installed
	$(BIN)/twistd -n --pidfile= salvus

# The whole suite; pytest's last line gives the counts passed and failed.
test: $(VENV)/.installed
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var build *.egg-info
