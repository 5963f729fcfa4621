// bulkjobs ops dashboard: pause and resume (plain JavaScript, see ops.js).
//
// The switches act on the project selected in the filter (jobs/pause, jobs/resume: its
// owners and ops users) or, with "All projects" selected, on every project at once
// (/ops/api/jobs/pause|resume: ops users only).  Which scopes are paused comes with the
// stats the page asks for anyway; a paused job says so in its own events (info.paused),
// which its row and detail show.
(() => {
  "use strict";

  const B = window.BulkOps;
  const { $, state, http } = B;

  function scope() { return state.filter.project || "*"; }

  function render() {
    const s = scope(), all = s === "*";
    const allowed = !all || state.ops;
    $("pause").hidden = !allowed;
    $("resume").hidden = !allowed;
    $("pause").textContent = all ? "Pause all" : "Pause project";
    $("resume").textContent = all ? "Resume all" : "Resume project";
    const own = state.paused.has(s), every = state.paused.has("*");
    $("pause-state").hidden = !(own || every);
    $("pause-state").textContent = own ? "paused" : "paused (every project)";
    $("pause-state").dataset.scope = own ? s : "*";
  }

  async function toggle(pause) {
    const s = scope();
    const path = s === "*" ? `/ops/api/jobs/${pause ? "pause" : "resume"}`
      : `/api/p/${s}/jobs/${pause ? "pause" : "resume"}`;
    const buttons = [$("pause"), $("resume")];
    for (const b of buttons) b.disabled = true;
    try {
      const { data } = await http("POST", path);
      const result = s === "*" ? data : data.result;
      if (pause) state.paused.add(s); else state.paused.delete(s);
      if (!pause) {
        B.note(result.paused && s !== "*" ? "still paused: every project's jobs are"
          : `resumed ${result.resumed.length} job(s)`, true);
      }
    } catch (err) {
      B.note(`${pause ? "pause" : "resume"}: ${err.message}`);
    } finally {
      for (const b of buttons) b.disabled = false;
      render();
    }
  }

  $("pause").addEventListener("click", () => toggle(true));
  $("resume").addEventListener("click", () => toggle(false));
  $("filter-project").addEventListener("change", render);
  B.on("stats", render);
})();
