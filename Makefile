# The two commands a newcomer needs:
#   make quickstart   set up .venv, train a small GPT on the Python docs, sample from it
#   make test         set up .venv, lint, type-check, run the test suite
# Datasets for the larger recipes and benchmarks are read from GENLOOP_DATA_MIRROR when set
# (CI: ../shared/data), otherwise downloaded (URL + sha256) into the workspace cache.

SHARED_DATA := $(abspath ../shared/data)
export GENLOOP_DATA_MIRROR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: setup quickstart test lint typecheck bench

setup:
	@scripts/setup.sh

quickstart: setup
	.venv/bin/genloop quickstart

lint: setup
	.venv/bin/ruff check src tests bench

typecheck: setup   # mypy over src/genloop, configured in pyproject.toml ([tool.mypy])
	.venv/bin/mypy

# Two pytest-xdist workers even on 2 cores: many tests wait on a subprocess (a CLI run, a server
# starting, torch importing) rather than compute. Each file runs whole on one worker, so the
# servers and workspaces its module-scoped fixtures build are built once. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2

test: lint typecheck
	.venv/bin/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

bench: setup   # hours on 2 cores, one benchmark at a time; rewrites BENCHMARKS.md from bench/results/
	.venv/bin/python -m bench.train_speed
	.venv/bin/python -m bench.train_step
	.venv/bin/python -m bench.time_to_quality
	.venv/bin/python -m bench.ablation
	.venv/bin/python -m bench.kv_cache
	.venv/bin/python -m bench.tang_poems
	.venv/bin/python -m bench.images
	.venv/bin/python -m bench.image_speed
	.venv/bin/python -m bench.serving
