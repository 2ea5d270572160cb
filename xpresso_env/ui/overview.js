// The Overview of a group: harnesses and engines by operational state (what is OFFLINE, why,
// since when), builds running and queued, the latest state changes; one click to each record.
// Read with conditional GETs every few seconds: an unchanged group costs 304s and no redraw.
import {$, el, clear, badge, text, swap} from "./dom.js";
import {fresh, id, session} from "./http.js";
import {timeEl} from "./times.js";
import {repeat} from "./tick.js";

const KINDS = [["harnesses", "harness"], ["engines", "engine"]];
const STATES = ["ONLINE", "OFFLINE", "UNKNOWN"];
const MAX_STATES = 60;  // records whose /state the overview reads (the first of each kind)
const LATEST = 8;

let navigate = () => {};
export function onNavigate(fn) { navigate = fn; }

const view = {stop: null, shown: null, loads: 0};

export function openOverview() {
  closeOverview();
  clear($("overview")).append(el("p", {}, "Loading…"));
  view.shown = null;
  load();
  view.stop = repeat(load);
}

export function closeOverview() {
  if (view.stop) view.stop();
  view.stop = null;
}

async function load() {
  const n = ++view.loads;
  const group = session.group;
  let lists;
  try {
    lists = await Promise.all([
      fresh("/api/v2/harnesses"), fresh("/api/v2/engines"), // a server without images (404) still has an overview
      fresh("/api/v2/images?status=building").catch(() => ({data: []}))]);
  } catch (err) {
    if (view.shown === null && view.stop) clear($("overview")).append(el("p", {class: "error"}, err.message));
    return;
  }
  const states = {};
  for (const [[kind], res] of KINDS.map((k, i) => [k, lists[i]])) {
    const chosen = res.data.slice(0, MAX_STATES);
    const answers = await Promise.all(chosen.map((rec) =>
      fresh("/api/v2/" + kind + "/" + id(rec.id) + "/state").then((r) => r.data).catch(() => null)));
    chosen.forEach((rec, i) => { states[kind + " " + rec.id] = answers[i]; });
  }
  if (n !== view.loads || group !== session.group || !view.stop) return;
  const model = {harnesses: lists[0].data, engines: lists[1].data, building: lists[2].data, states};
  const key = JSON.stringify(model);
  if (key === view.shown) return;  // nothing changed: nothing redrawn
  view.shown = key;
  swap($("overview"), render(model));
}

function go(kind, recId) {
  return el("button", {type: "button", class: "link", dataset: {key: kind + " " + recId},
    onclick: () => navigate(kind, recId)});
}

function link(kind, rec) {
  const b = go(kind, rec.id || rec.uuid);
  b.textContent = kind === "images" ? rec.name + ":" + rec.tag : rec.name;
  return b;
}

function render({harnesses, engines, building, states}) {
  if (!harnesses.length && !engines.length && !building.length) return [emptyGroup()];
  const out = [];
  const records = {harnesses, engines};
  const grid = el("div", {class: "cards"});
  for (const [kind, one] of KINDS) {
    const recs = records[kind];
    const counts = Object.fromEntries(STATES.map((s) => [s, recs.filter((r) => r.operational_state === s).length]));
    const offline = recs.filter((r) => r.operational_state === "OFFLINE");
    grid.append(el("section", {class: "card", "aria-labelledby": "ov-" + kind},
      el("h3", {id: "ov-" + kind}, kind[0].toUpperCase() + kind.slice(1)),
      el("p", {class: "counts"}, STATES.map((s) => el("span", {class: "count-" + s.toLowerCase()}, badge(s), " ",
        el("strong", {}, String(counts[s])), " ")), el("span", {}, "of " + recs.length + " " + (recs.length === 1 ? one : kind))),
      offline.length
        ? el("ul", {class: "offline", "aria-label": "Offline " + kind}, offline.map((rec) => {
          const st = states[kind + " " + rec.id];
          return el("li", {class: "offline-item"}, link(kind, rec), " ", badge("OFFLINE"), " ",
            el("span", {class: "reason"}, st ? text(st.reason) || "no reason given" : ""),
            st && st.since ? [" · since ", timeEl(st.since)] : "");
        }))
        : el("p", {class: "muted"}, recs.length ? "Nothing is OFFLINE." : "No " + kind + " yet.")));
  }
  const running = building.filter((img) => img.worker_meta && img.worker_meta.claimed_at);
  const queued = building.filter((img) => !(img.worker_meta && img.worker_meta.claimed_at));
  const buildList = (imgs, what) => imgs.length
    ? el("ul", {class: "builds-" + what}, imgs.map((img) => el("li", {}, link("images", img), " ",
      what === "running" ? ["started ", timeEl(img.worker_meta.claimed_at)] : ["submitted ", timeEl(img.date_created)],
      " by ", text(dataField(img, "submitter")))))
    : el("p", {class: "muted"}, "None " + what + ".");
  grid.append(el("section", {class: "card", "aria-labelledby": "ov-builds"},
    el("h3", {id: "ov-builds"}, "Builds"),
    el("h4", {}, "Running (" + running.length + ")"), buildList(running, "running"),
    el("h4", {}, "Queued (" + queued.length + ")"), buildList(queued, "queued")));
  out.push(grid);

  const changes = [];
  for (const [kind] of KINDS) {
    for (const rec of records[kind]) {
      const st = states[kind + " " + rec.id];
      if (st && st.since) changes.push({kind, rec, st});
    }
  }
  changes.sort((a, b) => Date.parse(b.st.since) - Date.parse(a.st.since));
  out.push(el("section", {class: "card wide", "aria-labelledby": "ov-latest"},
    el("h3", {id: "ov-latest"}, "Latest state changes"),
    changes.length
      ? el("div", {class: "scroll", tabindex: "0", role: "region", "aria-label": "Latest state changes"}, el("table", {class: "records latest"},
        el("thead", {}, el("tr", {}, ["when", "record", "kind", "state", "reason"].map((c) => el("th", {scope: "col"}, c)))),
        el("tbody", {}, changes.slice(0, LATEST).map(({kind, rec, st}) => el("tr", {},
          el("td", {}, timeEl(st.since)), el("td", {}, link(kind, rec)), el("td", {}, kind === "harnesses" ? "harness" : "engine"),
          el("td", {}, badge(st.operational_state)), el("td", {}, text(st.reason)))))))
      : el("p", {class: "muted"}, "No state change yet.")));
  return out;
}

// The image record's `data` is a Python literal dict as text: only the submitter is read from it.
function dataField(img, name) {
  const m = typeof img.data === "string" ? img.data.match(new RegExp("'" + name + "':\\s*'([^']*)'")) : null;
  return m ? m[1] : "?";
}

function emptyGroup() {
  const can = (p) => session.perms.has(p);
  const steps = [];
  if (can("add_harness")) steps.push("add a harness (Harnesses → New harness)");
  if (can("add_engine")) steps.push("add an execution engine (Engines → New engine)");
  if (can("add_docker_image")) steps.push("build a Polaris image (Images)");
  return el("section", {class: "card wide empty-group"},
    el("h3", {}, "Nothing in " + session.group + " yet"),
    steps.length
      ? el("p", {}, "To start: " + steps.join("; ") + ". From a terminal, `xpresso harnesses add NAME --path PATH` does the same.")
      : el("p", {}, "Your role here (" + session.role + ") can read only: ask a group admin of " + session.group +
        " to add harnesses and engines; they will show here by themselves."));
}
