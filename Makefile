# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
VENV_MINT := .venv-mint
STAMP := $(VENV)/.setup-stamp
STAMP_MINT := $(VENV_MINT)/.setup-stamp
BIN := $(VENV)/bin

.PHONY: setup lint test test-unit test-integration demo bench lock clean

setup: $(STAMP) $(STAMP_MINT)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

$(STAMP_MINT): requirements-mint.lock
	test -x $(VENV_MINT)/bin/python || $(PYTHON) -m venv $(VENV_MINT)
	$(VENV_MINT)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-mint.lock
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup
	$(BIN)/python -m pytest tests/unit -q -p no:cacheprovider
	$(BIN)/python -m pytest tests/integration -q -p no:cacheprovider

test-unit: setup
	$(BIN)/python -m pytest tests/unit -q -p no:cacheprovider

test-integration: setup
	$(BIN)/python -m pytest tests/integration -q -p no:cacheprovider

demo: setup
	$(BIN)/python -m scripts.demo

bench: setup
	$(BIN)/python -m bench.proxy_bench

# Re-pin after changing pyproject.toml dependencies.
lock:
	$(BIN)/python -m pip freeze --exclude-editable --exclude routstr-core > requirements.lock

clean:
	rm -rf $(VENV) $(VENV_MINT) .mypy_cache .ruff_cache .pytest_cache
