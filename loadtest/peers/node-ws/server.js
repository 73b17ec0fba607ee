// Node peer: the `ws` package on a plain `http` server, topics as Sets of sockets.
// Protocol: see ../README.md. Run: PORT=8080 node server.js
"use strict";

const http = require("http");
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.env.PORT || 8080);

/** topic name -> Set of sockets */
const topics = new Map();

function subscribe(ws, topic) {
  let subs = topics.get(topic);
  if (!subs) topics.set(topic, (subs = new Set()));
  subs.add(ws);
}

function unsubscribe(ws, topic) {
  const subs = topics.get(topic);
  if (!subs) return;
  subs.delete(ws);
  if (subs.size === 0) topics.delete(topic);
}

// Send the same message to every open subscriber of `topic`; returns how many got it.
// `data` is a Buffer built once; ws frames it per socket without copying the payload.
function broadcast(topic, data, isBinary) {
  const subs = topics.get(topic);
  if (!subs) return 0;
  let n = 0;
  for (const client of subs) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(data, { binary: isBinary });
      n++;
    }
  }
  return n;
}

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url.startsWith("/publish/")) {
    const topic = decodeURIComponent(req.url.slice("/publish/".length).split("?")[0]);
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const recipients = broadcast(topic, Buffer.concat(chunks), false);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ recipients }));
    });
    return;
  }
  res.writeHead(404).end("not found");
});

const wss = new WebSocketServer({ noServer: true });

server.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname !== "/ws") {
    socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const names = url.searchParams.getAll("topic");
    ws.topics = names.length > 0 ? names : ["default"];
    for (const t of ws.topics) subscribe(ws, t);

    ws.on("message", (data, isBinary) => {
      for (const t of ws.topics) broadcast(t, data, isBinary);
    });
    ws.on("close", () => {
      for (const t of ws.topics) unsubscribe(ws, t);
    });
    ws.on("error", () => {});
  });
});

server.listen(port, "127.0.0.1", () => {
  console.log(`node ${process.version} ws listening on 127.0.0.1:${port}`);
});
