# Fault injection: the chaos suite (tests/chaos, marker `chaos`) and the model of the scripts.
# Included by the Makefile; BIN and STAMP come from there. `make chaos` runs the suite once.

.PHONY: chaos-report chaos-loop model-long

CHAOS_RUNS ?= 5

chaos-report: $(STAMP) ## the chaos suite with its figures (tasks, kills, lost, doubled, detection)
	$(BIN)/pytest -q -m chaos -rA tests/chaos 2>&1 | grep -E '^\[chaos\]|passed|failed'

chaos-loop: $(STAMP) ## the chaos suite CHAOS_RUNS times in a row, stopping at the first failure
	@for i in $$(seq $(CHAOS_RUNS)); do \
		echo "chaos run $$i/$(CHAOS_RUNS)"; \
		$(BIN)/pytest -q -x -m chaos tests/chaos || exit 1; \
	done

model-long: $(STAMP) ## the hypothesis models of the Lua scripts (one partition, and three with the outbox), 2,000 examples
	PERSEID_MODEL_EXAMPLES=2000 $(BIN)/pytest -q --timeout 1800 tests/test_model.py tests/test_model_partitions.py
