#!/usr/bin/env bash
# `make test`: the whole suite against the real Redis and database.
#   1. SQLite (always);
#   2. PostgreSQL at $TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test) when it
#      answers, and always in CI (CI=true), where a missing PostgreSQL is a failure.
# Extra arguments go to pytest, e.g. `make test ARGS=-k resume` or scripts/test.sh -k resume.
# The heavy scale and fault tests (marker `heavy`) are left out unless TEST_MARKERS says
# otherwise (below).  Each pass runs on TEST_WORKERS pytest-xdist workers (default 2, one
# per core of the machines this runs on; 0 runs in one process), a test file per worker at a
# time; each worker is a session of its own (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
bash scripts/redis.sh
# The browser tests (tests/e2e/test_dashboard.py, test_docs.py) drive the system's Chromium through
# Playwright (Playwright's own browser download is not used).  Install it when missing and we
# can (root with apt-get); otherwise those tests are skipped, except in CI where they fail.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium (for the browser tests)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/dev/null 2>&1 || echo "could not install chromium; the browser tests will skip" >&2
fi
# DatoCMS's JavaScript client for tests/e2e/test_dato_client.py (pinned by its lock file).
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "==> npm ci (DatoCMS client for the end-to-end test)"
  npm ci --prefix tests/e2e/js --no-audit --no-fund --loglevel=error \
    || echo "npm ci failed; tests/e2e/test_dato_client.py will try again itself" >&2
fi
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-${REDIS_URL%/*}/9}"
pg_url="${TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/test}"
pg_up() { .venv/bin/python - "$pg_url" <<'PY' 2>/dev/null
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}
if [ "${CI:-}" = "true" ] && ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  sleep 2
fi
workers=(-n "${TEST_WORKERS:-2}" --dist loadfile)
# TEST_MARKERS selects by pytest marker: by default every test but the heavy scale and fault
# ones (marker `heavy`), which `make test-heavy` (TEST_MARKERS=heavy) runs and .ci/run runs
# after this; TEST_MARKERS= (empty) runs everything.
markers="${TEST_MARKERS-not heavy}"
[ -n "$markers" ] && workers+=(-m "$markers")
status=0
echo "==> tests on SQLite"
.venv/bin/pytest -q -p no:cacheprovider "${workers[@]}" "$@" || status=$?
if pg_up; then
  echo "==> tests on PostgreSQL ($pg_url)"
  TEST_DATABASE_URL="$pg_url" .venv/bin/pytest -q -p no:cacheprovider "${workers[@]}" "$@" \
    || status=$?
elif [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL does not answer at $pg_url; CI needs it" >&2
  status=1
else
  echo "==> PostgreSQL does not answer at $pg_url: skipped the PostgreSQL pass"
fi
exit $status
