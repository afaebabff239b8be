# The two commands the README names: `make report` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PLAN   ?= quick
# DEVICES=0,1,2,3 (or cpu,cpu): independent runs side by side, one per device
DEVICES ?=
# EXECUTOR=slurm: every unfinished run as one SLURM job (docs/multi-machine.md), with SLURM_ARGS
# such as "--partition gpu --account lab --gpus-per-job 1 --cpus-per-job 8 --detach"
EXECUTOR ?= local
SLURM_ARGS ?=
# torch from the PyTorch index/PyPI; pinned so every machine measures the same library.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: all install test test-fast test-rehearsals report rehearse smoke bench lab tensorboard clean-report evidence

all: test

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	@touch $@

install: $(VENV)/.installed

# The whole suite, slow tests included, on TEST_WORKERS processes (pytest-xdist, one test file at a
# time per worker, so the smoke-plan run is made once; the files with the most slow tests first, in
# tests/conftest.py's order, not xdist's by test count), then its 15 slowest tests (a slow test is
# seen when it lands).
TEST_WORKERS ?= 2
XDIST  := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: install
	$(PY) -m ruff check lib tests scripts
	$(PY) -m pytest -q tests $(XDIST) --durations=15

# The loop while editing: everything but the tests marked slow (end-to-end runs, real learning,
# several processes); make test and CI run those too.
test-fast: install
	$(PY) -m pytest -q -m "not slow" tests $(XDIST) --durations=5

# The executed rehearsal of every shipped plan (every run through its notebook, cut short, then
# its report) on generated stand-ins of CIFAR-100 and Tiny ImageNet: about 17 min on 2 idle cores, so
# not part of make test; make test checks each plan's configs, image counts and report sections.
test-rehearsals: install
	$(PY) -m pytest -q -m rehearsal --rehearsals tests $(XDIST) --durations=8

report: install
	$(if $(filter slurm,$(EXECUTOR)),$(PY) -m pip install --quiet -e '.[slurm]')
	$(VENV)/bin/simpleclr plan run $(PLAN) $(if $(DEVICES),--devices $(DEVICES)) --executor $(EXECUTOR) \
	  $(if $(filter slurm,$(EXECUTOR)),$(SLURM_ARGS))

# Every run of a plan cut to a few steps, then its report, in rehearsal/$(PLAN)/ (never outputs/):
# what would break, each run's memory and the time the real plan will take (rehearsal.md).
rehearse: install
	$(VENV)/bin/simpleclr plan rehearse $(PLAN)

smoke:
	$(MAKE) report PLAN=smoke

# Live curves of every training run under outputs/ (loss, lr, kNN and validation accuracy), at
# http://localhost:6006; the runs write them where tensorboard is installed (it is, after this).
tensorboard: install
	$(PY) -m pip install --quiet 'tensorboard>=2.14'
	$(VENV)/bin/tensorboard --logdir outputs

# docs/evidence.md: the recipe comparison, the learning curves and the one-factor-at-a-time
# ablation with a second seed, on the real CIFAR-100; then the transfer rows' curves on Tiny
# ImageNet, the 16 px against 32 px pilot, the short-budget recipe pilot and the width pilot (hours on a CPU;
# finished runs are skipped, so it resumes), the quick plan's own runs and the six methods with the
# learning curves of the two below the floor; then the page and its
# figures from the run folders.
evidence: install
	$(VENV)/bin/simpleclr plan run recipe --report-dir outputs/recipe
	$(VENV)/bin/simpleclr plan run curves --report-dir outputs/curves
	$(VENV)/bin/simpleclr plan run ablation --report-dir outputs/ablation
	$(VENV)/bin/simpleclr plan run curves-tiny --report-dir outputs/curves-tiny
	$(VENV)/bin/simpleclr plan run resolution --report-dir outputs/resolution
	$(VENV)/bin/simpleclr plan run pilot-short --report-dir outputs/pilot-short
	$(VENV)/bin/simpleclr plan run pilot-width --report-dir outputs/pilot-width
	$(VENV)/bin/simpleclr plan run quick
	$(VENV)/bin/simpleclr plan run methods-quick
	$(VENV)/bin/simpleclr plan run methods-length --devices cpu,cpu
	(cat docs/evidence-head.md; $(PY) scripts/evidence.py outputs/recipe outputs/curves outputs/ablation \
	  --curves --figure docs/evidence-curves.png --ablation recipe/published; echo; \
	  $(PY) scripts/evidence.py outputs/curves-tiny outputs/resolution --curves --resolution \
	  --figure docs/evidence-transfer.png; echo; $(PY) scripts/evidence.py outputs/pilot-short \
	  --pilot pilot-short/base --pilot pilot-short/super-lr0.1; echo; $(PY) scripts/evidence.py \
	  outputs/pilot-width --pilot pilot-width/w64-s312; echo; $(PY) scripts/evidence.py outputs/quick; \
	  echo; $(PY) scripts/evidence.py outputs/methods-quick --methods; \
	  echo; $(PY) scripts/evidence.py outputs/methods-length --methods) \
	  > docs/evidence.md.tmp \
	  && mv docs/evidence.md.tmp docs/evidence.md

bench: install
	$(VENV)/bin/simpleclr bench

lab: install
	$(PY) -m pip install --quiet -e '.[lab]' && $(VENV)/bin/jupyter lab notebooks/

clean-report:
	rm -rf report/report.html
