// Images: the list (refreshed by itself), submit, cancel, pin, delete as the role allows, and a
// build's log followed live: it stays at its end unless the reader scrolled up, shows the
// builder's step n/m and the elapsed time, and keeps the final status line in view.
import {$, el, clear, show, badge, say, text, listOf, fmtSize, swap, twoStep} from "./dom.js";
import {api, fresh, request, query, id, session, ApiError} from "./http.js";
import {timeEl, elapsed, exact} from "./times.js";
import {repeat} from "./tick.js";
import {buildFilters, filterValues, headRow} from "./filters.js";

const FINAL = new Set(["successful", "failed", "cancelled"]);
const IMAGE_FILTERS = [["name"], ["tag"], ["status", ["building", "successful", "failed", "cancelled"]], ["git_ref"]];
const IMAGE_COLUMNS = ["name", "tag", "status", "group", "git_ref", "pin_version", "size", "date_created"];
const DETAIL_FIELDS = ["uuid", "status", "error", "group", "git_ref", "base_ref", "image_id", "size", "nfs_path",
  "push_url", "pin_version", "is_deleted", "date_created", "date_updated", "jobs", "manifests"];

// The builders' step lines, as the client reads them: Docker's "Step 3/7 : …", buildah's
// "STEP 3/7: …", BuildKit's "#5 [3/7] …" (also "#5 [stage 2/4] …"), after the log's own UTC stamp.
const STEP_RES = [/^(?:Step|STEP)\s+(\d+)\/(\d+)\s*:/, /^#\d+\s+\[(?:[^\]\s]+\s+)?(\d+)\/(\d+)\]/];
const STAMP_RE = /^\d{4}-\d\d-\d\dT[\d:.]+Z\s+/;
const FINAL_RE = /^(successful|failed|cancelled)\b/;

export function stepOf(line) {
  const bare = line.trim().replace(STAMP_RE, "");
  for (const re of STEP_RES) {
    const m = bare.match(re);
    if (m) return [Number(m[1]), Number(m[2])];
  }
  return null;
}

const view = {open: false, stop: null, loads: 0, follow: null, poll: null, clock: null};

export function openImages(uuid = null) {
  closeImages();
  view.open = true;
  show($("image-detail"), false);
  show($("submit-form"), session.perms.has("add_docker_image"));
  buildFilters($("image-filters"), IMAGE_FILTERS, () => loadImages(true));
  loadImages(true);
  if (uuid) openImage(uuid);
  view.stop = repeat(() => loadImages(false));
}

export function closeImages() {
  stopFollowing();
  if (view.stop) view.stop();
  Object.assign(view, {open: false, stop: null});
}

function imageCell(img, col) {
  if (col === "name") {
    return el("button", {type: "button", class: "link", dataset: {key: img.uuid}, onclick: () => openImage(img.uuid)},
      img.name);
  }
  if (col === "status") return badge(img.status);
  if (col === "pin_version") return img.pin_version ? "pinned" : "not pinned";
  if (col === "size") return img.status === "successful" ? fmtSize(img.size) : "";
  if (col === "date_created") return timeEl(img.date_created);
  return text(img[col]);
}

export async function loadImages(initial) {
  const table = $("images");
  const count = $("images-count");
  if (initial) {
    headRow(table, IMAGE_COLUMNS);
    clear(table.tBodies[0]);
    count.textContent = "Loading…";
  }
  const load = ++view.loads;
  let res;
  try {
    res = await fresh("/api/v2/images" + query(filterValues($("image-filters"))));
  } catch (err) {
    if (load === view.loads && initial) { count.textContent = ""; say(err.message, "error"); }
    return;
  }
  if (!view.open || load !== view.loads) return;
  if (!res.changed && !initial) return;
  swap(table.tBodies[0], res.data.map((img) => el("tr", {class: img.is_deleted ? "deleted" : "", dataset: {id: img.uuid}},
    IMAGE_COLUMNS.map((col) => el("td", {class: "col-" + col}, imageCell(img, col))))));
  count.textContent = (res.total ?? res.data.length) + " images";
  const hint = $("images-empty");
  const filtered = Object.values(filterValues($("image-filters"))).some(Boolean);
  hint.textContent = res.data.length ? "" : filtered ? "No image matches these filters."
    : session.perms.has("add_docker_image") ? "No image in " + session.group + " yet: build one with the form above."
      : "No image in " + session.group + " yet; a member of the group can build one.";
  show(hint, !res.data.length);
}

export async function submitBuild(ev) {
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
    await loadImages(false);
    openImage(img.uuid);
  } catch (err) {
    say("Submit refused: " + err.message, "error");
  }
}

function imageActions(img) {
  const owner = img.group === session.group;
  const out = [];
  const act = (labelText, cls, fn) => el("button", {type: "button", class: "action " + cls, onclick: fn}, labelText);
  if (owner && session.perms.has("add_docker_image") && img.status === "building") {
    out.push(act("Cancel build", "cancel", () => imageCall("POST", img, "/cancel")));
  }
  if (owner && session.perms.has("add_docker_image") && !img.is_deleted) {
    out.push(act(img.pin_version ? "Unpin" : "Pin", "pin",
      () => imageCall("PATCH", img, "", {pin_version: !img.pin_version})));
  }
  if (owner && session.perms.has("delete_docker_image") && !img.is_deleted) {
    out.push(twoStep("Delete", "delete", "Click again to delete", () => imageCall("DELETE", img, "")));
  }
  return out;
}

async function imageCall(method, img, suffix, body) {
  try {
    await api(method, "/api/v2/images/" + id(img.uuid) + suffix, body === undefined ? {} : {body});
  } catch (err) {
    say(err.message, "error");
  }
  await loadImages(false);
  await showRecord(img.uuid);
}

function detailValue(name, value) {
  if (name === "jobs" || name === "manifests") return listOf(value);
  if (name === "pin_version") return value ? "pinned" : "not pinned";  // null: never pinned
  if (name === "date_created" || name === "date_updated") return timeEl(value);
  if (name === "status") return badge(value);
  if (name === "size") return typeof value === "number" ? fmtSize(value) + " (" + value + " bytes)" : text(value);
  return text(value);
}

// The parts of an open image that change (head, actions, fields) are updated in place: the log
// element is never taken out of the page, so where the reader is in it is kept.
function renderParts(img) {
  const box = $("image-detail");
  const meta = img.meta || {};
  const record = {...img, error: meta.error};
  const names = DETAIL_FIELDS.filter((n) => n in record && !(n !== "pin_version" && n !== "jobs" && n !== "manifests"
    && (record[n] === null || record[n] === undefined || record[n] === "")));
  swap(box.querySelector(".actions"), imageActions(img));
  box.querySelector(".detail-head .badge").replaceWith(badge(img.status));
  clear(box.querySelector(".image-fields")).append(el("dl", {class: "fields"}, names.map((n) => [
    el("dt", {}, n.replace(/_/g, " ")), el("dd", {class: "field-" + n}, detailValue(n, record[n]))])));
}

async function getImage(uuid) {
  return (await api("GET", "/api/v2/images/" + id(uuid))).data;
}

async function showRecord(uuid) {
  const box = $("image-detail");
  if (box.dataset.uuid !== uuid || box.hidden) return;
  try { renderParts(await getImage(uuid)); } catch (err) { say(err.message, "error"); }
}

export async function openImage(uuid) {
  const box = $("image-detail");
  show(box, true);
  let img;
  try {
    img = await getImage(uuid);
  } catch (err) {
    clear(box).append(el("p", {class: "error"}, err.message));
    return;
  }
  box.dataset.uuid = uuid;
  const logBox = el("pre", {id: "image-log", class: "log", tabindex: "0", role: "log", "aria-label": "Build log"});
  clear(box).append(
    el("div", {class: "detail-head"}, el("h3", {tabindex: "-1"}, img.name + ":" + img.tag), badge(img.status),
      el("button", {type: "button", class: "close", onclick: () => { stopFollowing(); show(box, false); }}, "Close")),
    el("div", {class: "actions"}),
    el("div", {class: "image-fields"}),
    el("h4", {}, "Build log"),
    el("p", {class: "log-bar"}, el("span", {id: "image-log-state", class: "log-state"}),
      el("span", {id: "image-progress", class: "progress"})),
    logBox,
    el("p", {id: "image-final", class: "final", role: "status", hidden: true}));
  renderParts(img);
  startLog(img, logBox);
}

function stopFollowing() {
  if (view.follow) { view.follow.abort(); view.follow = null; }
  if (view.poll) { clearTimeout(view.poll); view.poll = null; }
  if (view.clock) { clearInterval(view.clock); view.clock = null; }
}

// Where the log shows what it has: the reader's place is kept; at the end, it stays at the end.
class LogView {
  constructor(img, logBox) {
    this.img = img;
    this.box = logBox;
    this.stick = true;  // false once the reader scrolls up; true again at the bottom
    this.partial = "";  // the last line, until its newline arrives
    this.step = null;
    this.finalLine = null;
    this.started = Date.parse(img.date_created);
    logBox.addEventListener("scroll", () => {
      this.stick = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
    });
  }

  append(chunk) {
    if (!chunk) return;
    this.box.append(document.createTextNode(chunk));
    const lines = (this.partial + chunk).split("\n");
    this.partial = lines.pop();
    for (const line of lines) this.read(line);
    if (this.stick) this.box.scrollTop = this.box.scrollHeight;
    this.progress();
  }

  read(line) {
    const step = stepOf(line);
    if (step) this.step = step;
    const bare = line.replace(STAMP_RE, "");
    if (FINAL_RE.test(bare)) this.finalLine = bare;
  }

  progress(endedAt) {
    const parts = [];
    if (this.step) parts.push("step " + this.step[0] + "/" + this.step[1]);
    if (!isNaN(this.started)) {
      const end = endedAt ?? Date.now();
      parts.push((endedAt ? "took " : "") + elapsed((end - this.started) / 1000) + (endedAt ? "" : " elapsed"));
    }
    $("image-progress").textContent = parts.length ? " · " + parts.join(" · ") : "";
  }

  end(img) {
    if (this.partial) { this.read(this.partial); this.partial = ""; }
    const ended = Date.parse(img.date_updated);
    this.progress(isNaN(ended) ? Date.now() : ended);
    const final = $("image-final");
    const words = this.finalLine || (img.status + (img.meta && img.meta.error ? ": " + img.meta.error : ""));
    final.replaceChildren(badge(img.status), " ", words, " ", img.date_updated ? el("span", {class: "muted"},
      "(" + exact(img.date_updated) + ")") : "");
    final.className = "final final-" + img.status;
    show(final, true);
    // The final line is in view, unless the reader had scrolled up to read something else.
    if (this.stick) this.box.scrollTop = this.box.scrollHeight;
  }
}

// The log as it is written: ?follow=true streams until the build ends; when the server has no
// follow slot free (429) the page polls with ?offset instead.
async function startLog(img, logBox) {
  stopFollowing();
  const controller = new AbortController();
  view.follow = controller;
  const path = "/api/v2/images/" + id(img.uuid) + "/logs";
  const lv = new LogView(img, logBox);
  const logState = $("image-log-state");
  const finished = async () => {
    if (view.follow !== controller) return;
    view.follow = null;
    if (view.clock) { clearInterval(view.clock); view.clock = null; }
    logState.textContent = "End of log.";
    logState.className = "log-state ended";
    const now = await getImage(img.uuid).catch(() => img);
    renderParts(now);
    lv.end(now);
    loadImages(false);
  };
  const following = img.status === "building";
  logState.textContent = following ? "Following the build…" : "Reading the log…";
  logState.className = "log-state following";
  if (following) view.clock = setInterval(() => lv.progress(), 1000);
  const decoder = new TextDecoder();  // one for every connection: a character may span two
  let offset = 0;  // bytes received so far
  try {
    for (;;) {
      const resp = await request("GET", path + "?follow=true&offset=" + offset, {signal: controller.signal});
      if (resp.status === 429) return pollLog(img, path, lv, controller, finished, offset);
      if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
      const reader = resp.body.getReader();
      let got = 0;
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        got += value.length;
        lv.append(decoder.decode(value, {stream: true}));
      }
      offset += got;
      // The stream ends when the build does, or when something on the way (a proxy) cut it:
      // then follow again from where it stopped.
      const now = (await api("GET", "/api/v2/images/" + id(img.uuid), {signal: controller.signal})).data;
      if (FINAL.has(now.status) || now.is_deleted) break;
      if (!got) await new Promise((resolve) => setTimeout(resolve, 1000));
      if (controller.signal.aborted) return;
    }
    lv.append(decoder.decode());
    await finished();
  } catch (err) {
    if (controller.signal.aborted) return;
    logState.textContent = "Log not available: " + err.message;
    logState.className = "log-state error";
  }
}

async function pollLog(img, path, lv, controller, finished, offset) {
  if (controller.signal.aborted) return;
  try {
    const resp = await request("GET", path + "?offset=" + offset, {signal: controller.signal});
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
    const bytes = new Uint8Array(await resp.arrayBuffer());
    lv.append(new TextDecoder().decode(bytes));
    offset += bytes.length;
    const now = (await api("GET", "/api/v2/images/" + id(img.uuid), {signal: controller.signal})).data;
    if (FINAL.has(now.status) && bytes.length === 0) return finished();
    view.poll = setTimeout(() => pollLog(img, path, lv, controller, finished, offset), 1000);
  } catch (err) {
    if (!controller.signal.aborted) say("Log: " + err.message, "error");
  }
}
