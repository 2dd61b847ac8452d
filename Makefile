# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv and install the project (with its test extras) on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test check install lock apps bench clean

# constraints.txt pins every package to the version the tests were run with (the console's
# SVG snapshots depend on Textual's exact rendering); `make lock` refreshes it on purpose.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/facets

test: check
	$(PY) -m pytest -q

# Lint, format and type checks; zero findings is the bar (configured in pyproject.toml).
check: $(STAMP)
	$(VENV)/bin/ruff check runtime console tests bench sample_apps
	$(VENV)/bin/ruff format --check runtime console tests bench sample_apps
	$(VENV)/bin/mypy

# Resolve the newest versions pyproject.toml allows in a scratch venv and write them down.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	{ sed -n '1,3p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .lock-venv
	@echo "constraints.txt refreshed: review 'git diff constraints.txt', then make test"

bench: $(STAMP)
	$(PY) bench/run.py

apps: $(STAMP)
	$(PY) sample_apps/build.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .lock-venv
