# The two commands of the README's quick start, and a few more.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Test modules run on this many workers, a module at a time on one worker (labs are per worker; a module's
# fixtures are shared by its tests). Most of a lab test's time is spent waiting on hosts and servers, so two
# workers overlap that waiting on a 2-core machine. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

.PHONY: setup demo test test-fast lab-up lab-down bench clean

setup:
	bash scripts/setup.sh

## make demo: install everything, bring the local lab up, run the main job (a failover drill) and report.
demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

## make test: install what the tests need and run them all (lab tests included; none may skip).
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" LIFERAFT_REQUIRE_LAB=$${LIFERAFT_REQUIRE_LAB:-1} \
	  $(BIN)/python -m pytest -rs --durations=25 -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## make test-fast: unit tests only, no lab.
test-fast: setup
	$(BIN)/python -m pytest -rs tests/unit

lab-up: setup
	$(BIN)/liferaft lab up

lab-down:
	$(BIN)/liferaft lab down

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/run_all.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
