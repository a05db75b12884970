// Reading expression text in the page: which names it references and which windows they carry.
// The server parses and judges expressions; this only finds the pieces the composer works with
// (the name under the cursor, the window after it), with the same token rules as the grammar
// (segments/expressions/parser.py): names of [A-Za-z0-9_.:], the words AND OR NOT EXCEPT XOR,
// the symbols | & - ^ ~ ( ) and a window [...] after a name, whitespace anywhere between tokens.
export const NAME_PATTERN = /^[A-Za-z0-9_.:]{1,128}$/;
const TOKEN = /\s*(?:(?<name>[A-Za-z0-9_.:]+)|(?<sym>[|&^~()-])|(?<win>\[[^\]]{0,40}\]))/y;
const WORDS = new Set(["or", "xor", "and", "except", "not"]);

/** The tokens of `text` up to the first character the grammar does not know. */
export function tokens(text) {
  const out = [];
  TOKEN.lastIndex = 0;
  for (;;) {
    const start = TOKEN.lastIndex;
    const m = TOKEN.exec(text);
    if (!m || m[0].length === 0 || TOKEN.lastIndex === start) break;
    const end = TOKEN.lastIndex;
    const g = m.groups;
    if (g.name !== undefined) {
      const at = end - g.name.length;
      out.push({ kind: WORDS.has(g.name.toLowerCase()) ? "op" : "name", text: g.name, start: at, end });
    } else if (g.win !== undefined) {
      out.push({ kind: "window", text: g.win.slice(1, -1), start: end - g.win.length, end });
    } else {
      out.push({ kind: "op", text: g.sym, start: end - 1, end });
    }
  }
  return out;
}

/** Every name the text references, in order, with the window that follows it (or null). */
export function references(text) {
  const refs = [];
  for (const tok of tokens(text)) {
    if (tok.kind === "name") {
      refs.push({ name: tok.text, start: tok.start, end: tok.end, window: null });
    } else if (tok.kind === "window" && refs.length && refs[refs.length - 1].end <= tok.start) {
      const last = refs[refs.length - 1];
      if (last.window === null && /^\s*$/.test(text.slice(last.end, tok.start))) last.window = tok;
    }
  }
  return refs;
}

/**
 * The reference of a windowed segment that a window chosen from the menu applies to: the one the
 * cursor is on (its name or its window), else the only windowed reference in the text; null if none.
 */
export function windowTarget(text, cursor, isWindowed) {
  const candidates = references(text).filter((r) => isWindowed(r.name));
  const at = candidates.find((r) => r.start <= cursor && cursor <= (r.window ? r.window.end : r.end));
  if (at) return at;
  return candidates.length === 1 ? candidates[0] : null;
}

/** `text` with `ref`'s window set to `[windowText]`; returns the new text and the cursor after it. */
export function withWindow(text, ref, windowText) {
  const piece = `[${windowText}]`;
  const start = ref.window ? ref.window.start : ref.end;
  const end = ref.window ? ref.window.end : ref.end;
  return { text: text.slice(0, start) + piece + text.slice(end), cursor: start + piece.length };
}

/**
 * What an expression stands on, with audiences expanded through `audienceExpr(name)` (text or
 * undefined): whether it has a window (a [...] or a windowed segment, which means its whole
 * retention) and the names of the segments it reads, in order of appearance.
 */
export function footprint(text, { audienceExpr, isWindowed }) {
  const segments = [];
  let windows = false;
  const seen = new Set();
  const walk = (source, depth) => {
    for (const ref of references(source)) {
      if (ref.window || isWindowed(ref.name)) windows = true;
      if (seen.has(ref.name)) continue;
      seen.add(ref.name);
      const inner = audienceExpr(ref.name);
      if (typeof inner === "string" && depth < 16) walk(inner, depth + 1);
      else if (inner === undefined) segments.push(ref.name);
    }
  };
  walk(text, 0);
  return { windows, segments };
}
