// The xpresso-env web page: plain JavaScript modules, no framework, no build step.
//
// Security rules these files keep (tests/ui checks them in a real browser):
// - every value that comes from the API reaches the page as TEXT (dom.js): never innerHTML,
//   never an href or src;
// - the token lives in this tab's sessionStorage only, is sent only in the Authorization header
//   of requests to this same origin (http.js: relative URLs, credentials "omit"), never in a URL;
// - no inline script or style anywhere: the Content-Security-Policy forbids them.
//
// This file is the shell: signing in (password, token, or a trusted proxy), the group, the tabs.
import {$, el, clear, show, say} from "./dom.js";
import {api, request, session, whenUnauthorized, forget, describe} from "./http.js";
import {openRecords, closeRecords, newRecord} from "./records.js";
import {openImages, closeImages, submitBuild} from "./images.js";
import {openOverview, closeOverview, onNavigate} from "./overview.js";
import {openProfile} from "./profile.js";

const TOKEN_KEY = "xpresso.token";
const GROUP_KEY = "xpresso.group";
const SESSION_KEY = "xpresso.session";  // "1": the token is a sign-in session (revoked at sign out)

let tab = "overview";

// `Jwt T`, `Bearer T` or T; the whole output of `xpresso-env token create` pasted (two lines)
// works too: its last line is the token.
function normalizeToken(raw) {
  const lines = raw.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
  const last = lines.length ? lines[lines.length - 1] : "";
  return last.replace(/^(jwt|bearer)\s+/i, "").trim();
}

// token null: a trusted proxy signs the user in (`header` provider), nothing is stored.
async function signIn(token, wantedGroup, isSession = false) {
  session.token = token;
  let me;
  try {
    me = (await api("GET", "/api/v2/me", {group: null, quiet401: token === null})).data;
  } catch (err) {
    if (token !== null && err.status !== 401) say("Could not sign in: " + err.message, "error");
    session.token = null;
    return false;
  }
  session.viaProxy = token === null;
  if (token !== null) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (isSession) sessionStorage.setItem(SESSION_KEY, "1");
  }
  session.me = me;
  session.prefs = {time_zone: "UTC", time_format: "24h", ...(me.preferences || {})};
  $("token").value = "";
  $("password").value = "";
  $("who-user").textContent = me.user + (me.superuser ? " (administrator)" : "");
  show($("sign-out"), !session.viaProxy);
  const select = clear($("group-select"));
  const groups = Object.keys(me.groups || {}).sort();
  for (const g of groups) select.append(el("option", {value: g}, g));
  show($("who"), true);
  show($("signin"), false);
  const group = (wantedGroup && (groups.includes(wantedGroup) || me.superuser)) ? wantedGroup
    : (me.group || groups[0] || null);
  if (!group) {
    say(me.superuser ? "There is no group yet: `xpresso-env group add NAME` makes one."
      : "You are not a member of any group yet: ask an administrator to add you to one.", "info");
    show($("app"), true);
    showTab("profile");
    return true;
  }
  await selectGroup(group);
  return true;
}

async function selectGroup(group) {
  let me;
  try {
    me = (await api("GET", "/api/v2/me", {group})).data;
  } catch (err) {
    if (err.status !== 401) say("Group " + group + ": " + err.message, "error");
    return;
  }
  forget();
  session.group = group;
  sessionStorage.setItem(GROUP_KEY, group);
  session.perms = new Set(me.permissions || []);
  session.role = me.superuser ? "administrator" : ((me.groups || {})[group] || "");
  const select = $("group-select");
  if (![...select.options].some((o) => o.value === group)) select.append(el("option", {value: group}, group));
  select.value = group;
  $("who-role").textContent = session.role;
  say("");
  show($("app"), true);
  showTab(tab === "profile" ? "overview" : tab);
}

function leaveViews() {
  closeRecords();
  closeImages();
  closeOverview();
}

async function signOut(message) {
  leaveViews();
  // A sign-in session made by the password form ends on the server too; a pasted API token
  // is the user's own and stays valid.
  if (session.token && sessionStorage.getItem(SESSION_KEY)) {
    await request("POST", "/api/v2/auth/logout", {group: null, quiet401: true}).catch(() => null);
  }
  for (const key of [TOKEN_KEY, GROUP_KEY, SESSION_KEY]) sessionStorage.removeItem(key);
  forget();
  Object.assign(session, {token: null, viaProxy: false, me: null, group: null, perms: new Set(), role: null});
  show($("who"), false);
  show($("app"), false);
  show($("signin"), true);
  say(message || "", message ? "error" : "info");
}

function showTab(name, recordId = null) {
  leaveViews();
  tab = name;
  for (const b of document.querySelectorAll(".tab")) {
    const on = b.dataset.tab === name;
    b.classList.toggle("active", on);
    if (on) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
  }
  show($("view-overview"), name === "overview");
  show($("view-records"), name === "harnesses" || name === "engines");
  show($("view-images"), name === "images");
  show($("view-profile"), name === "profile");
  if (name === "overview") openOverview();
  else if (name === "images") openImages(recordId);
  else if (name === "profile") openProfile();
  else openRecords(name, recordId);
}

// ------------------------------------------------------------------ the sign-in forms

async function passwordSignIn(ev) {
  ev.preventDefault();
  const username = $("username").value.trim();
  const password = $("password").value;
  const err = $("login-error");
  err.textContent = "";
  if (!username || !password) { err.textContent = "Enter your user name and password."; return; }
  let resp;
  try {
    resp = await request("POST", "/api/v2/auth/login", {body: {username, password}, group: null, quiet401: true});
  } catch (e) {
    err.textContent = "The server did not answer: " + e.message;
    return;
  }
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 429) {
    const wait = Number(resp.headers.get("Retry-After"));
    err.textContent = (describe(body) || "Too many failed attempts.") +
      (wait > 0 ? " Try again in " + (wait >= 120 ? Math.ceil(wait / 60) + " min" : wait + " s") + "." : "");
    return;
  }
  if (!resp.ok) { err.textContent = describe(body) || "HTTP " + resp.status; $("password").select(); return; }
  await signIn(normalizeToken(body.token || ""), null, true);
}

function start() {
  whenUnauthorized((detail) => signOut((session.me ? "Signed out: " : "Could not sign in: ") + detail));
  onNavigate((kind, recordId) => showTab(kind, recordId));
  $("login-form").addEventListener("submit", passwordSignIn);
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = normalizeToken($("token").value);
    if (!token) { say("Paste a token first.", "error"); return; }
    signIn(token, null);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("group-select").addEventListener("change", (ev) => selectGroup(ev.target.value));
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("new-record").addEventListener("click", newRecord);
  $("submit-form").addEventListener("submit", submitBuild);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) { signIn(token, sessionStorage.getItem(GROUP_KEY)); return; }
  proxySignIn().then((ok) => { if (!ok) show($("signin"), true); });
}

// No token yet: a trusted proxy may vouch for the user (the `header` provider). The server then
// answers GET /api/v2/me without a token, or gives a session for an empty POST /api/v2/auth/login.
// Anywhere else both are refused (401/400) and the sign-in forms show.
async function proxySignIn() {
  if (await signIn(null, null)) return true;
  let resp;
  try {
    resp = await request("POST", "/api/v2/auth/login", {group: null, quiet401: true});
  } catch (err) {
    return false;
  }
  if (!resp.ok) return false;
  const body = await resp.json().catch(() => ({}));
  if (!body.token) return false;
  const ok = await signIn(normalizeToken(body.token), null, true);
  if (ok) {
    session.viaProxy = true;
    show($("sign-out"), false);  // the proxy would sign the user in again at once
  }
  return ok;
}

document.addEventListener("DOMContentLoaded", start);
