// bulkjobs ops dashboard: search by token and paging through history (plain JavaScript,
// see ops.js).
//
// Both ask jobs/list when clicked, never on their own: "Search" asks each project in view
// (the one selected, or every one) for the jobs whose token starts with the prefix typed
// and shows only those rows; "Load older" asks for the next page of each project in view
// from the page.cursor of the page before.  The jobs found are followed from the stream
// like every other row.
(() => {
  "use strict";

  const B = window.BulkOps;
  const { $, state } = B;
  const PREFIX = /^[0-9a-f-]{1,36}$/;

  function inView() {
    return state.filter.project ? [state.filter.project] : Object.keys(state.names);
  }

  async function each(gids, filters) {
    const found = [];
    await Promise.all(gids.map(async (gid) => {
      try {
        found.push(...await B.loadJobs(gid, filters(gid)));
      } catch (err) {
        B.note(`jobs of ${B.projectName(gid)}: ${err.message}`);
      }
    }));
    return found;
  }

  async function search(event) {
    event.preventDefault();
    const prefix = $("search").value.trim().toLowerCase();
    if (!prefix) { clear(); return; }
    if (!PREFIX.test(prefix)) {
      $("search-result").textContent = "a token prefix is hex digits and dashes";
      return;
    }
    $("search-submit").disabled = true;
    try {
      const found = await each(inView(), () => ({ "token.prefix": prefix }));
      state.filter.token = prefix;
      $("search-clear").hidden = false;
      $("search-result").textContent = found.length === 1 ? "1 job found"
        : `${found.length} jobs found`;
      B.applyFilters();
    } finally {
      $("search-submit").disabled = false;
    }
  }

  function clear() {
    $("search").value = "";
    $("search-result").textContent = "";
    $("search-clear").hidden = true;
    state.filter.token = "";
    B.applyFilters();
  }

  async function older() {
    const gids = inView().filter((gid) => state.older[gid]);
    $("load-older").disabled = true;
    try {
      await each(gids, (gid) => ({ "page.cursor": state.older[gid] }));
    } finally {
      $("load-older").disabled = false;
      showOlder();
    }
  }

  function showOlder() {
    $("load-older").hidden = !inView().some((gid) => state.older[gid]);
  }

  $("search-form").addEventListener("submit", search);
  $("search-clear").addEventListener("click", clear);
  $("load-older").addEventListener("click", older);
  $("filter-project").addEventListener("change", showOlder);
  B.on("loaded", showOlder);
  B.on("stop", () => { clear(); showOlder(); });
})();
