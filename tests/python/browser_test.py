"""The demo page and /hubcast.js in headless Chromium, driven by Playwright.

Run by tests/browser.rs as `python browser_test.py http://127.0.0.1:PORT` against a
server with history and compression. Exits 0 when every check passes; prints what failed otherwise
(plus the page's state and log). Every wait is a Playwright wait bounded by TIMEOUT_MS:
no fixed sleeps.

Steps: subscribe through the page; messages published over HTTP appear with their
offsets; the connection is dropped (the client's test hook) while the browser is
offline, so reconnect attempts fail and 5 messages are published while it is down;
back online, the client reconnects by itself, resubscribes with `since`, and the page
shows the 5 missed messages (offsets consecutive) and "recovered". Then a publish from
the page, dropping the topic, and permessage-deflate: Chromium negotiated it, and a large
message reaches the page compressed and intact.
"""

import json
import re
import os
import sys
import tempfile
import urllib.parse
import urllib.request

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000
TOPIC = "browser/ü"  # a slash and non-ASCII: percent-encoded in URLs, plain in the page

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sys.exit(
        "Playwright for Python is not installed in this interpreter "
        f"({sys.executable}): run the tests through scripts/test, which installs it "
        "(pip install -r tests/python/requirements.txt)"
    )
if not os.path.exists(CHROMIUM):
    sys.exit(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)")


def http_publish(base, topic, body):
    """POST /publish/{topic}; returns the offset the server assigned."""
    url = f"{base}/publish/{urllib.parse.quote(topic, safe='')}"
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=TIMEOUT_MS / 1000) as resp:
        return json.load(resp)["offset"]


def metric(base, name):
    """One value from GET /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=TIMEOUT_MS / 1000) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
    raise AssertionError(f"metric {name} missing")


# The (offset, text) of every logged message of a topic, in log order.
MESSAGES_JS = """topic => Array.from(document.querySelectorAll('#log .msg'))
    .filter(e => e.dataset.topic === topic)
    .map(e => [Number(e.dataset.offset), e.querySelector('.where').nextSibling.textContent])"""


def wait_messages(page, topic, offsets):
    """Waits until the log holds exactly `offsets` for `topic`; returns (offset, text)s."""
    page.wait_for_function(
        f"([topic, want]) => JSON.stringify(({MESSAGES_JS})(topic).map(m => m[0]))"
        " === JSON.stringify(want)",
        arg=[topic, offsets],
    )
    return [tuple(m) for m in page.evaluate(MESSAGES_JS, topic)]


def run(page, context, base):
    state = page.locator("#state")
    row = page.locator(f'#topics tr[data-topic="{TOPIC}"]')
    live = re.compile(r"\blive\b")

    with urllib.request.urlopen(f"{base}/hubcast.js", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"

    page.goto(f"{base}/")
    expect(state).to_have_attribute("data-state", "open")
    print("ok: page loaded and connected")

    # Subscribe through the UI.
    page.fill("#topic", TOPIC)
    page.click("#add")
    expect(row).to_have_class(live)
    expect(row.locator(".offset")).to_have_text("0")
    expect(row.locator(".count")).to_have_text("1")  # presence, refreshed by the page
    print("ok: subscribed through the page; presence shows 1 subscriber")

    # Live messages, with their offsets.
    sent = [http_publish(base, TOPIC, json.dumps({"n": n})) for n in (1, 2, 3)]
    assert sent == [1, 2, 3], sent
    got = wait_messages(page, TOPIC, [1, 2, 3])
    assert got == [(n, json.dumps({"n": n}, separators=(",", ":"))) for n in (1, 2, 3)], got
    expect(row.locator(".offset")).to_have_text("3")
    print("ok: live messages 1-3 shown with their offsets")

    # Lose the connection while offline: reconnect attempts fail until back online.
    context.set_offline(True)
    page.evaluate("window.hubcastClient._dropForTest()")
    expect(state).not_to_have_attribute("data-state", "open")
    expect(row).not_to_have_class(live)
    missed = [http_publish(base, TOPIC, json.dumps({"n": n})) for n in range(4, 9)]
    assert missed == [4, 5, 6, 7, 8], missed
    # Offline, the client cannot have reconnected: the 5 messages were missed.
    assert page.get_attribute("#state", "data-state") != "open"
    assert [m[0] for m in page.evaluate(MESSAGES_JS, TOPIC)] == [1, 2, 3]
    print(f"ok: connection dropped; published 4-8 while down ({state.text_content()})")

    context.set_offline(False)
    expect(state).to_have_attribute("data-state", "open")
    expect(row.locator(".recovery")).to_have_text("recovered")
    got = wait_messages(page, TOPIC, list(range(1, 9)))
    assert got[3:] == [(n, json.dumps({"n": n}, separators=(",", ":"))) for n in range(4, 9)], got
    expect(row.locator(".offset")).to_have_text("8")
    print("ok: reconnected by itself; 4-8 replayed in order; page shows 'recovered'")

    # Publish from the page.
    page.select_option("#publish-topic", TOPIC)
    page.fill("#publish-text", '{"from": "page"}')
    page.click("#publish")
    got = wait_messages(page, TOPIC, list(range(1, 10)))
    assert got[8] == (9, '{"from":"page"}'), got
    expect(page.locator("#log .meta").filter(has_text=f"published to {TOPIC} at #9")).to_have_count(1)
    print("ok: published from the page (offset 9)")

    # Drop the topic: once unsubscribed, its messages no longer reach the page. A marker
    # published to `default` afterwards (same publisher, so delivered after) proves it.
    row.locator(".drop").click()
    expect(row).to_have_count(0)
    expect(page.locator("#log .meta").filter(has_text=f"unsubscribed from {TOPIC}")).to_have_count(1)
    assert http_publish(base, TOPIC, '"after drop"') == 10
    marker = http_publish(base, "default", '"marker"')
    wait_messages(page, "default", [marker])
    assert [m[0] for m in page.evaluate(MESSAGES_JS, TOPIC)] == list(range(1, 10))
    print("ok: dropped the topic; nothing more of it arrives")

    # permessage-deflate: Chromium offered it and the server agreed (the page's one
    # connection is counted); a large message goes out compressed — once, as the v1 push
    # the page gets — and shows intact. Integers and strings only, so that the page's
    # JSON.stringify gives back exactly these bytes.
    assert metric(base, "hubcast_deflate_connections") == 1
    quotes = [{"id": i, "symbol": "EURUSD", "bid": f"1.08{i:02d}"} for i in range(60)]
    big = json.dumps({"quotes": quotes}, separators=(",", ":"))
    compressed_before = metric(base, "hubcast_deflate_messages_total")
    offset = http_publish(base, "default", big)
    got = wait_messages(page, "default", [marker, offset])
    assert got[-1] == (offset, big), got[-1][1][:100]
    assert metric(base, "hubcast_deflate_messages_total") == compressed_before + 1
    # Chromium compresses what it sends too (its subscribe and publish commands above):
    # hubcast inflated them.
    inflated = metric(base, "hubcast_inflated_messages_total")
    assert inflated > 0, inflated
    print(f"ok: deflate negotiated; a {len(big)} B message arrived compressed and intact; "
          f"{inflated} compressed commands from the page were inflated")


def dump(page, errors):
    """What the page showed, for the failure report."""
    print("--- page errors:", errors, file=sys.stderr)
    for what in ("#state", "#topics", "#log"):
        try:
            print(f"--- {what}:\n{page.inner_text(what, timeout=2000)}", file=sys.stderr)
        except Exception as e:  # the page may be gone: report what is left
            print(f"--- {what}: unavailable ({e})", file=sys.stderr)


def in_chromium(test, report=None):
    """Runs `test(page, context)` in a fresh headless Chromium profile; fails on any
    error the page raised. `report(page, errors)` explains a failure."""
    errors = []
    with tempfile.TemporaryDirectory(prefix="hubcast-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            test(page, context)
            assert not errors, f"errors in the page: {errors}"
        except BaseException:
            if report:
                report(page, errors)
            raise
        finally:
            context.close()


def main():
    base = sys.argv[1].rstrip("/")
    expect.set_options(timeout=TIMEOUT_MS)
    in_chromium(lambda page, context: run(page, context, base), dump)
    print("browser test passed")


if __name__ == "__main__":
    main()
