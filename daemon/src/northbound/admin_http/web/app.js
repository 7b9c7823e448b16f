// Twinloom's live web view (docs/webview.md): the plant as a virtualised list of rows, live
// values over Server-Sent Events (/api/events, only the rows on screen and the trended
// property), sources and plugins from /api/status, interlocks and the audit log from
// /api/control, arming and clearing a quarantine through the endpoint's own login (HTTP Basic),
// and a property's trend (/api/trend, decimated by the server; drawn with the vendored uPlot).
"use strict";

const ROW = 24;              // px per row (style.css .row)
const OVERSCAN = 20;         // rows streamed above and below the visible ones
const STATUS_EVERY = 2000;   // ms between /api/status reads
const RETRY_AFTER = 1000;    // ms before reloading after the stream broke
const SUBSCRIBE_AFTER = 150; // ms a new stream waits while scrolling or typing
const SEEN_MAX = 5000;       // values kept per property for trends without history
const HOUR = 3600 * 1000, DAY = 24 * HOUR;

const $ = (id) => document.getElementById(id);
let rows = [];               // every row: {asset} or {prop}, in plant order
let shown = [];              // rows that pass the filter
const samples = new Map();   // property id -> [id, value, quality, reason, sourceMs, serverMs]
let source = null;           // the EventSource
let streamedIds = new Set(); // the ids the stream carries
let subscribeTimer = null;   // a new stream waiting to be opened
const seen = new Map();      // property id -> {t: [s], v: [value | null]} since the page opened
const counters = new Map();  // plugin name -> {at, calls, seconds} of the last status read
// The open trend: {id, path, unit, from, to (ms; to null = up to now, live), chart (uPlot),
// data ([t s], [min], [max])}; window.twinloomTrend for the browser test.
let trend = null;

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
    if (trend && !rows.some((r) => r.prop && r.prop.id === trend.id && r.path === trend.path)) closeTrend();
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
  el.className = trend && trend.id === row.prop.id ? "row prop trended" : "row prop";
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
  let covered = source !== null && (!trend || streamedIds.has(trend.id));
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
  if (trend && !ids.includes(trend.id)) ids.push(trend.id);
  streamedIds = new Set(ids);
  if (source) source.close();
  source = new EventSource("/api/events?ids=" + ids.join(","));
  source.onopen = () => setConn(true);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    for (const sample of event.samples) {
      samples.set(sample[0], sample);
      remember(sample);
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

// A sample as a chart point: [t s, number | null] (bad, text or no value: a break).
function point(sample) {
  const [, v, level, , sourceMs, serverMs] = sample;
  const t = (sourceMs || serverMs) / 1000;
  const n = typeof v === "boolean" ? Number(v) : v;
  return [t, level !== "bad" && typeof n === "number" && isFinite(n) ? n : null];
}

function remember(sample) {
  const [t, v] = point(sample);
  let kept = seen.get(sample[0]);
  if (!kept) seen.set(sample[0], (kept = { t: [], v: [] }));
  if (kept.t.length && kept.t[kept.t.length - 1] === t && kept.v[kept.v.length - 1] === v) return;
  kept.t.push(t);
  kept.v.push(v);
  if (kept.t.length > SEEN_MAX) {
    kept.t.splice(0, SEEN_MAX / 2);
    kept.v.splice(0, SEEN_MAX / 2);
  }
  if (trend && trend.id === sample[0] && trend.to === null) {
    const data = trend.data;
    // Samples arrive in order; one older than the chart's last point (a resent snapshot) is
    // already in it.
    if (data[0].length && t <= data[0][data[0].length - 1]) return;
    data[0].push(t);
    data[1].push(v);
    data[2].push(v);
    // The window slides with the newest value.
    trend.view = [Math.max(trend.view[0], t - trend.span / 1000), Math.max(trend.view[1], t)];
    if (trend.chart) trend.chart.setData(data);
  }
}

function openTrend(row) {
  if (trend && trend.chart) trend.chart.destroy();
  trend = { id: row.prop.id, path: row.path, unit: row.prop.unit || "", span: HOUR, to: null, view: [0, 0], chart: null, data: [[], [], []] };
  window.twinloomTrend = trend;
  $("trend").hidden = false;
  $("trend-title").textContent = row.path;
  render();
  loadTrend(Date.now() - HOUR, null);
}

function closeTrend() {
  if (trend && trend.chart) trend.chart.destroy();
  trend = null;
  window.twinloomTrend = null;
  $("trend").hidden = true;
  render();
}

// Fetches the trend's range from the server (decimated to the chart's width) and draws it; to
// null means up to now, with live values appended as they arrive.
async function loadTrend(from, to) {
  const current = trend;
  if (!current) return;
  const width = Math.max(100, Math.min(4000, Math.round($("trend-chart").clientWidth || 800)));
  const end = to === null ? Date.now() : to;
  current.span = end - from;
  $("trend-note").textContent = "loading…";
  let answer = null;
  try {
    const url = `/api/trend?property=${current.id}&from=${Math.round(from)}&to=${Math.round(end)}&width=${width}`;
    answer = await (await fetch(url, { cache: "no-store" })).json();
  } catch (e) {
    answer = { history: false, error: String(e) };
  }
  if (trend !== current) return;
  let data;
  if (answer.history) {
    data = [answer.t.map((t) => t / 1000), answer.min, answer.max];
    $("trend-note").textContent = `history, ${answer.t.length} points over ${formatSpan(end - from)}` + (to === null ? ", live" : "");
  } else {
    const kept = seen.get(current.id) || { t: [], v: [] };
    const xs = [], ys = [];
    for (let i = 0; i < kept.t.length; i++) {
      if (kept.t[i] * 1000 >= from && kept.t[i] * 1000 <= end) { xs.push(kept.t[i]); ys.push(kept.v[i]); }
    }
    data = [xs, ys, ys.slice()];
    $("trend-note").textContent = answer.error ? `no history (${answer.error}); values since the page opened` : "no history: values since the page opened";
  }
  if (to === null) {
    // What the stream brought while the range was read, then the current value: those newer
    // than what history holds.
    const pending = current.data;
    const now = samples.get(current.id);
    const live = pending[0].map((t, i) => [t, pending[1][i]]);
    if (now) live.push(point(now));
    for (const [t, v] of live) {
      if (!data[0].length || t > data[0][data[0].length - 1]) { data[0].push(t); data[1].push(v); data[2].push(v); }
    }
  }
  current.to = to;
  current.data = data;
  // A history shorter than the range (a daemon started a minute ago) fills the chart, from its
  // first point; a zoomed range stays as asked.
  const first = data[0].length ? data[0][0] : from / 1000;
  current.view = [to === null ? Math.max(from / 1000, Math.min(first, end / 1000 - 60)) : from / 1000, end / 1000];
  draw(current);
}

function formatSpan(ms) {
  return ms >= DAY ? Math.round(ms / DAY * 10) / 10 + " d" : ms >= HOUR ? Math.round(ms / HOUR * 10) / 10 + " h" : Math.round(ms / 60000) + " min";
}

function draw(current) {
  const box = $("trend-chart");
  if (current.chart) current.chart.destroy();
  const stepped = uPlot.paths.stepped({ align: 1 });
  const opts = {
    width: Math.max(100, box.clientWidth || 800),
    height: 220,
    scales: { x: { time: true, range: () => [current.view[0], current.view[1]] } },
    series: [
      {},
      { label: "min", stroke: "#23395d", width: 1, paths: stepped, spanGaps: false, unit: current.unit },
      { label: "max", stroke: "#23395d", width: 1, paths: stepped, spanGaps: false },
    ],
    bands: [{ series: [2, 1], fill: "rgba(35, 57, 93, 0.15)" }],
    axes: [{}, { label: current.unit }],
    legend: { show: false },
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 2) return;
        const from = u.posToVal(u.select.left, "x") * 1000;
        const to = u.posToVal(u.select.left + u.select.width, "x") * 1000;
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        loadTrend(from, to);
      }],
    },
  };
  current.chart = new uPlot(opts, current.data, box);
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
    showPlugins(s.plugins || []);
    $("unmet").replaceChildren(...s.unmet.map((line) => {
      const li = document.createElement("li");
      li.textContent = line;
      return li;
    }));
  } catch (e) {
    // The stream's reconnect shows the daemon is away.
  }
}

function td(text, cls) {
  const el = document.createElement("td");
  el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

// Each plugin's state and, from the counters' change since the last read, calls/s and the
// mean call time.
function showPlugins(plugins) {
  const now = Date.now();
  $("plugins").tBodies[0].replaceChildren(...plugins.map((p) => {
    const before = counters.get(p.name);
    counters.set(p.name, { at: now, calls: p.calls, seconds: p.call_seconds });
    let rate = "…", mean = "…";
    if (before && now > before.at) {
      const calls = p.calls - before.calls;
      rate = (calls / ((now - before.at) / 1000)).toFixed(1);
      mean = calls > 0 ? ((p.call_seconds - before.seconds) / calls * 1000).toPrecision(3) + " ms" : "—";
    }
    const tr = document.createElement("tr");
    tr.dataset.plugin = p.name;
    const state = p.state || "?";
    const level = state === "running" ? "q-good" : state === "quarantined" || state === "unloaded" ? "q-bad" : "q-uncertain";
    tr.append(td(p.name), td(state, "state " + level), td(rate, "rate"), td(mean, "mean"));
    const action = document.createElement("td");
    if (state === "quarantined") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "clear";
      button.textContent = "Clear quarantine";
      button.addEventListener("click", () => control("clear-quarantine?plugin=" + encodeURIComponent(p.name), "clear quarantine"));
      action.append(button);
    }
    tr.append(action);
    const rows = [tr];
    if (p.last_fault) {
      const fault = document.createElement("tr");
      fault.dataset.fault = p.name;
      // The first line (a trap's backtrace follows it); the whole fault as a tooltip.
      const first = p.last_fault.split("\n")[0];
      const cell = td(`last fault (${p.failures} in a row): ${first.length > 300 ? first.slice(0, 300) + "…" : first}`, "fault");
      cell.title = p.last_fault;
      cell.colSpan = 5;
      fault.append(cell);
      rows.push(fault);
    }
    return rows;
  }).flat());
}

// Interlocks with their truth and inputs, and the newest audit records.
async function controlState() {
  try {
    const c = await (await fetch("/api/control", { cache: "no-store" })).json();
    $("interlocks").replaceChildren(...c.interlocks.map((i) => {
      const li = document.createElement("li");
      li.dataset.interlock = i.name;
      const head = document.createElement("div");
      head.className = i.holds ? "q-good" : "q-bad";
      head.textContent = `${i.name}: ${i.holds ? "holds" : "holds writes back"} — ${i.condition} (guards ${i.applies_to.join(", ")})`;
      const inputs = document.createElement("div");
      inputs.className = "inputs";
      inputs.textContent = i.inputs.map(([path, v, level, reason]) => `${path} = ${formatValue(v)} (${reason ? level + ": " + reason : level})`).join("; ");
      li.append(head, inputs);
      if (i.why) li.title = i.why;
      return li;
    }));
    $("audit-error").textContent = c.audit_error || "";
    $("audit").tBodies[0].replaceChildren(...c.audit.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.kind = r.kind || "";
      const time = r.time ? new Date(r.time).toLocaleTimeString() : "";
      const who = r.user || r.plugin || r.sparkplug_device || r.reason || r.origin || "";
      tr.append(td(time), td(r.kind || "?"), td(who), td(auditWhat(r)));
      tr.title = JSON.stringify(r);
      return tr;
    }));
  } catch (e) {
    // The stream's reconnect shows the daemon is away.
  }
}

function auditWhat(r) {
  switch (r.kind) {
    case "intent": return `${r.property} → ${formatValue(r.written)}` + (r.rule !== "accepted" ? ` (${r.rule})` : "");
    case "outcome": return `#${r.intent} ${r.outcome}` + (r.error ? `: ${r.error}` : "");
    case "refusals": return `${r.count} refused by ${r.rule}`;
    case "shadow": return `${r.property} → ${formatValue(r.written)} (shadow)`;
    case "disarm": return r.dropped ? `${r.dropped} waiting writes dropped` : "";
    case "controller-lost": return `${r.why}`;
    case "select": return `${r.property}`;
    case "manual-override": return `${r.property}: ${formatValue(r.read)}`;
    default: return "";
  }
}

async function control(action, what) {
  what = what || action;
  const headers = {};
  const user = $("user").value;
  if (user) headers.Authorization = "Basic " + btoa(unescape(encodeURIComponent(user + ":" + $("password").value)));
  $("control-msg").textContent = what + "…";
  try {
    // credentials "omit": the browser adds no cached login and shows no login dialog.
    const answer = await fetch("/control/" + action, { method: "POST", headers, credentials: "omit" });
    const text = (await answer.text()).trim();
    $("control-msg").textContent = answer.ok ? text : `${what} refused (${answer.status}): ${text}`;
  } catch (e) {
    $("control-msg").textContent = `${what} failed: ${e}`;
  }
  status();
  controlState();
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
$("list").addEventListener("click", (event) => {
  const el = event.target.closest(".row.prop");
  if (!el) return;
  const row = shown.find((r) => r.prop && r.path === el.dataset.path);
  if (row) openTrend(row);
});
$("trend-hour").addEventListener("click", () => trend && loadTrend(Date.now() - HOUR, null));
$("trend-day").addEventListener("click", () => trend && loadTrend(Date.now() - DAY, null));
$("trend-close").addEventListener("click", closeTrend);
window.addEventListener("resize", render);
setInterval(() => {
  const now = Date.now();
  for (const age of $("list").querySelectorAll(".age[data-ms]")) {
    if (age.dataset.ms) age.textContent = formatAge(now - Number(age.dataset.ms));
  }
}, 1000);
setInterval(status, STATUS_EVERY);
setInterval(controlState, STATUS_EVERY);
status();
controlState();
start();
