// A busy room: a TCP member posts thousands of messages as fast as it can.
// The page keeps up (it is not cut off as a slow consumer), shows the last
// one, and keeps at most 5000 entries.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TcpClient, eventually, joinAs, launchBrowser, messages, skipReason, startServer } from "./support.js";

const skip = skipReason();
const COUNT = 6000;

let server;
let browser;

before(async () => {
  if (skip) return;
  server = await startServer({
    args: ["--rate-limit", "1000000000", "--rate-burst", "1000000", "--request-rate", "0"],
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the page keeps up with a burst of messages", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  await joinAs(page, "reader");
  await page.locator("#room-screen").waitFor({ state: "visible" });
  const loud = await TcpClient.join(server.port, "loud");
  for (let i = 1; i <= COUNT; i += 1) {
    loud.send({ type: "say", text: `message ${i} ${"x".repeat(100)}` });
  }
  const last = `<loud> message ${COUNT} ${"x".repeat(100)}`;
  await eventually("the last message", async () => (await messages(page)).at(-1) === last, 30_000);
  assert.equal(await page.locator("#log li").count(), 5000, "the oldest entries are dropped");
  const shown = await messages(page);
  assert.equal(shown[0], `<loud> message ${COUNT - 4999} ${"x".repeat(100)}`, "in order, none missing");
  assert.equal(await page.locator("#status").textContent(), "connected as reader");
  // The log is scrolled to the newest entry.
  const atBottom = await page.locator("#log").evaluate((log) => log.scrollHeight - log.scrollTop - log.clientHeight < 48);
  assert.ok(atBottom);
  loud.close();
  assert.deepEqual(browser.problems, []);
});
