// The Profile view (CONTRACT section 13), XPRESSO's four parts: user details, API tokens (create
// with a name and a lifetime, shown once with a copy button, list, revoke), password (local
// provider) and preferences (time zone, 12/24 h: every time on the page follows them).
import {$, el, clear, show, badge, say, text} from "./dom.js";
import {api, id, session} from "./http.js";
import {timeEl, refreshTimes, exact} from "./times.js";

let onPrefs = () => {};
export function whenPreferencesChange(fn) { onPrefs = fn; }

export async function openProfile() {
  const root = clear($("profile"));
  root.append(el("p", {}, "Loading…"));
  let me;
  try {
    me = (await api("GET", "/api/v2/me", {group: null})).data;
  } catch (err) {
    clear(root).append(el("p", {class: "error"}, err.message));
    return;
  }
  const tokens = el("div", {id: "token-list"});
  clear(root).append(
    details(me),
    el("section", {class: "card wide", "aria-labelledby": "p-tokens"},
      el("h3", {id: "p-tokens"}, "API tokens"),
      el("p", {class: "muted"}, "Tokens for scripts and the xpresso client. A new token is shown once: copy it then."),
      tokenForm(tokens), el("div", {id: "new-token", hidden: true}), tokens),
    passwordPart(me),
    preferencesPart(me));
  loadTokens(tokens);
}

function details(me) {
  const groups = Object.entries(me.groups || {}).sort();
  const row = (k, v) => [el("dt", {}, k), el("dd", {class: "me-" + k.replace(/\W+/g, "_")}, v)];
  return el("section", {class: "card wide", "aria-labelledby": "p-details"},
    el("h3", {id: "p-details"}, "User details"),
    el("dl", {class: "fields"},
      row("user name", text(me.user)),
      row("email", text(me.email) || "—"),
      row("system administrator", me.superuser ? "yes" : "no"),
      row("groups", groups.length ? el("ul", {class: "plain"}, groups.map(([g, r]) => el("li", {}, g + ": " + r))) : "none"),
      row("joined", me.date_joined ? timeEl(me.date_joined) : "—"),
      row("last sign-in", me.last_login ? timeEl(me.last_login) : "—")));
}

// ------------------------------------------------------------------ tokens

function field(name, labelText, control, hint) {
  control.id = "p-" + name;
  control.name = name;
  control.setAttribute("aria-describedby", "perr-" + name + (hint ? " phint-" + name : ""));
  return el("div", {class: "field"}, el("label", {for: control.id}, labelText), control,
    hint ? el("span", {class: "hint", id: "phint-" + name}, hint) : null,
    el("span", {class: "field-error", id: "perr-" + name, role: "alert"}));
}

function showErrors(form, err, names) {
  for (const n of names) {
    $("perr-" + n).textContent = "";
    form.elements[n].removeAttribute("aria-invalid");
  }
  const general = form.querySelector(".form-error");
  general.textContent = "";
  if (!err) return;
  let placed = false;
  for (const [name, messages] of Object.entries(err.fields)) {
    if (!names.includes(name)) continue;
    $("perr-" + name).textContent = Array.isArray(messages) ? messages.join(" ") : text(messages);
    form.elements[name].setAttribute("aria-invalid", "true");
    if (!placed) form.elements[name].focus();
    placed = true;
  }
  if (!placed) general.textContent = err.message;
}

function tokenForm(list) {
  const form = el("form", {id: "token-form", class: "inline-form", autocomplete: "off", novalidate: true},
    field("name", "Token name", el("input", {type: "text", required: true, placeholder: "e.g. ci-laptop"})),
    field("days", "Lifetime (days)", el("input", {type: "number", min: "1", step: "1", value: "90", required: true})),
    el("button", {type: "submit", class: "primary"}, "Create token"),
    el("p", {class: "form-error error", role: "alert"}));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(form, null, ["name", "days"]);
    const body = {name: form.elements.name.value.trim(), days: Number(form.elements.days.value)};
    try {
      const made = (await api("POST", "/api/v2/me/tokens", {body, group: null})).data;
      form.elements.name.value = "";
      showNewToken(made);
      await loadTokens(list);
    } catch (err) {
      if (err.status !== 401) showErrors(form, err, ["name", "days"]);
    }
  });
  return form;
}

// The token is in the page this once: in a read-only field, with a button that copies it.
function showNewToken(made) {
  const box = $("new-token");
  const value = made.token && !/^jwt\s/i.test(made.token) ? "Jwt " + made.token : made.token;
  const out = el("input", {id: "new-token-value", type: "text", readonly: true, value, spellcheck: "false",
    "aria-describedby": "new-token-note"});
  const status = el("span", {id: "copy-status", role: "status"});
  const copy = el("button", {type: "button", id: "copy-token", onclick: async () => {
    out.select();
    try {
      await navigator.clipboard.writeText(value);
      status.textContent = "Copied.";
    } catch (err) {  // no clipboard permission: the text is selected, Ctrl+C copies it
      status.textContent = document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C to copy.";
    }
  }}, "Copy");
  clear(box).append(el("div", {class: "new-token"},
    el("label", {for: "new-token-value"}, "New token “" + text(made.name) + "”"),
    el("div", {class: "copy-row"}, out, copy, status),
    el("p", {id: "new-token-note", class: "note"}, "Shown this once: it is not stored in a form that can be shown again." +
      (made.expires ? " Expires " + exact(made.expires) + "." : ""))));
  show(box, true);
  copy.focus();
}

async function loadTokens(box) {
  let tokens;
  try {
    tokens = (await api("GET", "/api/v2/me/tokens", {group: null})).data;
  } catch (err) {
    clear(box).append(el("p", {class: "error"}, "Tokens not available: " + err.message));
    return;
  }
  if (!tokens.length) { clear(box).append(el("p", {class: "muted"}, "No token yet.")); return; }
  const live = (t) => !t.revoked && !(t.expires && Date.parse(t.expires) < Date.now());
  clear(box).append(el("div", {class: "scroll", tabindex: "0", role: "region", "aria-label": "Your tokens"}, el("table", {class: "records tokens"},
    el("thead", {}, el("tr", {}, ["name", "kind", "created", "expires", "last used", "state", ""].map((c, i) =>
      i === 6 ? el("td", {}) : el("th", {scope: "col"}, c)))),
    el("tbody", {}, tokens.map((t) => el("tr", {dataset: {jti: t.jti}, class: live(t) ? "" : "deleted"},
      el("td", {class: "col-name"}, text(t.name) || "—"), el("td", {}, text(t.typ)),
      el("td", {}, timeEl(t.created)), el("td", {}, t.expires ? timeEl(t.expires) : "never"),
      el("td", {}, t.last_used ? timeEl(t.last_used) : "never"),
      el("td", {}, badge(t.revoked ? "revoked" : live(t) ? "active" : "expired")),
      el("td", {}, live(t) ? el("button", {type: "button", class: "action delete revoke",
        "aria-label": "Revoke token " + (t.name || t.jti), onclick: () => revoke(t, box)}, "Revoke") : "")))))));
}

async function revoke(t, box) {
  try {
    await api("DELETE", "/api/v2/me/tokens/" + id(t.jti), {group: null});
    say("Token " + (t.name || t.jti) + " revoked.", "info");
  } catch (err) {
    if (err.status !== 401) say(err.message, "error");
  }
  await loadTokens(box);
}

// ------------------------------------------------------------------ password

function passwordPart(me) {
  const section = el("section", {class: "card", "aria-labelledby": "p-password"}, el("h3", {id: "p-password"}, "Password"));
  if (me.provider && me.provider !== "local") {
    section.append(el("p", {}, "Your password is kept by the " + text(me.provider) + " provider: change it there."));
    return section;
  }
  const form = el("form", {id: "password-form", autocomplete: "off", novalidate: true},
    el("input", {type: "text", name: "username", value: me.user, autocomplete: "username", hidden: true, "aria-hidden": "true",
      tabindex: "-1"}),
    field("old", "Current password", el("input", {type: "password", autocomplete: "current-password", required: true})),
    field("new", "New password", el("input", {type: "password", autocomplete: "new-password", required: true})),
    field("again", "New password again", el("input", {type: "password", autocomplete: "new-password", required: true})),
    el("button", {type: "submit", class: "primary"}, "Change password"),
    el("p", {class: "form-error error", role: "alert"}));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const names = ["old", "new", "again"];
    showErrors(form, null, names);
    const v = (n) => form.elements[n].value;
    if (v("new") !== v("again")) {
      $("perr-again").textContent = "The two new passwords differ.";
      form.elements.again.setAttribute("aria-invalid", "true");
      form.elements.again.focus();
      return;
    }
    try {
      await api("POST", "/api/v2/me/password", {body: {old: v("old"), new: v("new")}, group: null});
      for (const n of names) form.elements[n].value = "";
      say("Password changed.", "info");
    } catch (err) {
      if (err.status !== 401) showErrors(form, err, names);
    }
  });
  section.append(form);
  return section;
}

// ------------------------------------------------------------------ preferences

function zones() {
  let all = [];
  try { all = Intl.supportedValuesOf("timeZone"); } catch (err) { all = []; }
  return ["UTC", ...all.filter((z) => z !== "UTC")];
}

function preferencesPart(me) {
  const prefs = {time_zone: "UTC", time_format: "24h", ...(me.preferences || {})};
  const zoneSelect = el("select", {}, zones().map((z) => el("option", {value: z}, z)));
  if (![...zoneSelect.options].some((o) => o.value === prefs.time_zone)) {
    zoneSelect.append(el("option", {value: prefs.time_zone}, prefs.time_zone));
  }
  zoneSelect.value = prefs.time_zone;
  const radio = (value, words) => el("label", {class: "check"},
    el("input", {type: "radio", name: "time_format", value, checked: prefs.time_format === value}), " " + words);
  const sample = el("p", {class: "muted", id: "pref-sample"}, "Times now show as: ", timeEl(new Date().toISOString()),
    " (", el("span", {id: "pref-exact"}, exact(new Date().toISOString())), ")");
  const form = el("form", {id: "prefs-form", autocomplete: "off"},
    field("time_zone", "Time zone", zoneSelect),
    el("fieldset", {class: "radios"}, el("legend", {}, "Clock"), radio("24h", "24-hour"), radio("12h", "12-hour (AM/PM)")),
    el("button", {type: "submit", class: "primary"}, "Save preferences"),
    el("p", {class: "form-error error", role: "alert"}), sample);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(form, null, ["time_zone"]);
    const body = {preferences: {time_zone: zoneSelect.value, time_format: form.elements.time_format.value}};
    try {
      const me2 = (await api("PATCH", "/api/v2/me", {body, group: null})).data;
      session.prefs = {...session.prefs, ...(me2.preferences || body.preferences)};
      refreshTimes();
      $("pref-exact").textContent = exact(new Date().toISOString());
      onPrefs();
      say("Preferences saved: times show in " + session.prefs.time_zone + ", " + session.prefs.time_format + ".", "info");
    } catch (err) {
      if (err.status === 401) return;
      const fieldErrors = err.fields;
      // {"preferences": {"time_zone": [...]}} or {"time_zone": [...]}: both land beside the field
      if (fieldErrors.preferences && typeof fieldErrors.preferences === "object" && !Array.isArray(fieldErrors.preferences)) {
        err.body = fieldErrors.preferences;
      } else if (Array.isArray(fieldErrors.preferences)) {
        err.body = {time_zone: fieldErrors.preferences};
      }
      showErrors(form, err, ["time_zone"]);
    }
  });
  return el("section", {class: "card", "aria-labelledby": "p-prefs"}, el("h3", {id: "p-prefs"}, "My preferences"), form);
}
