#!/usr/bin/env bash
# `make run`: the whole system on the embedded default (SQLite in ./data, local Redis),
# with demo data, its URLs and credentials printed, then honcho runs the Procfile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
bash scripts/redis.sh
export WEB_PORT="${WEB_PORT:-8000}" STREAM_PORT="${STREAM_PORT:-8765}"
mkdir -p data
.venv/bin/bulkjobs migrate
# Seed when the database holds no project (a new SQLite file, or an empty DATABASE_URL);
# data/demo.json keeps the credentials of that seeding for the banner.
projects=$(.venv/bin/python -c 'from sqlalchemy import func, select
from models import Project
from models.engine import get_engine
with get_engine().connect() as conn:
    print(conn.execute(select(func.count()).select_from(Project)).scalar_one())')
if [ "$projects" = "0" ]; then
  echo "==> seeding demo data (2 projects x 10,000 records)"
  .venv/bin/bulkjobs seed --records 10000 --projects 2 --json > data/demo.json.tmp
  mv data/demo.json.tmp data/demo.json
fi
if [ -s data/demo.json ]; then
  .venv/bin/python scripts/banner.py data/demo.json
else
  echo "==> the database already holds $projects project(s), not seeded here: no demo"
  echo "    credentials to show (bulkjobs users / bulkjobs apikeys manage them)"
fi
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/honcho start -f Procfile
