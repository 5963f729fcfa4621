# The two commands a newcomer needs (see README.md):
#   make run   - the whole system (web, worker, beat, stream) on SQLite with demo data
#   make test  - the test suite (SQLite, then PostgreSQL when one answers or in CI)
# Both create .venv/ and install the project into it first.

.PHONY: run test venv lint clean

run:
	@bash scripts/run.sh

test:
	@bash scripts/test.sh

venv:
	@bash scripts/venv.sh

lint: venv
	.venv/bin/ruff check bulkjobs models worker stream api cli tests bench
	.venv/bin/mypy bulkjobs models worker stream api cli
	.venv/bin/lint-imports

clean:
	rm -rf .venv data .pytest_cache .mypy_cache .ruff_cache .hypothesis
