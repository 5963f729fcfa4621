"""Print where everything runs and the demo credentials (used by ``make run``)."""

from __future__ import annotations

import json
import os
import sys

demo = json.load(open(sys.argv[1]))
web = f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}"
stream = f"ws://127.0.0.1:{os.environ.get('STREAM_PORT', '8765')}/sync"
print(f"""
bulkjobs is starting
  API (Unicat dialect)  {web}/api/p/<project>/...   docs: {web}/docs
  ops dashboard         {web}/ops
  websocket stream      {stream}
  health / metrics      {web}/healthz  {web}/metrics
""")
for u in demo["users"]:
    print(f"  user {u['username']:<8} password {u['password']}{'   (ops)' if u['ops'] else ''}")
for p in demo["projects"]:
    print(f"  project {p['gid']}  root {p['root']}")
    print(f"          api_key {p['api_key']}")
first = demo["projects"][0]
print(f"""
Try it (another terminal):
  JWT=$(curl -s -D - -o /dev/null -X POST {web}/api/p/{first['gid']}/auth \\
        -H 'content-type: application/json' -d '{{"api_key": "{first['api_key']}"}}' \\
        | awk 'tolower($1)=="authorization:" {{print $2}}' | tr -d '\\r')
  curl -s -X POST {web}/api/p/{first['gid']}/records/bulk/delete \\
       -H "Authorization: Bearer $JWT" -H 'content-type: application/json' \\
       -d '{{"selection": [{{"children": "{first['root']}"}}]}}'
  .venv/bin/bulkjobs watch <job.token>
""", flush=True)
