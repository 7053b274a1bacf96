// Building the page from data without ever parsing data as markup: every string becomes a
// text node, attributes are set one by one, links only ever point inside the console.

// An element: h("a", {href: "#/x", class: "y", onclick: f}, "text", child, [more]).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

// Replaces what `el` holds with `children` (skipping null, undefined and false, which
// replaceChildren would show as text).
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

// A link to a page of the console with these parameters.
export function link(page, params, ...children) {
  return h("a", {href: route(page, params)}, ...children);
}

// The hash of a console page.
export function route(page, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") query.set(k, String(v));
  }
  const text = query.toString();
  return "#/" + page + (text ? "?" + text : "");
}

// A value as indented JSON text.
export function json(value) {
  return h("pre", {class: "json"}, JSON.stringify(value, null, 2));
}

// A cell's text for any value: objects as compact JSON.
export function cell(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A table of rows (arrays of cells).
export function table(headings, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headings.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

// A command an operator can copy.
export function command(text) {
  return h("code", {class: "command"}, text);
}

// Seconds as a short duration.
export function duration(seconds) {
  if (seconds === undefined || seconds === null) return "unknown";
  const s = Number(seconds);
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}
