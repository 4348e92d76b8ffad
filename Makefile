# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv, installs the project with every extra (pipeline, train,
# serve) and what the tests need, then runs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint system-deps clean

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"' \
		|| (echo "Python 3.11 is required: set PYTHON=/path/to/python3.11"; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

system-deps:
	@bash .ci/system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/rtp demo --out out/demo

test: $(STAMP) system-deps
	$(PY) -m pytest tests -q -p no:cacheprovider

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check beam_pipelines models serving feature_repo tests benchmarks

clean:
	rm -rf $(VENV) out
