"""The ops dashboard with 1,000 jobs on screen, in the system's Chromium (headless, Playwright).

Real web, worker and stream processes; the page logged in as the ops user and live.  Two
phases, each on a freshly loaded page:

* **api** — ``--jobs`` one-record bulk deletes queued through the API (16 concurrent
  clients), run by real Celery workers; the page follows them over the stream.
* **burst** — the events of ``--jobs`` further jobs (queued, processing, ``--progress``
  progress events, done) appended straight to the sync log as fast as Redis takes them: the
  worst case for rendering, far denser than workers produce.

For each phase, in one run: the **baseline** is a plain Python websocket subscriber (the
``websockets`` client, subscribed to ``"*"`` as the ops user) — when it has received every
job's terminal event; **ours** is when the page shows every job's row as ``done`` (checked
every 50 ms in the page).  During the phase the page records long tasks (PerformanceObserver
``longtask``: main-thread tasks over 50 ms) and the gaps between animation frames
(``requestAnimationFrame``; 16.7 ms at 60 Hz).

Chromium's own main-thread counters (``Performance.getMetrics``: time in tasks, CPU time,
script, layout, style) are taken over each phase too, and once over 5 s of the idle page.

Usage: ``.venv/bin/python bench/dashboard.py [--jobs 1000] [--workers 2] [--progress 3]
[--database-url postgresql://…] [--chromium /usr/bin/chromium] [--trace DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    BIN,
    cleanup_redis,
    free_port,
    isolate,
    median,
    percentile,
    process,
    reset_postgres,
)

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# Installed before the page's own script: long tasks, frame gaps, and a 50 ms check of how
# many rows of the phase's jobs (tokens starting with ``prefix``) are on screen and done.
PERF_JS = """
window.__perf = { long: [], frames: [], target: 0, prefix: "", doneAt: null, rowsAt: null };
const epoch = (t) => performance.timeOrigin + t;
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) __perf.long.push([epoch(e.startTime), e.duration]);
  }).observe({ type: "longtask", buffered: true });
} catch (_) { __perf.long = null; }
(function frame(t) {
  __perf.frames.push(epoch(t));
  if (__perf.frames.length > 200000) __perf.frames.splice(0, 100000);
  requestAnimationFrame(frame);
})(performance.now());
setInterval(() => {
  const p = __perf;
  if (!p.target || p.doneAt !== null) return;
  let rows = 0, done = 0;
  for (const r of document.getElementById("job-rows").children) {
    if (!r.dataset.token.startsWith(p.prefix)) continue;
    rows++;
    if (r.dataset.status === "done") done++;
  }
  if (p.rowsAt === null && rows >= p.target) p.rowsAt = epoch(performance.now());
  if (done >= p.target) p.doneAt = epoch(performance.now());
}, 50);
"""

TERMINAL = ("done", "rejected")


class Subscriber:
    """The baseline: a plain websocket client counting terminal events of given tokens."""

    def __init__(self, url: str, jwt: str) -> None:
        self.url, self.jwt = url, jwt
        self.terminal: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.url, max_size=None) as ws:
            await ws.send(json.dumps({"op": "auth", "jwt": self.jwt}))
            await ws.recv()
            await ws.send(json.dumps({"op": "subscribe", "project": "*"}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("op") == "subscribed":
                    break
            self.ready.set()
            while not self.stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                msg = json.loads(raw)
                if msg.get("op") != "sync":
                    continue
                now = time.time()
                for ev in msg["sync"]:
                    if ev.get("data_type") == "jobs" and ev["data"]["status"] in TERMINAL:
                        self.terminal.setdefault(ev["data_key"], now)

    def start(self) -> Subscriber:
        self.thread.start()
        if not self.ready.wait(30):
            raise TimeoutError("baseline subscriber did not subscribe")
        return self

    def last_terminal(self, tokens: list[str], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not all(t in self.terminal for t in tokens):
            if time.monotonic() > deadline:
                missing = sum(t not in self.terminal for t in tokens)
                raise TimeoutError(f"baseline: {missing} terminal events missing")
            time.sleep(0.02)
        return max(self.terminal[t] for t in tokens)


#: The DevTools session of each open page (by ``id``), for :func:`main_thread`.
CDP: dict[int, Any] = {}


def open_dashboard(browser: Any, web: str, user: Any) -> Any:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(PERF_JS)
    page.goto(f"{web}/ops")
    page.fill("#username", user.username)
    page.fill("#password", user.password)
    page.click("#login-submit")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=60_000)
    page.wait_for_timeout(1500)  # the load-time jobs/list answers and first draw are in
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "timeTicks"})
    CDP[id(page)] = cdp
    return page


METRICS = {"TaskDuration": "task_s", "ThreadTime": "cpu_s", "ScriptDuration": "script_s",
           "LayoutDuration": "layout_s", "RecalcStyleDuration": "style_s"}


def main_thread(page: Any) -> dict[str, float]:
    """Chromium's cumulative main-thread figures for the page (seconds): time in tasks, CPU
    time of the thread, and script, layout and style recalculation within it."""
    got = CDP[id(page)].send("Performance.getMetrics")["metrics"]
    return {METRICS[m["name"]]: m["value"] for m in got if m["name"] in METRICS}


def page_figures(page: Any, start: float, n: int, timeout: float,
                 before: dict[str, float]) -> dict[str, Any]:
    """Wait until the page shows ``n`` of the phase's rows done; figures from ``start``
    (epoch s), main-thread time since ``before`` (:func:`main_thread`)."""
    deadline = time.monotonic() + timeout
    while page.evaluate("__perf.doneAt") is None:
        if time.monotonic() > deadline:
            shown = page.evaluate("document.getElementById('job-rows').children.length")
            raise TimeoutError(f"page: {shown} rows, not {n} done, after {timeout} s")
        time.sleep(0.1)
    page.wait_for_timeout(300)  # the frames right after the last update
    after = main_thread(page)
    perf = page.evaluate("({long: __perf.long, frames: __perf.frames, doneAt: __perf.doneAt,"
                         " rowsAt: __perf.rowsAt})")
    t0, t1 = start * 1000, perf["doneAt"]
    frames = [f for f in perf["frames"] if t0 <= f <= t1 + 300]
    gaps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
    long = [d for s, d in (perf["long"] or []) if t0 <= s <= t1 + 300]
    rows_on_screen = page.evaluate("document.querySelectorAll('#job-rows .job-row').length")
    return {
        "rows_s": round((perf["rowsAt"] - t0) / 1000, 3),
        "done_s": round((t1 - t0) / 1000, 3),
        "longtasks": len(long) if perf["long"] is not None else None,
        "longest_task_ms": round(max(long), 1) if long else 0.0,
        "longtask_total_ms": round(sum(long), 1),
        "frame_gap_max_ms": round(max(gaps), 1) if gaps else None,
        "frame_gap_p99_ms": round(percentile(gaps, 99), 1) if gaps else None,
        "frame_gap_p50_ms": round(median(gaps), 1) if gaps else None,
        "frames": len(frames),
        "rows_on_screen": rows_on_screen,
        "main_thread": {k: round(after[k] - before.get(k, 0.0), 3) for k in after},
    }


def tracing(browser: Any, page: Any, trace: str | None, phase: str = "") -> None:
    """Start (``page`` given) or stop and save (``phase`` given) a Chromium trace."""
    if not trace:
        return
    if page is not None:
        browser.start_tracing(page=page, categories=["devtools.timeline", "v8", "blink"])
        return
    out = Path(trace) / f"{phase}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(browser.stop_tracing())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, help="Celery workers (concurrency 2 each)")
    ap.add_argument("--progress", type=int, default=3, help="progress events per burst job")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--phases", default="api,burst")
    ap.add_argument("--trace", metavar="DIR",
                    help="a Chromium trace of each phase, DIR/<phase>.json (costs time of its"
                    " own: for finding where the time goes, not for the figures)")
    args = ap.parse_args()
    data = isolate(args.database_url)
    if args.database_url:
        reset_postgres(args.database_url)

    import httpx
    from playwright.sync_api import sync_playwright
    from sqlalchemy import text

    from bulkjobs import keys
    from bulkjobs.connections import get_redis
    from bulkjobs.synclog import SyncLog, job_event
    from bulkjobs.tokens import issue
    from models.engine import get_engine, get_write_engine, migrate
    from models.seed import seed

    migrate()
    records = max(1001, args.jobs * 2)
    with get_write_engine().begin() as conn:
        demo = seed(conn, records=records, projects=1)
    project = demo.projects[0]
    ops_user = next(u for u in demo.users if u.ops)
    with get_engine().connect() as conn:  # live leaves: one-record deletes, none inside another
        leaves = conn.execute(text(
            "SELECT r.gid FROM record r WHERE r.project_gid = :p "
            "AND NOT EXISTS (SELECT 1 FROM record_deletion d WHERE d.record_id = r.id) "
            "AND r.parent_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM record c WHERE c.parent_id = r.id) ORDER BY r.id LIMIT :n"),
            {"p": project.gid, "n": args.jobs}).scalars().all()
    if len(leaves) < args.jobs:
        raise SystemExit(f"only {len(leaves)} live leaf records for {args.jobs} jobs")

    web_port, stream_port = free_port(), free_port()
    web, stream = f"http://127.0.0.1:{web_port}", f"ws://127.0.0.1:{stream_port}/sync"
    logs = data / "logs"
    logs.mkdir()
    env = {"STREAM_PORT": str(stream_port)}
    results: dict[str, Any] = {"jobs": args.jobs, "workers": args.workers,
                               "database": get_engine().dialect.name}
    from contextlib import ExitStack

    with ExitStack() as stack:
        stack.enter_context(process(
            [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port",
             str(web_port), "--log-level", "warning"],
            ready=lambda: httpx.get(f"{web}/healthz").status_code == 200, log=logs / "web.log",
            env=env))
        stack.enter_context(process(
            [sys.executable, "-m", "stream"],
            ready=lambda: httpx.get(f"http://127.0.0.1:{stream_port}/healthz").status_code
            == 200, log=logs / "stream.log", env=env))
        for i in range(args.workers):
            log = logs / f"worker-{i}.log"
            stack.enter_context(process(
                [str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO",
                 "--concurrency", "2", "--hostname", f"bench{i}-{uuid.uuid4().hex[:6]}@%h",
                 "--without-mingle", "--without-gossip"],
                ready=lambda log=log: "ready." in log.read_text(), log=log, env=env))
        playwright = sync_playwright().start()
        stack.callback(playwright.stop)
        browser = playwright.chromium.launch(executable_path=args.chromium,
                                             args=CHROMIUM_ARGS, headless=True)
        stack.callback(browser.close)
        jwt = issue(ops_user.gid, ops=True)

        if "api" in args.phases:
            page = open_dashboard(browser, web, ops_user)
            sub = Subscriber(stream, jwt).start()
            r = httpx.post(f"{web}/api/p/{project.gid}/auth", json={"api_key": project.api_key})
            headers = {"Authorization": f"Bearer {r.headers['authorization']}"}
            clients = [httpx.Client(base_url=web, headers=headers, timeout=60)
                       for _ in range(16)]

            def queue(i: int) -> str:
                answer = clients[i % 16].post(f"/api/p/{project.gid}/records/bulk/delete",
                                              json={"selection": [leaves[i]]}).json()
                return str(answer["result"]["job.token"])

            tracing(browser, page, args.trace)
            before = main_thread(page)
            start = time.time()
            # A fresh database: every row of this page is one of these jobs (prefix "").
            page.evaluate(f"__perf.target = {args.jobs}")
            with ThreadPoolExecutor(16) as pool:
                tokens = list(pool.map(queue, range(args.jobs)))
            queued = time.time()
            base_end = sub.last_terminal(tokens, timeout=600)
            figures = page_figures(page, start, args.jobs, timeout=600, before=before)
            tracing(browser, None, args.trace, "api")
            sub.stop.set()
            figures.update(queue_s=round(queued - start, 3),
                           baseline_done_s=round(base_end - start, 3))
            figures["ratio"] = round(figures["done_s"] / figures["baseline_done_s"], 3)
            # The same page idle with its 1,000 rows (no events; the measuring loops run on):
            # what the instrumentation and the page cost per second when nothing happens.
            quiet = main_thread(page)
            page.wait_for_timeout(5000)
            idle = main_thread(page)
            figures["idle_per_s"] = {k: round((idle[k] - quiet[k]) / 5, 3) for k in idle}
            results["api"] = figures
            page.close()

        if "burst" in args.phases:
            page = open_dashboard(browser, web, ops_user)
            prefix = f"burst-{uuid.uuid4().hex[:8]}-"
            sub = Subscriber(stream, jwt).start()
            log = SyncLog(get_redis())
            tokens = [f"{prefix}{i:06d}" for i in range(args.jobs)]
            now = time.time()
            total = 10

            def events(token: str) -> list[Any]:
                e = dict(token=token, project=project.gid, job="bulk_delete_records",
                         created_on=now, updated_on=now)
                out = [job_event(status="queued", info={}, insert=True, **e),
                       job_event(status="processing", info={"total": total, "remaining": total,
                                                            "failed": 0, "errors": []}, **e)]
                for k in range(1, args.progress + 1):
                    left = total - k * total // (args.progress + 1)
                    out.append(job_event(status="processing", info={
                        "total": total, "remaining": left, "failed": 0, "errors": []}, **e))
                out.append(job_event(status="done", info={"total": total, "remaining": 0,
                                                          "failed": 0, "errors": []}, **e))
                return out

            # Interleaved as workers would: each round advances every job one state.
            per_job = [events(t) for t in tokens]
            rounds = [[evs[k] for evs in per_job] for k in range(len(per_job[0]))]
            page.evaluate("([n, prefix]) => { __perf.prefix = prefix; __perf.target = n; }",
                          [args.jobs, prefix])
            tracing(browser, page, args.trace)
            before = main_thread(page)
            start = time.time()
            for batch in rounds:
                for i in range(0, len(batch), 100):
                    log.append(keys.CC_SPACE, batch[i : i + 100])
            appended = time.time()
            base_end = sub.last_terminal(tokens, timeout=300)
            figures = page_figures(page, start, args.jobs, timeout=300, before=before)
            tracing(browser, None, args.trace, "burst")
            sub.stop.set()
            figures.update(events=sum(len(r) for r in rounds),
                           append_s=round(appended - start, 3),
                           baseline_done_s=round(base_end - start, 3))
            figures["ratio"] = round(figures["done_s"] / figures["baseline_done_s"], 3)
            results["burst"] = figures
            page.close()

    cleanup_redis()
    for phase in ("api", "burst"):
        if phase not in results:
            continue
        f = results[phase]
        print(f"{phase}: {args.jobs} jobs; baseline subscriber all terminal"
              f" {f['baseline_done_s']} s;"
              f" page all rows {f['rows_s']} s, all done {f['done_s']} s (ratio {f['ratio']});"
              f" long tasks {f['longtasks']}, longest {f['longest_task_ms']} ms, total"
              f" {f['longtask_total_ms']} ms; frame gaps p50 {f['frame_gap_p50_ms']} /"
              f" p99 {f['frame_gap_p99_ms']} / max {f['frame_gap_max_ms']} ms;"
              f" rows on screen {f['rows_on_screen']}; main thread {f['main_thread']}"
              f"{'; idle per s ' + str(f['idle_per_s']) if 'idle_per_s' in f else ''}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
