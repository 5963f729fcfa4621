// bulkjobs ops dashboard: the job rows, the filters, the status counts and the cancel
// button (plain JavaScript, see ops.js).
//
// ops.js keeps the job records and their order and calls in here (BulkOps.rows): make
// builds a job's row once when the job first appears, render updates a dirty row in place
// and counts the status chips, both from ops.js's batched render.  A filter (project,
// status, a chip, a token search from ops-history.js: BulkOps.applyFilters) only hides and
// shows the rows already there.
(() => {
  "use strict";

  const B = window.BulkOps;
  const { $, el, state, RANK, TIME, fmt, http, emit, note, schedule, projectName, applyJob } = B;
  const STATUSES = ["queued", "processing", "done", "rejected"];

  function cell(cls, text) {
    const c = el("div", cls, text);
    c.setAttribute("role", "cell");
    return c;
  }

  function makeRow(job) {
    const row = el("div", "job-row");
    row.setAttribute("role", "row");
    row.dataset.token = job.token;
    const name = cell("job");
    name.append(el("span", "name", job.job), el("code", "token", job.token));
    const project = cell("project", projectName(job.project_gid));
    const statusCell = cell("status");
    const badge = el("span", "badge");
    const paused = el("span", "paused-flag", "paused");
    paused.hidden = true;
    statusCell.append(badge, paused);
    const progress = cell("progress");
    const pct = el("span", "pct");
    const bar = el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    const fill = el("div", "fill");
    bar.append(fill);
    progress.append(pct, bar);
    const failed = cell("failed");
    const updated = cell("updated");
    const actions = cell("actions");
    const cancel = el("button", "cancel", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => cancelJob(job, cancel));
    const open = el("button", "open", "Details");
    open.type = "button";
    open.addEventListener("click", () => emit("open", job));
    actions.append(cancel, open);
    row.append(name, project, statusCell, progress, failed, updated, actions);
    return { row, project, badge, paused, pct, bar, fill, failed, updated, cancel };
  }

  function render(job) {
    const e = job.els, s = job.shown, info = job.info;
    if (!e) return;
    if (s.status !== job.status) {
      e.row.dataset.status = job.status;
      e.badge.textContent = job.status;
      e.badge.className = "badge " + job.status;
      e.cancel.hidden = RANK[job.status] === 2;
      s.status = job.status;
    }
    const paused = !!info.paused && RANK[job.status] < 2;
    if (s.paused !== paused) { e.paused.hidden = !paused; e.row.dataset.paused = paused; s.paused = paused; }
    const total = Number.isInteger(info.total) ? info.total : null;
    const pct = total ? Math.floor((100 * job.done) / total)
      : (job.status === "done" ? 100 : 0);
    const label = total === null ? (job.status === "done" ? "100%" : "–")
      : `${pct}% · ${fmt(job.done)} / ${fmt(total)}`;
    if (s.pct !== pct) {
      e.fill.style.transform = `scaleX(${pct / 100})`;
      e.bar.setAttribute("aria-valuenow", String(pct));
      s.pct = pct;
    }
    if (s.label !== label) { e.pct.textContent = label; s.label = label; }
    const errors = Array.isArray(info.errors) ? info.errors : [];
    const failKey = `${info.failed || 0}/${errors.length}/${info.error || ""}`;
    if (s.fail !== failKey) { renderFailures(e.failed, info, errors); s.fail = failKey; }
    const when = job.updated_on ? TIME.format(new Date(job.updated_on * 1000)) : "";
    if (s.when !== when) { e.updated.textContent = when; s.when = when; }
    e.row.hidden = !matches(job);
  }

  function renderFailures(cell, info, errors) {
    cell.textContent = "";
    if (info.error) cell.append(el("span", "job-error", info.error));
    const n = info.failed || 0;
    if (!n) {
      if (!info.error) cell.append(el("span", "ok", "0"));
      return;
    }
    const details = el("details");
    details.append(el("summary", "", `${fmt(n)} failed`));
    const list = el("ul");
    for (const item of errors) {
      const li = el("li");
      li.append(el("code", "", String(item.gid || "").slice(0, 8)), document.createTextNode(" " + (item.reason || "")));
      li.title = item.gid || "";
      list.append(li);
    }
    if (n > errors.length) list.append(el("li", "", `… and ${fmt(n - errors.length)} more`));
    details.append(list);
    cell.append(details);
  }

  function matches(job) {
    const f = state.filter;
    if (f.project && job.project_gid !== f.project) return false;
    if (f.token && !job.token.startsWith(f.token)) return false;
    if (f.status === "unfinished") return RANK[job.status] < 2;
    return !f.status || job.status === f.status;
  }

  function applyFilters() {
    for (const job of state.order) job.els.row.hidden = !matches(job);
    for (const chip of document.querySelectorAll(".chip")) {
      chip.classList.toggle("active", chip.dataset.status === state.filter.status);
    }
    state.countsDirty = true; state.chartDirty = true;
    schedule();
  }

  function renderCounts() {
    state.countsDirty = false;
    const totals = {};
    for (const [project, c] of Object.entries(state.counts)) {
      if (state.filter.project && project !== state.filter.project) continue;
      for (const s of STATUSES) totals[s] = (totals[s] || 0) + (c[s] || 0);
    }
    for (const chip of document.querySelectorAll(".chip")) {
      chip.querySelector("b").textContent = fmt(totals[chip.dataset.status] || 0);
    }
    $("empty").hidden = state.order.length > 0;
  }

  // -- cancel ---------------------------------------------------------------------------------

  async function cancelJob(job, button) {
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      const { data } = await http("POST", `/api/p/${job.project_gid}/jobs/cancel`, { job: job.token });
      applyJob(data.result.job, false);
    } catch (err) {
      note(`cancel ${job.token.slice(0, 8)}: ${err.message}`);
      button.disabled = false;
      button.textContent = "Cancel";
    }
  }

  B.rows = { make: makeRow, render, counts: renderCounts };
  B.applyFilters = applyFilters;

  // Registered before the other files' own listeners on the project filter, which read
  // the filter this one sets.
  $("filter-project").addEventListener("change", (e) => { state.filter.project = e.target.value; applyFilters(); });
  $("filter-status").addEventListener("change", (e) => { state.filter.status = e.target.value; applyFilters(); });
  for (const chip of document.querySelectorAll(".chip")) {
    chip.addEventListener("click", () => {
      const s = chip.dataset.status;
      state.filter.status = state.filter.status === s ? "" : s;
      $("filter-status").value = state.filter.status;
      applyFilters();
    });
  }
})();
