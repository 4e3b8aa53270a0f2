# The benchmark against RQ, Celery, arq and Dramatiq: bench/, docs/benchmark.md.
# Included by the Makefile; PYTHON, BIN and STAMP come from there.
#
#   make bench                       everything, 3 repetitions (about 35 minutes)
#   make bench BENCH_ARGS="--reps 1 --pending 100000"
#   make bench-smoke                 perseid-jobs alone, tiny numbers (seconds)
#   make bench-cluster               the partitions' cluster benchmark (also run by make bench)
#   make bench-flow                  flow control's costs: groups, concurrency, pause (also run by make bench)
#
# Each peer gets its own virtual environment (arq 0.25 wants a redis-py that
# Celery's transport does not), re-created when these pins change.

.PHONY: bench bench-smoke bench-envs

BENCH_ARGS ?=
BENCH_PEERS := rq celery arq dramatiq tools
BENCH_PKGS_rq := rq==3.0.0
BENCH_PKGS_celery := celery[redis]==5.7.0
BENCH_PKGS_arq := arq==0.25.0 redis[hiredis]>=4.2,<6
BENCH_PKGS_dramatiq := dramatiq[redis]==2.2.1
BENCH_PKGS_tools := py-spy==0.4.3
BENCH_ENV_STAMPS := $(foreach p,$(BENCH_PEERS),bench/.venv-$(p)/.installed)

bench/.venv-%/.installed: mk/bench.mk
	rm -rf bench/.venv-$*
	$(PYTHON) -m venv bench/.venv-$*
	bench/.venv-$*/bin/pip install -q --disable-pip-version-check '$(subst $() ,' ',$(BENCH_PKGS_$*))'
	touch $@

bench-envs: $(BENCH_ENV_STAMPS) ## the peers' and py-spy's virtual environments

bench: $(STAMP) $(BENCH_ENV_STAMPS) ## perseid-jobs vs RQ, Celery, arq, Dramatiq -> bench/results/REPORT.md
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.cluster $(CLUSTER_ARGS)
	$(BIN)/python -m bench.flow $(FLOW_ARGS)
	$(BIN)/python -m bench.dashboard $(DASHBOARD_ARGS)

bench-smoke: $(STAMP) ## the benchmark's scenarios, perseid-jobs only, tiny numbers
	$(BIN)/python -m bench --smoke --out bench/results/smoke

# The cluster benchmark of issue #16 (partitions): one Redis with P = 1, local clusters of
# 3 and 6 primaries with P = 4 x primaries -> bench/results/CLUSTER.md (a few minutes).
.PHONY: bench-cluster
CLUSTER_ARGS ?=
bench-cluster: $(STAMP) ## spread, overhead, capacity, end to end, memory over partitions
	$(BIN)/python -m bench.cluster $(CLUSTER_ARGS)

# Flow control (docs/flow.md, "Measured"): claims with 1,000 groups at a limit of 1 vs
# unlimited, a job at concurrency=4 over a backlog, the claim beside a paused backlog of
# 100,000 -> bench/results/FLOW.md (about two minutes).
.PHONY: bench-flow
FLOW_ARGS ?=
bench-flow: $(STAMP) ## flow control's cost in the claim: groups, concurrency, pause
	$(BIN)/python -m bench.flow $(FLOW_ARGS)

# The dashboard's reads (issue #19): the overview and the first tasks page of a 100,000-task
# namespace, each < 300 ms server-side -> bench/results/DASHBOARD.md (under a minute).
.PHONY: bench-dashboard
DASHBOARD_ARGS ?=
bench-dashboard: $(STAMP) ## the dashboard's overview and tasks page on 100,000 tasks
	$(BIN)/python -m bench.dashboard $(DASHBOARD_ARGS)
