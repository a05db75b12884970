// Charts drawn as inline SVG: sparklines, time charts (size history, reach over time) and the
// insights index bars. Every drawn value is also on its element as data-* attributes, and every
// mark that has numbers carries them in data-tip, which the page's tooltip shows on hover/focus.
// Colours come from CSS classes (app.css), never from style attributes (the page's CSP has no
// 'unsafe-inline').
const NS = "http://www.w3.org/2000/svg";
export const count = new Intl.NumberFormat("en-US");
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const dayFormat = new Intl.DateTimeFormat("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
const timeFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
const secondFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: "UTC" });
const DAY_MS = 86400000;
/** Series beyond this many points are drawn as a line only (their values stay on the series group). */
const MAX_MARKS = 400;
const SERIES_CLASSES = 8;

export function node(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  el.append(...children);
  return el;
}

export function percent(fraction) {
  const p = 100 * fraction;
  return `${p !== 0 && Math.abs(p) < 1 ? p.toFixed(2) : p.toFixed(1)}%`;
}

/** An index (lift) as shown: whole numbers, with one decimal near 100 and below 10 (99.6 is not "100"). */
export function formatIndex(index) {
  if (index === null || index === undefined) return "n/a";
  if (index === 0) return "0";
  return index < 10 || Math.abs(index - 100) < 10 ? index.toFixed(1) : count.format(Math.round(index));
}

/** YYYY-MM-DD (UTC) of a time in ms. */
export function isoDay(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}

// -- sparkline ---------------------------------------------------------------

/** A small line of `values` (oldest first); null when there is nothing to draw. */
export function sparkline(values, label) {
  if (!values.length) return null;
  const width = 96;
  const height = 22;
  const pad = 2.5;
  const low = Math.min(...values);
  const high = Math.max(...values);
  const x = (i) => (values.length === 1 ? width - pad : pad + (i * (width - 2 * pad)) / (values.length - 1));
  const y = (v) => (high === low ? height / 2 : height - pad - ((v - low) * (height - 2 * pad)) / (high - low));
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  if (values.length === 1) points.unshift(`${pad},${y(values[0]).toFixed(1)}`);
  const last = values.length - 1;
  return node(
    "svg",
    {
      class: "sparkline", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-label": label, "data-tip": label, "data-values": values.join(","),
    },
    node("polyline", { class: "spark-line", points: points.join(" ") }),
    node("circle", { class: "spark-dot", cx: x(last).toFixed(1), cy: y(values[last]).toFixed(1), r: 2 }),
  );
}

// -- time chart --------------------------------------------------------------

/**
 * A chart of values over time from `from` to `to` (ms).
 * series: [{name, points: [{t, v, tip, data: {key: value}}]}], points in time order.
 * mode "step": a size that holds until the next point (the last point before `from` carries in);
 * mode "line": values measured at each point.
 */
export function timeChart(series, { from, to, mode, label }) {
  const W = 640, H = 200;
  const m = { l: 58, r: 14, t: 12, b: 26 };
  const span = Math.max(1, to - from);
  const x = (t) => m.l + ((Math.min(Math.max(t, from), to) - from) / span) * (W - m.l - m.r);
  const shown = series.map((s) => {
    const inside = s.points.filter((p) => p.t >= from && p.t <= to);
    const before = s.points.filter((p) => p.t < from).pop();
    return { ...s, inside, before };
  });
  const all = shown.flatMap((s) => [...s.inside, ...(s.before ? [s.before] : [])].map((p) => p.v));
  const top = Math.max(1, ...all);
  const step = niceStep(top / 4);
  const ymax = step * Math.ceil(top / step);
  const y = (v) => H - m.b - (v / ymax) * (H - m.t - m.b);

  const svg = node("svg", {
    class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label,
    "data-mode": mode, "data-from": new Date(from).toISOString(), "data-to": new Date(to).toISOString(),
  });
  for (let v = 0; v <= ymax + step / 2; v += step) {
    svg.append(
      node("line", { class: v === 0 ? "axis" : "grid", x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }),
      node("text", { class: "tick", x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, compact.format(v)),
    );
  }
  const ticks = 5;
  const clock = span >= 20 * 60000 ? timeFormat : secondFormat;
  const fmt = span >= 2 * DAY_MS ? (t) => dayFormat.format(t) : (t) => `${clock.format(t)} UTC`;
  for (let i = 0; i < ticks; i++) {
    const t = from + (i * span) / (ticks - 1);
    const anchor = i === 0 ? "start" : i === ticks - 1 ? "end" : "middle";
    svg.append(node("text", { class: "tick", x: x(t), y: H - 8, "text-anchor": anchor }, fmt(t)));
  }

  shown.forEach((s, index) => {
    const group = node("g", {
      class: `series s${index % SERIES_CLASSES}`, "data-series": s.name,
      "data-values": s.inside.map((p) => p.v).join(","),
    });
    if (mode === "step") {
      let d = s.before ? `M${x(from)},${y(s.before.v)}` : "";
      for (const p of s.inside) d += d ? `H${x(p.t)}V${y(p.v)}` : `M${x(p.t)},${y(p.v)}`;
      const last = s.inside.length ? s.inside[s.inside.length - 1] : s.before;
      if (last) d += `H${x(to)}`;
      if (d) group.append(node("path", { class: "line", d }));
    } else if (s.inside.length) {
      group.append(node("polyline", {
        class: "line", points: s.inside.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" "),
      }));
    }
    if (s.inside.length <= MAX_MARKS) {
      for (const p of s.inside) {
        const data = {};
        for (const [key, value] of Object.entries(p.data || {})) data[`data-${key}`] = value;
        group.append(node("circle", {
          class: "point", cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.6,
          "data-series": s.name, "data-at": new Date(p.t).toISOString(), "data-value": p.v,
          "data-tip": p.tip, ...data,
        }));
      }
    }
    svg.append(group);
  });
  return svg;
}

/** A legend for a chart's series (HTML, so long names wrap). */
export function legend(names) {
  const list = document.createElement("ul");
  list.className = "legend";
  names.forEach((name, index) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch s${index % SERIES_CLASSES}`;
    item.append(swatch, name);
    list.append(item);
  });
  return list;
}

// -- insights ------------------------------------------------------------------

export function insightTip(row) {
  return `${row.segment}: index ${formatIndex(row.index)} · ${count.format(row.both)} users in both · ` +
    `${percent(row.share_of_audience)} of the audience vs ${percent(row.share_of_universe)} of the universe`;
}

/**
 * Horizontal bars of the index (lift) of the top and bottom segments, on a log scale around 100
 * (the universe's own rate): over-indexing to the right, under-indexing to the left.
 * Returns {svg, shown: rows drawn, hidden: rows between the top and the bottom that were left out}.
 */
export function indexBars(rows, { top = 6, bottom = 6 } = {}) {
  const ranked = rows.filter((r) => r.index !== null && r.index !== undefined)
    .sort((a, b) => b.index - a.index);
  const cut = ranked.length > top + bottom;
  const upper = cut ? ranked.slice(0, top) : ranked;
  const lower = cut ? ranked.slice(ranked.length - bottom) : [];
  const hidden = cut ? ranked.length - top - bottom : 0;

  const W = 640, rowH = 24, labelW = 190;
  const m = { t: 8, b: 30 };
  const lines = upper.length + lower.length + (cut ? 1 : 0);
  const H = m.t + lines * rowH + m.b;
  const cx = labelW + (W - labelW) / 2;
  const half = (W - labelW) / 2 - 46;
  const logs = [...upper, ...lower].map((r) => (r.index > 0 ? Math.abs(Math.log10(r.index / 100)) : 0));
  const maxLog = Math.max(0.3, ...logs);
  const length = (index) => (index > 0 ? (Math.min(Math.abs(Math.log10(index / 100)), maxLog) / maxLog) * half : half);

  const svg = node("svg", { class: "chart bars", viewBox: `0 0 ${W} ${H}`, role: "group", "aria-label": "index by segment" });
  const bar = (row, line) => {
    const over = row.index >= 100;
    const len = Math.max(1, length(row.index));
    const y0 = m.t + line * rowH;
    const name = row.segment.length > 26 ? `${row.segment.slice(0, 25)}…` : row.segment;
    const tip = insightTip(row);
    return node(
      "g",
      {
        class: `bar ${over ? "over" : "under"}`, tabindex: 0, role: "img", "aria-label": tip, "data-tip": tip,
        "data-segment": row.segment, "data-index": row.index, "data-both": row.both,
        "data-share-of-audience": row.share_of_audience, "data-share-of-universe": row.share_of_universe,
      },
      node("rect", { class: "hit", x: 0, y: y0, width: W, height: rowH }),
      node("text", { class: "name", x: labelW - 10, y: y0 + rowH / 2 + 4, "text-anchor": "end" }, name),
      node("rect", { class: "fill", x: over ? cx : cx - len, y: y0 + 4, width: len, height: rowH - 8, rx: 2 }),
      node("text", {
        class: "value", x: over ? cx + len + 5 : cx - len - 5, y: y0 + rowH / 2 + 4,
        "text-anchor": over ? "start" : "end",
      }, formatIndex(row.index)),
    );
  };
  upper.forEach((row, i) => svg.append(bar(row, i)));
  if (cut) {
    svg.append(node("text", {
      class: "gap", x: cx, y: m.t + upper.length * rowH + rowH / 2 + 4, "text-anchor": "middle",
    }, `⋯ ${count.format(hidden)} more in between ⋯`));
  }
  lower.forEach((row, i) => svg.append(bar(row, upper.length + (cut ? 1 : 0) + i)));
  const base = m.t + lines * rowH;
  svg.append(
    node("line", { class: "axis", x1: cx, x2: cx, y1: m.t, y2: base + 4 }),
    node("text", { class: "tick", x: cx, y: base + 18, "text-anchor": "middle" }, "100 = as in the universe"),
    node("text", { class: "tick", x: labelW, y: base + 18, "text-anchor": "start" }, "← under-indexes"),
    node("text", { class: "tick", x: W - 4, y: base + 18, "text-anchor": "end" }, "over-indexes →"),
  );
  return { svg, shown: [...upper, ...lower], hidden };
}

// -- tooltip -------------------------------------------------------------------

/** Show the data-tip of whatever is under the pointer (or focused) in `tip`, a fixed-position element. */
export function installTooltip(tip) {
  let current = null;
  const place = (left, top) => {
    const box = tip.getBoundingClientRect();
    tip.style.left = `${Math.max(4, Math.min(left + 14, window.innerWidth - box.width - 8))}px`;
    tip.style.top = `${Math.max(4, Math.min(top + 16, window.innerHeight - box.height - 8))}px`;
  };
  const show = (target, left, top) => {
    current = target;
    // a modal dialog is in the top layer: the tooltip must live inside it to be seen above it
    const host = target.closest("dialog[open]") || document.body;
    if (tip.parentElement !== host) host.append(tip);
    tip.textContent = target.getAttribute("data-tip");
    tip.hidden = false;
    place(left, top);
  };
  const hide = () => {
    current = null;
    tip.hidden = true;
  };
  document.addEventListener("pointerover", (event) => {
    const target = event.target.closest && event.target.closest("[data-tip]");
    if (target) show(target, event.clientX, event.clientY);
    else if (current) hide();
  });
  document.addEventListener("pointermove", (event) => {
    if (current) place(event.clientX, event.clientY);
  });
  document.addEventListener("focusin", (event) => {
    const target = event.target.closest && event.target.closest("[data-tip]");
    if (target) {
      const box = target.getBoundingClientRect();
      show(target, box.left, box.bottom - 12);
    }
  });
  document.addEventListener("focusout", hide);
}
