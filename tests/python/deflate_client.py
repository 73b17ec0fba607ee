"""permessage-deflate with a third-party client: Python `websockets`, which offers the
extension by default and, once it is agreed, compresses every message it sends (with
context takeover: a message may refer back to earlier ones).

Usage: deflate_client.py URL COUNT [v1]
Connects, prints "ready", receives COUNT messages. Plain mode then sends a large JSON
message in three fragments (one compressed message: RSV1 on the first frame only),
sends it again whole (compressed against the first: context takeover), waits for both
echoes (chat behaviour), closes normally. v1 mode offers `hubcast.v1` and only
receives. The last line printed is a JSON summary, with the extension the server's 101
agreed to.
"""
import asyncio
import json
import sys

import websockets


async def main(url: str, count: int, v1: bool) -> None:
    extra = {"subprotocols": ["hubcast.v1"]} if v1 else {}
    # compression="deflate" is the library's default: stated here because it is the point.
    async with websockets.connect(url, compression="deflate", max_size=2**21, **extra) as ws:
        print("ready", flush=True)
        got = [await ws.recv() for _ in range(count)]
        sent, echoes = [], []
        if not v1:
            big = json.dumps([{"id": i, "symbol": "EURUSD", "bid": 1.08 + i / 1e4} for i in range(200)])
            await ws.send([big[:1000], big[1000:2000], big[2000:]])  # one message, three frames
            await ws.send(big)
            sent = [big, big]
            echoes = [await ws.recv() for _ in sent]
        await ws.close(1000)
        print(
            json.dumps(
                {
                    "received": got,
                    "sent": sent,
                    "echoes": echoes,
                    "extensions": ws.response.headers.get("Sec-WebSocket-Extensions"),
                    "close_code": ws.close_code,
                }
            ),
            flush=True,
        )


asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["v1"]), timeout=30))
