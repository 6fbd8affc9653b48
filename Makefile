# tuner: `make tune` sets everything up on a fresh machine; `make test` runs the suite.
#
# TORCH_SPEC pins the PyTorch build. The default is the CPU build this project is developed on;
# elsewhere pick your own, e.g. make install TORCH_SPEC='torch==2.5.1' \
#   TORCH_INDEX=https://download.pytorch.org/whl/cu124
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
STUDY       ?= studies/digits_mlp.toml
N_TRIALS    ?=
STORAGE     ?=
HOST        ?= 127.0.0.1
PORT        ?= 8080
PYTEST_ARGS ?=

BIN    := $(VENV)/bin
TUNER  := $(BIN)/tuner
STAMP  := $(VENV)/.installed
TUNE_FLAGS := $(if $(N_TRIALS),--n-trials $(N_TRIALS)) $(if $(STORAGE),--storage $(STORAGE))
# make tune WORKERS=N: N worker processes on one study (README: Parallel and multi-machine tuning)
WORKERS    ?=
TUNE_FLAGS += $(if $(WORKERS),--workers $(WORKERS))

.PHONY: help install tune dashboard export test lint bench clean confirm report

help:
	@echo "make tune       create .venv, install, run $(STUDY) (STUDY=... N_TRIALS=...)"
	@echo "make dashboard  optuna-dashboard on http://$(HOST):$(PORT)/ over the study's storage"
	@echo "make export     write studies/<study name>.best.json (FORMAT=yaml for .best.yaml)"
	@echo "make confirm    retrain the top trials with fresh seeds (TOP=3 SEEDS=3)"
	@echo "make report     write studies/reports/<study name>/report.html and PNG figures"
	@echo "make test       run the test suite"
	@echo "make bench      run the benchmarks and write BENCHMARKS.md"
	@echo "make lr-find    LR range test of $(STUDY): suggested rate, plot in studies/reports/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

tune: $(STAMP)
	$(TUNER) tune $(STUDY) $(TUNE_FLAGS)

dashboard: $(STAMP)
	$(TUNER) dashboard $(STUDY) $(if $(STORAGE),--storage $(STORAGE)) --host $(HOST) --port $(PORT)

export: $(STAMP)
	$(TUNER) export $(STUDY) $(if $(STORAGE),--storage $(STORAGE)) $(if $(FORMAT),--format $(FORMAT))

confirm: $(STAMP)
	$(TUNER) confirm $(STUDY) $(if $(STORAGE),--storage $(STORAGE)) $(if $(TOP),--top $(TOP)) $(if $(SEEDS),--seeds $(SEEDS))

report: $(STAMP)
	$(TUNER) report $(STUDY) $(if $(STORAGE),--storage $(STORAGE))

# One torch thread per test process: the suite runs many small trials, often several processes
# at once, and spinning intra-op threads on 2 busy cores make a tiny trial many times slower.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(if $(BENCH),--only $(BENCH))

lint: $(STAMP)
	$(BIN)/ruff check tuner tests bench

clean:
	rm -rf $(VENV) .pytest_cache

# LR range test of a study (tuner lr-find): prints the rates, writes studies/reports/*.html
.PHONY: lr-find
lr-find: $(STAMP)
	$(TUNER) lr-find $(STUDY)
