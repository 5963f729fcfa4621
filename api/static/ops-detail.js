// bulkjobs ops dashboard: the job detail view (plain JavaScript, see ops.js).
//
// "Details" on a row opens it: one jobs/detail call gives what no event carries (selection,
// parameters, started and finished times) and the job's events the sync log still holds;
// failed items come from jobs/failures, a page at a time ("More failures").  From then on
// the view follows the job from the stream like the rows do: status, progress, rate, ETA
// and the events list change with each sync event, with no further HTTP request.
(() => {
  "use strict";

  const B = window.BulkOps;
  const { $, el, state, http, fmt, fmtRate, RANK } = B;
  const WHEN = new Intl.DateTimeFormat([], {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });

  const view = {
    job: null, seq: 0, replayed: [], complete: true, failures: 0, cursor: null,
    dirty: false, ticker: 0,
  };

  function now() { return Date.now() / 1000 + state.skew; }
  function when(t) { return t ? WHEN.format(new Date(t * 1000)) : "–"; }
  function duration(s) {
    if (s === null || !(s >= 0)) return "–";
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? `${h} h ${m % 60} min` : `${m} min ${Math.round(s % 60)} s`;
  }

  async function open(job) {
    const seq = ++view.seq;
    Object.assign(view, { job, replayed: [], complete: true, failures: 0, cursor: null });
    $("detail").hidden = false;
    $("detail").dataset.token = job.token;
    $("d-kind").textContent = job.job;
    $("d-token").textContent = job.token;
    $("d-project").textContent = B.projectName(job.project_gid);
    for (const id of ["d-selection", "d-params", "d-failures", "d-events", "d-retried",
                      "d-selection-size", "d-events-note"]) $(id).textContent = "";
    $("d-more-failures").hidden = true;
    $("detail").dataset.loaded = "false";
    renderLive();
    $("detail").scrollIntoView({ block: "nearest" });
    try {
      const { data } = await http("POST", `/api/p/${job.project_gid}/jobs/detail`,
                                  { job: job.token });
      if (seq !== view.seq) return;
      const d = data.result.job;
      B.applyJob(d, false);
      job.started_on = d.started_on; job.finished_on = d.finished_on;
      view.replayed = data.result.events;
      view.complete = data.result["events.complete"];
      $("d-selection").textContent = JSON.stringify(d.selection, null, 1);
      $("d-selection-size").textContent = d["selection.size"] > d.selection.length
        ? `first ${fmt(d.selection.length)} of ${fmt(d["selection.size"])} entries`
        : `${fmt(d["selection.size"])} ${d["selection.size"] === 1 ? "entry" : "entries"}`;
      $("d-params").textContent = Object.keys(d.params).length
        ? JSON.stringify(d.params, null, 1) : "none";
      renderLive();
      await moreFailures(seq);
      $("detail").dataset.loaded = "true";
    } catch (err) {
      B.note(`job ${job.token.slice(0, 8)}: ${err.message}`);
    }
  }

  function close() {
    view.seq++;
    view.job = null;
    $("detail").hidden = true;
    clearInterval(view.ticker);
    view.ticker = 0;
  }

  async function moreFailures(seq = view.seq) {
    const job = view.job;
    if (!job) return;
    if (view.cursor === null && view.failures > 0) {
      // Everything listed was read; the job failed more items since: read them again.
      $("d-failures").textContent = "";
      view.failures = 0;
    }
    const body = { job: job.token, "page.size": B.config.failuresPage };
    if (view.cursor) body["page.cursor"] = view.cursor;
    $("d-more-failures").disabled = true;
    try {
      const { data } = await http("POST", `/api/p/${job.project_gid}/jobs/failures`, body);
      if (seq !== view.seq) return;
      for (const item of data.result.failures) {
        const li = el("li");
        li.append(el("code", "", item.gid), document.createTextNode(" " + item.reason));
        $("d-failures").append(li);
      }
      view.failures += data.result.failures.length;
      view.cursor = data.result["page.cursor"];
      renderFailures();
    } finally {
      $("d-more-failures").disabled = false;
    }
  }

  function renderFailures() {
    const failed = (view.job && view.job.info.failed) || 0;
    $("d-failed-count").textContent = `${fmt(view.failures)} of ${fmt(failed)} shown`;
    $("d-more-failures").hidden = !(view.cursor || view.failures < failed);
  }

  function renderLive() {
    const job = view.job;
    if (!job) return;
    view.dirty = false;
    const info = job.info || {};
    const badge = $("d-status");
    badge.textContent = job.status;
    badge.className = "badge " + job.status;
    $("d-paused").hidden = !(info.paused && RANK[job.status] < 2);
    $("d-error").textContent = info.error || "";
    $("d-created").textContent = when(job.created_on);
    $("d-started").textContent = when(job.started_on);
    $("d-finished").textContent = when(job.finished_on);
    const total = Number.isInteger(info.total) ? info.total : null;
    const done = B.processed(info);
    $("d-progress").textContent = total === null ? "–"
      : `${fmt(done)} / ${fmt(total)} (${fmt(info.failed || 0)} failed)`;
    const end = job.finished_on || (RANK[job.status] === 2 ? job.updated_on : now());
    const spent = job.started_on ? Math.max(0, end - job.started_on) : null;
    $("d-duration").textContent = duration(spent);
    const rate = spent ? done / spent : null;
    $("d-rate").textContent = rate === null ? "–" : `${fmtRate(rate)} items/s`;
    const remaining = Number.isInteger(info.remaining) ? info.remaining : null;
    $("d-eta").textContent = job.status === "processing" && rate && remaining !== null
      ? duration(remaining / rate) : "–";
    $("d-retry").hidden = !(RANK[job.status] === 2 && (info.failed || 0) > 0);
    renderFailures();
    renderEvents();
    const running = RANK[job.status] < 2;
    if (running && !view.ticker) view.ticker = setInterval(renderLive, 1000);
    if (!running && view.ticker) { clearInterval(view.ticker); view.ticker = 0; }
  }

  function renderEvents() {
    const byCursor = new Map();
    for (const ev of view.replayed) byCursor.set(ev.cursor, ev);
    let live = 0;
    for (const ev of view.job.events) {
      if (!byCursor.has(ev.cursor)) live++;
      byCursor.set(ev.cursor, ev);
    }
    const events = [...byCursor.values()].sort((a, b) => a.cursor - b.cursor);
    const list = $("d-events");
    if (list.dataset.key === `${events.length}/${events.at(-1)?.cursor}`) return;
    list.dataset.key = `${events.length}/${events.at(-1)?.cursor}`;
    list.textContent = "";
    for (const ev of events) {
      const d = ev.data || {}, info = d.info || {};
      const row = el("div", "d-event");
      row.dataset.cursor = ev.cursor;
      const total = Number.isInteger(info.total) ? `${fmt(B.processed(info))} / ${fmt(info.total)}` : "";
      const flags = [info.failed ? `${fmt(info.failed)} failed` : "",
                     info.paused === true ? "paused" : info.paused === false ? "resumed" : "",
                     info.error || ""].filter(Boolean).join(" · ");
      row.append(el("span", "cursor", `#${ev.cursor}`), el("span", "", when(d.updated_on)),
                 el("span", "", ev.action), el("span", "status", d.status || ""),
                 el("span", "", total), el("span", "", flags));
      list.append(row);
    }
    $("d-events-note").textContent =
      `${fmt(events.length)} events: ${fmt(events.length - live)} from the log, ` +
      `${fmt(live)} more seen live` +
      (view.complete ? "" : "; the log no longer holds all of them");
  }

  async function retry() {
    const job = view.job;
    $("d-retry").disabled = true;
    try {
      const { data } = await http("POST", `/api/p/${job.project_gid}/jobs/retry`, { job: job.token });
      const token = data.result["job.token"];
      const out = $("d-retried");
      out.textContent = "";
      const link = el("button", "link", token);
      link.type = "button";
      link.addEventListener("click", () => {
        const next = state.jobs.get(token);
        if (next) open(next);
      });
      out.append(document.createTextNode("Retry queued: "), link);
      out.dataset.token = token;
    } catch (err) {
      B.note(`retry ${job.token.slice(0, 8)}: ${err.message}`);
    } finally {
      $("d-retry").disabled = false;
    }
  }

  B.on("open", open);
  B.on("stop", close);
  B.on("job", (job) => { if (view.job && job.token === view.job.token) view.dirty = true; });
  B.on("flush", () => { if (view.dirty) renderLive(); });
  $("d-close").addEventListener("click", close);
  $("d-retry").addEventListener("click", retry);
  $("d-more-failures").addEventListener("click", () => moreFailures());
})();
