// The page's HTTP client: JSON to and from /v1 with the session's API key, errors in the API's shape.
const KEY_STORAGE = "segments-api-key";
let authListener = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.details = err;
  }
}

/** `listener(status, scope)` runs on every 401 / 403 answer (scope: "read" or "write"). */
export function onAuthRequired(listener) {
  authListener = listener;
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export function hasApiKey() {
  return sessionStorage.getItem(KEY_STORAGE) !== null;
}

/** `path` of one segment (or audience) resource: `/v1/segments/<name><rest>`, the name escaped. */
export function segmentPath(name, rest = "") {
  return `/v1/segments/${encodeURIComponent(name)}${rest}`;
}

export function audiencePath(name, rest = "") {
  return `/v1/audiences/${encodeURIComponent(name)}${rest}`;
}

export async function api(method, path, body, signal) {
  const headers = { Accept: "application/json", ...authHeaders() };
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
    if (response.status === 401 || response.status === 403) {
      authListener(response.status, method === "PUT" || method === "DELETE" ? "write" : "read");
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

/** Download `path` with the session's key (a plain link cannot send the Authorization header). */
export async function download(path, filename) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 401 || response.status === 403) authListener(response.status, "read");
    throw new ApiError(response.status, data);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
