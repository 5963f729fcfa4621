// bulkjobs ops dashboard: plain JavaScript, no build step, nothing loaded from the internet.
//
// Data flow
// - Log in with POST /api/login; every HTTP answer carries a renewed JWT (Authorization).
// - Job state comes from the websocket stream (SPEC §8): auth, subscribe "*", the
//   `subscribed` snapshot (unfinished jobs), then `sync` events.  No polling for progress.
//   Recent finished jobs come from one jobs/list call per project at load (and again only
//   when the stream says history was lost: `recovered: false`).
// - On disconnect the page reconnects with the last cc cursor it saw, so missed events are
//   replayed in order; `recovered: false` reloads over HTTP instead.
// - Queue depth, live workers and paused scopes are in no event: GET /ops/api/stats every
//   5 s (it also keeps the JWT fresh).
// - Everything else over HTTP is asked for by a click: a job's detail (jobs/detail, once
//   per opening, then followed from the stream), its failed items, retry, pause and resume,
//   search by token and "Load older" (jobs/list).
//
// Files: this one holds the session, the stream and the job model; ops-rows.js the job
// rows, the filters, the status counts and the cancel button (BulkOps.rows, called from
// here); ops-chart.js the throughput chart, ops-detail.js the job detail view,
// ops-history.js search by token and "Load older", ops-pause.js the pause and resume
// switches.  They share window.BulkOps (set up here) and hook in through
// BulkOps.on(name, fn): "job" (a job record changed; with its sync event when live), "open"
// (Details clicked), "flush" (after each batched render), "stats" (after each stats
// answer), "loaded" (a jobs/list page arrived), "stop" (logout).
//
// Rendering: events only update the in-memory job records and mark them dirty; one
// requestAnimationFrame callback, at most every 100 ms, updates the dirty rows in place (no
// re-render of the list), the status counts and the chart.  Rows are created once per job
// (by ops-rows.js) and kept ordered newest first by binary search (here).
(() => {
  "use strict";

  const STATS_EVERY_MS = 5000;
  const FLUSH_EVERY_MS = 100; // rows, counts and chart update at most 10 times a second
  const MAX_FINISHED_ROWS = 2000; // finished jobs kept on screen; the oldest go first
  const RANK = { queued: 0, processing: 1, done: 2, rejected: 2 };
  const SAVED = "bulkjobs.ops.session";
  const EVENTS_KEPT = 200; // sync events kept per job for its detail view
  // Page sizes: ?history=N (jobs per project per jobs/list page) and ?failures=N.
  const query = new URLSearchParams(location.search);
  const size = (name, fallback) => {
    const n = parseInt(query.get(name) || "", 10);
    return n >= 1 && n <= 1000 ? n : fallback;
  };
  const config = { historyPage: size("history", 100), failuresPage: size("failures", 50) };

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  const state = {
    jwt: null, user: null, username: null, ops: false,
    names: {},                // project gid -> name
    jobs: new Map(),          // token -> job record
    order: [],                // job records, newest first
    counts: {},               // project gid -> {status: n}
    cursor: null,             // last cc cursor seen (resume point)
    config: null,
    ws: null, wsTimer: null, retryMs: 500,
    statsTimer: null, chartTimer: null,
    filter: { project: "", status: "", token: "" },
    older: {},                // project gid -> jobs/list page.cursor of the next older page
    paused: new Set(),        // paused scopes (project gids, "*" for every project)
    dirty: new Set(), countsDirty: false, chartDirty: false, frame: 0, flushed: 0,
    series: new Map(),        // server second -> Map(project -> [items, jobs])
    skew: 0,                  // server clock - browser clock, seconds
    running: false,
  };

  const chart = () => window.BulkOps.chart; // ops-chart.js
  const rows = () => window.BulkOps.rows; // ops-rows.js
  const hooks = {};
  function on(name, fn) { (hooks[name] || (hooks[name] = [])).push(fn); }
  function emit(name, ...args) { for (const fn of hooks[name] || []) fn(...args); }

  // -- HTTP ------------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function http(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    if (state.jwt) headers.Authorization = "Bearer " + state.jwt;
    const r = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const fresh = r.headers.get("Authorization");
    if (fresh && state.running) { state.jwt = fresh; save(); }
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok || (data && data.success === false)) {
      const message = (data && data.result && data.result.message) || r.statusText;
      if (r.status === 401 && state.running) logout("Your session ended; sign in again.");
      throw new HttpError(r.status, message);
    }
    return { data, jwt: fresh };
  }

  // -- session ---------------------------------------------------------------------------

  function save() {
    sessionStorage.setItem(SAVED, JSON.stringify({
      jwt: state.jwt, user: state.user, username: state.username, ops: state.ops,
    }));
  }

  async function login(event) {
    event.preventDefault();
    const username = $("username").value.trim();
    const password = $("password").value;
    $("login-error").textContent = "";
    $("login-submit").disabled = true;
    try {
      const { data, jwt } = await http("POST", "/api/login", { username, password });
      state.jwt = jwt || data.result.JWT;
      state.user = data.result.user;
      state.ops = !!data.result.ops;
      state.username = username;
      save();
      $("password").value = "";
      await start();
    } catch (err) {
      $("login-error").textContent = err.message || "Sign-in failed";
    } finally {
      $("login-submit").disabled = false;
    }
  }

  function logout(reason) {
    stop();
    sessionStorage.removeItem(SAVED);
    state.jwt = null;
    $("dash-view").hidden = true;
    $("login-view").hidden = false;
    $("logout").hidden = true;
    $("who").textContent = "";
    $("login-error").textContent = reason || "";
  }

  function stop() {
    state.running = false;
    clearInterval(state.statsTimer);
    clearInterval(state.chartTimer);
    clearTimeout(state.wsTimer);
    if (state.ws) { const ws = state.ws; state.ws = null; ws.close(1000, "bye"); }
    state.jobs.clear(); state.order = []; state.counts = {}; state.cursor = null;
    state.series.clear(); state.dirty.clear(); state.older = {};
    $("job-rows").textContent = "";
    emit("stop");
    setConn("offline");
  }

  async function start() {
    state.running = true;
    $("login-view").hidden = true;
    $("dash-view").hidden = false;
    $("logout").hidden = false;
    $("who").textContent = state.username + (state.ops ? " (ops: every project)" : "");
    const [{ data: config }] = await Promise.all([http("GET", "/ops/api/config"), refreshStats()]);
    state.config = config;
    connect();
    loadRecent(Object.keys(state.names));
    state.statsTimer = setInterval(() => refreshStats().catch(() => {}), STATS_EVERY_MS);
    state.chartTimer = setInterval(() => { state.chartDirty = true; schedule(); }, 1000);
    chart().resize();
  }

  // -- stats (queue depth, workers: not in any event) -------------------------------------

  async function refreshStats() {
    const sent = Date.now() / 1000;
    const { data } = await http("GET", "/ops/api/stats");
    state.skew = data.now - (sent + Date.now() / 1000) / 2;
    $("queue-depth").textContent = data.queue_depth === null ? "n/a" : fmt(data.queue_depth);
    $("workers-alive").textContent = fmt(data.workers.alive);
    $("workers-alive").title = data.workers.hostnames.join("\n");
    $("workers-busy").textContent = data.workers.busy + " running a job";
    $("items-rate").textContent = fmtRate(data.throughput.items_per_s);
    $("jobs-rate").textContent = fmtRate(data.throughput.jobs_per_s);
    setProjects(data.projects);
    state.paused = new Set(data.paused || []);
    emit("stats", data);
    return data;
  }

  function setProjects(names) {
    const known = Object.keys(state.names).sort().join();
    state.names = names;
    if (Object.keys(names).sort().join() === known) return;
    const select = $("filter-project");
    const current = select.value;
    select.length = 1;
    for (const [gid, name] of Object.entries(names).sort((a, b) => a[1].localeCompare(b[1]))) {
      const option = el("option", "", name);
      option.value = gid;
      select.append(option);
    }
    select.value = names[current] ? current : "";
    for (const job of state.jobs.values()) {
      if (job.els) job.els.project.textContent = projectName(job.project_gid);
    }
  }

  function projectName(gid) { return state.names[gid] || gid.slice(0, 8); }

  // -- initial and recovery loads over HTTP -------------------------------------------------

  async function loadRecent(projects) {
    // One jobs/list call per project, a few at a time.
    const queue = projects.slice();
    const worker = async () => {
      while (queue.length && state.running) {
        const gid = queue.shift();
        try {
          await loadJobs(gid, {});
        } catch (err) {
          note(`jobs of ${projectName(gid)}: ${err.message}`);
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  async function loadJobs(gid, filters) {
    // One jobs/list page of a project; without a token filter its cursor is where "Load
    // older" goes on.
    const { data } = await http("POST", `/api/p/${gid}/jobs/list`,
                                { "page.size": config.historyPage, ...filters });
    for (const job of data.result.jobs) applyJob(job, false);
    if (!filters["token.prefix"]) state.older[gid] = data.result["page.cursor"];
    emit("loaded", gid, data.result.jobs);
    return data.result.jobs;
  }

  async function reconcile(snapshot) {
    // History was lost (recovered: false): jobs we still show unfinished that are not in the
    // snapshot ended meanwhile; ask for their final state.
    const live = new Set(snapshot.map((j) => j.token));
    const stale = [...state.jobs.values()].filter(
      (j) => RANK[j.status] < 2 && !live.has(j.token));
    for (const job of stale) {
      try {
        const { data } = await http("POST", `/api/p/${job.project_gid}/jobs/get`, { job: job.token });
        applyJob(data.result.job, false);
      } catch (_) { /* gone or not visible any more */ }
    }
  }

  // -- the stream ----------------------------------------------------------------------------

  function setConn(s) { $("conn").dataset.state = s; $("conn").textContent = s; }

  function connect() {
    if (!state.running) return;
    setConn(state.cursor === null ? "connecting" : "reconnecting");
    let ws;
    try { ws = new WebSocket(state.config.stream_url); } catch (_) { retry(); return; }
    state.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ op: "auth", jwt: state.jwt }));
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (_) { return; }
      onMessage(msg);
    };
    ws.onclose = (e) => {
      if (state.ws !== ws) return; // closed on purpose
      state.ws = null;
      if (e.code === 4001) {
        // A rejected token: renew it through the API (a 401 there logs out), then retry.
        refreshStats().then(retry, retry);
        return;
      }
      retry();
    };
  }

  function retry() {
    if (!state.running) return;
    setConn("reconnecting");
    clearTimeout(state.wsTimer);
    state.wsTimer = setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 5000);
  }

  function onMessage(msg) {
    if (msg.op === "sync") {
      for (const ev of msg.sync) onEvent(ev);
    } else if (msg.op === "auth" && msg.ok) {
      const req = { op: "subscribe", project: "*" };
      if (state.cursor !== null) req.cc_cursor = state.cursor;
      state.ws.send(JSON.stringify(req));
    } else if (msg.op === "subscribed") {
      const resumed = state.cursor !== null && msg.recovered;
      if (!resumed) {
        const lost = state.cursor !== null;
        state.cursor = msg["cc.cursor"];
        if (lost) {
          note("missed events could not be replayed; reloaded");
          loadRecent(Object.keys(state.names));
          reconcile(msg.jobs);
        }
      }
      for (const job of msg.jobs) applyJob(job, false);
      state.retryMs = 500;
      setConn("live");
    } else if (msg.op === "error") {
      note(msg.message || "stream error");
    }
  }

  function onEvent(ev) {
    if (typeof ev.cursor === "number" && ev.type === "cc" &&
        (state.cursor === null || ev.cursor > state.cursor)) {
      state.cursor = ev.cursor;
    }
    if (ev.data_type !== "jobs" || !ev.data) return;
    applyJob(Object.assign({ token: ev.data_key }, ev.data), true, ev);
  }

  // -- the model ----------------------------------------------------------------------------

  function processed(info) {
    const t = info && info.total, r = info && info.remaining;
    return Number.isInteger(t) && Number.isInteger(r) ? Math.max(0, t - r) : 0;
  }

  function newer(job, d) {
    // Events carry absolute state; older states (a replay after a snapshot, a jobs/list
    // answer after a live event) must not move a job backwards.
    const a = RANK[job.status] ?? 0, b = RANK[d.status] ?? 0;
    if (a === 2) return false; // terminal is final
    if (b !== a) return b > a;
    return (d.updated_on || 0) >= (job.updated_on || 0);
  }

  function count(project, status, delta) {
    const c = state.counts[project] || (state.counts[project] = {});
    c[status] = (c[status] || 0) + delta;
    state.countsDirty = true;
  }

  function remember(job, ev) {
    // The job's sync events this page received, for its detail view (the newest kept).
    if (!ev || job.events.some((e) => e.cursor === ev.cursor)) return;
    job.events.push(ev);
    if (job.events.length > EVENTS_KEPT) job.events.shift();
  }

  function applyJob(d, live, ev) {
    let job = state.jobs.get(d.token);
    if (!job) {
      job = {
        token: d.token, project_gid: d.project_gid, job: d.job, status: d.status,
        info: d.info || {}, created_on: d.created_on || 0, updated_on: d.updated_on || 0,
        done: processed(d.info), els: null, shown: {}, events: [],
        started_on: d.started_on ?? null, finished_on: d.finished_on ?? null,
      };
      remember(job, ev);
      state.jobs.set(job.token, job);
      place(job);
      count(job.project_gid, job.status, 1);
      if (live && RANK[d.status] === 2) chart().add(job.project_gid, d.updated_on, job.done, 1);
    } else {
      remember(job, ev);
      if (!newer(job, d)) { emit("job", job, ev); return; }
      if (job.status !== d.status) {
        count(job.project_gid, job.status, -1);
        count(job.project_gid, d.status, 1);
      }
      const done = processed(d.info);
      if (live) {
        chart().add(job.project_gid, d.updated_on, Math.max(0, done - job.done),
                    RANK[d.status] === 2 && RANK[job.status] < 2 ? 1 : 0);
      }
      job.status = d.status; job.info = d.info || {}; job.updated_on = d.updated_on || 0;
      job.done = Math.max(job.done, done);
    }
    // Times the events imply until the job's detail says them exactly.
    if (d.started_on !== undefined) job.started_on = d.started_on;
    else if (job.started_on === null && job.status !== "queued") job.started_on = job.updated_on;
    if (d.finished_on !== undefined) job.finished_on = d.finished_on;
    else if (job.finished_on === null && RANK[job.status] === 2) job.finished_on = job.updated_on;
    state.dirty.add(job);
    schedule();
    emit("job", job, ev);
  }

  function before(a, b) { // newest first
    return a.created_on !== b.created_on ? a.created_on > b.created_on : a.token > b.token;
  }

  function place(job) {
    const order = state.order;
    let lo = 0, hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (before(order[mid], job)) lo = mid + 1; else hi = mid;
    }
    order.splice(lo, 0, job);
    job.els = rows().make(job);
    const next = order[lo + 1];
    $("job-rows").insertBefore(job.els.row, next ? next.els.row : null);
  }

  function trim() {
    let finished = 0;
    for (const j of state.order) if (RANK[j.status] === 2) finished++;
    for (let i = state.order.length - 1; i >= 0 && finished > MAX_FINISHED_ROWS; i--) {
      const j = state.order[i];
      if (RANK[j.status] !== 2) continue;
      state.order.splice(i, 1);
      state.jobs.delete(j.token);
      j.els.row.remove();
      count(j.project_gid, j.status, -1);
      finished--;
    }
  }

  // -- rendering (batched per animation frame, at most 10 a second) --------------------------

  function schedule() {
    // At most one update every FLUSH_EVERY_MS: each frame that changes rows costs a style,
    // layout and paint pass over the page (milliseconds with 1,000 rows), so a steady trickle
    // of events would otherwise cost that pass on every frame.  Events in between only mark
    // jobs dirty; the next update shows their latest state.
    if (state.frame) return;
    const wait = state.flushed + FLUSH_EVERY_MS - performance.now();
    if (wait <= 0) { state.frame = requestAnimationFrame(flush); return; }
    state.frame = -1;
    setTimeout(() => { state.frame = requestAnimationFrame(flush); }, wait);
  }

  function flush() {
    state.frame = 0;
    state.flushed = performance.now();
    for (const job of state.dirty) rows().render(job);
    state.dirty.clear();
    if (state.countsDirty) { trim(); rows().counts(); }
    if (state.chartDirty) chart().draw();
    emit("flush");
  }

  // -- formatting and messages ----------------------------------------------------------------

  // Shared formatters: toLocaleString() and friends build a new formatter on every call.
  const NUMBER = new Intl.NumberFormat();
  const TIME = new Intl.DateTimeFormat([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  function fmt(n) { return NUMBER.format(n); }
  function fmtRate(n) { return n >= 100 ? fmt(Math.round(n)) : Number(n).toFixed(n >= 10 ? 1 : 2); }

  let noteTimer = 0;
  function note(text, info) {
    // A problem (red) unless `info` says it is news of something that worked.
    $("message").classList.toggle("info", !!info);
    $("message").textContent = text;
    clearTimeout(noteTimer);
    noteTimer = setTimeout(() => { $("message").textContent = ""; }, 8000);
  }

  window.BulkOps = {
    state, config, RANK, TIME, $, el, http, on, emit, note, fmt, fmtRate, projectName,
    applyJob, loadJobs, processed, schedule,
  };

  // -- wiring ---------------------------------------------------------------------------------

  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(""));
  window.addEventListener("resize", () => chart().resize());

  // The other files of the page hook in before the session resumes.
  document.addEventListener("DOMContentLoaded", () => {
    const saved = JSON.parse(sessionStorage.getItem(SAVED) || "null");
    if (saved && saved.jwt) {
      Object.assign(state, saved);
      start().catch(() => logout("Sign in again."));
    }
  });
})();
