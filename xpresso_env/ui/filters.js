// Filter forms (the API's own filter parameters) and table heads, shared by the lists.
import {el, clear, label} from "./dom.js";

export function buildFilters(form, filters, onApply) {
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

export function filterValues(form) {
  const out = {};
  for (const field of form.elements) {
    if (!field.name) continue;
    if (field.type === "checkbox") { if (field.checked) out[field.name] = "true"; } else out[field.name] = field.value.trim();
  }
  return out;
}

export function headRow(table, columns) {
  clear(table.tHead).append(el("tr", {}, columns.map((c) => el("th", {scope: "col"}, label(c)))));
}
