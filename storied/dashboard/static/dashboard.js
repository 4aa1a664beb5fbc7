// storied dashboard: fills each page from the JSON API (/api/v1). No build step, no library.
"use strict";

const params = new URLSearchParams(location.search);
const run = params.get("run");
const live = document.body.dataset.live === "true";
const REFRESH_MS = 2000;

function api(path, extra = {}) {
  const query = new URLSearchParams(extra);
  if (run) query.set("run", run);
  return fetch(`/api/v1/${path}?${query}`).then((response) => {
    if (!response.ok) return response.text().then((text) => { throw new Error(text); });
    return response.json();
  });
}

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

function withRun(href) {
  return run ? `${href}${href.includes("?") ? "&" : "?"}run=${encodeURIComponent(run)}` : href;
}

function colour(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 55%, 55%)`;
}

function showError(error) {
  document.querySelector("main").append(el("p", { class: "error" }, String(error.message || error)));
}

// ------------------------------------------------------------------ status

async function status() {
  const [workers, progress, stream] = await Promise.all([
    api("workers"), api("progress"), api("task-stream", { limit: 2000 }),
  ]);
  table(document.getElementById("workers"),
    ["name", "address", "threads", "processing", "in memory", "executed", "status"],
    workers.map((w) => [w.name, w.address, w.nthreads, w.processing, w.in_memory, w.executions, w.status]));
  drawProgress(document.getElementById("progress"), progress);
  drawTaskStream(document.getElementById("task-stream"), stream);
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

// ------------------------------------------------------------------ story

async function story() {
  const form = document.getElementById("story-form");
  const input = document.getElementById("story-query");
  input.value = params.get("q") || "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams(location.search);
    next.set("q", input.value);
    history.replaceState(null, "", `?${next}`);
    showStory(input.value).catch(showError);
  });
  if (input.value) await showStory(input.value);
}

async function showStory(query) {
  const found = await api("story", { q: query });
  const summary = document.getElementById("story-summary");
  summary.textContent = found.transitions.length
    ? `${found.transitions.length} transitions of ${found.keys.length} keys${found.truncated ? " (the first keys of the prefix only)" : ""}`
    : `Nothing on the record for “${query}”.`;
  const failures = document.getElementById("failures");
  failures.replaceChildren(...Object.entries(found.failures).map(([key, f]) =>
    el("div", { class: "failure" },
      el("h3", {}, `${key} failed on ${f.worker || "?"} at ${when(f.timestamp)}`),
      el("p", { class: "exception" }, f.exception || ""),
      el("pre", { class: "traceback" }, f.traceback || "(no traceback on the record)"))));
  table(document.getElementById("story"),
    ["time", "where", "key", "start → finish", "stimulus", "recommendations"],
    found.transitions.map((t) => [when(t.timestamp), t.where, t.key, `${t.start} → ${t.finish}`,
      t.stimulus_id, Object.entries(t.recommendations).map(([k, s]) => `${k}: ${s}`).join(", ")]));
}

// ------------------------------------------------------------------ events

async function events() {
  const topic = params.get("topic") || "";
  const counts = await api("topics");
  const topics = Object.keys(counts).sort();
  table(document.getElementById("topics"), ["topic", "events"], [
    [el("a", { href: withRun("/events") }, "(all)"), Object.values(counts).reduce((a, b) => a + b, 0)],
    ...topics.map((t) => [el("a", { href: withRun(`/events?topic=${encodeURIComponent(t)}`) }, t), counts[t]]),
  ]);
  document.getElementById("events-title").textContent = topic ? `Events: ${topic}` : "Events: all topics";
  const found = await api("events", topic ? { topic, limit: 200 } : { limit: 200 });
  const node = document.getElementById("events");
  table(node, ["time", "topic", "source", "message"], []);
  for (const e of found) node.append(eventRow(e));
  const newest = found.length ? Math.max(...found.map((e) => e.seq)) : null;
  const query = new URLSearchParams();
  if (topic) query.set("topic", topic);
  if (run) query.set("run", run);
  if (newest != null) query.set("after", newest);
  const tail = new EventSource(`/api/v1/events/tail?${query}`);
  tail.onmessage = (message) => {
    const row = eventRow(JSON.parse(message.data));
    row.classList.add("new");
    node.firstChild.after(row);
  };
}

function eventRow(e) {
  return el("tr", { "data-seq": e.seq }, el("td", {}, when(e.timestamp)), el("td", {}, e.topic),
    el("td", {}, e.source), el("td", {}, el("code", {}, JSON.stringify(e.msg))));
}

// ------------------------------------------------------------------ logs

async function logs() {
  const select = document.getElementById("logs-level");
  select.value = params.get("level") || "INFO";
  const show = async () => {
    const found = await api("logs", { level: select.value, limit: 500 });
    table(document.getElementById("logs"), ["time", "level", "where", "logger", "message"],
      found.map((l) => [when(l.timestamp), l.level, l.where, l.logger, el("pre", {}, l.message)]));
    for (const [i, l] of found.entries()) {
      document.getElementById("logs").rows[i + 1].classList.add(`level-${l.level.toLowerCase()}`);
    }
  };
  select.addEventListener("change", () => show().catch(showError));
  await show();
}

// ------------------------------------------------------------------ runs

async function runs() {
  const found = await api("runs");
  const link = (page, r) => el("a", { href: `/${page}?run=${encodeURIComponent(r.id)}` }, page);
  table(document.getElementById("runs"),
    ["run", "started", "ended", "scheduler", "workers", "executions", "erred", "events", "warnings", "ledger", "pages"],
    found.runs.reverse().map((r) => {
      const pages = el("span");
      for (const page of ["status", "story", "events", "logs"]) pages.append(link(page, r), " ");
      return [r.id, when(r.started), r.live ? "running" : (r.ended ? when(r.ended) : "did not close"),
        r.address || "", r.workers, r.executions, r.erred, r.events, r.warnings, r.ledger || "", pages];
    }));
}

// ------------------------------------------------------------------ shell

const PAGES = { status, story, events, logs, runs };

function start() {
  for (const a of document.querySelectorAll("nav a")) a.href = withRun(a.getAttribute("href"));
  if (run) document.getElementById("run-label").textContent = `run ${run}`;
  else if (live) document.getElementById("run-label").textContent = "live";
  const page = PAGES[document.body.dataset.page];
  page().catch(showError);
  if (live && document.body.dataset.page === "status") {
    setInterval(() => status().catch(showError), REFRESH_MS);
  }
}

start();
