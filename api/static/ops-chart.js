// bulkjobs ops dashboard: the throughput chart (plain JavaScript, see ops.js): items/s and
// finished jobs/s per server second over the last two minutes, summed from the stream's
// events as ops.js applies them (BulkOps.chart.add), drawn on a canvas in ops.js's batched
// render (BulkOps.chart.draw).
(() => {
  "use strict";

  const B = window.BulkOps;
  const { $, state, schedule } = B;
  const CHART_SECONDS = 120;

  function add(project, when, items, jobs) {
    if (!items && !jobs) return;
    const second = Math.floor(when || Date.now() / 1000 + state.skew);
    let bucket = state.series.get(second);
    if (!bucket) { bucket = new Map(); state.series.set(second, bucket); }
    const v = bucket.get(project) || [0, 0];
    v[0] += items; v[1] += jobs;
    bucket.set(project, v);
    state.chartDirty = true;
  }

  function resize() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(300, canvas.clientWidth) * ratio;
    canvas.height = canvas.clientHeight * ratio;
    state.chartDirty = true;
    schedule();
  }

  function draw() {
    state.chartDirty = false;
    const canvas = $("chart");
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.width / ratio, h = canvas.height / ratio;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const now = Math.floor(Date.now() / 1000 + state.skew) - 1; // the current second is partial
    for (const second of state.series.keys()) {
      if (second < now - CHART_SECONDS) state.series.delete(second);
    }
    const items = [], jobs = [];
    for (let i = CHART_SECONDS - 1; i >= 0; i--) {
      const bucket = state.series.get(now - i);
      let a = 0, b = 0;
      if (bucket) {
        for (const [project, v] of bucket) {
          if (state.filter.project && project !== state.filter.project) continue;
          a += v[0]; b += v[1];
        }
      }
      items.push(a); jobs.push(b);
    }
    const left = 48, right = 40, top = 8, bottom = 18;
    const pw = w - left - right, ph = h - top - bottom;
    const maxItems = niceMax(Math.max(...items)), maxJobs = niceMax(Math.max(...jobs));
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e2e5eb"; ctx.fillStyle = "#6b7385"; ctx.lineWidth = 1;
    for (let g = 0; g <= 4; g++) {
      const y = top + ph - (ph * g) / 4;
      ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + pw, y + 0.5); ctx.stroke();
      ctx.textAlign = "right"; ctx.fillText(fmtShort((maxItems * g) / 4), left - 6, y + 4);
      ctx.textAlign = "left"; ctx.fillText(fmtShort((maxJobs * g) / 4), left + pw + 6, y + 4);
    }
    ctx.textAlign = "center";
    for (let s = 0; s <= CHART_SECONDS; s += 30) {
      ctx.fillText(s === 0 ? "now" : `-${s}s`, left + pw - (pw * s) / CHART_SECONDS, h - 4);
    }
    const x = (i) => left + (pw * i) / (CHART_SECONDS - 1);
    const series = [[items, maxItems, getVar("--items"), true], [jobs, maxJobs, getVar("--jobs"), false]];
    for (const [values, max, color, filled] of series) {
      ctx.beginPath();
      values.forEach((v, i) => {
        const y = top + ph - (ph * v) / max;
        if (i === 0) ctx.moveTo(x(i), y); else ctx.lineTo(x(i), y);
      });
      ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.stroke();
      if (filled) {
        ctx.lineTo(x(values.length - 1), top + ph); ctx.lineTo(x(0), top + ph); ctx.closePath();
        ctx.globalAlpha = 0.12; ctx.fillStyle = color; ctx.fill(); ctx.globalAlpha = 1;
      }
    }
  }

  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  const cssVars = {};
  function getVar(name) {
    return cssVars[name] || (cssVars[name] = getComputedStyle(document.documentElement).getPropertyValue(name).trim());
  }

  function fmtShort(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(n >= 1e4 ? 0 : 1) + "k";
    return String(Math.round(n * 100) / 100);
  }

  B.chart = { add, draw, resize };
})();
