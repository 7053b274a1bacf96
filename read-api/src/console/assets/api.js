// The read API's JSON endpoints, relative to where the console is served (so a proxy that
// mounts the read API under a prefix keeps working), with the API key of this tab, if any.

const KEY = "factline.readApiKey";

// The read API's root: the folder the console page is in.
const base = new URL(".", window.location.href);

export function apiKey() {
  return window.sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) window.sessionStorage.setItem(KEY, key);
  else window.sessionStorage.removeItem(KEY);
}

// An answer that was not a 2xx: its status and JSON body.
export class ApiError extends Error {
  constructor(status, body) {
    const text = body && typeof body === "object" && body.error ? body.error : String(body || "");
    super(status === 401
      ? "the read API needs an API key: enter it above (" + text + ")"
      : "HTTP " + status + ": " + text);
    this.status = status;
    this.body = body;
  }
}

// GET `path` (relative, e.g. "events") with the non-empty `params`; resolves to
// {body, freshness} or rejects with an ApiError.
export async function get(path, params) {
  const url = new URL(path, base);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.append(k, String(v));
  }
  const headers = {Accept: "application/json"};
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch(url, {headers, cache: "no-store"});
  } catch (error) {
    throw new ApiError(0, "the read API did not answer (" + error.message + ")");
  }
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  const freshness = {
    projection: response.headers.get("Factline-Projection"),
    lagEvents: response.headers.get("Factline-Lag-Events"),
    lagSeconds: response.headers.get("Factline-Lag-Seconds"),
  };
  return {body, freshness};
}

// The segment of a path, escaped.
export function segment(value) {
  return encodeURIComponent(String(value));
}
