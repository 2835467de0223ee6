# Two commands matter: `make demo` (end to end, serving) and `make test` (the suite).
# Both set up everything they need first: virtualenv, pinned packages, Delta jars.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
JARS_DIR    := .jars
# delta-spark 4.4.0 is the newest release whose jars Maven Central serves for Spark 4.2;
# its wheel accepts pyspark <= 4.2.0, which pyproject.toml pins.
DELTA_VERSION := 4.4.0
DELTA_SCALA   := 4.2_2.13
DELTA_JAR     := $(JARS_DIR)/delta-spark_$(DELTA_SCALA)-$(DELTA_VERSION).jar
STORAGE_JAR   := $(JARS_DIR)/delta-storage-$(DELTA_VERSION).jar
# s3a:// (hadoop-aws and the AWS SDK modules it uses), versions in the pom. Its own folder:
# ~35 jars; the stamp refetches them whenever the pom changes.
S3A_POM       := scripts/s3a-jars.pom.xml
S3A_JARS      := $(JARS_DIR)/s3a/.fetched

DEMO_DIR    ?= var/demo
PORT        ?= 8000
PYTEST_ARGS ?=
# Test modules run in TEST_WORKERS processes (pytest-xdist, a whole module per process:
# module fixtures and the SparkSession stay shared within it); 0 = one process. One
# process keeps 2 cores only ~40 % busy (JVM start-ups, Airflow's own work, servers):
# fresh clones on a quiet machine took 24 min 42 s in two processes, 29 min 7 s in one
# (the latter with ~30 more tests; README "Tests").
TEST_WORKERS ?= 2
BENCH_ARGS  ?=

export SPARK_LOCAL_IP       ?= 127.0.0.1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: help setup venv jars system-packages demo stop test audit audit-if-reachable bench bench-quick bench-serving bench-sharding bench-quality bench-snapshot bench-hybrid bench-content bench-content-similar bench-als bench-als-fit bench-als-blas bench-pipeline bench-pipeline-cost bench-cluster bench-ease-variants clean dist-jobs cluster cluster-stop cluster-demo airflow airflow-stop airflow-venv

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: system-packages venv jars  ## everything the jobs, server and tests need

venv: $(VENV)/.installed  ## virtualenv with the pinned packages

# Packages are installed with uv (pinned, in a virtualenv of its own): the same pins as
# pip would install, in a fraction of the time (the Airflow pins: 8 s against 63 s here).
UV_VENV    := .venv-uv
UV_VERSION := 0.13.9
UV         := $(UV_VENV)/bin/uv
UV_INSTALL := $(UV) pip install -q --python

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install -q uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(UV_INSTALL) $(PY) -e ".[test]"
	touch $@

jars: $(DELTA_JAR) $(STORAGE_JAR) $(S3A_JARS)  ## Delta Lake and s3a:// jars from Maven Central (Spark never downloads at start-up)

$(DELTA_JAR):
	mkdir -p $(JARS_DIR)
	mvn -q -U dependency:copy -Dartifact=io.delta:delta-spark_$(DELTA_SCALA):$(DELTA_VERSION) -DoutputDirectory=$(JARS_DIR)

$(STORAGE_JAR):
	mkdir -p $(JARS_DIR)
	mvn -q -U dependency:copy -Dartifact=io.delta:delta-storage:$(DELTA_VERSION) -DoutputDirectory=$(JARS_DIR)

# The SDK modules, not the `bundle` hadoop-aws declares: 13 MB in 7 s against 686 MB in
# 53-116 s on a clean clone (CI fetches on every run). Removed first: no stale versions.
$(S3A_JARS): $(S3A_POM)
	rm -rf $(JARS_DIR)/s3a
	mvn -q -U -f $(S3A_POM) dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(JARS_DIR)/s3a
	touch $@

system-packages:  ## Java for Spark, Maven for the jars, OpenBLAS for ALS, Redis for the real-time delta, Chromium for the /status page test, wrk for bench/serving, nginx for the sharding test and bench (Debian; needs root)
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	dpkg -s libopenblas0-serial >/dev/null 2>&1 || missing="$$missing libopenblas0-serial"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing" >&2; case "$$missing" in *jre*|*maven*) exit 1;; esac; fi; \
	fi

demo: setup  ## generate data, run the pipeline, publish a snapshot, serve it on localhost:$(PORT)
	DEMO_DIR=$(DEMO_DIR) PORT=$(PORT) PY=$(PY) scripts/demo.sh

stop:  ## stop the demo's lookup server and collector, `make airflow` and `make cluster-demo` if they run
	@for name in gunicorn collector; do \
	  if [ -f $(DEMO_DIR)/$$name.pid ] && kill $$(cat $(DEMO_DIR)/$$name.pid) 2>/dev/null; then echo "stopped $$name"; \
	  else echo "$$name not running"; fi; rm -f $(DEMO_DIR)/$$name.pid; done
	@if ls var/airflow/run/*.pid >/dev/null 2>&1; then airflow_dags/standalone.sh stop; fi
	@if [ -d var/cluster-demo ]; then scripts/cluster-demo.sh stop; fi

test: setup airflow-venv  ## the whole pytest suite (pytest's "no tests collected" counts as success), then the dependency audit where its service answers
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; \
	$(MAKE) --no-print-directory audit-if-reachable || rc=1; exit $$rc

audit-if-reachable:  ## `make audit` if pypi.org's JSON API answers; otherwise a line saying it was skipped and why
	@if $(PYTHON) scripts/audit_dependencies.py --probe; then $(MAKE) --no-print-directory audit; fi

# pip-audit in a virtualenv of its own, so its dependencies are not audited as ours.
AUDIT_VENV        := .venv-audit
PIP_AUDIT_VERSION := 2.10.1

audit: venv $(AUDIT_VENV)/.installed  ## known vulnerabilities in .venv and airflow_dags/requirements.txt (pip-audit; needs pypi.org's JSON API): fails on one with a fix, or if a package could not be checked
	$(AUDIT_VENV)/bin/python scripts/audit_dependencies.py --pip-audit $(AUDIT_VENV)/bin/pip-audit --venv-python $(PY)

$(AUDIT_VENV)/.installed: Makefile | $(UV)
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(UV_INSTALL) $(AUDIT_VENV)/bin/python pip-audit==$(PIP_AUDIT_VERSION)
	touch $@

bench: bench-serving bench-sharding bench-quality bench-snapshot bench-hybrid bench-content bench-content-similar bench-als bench-als-fit bench-als-blas bench-pipeline  ## every benchmark; results in bench/results/ (serving and sharding need wrk and nginx: make system-packages)

QUICK_OUT ?= var/bench/quick
bench-quick: setup  ## every benchmark at smoke size (~10 min on 2 cores): checks the harness end to end, not the figures; results in var/bench/quick/
	$(PY) -m bench.serving --quick --out $(QUICK_OUT)
	$(PY) -m bench.serving.decode --quick --out $(QUICK_OUT)
	$(PY) -m bench.sharding --quick --out $(QUICK_OUT)
	$(PY) -m bench.quality --quick --out $(QUICK_OUT)
	$(PY) -m bench.snapshot_build --quick --out $(QUICK_OUT)
	$(PY) -m bench.hybrid --quick --out $(QUICK_OUT)
	$(PY) -m bench.content --quick --out $(QUICK_OUT)
	$(PY) -m bench.content_similar --quick --numpy-only 0 --out $(QUICK_OUT)
	$(PY) -m bench.als_topk --quick --out $(QUICK_OUT)
	$(PY) -m bench.als_blas --quick --out $(QUICK_OUT)
	$(PY) -m bench.pipeline --quick --out $(QUICK_OUT)

bench-serving: setup  ## lookup serving against the Flask floor at 1M users, then 100k and 5M for growth (wrk, gunicorn, ~25 min; 5M users: a 14 GB snapshot); the list decode per layout
	$(PY) -m bench.serving $(BENCH_ARGS)
	$(PY) -m bench.serving.decode
	$(PY) -m bench.serving --users 100000 --products 10000 --name serving_100k $(BENCH_ARGS)
	$(PY) -m bench.serving --users 5000000 --name serving_5M $(BENCH_ARGS)
	$(PY) -m bench.growth

bench-sharding: setup  ## 1, 2 and 4 snapshot shards behind nginx: throughput, latency, memory per server (~6 min; --quick: BENCH_ARGS=--quick)
	$(PY) -m bench.sharding $(BENCH_ARGS)

bench-quality: setup  ## offline quality on the real samples in ../shared/data, `implicit` ALS side by side
	$(PY) -m bench.quality $(BENCH_ARGS)

bench-snapshot: setup  ## the snapshot build at 1M users x 100 candidates, 1 and 4 algorithms (~10 min with the lake; --quick: BENCH_ARGS=--quick)
	$(PY) -m bench.snapshot_build $(BENCH_ARGS)

bench-hybrid: setup  ## hybrid fusion of 100k users' lists, against the explode-and-group version it replaced (~5 min)
	$(PY) -m bench.hybrid $(BENCH_ARGS)

bench-content: setup  ## content user lists of 100k users (10k products, 1M generated events), against the explode-and-join version they replaced (~12 min, 5 of them the set-up; --quick: BENCH_ARGS=--quick)
	$(PY) -m bench.content $(BENCH_ARGS)

bench-content-similar: setup  ## similar products of 10k products, NumPy against the Spark formulation it replaced, and NumPy alone at 100k (~15 min; --quick: BENCH_ARGS='--quick --numpy-only 0')
	$(PY) -m bench.content_similar --numpy-only 100000 $(BENCH_ARGS)

bench-als: setup  ## ALS fits (the job's CG, Spark ML's, implicit's) on 1M ratings; recommendForAllUsers against the blocked top-K (~6 min)
	$(PY) -m bench.als_topk $(BENCH_ARGS)

bench-als-fit: setup  ## the ALS fits alone at the pipeline's size (1M x 100k, 12.9M ratings, rank 32): the job's CG against implicit (~8 min)
	$(PY) -m bench.als_topk --fit-only --users 1000000 --items 100000 --interactions 13000000 --rank 32 --driver-memory 12g $(BENCH_ARGS)

bench-als-blas: setup  ## Spark ML's ALS fit on OpenBLAS's single-threaded build against the pthread one, alternating JVMs (~15 min)
	$(PY) -m bench.als_blas $(BENCH_ARGS)

bench-pipeline: setup  ## the nightly pipeline at 1M, 3M and 10M generated events: time and peak RSS per stage, growth plots (1 h+ on 2 cores; --quick: BENCH_ARGS=--quick)
	$(PY) -m bench.pipeline $(BENCH_ARGS)

bench-pipeline-cost: setup  ## the pipeline with and without EASE and the ranker, side by side (1M events ~15 min; BENCH_ARGS="--scale 10M")
	$(PY) -m bench.pipeline_cost $(BENCH_ARGS)

bench-cluster: setup  ## the pipeline local and on the loopback standalone cluster over the S3 API (its own ports and var/bench/cluster_overhead), side by side (1M events; BENCH_ARGS="--scale 50k --out /tmp/x" for a smoke run)
	$(PY) -m bench.cluster_overhead $(BENCH_ARGS)

bench-ease-variants: setup  ## EASE's exact inverse against its scalable kNN on the real samples (validation splits)
	$(PY) -m bench.ease_variants $(BENCH_ARGS)

# conf/*.toml travel in the zip: schemas.settings reads them from there when it is
# imported from it (RECSYS_CONF_DIR still wins). run_job.py is the main file to submit.
DIST ?= dist
dist-jobs:  ## dist/recsys_jobs.zip (jobs, schemas, conf/*.toml) and dist/run_job.py, for spark-submit --py-files on a cluster (DIST=another folder)
	mkdir -p $(DIST) && rm -f $(DIST)/recsys_jobs.zip
	zip -qr $(DIST)/recsys_jobs.zip jobs schemas -x '*__pycache__*'
	zip -q $(DIST)/recsys_jobs.zip conf/*.toml
	cp scripts/run_job.py $(DIST)/run_job.py
	@echo $(DIST)/recsys_jobs.zip $(DIST)/run_job.py

CLUSTER_PORT ?= 7077
cluster: setup  ## a Spark standalone cluster on loopback: master spark://127.0.0.1:7077 (CLUSTER_PORT), 2 workers (1 core, 2g each); logs in var/cluster
	CLUSTER_PORT=$(CLUSTER_PORT) scripts/cluster start

cluster-stop:  ## stop `make cluster`
	CLUSTER_PORT=$(CLUSTER_PORT) scripts/cluster stop

cluster-demo: setup airflow-venv  ## the multi-machine path on loopback: an S3 API, Spark master + 2 workers running the nightly DAG on an s3a:// lake, two lookup hosts pulling what it publishes (scripts/cluster-demo.sh; make stop)
	PY=$(PY) scripts/cluster-demo.sh

# --- Airflow (issue 5): its own virtualenv (its pins clash with the jobs'), state in var/airflow
AIRFLOW_VENV := .venv-airflow

airflow-venv: $(AIRFLOW_VENV)/.installed  ## Airflow 3.3.2 + the Apache Spark provider in .venv-airflow (pins: airflow_dags/requirements.txt)

$(AIRFLOW_VENV)/.installed: airflow_dags/requirements.txt | $(UV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(UV_INSTALL) $(AIRFLOW_VENV)/bin/python -r airflow_dags/requirements.txt
	touch $@

airflow: setup airflow-venv  ## local Airflow (SQLite in var/airflow) with the nightly and hourly DAGs on :8080; a lookup server on :$(PORT) serves what they publish; Ctrl-C stops it
	PORT=$(PORT) airflow_dags/standalone.sh

airflow-stop:  ## stop `make airflow` from another shell: every process it started, running tasks included
	airflow_dags/standalone.sh stop

clean:  ## remove generated data, snapshots and caches (keeps .venv and .jars)
	rm -rf var dist .pytest_cache spark-warehouse
