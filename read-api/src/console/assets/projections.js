// Every projector and version: state, lag in events and seconds, rebuild progress with its
// ETA, dead letters. Refreshes itself every two seconds while on screen. The read API never
// writes, so what an operator can do about it is shown as the `factline` command to run.

import {get} from "./api.js";
import {h, fill, table, command, duration} from "./dom.js";

const REFRESH_MS = 2000;

function rebuildCell(v) {
  const r = v.rebuild;
  if (!r) return v.state === "building" ? "starting" : "";
  const done = Number(r.events_done || 0);
  const total = Number(r.events_total || 0);
  const percent = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  return h("div", {class: "rebuild"},
    h("progress", {max: "100", value: percent.toFixed(1)}),
    ` ${done} / ${total || "?"} events (${percent.toFixed(0)} %)`,
    r.eta_seconds !== null && r.eta_seconds !== undefined ? `, ETA ${duration(r.eta_seconds)}` : "");
}

function deadLetterCell(name, v) {
  const pending = Number(v.dead_letters_pending || 0);
  const all = Number(v.dead_lettered || 0);
  if (!all) return h("span", {class: "ok"}, "none");
  return h("div", {class: pending ? "bad" : ""},
    h("span", {dataset: {field: "dead_letters_pending"}}, `${pending} pending`), ` of ${all}`,
    pending
      ? h("div", {class: "commands"},
        "errors: ", command(`factline dlq list --projector ${name}`), h("br"),
        "after a fix: ", command(`factline dlq redrive --projector ${name}`),
        " (a dry run; add --yes to send)")
      : null);
}

// Per topic: the next offsets and high watermarks summed, each partition on demand.
function positionsCell(positions) {
  const topics = new Map();
  for (const p of positions) {
    if (!topics.has(p.topic)) topics.set(p.topic, []);
    topics.get(p.topic).push(p);
  }
  return [...topics].map(([topic, parts]) => {
    const next = parts.reduce((n, p) => n + Number(p.next_offset || 0), 0);
    const known = parts.every((p) => p.high_watermark !== undefined);
    const high = parts.reduce((n, p) => n + Number(p.high_watermark || 0), 0);
    return h("details", {class: "position"},
      h("summary", {}, `${topic}: ${next}` + (known ? ` / ${high}` : "") + ` (${parts.length} partitions)`),
      parts.map((p) => h("div", {}, `[${p.partition}] ${p.next_offset}` +
        (p.high_watermark !== undefined ? ` / ${p.high_watermark}` : ""))));
  });
}

function lagClass(events) {
  if (events === null || events === undefined) return "unknown";
  return Number(events) === 0 ? "ok" : "behind";
}

function versionRow(name, v) {
  const lagEvents = v.lag_events;
  return h("tr", {class: v.serving ? "serving" : "", dataset: {projector: name, version: v.version}},
    h("td", {class: "name"}, name),
    h("td", {}, "v" + v.version, v.serving ? " (serving)" : ""),
    h("td", {class: "state-" + v.state}, v.state),
    h("td", {class: "lag " + lagClass(lagEvents), dataset: {field: "lag_events"}},
      lagEvents === null || lagEvents === undefined ? "unknown" : String(lagEvents)),
    h("td", {class: "lag", dataset: {field: "lag_seconds"}}, duration(v.lag_seconds)),
    h("td", {}, positionsCell(v.positions || [])),
    h("td", {}, rebuildCell(v)),
    h("td", {}, deadLetterCell(name, v)),
    h("td", {}, (v.read_models || []).join(", ")));
}

export async function projectionsPage(main, params, say) {
  const heading = h("h1", {}, "Projections");
  const when = h("p", {class: "summary", id: "read-at"}, "");
  const body = h("div", {id: "projections"}, h("p", {}, "Loading…"));
  fill(main, heading, when, body,
    h("p", {class: "note"},
      "Lag: records of the projector's topics not applied yet, and the age of the oldest. ",
      "The same view on a terminal: ", command("factline status"), "."));
  let timer = null;
  let stopped = false;
  const refresh = async () => {
    try {
      const {body: answer} = await get("projections");
      if (stopped) return;
      const rows = [];
      for (const p of answer.projections || []) {
        for (const v of p.versions || []) rows.push(versionRow(p.name, v));
      }
      fill(body, rows.length
        ? table(["Projector", "Version", "State", "Lag (events)", "Lag (time)", "Positions / high watermark",
          "Rebuild", "Dead letters", "Read models"], rows, {id: "projection-table"})
        : h("p", {class: "empty"}, "No projector has run yet."));
      when.textContent = `Status read at ${answer.read_at || "?"}; refreshed every ${REFRESH_MS / 1000} s.`;
      say("");
    } catch (error) {
      if (!stopped) say(error.message);
    }
    if (!stopped) timer = window.setTimeout(refresh, REFRESH_MS);
  };
  await refresh();
  return () => {
    stopped = true;
    if (timer !== null) window.clearTimeout(timer);
  };
}
