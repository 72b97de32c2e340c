# make install | make run | make test  (see README)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: install run test test-all lint check-layers readme check-readme docs ci synth teacher clean-data tensorboard

install: $(STAMP)

$(STAMP): requirements.txt scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

run: install
	$(PY) -m core data synth --if-missing
	$(PY) -m streamlit run dashboard/Home.py --server.address 127.0.0.1 --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# every run's TensorBoard event files (runs/<run>/events), on http://127.0.0.1:6006
RUNS ?= runs
tensorboard: install
	$(VENV)/bin/tensorboard --logdir $(RUNS) --host 127.0.0.1 --port 6006

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

test-all: install
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: install
	$(PY) -m ruff check core dashboard tests bench scripts mkdocs_hooks.py

# the layer order of .importlinter (docs/architecture.md): no import cycle, no upward import, no app in core
check-layers: install
	$(VENV)/bin/lint-imports

# the README's headline numbers, rendered from bench/results/*.json (template: scripts/readme_headline.md)
readme: install
	$(PY) scripts/docs_numbers.py readme

# fails, with a diff, when the committed README's numbers are not what bench/results/ gives
check-readme: install
	$(PY) scripts/docs_numbers.py readme --check

# the documentation site, its measured numbers read from bench/results/ (docs/benchmarks.md, "Numbers in the docs");
# --strict: a broken link, a missing page, an unlisted page, or a number naming a missing file or key fails
docs: readme
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $${TMPDIR:-/tmp}/core-docs-site

ci: lint check-layers check-readme docs test

synth: install
	$(PY) -m core data synth

teacher: install
	$(PY) -m core train --method teacher --data synthetic:faceswap --preset full

clean-data:
	rm -rf data/synthetic cache
