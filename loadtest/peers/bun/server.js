// Bun peer: Bun.serve's native WebSocket pub/sub (uWebSockets inside).
// Protocol: see ../README.md. Run: PORT=8080 bun server.js
// PER_MESSAGE_DEFLATE=1 turns Bun's permessage-deflate on (`perMessageDeflate: true`;
// off by default, as in Bun), for the compression comparison in docs/benchmarks.md.
const port = Number(process.env.PORT || 8080);
const perMessageDeflate = process.env.PER_MESSAGE_DEFLATE === "1";

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,

  async fetch(req, server) {
    const url = new URL(req.url);

    if (url.pathname === "/ws") {
      const topics = url.searchParams.getAll("topic");
      if (topics.length === 0) topics.push("default");
      if (server.upgrade(req, { data: { topics } })) return;
      return new Response("expected a WebSocket upgrade", { status: 400 });
    }

    if (req.method === "POST" && url.pathname.startsWith("/publish/")) {
      const topic = decodeURIComponent(url.pathname.slice("/publish/".length));
      const body = await req.text();
      const recipients = server.subscriberCount(topic);
      server.publish(topic, body);
      return Response.json({ recipients });
    }

    return new Response("not found", { status: 404 });
  },

  websocket: {
    perMessageDeflate,
    open(ws) {
      for (const topic of ws.data.topics) ws.subscribe(topic);
    },
    // A string is a text message, a Buffer a binary one; publish keeps that.
    // server.publish (unlike ws.publish) includes the sender.
    message(ws, message) {
      for (const topic of ws.data.topics) server.publish(topic, message);
    },
  },
});

console.log(
  `bun ${Bun.version} listening on ${server.hostname}:${server.port}` +
    (perMessageDeflate ? " (permessage-deflate on)" : ""),
);
