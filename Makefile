# The two commands the README names: `make report` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PLAN   ?= quick
# torch from the PyTorch index/PyPI; pinned so every machine measures the same library.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: all install test report smoke bench lab clean-report evidence

all: test

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	@touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m ruff check lib tests scripts
	$(PY) -m pytest -q tests

report: install
	$(VENV)/bin/simpleclr plan run $(PLAN)

smoke:
	$(MAKE) report PLAN=smoke

# docs/evidence.md: the recipe comparison, the learning curves and the one-factor-at-a-time
# ablation with a second seed, on the real CIFAR-100 (hours on
# a CPU; finished runs are skipped, so it resumes), then the page and its figure from the run folders.
evidence: install
	$(VENV)/bin/simpleclr plan run recipe --report-dir outputs/recipe
	$(VENV)/bin/simpleclr plan run curves --report-dir outputs/curves
	$(VENV)/bin/simpleclr plan run ablation --report-dir outputs/ablation
	(cat docs/evidence-head.md; $(PY) scripts/evidence.py outputs/recipe outputs/curves outputs/ablation \
	  --curves --figure docs/evidence-curves.png --ablation recipe/published) > docs/evidence.md.tmp && mv docs/evidence.md.tmp docs/evidence.md

bench: install
	$(VENV)/bin/simpleclr bench

lab: install
	$(PY) -m pip install --quiet -e '.[lab]' && $(VENV)/bin/jupyter lab notebooks/

clean-report:
	rm -rf report/report.html
