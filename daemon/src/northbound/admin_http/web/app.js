// Twinloom's live web view (docs/webview.md): the plant as a virtualised list of rows, live
// values over Server-Sent Events (/api/events, only the rows on screen), the control state from
// /api/status, and arming through the endpoint's own login (HTTP Basic, /control/arm).
"use strict";

const ROW = 24;              // px per row (style.css .row)
const OVERSCAN = 20;         // rows streamed above and below the visible ones
const STATUS_EVERY = 2000;   // ms between /api/status reads
const RETRY_AFTER = 1000;    // ms before reloading after the stream broke
const SUBSCRIBE_AFTER = 150; // ms a new stream waits while scrolling or typing

const $ = (id) => document.getElementById(id);
let rows = [];               // every row: {asset} or {prop}, in plant order
let shown = [];              // rows that pass the filter
const samples = new Map();   // property id -> [id, value, quality, reason, sourceMs, serverMs]
let source = null;           // the EventSource
let streamedIds = new Set(); // the ids the stream carries
let subscribeTimer = null;   // a new stream waiting to be opened

async function start() {
  try {
    const plant = await (await fetch("/api/plant", { cache: "no-store" })).json();
    rows = [];
    let count = 0;
    for (const asset of plant.assets) {
      rows.push({ asset });
      for (const prop of asset.properties) {
        rows.push({ prop, path: asset.path + "/" + prop.name });
        count++;
      }
    }
    $("summary").textContent = `${plant.assets.length} assets, ${count} properties`;
    samples.clear();
    streamedIds = new Set();
    if (source) source.close();
    source = null;
    applyFilter();
  } catch (e) {
    setConn(false);
    setTimeout(start, RETRY_AFTER);
  }
}

function applyFilter() {
  const words = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const match = (text) => words.every((w) => text.toLowerCase().includes(w));
  shown = [];
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    if (row.asset) {
      const props = [];
      for (let j = i + 1; j < rows.length && !rows[j].asset; j++) {
        if (match(rows[j].path)) props.push(rows[j]);
      }
      if (props.length) shown.push(row, ...props);
    }
  }
  $("spacer").style.height = shown.length * ROW + "px";
  render();
}

function visibleRange(overscan) {
  const list = $("list");
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - overscan);
  const last = Math.min(shown.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + overscan);
  return [first, last];
}

function render() {
  const list = $("list");
  const [first, last] = visibleRange(0);
  for (const el of list.querySelectorAll(".row")) el.remove();
  const fragment = document.createDocumentFragment();
  for (let i = first; i < last; i++) fragment.appendChild(rowElement(shown[i], i));
  list.appendChild(fragment);
  subscribe();
}

function cell(cls) {
  const span = document.createElement("span");
  if (cls) span.className = cls;
  return span;
}

function rowElement(row, index) {
  const el = document.createElement("div");
  el.style.top = index * ROW + "px";
  if (row.asset) {
    el.className = "row asset";
    el.dataset.asset = row.asset.path;
    el.textContent = row.asset.path + (row.asset.type ? `  (${row.asset.type})` : "");
    return el;
  }
  el.className = "row prop";
  el.dataset.path = row.path;
  el.dataset.id = row.prop.id;
  const name = cell("name");
  name.textContent = row.prop.name;
  name.title = row.path;
  const unit = cell("unit");
  unit.textContent = row.prop.unit || "";
  unit.title = row.prop.unit_name || "";
  el.append(name, cell("value"), unit, cell("quality"), cell("time"), cell("age"));
  fill(el, samples.get(row.prop.id));
  return el;
}

function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toPrecision(6).replace(/\.?0+$/, "");
  return String(value);
}

function formatAge(ms) {
  if (ms < 1000) return "now";
  const s = Math.round(ms / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

function fill(el, sample) {
  const [value, quality, time, age] = [".value", ".quality", ".time", ".age"].map((c) => el.querySelector(c));
  if (!sample) {
    value.textContent = "…";
    return;
  }
  const [, v, level, reason, sourceMs] = sample;
  value.textContent = formatValue(v);
  quality.textContent = reason ? `${level}: ${reason}` : level;
  quality.className = "quality q-" + level;
  value.className = "value q-" + level;
  time.textContent = sourceMs ? new Date(sourceMs).toLocaleTimeString() : "—";
  age.dataset.ms = sourceMs || "";
  age.textContent = sourceMs ? formatAge(Date.now() - sourceMs) : "—";
}

// Streams the rows in view plus OVERSCAN above and below; a new stream (which starts with a
// snapshot) only when rows in view are not carried yet, at most every SUBSCRIBE_AFTER ms.
function subscribe() {
  const [first, last] = visibleRange(0);
  let covered = source !== null;
  for (let i = first; i < last && covered; i++) {
    if (shown[i].prop && !streamedIds.has(shown[i].prop.id)) covered = false;
  }
  if (covered || subscribeTimer) return;
  subscribeTimer = setTimeout(openStream, source ? SUBSCRIBE_AFTER : 0);
}

function openStream() {
  subscribeTimer = null;
  const [first, last] = visibleRange(OVERSCAN);
  const ids = [];
  for (let i = first; i < last; i++) if (shown[i].prop) ids.push(shown[i].prop.id);
  streamedIds = new Set(ids);
  if (source) source.close();
  source = new EventSource("/api/events?ids=" + ids.join(","));
  source.onopen = () => setConn(true);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    for (const sample of event.samples) {
      samples.set(sample[0], sample);
      const el = $("list").querySelector(`.row[data-id="${sample[0]}"]`);
      if (el) fill(el, sample);
    }
  };
  source.onerror = () => {
    // The daemon went away or restarted (perhaps with another configuration): start again.
    source.close();
    source = null;
    setConn(false);
    setTimeout(start, RETRY_AFTER);
  };
}

function setConn(live) {
  $("conn").textContent = live ? "live" : "reconnecting";
  $("conn").className = live ? "conn-live" : "conn-down";
}

async function status() {
  try {
    const s = await (await fetch("/api/status", { cache: "no-store" })).json();
    $("armed").textContent = s.armed ? "armed" : "disarmed";
    $("armed").className = s.armed ? "armed" : "disarmed";
    $("sources").replaceChildren(...s.sources.map((src) => {
      const li = document.createElement("li");
      li.dataset.source = src.id;
      li.textContent = `${src.id}: ${src.connected ? "up" : "down"}`;
      if (src.last_error) li.title = "last error: " + src.last_error;
      if (src.last_error && !src.connected) li.textContent += ` (${src.last_error})`;
      li.className = src.connected ? "q-good" : "q-bad";
      return li;
    }));
    $("unmet").replaceChildren(...s.unmet.map((line) => {
      const li = document.createElement("li");
      li.textContent = line;
      return li;
    }));
  } catch (e) {
    // The stream's reconnect shows the daemon is away.
  }
}

async function control(action) {
  const headers = {};
  const user = $("user").value;
  if (user) headers.Authorization = "Basic " + btoa(unescape(encodeURIComponent(user + ":" + $("password").value)));
  $("control-msg").textContent = action + "…";
  try {
    // credentials "omit": the browser adds no cached login and shows no login dialog.
    const answer = await fetch("/control/" + action, { method: "POST", headers, credentials: "omit" });
    const text = (await answer.text()).trim();
    $("control-msg").textContent = answer.ok ? text : `${action} refused (${answer.status}): ${text}`;
  } catch (e) {
    $("control-msg").textContent = `${action} failed: ${e}`;
  }
  status();
}

let scrollPending = false;
$("list").addEventListener("scroll", () => {
  if (scrollPending) return;
  scrollPending = true;
  requestAnimationFrame(() => { scrollPending = false; render(); });
});
$("filter").addEventListener("input", () => { $("list").scrollTop = 0; applyFilter(); });
$("arm").addEventListener("click", () => control("arm"));
$("disarm").addEventListener("click", () => control("disarm"));
window.addEventListener("resize", render);
setInterval(() => {
  const now = Date.now();
  for (const age of $("list").querySelectorAll(".age[data-ms]")) {
    if (age.dataset.ms) age.textContent = formatAge(now - Number(age.dataset.ms));
  }
}, 1000);
setInterval(status, STATUS_EVERY);
status();
start();
