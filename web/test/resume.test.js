// A dropped connection is resumed: the page reconnects with its token, gets
// its seat (or its place in the queue) back, and adds what it missed once;
// the others never see it leave or come back. When the server no longer
// holds the place, the page says so and joins afresh.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  TcpClient,
  enterRoom,
  entries,
  eventually,
  joinAs,
  launchBrowser,
  messages,
  recordFrames,
  roster,
  say,
  seeEntry,
  skipReason,
  sleep,
  startRelay,
  startServer,
} from "./support.js";

const skip = skipReason();

const servers = [];
const relays = [];
let browser;

before(async () => {
  if (skip) return;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const relay of relays) await relay.close();
  for (const server of servers) await server.stop();
});

async function serverWithRelay(env) {
  const server = await startServer({ env });
  servers.push(server);
  const relay = await startRelay(server.webPort);
  relays.push(relay);
  return { server, relay };
}

/** The seconds of `your place is held for N s` in the status line, or null. */
async function heldFor(page) {
  const found = /reconnecting, your place is held for (\d+) s/.exec(await page.locator("#status").textContent());
  return found ? Number(found[1]) : null;
}

/** The refused connections while the relay is down are the only page errors allowed. */
function pageProblems() {
  return browser.problems.filter((p) => !p.includes("WebSocket connection to"));
}

test("a member whose connection drops resumes its seat and sees what it missed, once", { skip: skip ?? false }, async () => {
  const { server, relay } = await serverWithRelay({ ANTEROOM_RESUME_GRACE: "30s" });
  // A version-1 member, to see every join and leave as its own frame.
  const tom = await TcpClient.join(server.port, "tom");

  const ann = await browser.open(relay.url);
  const annFrames = recordFrames(ann);
  await enterRoom(ann, "ann");
  assert.equal((await tom.nextType("joined")).name, "ann");
  const bob = await browser.open(server.url);
  await enterRoom(bob, "bob");
  await eventually("bob in ann's roster", async () => (await roster(ann)).join() === "tom,ann,bob");
  assert.equal((await tom.nextType("joined")).name, "bob");

  await say(ann, "before the drop");
  const said = await tom.next((f) => f.type === "message" && f.text === "before the drop", "ann's message");
  await eventually("ann's echo", async () => (await messages(ann)).includes("<ann> before the drop"));
  const welcome = annFrames.received.find((f) => f.type === "welcome");
  assert.ok(welcome.features.includes("resume"), "resume is granted");
  assert.equal(typeof welcome.resume, "string");

  // The network fails: no close, no bye. The page counts down the held place.
  relay.down();
  relay.cut();
  const status = ann.locator("#status");
  await eventually("the held place", async () => (await heldFor(ann)) !== null);
  assert.match(
    await status.textContent(),
    /^disconnected \(connection closed\); reconnecting, your place is held for \d+ s \(next attempt in [\d.]+ s, attempt \d\)$/,
  );
  assert.equal(await status.getAttribute("data-state"), "retrying");
  await seeEntry(ann, "* disconnected (connection closed); reconnecting, your place is held for 30 s");
  assert.ok((await heldFor(ann)) <= 30);
  const first = await heldFor(ann);
  await eventually("the countdown", async () => {
    const now = await heldFor(ann);
    return now !== null && now < first;
  });
  assert.equal(await ann.locator("#room-screen").isVisible(), true, "the room stays on screen");

  // Meanwhile bob talks; nobody is told that ann left.
  await say(bob, "while ann was away");
  await tom.next((f) => f.type === "message" && f.text === "while ann was away", "bob's message");
  assert.deepEqual(await roster(bob), ["tom", "ann", "bob"]);

  relay.up();
  await eventually("back in the room", async () => (await status.textContent()) === "connected as ann", 20_000);
  await seeEntry(ann, "* reconnected: your place in the room was kept");
  await eventually("the missed message", async () => (await messages(ann)).includes("<bob> while ann was away"));
  assert.deepEqual(await messages(ann), ["<ann> before the drop", "<bob> while ann was away"]);
  const ids = await ann.locator("#log li.message").evaluateAll((items) => items.map((li) => li.dataset.id));
  assert.equal(new Set(ids).size, ids.length, "no message twice");
  assert.deepEqual(await roster(ann), ["tom", "ann", "bob"]);
  const shown = await entries(ann);
  assert.equal(shown.filter((e) => e.startsWith("* Welcome to anteroom!")).length, 1, "no second welcome");
  assert.equal(shown.filter((e) => e.startsWith("* in the room:")).length, 1);
  assert.ok(!shown.some((e) => e.startsWith("* while you were away")), "the room did not change");

  // The hello carried the token and the last message seen; the seat came back.
  const hellos = annFrames.sent.filter((f) => f.type === "hello");
  const resumedHello = hellos.at(-1);
  assert.ok(hellos.length >= 2);
  assert.equal(typeof resumedHello.resume, "string");
  assert.equal(resumedHello.last_id, said.id);
  for (const feature of ["resume", "eta", "presence_batch"]) {
    assert.ok(resumedHello.features.includes(feature), `hello asks for ${feature}`);
  }
  const welcomes = annFrames.received.filter((f) => f.type === "welcome");
  assert.equal(welcomes.at(-1).resumed, true);

  // Alive again: what ann says reaches the others.
  await say(ann, "back");
  await tom.next((f) => f.type === "message" && f.text === "back", "ann's return");
  await eventually("bob sees it", async () => (await messages(bob)).includes("<ann> back"));

  // Bob's page and tom never saw ann leave or join again.
  const seenByBob = await entries(bob);
  assert.ok(!seenByBob.some((e) => /\bann\b.*\b(left|joined)\b/.test(e)), seenByBob.join("\n"));
  tom.send({ type: "who" });
  assert.deepEqual((await tom.nextType("users")).names, ["tom", "ann", "bob"]);
  assert.ok(
    !tom.frames.some((f) => (f.type === "joined" || f.type === "left") && f.name === "ann"),
    JSON.stringify(tom.frames),
  );
  tom.close();
  assert.deepEqual(pageProblems(), []);
});

test("a queued page whose connection drops keeps its place", { skip: skip ?? false }, async () => {
  const { server, relay } = await serverWithRelay({ ANTEROOM_RESUME_GRACE: "30s", ANTEROOM_MAX_ACTIVE: "1" });
  const tom = await TcpClient.join(server.port, "tom");
  const page = await browser.open(relay.url);
  const frames = recordFrames(page);
  await joinAs(page, "cyd");
  const position = page.locator("#queue-position");
  await eventually("queued first", async () => (await position.textContent()) === "1");
  // Zed waits behind cyd.
  const zed = await TcpClient.connect(server.port);
  zed.send({ type: "hello", name: "zed" });
  assert.equal((await zed.nextType("queued")).position, 2);

  relay.down();
  relay.cut();
  await eventually("the held place", async () => (await heldFor(page)) !== null);
  assert.equal(await page.locator("#queue-screen").isVisible(), true, "the queue stays on screen");
  await sleep(1500);
  relay.up();
  await eventually("queued again", async () => (await page.locator("#status").textContent()) === "connected · waiting in the queue", 20_000);
  const resumed = frames.received.filter((f) => f.type === "queued").at(-1);
  assert.equal(resumed.resumed, true);
  assert.equal(resumed.position, 1);
  assert.equal(await position.textContent(), "1");
  assert.equal(await page.locator("#queue-screen").isVisible(), true);
  // Zed never moved ahead of cyd.
  assert.ok(!zed.frames.some((f) => f.type === "queued" && f.position < 2), JSON.stringify(zed.frames));

  // The kept place is the head of the queue: cyd is let in next.
  await tom.leave();
  await page.locator("#room-screen").waitFor({ state: "visible" });
  await seeEntry(page, "* A spot has opened up! You are now connected to the chat.");
  zed.close();
  assert.deepEqual(pageProblems(), []);
});

test("when the held place is gone, the page says so and joins afresh", { skip: skip ?? false }, async () => {
  const { server, relay } = await serverWithRelay({ ANTEROOM_RESUME_GRACE: "2s" });
  const tom = await TcpClient.join(server.port, "tom");
  const page = await browser.open(relay.url);
  const frames = recordFrames(page);
  await enterRoom(page, "dee");
  assert.equal((await tom.nextType("joined")).name, "dee");

  relay.down();
  relay.cut();
  await seeEntry(page, "* disconnected (connection closed); reconnecting, your place is held for 2 s");
  // The countdown ends: the page says the place may be lost, and keeps trying.
  await eventually("the end of the grace", async () =>
    /reconnecting, your place may be lost/.test(await page.locator("#status").textContent()),
  );
  await seeEntry(page, "* your place may be lost: the server holds it for 2 s; still reconnecting");
  // The server lets the place go: the others are told now.
  const left = await tom.nextType("left");
  assert.deepEqual([left.name, left.reason], ["dee", "disconnected"]);

  relay.up();
  await eventually("back in the room", async () => (await page.locator("#status").textContent()) === "connected as dee", 20_000);
  assert.equal(frames.received.filter((f) => f.type === "welcome").at(-1).resumed, false);
  await seeEntry(page, "* the server no longer held your place: you joined again");
  const welcomes = (await entries(page)).filter((e) => e.startsWith("* Welcome to anteroom!"));
  assert.equal(welcomes.length, 2, "an ordinary rejoin: a new welcome");
  assert.equal((await tom.nextType("joined")).name, "dee");
  assert.deepEqual(await roster(page), ["tom", "dee"]);
  tom.close();
  assert.deepEqual(pageProblems(), []);
});
