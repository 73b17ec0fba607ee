"""A third-party client for hubcast's tests: Python `websockets`.

Usage: client.py URL COUNT [CA_FILE]
Connects (for a wss:// URL, trusting only the certificate authority in CA_FILE), prints "ready", receives COUNT messages, sends one of its own, waits for its
echo (chat behaviour), closes normally, and prints a JSON summary on the last line.
"""
import asyncio
import json
import ssl
import sys

import websockets


async def main(url: str, count: int, ca_file: str | None) -> None:
    tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
    async with websockets.connect(url, max_size=2**21, ssl=tls) as ws:
        print("ready", flush=True)
        got = [await ws.recv() for _ in range(count)]
        await ws.send("py:hello")
        echo = await ws.recv()
        await ws.close(1000)
        print(json.dumps({"received": got, "echo": echo, "close_code": ws.close_code}), flush=True)


ca = sys.argv[3] if len(sys.argv) > 3 else None
asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2]), ca), timeout=30))
