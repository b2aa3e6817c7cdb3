# u2qt: two commands do everything on a fresh machine.
#   make demo   set up (cached), then run the whole stack end to end on a small synthetic world
#   make test   set up (cached), then run the test suite
# Set-up is idempotent: the venv (with the ~3 GB CUDA torch wheel) and the Delta jars are cached
# per machine under $(U2QT_CACHE) (default ~/.cache/u2qt); a second run installs nothing.

SHELL := /bin/bash
PYTHON ?= python3
PY := .venv/bin/python
DEMO_DIR ?= data/demo
# pytest-xdist workers for make test / test-fast (0 runs it in-process). On 2 cores two workers took
# the fresh-clone suite from 26 min 48 s to 21-22 min; it is then CPU-bound, so more do not help
TEST_WORKERS ?= 2

export PYTHONPATH := $(CURDIR)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast bench bench-model bench-scale bench-inference bench-sequence bench-test-night eval clean lock help

help:
	@echo "make demo | make test | make bench | make bench-model | make bench-scale | make bench-inference | make bench-sequence | make bench-test-night | make eval | make setup | make clean"

setup:
	@$(PYTHON) scripts/setup_env.py

demo: setup
	rm -rf $(DEMO_DIR)
	U2QT_TABLES_ROOT=$(DEMO_DIR)/lake U2QT_MODEL_DIR=$(DEMO_DIR)/model \
		$(PY) -m pipelines.cli demo --world-config conf/world/demo.yaml --airflow-home $(DEMO_DIR)/airflow

# tests/jvm_class_archive.py: the test JVMs' class-data-sharing archive, built once into the cache
test: setup
	$(PY) -m tests.jvm_class_archive
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: setup
	$(PY) -m tests.jvm_class_archive
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: setup
	$(PY) -m benchmarks.run_all --out bench_results

bench-sequence: setup
	$(PY) -m benchmarks.bench_sequence --out bench_results

bench-model: setup
	$(PY) -m benchmarks.bench_model --out bench_results

# what one night of the test suite costs per Spark SQL variant (codegen vs the tests' interpreted
# expressions), each in a fresh JVM: trains the tiny world's tokenizer first (~6 min on 2 cores)
bench-test-night: setup
	$(PY) -m benchmarks.bench_test_night --out bench_results

bench-scale: setup
	$(PY) -m benchmarks.bench_scale --out bench_results

# stage vs the bare encoder, UDF, lean quantizer, int8 encoder, the stage at 1x/2x/4x users (~30 min on 2 loaded cores)
bench-inference: setup
	$(PY) -m benchmarks.bench_inference --out bench_results

# both evaluation worlds (conf/world/eval.yaml, eval_b.yaml): reports/eval/<world>/report.md + reports/eval/summary.md
eval: setup
	$(PY) -m pipelines.cli paper-eval --world-config conf/world/eval.yaml --world-config conf/world/eval_b.yaml --out reports/eval

# Re-pin requirements/lock.txt from the direct dependencies in pyproject.toml (needs PyPI).
lock:
	rm -rf /tmp/u2qt-lock-venv && $(PYTHON) -m venv /tmp/u2qt-lock-venv
	/tmp/u2qt-lock-venv/bin/pip install -q --upgrade pip
	/tmp/u2qt-lock-venv/bin/pip install -q ".[test]"
	/tmp/u2qt-lock-venv/bin/pip freeze --exclude u2qt > requirements/lock.txt

clean:
	rm -rf data .u2qt reports bench_results spark-warehouse metastore_db derby.log .pytest_cache
