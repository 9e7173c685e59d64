// The expected wait on the queue screen: nothing while the server cannot
// estimate one, then `about …` beside the place, following every `queued`.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TcpClient, eventually, joinAs, launchBrowser, recordFrames, skipReason, startServer } from "./support.js";

const skip = skipReason();

let server;
let browser;

before(async () => {
  if (skip) return;
  server = await startServer({ env: { ANTEROOM_MAX_ACTIVE: "1" } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** How the page words an estimate of `s` seconds. */
function aboutWait(s) {
  if (s < 10) return `about ${Math.max(1, Math.ceil(s))} s`;
  if (s < 55) return `about ${Math.ceil(s / 5) * 5} s`;
  if (s < 3570) return `about ${Math.max(1, Math.round(s / 60))} min`;
  const minutes = Math.round(s / 300) * 5;
  const [h, m] = [Math.floor(minutes / 60), minutes % 60];
  return m === 0 ? `about ${h} h` : `about ${h} h ${m} min`;
}

/** What the page shows beside the place for a `queued` frame. */
const shownFor = (queued) => (queued.eta_s === undefined ? "" : `${aboutWait(queued.eta_s)} to go`);

/** Queues `name` over TCP, asking for `eta`; resolves with the client and its first `queued`. */
async function queue(name) {
  const client = await TcpClient.connect(server.port);
  client.send({ type: "hello", name, features: ["eta"] });
  return [client, await client.nextType("queued")];
}

test("the queue screen shows the expected wait once the server knows it", { skip: skip ?? false }, async () => {
  let member = await TcpClient.join(server.port, "m0");
  const eta = (page) => page.locator("#queue-eta");

  // No promotions yet: no estimate, and nothing shown for it.
  const early = await browser.open(server.url);
  await joinAs(early, "early");
  await early.locator("#queue-text").waitFor({ state: "visible" });
  assert.equal(await early.locator("#queue-position").textContent(), "1");
  assert.equal(await eta(early).isVisible(), false);
  assert.equal(await eta(early).textContent(), "");
  await early.getByRole("button", { name: "Leave the queue" }).click();
  await early.locator("#left-screen").waitFor({ state: "visible" });

  // Six promotions: each member leaves and the one waiting takes its seat.
  for (let i = 1; i <= 6; i += 1) {
    const [next] = await queue(`m${i}`);
    await member.leave();
    await next.nextType("welcome");
    member = next;
  }

  // Now the server estimates: a TCP client queued first sees `eta_s`.
  const [zed, zedQueued] = await queue("zed");
  assert.equal(zedQueued.position, 1);
  assert.equal(typeof zedQueued.eta_s, "number", JSON.stringify(zedQueued));

  const page = await browser.open(server.url);
  const frames = recordFrames(page);
  await joinAs(page, "cyd");
  await eventually("place 2", async () => (await page.locator("#queue-position").textContent()) === "2");
  const lastQueued = () => frames.received.filter((f) => f.type === "queued").at(-1);
  assert.equal(typeof lastQueued().eta_s, "number");
  await eventually("the estimate", async () => (await eta(page).textContent()) === shownFor(lastQueued()));
  assert.equal(await eta(page).isVisible(), true);
  assert.match(await eta(page).textContent(), /^about \d+ (s|min|h)( \d+ min)? to go$/);

  // Zed gives up: cyd moves up, and the estimate follows the new `queued`.
  const before = lastQueued();
  zed.close();
  await eventually("place 1", async () => (await page.locator("#queue-position").textContent()) === "1");
  await eventually("the new estimate", async () => {
    const latest = lastQueued();
    return latest !== before && latest.position === 1 && (await eta(page).textContent()) === shownFor(latest);
  });
  if (lastQueued().eta_s !== undefined && before.eta_s !== undefined) {
    assert.ok(lastQueued().eta_s <= before.eta_s, "one place ahead waits no longer");
  }

  // Let in: the room.
  await member.leave();
  await page.locator("#room-screen").waitFor({ state: "visible" });
  await page.getByRole("button", { name: "Leave" }).click();
  await page.locator("#left-screen").waitFor({ state: "visible" });
  assert.deepEqual(browser.problems, []);
});
