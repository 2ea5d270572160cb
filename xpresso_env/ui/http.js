// The page's one way to the API: relative /api/v2/ paths of this origin, the token in the
// Authorization header only (never in a URL), no cookies. GETs of lists are conditional
// (If-None-Match): an unchanged list costs a 304 and keeps what is shown.
import {text} from "./dom.js";

// What the page knows about whoever is signed in. `token` is null when a trusted proxy signs the
// user in (the `header` provider): then requests carry no Authorization header at all.
export const session = {
  token: null, viaProxy: false, me: null, group: null, perms: new Set(), role: null,
  prefs: {time_zone: "UTC", time_format: "24h"},
};

let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(describe(body) || ("HTTP " + status));
    this.status = status;
    this.body = body || {};
    this.retryAfter = retryAfter;
  }
  // {"field": ["message", ...]} of a 400, or {} when the answer was not about fields.
  get fields() {
    if (this.status !== 400 || typeof this.body.detail === "string") return {};
    return this.body;
  }
}

export function describe(body) {
  if (!body || typeof body !== "object") return "";
  if (typeof body.detail === "string") return body.detail;
  return Object.entries(body).map(([k, v]) => k + ": " + (Array.isArray(v) ? v.join(" ") : text(v))).join("; ");
}

export async function request(method, path, {body, group = session.group, signal, headers = {}, quiet401 = false} = {}) {
  if (!path.startsWith("/api/v2/")) throw new Error("not an API path");
  const all = {"Accept": "application/json", ...headers};
  if (session.token) all["Authorization"] = "Jwt " + session.token;
  if (group) all["Group"] = group;
  const init = {method, headers: all, credentials: "omit", cache: "no-store", redirect: "error", signal};
  if (body !== undefined) {
    all["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401 && !quiet401) {
    const detail = describe(await resp.clone().json().catch(() => ({})));
    onUnauthorized(detail || "the token was refused.");
  }
  return resp;
}

async function failure(resp) {
  const body = await resp.json().catch(() => ({detail: resp.statusText}));
  return new ApiError(resp.status, body, resp.headers.get("Retry-After"));
}

export async function api(method, path, options) {
  const resp = await request(method, path, options);
  if (!resp.ok) throw await failure(resp);
  if (resp.status === 204) return {data: null, total: null};
  return {data: await resp.json(), total: resp.headers.get("X-Total-Count")};
}

// Conditional GETs: the last answer of each (group, path) with its ETag. `changed` is false when
// the server answered 304 (or sent the same ETag again): the caller keeps what it shows.
const remembered = new Map();

export function forget() { remembered.clear(); }

export async function fresh(path, options = {}) {
  const key = (options.group ?? session.group ?? "") + " " + path;
  const last = remembered.get(key);
  const headers = last && last.etag ? {"If-None-Match": last.etag} : {};
  const resp = await request("GET", path, {...options, headers});
  if (resp.status === 304 && last) return {...last, changed: false};
  if (!resp.ok) throw await failure(resp);
  const body = await resp.text();
  // Without an ETag (an older server) the body itself tells whether anything changed.
  const out = {data: JSON.parse(body), total: resp.headers.get("X-Total-Count"), etag: resp.headers.get("ETag"), body};
  const same = Boolean(last) && (out.etag ? last.etag === out.etag : last.body === body);
  remembered.set(key, out);
  return {...out, changed: !same};
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

export const id = (value) => encodeURIComponent(String(value));
