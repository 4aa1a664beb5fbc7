// storied dashboard: fills each page from the JSON API (/api/v1). No build step, no library.
"use strict";

const params = new URLSearchParams(location.search);
const run = params.get("run");
const live = document.body.dataset.live === "true";
// the newest task runs the status page draws (Dask's task stream keeps 1000 too)
const TASK_STREAM_BARS = 1000;

function api(path, extra = {}) {
  const query = new URLSearchParams(extra);
  if (run) query.set("run", run);
  return fetch(`/api/v1/${path}?${query}`).then((response) => {
    if (!response.ok) return response.text().then((text) => { throw new Error(errorText(text)); });
    return response.json();
  });
}

// A bad parameter's 400 is JSON ({error, parameter, accepted}): its error says it all.
function errorText(body) {
  try { return JSON.parse(body).error || body; } catch { return body; }
}

// A filter form's inputs, filled from the page's address: a filtered page can be shared and
// reloaded (the API reads the same strings).
function fillForm(form) {
  for (const input of form.elements) if (input.name && params.has(input.name)) input.value = params.get(input.name);
}

// The form's inputs that are set, also put in the page's address.
function formFilters(form) {
  const found = {};
  const address = new URLSearchParams(location.search);
  for (const input of form.elements) {
    if (!input.name) continue;
    if (input.value) {
      found[input.name] = input.value;
      address.set(input.name, input.value);
    } else {
      address.delete(input.name);
    }
  }
  history.replaceState(null, "", `?${address}`);
  return found;
}

function spanText(filters) {
  if (filters.since && filters.until) return ` from ${filters.since} to ${filters.until}`;
  if (filters.since) return ` from ${filters.since}`;
  return filters.until ? ` before ${filters.until}` : "";
}

function withRun(href) {
  return run ? `${href}${href.includes("?") ? "&" : "?"}run=${encodeURIComponent(run)}` : href;
}

function showError(error) {
  clearError();
  document.querySelector("main").append(el("p", { class: "error" }, String(error.message || error)));
}

function clearError() {
  for (const shown of document.querySelectorAll("main > p.error")) shown.remove();
}

// Pages of a list: "newer" and "older" buttons under it, calling show(offset).
// `pushed`: rows a live tail added above the page since it was read; they are counted, and
// the next page starts below them, since every older row has moved down as many places.
function pager(node, offset, limit, shown, total, show, pushed = 0) {
  const back = el("button", { type: "button", class: "newer" }, "◀ previous");
  const next = el("button", { type: "button", class: "older" }, "next ▶");
  back.disabled = offset <= 0;
  next.disabled = total != null ? offset + shown >= total : shown < limit;
  back.onclick = () => show(Math.max(offset - limit, 0)).catch(showError);
  next.onclick = () => show(offset + limit + pushed).catch(showError);
  const where = total != null
    ? `${total ? offset + 1 : 0}–${offset + shown} of ${total}`
    : `${offset + 1}–${offset + shown + pushed}`;
  node.replaceChildren(back, el("span", { class: "page-at" }, ` ${where} `), next);
}

// Rows a page of a list shows: ?limit= in the page's address, or the list's default.
function pageSize(fallback) {
  return Number(params.get("limit")) || fallback;
}

// Live: what the server pushes on `path` (server-sent events), handed to onData as it comes.
// The page never polls; the server sends only when something changed.
function subscribe(path, query, onData, event = "message") {
  const address = new URLSearchParams(query);
  if (run) address.set("run", run);
  const source = new EventSource(`/api/v1/${path}?${address}`);
  source.addEventListener(event, (message) => onData(JSON.parse(message.data)));
  return source;
}

// Counts the pushes a page took (the browser tests read it).
function countPush(name) {
  document.body.dataset[name] = Number(document.body.dataset[name] || 0) + 1;
}

function storyLink(name) {
  return el("a", { href: withRun(`/story?q=${encodeURIComponent(name)}`), class: "story-link" }, name);
}

// ------------------------------------------------------------------ status

function bytes(count) {
  if (count == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (count >= 1024 && unit < units.length - 1) { count /= 1024; unit += 1; }
  return `${count.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function drawStatus(found) {
  table(document.getElementById("workers"),
    ["name", "address", "threads", "memory", "shm", "CPU", "processing", "in memory", "executed", "status"],
    found.workers.map((w) => [w.name, w.address, w.nthreads, bytes(w.memory), w.shm ? bytes(w.shm) : "", w.cpu == null ? "" : `${w.cpu.toFixed(0)} %`,
      w.processing, w.in_memory, w.executions, w.status]));
  drawProgress(document.getElementById("progress"), found.progress);
  drawTaskStream(document.getElementById("task-stream"), found.task_stream);
}

async function status() {
  if (!live) { drawStatus(await api("status", { limit: TASK_STREAM_BARS })); return; }
  // live: the server pushes the whole status each time the run changes (no polling)
  subscribe("status/stream", { limit: TASK_STREAM_BARS }, (found) => {
    drawStatus(found);
    countPush("pushes");
  }, "status");
}

// ------------------------------------------------------------------ tasks

async function tasks() {
  const form = document.getElementById("tasks-form");
  for (const name of ["prefix", "state"]) form.elements[name].value = params.get(name) || "";
  const limit = pageSize(100);
  let push = null;
  const show = async (offset) => {
    const filters = {};
    for (const name of ["prefix", "state"]) if (form.elements[name].value) filters[name] = form.elements[name].value;
    const query = { ...filters, offset, limit };
    const draw = (found) => {
      table(document.getElementById("tasks"), ["key", "prefix", "state", "ran", "erred", "last worker", "last duration"],
        found.tasks.map((t) => [storyLink(t.key), t.prefix, t.state ?? "", t.executed, t.erred, t.worker ?? "",
          t.duration == null ? "" : `${(t.duration * 1000).toFixed(1)} ms`]));
      pager(document.getElementById("tasks-pager"), offset, limit, found.tasks.length, found.total, show);
      document.getElementById("tasks-total").textContent =
        `${found.total} tasks${filters.prefix ? ` of prefix ${filters.prefix}` : ""}${filters.state ? ` in state ${filters.state}` : ""}` +
        (live ? "; live: this page follows the run as it changes." : ".");
    };
    if (push) push.close();
    draw(await api("tasks", query)); // a refused filter is told here, on the page
    // live: the same page and filters again each time the run's tasks change (no polling)
    if (live) push = subscribe("tasks/stream", query, (found) => { draw(found); countPush("taskPushes"); }, "tasks");
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); show(0).catch(showError); });
  await show(0);
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
    showStory(input.value, 0).catch(showError);
  });
  if (input.value) await showStory(input.value, 0);
}

async function showStory(query, offset) {
  const limit = pageSize(200);
  const found = await api("story", { q: query, offset, limit });
  const summary = document.getElementById("story-summary");
  summary.textContent = found.total
    ? `${found.total} transitions of ${found.keys.length} keys${found.truncated ? " (the first keys of the prefix only)" : ""}`
    : `Nothing on the record for “${query}”.`;
  const failures = document.getElementById("failures");
  failures.replaceChildren(...found.attempts.map((a) => drawAttempt(a, storyLink)));
  const related = document.getElementById("story-related");
  related.replaceChildren();
  if (found.keys.length > 1 || (found.keys.length && found.keys[0] !== query)) {
    related.append("keys: ");
    for (const key of found.keys) related.append(storyLink(key), " ");
  }
  drawStoryLanes(document.getElementById("story-lanes"), found.transitions);
  table(document.getElementById("story"),
    ["time", "where", "key", "start → finish", "stimulus", "recommendations"],
    found.transitions.map((t) => {
      const recommended = el("span");
      for (const [k, s] of Object.entries(t.recommendations)) recommended.append(storyLink(k), `: ${s} `);
      return [when(t.timestamp), t.where, storyLink(t.key), `${t.start} → ${t.finish}`, storyLink(t.stimulus_id), recommended];
    }));
  pager(document.getElementById("story-pager"), offset, limit, found.transitions.length, found.total,
    (next) => showStory(query, next));
}

// ------------------------------------------------------------------ events

async function events() {
  const topic = params.get("topic") || "";
  const form = document.getElementById("events-form");
  fillForm(form);
  const counts = await api("topics");
  let span = {};
  // a topic's link keeps the time window: the same span of another topic
  const topicLink = (name, query) => el("a", { href: withRun(`/events?${new URLSearchParams({ ...query, ...span })}`) }, name);
  const drawTopics = () => table(document.getElementById("topics"), ["topic", "events"], [
    [topicLink("(all)", {}), Object.values(counts).reduce((a, b) => a + b, 0)],
    ...Object.keys(counts).sort().map((t) => [topicLink(t, { topic: t }), counts[t]]),
  ]);
  document.getElementById("events-title").textContent = topic ? `Events: ${topic}` : "Events: all topics";
  const node = document.getElementById("events");
  const limit = pageSize(200);
  let newest = null;
  let tail = null;
  // older pages go on below the oldest event shown (a cursor, so new events do not shift them)
  const more = async (before) => {
    const found = await api("events", { ...(topic ? { topic } : {}), ...span, limit, ...(before != null ? { before } : {}) });
    for (const e of found) node.append(eventRow(e));
    if (newest == null && found.length) newest = Math.max(...found.map((e) => e.seq));
    const older = document.getElementById("events-older");
    older.disabled = found.length < limit;
    const oldest = found.length ? Math.min(...found.map((e) => e.seq)) : null;
    older.onclick = () => more(oldest).catch(showError);
  };
  const apply = async () => {
    span = formFilters(form);
    if (tail) tail.close();
    tail = null;
    newest = null;
    clearError();
    drawTopics();
    table(node, ["time", "topic", "source", "message"], []);
    // the live tail goes on while the window is open-ended; a window with an end is history
    const tailing = !span.until;
    document.body.dataset.tailing = tailing;
    document.getElementById("events-hint").textContent = `Newest first${spanText(span)}; ` +
      (tailing ? "new events appear as they are recorded." : "no live tail while “to” is set.");
    await more(null);
    if (tailing) tail = openTail(topic, span, newest, node, counts, drawTopics);
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); apply().catch(showError); });
  await apply();
}

function openTail(topic, span, newest, node, counts, drawTopics) {
  const query = { ...span };
  if (topic) query.topic = topic;
  if (newest != null) query.after = newest;
  return subscribe("events/tail", query, (arrived) => {
    const row = eventRow(arrived);
    row.classList.add("new");
    node.firstChild.after(row);
    counts[arrived.topic] = (counts[arrived.topic] || 0) + 1;
    drawTopics();
  });
}

function eventRow(e) {
  return el("tr", { "data-seq": e.seq }, el("td", {}, when(e.timestamp)), el("td", {}, e.topic),
    el("td", {}, e.source), el("td", {}, el("code", {}, JSON.stringify(e.msg))));
}

// ------------------------------------------------------------------ logs

async function logs() {
  const form = document.getElementById("logs-form");
  const logger = document.getElementById("logs-logger");
  document.getElementById("logs-level").value = "INFO";
  // every logger of the run and each of its parents (a parent holds its children, as in logging)
  const tree = {};
  for (const [name, count] of Object.entries(await api("loggers"))) {
    const parts = name.split(".");
    for (let i = 1; i <= parts.length; i++) {
      const parent = parts.slice(0, i).join(".");
      tree[parent] = (tree[parent] || 0) + count;
    }
  }
  for (const name of Object.keys(tree).sort()) logger.append(el("option", { value: name }, `${name} (${tree[name]})`));
  fillForm(form);
  const node = document.getElementById("logs");
  const limit = pageSize(200);
  let filters = {};
  let tail = null;
  let offset = 0;
  // the records shown, so one the page and the tail both bring is shown once
  let shown = new Set();
  let arrived = []; // records the tail brought before the newest page was drawn
  let drawn = false;
  let read = 0; // rows of the page as read
  let pushed = 0; // rows the tail added above them
  const drawPager = () => pager(document.getElementById("logs-pager"), offset, limit, read, null, show, pushed);
  const identity = (l) => `${l.timestamp}|${l.where}|${l.logger}|${l.message}`;
  const prepend = (l) => {
    if (offset !== 0 || shown.has(identity(l))) return; // new records go on the newest page
    shown.add(identity(l));
    const row = logRow(l);
    row.classList.add("new");
    node.firstChild.after(row);
    pushed += 1;
    drawPager();
  };
  const show = async (at) => {
    const found = await api("logs", { ...filters, limit, offset: at });
    offset = at;
    table(node, ["time", "level", "where", "logger", "message"], []);
    for (const l of found) node.append(logRow(l));
    shown = new Set(found.map(identity));
    read = found.length;
    pushed = 0;
    drawPager();
  };
  const apply = async () => {
    filters = formFilters(form);
    clearError();
    if (tail) tail.close();
    tail = null;
    // live, with no end to the window, new records are pushed as they reach the scheduler
    const tailing = live && !filters.until;
    document.body.dataset.tailing = tailing;
    const of = filters.logger ? ` of ${filters.logger} and its children` : "";
    document.getElementById("logs-hint").textContent = `Newest first, ${filters.level} and above${of}${spanText(filters)}` +
      (tailing ? "; new records appear as they are logged." : (live ? "; no live tail while “to” is set." : "."));
    drawn = false;
    arrived = [];
    if (tailing) {
      // opened before the page is read: a record logged in between is in one or the other
      tail = subscribe("logs/tail", filters, (l) => {
        if (drawn) prepend(l); else arrived.push(l);
        countPush("logPushes");
      });
      await new Promise((resolve) => { tail.onopen = resolve; tail.onerror = resolve; });
    }
    await show(0);
    drawn = true;
    for (const l of arrived) prepend(l);
    arrived = [];
  };
  for (const select of form.querySelectorAll("select")) select.addEventListener("change", () => apply().catch(showError));
  form.addEventListener("submit", (event) => { event.preventDefault(); apply().catch(showError); });
  await apply();
}

function logRow(l) {
  return el("tr", { class: `level-${l.level.toLowerCase()}` }, el("td", {}, when(l.timestamp)), el("td", {}, l.level),
    el("td", {}, l.where), el("td", {}, l.logger), el("td", {}, el("pre", {}, l.message)));
}

// ------------------------------------------------------------------ runs

async function runs() {
  const found = await api("runs");
  const link = (page, r) => el("a", { href: `/${page}?run=${encodeURIComponent(r.id)}` }, page);
  table(document.getElementById("runs"),
    ["run", "started", "ended", "duration", "scheduler", "workers", "executions", "erred", "events", "warnings", "ledger", "pages"],
    found.runs.reverse().map((r) => {
      const pages = el("span");
      for (const page of ["status", "tasks", "story", "events", "logs"]) pages.append(link(page, r), " ");
      // a running run's duration so far; one that did not close has none on file
      const lasted = r.live ? Date.now() / 1000 - r.started : (r.ended ? r.ended - r.started : null);
      return [r.id, when(r.started), r.live ? "running" : (r.ended ? when(r.ended) : "did not close"),
        lasted == null ? "" : duration(lasted), r.address || "", r.workers, r.executions, r.erred,
        r.events, r.warnings, r.ledger || "", pages];
    }));
}

function duration(seconds) {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// ------------------------------------------------------------------ shell

const PAGES = { status, tasks, story, events, logs, runs };

function start() {
  for (const a of document.querySelectorAll("nav a")) a.href = withRun(a.getAttribute("href"));
  if (run) document.getElementById("run-label").textContent = `run ${run}`;
  else if (live) document.getElementById("run-label").textContent = "live";
  const page = PAGES[document.body.dataset.page];
  page().catch(showError);
}

start();
