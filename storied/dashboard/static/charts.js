// storied charts: plain DOM and SVG drawing shared by the dashboard and the performance report
// (storied.diagnostics.report inlines this file). No build step, no library.
"use strict";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child ?? "");
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function when(seconds) {
  if (seconds == null) return "";
  const date = new Date(seconds * 1000);
  return date.toISOString().replace("T", " ").slice(0, 23);
}

function table(node, headers, rows) {
  node.replaceChildren(el("tr", {}, ...headers.map((h) => el("th", {}, h))));
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) tr.append(cell instanceof Node ? el("td", {}, cell) : el("td", {}, String(cell ?? "")));
    node.append(tr);
  }
}

function colour(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 55%, 55%)`;
}

const STATE_ORDER = ["memory", "erred", "processing", "queued", "no-worker", "waiting", "released", "forgotten"];

function drawProgress(node, prefixes) {
  node.replaceChildren();
  if (!prefixes.length) { node.append(el("p", { class: "hint" }, "No tasks yet.")); return; }
  for (const p of prefixes) {
    const total = Math.max(p.tasks, 1);
    const bar = el("div", { class: "bar" });
    for (const state of STATE_ORDER) {
      const n = p.states[state] || 0;
      if (!n) continue;
      bar.append(el("span", { class: `state-${state}`, style: `width:${(100 * n) / total}%`, title: `${state}: ${n}` }));
    }
    const counts = STATE_ORDER.filter((s) => p.states[s]).map((s) => `${s} ${p.states[s]}`).join(", ");
    node.append(el("div", { class: "prefix", "data-prefix": p.prefix },
      el("span", { class: "prefix-name" }, p.prefix), bar,
      el("span", { class: "counts" }, `${counts || "no tasks held"}; ran ${p.executed}, erred ${p.erred}`)));
  }
}

function drawTaskStream(node, executions) {
  node.replaceChildren();
  if (!executions.length) { node.append(el("p", { class: "hint" }, "No task has run yet.")); return; }
  const lanes = [...new Set(executions.map((e) => `${e.worker} #${e.thread}`))].sort();
  const start = Math.min(...executions.map((e) => e.start));
  const stop = Math.max(...executions.map((e) => e.stop));
  const span = Math.max(stop - start, 1e-6);
  const width = 1000, label = 220, lane = 22;
  const chart = svg("svg", { width: "100%", viewBox: `0 0 ${width} ${lanes.length * lane + 24}`, role: "img" });
  lanes.forEach((name, i) => {
    const text = svg("text", { x: 4, y: i * lane + 15, class: "lane" });
    text.textContent = name;
    chart.append(text);
  });
  for (const e of executions) {
    const x = label + ((e.start - start) / span) * (width - label - 4);
    const w = Math.max(((e.stop - e.start) / span) * (width - label - 4), 1);
    const rect = svg("rect", {
      x, y: lanes.indexOf(`${e.worker} #${e.thread}`) * lane + 3, width: w, height: lane - 6,
      fill: e.outcome === "erred" ? "#d62728" : colour(e.prefix), class: `task ${e.outcome}`,
    });
    const title = svg("title");
    title.textContent = `${e.key} (${e.outcome}) ${((e.stop - e.start) * 1000).toFixed(1)} ms`;
    rect.append(title);
    chart.append(rect);
  }
  const axis = svg("text", { x: label, y: lanes.length * lane + 18, class: "axis" });
  axis.textContent = `${when(start)} … ${when(stop)} (${span.toFixed(3)} s)`;
  chart.append(axis);
  node.append(chart);
}

function drawFailure(key, f) {
  return el("div", { class: "failure" },
    el("h3", {}, `${key} failed on ${f.worker || "?"} at ${when(f.timestamp)}`),
    el("p", { class: "exception" }, f.exception || ""),
    el("pre", { class: "traceback" }, f.traceback || "(no traceback on the record)"));
}
