// Browsing every read model the read API serves, as its OpenAPI document lists them (the
// fixed resources and each declarative view registered by its projector): a form from each
// query's parameters, the answer as a table, paged with the API's cursors.

import {get} from "./api.js";
import {h, fill, link, table, cell, json} from "./dom.js";
import {freshnessNote} from "./events.js";

// Paths that are not read models (they have pages of their own, or are operations).
const NOT_MODELS = ["/events", "/events/{event_id}", "/projections", "/projections/{name}",
  "/healthz", "/readyz", "/metrics", "/openapi.json"];

// Parameters the console fills itself.
const HIDDEN = ["consistent_with", "wait_ms", "cursor"];

// Every query, one per declarative view for the view list (its name preset), the fixed
// resources after them.
function queries(doc) {
  const all = Object.entries(doc.paths || {})
    .filter(([path, item]) => item.get && !NOT_MODELS.includes(path) && !path.startsWith("/console"))
    .map(([path, item]) => ({id: path, label: path, path, summary: item.get.summary || "",
      parameters: item.get.parameters || [], preset: {}}));
  const views = [];
  for (const q of all.filter((x) => x.path === "/views/{name}")) {
    const name = q.parameters.find((p) => p.name === "name" && p.in === "path");
    for (const view of (name && name.schema && name.schema.examples) || []) {
      views.push({...q, id: "view:" + view, label: String(view), summary: "declarative view, in key order",
        preset: {name: String(view)}});
    }
  }
  return [...views, ...all];
}

function input(p, value) {
  const schema = p.schema || {};
  const choices = schema.enum || schema.examples;
  if (Array.isArray(choices) && choices.length) {
    const blank = p.required && schema.enum ? [] : [h("option", {value: ""}, p.required ? "(choose)" : "(any)")];
    return h("select", {name: p.name},
      blank, choices.map((c) => h("option", {value: String(c), selected: String(c) === value}, String(c))));
  }
  return h("input", {name: p.name, value: value || "", placeholder: p.description || ""});
}

// The answer: a list of items as a table, anything else as JSON.
function answerView(body) {
  if (body && Array.isArray(body.items)) {
    const columns = [];
    for (const item of body.items) for (const k of Object.keys(item || {})) if (!columns.includes(k)) columns.push(k);
    return body.items.length
      ? table(columns, body.items.map((item) => h("tr", {}, columns.map((c) => h("td", {}, cell(item[c]))))), {id: "model-rows"})
      : h("p", {class: "empty"}, "No row matches.");
  }
  return h("div", {id: "model-row"}, json(body));
}

function queryPanel(q, say) {
  const result = h("div", {class: "result"});
  const inputs = q.parameters.filter((p) => !HIDDEN.includes(p.name) && !(p.name in q.preset))
    .map((p) => [p, input(p, "")]);
  const namePicker = inputs.find(([p]) => p.in === "path" && p.schema && p.schema.examples);
  const typedName = namePicker ? h("input", {placeholder: "view name"}) : null;
  // a declarative view filters on its declared columns, which are not separate parameters
  const isView = q.path.startsWith("/views/") && !q.path.endsWith("{key}");
  const column = isView ? h("input", {name: "filter-column", placeholder: "column"}) : null;
  const columnValue = isView ? h("input", {name: "filter-value", placeholder: "value"}) : null;
  const form = h("form", {class: "filters"},
    inputs.map(([p, el]) => h("label", {}, p.name + (p.required ? " *" : ""), el)),
    typedName ? h("label", {}, "other view", typedName) : null,
    isView ? h("label", {}, "filter column", column) : null,
    isView ? h("label", {}, "equals", columnValue) : null,
    h("button", {type: "submit"}, "Query"));
  let cursor = "";
  const run = async () => {
    let path = q.path.slice(1);
    for (const [name, value] of Object.entries(q.preset)) path = path.replace("{" + name + "}", encodeURIComponent(value));
    const params = {};
    for (const [p, el] of inputs) {
      let value = el.value.trim();
      if (el === (namePicker && namePicker[1]) && typedName.value.trim()) value = typedName.value.trim();
      if (p.in === "path") {
        if (!value) {
          say(`${p.name} is required`);
          return;
        }
        path = path.replace("{" + p.name + "}", encodeURIComponent(value));
      } else {
        params[p.name] = value;
      }
    }
    if (isView && column.value.trim()) params[column.value.trim()] = columnValue.value.trim();
    params.cursor = cursor;
    fill(result, h("p", {}, "Loading…"));
    try {
      const {body, freshness} = await get(path, params);
      say("");
      const more = body && body.next_cursor
        ? h("button", {type: "button", onclick: () => { cursor = body.next_cursor; run(); }}, "Next page →")
        : null;
      const first = cursor ? h("button", {type: "button", onclick: () => { cursor = ""; run(); }}, "⇤ First page") : null;
      fill(result,
        h("p", {class: "summary"}, "GET /" + path, freshnessNote(freshness),
          body && body.total !== undefined && body.total !== null ? ` · ${body.total} in all` : ""),
        answerView(body), h("div", {class: "paging"}, first, more));
    } catch (error) {
      fill(result, h("p", {class: "bad"}, error.message));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    cursor = "";
    run();
  });
  const required = q.parameters.some((p) => p.required && !(p.name in q.preset) &&
    !(p.schema && (p.schema.examples || p.schema.enum)));
  return {form, result, run: required ? null : run};
}

export async function modelsPage(main, params, say) {
  const {body: doc} = await get("openapi.json");
  const list = queries(doc);
  const browsable = (x) => !x.parameters.some((p) => p.required && !(p.name in x.preset));
  const wanted = list.find((x) => x.id === params.get("model")) || list.find(browsable) || list[0];
  if (!wanted) {
    fill(main, h("h1", {}, "Read models"), h("p", {class: "empty"}, "The read API lists no read model."));
    return;
  }
  const nav = h("ul", {class: "models", id: "models"}, list.map((x) =>
    h("li", {class: x.id === wanted.id ? "active" : ""},
      link("models", {model: x.id}, x.label),
      h("div", {class: "hint"}, x.summary))));
  const panel = queryPanel(wanted, say);
  const name = wanted.parameters.find((p) => p.name === "name" && p.in === "path");
  const title = Object.keys(wanted.preset).length ? wanted.label + " (GET " + wanted.path.replace("{name}", wanted.label) + ")" : wanted.path;
  fill(main,
    h("h1", {}, "Read models"),
    h("div", {class: "split"},
      nav,
      h("section", {id: "model-query", dataset: {model: wanted.id}},
        h("h2", {}, title), h("p", {class: "hint"}, wanted.summary),
        name && name.description && !(name.name in wanted.preset) ? h("p", {class: "hint"}, name.description) : null,
        panel.form, panel.result)));
  if (panel.run) await panel.run();
}
