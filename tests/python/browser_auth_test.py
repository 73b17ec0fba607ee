"""/hubcast.js with JWT auth in headless Chromium, driven by Playwright.

Run by tests/browser.rs as `python browser_auth_test.py http://127.0.0.1:PORT SECRET`
against a server started with `--jwt-secret SECRET` (HS256) and history. Exits 0 when
every check passes. Every wait is bounded by TIMEOUT_MS: no fixed sleeps.

Steps: a client whose `token` option is a function (answered from Python, each token
valid for 4 s) connects — the token goes as the first command, never in the URL —
subscribes and receives; it outlives its first tokens by refreshing them before their
`exp` (no reconnect, messages keep arriving after the first token expired); a client
with a badly signed token is refused (onAuthError, code 111) and never opens.
"""

import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.parse
import urllib.request

from browser_test import TIMEOUT_MS, in_chromium

TOPIC = "auth.feed"
LIFETIME_S = 4


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256(secret, claims):
    """A JWT signed with HS256 (RFC 7519), made here with the standard library."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def http_publish(base, secret, topic, body):
    """POST /publish/{topic} with a token granting publish."""
    token = hs256(secret, {"sub": "publisher", "exp": int(time.time()) + 60, "publish": ["*"]})
    url = f"{base}/publish/{urllib.parse.quote(topic, safe='')}"
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=TIMEOUT_MS / 1000) as resp:
        return json.load(resp)["offset"]


SETUP_JS = """([topic]) => {
  window.seen = []; window.states = []; window.authErrors = [];
  window.hc = new Hubcast("/ws", {
    token: () => window.nextToken(),
    onState: (s) => window.states.push(s),
    onAuthError: (e) => window.authErrors.push(e.code),
  });
  window.hc.subscribe(topic, { onMessage: (data) => window.seen.push(data) });
}"""

BAD_JS = """() => {
  window.badStates = []; window.badErrors = [];
  window.bad = new Hubcast("/ws", {
    token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.bm90LWEtc2ln",
    onState: (s) => window.badStates.push(s),
    onAuthError: (e) => window.badErrors.push(e.code),
  });
}"""


def run(page, base, secret):
    issued = []

    def next_token():
        exp = int(time.time()) + LIFETIME_S
        issued.append(exp)
        return hs256(secret, {"sub": "alice", "exp": exp, "topics": ["auth.*"]})

    # A same-origin page that is not the demo (whose own client has no token).
    page.goto(f"{base}/healthz")
    page.add_script_tag(url=f"{base}/hubcast.js")
    page.expose_function("nextToken", next_token)
    page.evaluate(SETUP_JS, [TOPIC])
    page.wait_for_function("window.states.includes('open')")
    assert "token=" not in page.evaluate("window.hc.url"), "the token stays out of the URL"
    page.wait_for_function(f"() => window.hc.subs.get({json.dumps(TOPIC)}).live")
    http_publish(base, secret, TOPIC, json.dumps({"n": 1}))
    page.wait_for_function("window.seen.length === 1")
    print("ok: connected with a token from a function, subscribed, received")

    # Outlive the first token: wait until it has expired (by the server's clock too:
    # one more second), then publish again.
    first_exp = issued[0]
    page.wait_for_function(
        f"() => Date.now() / 1000 > {first_exp + 1}", timeout=(LIFETIME_S + 5) * 1000
    )
    http_publish(base, secret, TOPIC, json.dumps({"n": 2}))
    page.wait_for_function("window.seen.length === 2")
    states = page.evaluate("window.states")
    assert states.count("open") == 1 and "reconnecting" not in states, states
    assert len(issued) >= 2, f"the token was refreshed before its exp: {issued}"
    assert page.evaluate("window.authErrors") == []
    print(f"ok: refreshed {len(issued) - 1} time(s); still the first connection after exp")

    page.evaluate(BAD_JS)
    page.wait_for_function("window.badErrors.length > 0")
    assert page.evaluate("window.badErrors")[0] == 111
    assert "open" not in page.evaluate("window.badStates")
    page.evaluate("window.bad.close()")
    # The good client was not disturbed.
    http_publish(base, secret, TOPIC, json.dumps({"n": 3}))
    page.wait_for_function("window.seen.length === 3")
    print("ok: a badly signed token is refused (111) and never opens")


def main():
    base, secret = sys.argv[1].rstrip("/"), sys.argv[2]
    in_chromium(lambda page, _context: run(page, base, secret))
    print("browser auth test passed")


if __name__ == "__main__":
    main()
