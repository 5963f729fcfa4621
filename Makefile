# The two commands a newcomer needs (see README.md):
#   make run   - the whole system (web, worker, beat, stream) on SQLite with demo data
#   make test  - the test suite (SQLite, then PostgreSQL when one answers or in CI)
#   (make test-heavy: the heavy scale and fault tests, which .ci/run runs after make test)
# Both create .venv/ and install the project into it first.

.PHONY: run test test-heavy venv lint clean

run:
	@bash scripts/run.sh

test:
	@bash scripts/test.sh

test-heavy:
	@TEST_MARKERS=heavy bash scripts/test.sh

venv:
	@bash scripts/venv.sh

lint: venv
	.venv/bin/ruff check bulkjobs models worker stream api cli tests bench
	.venv/bin/mypy bulkjobs models worker stream api cli
	.venv/bin/lint-imports

clean:
	rm -rf .venv data .pytest_cache .mypy_cache .ruff_cache .hypothesis
