#!/usr/bin/env python3
"""The web console in a real browser (Playwright driving Debian's Chromium, headless).

Run by read-api/tests/console.rs through scripts/console-test.sh, against a world it started:
the read API (with an API key), the write side, and the projectors, `order_summary` stopped
once it had applied the order's events. Checks, each with a bounded wait for its condition:

- the console asks for the key, and queries with it once entered;
- a text search finds the fresh order's OrderPlaced; its hostile item name is shown as text
  on every page (no element, no script run);
- the order's timeline shows OrderPlaced then OrderShipped, in that order, and its list is
  newest first, one page after the other through the API's cursors;
- the event page shows the decoded payload, headers and the projectors it reached;
- the projections page shows the stopped projector's lag growing as more orders are placed;
- a declarative view lists the customer;
- a rebuild shows its progress and ETA (from a fixed /projections answer in the browser).

Writes a screenshot of each page into --out and prints each path with what it shows.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run"]
# generous: the machine may be loaded (2 cores shared by builds and other suites)
WAIT_S = 120


def until(what, check, wait_s=WAIT_S, every_s=0.25):
    """Polls `check` until it returns a true value, which is returned; fails after wait_s."""
    deadline = time.monotonic() + wait_s
    last = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # a page mid-render: try again
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {wait_s}s waiting for {what} (last error: {last})")
        time.sleep(every_s)


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202, f"{url}: {response.status}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--console", required=True, help="the console's URL")
    parser.add_argument("--key", required=True, help="the read API key")
    parser.add_argument("--write", required=True, help="the write side's base URL")
    parser.add_argument("--order", required=True)
    parser.add_argument("--customer", required=True)
    parser.add_argument("--word", required=True, help="a word only this order's item name has")
    parser.add_argument("--out", required=True, help="folder for the screenshots")
    a = parser.parse_args()
    os.makedirs(a.out, exist_ok=True)
    errors = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS, timeout=WAIT_S * 1000)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(WAIT_S * 1000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        # console errors too (a content security policy violation shows there), except the
        # answers the checks cause on purpose (401 before the key, 404 while a view is unknown)
        page.on("console", lambda message: message.type == "error"
                and not message.text.startswith("Failed to load resource")
                and errors.append(message.text))

        def go(action):
            """Runs `action` (a click or a goto that changes the hash), then waits until the page
            of the new route is rendered; raises with the page's message if it failed."""
            before = page.evaluate("location.hash")
            action()
            # polled from here: wait_for_function compiles its predicate in the page, which the
            # console's content security policy (no eval) forbids
            until(f"the page after {before} to render", lambda: page.evaluate(
                """before => { const main = document.querySelector('main');
                    return location.hash !== before && main.dataset.route === location.hash
                        && main.dataset.ready !== 'false'; }""", before), every_s=0.1)
            if page.evaluate("document.querySelector('main').dataset.ready") == "error":
                raise AssertionError(f"{page.evaluate('location.hash')}: {page.inner_text('#message')}")

        def shot(name, what):
            # the order's item name is hostile markup: it must stay text on every page
            assert page.locator("main img").count() == 0, f"{name}: event data became markup"
            assert page.evaluate("window.pwned") is None, f"{name}: event data ran as a script"
            stray = page.evaluate("""[...document.querySelectorAll('main, main *')].flatMap(e => [...e.childNodes])
                .filter(n => n.nodeType === 3 && /^(null|undefined|NaN|\\[object Object\\])$/.test(n.textContent.trim()))
                .map(n => n.parentElement.tagName)""")
            assert not stray, f"{name}: a missing value shown as text in {stray}"
            path = os.path.abspath(os.path.join(a.out, name + ".png"))
            page.screenshot(path=path, full_page=True)
            print(f"screenshot {path}: {what}", flush=True)

        # no key yet: the console says it needs one
        page.goto(a.console + "#/events")
        page.locator("#message").filter(has_text="API key").wait_for()
        page.fill("#api-key", a.key)
        # the 401 left the page in error: it is done once it shows the events with the key
        assert page.evaluate("document.querySelector('main').dataset.ready") == "error"
        page.click("#auth button[type=submit]")
        until("the events with the key", lambda: page.evaluate(
            "document.querySelector('main').dataset.ready") == "true", every_s=0.1)

        # text search finds the fresh order's event (searching again until it is indexed)
        row = page.locator(f'#events tr.event[data-key="{a.order}"]')

        def search():
            page.fill('#event-search input[name="q"]', a.word)
            go(lambda: page.click('#event-search button[type="submit"]'))
            return row.count() > 0
        until(f"a search for {a.word} to list {a.order}", search, every_s=1)
        assert row.count() == 1, f"{row.count()} rows for {a.order}"
        assert row.first.get_attribute("data-type") == "OrderPlaced", row.first.get_attribute("data-type")
        text = row.first.locator("td.text").inner_text()
        assert "<img" in text and a.word in text, f"payload cell: {text}"
        shot("events", f"the event viewer: a text search for {a.word} finds {a.order}'s OrderPlaced, "
                       "its hostile item name shown as text")

        # the key's timeline, oldest first
        steps = page.locator("#timeline li.step")
        go(lambda: row.first.locator("td.key a").click())
        types = [steps.nth(i).get_attribute("data-type") for i in range(steps.count())]
        assert types == ["OrderPlaced", "OrderShipped"], f"timeline of {a.order}: {types}"
        assert page.inner_text("#timeline-key") == a.order
        shot("timeline", f"the timeline of key {a.order}: OrderPlaced then OrderShipped")

        # the key's events as a list, one per page: newest first, older ones through the cursor
        go(lambda: page.goto(a.console + f"#/events?key={a.order}&limit=1"))
        listed = page.locator("#events tr.event")
        assert listed.count() == 1 and listed.first.get_attribute("data-type") == "OrderShipped", \
            f"newest first: {listed.count()} rows, {listed.first.get_attribute('data-type')}"
        go(lambda: page.click("#older"))
        assert listed.count() == 1 and listed.first.get_attribute("data-type") == "OrderPlaced", \
            f"older page: {listed.count()} rows, {listed.first.get_attribute('data-type')}"
        assert page.locator("#older").count() == 0, "a third page of two events"
        assert page.locator("#newest").count() == 1

        # one event: payload, headers, what each projector did
        go(lambda: page.goto(a.console + f"#/timeline?key={a.order}"))
        go(lambda: steps.first.locator(".type a").click())
        assert page.inner_text("#event-type") == "OrderPlaced"
        assert a.word in page.inner_text("#payload")
        assert "event_id" in page.inner_text("#headers")
        reached = page.inner_text("#reached")
        for projector in ["event_index", "order_summary"]:
            assert projector in reached, f"{projector} missing from the trail: {reached}"
        shot("event", f"{a.order}'s OrderPlaced: decoded payload, headers, and the projectors it reached")

        # the poison record: dead-lettered, counted, with the commands that list and redrive it
        go(lambda: page.goto(a.console + "#/projections"))
        letters = page.locator('#projection-table tr[data-projector="event_index"] [data-field="dead_letters_pending"]')
        letters.first.wait_for()
        assert letters.first.inner_text() == "1 pending", letters.first.inner_text()
        commands = page.inner_text('#projection-table tr[data-projector="event_index"]')
        for command in ["factline dlq list --projector event_index", "factline dlq redrive --projector event_index"]:
            assert command in commands, f"{command} not shown: {commands}"

        # the stopped projector's lag grows as orders keep coming
        # (still on the projections page, which refreshes itself)
        lag = page.locator('#projection-table tr[data-projector="order_summary"] td[data-field="lag_events"]')

        def lag_now():
            text = lag.first.inner_text().strip()
            return int(text) if re.fullmatch(r"[0-9]+", text) else None
        before = until("order_summary's lag to be known", lambda: lag_now() is not None and (lag_now(),))[0]
        for i in range(3):
            post(f"{a.write}/commands/PlaceOrder", {
                "order_id": f"{a.order}-more-{i}", "customer_id": a.customer, "currency": "EUR",
                "items": [{"sku": "sku-1", "name": "more tea", "quantity": 1, "unit_price_cents": 100}],
                "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1",
                                     "country": "GB"}})
        after = until(f"order_summary's lag to grow past {before}",
                      lambda: (lag_now() or 0) > before and lag_now())
        print(f"order_summary lag on the page: {before} events before, {after} after 3 more orders",
              flush=True)
        shot("projections", f"projections: order_summary stopped, its lag grown from {before} to {after} events")

        # a declarative view, browsed
        tries = iter(range(1_000_000))

        def view_lists_customer():
            # a new hash each time, so the page queries again
            go(lambda: page.goto(a.console + f"#/models?model=view%3Acustomer_directory&try={next(tries)}"))
            return page.locator("#model-rows").filter(has_text=a.customer).count() > 0
        until(f"the customer_directory view to list {a.customer}", view_lists_customer, every_s=1)
        shot("models", f"read models: the customer_directory view lists {a.customer}")

        # a rebuild's progress and ETA, from a fixed /projections answer (a real rebuild is
        # covered by the read API's rebuild tests; this checks how the page shows one)
        building = {"projections": [{"name": "order_summary", "serving_version": 1, "versions": [
            {"version": 1, "state": "live", "serving": True, "sink": "postgres", "topics": ["orders"],
             "read_models": ["order_summary"], "lag_events": 0, "lag_seconds": 0.0, "positions": [],
             "rebuild": None, "dead_lettered": 0, "dead_letters_pending": 0},
            {"version": 2, "state": "building", "serving": False, "sink": "postgres", "topics": ["orders"],
             "read_models": ["order_summary_v2"], "lag_events": 750, "lag_seconds": 12.5, "positions": [],
             "rebuild": {"events_done": 250, "events_total": 1000, "eta_seconds": 90,
                         "progress_at": "2026-11-26T10:00:00Z"},
             "dead_lettered": 0, "dead_letters_pending": 0}]}],
            "read_at": "2026-11-26T10:00:00Z"}
        page.route("**/projections", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(building)))
        go(lambda: page.goto(a.console + "#/projections?fixture=rebuild"))
        rebuild = page.locator('#projection-table tr[data-projector="order_summary"][data-version="2"]')
        until("the rebuild row", lambda: rebuild.count() == 1)
        text = rebuild.inner_text()
        assert "250 / 1000 events (25 %)" in text and "ETA 1 min 30 s" in text, text
        assert rebuild.locator("progress").get_attribute("value") == "25.0"
        shot("projections-rebuild", "projections, from a fixed /projections answer: order_summary v2 "
                                    "building, 250 of 1000 events, ETA 1 min 30 s")
        page.unroute("**/projections")

        browser.close()
    assert not errors, f"errors in the page: {errors}"
    print("console checks passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"console check failed: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
