// DOM helpers of the page. Every value from the API reaches the page as TEXT (text nodes,
// textContent, inert attribute values): never innerHTML, never an href or src.

export const $ = (id) => document.getElementById(id);

// el("td", {class: "x"}, "text", otherNode): strings become text nodes, never markup.
export function el(tag, props, ...children) {
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

export function clear(node) { node.replaceChildren(); return node; }
export function show(node, on) { node.hidden = !on; }
// A class name made from an API value: letters, digits and dashes only.
export function slug(value) { return String(value).toLowerCase().replace(/[^a-z0-9-]/g, "-"); }
export function label(name) { return name.replace(/_/g, " "); }

export function badge(value) {
  return el("span", {class: "badge badge-" + slug(value ?? "none")}, value ?? "—");
}

export function say(message, kind) {
  const box = $("message");
  box.textContent = message || "";
  box.className = "message " + (kind || "info");
  show(box, Boolean(message));
}

export function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A list value (jobs, manifests) as a list, not as JSON text.
export function listOf(values) {
  if (!Array.isArray(values)) return text(values);
  if (!values.length) return "none";
  return el("ul", {class: "plain"}, values.map((v) => el("li", {}, text(v))));
}

export function fmtSize(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

// Replace a container's children only when what it shows changed (a refresh must not flicker),
// and give the focus back to the element of the same key when the focus was inside.
export function swap(container, nodes) {
  const focused = container.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  container.replaceChildren(...nodes);
  if (focused) {
    const again = container.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

// A button that must be pressed twice (no window.confirm: dialogs are easy to click through).
export function twoStep(labelText, cls, armedText, fn) {
  const button = el("button", {type: "button", class: "action " + cls, onclick: () => {
    if (button.dataset.armed) { fn(); return; }
    button.dataset.armed = "1";
    button.textContent = armedText;
  }}, labelText);
  return button;
}
