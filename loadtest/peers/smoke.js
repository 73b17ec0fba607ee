// Protocol smoke test for a running peer (or hubcast): node smoke.js PORT
// Exits 0 and prints "smoke ok" when every check passes.
"use strict";

const http = require("http");
const assert = require("assert");
const WebSocket = require("ws");

const port = Number(process.argv[2] || process.env.PORT || 8080);
const base = `ws://127.0.0.1:${port}/ws`;

function connect(query) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + query);
    ws.got = [];
    ws.on("message", (data, isBinary) => ws.got.push({ text: data.toString(), isBinary }));
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function publish(topic, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method: "POST", path: `/publish/${topic}` },
      (res) => {
        let s = "";
        res.on("data", (c) => (s += c));
        res.on("end", () => resolve({ status: res.statusCode, body: s }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const clear = (...wss) => wss.forEach((w) => (w.got = []));

(async () => {
  const a = await connect("?topic=t1");
  const b = await connect("?topic=t1");
  const c = await connect("?topic=t2");
  const d = await connect("");
  const e = await connect("?topic=t2&topic=t3");
  await sleep(200); // let every server finish registering

  a.send("hello"); // text
  await sleep(300);
  assert.deepStrictEqual(a.got, [{ text: "hello", isBinary: false }], "sender gets its own message");
  assert.deepStrictEqual(b.got, [{ text: "hello", isBinary: false }], "same topic gets it");
  assert.deepStrictEqual(c.got, [], "other topic does not");
  assert.deepStrictEqual(d.got, [], "default topic does not");
  assert.deepStrictEqual(e.got, [], "other topics do not");
  clear(a, b, c, d, e);

  b.send(Buffer.from("bin")); // binary keeps its opcode
  await sleep(300);
  assert.deepStrictEqual(a.got, [{ text: "bin", isBinary: true }], "binary stays binary");
  assert.deepStrictEqual(c.got, [], "binary not to other topic");
  clear(a, b, c, d, e);

  let r = await publish("t2", "pub");
  await sleep(300);
  assert.strictEqual(r.status, 200);
  assert.strictEqual(JSON.parse(r.body).recipients, 2, `publish answer: ${r.body}`);
  assert.deepStrictEqual(c.got, [{ text: "pub", isBinary: false }], "publish reaches t2");
  assert.deepStrictEqual(e.got, [{ text: "pub", isBinary: false }], "publish reaches multi-topic client");
  assert.deepStrictEqual(a.got, [], "publish not to t1");
  clear(a, b, c, d, e);

  r = await publish("t3", "three");
  await sleep(300);
  assert.strictEqual(JSON.parse(r.body).recipients, 1, `publish answer: ${r.body}`);
  assert.deepStrictEqual(e.got, [{ text: "three", isBinary: false }], "second topic of a client works");
  assert.deepStrictEqual(c.got, [], "t3 publish not to t2");
  clear(a, b, c, d, e);

  r = await publish("default", "dflt");
  await sleep(300);
  assert.strictEqual(JSON.parse(r.body).recipients, 1, `publish answer: ${r.body}`);
  assert.deepStrictEqual(d.got, [{ text: "dflt", isBinary: false }], "no ?topic means default");
  assert.deepStrictEqual(a.got, [], "default publish not to t1");

  r = await publish("nobody", "x");
  assert.strictEqual(JSON.parse(r.body).recipients, 0, `publish answer: ${r.body}`);

  // A closed client is forgotten: publish counts drop.
  await new Promise((res) => { c.once("close", res); c.close(); });
  await sleep(300);
  r = await publish("t2", "after-close");
  await sleep(200);
  assert.strictEqual(JSON.parse(r.body).recipients, 1, `after close: ${r.body}`);

  for (const w of [a, b, d, e]) w.close();
  console.log("smoke ok");
  process.exit(0);
})().catch((err) => {
  console.error("smoke FAILED:", err.message);
  process.exit(1);
});
