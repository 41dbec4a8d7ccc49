# Two commands a new machine needs: `make run` and `make test` (each builds .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
TEST_WORKERS ?= 2
STAGE ?= prod
DIST ?= dist
# Packaging and linting need no AWS account: a region and dummy credentials are enough, and
# no profile of the machine's own AWS configuration is consulted.
OFFLINE_AWS := env -u AWS_PROFILE AWS_DEFAULT_REGION=us-east-1 \
	AWS_ACCESS_KEY_ID=packaging AWS_SECRET_ACCESS_KEY=packaging

.PHONY: run test coverage lint bench package openapi fuzz clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "pip<26.3"
	$(BIN)/pip install --quiet -r requirements-dev.txt
	# the project itself, editable: .venv/bin/provisioner (its dependencies are pinned above)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	PORT=$(PORT) $(BIN)/python -m local.run

# Bytecode caching on (a machine may turn it off with PYTHONDONTWRITEBYTECODE): each worker
# imports the whole project and pytest rewrites every test module's asserts, which a cached
# .pyc saves from doing again on the next run.
test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Branch coverage of chalicelib by the whole suite (docs/testing.md).
coverage: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --cov=chalicelib --cov-branch \
		--cov-report=term:skip-covered

# ruff, then mypy --strict on chalicelib, app.py and provisioner_cli (settings: pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# docs/openapi.json from the request and response models (a test fails if it is stale).
openapi: $(STAMP)
	$(BIN)/python -m local.write_openapi

# A longer schemathesis search than `make test` runs (25 cases per operation there).
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	SCHEMATHESIS_MAX_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal \
		tests/functional/test_api_contract.py --hypothesis-show-statistics

bench: $(STAMP)
	$(BIN)/python bench/provision_to_ready.py

# $(DIST)/sam.json + deployment.zip for `aws cloudformation package/deploy` (docs/deploy.md).
package: $(STAMP)
	rm -rf $(DIST)
	$(BIN)/python -m tools.render_merge_template --stage $(STAGE) \
		--output $(DIST)/merge-template.json
	$(OFFLINE_AWS) $(BIN)/chalice package --stage $(STAGE) \
		--merge-template $(DIST)/merge-template.json $(DIST)
	$(OFFLINE_AWS) $(BIN)/python -m tools.lint_template $(DIST)/sam.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache $(DIST) .chalice/deployments
