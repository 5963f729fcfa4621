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
if [ ! -s data/demo.json ]; then
  echo "==> seeding demo data (2 projects x 10,000 records)"
  .venv/bin/bulkjobs seed --records 10000 --projects 2 --json > data/demo.json.tmp
  mv data/demo.json.tmp data/demo.json
fi
.venv/bin/python scripts/banner.py data/demo.json
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/honcho start -f Procfile
