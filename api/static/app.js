// Audience builder: segments list, expression with live reach, overlap heatmap.
// Plain browser JavaScript, no build step, no third-party code: served by the API itself.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("status"), auth: $("auth"), apiKey: $("api-key"),
    filter: $("filter"), body: $("segments-body"), count: $("segment-count"),
    expr: $("expr"), operators: $("operators"), clear: $("clear"),
    reach: $("reach"), detail: $("reach-detail"),
    error: $("error"), errorMessage: $("error-message"), errorPointer: $("error-pointer"),
    selection: $("overlap-selection"), overlapRun: $("overlap-run"), overlapClear: $("overlap-clear"),
    overlapError: $("overlap-error"), heatmap: $("heatmap"), legend: $("heatmap-legend"),
  };
  const DEBOUNCE_MS = 150;
  const MAX_OVERLAP = 32;
  const numberFormat = new Intl.NumberFormat("en-US");
  const state = {
    segments: [],
    selected: new Set(),
    universe: "all",
    seq: 0,
    inflight: null,
    timer: null,
  };

  // -- HTTP ----------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || `HTTP ${status}`);
      this.status = status;
      this.code = err.code || "http_error";
      this.details = err;
    }
  }

  async function api(method, path, body, signal) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem("segments-api-key");
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!response.ok) {
      if (response.status === 401 || response.status === 403) showAuth(response.status);
      throw new ApiError(response.status, data);
    }
    return data;
  }

  function showAuth(status) {
    el.auth.hidden = false;
    setStatus(status === 401 ? "an API key is required" : "this API key lacks the read scope", "bad");
  }

  function setStatus(text, kind) {
    el.status.textContent = text;
    el.status.dataset.kind = kind || "";
  }

  // -- segment list --------------------------------------------------------

  function freshness(iso) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "";
    const seconds = Math.max(0, (Date.now() - then) / 1000);
    if (seconds < 60) return "just now";
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }

  async function loadSegments() {
    try {
      const data = await api("GET", "/v1/segments");
      state.segments = data.segments;
      setStatus(`${state.segments.length} segments`, "ok");
      renderSegments();
    } catch (err) {
      // 401/403 already asked for a key (see api()); say what else went wrong.
      if (!(err instanceof ApiError && (err.status === 401 || err.status === 403))) {
        setStatus(`cannot list segments: ${err.message}`, "bad");
      }
    }
  }

  function renderSegments() {
    const needle = el.filter.value.trim().toLowerCase();
    const rows = [];
    for (const info of state.segments) {
      if (needle && !info.name.toLowerCase().includes(needle)) continue;
      const tr = document.createElement("tr");
      tr.dataset.name = info.name;

      const pick = document.createElement("td");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.className = "pick";
      box.value = info.name;
      box.checked = state.selected.has(info.name);
      box.setAttribute("aria-label", `compare ${info.name}`);
      pick.append(box);

      const name = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "segment-name";
      button.textContent = info.name;
      button.title = `add ${info.name} to the expression`;
      button.dataset.insert = info.name;
      name.append(button);

      const size = document.createElement("td");
      size.className = "num";
      size.textContent = numberFormat.format(info.cardinality);

      const updated = document.createElement("td");
      updated.className = "muted";
      updated.textContent = freshness(info.updated_at);
      updated.title = `${info.updated_at} (version ${info.version})`;

      tr.append(pick, name, size, updated);
      rows.push(tr);
    }
    el.body.replaceChildren(...rows);
    el.count.textContent = `(${state.segments.length})`;
  }

  // -- expression and reach ------------------------------------------------

  function insertAtCursor(text) {
    const input = el.expr;
    const start = input.selectionStart ?? input.value.length;
    const end = input.selectionEnd ?? input.value.length;
    let piece = text;
    const before = input.value.slice(0, start);
    if (/^[A-Za-z0-9_.:]/.test(piece) && /[A-Za-z0-9_.:)]$/.test(before)) piece = ` ${piece}`;
    input.setRangeText(piece, start, end, "end");
    input.focus();
    scheduleReach(0);
  }

  function scheduleReach(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(runReach, delay === undefined ? DEBOUNCE_MS : delay);
  }

  function showReach(expr, reach, took, versions) {
    el.reach.textContent = numberFormat.format(reach);
    el.reach.dataset.reach = String(reach);
    el.reach.dataset.expr = expr;
    el.reach.dataset.state = "ok";
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
    let message = err.message;
    if (err.code === "segment_not_found" && Array.isArray(err.details.segments)) {
      message = `Unknown segment${err.details.segments.length > 1 ? "s" : ""}: ${err.details.segments.join(", ")}`;
    }
    el.errorMessage.textContent = message;
    const position = err.details.position;
    if (err.code === "invalid_expression" && typeof position === "number") {
      el.errorPointer.textContent = `${expr}\n${" ".repeat(Math.min(position, expr.length))}^ position ${position}`;
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
    if (state.inflight) state.inflight.abort();
    if (!expr.trim()) {
      state.inflight = null;
      showEmpty();
      return;
    }
    const controller = new AbortController();
    state.inflight = controller;
    el.reach.dataset.state = "pending";
    try {
      const data = await api("POST", "/v1/reach", { expr }, controller.signal);
      if (seq === state.seq) showReach(expr, data.reach, data.took_ms, data.segments);
    } catch (err) {
      if (err.name === "AbortError" || seq !== state.seq) return;
      if (err instanceof ApiError) showError(expr, err);
      else showError(expr, { code: "network_error", message: `cannot reach the API: ${err.message}`, details: {} });
    }
  }

  // -- overlap heatmap -----------------------------------------------------

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
      el.overlapError.textContent = err.message;
      el.overlapError.hidden = false;
    }
  }

  function renderHeatmap(data) {
    const head = document.createElement("tr");
    head.append(document.createElement("th"));
    for (const name of data.segments) {
      const th = document.createElement("th");
      th.scope = "col";
      th.className = "col-name";
      th.textContent = name;
      head.append(th);
    }
    const rows = [head];
    data.segments.forEach((rowName, i) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = `${rowName} (${numberFormat.format(data.sizes[i])})`;
      tr.append(th);
      data.segments.forEach((colName, j) => {
        const both = data.matrix[i][j];
        const fraction = data.sizes[i] ? both / data.sizes[i] : 0;
        const td = document.createElement("td");
        td.className = "cell";
        td.textContent = numberFormat.format(both);
        td.dataset.value = String(both);
        td.style.background = shade(fraction);
        td.style.color = fraction > 0.6 ? "#fff" : "";
        td.title = `${rowName} ∩ ${colName}: ${numberFormat.format(both)} users, ` +
          `${(100 * fraction).toFixed(1)}% of ${rowName}`;
        tr.append(td);
      });
      rows.push(tr);
    });
    el.heatmap.replaceChildren(...rows);
    el.legend.hidden = false;
  }

  // -- wiring --------------------------------------------------------------

  el.expr.addEventListener("input", () => scheduleReach());
  el.expr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") scheduleReach(0);
  });
  el.operators.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-insert]");
    if (button) insertAtCursor(button.dataset.insert);
  });
  el.clear.addEventListener("click", () => {
    el.expr.value = "";
    el.expr.focus();
    scheduleReach(0);
  });
  el.body.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-insert]");
    if (button) insertAtCursor(button.dataset.insert);
  });
  el.body.addEventListener("change", (event) => {
    const box = event.target.closest("input.pick");
    if (!box) return;
    if (box.checked) state.selected.add(box.value);
    else state.selected.delete(box.value);
    renderSelection();
  });
  el.filter.addEventListener("input", renderSegments);
  el.overlapRun.addEventListener("click", runOverlap);
  el.overlapClear.addEventListener("click", () => {
    state.selected.clear();
    renderSegments();
    renderSelection();
  });
  el.auth.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = el.apiKey.value.trim();
    if (key) sessionStorage.setItem("segments-api-key", key);
    else sessionStorage.removeItem("segments-api-key");
    el.auth.hidden = true;
    loadSegments();
    scheduleReach(0);
  });

  renderSelection();
  loadSegments();
  setInterval(loadSegments, 30000);
  if (el.expr.value) scheduleReach(0);
})();
