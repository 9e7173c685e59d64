// Presence in batches: the page applies each `presence` frame to the roster
// (departures first, then arrivals) and says it in one notice, while a page
// whose server does not batch still follows each `joined` and `left`.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import {
  TcpClient,
  enterRoom,
  entries,
  eventually,
  launchBrowser,
  recordFrames,
  roster,
  seeEntry,
  skipReason,
  startServer,
} from "./support.js";

const skip = skipReason();

let server;
let browser;

before(async () => {
  if (skip) return;
  // Long enough for several changes to fall into one frame.
  server = await startServer({ env: { ANTEROOM_PRESENCE_INTERVAL: "2s" } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * Opens a page whose WebSocket passes through the test: with `batches`
 * false its `hello` does not ask for `presence_batch` (as with a server that
 * does not offer it); `inject(frame)` hands the page a frame of the test's own.
 */
async function openRouted(url, { batches = true } = {}) {
  const page = await browser.context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") browser.problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => browser.problems.push(`page error: ${error.message}`));
  let socket = null;
  await page.routeWebSocket(/\/ws$/, (ws) => {
    socket = ws;
    const upstream = ws.connectToServer();
    ws.onMessage((message) => {
      const frame = decode(message);
      if (frame.type === "hello" && !batches) {
        frame.features = frame.features.filter((f) => f !== "presence_batch");
      }
      upstream.send(Buffer.from(encode(frame)));
    });
  });
  await page.goto(url);
  return { page, inject: (frame) => socket.send(Buffer.from(encode(frame))) };
}

/** Joins over TCP, trying again while the server still holds the name of a connection just closed. */
async function joinAgain(name) {
  for (let tries = 0; ; tries += 1) {
    try {
      return await TcpClient.join(server.port, name);
    } catch (error) {
      if (tries >= 20 || !String(error.message).includes("name_taken")) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/** The page's notices, without the `* `. */
async function notices(page) {
  return (await entries(page)).filter((e) => e.startsWith("* ")).map((e) => e.slice(2));
}

test("presence frames change the roster in one step each, next to version-1 members", { skip: skip ?? false }, async () => {
  const ann = await browser.open(server.url);
  const annFrames = recordFrames(ann);
  await enterRoom(ann, "ann");
  const { page: old } = await openRouted(server.url, { batches: false });
  const oldFrames = recordFrames(old);
  await enterRoom(old, "old");
  await eventually("old in ann's roster", async () => (await roster(ann)).join() === "ann,old");
  await seeEntry(ann, "* old joined");
  const granted = annFrames.received.find((f) => f.type === "welcome").features;
  assert.ok(granted.includes("presence_batch"), `granted: ${granted}`);
  assert.ok(!oldFrames.received.find((f) => f.type === "welcome").features.includes("presence_batch"));
  // A version-1 member and one that asks for batches over TCP, next to the pages.
  const tom = await TcpClient.join(server.port, "tom");
  const pia = await TcpClient.join(server.port, "pia", ["presence_batch"]);
  await eventually("tom and pia", async () => (await roster(ann)).join() === "ann,old,tom,pia");

  // Just after a frame, three changes in a row fall into the next one.
  const x = await TcpClient.join(server.port, "x");
  await seeEntry(ann, "* x joined");
  const [bob, carl] = [await TcpClient.join(server.port, "bob"), await TcpClient.join(server.port, "carl")];
  await x.leave();
  await eventually("bob and carl", async () => (await roster(ann)).join() === "ann,old,tom,pia,bob,carl");
  await seeEntry(ann, "* bob, carl joined · x left (bye)");
  const batch = annFrames.received.filter((f) => f.type === "presence").at(-1);
  assert.deepEqual(batch.joined, ["bob", "carl"]);
  assert.deepEqual(batch.left, [{ name: "x", reason: "bye" }]);
  assert.equal(typeof batch.ts, "number");

  // A name that comes and goes within one frame is in neither list; one that
  // goes and comes back is in both, and moves to the end of the roster.
  const dan = await TcpClient.join(server.port, "dan");
  const y = await TcpClient.join(server.port, "y");
  await y.leave();
  await carl.leave();
  const carlAgain = await joinAgain("carl");
  await eventually("dan in, carl at the end", async () => (await roster(ann)).join() === "ann,old,tom,pia,bob,dan,carl");
  await seeEntry(ann, "* carl left (bye) · dan, carl joined");
  assert.ok(!(await notices(ann)).some((n) => /\by\b/.test(n)), "y is not mentioned");

  // Sets, not counts: a frame naming someone already listed, or someone
  // absent, changes nothing and says nothing about them.
  const { page: eve, inject } = await openRouted(server.url);
  await enterRoom(eve, "eve");
  await eventually("eve in ann's roster", async () => (await roster(ann)).join() === "ann,old,tom,pia,bob,dan,carl,eve");
  const full = "ann,old,tom,pia,bob,dan,carl,eve";
  assert.equal((await roster(eve)).join(), full);
  const quiet = (await notices(eve)).length;
  inject({ type: "presence", joined: ["bob", "eve", "bob"], left: [{ name: "ghost", reason: "bye" }], ts: Date.now() });
  inject({ type: "presence", joined: ["zoe"], left: [{ name: "dan", reason: "idle_timeout" }, { name: "tom", reason: "bye" }], ts: Date.now() });
  await seeEntry(eve, "* zoe joined · dan left (idle timeout) · tom left (bye)");
  assert.equal((await roster(eve)).join(), "ann,old,pia,bob,carl,eve,zoe");
  assert.equal((await notices(eve)).length, quiet + 1, "the first frame said nothing");
  await eve.getByRole("button", { name: "Leave" }).click();
  await eventually("eve gone", async () => (await roster(ann)).join() === "ann,old,tom,pia,bob,dan,carl");

  // The page that asked for no batches saw every change as its own notice, in order.
  await eventually("old's roster", async () => (await roster(old)).join() === "ann,old,tom,pia,bob,dan,carl");
  const oldNotices = (await notices(old)).filter((n) => /joined|left/.test(n));
  assert.deepEqual(oldNotices, [
    "tom joined",
    "pia joined",
    "x joined",
    "bob joined",
    "carl joined",
    "x left (bye)",
    "dan joined",
    "y joined",
    "y left (bye)",
    "carl left (bye)",
    "carl joined",
    "eve joined",
    "eve left (bye)",
  ]);
  assert.ok(!oldFrames.received.some((f) => f.type === "presence"), "no presence frames without the feature");
  assert.ok(oldFrames.received.some((f) => f.type === "joined"));

  // The version-1 member got joined and left frames, the batching one presence frames.
  assert.ok(tom.frames.some((f) => f.type === "joined" && f.name === "bob"));
  assert.ok(!tom.frames.some((f) => f.type === "presence"));
  await eventually("pia's batches", async () => pia.frames.some((f) => f.type === "presence" && f.joined.includes("dan")));
  assert.ok(!pia.frames.some((f) => f.type === "joined" || f.type === "left"));

  for (const client of [tom, pia, bob, dan, carlAgain]) client.close();
  await eventually("the room empties", async () => (await roster(ann)).join() === "ann,old");
  await old.getByRole("button", { name: "Leave" }).click();
  await eventually("old gone", async () => (await roster(ann)).join() === "ann");
  await seeEntry(ann, "* old left (bye)");
  assert.deepEqual(browser.problems, []);
});
