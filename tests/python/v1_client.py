"""A protocol v1 client built on Python's `websockets` (a third-party implementation):
subscribes, reads a few pushes, drops the connection, reconnects with `since` while the
server keeps publishing, and checks the offsets it then gets are one unbroken run.

Usage: v1_client.py WS_URL TOPIC N. Prints one JSON summary line; exits 1 on a check
that fails.
"""

import asyncio
import json
import sys

import websockets


async def call(ws, msg):
    await ws.send(json.dumps(msg))
    pushes = []
    while True:
        m = json.loads(await ws.recv())
        if "id" in m:
            assert m["id"] == msg["id"], m
            return m, pushes
        pushes.append(m)


async def main(url, topic, n):
    async with websockets.connect(url, subprotocols=["hubcast.v1"]) as ws:
        assert ws.subprotocol == "hubcast.v1", ws.subprotocol
        reply, _ = await call(ws, {"id": 1, "subscribe": {"topic": topic}})
        epoch = reply["result"]["epoch"]
        last = reply["result"]["offset"]
        print("subscribed", flush=True)
        for _ in range(n):
            push = json.loads(await ws.recv())
            assert push["offset"] == last + 1, (push, last)
            last = push["offset"]
    # The connection is gone; the server keeps publishing. Reconnect and recover.
    async with websockets.connect(url, subprotocols=["hubcast.v1"]) as ws:
        reply, early = await call(
            ws,
            {"id": 2, "subscribe": {"topic": topic, "since": {"offset": last, "epoch": epoch}}},
        )
        assert not early, early
        result = reply["result"]
        assert result["recovered"] is True, reply
        top = result["offset"]
        got = []
        while len(got) < (top - last) + n:
            push = json.loads(await ws.recv())
            got.append(push["offset"])
        assert got == list(range(last + 1, last + 1 + len(got))), got[:10]
        bad, _ = await call(ws, {"id": 3, "unsubscribe": {"topic": "never"}})
        print(
            json.dumps(
                {
                    "recovered": result["recovered"],
                    "missed": top - last,
                    "received": len(got),
                    "error": bad["error"]["code"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
