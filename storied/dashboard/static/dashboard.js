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

function withRun(href) {
  return run ? `${href}${href.includes("?") ? "&" : "?"}run=${encodeURIComponent(run)}` : href;
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
  failures.replaceChildren(...Object.entries(found.failures).map(([key, f]) => drawFailure(key, f)));
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
