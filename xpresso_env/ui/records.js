// Harnesses and engines: the group's list (filters, refreshed by itself), a record's fields,
// state and history, and create / edit / delete as the caller's role allows.
import {$, el, clear, show, slug, label, badge, say, text, swap, twoStep} from "./dom.js";
import {api, fresh, query, id, session} from "./http.js";
import {timeEl} from "./times.js";
import {repeat} from "./tick.js";
import {buildFilters, filterValues, headRow} from "./filters.js";

const STATES = ["ENABLED", "DISABLED", "MAINTENANCE"];
const OPER = ["ONLINE", "OFFLINE", "UNKNOWN"];
const TIMES = new Set(["date_created", "date_modified", "since", "at"]);
const BADGED = new Set(["configuration_state", "operational_state", "status"]);

// What each kind's form edits: [name, choices or input type, required]. Credentials are
// write-only: the API never returns them, so the form never shows what is stored.
export const KINDS = {
  harnesses: {
    one: "harness",
    perms: {add: "add_harness", change: "change_harness", delete: "delete_harness"},
    filters: [["name"], ["harness", ["pyATS", "Tcl-ATS"]], ["site"], ["bldg"],
      ["configuration_state", STATES], ["operational_state", OPER]],
    columns: ["name", "harness", "site", "bldg", "configuration_state", "operational_state", "path",
      "created_by", "date_modified"],
    form: [["name", "text", true], ["harness", ["pyATS", "Tcl-ATS"]], ["path", "text", true],
      ["supporting_path", "text"], ["configuration_state", STATES], ["site", "text"], ["bldg", "text"]],
  },
  engines: {
    one: "engine",
    perms: {add: "add_engine", change: "change_engine", delete: "delete_engine"},
    filters: [["name"], ["type", ["jenkins", "cloud"]], ["site"], ["bldg"],
      ["configuration_state", STATES], ["operational_state", OPER]],
    columns: ["name", "type", "site", "bldg", "configuration_state", "operational_state", "base_url",
      "created_by", "date_modified"],
    form: [["name", "text", true], ["type", ["jenkins", "cloud"]], ["base_url", "url", true],
      ["configuration_state", STATES], ["site", "text"], ["bldg", "text"],
      ["username", "secret-text"], ["api_token", "password"]],
  },
};
const WRITE_ONLY = new Set(["username", "api_token"]);

function cell(name, value) {
  if (BADGED.has(name)) return badge(value);
  if (TIMES.has(name)) return timeEl(value);
  return text(value);
}

// The record whose detail is open stays open across refreshes; `kind` is the open tab.
const view = {kind: null, open: null, stop: null, loads: 0};

export function openRecords(kind, recordId = null) {
  closeRecords();
  view.kind = kind;
  const spec = KINDS[kind];
  show($("record-detail"), false);
  const add = $("new-record");
  add.textContent = "New " + spec.one;
  show(add, session.perms.has(spec.perms.add));
  buildFilters($("filters"), spec.filters, () => loadRecords(kind, true));
  loadRecords(kind, true);
  if (recordId) openRecord(kind, recordId);
  view.stop = repeat(() => refresh(kind));
}

export function closeRecords() {
  if (view.stop) view.stop();
  Object.assign(view, {kind: null, open: null, stop: null});
}

async function refresh(kind) {
  if (view.kind !== kind) return;
  await loadRecords(kind, false);
  const open = view.open;
  if (open && open.kind === kind && $("record-state")) {
    await loadState(kind, open.id, $("record-state"), false);
    await loadHistory(kind, open.id, $("record-history"), false);
  }
}

function emptyHint(kind) {
  const spec = KINDS[kind];
  const filtered = Object.entries(filterValues($("filters"))).some(([, v]) => v);
  if (filtered) return "Nothing matches these filters: clear them to see every " + spec.one + ".";
  if (session.perms.has(spec.perms.add)) {
    return `No ${kind} in ${session.group} yet. Add the first with "New ${spec.one}" above ` +
      `(or \`xpresso ${kind} add\` from a terminal).`;
  }
  return `No ${kind} in ${session.group} yet. Ask a privilege member or group admin of ${session.group} ` +
    `to add one; they will show here by themselves.`;
}

// initial: the first load of a view (shows "Loading…"); a refresh keeps what is shown until the
// answer differs, so nothing flickers.
export async function loadRecords(kind, initial) {
  const spec = KINDS[kind];
  const table = $("records");
  const count = $("records-count");
  if (initial) {
    table.dataset.kind = kind;
    headRow(table, spec.columns);
    clear(table.tBodies[0]);
    count.textContent = "Loading…";
  }
  const load = ++view.loads;
  let res;
  try {
    res = await fresh("/api/v2/" + kind + query(filterValues($("filters"))));
  } catch (err) {
    if (load === view.loads && initial) { count.textContent = ""; say(err.message, "error"); }
    return;
  }
  if (view.kind !== kind || load !== view.loads) return;
  if (!res.changed && !initial) return;
  if (initial) say("");
  const rows = res.data.map((rec) => {
    const row = el("tr", {class: rec.deleted ? "deleted" : "", dataset: {id: rec.id}});
    for (const col of spec.columns) {
      const value = col === "name"
        ? el("button", {type: "button", class: "link", dataset: {key: rec.id}, onclick: () => openRecord(kind, rec.id)},
          rec.name)
        : cell(col, rec[col]);
      row.append(el("td", {class: "col-" + col}, value));
    }
    return row;
  });
  swap(table.tBodies[0], rows);
  count.textContent = (res.total ?? res.data.length) + " " + kind;
  const hint = $("records-empty");
  hint.textContent = res.data.length ? "" : emptyHint(kind);
  show(hint, !res.data.length);
}

// A record's fields as a definition list; with skipEmpty, fields holding nothing are left out.
export function fields(record, names, skipEmpty = false, render = cell) {
  const empty = (v) => v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0);
  return el("dl", {class: "fields"}, names.filter((n) => n in record && !(skipEmpty && empty(record[n]))).map((n) => [
    el("dt", {}, label(n)), el("dd", {class: "field-" + n}, render(n, record[n])),
  ]));
}

export async function openRecord(kind, recordId) {
  const spec = KINDS[kind];
  const box = $("record-detail");
  show(box, true);
  view.open = {kind, id: recordId};
  clear(box).append(el("p", {}, "Loading…"));
  let rec;
  try {
    rec = (await api("GET", "/api/v2/" + kind + "/" + id(recordId))).data;
  } catch (err) {
    clear(box).append(el("p", {class: "error"}, err.message));
    return;
  }
  const actions = [];
  if (!rec.deleted && session.perms.has(spec.perms.change)) {
    actions.push(el("button", {type: "button", class: "action edit", onclick: () => editRecord(kind, rec)}, "Edit"));
  }
  if (!rec.deleted && session.perms.has(spec.perms.delete)) {
    actions.push(twoStep("Delete", "delete", "Click again to delete", () => deleteRecord(kind, rec)));
  }
  const stateBox = el("div", {class: "state", id: "record-state"}, el("p", {}, "Loading state…"));
  const historyBox = el("div", {class: "history", id: "record-history"}, el("p", {}, "Loading history…"));
  clear(box).append(
    el("div", {class: "detail-head"}, el("h3", {tabindex: "-1", id: "record-title"}, rec.name),
      el("button", {type: "button", class: "close", onclick: () => closeDetail()}, "Close")),
    el("div", {class: "actions"}, actions),
    fields(rec, Object.keys(rec)),
    el("h4", {}, "State"), stateBox,
    el("h4", {}, "History"), historyBox);
  box.scrollIntoView({block: "nearest"});
  loadState(kind, recordId, stateBox, true);
  loadHistory(kind, recordId, historyBox, true);
}

function closeDetail() {
  view.open = null;
  show($("record-detail"), false);
}

async function loadState(kind, recordId, box, initial) {
  try {
    const res = await fresh("/api/v2/" + kind + "/" + id(recordId) + "/state");
    if (!res.changed && !initial) return;
    const st = res.data;
    const probe = st.last_probe;
    clear(box).append(el("dl", {class: "fields"},
      el("dt", {}, "operational state"), el("dd", {class: "field-operational_state"}, badge(st.operational_state)),
      el("dt", {}, "since"), el("dd", {class: "field-since"}, timeEl(st.since)),
      el("dt", {}, "reason"), el("dd", {class: "field-reason"}, text(st.reason)),
      el("dt", {}, "last probe"), el("dd", {class: "field-last_probe"}, probe
        ? [probe.ok ? "ok " : "failed ", timeEl(probe.at),
          [probe.latency_ms != null ? ", " + probe.latency_ms + " ms" : "",
            probe.version ? ", version " + probe.version : "", probe.detail ? ": " + probe.detail : ""].join("")]
        : "never probed"),
      el("dt", {}, "consecutive failures / successes"),
      el("dd", {}, text(st.consecutive_failures) + " / " + text(st.consecutive_successes))));
  } catch (err) {
    if (initial) clear(box).append(el("p", {class: "error"}, "State not available: " + err.message));
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

async function loadHistory(kind, recordId, box, initial) {
  try {
    const res = await fresh("/api/v2/" + kind + "/" + id(recordId) + "/history");
    if (!res.changed && !initial) return;
    const events = res.data;
    const table = el("table", {class: "records history-table"},
      el("thead", {}, el("tr", {}, ["at", "event", "by", "changes", "reason"].map((c) => el("th", {scope: "col"}, c)))),
      el("tbody", {}, events.map((ev) => el("tr", {class: "event-" + slug(ev.event)},
        el("td", {}, timeEl(ev.at)), el("td", {}, badge(ev.event)), el("td", {}, ev.by === null ? "service" : text(ev.by)),
        el("td", {class: "changes"}, changesText(ev.changes).map((line) => el("div", {}, line))),
        el("td", {}, text(ev.reason))))));
    clear(box).append(events.length ? el("div", {class: "scroll", tabindex: "0", role: "region", "aria-label": "History"}, table) : el("p", {}, "No events."));
  } catch (err) {
    if (initial) clear(box).append(el("p", {class: "error"}, "History not available: " + err.message));
  }
}

// ------------------------------------------------------------------ create, edit, delete

export function newRecord() {
  if (view.kind) editRecord(view.kind, null);
}

function input(kind, name, type, required, rec) {
  const fid = "f-" + name;
  const errId = "err-" + name;
  let control;
  if (Array.isArray(type)) {
    control = el("select", {id: fid, name}, type.map((c) => el("option", {value: c}, c)));
    control.value = rec ? rec[name] : type[0];
  } else {
    const secret = WRITE_ONLY.has(name);
    control = el("input", {id: fid, name, type: type === "password" ? "password" : (type === "url" ? "url" : "text"),
      required: required && !rec, autocomplete: secret ? "new-password" : "off", spellcheck: "false"});
    if (rec && !secret) control.value = rec[name] ?? "";
  }
  control.setAttribute("aria-describedby", errId + (WRITE_ONLY.has(name) ? " hint-" + name : ""));
  const hint = WRITE_ONLY.has(name)
    ? el("span", {class: "hint", id: "hint-" + name},
      rec ? "write-only: never shown; leave empty to keep what is stored" : "write-only: never shown again")
    : null;
  return el("div", {class: "field field-" + name},
    el("label", {for: fid}, label(name) + (required ? " (required)" : "")), control, hint,
    el("span", {class: "field-error", id: errId, role: "alert"}));
}

// rec null: a new record; else an edit of rec (PATCH of the fields that changed).
function editRecord(kind, rec) {
  const spec = KINDS[kind];
  const box = $("record-detail");
  show(box, true);
  view.open = rec ? {kind, id: rec.id, editing: true} : null;
  const title = rec ? "Edit " + rec.name : "New " + spec.one;
  const form = el("form", {id: "record-form", class: "record-form", autocomplete: "off", novalidate: true},
    el("div", {class: "fields-grid"}, spec.form.map(([name, type, required]) => input(kind, name, type, required, rec))),
    el("p", {class: "form-error error", id: "form-error", role: "alert"}),
    el("div", {class: "actions"},
      el("button", {type: "submit", class: "primary"}, rec ? "Save" : "Create"),
      el("button", {type: "button", class: "cancel-edit", onclick: () => rec ? openRecord(kind, rec.id) : closeDetail()},
        "Cancel")));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); saveRecord(kind, rec, form); });
  clear(box).append(el("div", {class: "detail-head"}, el("h3", {id: "record-title", tabindex: "-1"}, title)), form);
  box.scrollIntoView({block: "nearest"});
  form.elements[0].focus();
}

function formBody(kind, rec, form) {
  const body = {};
  for (const [name] of KINDS[kind].form) {
    const value = form.elements[name].value.trim();
    if (WRITE_ONLY.has(name)) { if (value) body[name] = value; continue; }
    if (!rec) { if (value !== "") body[name] = value; continue; }
    if (value !== (rec[name] ?? "")) body[name] = value;
  }
  return body;
}

function showErrors(form, err) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const c of form.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
  const fieldErrors = err ? err.fields : {};
  const general = [];
  let first = null;
  for (const [name, messages] of Object.entries(fieldErrors)) {
    const slot = form.querySelector("#err-" + CSS.escape(name));
    const words = Array.isArray(messages) ? messages.join(" ") : text(messages);
    if (!slot) { general.push(name + ": " + words); continue; }
    slot.textContent = words;
    form.elements[name].setAttribute("aria-invalid", "true");
    first = first || form.elements[name];
  }
  if (err && !Object.keys(fieldErrors).length) general.push(err.message);
  $("form-error").textContent = general.join("; ");
  if (first) first.focus();
}

async function saveRecord(kind, rec, form) {
  const body = formBody(kind, rec, form);
  showErrors(form, null);
  if (rec && !Object.keys(body).length) { openRecord(kind, rec.id); return; }
  try {
    const saved = rec
      ? (await api("PATCH", "/api/v2/" + kind + "/" + id(rec.id), {body})).data
      : (await api("POST", "/api/v2/" + kind, {body})).data;
    say((rec ? "Saved " : "Created ") + KINDS[kind].one + " " + saved.name + ".", "info");
    await loadRecords(kind, false);
    await openRecord(kind, saved.id);
    $("record-title").focus();
  } catch (err) {
    if (err.status === 401) return;
    showErrors(form, err);
  }
}

async function deleteRecord(kind, rec) {
  try {
    await api("DELETE", "/api/v2/" + kind + "/" + id(rec.id));
    say("Deleted " + KINDS[kind].one + " " + rec.name + ".", "info");
  } catch (err) {
    say(err.message, "error");
  }
  closeDetail();
  await loadRecords(kind, false);
  $("new-record").hidden ? $("filters").querySelector("input, select")?.focus() : $("new-record").focus();
}
