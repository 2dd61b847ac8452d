# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv and install the project (with its test extras) on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages driven from outside Python, installed once per venv (stamp) and only when
# their command is missing: Chromium for the real-browser test (tests/server/test_browser.py),
# wrk for the http section of make bench. `make run` needs neither.
CHROMIUM_STAMP := $(VENV)/.chromium-stamp
WRK_STAMP := $(VENV)/.wrk-stamp
# The JavaScript guest toolchain (componentize-js, esbuild), project-local in node_modules,
# exactly as package-lock.json pins it (runtime/_build_js.py runs it from there).
NODE_STAMP := node_modules/.facets-stamp
NPM_STAMP := $(VENV)/.npm-stamp

.PHONY: run test check install lock apps bench clean

# constraints.txt pins every package to the version the tests were run with (the console's
# SVG snapshots depend on Textual's exact rendering); `make lock` refreshes it on purpose.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,guests]'
	touch $(STAMP)

install: $(STAMP) $(NODE_STAMP)

# $(call debian_package,COMMAND,PACKAGE,WHAT NEEDS IT): apt-get install PACKAGE unless COMMAND
# is on PATH; as root directly, else through sudo. A fresh image often has no package lists,
# so a failed install is retried once after apt-get update.
define debian_package
	@if command -v $(1) >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: $(3) needs '$(1)' (Debian package $(2)); apt-get is not available here: install it yourself" >&2; exit 1; \
	else \
	  if [ "$$(id -u)" = 0 ]; then as_root=; \
	  elif command -v sudo >/dev/null 2>&1; then as_root=sudo; \
	  else echo "make: $(3) needs '$(1)': run 'apt-get install $(2)' as root (no sudo here)" >&2; exit 1; fi; \
	  echo "make: installing Debian package $(2) for $(3)"; \
	  $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(2) \
	  || { $$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q \
	       && $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(2); } \
	  || { echo "make: apt-get could not install $(2), which $(3) needs" >&2; exit 1; }; \
	  command -v $(1) >/dev/null 2>&1 || { echo "make: $(2) is installed but '$(1)' is still not on PATH" >&2; exit 1; }; \
	fi
	@mkdir -p $(VENV)
	@touch $@
endef

$(CHROMIUM_STAMP):
	$(call debian_package,chromium,chromium,the real-browser test)

$(WRK_STAMP):
	$(call debian_package,wrk,wrk,make bench)

$(NPM_STAMP):
	$(call debian_package,npm,npm,the JavaScript guest toolchain)

$(NODE_STAMP): package.json package-lock.json $(NPM_STAMP)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The console on the default data directory, serving the apps over HTTP on 127.0.0.1:8800
# (the header shows the URL; a port in use is shown there and the console runs on).
run: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/facets console --serve

test: check $(CHROMIUM_STAMP) $(NODE_STAMP)
	$(PY) -m pytest -q

# Lint, format and type checks; zero findings is the bar (configured in pyproject.toml).
LINTED := runtime console server tests bench sample_apps
check: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

# Resolve the newest versions pyproject.toml allows in a scratch venv and write them down.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test,guests]'
	{ sed -n '1,3p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .lock-venv
	@echo "constraints.txt refreshed: review 'git diff constraints.txt', then make test"

bench: $(STAMP) $(WRK_STAMP) $(NODE_STAMP)
	$(PY) bench/run.py

apps: $(STAMP)
	$(PY) sample_apps/build.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .lock-venv
