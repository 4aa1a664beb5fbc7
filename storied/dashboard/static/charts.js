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

const LANE_STATE_COLOURS = { memory: "#2ca02c", erred: "#d62728", processing: "#1f77b4", executing: "#1f77b4",
  waiting: "#aec7e8", ready: "#aec7e8", released: "#999", forgotten: "#bbb" };

// The swim lanes of a story: the scheduler and each worker a lane, each transition a mark at
// its time in the lane of the process that made it, a key's marks joined in time order (so a
// task is seen moving between scheduler and workers), failures in red.
function drawStoryLanes(node, transitions) {
  node.replaceChildren();
  if (!transitions.length) return;
  const lanes = ["scheduler", ...[...new Set(transitions.map((t) => t.where))].filter((w) => w !== "scheduler").sort()];
  const start = Math.min(...transitions.map((t) => t.timestamp));
  const stop = Math.max(...transitions.map((t) => t.timestamp));
  const span = Math.max(stop - start, 1e-6);
  const width = 1000, label = 200, lane = 36, top = 10;
  const x = (t) => label + ((t.timestamp - start) / span) * (width - label - 60);
  const y = (t) => top + lanes.indexOf(t.where) * lane + lane / 2;
  const chart = svg("svg", { width: "100%", viewBox: `0 0 ${width} ${lanes.length * lane + top + 24}`, role: "img", class: "lanes" });
  lanes.forEach((name, i) => {
    chart.append(svg("line", { x1: label, x2: width - 10, y1: top + i * lane + lane / 2, y2: top + i * lane + lane / 2, class: "lane-line" }));
    const text = svg("text", { x: 4, y: top + i * lane + lane / 2 + 4, class: "lane", "data-lane": name });
    text.textContent = name;
    chart.append(text);
  });
  const byKey = new Map();
  for (const t of transitions) byKey.set(t.key, [...(byKey.get(t.key) || []), t]);
  for (const [key, steps] of byKey) {
    const path = svg("polyline", { points: steps.map((t) => `${x(t)},${y(t)}`).join(" "), class: "key-path", stroke: colour(key) });
    chart.append(path);
  }
  const labelled = transitions.length <= 60;
  transitions.forEach((t, i) => {
    const failed = t.finish === "erred";
    const mark = svg("circle", { cx: x(t), cy: y(t), r: failed ? 6 : 4, class: `transition${failed ? " failed" : ""}`,
      fill: LANE_STATE_COLOURS[t.finish] || "#666" });
    const title = svg("title");
    title.textContent = `${t.key}: ${t.start} → ${t.finish} on ${t.where} at ${when(t.timestamp)} (${t.stimulus_id})`;
    mark.append(title);
    chart.append(mark);
    if (labelled) {
      const text = svg("text", { x: x(t) + 3, y: y(t) - 7 - (i % 2) * 8, class: "mark-label" });
      text.textContent = t.finish;
      chart.append(text);
    }
  });
  const axis = svg("text", { x: label, y: lanes.length * lane + top + 16, class: "axis" });
  axis.textContent = `${when(start)} … ${when(stop)} (${span.toFixed(3)} s)`;
  chart.append(axis);
  node.append(chart);
}

function drawAttempt(attempt, storyLink) {
  const head = attempt.blame
    ? `${attempt.key} erred because ${attempt.blame} did`
    : `${attempt.key}: attempt ${attempt.attempt ?? "?"} on ${attempt.worker || "?"} ${attempt.outcome}`;
  const box = el("div", { class: "failure attempt" },
    el("h3", {}, head, " at ", when(attempt.timestamp)),
    el("p", { class: "exception" }, `${attempt.exception_type}: ${attempt.message}`));
  if (attempt.blame && storyLink) box.append(el("p", {}, "see ", storyLink(attempt.blame)));
  box.append(el("pre", { class: "traceback" }, attempt.traceback || "(no traceback on the record)"));
  return box;
}
