// The xpresso-env web page: plain JavaScript, no framework, no build step.
//
// Security rules this file keeps (tests/ui checks them in a real browser):
// - every value that comes from the API reaches the page as TEXT (text nodes, textContent,
//   attribute values of inert attributes): never innerHTML, never an href or src;
// - the token lives in this tab's sessionStorage only, is sent only in the Authorization header
//   of requests to this same origin (relative URLs, credentials "omit"), never in a URL;
// - no inline script or style anywhere: the Content-Security-Policy forbids them.
"use strict";

(() => {
  const TOKEN_KEY = "xpresso.token";
  const GROUP_KEY = "xpresso.group";
  const FINAL = new Set(["successful", "failed", "cancelled"]);
  const $ = (id) => document.getElementById(id);

  const state = {
    token: null, me: null, group: null, perms: new Set(), role: null,
    tab: "harnesses", follow: null, poll: null,
    loads: 0,  // each list load's number: an answer to an older load is dropped
    listPoll: null,  // the images list is read again every few seconds while a build runs
  };

  // ------------------------------------------------------------------ DOM helpers (text only)

  // el("td", {class: "x"}, "text", otherNode): strings become text nodes, never markup.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) { node.replaceChildren(); return node; }
  function show(node, on) { node.hidden = !on; }
  // A class name made from an API value: letters, digits and dashes only.
  function slug(value) { return String(value).toLowerCase().replace(/[^a-z0-9-]/g, "-"); }

  function badge(value) {
    return el("span", {class: "badge badge-" + slug(value ?? "none")}, value ?? "—");
  }

  function say(text, kind) {
    const box = $("message");
    box.textContent = text || "";
    box.className = "message " + (kind || "info");
    show(box, Boolean(text));
  }

  function fmtSize(n) {
    if (typeof n !== "number") return "";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function text(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, body) {
      super(describe(body) || ("HTTP " + status));
      this.status = status;
      this.body = body;
    }
  }

  function describe(body) {
    if (!body || typeof body !== "object") return "";
    if (typeof body.detail === "string") return body.detail;
    return Object.entries(body).map(([k, v]) => k + ": " + (Array.isArray(v) ? v.join(" ") : text(v))).join("; ");
  }

  // Every request goes to this origin (a path starting with /api/v2/), with the token.
  async function request(method, path, {body, group = state.group, signal} = {}) {
    if (!path.startsWith("/api/v2/")) throw new Error("not an API path");
    const headers = {"Authorization": "Jwt " + state.token, "Accept": "application/json"};
    if (group) headers["Group"] = group;
    const init = {method, headers, credentials: "omit", cache: "no-store", redirect: "error", signal};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      const detail = describe(await resp.json().catch(() => ({})));
      signOut((state.me ? "Signed out: " : "Could not sign in: ") + (detail || "the token was refused."));
      throw new ApiError(401, {detail});
    }
    return resp;
  }

  async function api(method, path, options) {
    const resp = await request(method, path, options);
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({detail: resp.statusText})));
    if (resp.status === 204) return {data: null, total: null};
    return {data: await resp.json(), total: resp.headers.get("X-Total-Count")};
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  const id = (value) => encodeURIComponent(String(value));

  // ------------------------------------------------------------------ signing in

  // `Jwt T`, `Bearer T` or T; the whole output of `xpresso-env token create` pasted (two lines)
  // works too: its last line is the token.
  function normalizeToken(raw) {
    const lines = raw.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
    const last = lines.length ? lines[lines.length - 1] : "";
    return last.replace(/^(jwt|bearer)\s+/i, "").trim();
  }

  async function signIn(token, wantedGroup) {
    state.token = token;
    let me;
    try {
      me = (await api("GET", "/api/v2/me", {group: null})).data;
    } catch (err) {
      if (err.status !== 401) { say("Could not sign in: " + err.message, "error"); state.token = null; }
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.me = me;
    $("token").value = "";
    $("who-user").textContent = me.user + (me.superuser ? " (administrator)" : "");
    const select = clear($("group-select"));
    const groups = Object.keys(me.groups || {}).sort();
    for (const g of groups) select.append(el("option", {value: g}, g));
    show($("who"), true);
    show($("signin"), false);
    const group = (wantedGroup && (groups.includes(wantedGroup) || me.superuser)) ? wantedGroup
      : (me.group || groups[0] || null);
    if (!group) {
      say(me.superuser ? "There is no group yet: `xpresso-env group add NAME` makes one." : "You are not a member of any group.", "info");
      return;
    }
    await selectGroup(group);
  }

  async function selectGroup(group) {
    stopFollowing();
    let me;
    try {
      me = (await api("GET", "/api/v2/me", {group})).data;
    } catch (err) {
      if (err.status !== 401) say("Group " + group + ": " + err.message, "error");
      return;
    }
    state.group = group;
    sessionStorage.setItem(GROUP_KEY, group);
    state.perms = new Set(me.permissions || []);
    state.role = me.superuser ? "administrator" : ((me.groups || {})[group] || "");
    const select = $("group-select");
    if (![...select.options].some((o) => o.value === group)) select.append(el("option", {value: group}, group));
    select.value = group;
    $("who-role").textContent = state.role;
    say("");
    show($("app"), true);
    showTab(state.tab);
  }

  function signOut(message) {
    stopFollowing();
    stopListPoll();
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(GROUP_KEY);
    Object.assign(state, {token: null, me: null, group: null, perms: new Set(), role: null});
    show($("who"), false);
    show($("app"), false);
    show($("signin"), true);
    say(message || "", message ? "error" : "info");
  }

  // ------------------------------------------------------------------ tabs

  function stopListPoll() {
    if (state.listPoll) { clearTimeout(state.listPoll); state.listPoll = null; }
  }

  function showTab(tab) {
    stopFollowing();
    stopListPoll();
    state.tab = tab;
    for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === tab);
    show($("view-records"), tab !== "images");
    show($("view-images"), tab === "images");
    if (tab === "images") openImages(); else openRecords(tab);
  }

  // ------------------------------------------------------------------ harnesses and engines

  const STATES = ["ENABLED", "DISABLED", "MAINTENANCE"];
  const OPER = ["ONLINE", "OFFLINE", "UNKNOWN"];
  const KINDS = {
    harnesses: {
      filters: [["name"], ["harness", ["pyATS", "Tcl-ATS"]], ["site"], ["bldg"],
        ["configuration_state", STATES], ["operational_state", OPER]],
      columns: ["name", "harness", "site", "bldg", "configuration_state", "operational_state", "path",
        "created_by", "date_modified"],
    },
    engines: {
      filters: [["name"], ["type", ["jenkins", "cloud"]], ["site"], ["bldg"],
        ["configuration_state", STATES], ["operational_state", OPER]],
      columns: ["name", "type", "site", "bldg", "configuration_state", "operational_state", "base_url",
        "created_by", "date_modified"],
    },
  };
  const BADGED = new Set(["configuration_state", "operational_state", "status"]);

  function label(name) { return name.replace(/_/g, " "); }

  // A filter form: text inputs and selects named after the API's filter parameters.
  function buildFilters(form, filters, onApply) {
    clear(form);
    for (const [name, choices] of filters) {
      const input = choices
        ? el("select", {name}, el("option", {value: ""}, "any"), choices.map((c) => el("option", {value: c}, c)))
        : el("input", {name, type: "text", placeholder: "any"});
      if (choices) input.addEventListener("change", onApply);
      form.append(el("label", {}, label(name) + " ", input));
    }
    form.append(el("label", {class: "check"}, el("input", {name: "deleted", type: "checkbox", onchange: onApply}),
      " show deleted"));
    form.append(el("button", {type: "submit"}, "Apply"));
    form.onsubmit = (ev) => { ev.preventDefault(); onApply(); };
  }

  function filterValues(form) {
    const out = {};
    for (const field of form.elements) {
      if (!field.name) continue;
      if (field.type === "checkbox") { if (field.checked) out[field.name] = "true"; } else out[field.name] = field.value.trim();
    }
    return out;
  }

  function openRecords(kind) {
    const spec = KINDS[kind];
    show($("record-detail"), false);
    const form = $("filters");
    buildFilters(form, spec.filters, () => loadRecords(kind));
    loadRecords(kind);
  }

  function headRow(table, columns) {
    clear(table.tHead).append(el("tr", {}, columns.map((c) => el("th", {scope: "col"}, label(c)))));
  }

  async function loadRecords(kind) {
    const spec = KINDS[kind];
    const table = $("records");
    table.dataset.kind = kind;
    headRow(table, spec.columns);
    const body = clear(table.tBodies[0]);
    const count = $("records-count");
    count.textContent = "Loading…";
    const load = ++state.loads;
    let res;
    try {
      res = await api("GET", "/api/v2/" + kind + query(filterValues($("filters"))));
    } catch (err) {
      if (load === state.loads) { count.textContent = ""; say(err.message, "error"); }
      return;
    }
    if (state.tab !== kind || load !== state.loads) return;
    clear(body);
    say("");
    for (const rec of res.data) {
      const row = el("tr", {class: rec.deleted ? "deleted" : "", dataset: {id: rec.id}});
      for (const col of spec.columns) {
        let cell;
        if (col === "name") {
          cell = el("button", {type: "button", class: "link", onclick: () => openRecord(kind, rec.id)}, rec.name);
        } else if (BADGED.has(col)) cell = badge(rec[col]);
        else cell = text(rec[col]);
        row.append(el("td", {class: "col-" + col}, cell));
      }
      body.append(row);
    }
    count.textContent = (res.total ?? res.data.length) + " " + kind;
  }

  // A record's fields as a definition list; with skipEmpty, fields holding nothing are left out.
  function fields(record, names, skipEmpty = false) {
    const empty = (v) => v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0);
    return el("dl", {class: "fields"}, names.filter((n) => n in record && !(skipEmpty && empty(record[n]))).map((n) => [
      el("dt", {}, label(n)), el("dd", {class: "field-" + n}, BADGED.has(n) ? badge(record[n]) : text(record[n])),
    ]));
  }

  async function openRecord(kind, recordId) {
    const box = $("record-detail");
    show(box, true);
    clear(box).append(el("p", {}, "Loading…"));
    let rec;
    try {
      rec = (await api("GET", "/api/v2/" + kind + "/" + id(recordId))).data;
    } catch (err) {
      clear(box).append(el("p", {class: "error"}, err.message));
      return;
    }
    const stateBox = el("div", {class: "state", id: "record-state"}, el("p", {}, "Loading state…"));
    const historyBox = el("div", {class: "history", id: "record-history"}, el("p", {}, "Loading history…"));
    clear(box).append(
      el("div", {class: "detail-head"}, el("h3", {}, rec.name),
        el("button", {type: "button", class: "close", onclick: () => show(box, false)}, "Close")),
      fields(rec, Object.keys(rec)),
      el("h4", {}, "State"), stateBox,
      el("h4", {}, "History"), historyBox);
    box.scrollIntoView({block: "nearest"});
    loadState(kind, recordId, stateBox);
    loadHistory(kind, recordId, historyBox);
  }

  async function loadState(kind, recordId, box) {
    try {
      const st = (await api("GET", "/api/v2/" + kind + "/" + id(recordId) + "/state")).data;
      const probe = st.last_probe;
      clear(box).append(el("dl", {class: "fields"},
        el("dt", {}, "operational state"), el("dd", {class: "field-operational_state"}, badge(st.operational_state)),
        el("dt", {}, "since"), el("dd", {}, text(st.since)),
        el("dt", {}, "reason"), el("dd", {class: "field-reason"}, text(st.reason)),
        el("dt", {}, "last probe"), el("dd", {class: "field-last_probe"}, probe
          ? [probe.ok ? "ok" : "failed", " at ", text(probe.at), probe.latency_ms != null ? ", " + probe.latency_ms + " ms" : "",
            probe.version ? ", version " + probe.version : "", probe.detail ? ": " + probe.detail : ""].join("")
          : "never probed"),
        el("dt", {}, "consecutive failures / successes"),
        el("dd", {}, text(st.consecutive_failures) + " / " + text(st.consecutive_successes))));
    } catch (err) {
      clear(box).append(el("p", {class: "error"}, "State not available: " + err.message));
    }
  }

  function changesText(changes) {
    if (!changes || typeof changes !== "object") return [];
    // [old, new]; a created record has no old value: just the new one
    const one = (v) => (v === "" ? '""' : text(v));
    return Object.entries(changes).map(([field, pair]) => {
      if (!Array.isArray(pair) || pair.length !== 2) return field + ": " + text(pair);
      return field + ": " + (pair[0] === null ? one(pair[1]) : one(pair[0]) + " → " + one(pair[1]));
    });
  }

  async function loadHistory(kind, recordId, box) {
    try {
      const events = (await api("GET", "/api/v2/" + kind + "/" + id(recordId) + "/history")).data;
      const table = el("table", {class: "records history-table"},
        el("thead", {}, el("tr", {}, ["at", "event", "by", "changes", "reason"].map((c) => el("th", {scope: "col"}, c)))),
        el("tbody", {}, events.map((ev) => el("tr", {class: "event-" + slug(ev.event)},
          el("td", {}, text(ev.at)), el("td", {}, badge(ev.event)), el("td", {}, ev.by === null ? "service" : text(ev.by)),
          el("td", {class: "changes"}, changesText(ev.changes).map((line) => el("div", {}, line))),
          el("td", {}, text(ev.reason))))));
      clear(box).append(events.length ? table : el("p", {}, "No events."));
    } catch (err) {
      clear(box).append(el("p", {class: "error"}, "History not available: " + err.message));
    }
  }

  // ------------------------------------------------------------------ images

  const IMAGE_FILTERS = [["name"], ["tag"], ["status", ["building", "successful", "failed", "cancelled"]], ["git_ref"]];
  const IMAGE_COLUMNS = ["name", "tag", "status", "group", "git_ref", "pin_version", "size", "date_created"];

  function openImages() {
    show($("image-detail"), false);
    show($("submit-form"), state.perms.has("add_docker_image"));
    buildFilters($("image-filters"), IMAGE_FILTERS, loadImages);
    loadImages();
  }

  async function loadImages() {
    const table = $("images");
    stopListPoll();
    headRow(table, IMAGE_COLUMNS);
    const count = $("images-count");
    count.textContent = "Loading…";
    const load = ++state.loads;
    let res;
    try {
      res = await api("GET", "/api/v2/images" + query(filterValues($("image-filters"))));
    } catch (err) {
      if (load === state.loads) { count.textContent = ""; say(err.message, "error"); }
      return;
    }
    if (state.tab !== "images" || load !== state.loads) return;
    const body = clear(table.tBodies[0]);
    for (const img of res.data) {
      const row = el("tr", {class: img.is_deleted ? "deleted" : "", dataset: {id: img.uuid}});
      for (const col of IMAGE_COLUMNS) {
        let cell;
        if (col === "name") cell = el("button", {type: "button", class: "link", onclick: () => openImage(img.uuid)}, img.name);
        else if (col === "status") cell = badge(img.status);
        else if (col === "pin_version") cell = img.pin_version ? "pinned" : "";
        else if (col === "size") cell = img.status === "successful" ? fmtSize(img.size) : "";
        else cell = text(img[col]);
        row.append(el("td", {class: "col-" + col}, cell));
      }
      body.append(row);
    }
    count.textContent = (res.total ?? res.data.length) + " images";
    if (res.data.some((img) => img.status === "building")) {
      state.listPoll = setTimeout(() => { if (state.tab === "images" && state.token) loadImages(); }, 3000);
    }
  }

  async function submitBuild(ev) {
    ev.preventDefault();
    const form = ev.target;
    const v = (name) => form.elements[name].value.trim();
    const body = {name: v("name"), tag: v("tag"), git_ref: v("git_ref")};
    if (v("base_ref")) body.base_ref = v("base_ref");
    const groups = v("groups").split(",").map((g) => g.trim()).filter(Boolean);
    if (groups.length) body.groups = groups;
    try {
      const img = (await api("POST", "/api/v2/images/polaris_build", {body})).data;
      say("Build " + img.name + ":" + img.tag + " submitted.", "info");
      await loadImages();
      openImage(img.uuid);
    } catch (err) {
      say("Submit refused: " + err.message, "error");
    }
  }

  function imageActions(img) {
    const owner = img.group === state.group;
    const out = [];
    const act = (labelText, cls, fn) => el("button", {type: "button", class: "action " + cls, onclick: fn}, labelText);
    if (owner && state.perms.has("add_docker_image") && img.status === "building") {
      out.push(act("Cancel build", "cancel", () => imageCall("POST", img, "/cancel")));
    }
    if (owner && state.perms.has("add_docker_image") && !img.is_deleted) {
      out.push(act(img.pin_version ? "Unpin" : "Pin", "pin",
        () => imageCall("PATCH", img, "", {pin_version: !img.pin_version})));
    }
    if (owner && state.perms.has("delete_docker_image") && !img.is_deleted) {
      // Two clicks: the first arms the button (no window.confirm: dialogs are easy to click through).
      const button = act("Delete", "delete", () => {
        if (button.dataset.armed) imageCall("DELETE", img, "");
        else { button.dataset.armed = "1"; button.textContent = "Click again to delete"; }
      });
      out.push(button);
    }
    return out;
  }

  async function imageCall(method, img, suffix, body) {
    try {
      await api(method, "/api/v2/images/" + id(img.uuid) + suffix, body === undefined ? {} : {body});
    } catch (err) {
      say(err.message, "error");
    }
    await loadImages();
    await openImage(img.uuid, false);
  }

  async function openImage(uuid, followLog = true) {
    const box = $("image-detail");
    show(box, true);
    let img;
    try {
      img = (await api("GET", "/api/v2/images/" + id(uuid))).data;
    } catch (err) {
      clear(box).append(el("p", {class: "error"}, err.message));
      return;
    }
    const oldLog = box.dataset.uuid === uuid ? $("image-log") : null;
    box.dataset.uuid = uuid;
    const meta = img.meta || {};
    const logBox = oldLog || el("pre", {id: "image-log", class: "log"});
    const logState = (oldLog && $("image-log-state")) || el("p", {id: "image-log-state", class: "log-state"});
    clear(box).append(
      el("div", {class: "detail-head"}, el("h3", {}, img.name + ":" + img.tag), badge(img.status),
        el("button", {type: "button", class: "close", onclick: () => { stopFollowing(); show(box, false); }}, "Close")),
      el("div", {class: "actions"}, imageActions(img)),
      fields({...img, error: meta.error}, ["uuid", "status", "error", "group", "git_ref", "base_ref", "image_id", "size",
        "nfs_path", "push_url", "pin_version", "is_deleted", "date_created", "date_updated", "jobs", "manifests"], true),
      el("h4", {}, "Build log"), logState, logBox);
    if (followLog) startLog(img, logBox, logState);
  }

  function stopFollowing() {
    if (state.follow) { state.follow.abort(); state.follow = null; }
    if (state.poll) { clearTimeout(state.poll); state.poll = null; }
  }

  // The log as it is written: ?follow=true streams until the build ends; when the server has no
  // follow slot free (429) the page polls with ?offset instead.
  async function startLog(img, logBox, logState) {
    stopFollowing();
    clear(logBox);
    const controller = new AbortController();
    state.follow = controller;
    const path = "/api/v2/images/" + id(img.uuid) + "/logs";
    const append = (chunk) => {
      if (!chunk) return;
      const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
      logBox.append(document.createTextNode(chunk));
      if (atBottom) logBox.scrollTop = logBox.scrollHeight;
    };
    const finished = async () => {
      if (state.follow !== controller) return;
      state.follow = null;
      logState.textContent = "End of log.";
      logState.className = "log-state ended";
      if (state.tab === "images") { await loadImages(); await openImage(img.uuid, false); }
    };
    logState.textContent = img.status === "building" ? "Following the build…" : "Reading the log…";
    logState.className = "log-state following";
    const decoder = new TextDecoder();  // one for every connection: a character may span two
    let offset = 0;  // bytes received so far
    try {
      for (;;) {
        const resp = await request("GET", path + "?follow=true&offset=" + offset, {signal: controller.signal});
        if (resp.status === 429) return pollLog(img, path, append, controller, finished, offset);
        if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
        const reader = resp.body.getReader();
        let got = 0;
        for (;;) {
          const {done, value} = await reader.read();
          if (done) break;
          got += value.length;
          append(decoder.decode(value, {stream: true}));
        }
        offset += got;
        // The stream ends when the build does, or when something on the way (a proxy) cut it:
        // then follow again from where it stopped.
        const now = (await api("GET", "/api/v2/images/" + id(img.uuid), {signal: controller.signal})).data;
        if (FINAL.has(now.status) || now.is_deleted) break;
        if (!got) await new Promise((resolve) => setTimeout(resolve, 1000));
        if (controller.signal.aborted) return;
      }
      append(decoder.decode());
      await finished();
    } catch (err) {
      if (controller.signal.aborted) return;
      logState.textContent = "Log not available: " + err.message;
      logState.className = "log-state error";
    }
  }

  async function pollLog(img, path, append, controller, finished, offset) {
    if (controller.signal.aborted) return;
    try {
      const resp = await request("GET", path + "?offset=" + offset, {signal: controller.signal});
      if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
      const bytes = new Uint8Array(await resp.arrayBuffer());
      append(new TextDecoder().decode(bytes));
      offset += bytes.length;
      const now = (await api("GET", "/api/v2/images/" + id(img.uuid), {signal: controller.signal})).data;
      if (FINAL.has(now.status) && bytes.length === 0) return finished();
      state.poll = setTimeout(() => pollLog(img, path, append, controller, finished, offset), 1000);
    } catch (err) {
      if (!controller.signal.aborted) say("Log: " + err.message, "error");
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = normalizeToken($("token").value);
      if (!token) { say("Paste a token first.", "error"); return; }
      signIn(token, null);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("group-select").addEventListener("change", (ev) => selectGroup(ev.target.value));
    for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
    $("submit-form").addEventListener("submit", submitBuild);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token, sessionStorage.getItem(GROUP_KEY));
    else show($("signin"), true);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
