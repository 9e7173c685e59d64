// The web listener from outside a browser: the page and its assets under a
// strict Content-Security-Policy, and the Origin check on /ws.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import WebSocket from "ws";
import { skipReason, startServer } from "./support.js";

const skip = skipReason({ browser: false });

let server;

before(async () => {
  if (skip) return;
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

/**
 * Opens /ws with `headers`; resolves with the HTTP status of a refused
 * upgrade, or with the open socket and the subprotocol selected.
 */
function upgrade(headers) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.webPort}/ws`, "anteroom.v1", { headers });
    ws.binaryType = "nodebuffer";
    ws.once("open", () => resolve({ ws, protocol: ws.protocol }));
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode });
      ws.terminate();
    });
    ws.once("error", reject);
  });
}

/** Joins over an open WebSocket and expects `welcome`. */
async function joins(ws, name) {
  const welcome = new Promise((resolve) => ws.once("message", (data, isBinary) => resolve({ frame: decode(data), isBinary })));
  ws.send(encode({ type: "hello", name }));
  const { frame, isBinary } = await welcome;
  assert.equal(isBinary, true, "server frames are binary messages");
  assert.equal(frame.type, "welcome");
  assert.equal(frame.name, name);
  const closed = new Promise((resolve) => ws.once("close", resolve));
  ws.send(encode({ type: "bye" }));
  await closed;
}

test("an upgrade from another origin is refused with 403", { skip: skip ?? false }, async () => {
  const refused = await upgrade({ Origin: "http://evil.example" });
  assert.equal(refused.status, 403);
  // The same host name on another port is another origin.
  const otherPort = await upgrade({ Origin: `http://127.0.0.1:${server.webPort + 1}` });
  assert.equal(otherPort.status, 403);
});

test("an upgrade without Origin (not a browser) is accepted", { skip: skip ?? false }, async () => {
  const { ws, protocol } = await upgrade({});
  assert.equal(protocol, "anteroom.v1");
  await joins(ws, "tool");
});

test("an upgrade from the listener's own origin is accepted", { skip: skip ?? false }, async () => {
  const { ws, protocol } = await upgrade({ Origin: `http://127.0.0.1:${server.webPort}` });
  assert.equal(protocol, "anteroom.v1");
  await joins(ws, "page");
});

test("the page and its assets are served with a strict policy", { skip: skip ?? false }, async () => {
  const page = await fetch(server.url);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /^text\/html/);
  const csp = page.headers.get("content-security-policy") ?? "";
  for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"]) {
    assert.ok(csp.includes(directive), `${directive} in ${csp}`);
  }
  const html = await page.text();
  assert.match(html, /<script src="app.js" defer><\/script>/);
  assert.doesNotMatch(html, /<style|style=|<script>/, "nothing inline");
  for (const [file, type] of [
    ["app.js", /javascript/],
    ["app.css", /^text\/css/],
    ["favicon.svg", /^image\/svg\+xml/],
  ]) {
    const res = await fetch(`${server.url}${file}`);
    assert.equal(res.status, 200, file);
    assert.match(res.headers.get("content-type"), type, file);
    await res.arrayBuffer();
  }
});
