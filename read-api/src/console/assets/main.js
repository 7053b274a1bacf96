// The console's shell: the API key form, the message line and the pages behind the hash
// (#/events, #/event, #/timeline, #/projections, #/models).

import {apiKey, setApiKey} from "./api.js";
import {h, fill} from "./dom.js";
import {eventsPage, eventPage, timelinePage} from "./events.js";
import {projectionsPage} from "./projections.js";
import {modelsPage} from "./models.js";

const pages = {
  events: eventsPage,
  event: eventPage,
  timeline: timelinePage,
  projections: projectionsPage,
  models: modelsPage,
};

// What the page on screen must do when left (e.g. stop refreshing).
let leave = () => {};

// Says something above the page (an error, or nothing).
export function say(text) {
  const line = document.getElementById("message");
  line.textContent = text || "";
  line.hidden = !text;
}

function showKeyState() {
  document.getElementById("key-state").textContent = apiKey() ? "key set for this tab" : "no key";
}

// Shows the page the hash names. Each page renders into a view of its own, so a page still
// loading when another is asked for renders into a view no longer on screen. `main` says which
// route it shows and whether it is done (`data-ready`: "false", "true" or "error").
async function show() {
  leave();
  leave = () => {};
  say("");
  const route = window.location.hash;
  const hash = route.replace(/^#\/?/, "");
  const [name, query] = hash.split("?", 2);
  const page = pages[name] ? name : "events";
  for (const a of document.querySelectorAll("nav a")) {
    const active = a.dataset.page === page || (a.dataset.page === "events" && (page === "event" || page === "timeline"));
    a.classList.toggle("active", active);
  }
  const main = document.getElementById("main");
  const view = h("div", {class: "view"}, h("p", {}, "Loading…"));
  fill(main, view);
  main.dataset.page = page;
  main.dataset.route = route;
  main.dataset.ready = "false";
  let ready = "true";
  try {
    const done = await pages[page](view, new URLSearchParams(query || ""), say);
    if (typeof done === "function") {
      if (view.isConnected) leave = done;
      else done();
    }
  } catch (error) {
    ready = "error";
    if (view.isConnected) say(error.message);
  }
  if (view.isConnected) main.dataset.ready = ready;
}

document.getElementById("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("api-key");
  setApiKey(input.value.trim());
  input.value = "";
  showKeyState();
  show();
});
document.getElementById("forget-key").addEventListener("click", () => {
  setApiKey("");
  showKeyState();
  show();
});
window.addEventListener("hashchange", show);
showKeyState();
show();
