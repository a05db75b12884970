// Audience builder: segment and audience lists, the expression composer with live reach, a chart of
// the audience over time, insights, saving, a detail view per segment or audience, and the overlap
// heatmap. Plain browser JavaScript modules, no build step, no third-party code: served by the API.
// The current expression lives in the URL (#expr=...), so a link restores it.
import { ApiError, api, audiencePath, download, hasApiKey, onAuthRequired, segmentPath, setApiKey } from "./api.js";
import {
  count, formatIndex, indexBars, installTooltip, isoDay, legend, percent, sparkline, timeChart,
} from "./charts.js";
import { NAME_PATTERN, footprint, windowTarget, withWindow } from "./expr.js";

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"), auth: $("auth"), apiKey: $("api-key"),
  filter: $("filter"), body: $("segments-body"), count: $("segment-count"),
  audiences: $("audiences-body"), audienceCount: $("audience-count"), audiencesNote: $("audiences-note"),
  expr: $("expr"), operators: $("operators"), clear: $("clear"),
  windowMenu: $("window-menu"), windowTarget: $("window-target"),
  windowFrom: $("window-from"), windowTo: $("window-to"), windowRange: $("window-range"),
  reach: $("reach"), detail: $("reach-detail"),
  error: $("error"), errorMessage: $("error-message"), errorPointer: $("error-pointer"),
  trend: $("trend"),
  shareLink: $("share-link"), shareCopy: $("share-copy"), shareNote: $("share-note"),
  save: $("save"), saveName: $("save-name"), saveDescription: $("save-description"),
  saveResult: $("save-result"), saveError: $("save-error"),
  insights: $("insights"), insightsSummary: $("insights-summary"), insightsChart: $("insights-chart"),
  selection: $("overlap-selection"), overlapRun: $("overlap-run"), overlapClear: $("overlap-clear"),
  overlapError: $("overlap-error"), heatmap: $("heatmap"), legend: $("heatmap-legend"),
  dialog: $("detail"), dialogTitle: $("detail-title"), dialogClose: $("detail-close"),
  dialogError: $("detail-error"), dialogInfo: $("detail-info"), dialogActions: $("detail-actions"),
  dialogTrend: $("detail-trend"), dialogVersionsTitle: $("detail-versions-title"),
  dialogVersions: $("detail-versions"), dialogExport: $("detail-export"),
  tooltip: $("tooltip"),
};
const DEBOUNCE_MS = 150;
/** The charts and insights of an expression start once it stood still this long after its reach. */
const SIDE_DELAY_MS = 200;
const MAX_OVERLAP = 32;
const DAY_MS = 86400000;
/** Days of reach history under the composer, and in a detail view. */
const HISTORY_DAYS = 90;
/** Days of daily bucket sizes in a windowed segment's sparkline. */
const SPARK_DAYS = 30;
/** Segments drawn in the size chart of an expression without windows. */
const MAX_SERIES = 6;
/** Requests for sparklines in flight at once. */
const TREND_CONCURRENCY = 3;
const EXPORT_FORMATS = [["csv", "CSV"], ["ndjson", "NDJSON"], ["roaring", "Roaring bitmap"]];

const state = {
  segments: [],            // plain segments: the API's infos
  windowed: new Map(),     // name -> window config from GET /v1/segments ("windowed")
  rows: [],                // the segment list: {name, kind: "segment" | "windowed", cardinality, info}
  audiences: new Map(),    // name -> {name, expr, description, version, updated_at}
  catalogLoaded: false,
  selected: new Set(),
  universe: "all",
  seq: 0,
  inflight: null,
  side: null,              // AbortController of the charts and insights of the current expression
  sideTimer: null,
  timer: null,
  sparks: new Map(),       // name -> {key, svg | null, note}
  sparkQueue: [],
  sparkPending: new Set(), // names queued or in flight
  sparkActive: 0,
  detailSeq: 0,
  detail: null,            // AbortController of the open detail view's requests
};

// -- small helpers -----------------------------------------------------------

function toMs(at) {
  if (typeof at === "number") return at > 1e11 ? at : at * 1000;
  return Date.parse(at);
}

function utcText(at) {
  const ms = toMs(at);
  return Number.isNaN(ms) ? String(at) : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z").replace("T", " ");
}

function freshness(iso) {
  const then = toMs(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.max(0, (Date.now() - then) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function make(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(element.dataset, value);
    else if (key in element && key !== "list") element[key] = value;
    else element.setAttribute(key, value);
  }
  element.append(...children);
  return element;
}

function isAuthError(err) {
  return err instanceof ApiError && (err.status === 401 || err.status === 403);
}

function isAbort(err) {
  return err && err.name === "AbortError";
}

/** The message of an API error as a person should read it. */
function describe(err) {
  if (!(err instanceof ApiError)) return `cannot reach the API: ${err.message}`;
  if (err.code === "segment_not_found" && Array.isArray(err.details.segments)) {
    const names = err.details.segments;
    return `Unknown segment${names.length > 1 ? "s" : ""}: ${names.join(", ")}`;
  }
  return err.message;
}

/** "expr" with a caret under the character at `position` (the API's 0-based offset). */
function pointer(expr, position) {
  return `${expr}\n${" ".repeat(Math.min(position, expr.length))}^ position ${position}`;
}

const isWindowed = (name) => state.windowed.has(name);
const audienceExpr = (name) => {
  const audience = state.audiences.get(name);
  return audience ? audience.expr : undefined;
};

// -- auth ----------------------------------------------------------------------

onAuthRequired((status, scope) => {
  el.auth.hidden = false;
  setStatus(status === 401 ? "an API key is required" : `this API key lacks the ${scope} scope`, "bad");
});

function setStatus(text, kind) {
  el.status.textContent = text;
  el.status.dataset.kind = kind || "";
}

// -- segment and audience lists ------------------------------------------------

async function loadCatalog() {
  await Promise.all([loadSegments(), loadAudiences()]);
  state.catalogLoaded = true;
  updateWindowMenu();
}

async function loadSegments() {
  try {
    const data = await api("GET", "/v1/segments");
    state.segments = data.segments;
    state.windowed = new Map((data.windowed || []).map((w) => [w.name, w]));
    const rows = new Map();
    for (const info of data.segments) rows.set(info.name, { name: info.name, kind: "segment", cardinality: info.cardinality, info });
    for (const w of state.windowed.values()) rows.set(w.name, { name: w.name, kind: "windowed", cardinality: w.cardinality, info: w });
    state.rows = [...rows.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    setStatus(`${state.rows.length} segments`, "ok");
    renderSegments();
  } catch (err) {
    // 401/403 already asked for a key (see onAuthRequired); say what else went wrong.
    if (!isAuthError(err)) setStatus(`cannot list segments: ${err.message}`, "bad");
  }
}

async function loadAudiences() {
  try {
    const data = await api("GET", "/v1/audiences");
    state.audiences = new Map(data.audiences.map((a) => [a.name, a]));
    el.audiencesNote.textContent = state.audiences.size
      ? "Click an audience to load its expression; an audience is always evaluated from the current segments."
      : "No audiences yet: save one from the composer.";
    renderAudiences();
  } catch (err) {
    if (!isAuthError(err)) el.audiencesNote.textContent = `cannot list audiences: ${describe(err)}`;
  }
}

/** A bucket's start as people name it: the UTC day, or the day and hour of an hourly bucket. */
function bucketLabel(w, at) {
  const ms = toMs(at);
  if (Number.isNaN(ms)) return String(at);
  const iso = new Date(ms).toISOString();
  return w.granularity === "hour" ? `${iso.slice(0, 13).replace("T", " ")}h` : iso.slice(0, 10);
}

function windowedTitle(w) {
  const unit = w.granularity === "hour" ? "hours" : "days";
  const span = w.oldest && w.newest ? `, from ${bucketLabel(w, w.oldest)} to ${bucketLabel(w, w.newest)}` : "";
  return `windowed: ${w.granularity} buckets kept ${count.format(w.retention)} ${unit}; ` +
    `${count.format(w.buckets || 0)} buckets${span}`;
}

function renderSegments() {
  const needle = el.filter.value.trim().toLowerCase();
  const rows = [];
  for (const row of state.rows) {
    if (needle && !row.name.toLowerCase().includes(needle)) continue;
    const tr = make("tr", { dataset: { name: row.name, kind: row.kind } });

    const box = make("input", { type: "checkbox", className: "pick", value: row.name, checked: state.selected.has(row.name) });
    box.setAttribute("aria-label", `compare ${row.name}`);

    const name = make("td", {}, make("button", {
      type: "button", className: "segment-name", title: `add ${row.name} to the expression`,
      dataset: { insert: row.name },
    }, row.name));
    if (row.kind === "windowed") {
      name.append(" ", make("span", { className: "badge windowed", title: windowedTitle(row.info) }, `◷ ${row.info.granularity}`));
    }
    name.append(" ", make("button", {
      type: "button", className: "info", title: `details of ${row.name}`, dataset: { detail: row.name, kind: row.kind },
    }, "i"));

    const trend = make("td", { className: "trend" });
    const spark = state.sparks.get(row.name);
    if (spark && spark.key === sparkKey(row)) {
      trend.append(spark.svg ? spark.svg.cloneNode(true) : make("span", { className: "muted", title: spark.note }, "–"));
    } else {
      enqueueSpark(row);
    }

    const updated = make("td", { className: "muted" });
    if (row.kind === "windowed") {
      updated.textContent = row.info.newest ? `to ${bucketLabel(row.info, row.info.newest)}` : "no data yet";
      updated.title = windowedTitle(row.info);
    } else {
      updated.textContent = freshness(row.info.updated_at);
      updated.title = `${row.info.updated_at} (version ${row.info.version})`;
    }

    tr.append(make("td", {}, box), name, make("td", { className: "num" }, count.format(row.cardinality)), trend, updated);
    rows.push(tr);
  }
  el.body.replaceChildren(...rows);
  el.count.textContent = `(${state.rows.length})`;
}

function renderAudiences() {
  const needle = el.filter.value.trim().toLowerCase();
  const rows = [];
  for (const audience of state.audiences.values()) {
    if (needle && !audience.name.toLowerCase().includes(needle)) continue;
    const text = typeof audience.expr === "string" ? audience.expr : JSON.stringify(audience.expr);
    rows.push(make("tr", { dataset: { name: audience.name } },
      make("td", {}, make("button", {
        type: "button", className: "audience-name", title: `load ${audience.name}'s expression into the composer`,
        dataset: { load: audience.name },
      }, audience.name)),
      make("td", {}, make("code", { className: "expr", title: audience.description || text }, text)),
      make("td", { className: "actions" },
        make("button", { type: "button", className: "use", title: `add ${audience.name} to the expression`, dataset: { insert: audience.name } }, "+"),
        make("button", { type: "button", className: "info", title: `details of ${audience.name}`, dataset: { detail: audience.name, kind: "audience" } }, "i")),
    ));
  }
  el.audiences.replaceChildren(...rows);
  el.audienceCount.textContent = `(${state.audiences.size})`;
}

// -- sparklines ------------------------------------------------------------------

/** What a sparkline was drawn from: a new version (or, of a windowed segment, new buckets or 5 minutes) redraws it. */
function sparkKey(row) {
  if (row.kind === "segment") return `v${row.info.version}`;
  const w = row.info;
  return `${Math.floor(Date.now() / 300000)}:${w.cardinality}:${w.newest}:${w.oldest}:${w.buckets}`;
}

function enqueueSpark(row) {
  if (state.sparkPending.has(row.name)) return;
  state.sparkPending.add(row.name);
  state.sparkQueue.push(row);
  pumpSparks();
}

function pumpSparks() {
  while (state.sparkActive < TREND_CONCURRENCY && state.sparkQueue.length) {
    const row = state.sparkQueue.shift();
    state.sparkActive += 1;
    fetchSpark(row).finally(() => {
      state.sparkActive -= 1;
      state.sparkPending.delete(row.name);
      pumpSparks();
    });
  }
}

/** Day windows of a windowed segment's buckets: `[1d]` for daily buckets, `[24h]` for hourly ones. */
function dayWindow(name) {
  const w = state.windowed.get(name);
  return `${name}[${w && w.granularity === "hour" ? "24h" : "1d"}]`;
}

async function fetchSpark(row) {
  const key = sparkKey(row);
  let spark;
  try {
    // of a windowed segment, the history is one point per bucket (its current size)
    const data = await api("GET", segmentPath(row.name, "/history"));
    const values = data.points.map((p) => p.cardinality);
    const last = values.length ? values[values.length - 1] : 0;
    let label;
    if (!values.length) label = `${row.name}: no size history`;
    else if (row.kind === "windowed") {
      label = `${row.name}: users per ${row.info.granularity} bucket, ${count.format(values.length)} buckets ` +
        `from ${bucketLabel(row.info, data.points[0].at)} to ${bucketLabel(row.info, data.points[values.length - 1].at)}; ` +
        `${count.format(last)} in the newest`;
    } else {
      label = `${row.name}: ${count.format(values.length)} versions kept, from ${count.format(values[0])} to ${count.format(last)} users`;
    }
    spark = { key, svg: sparkline(values, label), note: label };
  } catch (err) {
    spark = { key, svg: null, note: `no trend: ${describe(err)}` };
  }
  state.sparks.set(row.name, spark);
  const cell = el.body.querySelector(`tr[data-name="${CSS.escape(row.name)}"] td.trend`);
  if (cell) cell.replaceChildren(spark.svg ? spark.svg.cloneNode(true) : make("span", { className: "muted", title: spark.note }, "–"));
}

// -- the expression, the URL and the reach -------------------------------------------

function expressionFromUrl() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("expr");
  if (fromHash !== null) return fromHash;
  return new URLSearchParams(location.search).get("expr");
}

function syncUrl(expr) {
  const hash = expr ? `#expr=${encodeURIComponent(expr)}` : "";
  const target = `${location.pathname}${hash}`;
  if (`${location.pathname}${location.search}${location.hash}` !== target) history.replaceState(null, "", target);
  el.shareLink.href = target || location.pathname;
  el.shareLink.hidden = !expr;
  el.shareCopy.hidden = !expr;
  el.shareNote.textContent = "";
}

function onExpressionChanged(delay) {
  updateWindowMenu();
  scheduleReach(delay);
}

function setExpression(text) {
  el.expr.value = text;
  el.expr.setSelectionRange(text.length, text.length);
  onExpressionChanged(0);
}

function insertAtCursor(text) {
  const input = el.expr;
  const start = input.selectionStart ?? input.value.length;
  const end = input.selectionEnd ?? input.value.length;
  let piece = text;
  const before = input.value.slice(0, start);
  if (/^[A-Za-z0-9_.:]/.test(piece) && /[A-Za-z0-9_.:)\]]$/.test(before)) piece = ` ${piece}`;
  input.setRangeText(piece, start, end, "end");
  input.focus();
  onExpressionChanged(0);
}

function scheduleReach(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(runReach, delay === undefined ? DEBOUNCE_MS : delay);
}

function showReach(expr, reach, took, versions) {
  el.reach.textContent = count.format(reach);
  el.reach.dataset.reach = String(reach);
  el.reach.dataset.expr = expr;
  el.reach.dataset.state = "ok";
  delete el.reach.dataset.error;
  const universe = state.segments.find((s) => s.name === state.universe);
  const parts = [];
  if (universe && universe.cardinality > 0) {
    parts.push(`${((100 * reach) / universe.cardinality).toFixed(2)}% of ${state.universe}`);
  }
  parts.push(`${took.toFixed(2)} ms`);
  parts.push(`${Object.keys(versions).length} segment(s) read`);
  el.detail.textContent = parts.join(" · ");
  el.error.hidden = true;
}

function showError(expr, err) {
  el.reach.textContent = "—";
  delete el.reach.dataset.reach;
  el.reach.dataset.expr = expr;
  el.reach.dataset.state = "error";
  el.reach.dataset.error = err.code;
  el.detail.textContent = "";
  el.errorMessage.textContent = describe(err);
  const position = err.details && err.details.position;
  if (err.code === "invalid_expression" && typeof position === "number") {
    el.errorPointer.textContent = pointer(expr, position);
    el.errorPointer.hidden = false;
  } else {
    el.errorPointer.textContent = "";
    el.errorPointer.hidden = true;
  }
  el.error.hidden = false;
}

function showEmpty() {
  el.reach.textContent = "—";
  delete el.reach.dataset.reach;
  delete el.reach.dataset.error;
  el.reach.dataset.expr = "";
  el.reach.dataset.state = "empty";
  el.detail.textContent = "";
  el.error.hidden = true;
}

async function runReach() {
  const expr = el.expr.value;
  const seq = ++state.seq;
  syncUrl(expr);
  if (state.inflight) state.inflight.abort();
  if (state.side) state.side.abort();
  state.side = null;
  clearTimeout(state.sideTimer);
  if (!expr.trim()) {
    state.inflight = null;
    showEmpty();
    clearSide("");
    return;
  }
  const controller = new AbortController();
  state.inflight = controller;
  el.reach.dataset.state = "pending";
  try {
    const data = await api("POST", "/v1/reach", { expr }, controller.signal);
    if (seq !== state.seq) return;
    showReach(expr, data.reach, data.took_ms, data.segments);
    for (const box of [el.trend, el.insights]) box.dataset.state = "pending";
    state.sideTimer = setTimeout(() => refreshSide(expr, seq), SIDE_DELAY_MS);
  } catch (err) {
    if (isAbort(err) || seq !== state.seq) return;
    showError(expr, err instanceof ApiError ? err : { code: "network_error", message: err.message, details: {} });
    clearSide(expr);
  }
}

// -- under the reach: the chart over time and the insights ------------------------------

function clearSide(expr) {
  for (const box of [el.trend, el.insights]) {
    box.dataset.expr = expr;
    box.dataset.state = "empty";
  }
  el.trend.querySelector("figcaption").textContent = "";
  el.trend.querySelector(".chart-slot").replaceChildren();
  el.insightsSummary.textContent = expr
    ? "Insights appear once the expression has a reach."
    : "Type an expression to see which segments over- and under-index in it.";
  el.insightsChart.replaceChildren();
}

function refreshSide(expr, seq) {
  if (state.side) state.side.abort();
  const controller = new AbortController();
  state.side = controller;
  const current = () => seq === state.seq;
  drawTrend(el.trend, expr, { current, signal: controller.signal });
  refreshInsights(expr, current, controller.signal);
}

/**
 * Draw in `figure` how `expr` changes over time: its reach as of each of the last 90 days when it
 * has windows (directly or through audiences), otherwise the size history of each segment it names.
 */
async function drawTrend(figure, expr, { current, signal, subject }) {
  const caption = figure.querySelector("figcaption");
  const slot = figure.querySelector(".chart-slot");
  figure.dataset.expr = expr;
  figure.dataset.state = "pending";
  const print = footprint(expr, { audienceExpr, isWindowed });
  try {
    if (print.windows) {
      const now = Date.now();
      const to = isoDay(now);
      const from = isoDay(now - (HISTORY_DAYS - 1) * DAY_MS);
      const data = await api("POST", "/v1/reach/history", { expr, from, to, step: "1d" }, signal);
      if (!current()) return;
      const points = data.points.map((p) => {
        const t = toMs(p.at);
        return { t, v: p.reach, tip: `${isoDay(t)}: ${count.format(p.reach)} users`, data: { day: isoDay(t) } };
      });
      const label = subject ? `${subject}, ${from} to ${to}` : `Reach as of each day, ${from} to ${to}`;
      slot.replaceChildren(timeChart([{ name: "reach", points }], { from: toMs(from), to: toMs(to), mode: "line", label }));
      const last = points.length ? points[points.length - 1].v : 0;
      caption.textContent = `${label} (UTC days; ${count.format(last)} on ${to})`;
      figure.dataset.kind = "reach-history";
    } else {
      const known = new Set(state.segments.map((s) => s.name));
      const names = print.segments.filter((n) => known.has(n));
      if (!names.length) {
        slot.replaceChildren();
        caption.textContent = "No size history to draw for this expression.";
        figure.dataset.kind = "sizes";
        figure.dataset.state = "ok";
        return;
      }
      const drawn = names.slice(0, MAX_SERIES);
      const answers = await Promise.all(drawn.map((name) =>
        api("GET", segmentPath(name, "/history"), undefined, signal)
          .then((data) => ({ name, points: data.points }), (err) => ({ name, err }))));
      if (!current()) return;
      const aborted = answers.find((a) => a.err && isAbort(a.err));
      if (aborted) return;
      const series = answers.filter((a) => !a.err).map((a) => ({
        name: a.name,
        points: a.points.map((p) => {
          const t = toMs(p.at);
          const change = [p.op, p.added ? `+${count.format(p.added)}` : "", p.removed ? `−${count.format(p.removed)}` : ""]
            .filter(Boolean).join(" ");
          return {
            t, v: p.cardinality, data: { version: p.version, op: p.op },
            tip: `${a.name} v${p.version}, ${utcText(p.at)}: ${count.format(p.cardinality)} users (${change})`,
          };
        }),
      }));
      const now = Date.now();
      const firsts = series.filter((s) => s.points.length).map((s) => s.points[0].t);
      let from = Math.max(now - HISTORY_DAYS * DAY_MS, Math.min(now, ...firsts));
      if (now - from < 60000) from = now - 60000;
      const label = names.length > 1 ? "Size of each segment over time" : `Size of ${names[0]} over time`;
      slot.replaceChildren(timeChart(series, { from, to: now, mode: "step", label }), legend(series.map((s) => s.name)));
      const notes = [];
      if (names.length > drawn.length) notes.push(`${names.length - drawn.length} more not drawn`);
      const failed = answers.filter((a) => a.err).map((a) => `${a.name}: ${describe(a.err)}`);
      if (failed.length) notes.push(`no history for ${failed.join("; ")}`);
      caption.textContent = `${label} (size history, one point per version)${notes.length ? ` · ${notes.join(" · ")}` : ""}`;
      figure.dataset.kind = "sizes";
    }
    figure.dataset.state = "ok";
  } catch (err) {
    if (isAbort(err) || !current()) return;
    slot.replaceChildren();
    caption.textContent = `cannot draw the trend: ${describe(err)}`;
    figure.dataset.state = "error";
  }
}

async function refreshInsights(expr, current, signal) {
  el.insights.dataset.expr = expr;
  el.insights.dataset.state = "pending";
  try {
    const data = await api("POST", "/v1/insights", { expr }, signal);
    if (!current()) return;
    const { svg, shown, hidden } = indexBars(data.rows);
    const empty = data.rows.filter((r) => r.index === null || r.index === undefined).length;
    const parts = [
      `${count.format(data.reach)} of ${count.format(data.universe)} users` +
        (data.universe ? ` (${percent(data.reach / data.universe)})` : ""),
      `${count.format(data.rows.length)} segments compared`,
    ];
    if (shown.length) parts.push(hidden ? `the ${shown.length} highest and lowest by index` : "by index");
    if (empty) parts.push(`${empty} empty left out`);
    el.insightsSummary.textContent = `${parts.join(" · ")}. Index = share in the audience ÷ share in the universe × 100.`;
    el.insightsChart.replaceChildren(...(shown.length ? [svg] : []));
    el.insights.dataset.reach = String(data.reach);
    el.insights.dataset.state = "ok";
  } catch (err) {
    if (isAbort(err) || !current()) return;
    el.insightsSummary.textContent = `no insights: ${describe(err)}`;
    el.insightsChart.replaceChildren();
    el.insights.dataset.state = "error";
  }
}

// -- windows ---------------------------------------------------------------------

function currentWindowTarget() {
  const cursor = el.expr.selectionStart ?? el.expr.value.length;
  return windowTarget(el.expr.value, cursor, isWindowed);
}

function updateWindowMenu() {
  el.windowMenu.hidden = state.windowed.size === 0;
  if (el.windowMenu.hidden) return;
  const target = currentWindowTarget();
  el.windowMenu.dataset.target = target ? target.name : "";
  el.windowTarget.textContent = target
    ? `Window on ${target.name}:`
    : "Window (cursor on a ◷ segment):";
  for (const button of el.windowMenu.querySelectorAll("button")) {
    button.disabled = !target;
    if (button.dataset.window) button.classList.toggle("active", Boolean(target && target.window && target.window.text === button.dataset.window));
  }
}

function applyWindow(text) {
  const target = currentWindowTarget();
  if (!target) return;
  const next = withWindow(el.expr.value, target, text);
  el.expr.value = next.text;
  el.expr.focus();
  el.expr.setSelectionRange(next.cursor, next.cursor);
  onExpressionChanged(0);
}

function applyRange() {
  const from = el.windowFrom.value;
  const to = el.windowTo.value || from;
  if (!from) {
    el.windowTarget.textContent = "Choose the first day of the range";
    el.windowFrom.focus();
    return;
  }
  if (to < from) {
    el.windowTarget.textContent = `The range ends (${to}) before it starts (${from})`;
    return;
  }
  applyWindow(from === to ? from : `${from}..${to}`);
}

// -- saving ----------------------------------------------------------------------

function saveProblem(headline, message, extra) {
  el.saveResult.hidden = true;
  el.saveError.replaceChildren(make("strong", {}, headline));
  if (message) el.saveError.append(make("div", { className: "message" }, message));
  if (extra) el.saveError.append(extra);
  el.saveError.hidden = false;
}

function showSaveError(kind, name, expr, err) {
  el.saveError.dataset.code = err.code || "network_error";
  if (!(err instanceof ApiError)) {
    saveProblem("Not saved", describe(err));
  } else if (err.code === "name_taken") {
    saveProblem(`Not saved: the name “${name}” is already taken`, err.message);
  } else if (err.code === "in_use") {
    const dependents = Array.isArray(err.details.dependents) ? err.details.dependents : [];
    saveProblem(`Not saved: “${name}” is in use`, err.message,
      dependents.length ? make("div", { className: "dependents" }, `Used by: ${dependents.join(", ")}`) : null);
  } else if (err.code === "audience_cycle") {
    saveProblem("Not saved: the audience would use itself", err.message);
  } else if (err.code === "invalid_expression" && typeof err.details.position === "number") {
    saveProblem("Not saved: the expression is not valid", err.message, make("pre", {}, pointer(expr, err.details.position)));
  } else if (err.status === 401 || err.status === 403) {
    saveProblem(`Not saved: saving needs an API key with the write scope`, err.message);
  } else {
    saveProblem(`Not saved (${err.code})`, describe(err));
  }
}

async function save(kind) {
  const name = el.saveName.value.trim();
  const description = el.saveDescription.value.trim();
  const expr = el.expr.value.trim();
  el.saveResult.hidden = true;
  el.saveError.hidden = true;
  delete el.saveError.dataset.code;
  if (!expr) return saveProblem("Nothing to save", "Type an expression first.");
  if (!NAME_PATTERN.test(name)) {
    el.saveError.dataset.code = "invalid_segment_name";
    el.saveName.focus();
    return saveProblem(name ? `“${name}” cannot be a name` : "Give it a name",
      "A name is 1 to 128 letters, digits, '_', '.' or ':'.");
  }
  const audience = state.audiences.get(name);
  const segment = state.segments.find((s) => s.name === name);
  if (kind === "audience" && audience &&
      !confirm(`The audience ${name} exists (definition version ${audience.version}). Save this expression as its new definition?`)) return;
  if (kind === "segment" && segment &&
      !confirm(`The segment ${name} exists with ${count.format(segment.cardinality)} users. Replace its members with the users this expression selects now?`)) return;
  for (const button of el.save.querySelectorAll("button")) button.disabled = true;
  try {
    let message;
    if (kind === "audience") {
      const saved = await api("PUT", audiencePath(name), { expr, description });
      const parts = [`Saved the audience ${name}`];
      if (saved && saved.version !== undefined) parts.push(`definition version ${saved.version}`);
      if (saved && typeof saved.reach === "number") parts.push(`reach ${count.format(saved.reach)}`);
      message = parts.join(" · ");
    } else {
      const saved = await api("PUT", segmentPath(name), { expr });
      message = `Saved the frozen segment ${name} · ${count.format(saved.cardinality)} users · version ${saved.version}`;
    }
    el.saveResult.textContent = message;
    el.saveResult.dataset.kind = kind;
    el.saveResult.dataset.name = name;
    el.saveResult.hidden = false;
    await loadCatalog();
  } catch (err) {
    showSaveError(kind, name, expr, err);
  } finally {
    for (const button of el.save.querySelectorAll("button")) button.disabled = false;
  }
}

// -- detail view -----------------------------------------------------------------

function infoRows(pairs) {
  const out = [];
  for (const [term, value, key] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    out.push(make("dt", {}, term), make("dd", { dataset: { key } }, value));
  }
  return out;
}

function versionTable(head, rows) {
  const thead = make("thead", {}, make("tr", {}, ...head.map((h) => make("th", { scope: "col" }, h))));
  const tbody = make("tbody", {}, ...rows);
  el.dialogVersions.replaceChildren(thead, tbody);
}

function exportLinks(name) {
  const links = EXPORT_FORMATS.map(([format, label]) => make("a", {
    className: "button export-link", href: segmentPath(name, `/export?format=${format}`),
    download: `${name}.${format}`, dataset: { format },
    title: `download ${name}'s user IDs as ${label}`,
  }, label));
  el.dialogExport.replaceChildren(...links);
}

function action(label, handler, title) {
  const button = make("button", { type: "button", title }, label);
  button.addEventListener("click", handler);
  return button;
}

function loadAndClose(expr) {
  el.dialog.close();
  setExpression(expr);
  el.expr.focus();
}

async function openDetail(kind, name) {
  const seq = ++state.detailSeq;
  if (state.detail) state.detail.abort();
  const controller = new AbortController();
  state.detail = controller;
  const current = () => seq === state.detailSeq && el.dialog.open;
  const what = { segment: "Segment", windowed: "Windowed segment", audience: "Audience" }[kind];
  el.dialogTitle.replaceChildren(make("span", { className: "muted" }, `${what} `), name);
  el.dialog.dataset.kind = kind;
  el.dialog.dataset.name = name;
  el.dialog.dataset.state = "pending";
  el.dialogError.hidden = true;
  el.dialogInfo.replaceChildren();
  el.dialogActions.replaceChildren();
  el.dialogVersions.replaceChildren();
  el.dialogVersionsTitle.textContent = kind === "audience" ? "Definitions" : "Versions";
  el.dialogTrend.querySelector("figcaption").textContent = "";
  el.dialogTrend.querySelector(".chart-slot").replaceChildren();
  exportLinks(name);
  if (!el.dialog.open) el.dialog.showModal();
  try {
    const options = { current, signal: controller.signal };
    if (kind === "audience") await detailAudience(name, options);
    else if (kind === "windowed") await detailWindowed(name, options);
    else await detailSegment(name, options);
    if (current()) el.dialog.dataset.state = "ok";
  } catch (err) {
    if (isAbort(err) || !current()) return;
    el.dialogError.textContent = describe(err);
    el.dialogError.hidden = false;
    el.dialog.dataset.state = "error";
  }
}

async function detailSegment(name, { current, signal }) {
  const [info, history] = await Promise.all([
    api("GET", segmentPath(name), undefined, signal),
    api("GET", segmentPath(name, "/history"), undefined, signal),
  ]);
  if (!current()) return;
  const points = history.points;
  el.dialogInfo.replaceChildren(...infoRows([
    ["Users", count.format(info.cardinality), "cardinality"],
    ["Version", String(info.version), "version"],
    ["Updated", `${utcText(info.updated_at)} (${freshness(info.updated_at)})`, "updated_at"],
    ["History", `${count.format(points.length)} points kept`, "history"],
  ]));
  el.dialogActions.replaceChildren(action("Use in the expression", () => {
    el.dialog.close();
    insertAtCursor(name);
  }, `add ${name} to the expression`));
  const shown = points.slice().reverse().slice(0, 50);
  versionTable(["Version", "At (UTC)", "Users", "Change", "Added", "Removed"], shown.map((p) => make("tr", { dataset: { version: p.version } },
    make("td", { className: "num" }, String(p.version)), make("td", {}, utcText(p.at)),
    make("td", { className: "num" }, count.format(p.cardinality)), make("td", {}, p.op || ""),
    make("td", { className: "num" }, p.added === null || p.added === undefined ? "" : `+${count.format(p.added)}`),
    make("td", { className: "num" }, p.removed === null || p.removed === undefined ? "" : `−${count.format(p.removed)}`))));
  if (points.length > shown.length) el.dialogVersions.append(make("caption", { className: "muted" }, `the newest ${shown.length} of ${points.length}`));
  await drawTrend(el.dialogTrend, name, { current, signal });
}

async function detailWindowed(name, { current, signal }) {
  const [w, history] = await Promise.all([
    api("GET", segmentPath(name), undefined, signal),
    api("GET", segmentPath(name, "/history"), undefined, signal),
  ]);
  if (!current()) return;
  const unit = w.granularity === "hour" ? "hours" : "days";
  el.dialogInfo.replaceChildren(...infoRows([
    ["Users", `${count.format(w.cardinality)} (in the whole retention)`, "cardinality"],
    ["Buckets", `${w.granularity}, kept ${count.format(w.retention)} ${unit}`, "granularity"],
    ["Held", `${count.format(w.buckets || 0)} buckets` +
      (w.oldest ? `, ${bucketLabel(w, w.oldest)} to ${bucketLabel(w, w.newest)}` : ""), "buckets"],
    ["Created", w.created_at ? utcText(w.created_at) : undefined, "created_at"],
  ]));
  el.dialogActions.replaceChildren(...["7d", "30d", "90d"].map((span) => action(`Use ${name}[${span}]`, () => {
    el.dialog.close();
    insertAtCursor(`${name}[${span}]`);
  }, `add ${name}[${span}] to the expression`)));
  el.dialogVersionsTitle.textContent = "Buckets";
  const shown = history.points.slice().reverse().slice(0, 100);
  versionTable(["Bucket (UTC)", "Users", "Version"], shown.map((p) => make("tr", { dataset: { version: p.version, at: p.at } },
    make("td", {}, bucketLabel(w, p.at)), make("td", { className: "num" }, count.format(p.cardinality)),
    make("td", { className: "num" }, String(p.version)))));
  if (history.points.length > shown.length) el.dialogVersions.append(make("caption", { className: "muted" }, `the newest ${shown.length} of ${history.points.length}`));
  await drawTrend(el.dialogTrend, dayWindow(name), { current, signal, subject: "Users per day" });
}

async function detailAudience(name, { current, signal }) {
  const [audience, history] = await Promise.all([
    api("GET", audiencePath(name), undefined, signal),
    api("GET", audiencePath(name, "/history"), undefined, signal),
  ]);
  if (!current()) return;
  const expr = typeof audience.expr === "string" ? audience.expr : JSON.stringify(audience.expr);
  const read = audience.segments || audience.versions;
  el.dialogInfo.replaceChildren(...infoRows([
    ["Expression", make("code", {}, expr), "expr"],
    ["Description", audience.description, "description"],
    ["Reach", typeof audience.reach === "number" ? count.format(audience.reach) : undefined, "reach"],
    ["Definition", `version ${audience.version}`, "version"],
    ["Updated", audience.updated_at ? `${utcText(audience.updated_at)} (${freshness(audience.updated_at)})` : undefined, "updated_at"],
    ["Read", read && typeof read === "object"
      ? Object.entries(read).map(([n, v]) => `${n} v${v}`).join(", ") : undefined, "read"],
  ]));
  el.dialogActions.replaceChildren(
    action("Load into the composer", () => loadAndClose(expr), "replace the expression with this audience's"),
    action("Use in the expression", () => {
      el.dialog.close();
      insertAtCursor(name);
    }, `add ${name} to the expression`),
  );
  const definitions = history.definitions.slice().sort((a, b) => b.version - a.version);
  versionTable(["Version", "Defined (UTC)", "Expression", "Description", ""], definitions.map((d) => {
    const text = typeof d.expr === "string" ? d.expr : JSON.stringify(d.expr);
    const at = d.at ?? d.defined_at ?? d.updated_at;
    return make("tr", { dataset: { version: d.version } },
      make("td", { className: "num" }, String(d.version)), make("td", {}, at === undefined ? "" : utcText(at)),
      make("td", {}, make("code", {}, text)), make("td", {}, d.description || ""),
      make("td", {}, action("load", () => loadAndClose(text), `load version ${d.version} into the composer`)));
  }));
  await drawTrend(el.dialogTrend, name, { current, signal });
}

// -- overlap heatmap -------------------------------------------------------------

function renderSelection() {
  const n = state.selected.size;
  el.selection.textContent = n
    ? `${n} selected: ${[...state.selected].join(", ")}`
    : "Tick up to 32 segments in the list.";
  el.overlapRun.disabled = n === 0 || n > MAX_OVERLAP;
  if (n > MAX_OVERLAP) el.selection.textContent += ` (at most ${MAX_OVERLAP})`;
}

function shade(fraction) {
  const f = Math.max(0, Math.min(1, fraction));
  const light = 96 - Math.round(f * 58);
  return `hsl(212, 80%, ${light}%)`;
}

async function runOverlap() {
  const names = [...state.selected];
  el.overlapError.hidden = true;
  try {
    const data = await api("POST", "/v1/overlap", { segments: names });
    renderHeatmap(data);
  } catch (err) {
    el.overlapError.textContent = describe(err);
    el.overlapError.hidden = false;
  }
}

function renderHeatmap(data) {
  const head = make("tr", {}, make("th"));
  for (const name of data.segments) head.append(make("th", { scope: "col", className: "col-name" }, name));
  const rows = [head];
  data.segments.forEach((rowName, i) => {
    const tr = make("tr", {}, make("th", { scope: "row" }, `${rowName} (${count.format(data.sizes[i])})`));
    data.segments.forEach((colName, j) => {
      const both = data.matrix[i][j];
      const fraction = data.sizes[i] ? both / data.sizes[i] : 0;
      const td = make("td", { className: "cell", dataset: { value: String(both) } }, count.format(both));
      td.style.background = shade(fraction);
      td.style.color = fraction > 0.6 ? "#fff" : "";
      td.title = `${rowName} ∩ ${colName}: ${count.format(both)} users, ${(100 * fraction).toFixed(1)}% of ${rowName}`;
      tr.append(td);
    });
    rows.push(tr);
  });
  el.heatmap.replaceChildren(...rows);
  el.legend.hidden = false;
}

// -- wiring ------------------------------------------------------------------------

el.expr.addEventListener("input", () => onExpressionChanged());
el.expr.addEventListener("keydown", (event) => {
  if (event.key === "Enter") scheduleReach(0);
});
for (const type of ["keyup", "click", "select", "focus"]) el.expr.addEventListener(type, updateWindowMenu);
el.operators.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-insert]");
  if (button) insertAtCursor(button.dataset.insert);
});
el.clear.addEventListener("click", () => {
  setExpression("");
  el.expr.focus();
});
el.windowMenu.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-window]");
  if (button) applyWindow(button.dataset.window);
});
el.windowRange.addEventListener("click", applyRange);
el.windowFrom.value = isoDay(Date.now() - 29 * DAY_MS);
el.windowTo.value = isoDay(Date.now());
el.windowFrom.max = el.windowTo.max = isoDay(Date.now());

document.querySelector("#catalog").addEventListener("click", (event) => {
  const target = event.target.closest("button");
  if (!target) return;
  if (target.dataset.detail) openDetail(target.dataset.kind, target.dataset.detail);
  else if (target.dataset.load) {
    const audience = state.audiences.get(target.dataset.load);
    if (!audience) return;
    setExpression(typeof audience.expr === "string" ? audience.expr : JSON.stringify(audience.expr));
    el.saveName.value = audience.name;
    el.saveDescription.value = audience.description || "";
    el.expr.focus();
  } else if (target.dataset.insert) insertAtCursor(target.dataset.insert);
});
el.body.addEventListener("change", (event) => {
  const box = event.target.closest("input.pick");
  if (!box) return;
  if (box.checked) state.selected.add(box.value);
  else state.selected.delete(box.value);
  renderSelection();
});
el.filter.addEventListener("input", () => {
  renderSegments();
  renderAudiences();
});
el.overlapRun.addEventListener("click", runOverlap);
el.overlapClear.addEventListener("click", () => {
  state.selected.clear();
  renderSegments();
  renderSelection();
});
el.save.addEventListener("submit", (event) => {
  event.preventDefault();
  save(event.submitter && event.submitter.value === "segment" ? "segment" : "audience");
});
el.shareCopy.addEventListener("click", async () => {
  const link = new URL(el.shareLink.getAttribute("href"), location.href).href;
  try {
    await navigator.clipboard.writeText(link);
    el.shareNote.textContent = "link copied";
  } catch (_) {
    el.shareNote.textContent = "copy it from the link (the browser refused the clipboard)";
  }
});
el.dialogClose.addEventListener("click", () => el.dialog.close());
el.dialog.addEventListener("click", (event) => {
  if (event.target !== el.dialog) return;
  const box = el.dialog.getBoundingClientRect();
  const inside = box.left <= event.clientX && event.clientX <= box.right && box.top <= event.clientY && event.clientY <= box.bottom;
  if (!inside) el.dialog.close();  // a click on the backdrop
});
el.dialog.addEventListener("close", () => {
  el.dialog.dataset.state = "closed";
  if (state.detail) state.detail.abort();
});
el.dialogExport.addEventListener("click", (event) => {
  const link = event.target.closest("a.export-link");
  if (!link || !hasApiKey()) return;
  event.preventDefault();  // a link cannot carry the API key: fetch with it, then save the file
  download(link.getAttribute("href"), link.getAttribute("download")).catch((err) => {
    el.dialogError.textContent = `export failed: ${describe(err)}`;
    el.dialogError.hidden = false;
  });
});
el.auth.addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(el.apiKey.value.trim());
  el.auth.hidden = true;
  state.sparks.clear();
  loadCatalog();
  scheduleReach(0);
});
window.addEventListener("hashchange", () => {
  const expr = expressionFromUrl();
  if (expr !== null && expr !== el.expr.value) setExpression(expr);
});

installTooltip(el.tooltip);
renderSelection();
clearSide("");
const initial = expressionFromUrl();
syncUrl(initial || "");
loadCatalog().then(() => {
  // the trend under the reach depends on which names are windowed: draw it once the lists are known
  if (el.reach.dataset.state === "ok") refreshSide(el.reach.dataset.expr, state.seq);
});
setInterval(loadCatalog, 30000);
if (initial) {
  el.expr.value = initial;
  scheduleReach(0);
}
