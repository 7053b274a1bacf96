// The event viewer: search and filter every event (newest first, paged with the API's
// cursors), one event with its decoded payload, headers and what every projector did with it,
// and the events of one key as a timeline, oldest first.

import {get, segment} from "./api.js";
import {h, fill, link, route, json, table, command, cell} from "./dom.js";

const FILTERS = [
  ["q", "Text", "words of the payload"],
  ["type", "Type", "e.g. OrderPlaced"],
  ["key", "Key", "aggregate id, e.g. o-1"],
  ["topic", "Topic", "e.g. orders"],
  ["correlation_id", "Correlation id", ""],
];

// A datetime-local value (local time) as RFC 3339, or "".
function rfc3339(local) {
  if (!local) return "";
  const t = new Date(local);
  return Number.isNaN(t.getTime()) ? "" : t.toISOString();
}

// RFC 3339 as a datetime-local value, or "".
function localInput(text) {
  if (!text) return "";
  const t = new Date(text);
  if (Number.isNaN(t.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return t.getFullYear() + "-" + pad(t.getMonth() + 1) + "-" + pad(t.getDate()) + "T" +
    pad(t.getHours()) + ":" + pad(t.getMinutes()) + ":" + pad(t.getSeconds());
}

function position(e) {
  return e.topic + ":" + e.partition + ":" + e.offset;
}

// The search form, filled from `params`; submitting it moves to the matching hash.
function searchForm(params) {
  const inputs = {};
  const fields = FILTERS.map(([name, label, hint]) => {
    inputs[name] = h("input", {name, placeholder: hint, value: params.get(name) || ""});
    return h("label", {}, label, inputs[name]);
  });
  for (const [name, label] of [["from", "From"], ["to", "Until"]]) {
    inputs[name] = h("input", {name, type: "datetime-local", step: "1", value: localInput(params.get(name))});
    fields.push(h("label", {}, label, inputs[name]));
  }
  inputs.limit = h("select", {name: "limit"}, ["20", "50", "100"].map((n) =>
    h("option", {value: n, selected: (params.get("limit") || "20") === n}, n)));
  fields.push(h("label", {}, "Per page", inputs.limit));
  const form = h("form", {class: "filters", id: "event-search"}, fields,
    h("button", {type: "submit"}, "Search"),
    h("a", {href: route("events"), class: "button"}, "Clear"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = {};
    for (const [name] of FILTERS) next[name] = inputs[name].value.trim();
    next.from = rfc3339(inputs.from.value);
    next.to = rfc3339(inputs.to.value);
    next.limit = inputs.limit.value;
    next.searched = Date.now(); // searching again with the same filters reloads
    window.location.hash = route("events", next);
  });
  return form;
}

function eventRow(e) {
  return h("tr", {class: "event", dataset: {eventId: e.event_id, type: e.event_type, key: e.key}},
    h("td", {}, e.timestamp || ""),
    h("td", {class: "type"}, link("event", {id: e.event_id}, e.event_type)),
    h("td", {class: "key"}, link("timeline", {key: e.key}, e.key)),
    h("td", {}, position(e)),
    h("td", {class: "text"}, e.forgotten ? "[personal data erased] " : "", cell(e.payload)));
}

export async function eventsPage(main, params) {
  const query = {};
  for (const name of ["q", "type", "key", "topic", "correlation_id", "from", "to", "limit", "cursor"]) {
    query[name] = params.get(name) || "";
  }
  const form = searchForm(params);
  fill(main, h("h1", {}, "Events"), form, h("p", {}, "Searching…"));
  const {body, freshness} = await get("events", query);
  const items = body.items || [];
  const paging = h("div", {class: "paging"},
    query.cursor ? h("a", {id: "newest", href: route("events", {...query, cursor: ""})}, "⇤ Newest") : null,
    body.next_cursor ? h("a", {id: "older", href: route("events", {...query, cursor: body.next_cursor})}, "Older →") : null);
  fill(main,
    h("h1", {}, "Events"),
    form,
    h("p", {class: "summary", id: "event-count"},
      `${body.total ?? items.length} matching, newest first`,
      freshnessNote(freshness)),
    items.length
      ? table(["Time", "Type", "Key (timeline)", "Topic:partition:offset", "Payload"], items.map(eventRow), {id: "events"})
      : h("p", {class: "empty"}, "No event matches."),
    paging);
}

// "served by P, N events behind".
export function freshnessNote(freshness) {
  if (!freshness || !freshness.projection) return null;
  return h("span", {class: "freshness"},
    ` · served by ${freshness.projection}, ${freshness.lagEvents} events (${freshness.lagSeconds} s) behind`);
}

// The key's events, oldest first (every page of the newest-first list, reversed).
async function eventsOfKey(key, topic) {
  const all = [];
  let cursor = "";
  for (let pages = 0; pages < 50; pages++) {
    const {body} = await get("events", {key, topic, limit: 100, cursor});
    all.push(...(body.items || []));
    if (!body.next_cursor) return {events: all.reverse(), complete: true};
    cursor = body.next_cursor;
  }
  return {events: all.reverse(), complete: false};
}

export async function timelinePage(main, params) {
  const key = params.get("key") || "";
  const topic = params.get("topic") || "";
  const form = h("form", {class: "filters", id: "timeline-form"},
    h("label", {}, "Key", h("input", {name: "key", value: key, placeholder: "aggregate id"})),
    h("label", {}, "Topic", h("input", {name: "topic", value: topic, placeholder: "any"})),
    h("button", {type: "submit"}, "Show"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    window.location.hash = route("timeline", {key: form.elements.key.value.trim(), topic: form.elements.topic.value.trim()});
  });
  if (!key) {
    fill(main, h("h1", {}, "Timeline of a key"), form);
    return;
  }
  fill(main, h("h1", {}, "Timeline of ", key), form, h("p", {}, "Loading…"));
  const {events, complete} = await eventsOfKey(key, topic);
  const steps = events.map((e, i) =>
    h("li", {class: "step", dataset: {type: e.event_type, eventId: e.event_id}},
      h("span", {class: "n"}, String(i + 1)),
      h("span", {class: "type"}, link("event", {id: e.event_id}, e.event_type)),
      h("span", {class: "when"}, e.timestamp || ""),
      h("span", {class: "pos"}, position(e)),
      h("div", {class: "text"}, cell(e.payload))));
  fill(main,
    h("h1", {}, "Timeline of ", h("span", {id: "timeline-key"}, key)),
    form,
    h("p", {class: "summary"}, `${events.length} events, oldest first`,
      complete ? "" : " (the oldest 5000 only)", " · ", link("events", {key}, "as a list")),
    events.length ? h("ol", {class: "timeline", id: "timeline"}, steps) : h("p", {class: "empty"}, "No event has this key."));
}

function trailRow(r, e) {
  const letter = r.dead_letter;
  let detail = null;
  if (letter) {
    const id = position(e);
    detail = h("div", {class: "dead-letter"},
      h("div", {class: "error"}, letter.error || ""),
      letter.redriven_to
        ? h("div", {}, "redriven to ", letter.redriven_to)
        : h("div", {}, "after a fix, redrive it (dry run first, then --yes): ",
          command(`factline dlq redrive --id ${id} --projector ${r.projector}`)));
  }
  return h("tr", {class: "outcome-" + r.outcome, dataset: {projector: r.projector}},
    h("td", {}, r.projector), h("td", {}, "v" + r.version), h("td", {}, r.state),
    h("td", {}, (r.read_models || []).join(", ")), h("td", {class: "outcome"}, r.outcome, detail));
}

export async function eventPage(main, params) {
  const id = params.get("id") || "";
  fill(main, h("h1", {}, "Event"), h("p", {}, "Loading…"));
  const {body: e, freshness} = await get("events/" + segment(id));
  const headers = Object.entries(e.headers || {}).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, cell(v))));
  const facts = [
    ["Type", link("events", {type: e.event_type}, e.event_type)],
    ["Key", link("timeline", {key: e.key}, e.key)],
    ["Position", position(e)],
    ["Record time", e.timestamp],
    ["Occurred at", e.occurred_at],
    ["Correlation id", e.correlation_id ? link("events", {correlation_id: e.correlation_id}, e.correlation_id) : ""],
    ["Event id", e.event_id],
  ];
  fill(main,
    h("h1", {}, h("span", {id: "event-type"}, e.event_type), " ", h("small", {}, e.key)),
    h("p", {class: "summary"}, link("timeline", {key: e.key}, "timeline of this key"), freshnessNote(freshness)),
    h("dl", {class: "facts"}, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v || "")])),
    e.forgotten ? h("p", {class: "note"}, "The customer was forgotten: personal fields are erased.") : null,
    h("h2", {}, "Payload"),
    h("div", {id: "payload"}, json(e.payload)),
    h("h2", {}, "Headers"),
    table(["Header", "Value"], headers, {id: "headers"}),
    h("h2", {}, "Reached"),
    (e.reached || []).length
      ? table(["Projector", "Version", "State", "Read models", "Outcome"], e.reached.map((r) => trailRow(r, e)), {id: "reached"})
      : h("p", {class: "empty"}, "No projector consumes this topic."),
    h("p", {class: "note"}, "Show the record as the log holds it: ", command(`factline dlq show ${position(e)}`),
      " (dead-lettered records) or ", command(`factline events show ${e.event_id}`), "."));
}
