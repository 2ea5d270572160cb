// Times: the API's are UTC; the page shows them in the user's preferred zone and clock
// (GET /api/v2/me's preferences), relative ("3 min ago") with the exact time on hover.
import {el} from "./dom.js";
import {session} from "./http.js";

function formatter() {
  const {time_zone: timeZone = "UTC", time_format: fmt = "24h"} = session.prefs || {};
  try {
    return new Intl.DateTimeFormat("en-CA", {timeZone, hour12: fmt === "12h", year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"});
  } catch (err) {  // a zone this browser does not know: UTC rather than nothing
    return new Intl.DateTimeFormat("en-CA", {timeZone: "UTC", hour12: fmt === "12h", dateStyle: "short",
      timeStyle: "long"});
  }
}

// "2026-12-07, 10:03:04 CET" in the user's zone and clock.
export function exact(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  if (isNaN(when)) return String(iso);
  return formatter().format(when);
}

export function relative(iso, now = Date.now()) {
  const when = new Date(iso);
  if (isNaN(when)) return String(iso);
  const diff = Math.round((now - when.getTime()) / 1000);
  const s = Math.abs(diff);
  // past: "3 min ago"; future (a token's expiry): "in 30 days"
  const say = (n, unit) => (diff < 0 ? "in " + n + " " + unit : n + " " + unit + " ago");
  if (s < 45) return diff < 0 ? "in a moment" : "just now";
  if (s < 3600) return say(Math.max(1, Math.round(s / 60)), "min");
  if (s < 86400) return say(Math.round(s / 3600), "h");
  const days = Math.round(s / 86400);
  if (days <= 60) return say(days, days === 1 ? "day" : "days");
  return exact(iso);
}

// <time datetime="…UTC…" title="exact time in the user's zone">3 min ago</time>
export function timeEl(iso) {
  if (!iso) return "";
  return el("time", {datetime: iso, title: exact(iso), class: "rel"}, relative(iso));
}

// "1:05" or "1:02:03", as the client shows the elapsed time.
export function elapsed(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
}

// Relative times age: every half minute, and at once when the preferences change.
export function refreshTimes(root = document) {
  for (const t of root.querySelectorAll("time.rel")) {
    const iso = t.getAttribute("datetime");
    t.textContent = relative(iso);
    t.title = exact(iso);
  }
}
setInterval(refreshTimes, 30_000);
