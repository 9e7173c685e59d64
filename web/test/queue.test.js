// A browser user queued behind a full room: the exact queue text, the
// position moving, the wait ticking, then the promotion into the room.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  PHONE,
  TcpClient,
  entries,
  eventually,
  joinAs,
  launchBrowser,
  roster,
  screenshot,
  skipReason,
  startServer,
} from "./support.js";

const skip = skipReason();
const queueText = (n) => `We are dealing with a large amount of users and you are at ${n} in queue`;

let server;
let browser;

before(async () => {
  if (skip) return;
  server = await startServer({ args: ["--max-active", "2"] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("a queued browser user sees its place move and is let in", { skip: skip ?? false }, async () => {
  const ann = await TcpClient.join(server.port, "ann");
  const amy = await TcpClient.join(server.port, "amy");
  const bob = await TcpClient.connect(server.port);
  bob.send({ type: "hello", name: "bob" });
  assert.equal((await bob.nextType("queued")).position, 1);

  const page = await browser.open(server.url);
  assert.equal(await page.evaluate(() => document.activeElement?.id), "name", "the name field has the focus");
  await joinAs(page, "Cyd");

  const text = page.locator("#queue-text");
  await text.waitFor({ state: "visible" });
  assert.equal(await text.textContent(), queueText(2));
  assert.equal(await text.getAttribute("aria-live"), "polite");
  assert.equal(await page.locator("#queue-position").textContent(), "2");
  assert.equal(await page.locator("#queue-waiting").textContent(), "2");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "queue-title", "the focus moves to the queue screen");
  await eventually("the status line", async () => (await page.locator("#status").textContent()).includes("waiting in the queue"));

  // The wait ticks (mm:ss).
  const waited = page.locator("#queue-waited");
  const before = await waited.textContent();
  assert.match(before, /^00:0\d$/);
  await eventually("the wait to tick", async () => {
    const now = await waited.textContent();
    return /^\d\d:\d\d$/.test(now) && now > before && now >= "00:02";
  });
  await screenshot(page, "queue");
  await page.setViewportSize(PHONE);
  await screenshot(page, "queue-phone");

  // Bob, ahead, gives up: Cyd moves to 1.
  bob.close();
  await eventually("position 1", async () => (await text.textContent()) === queueText(1));
  assert.equal(await page.locator("#queue-position").textContent(), "1");

  // Ann leaves the room: Cyd is promoted.
  await ann.leave();
  await page.locator("#room-screen").waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => document.activeElement?.id), "message", "the focus moves to the input line");
  await eventually("the welcome notice", async () =>
    (await entries(page)).includes("* A spot has opened up! You are now connected to the chat."),
  );
  assert.deepEqual(await roster(page), ["amy", "Cyd"]);
  assert.match(await page.locator("#status").textContent(), /^connected as Cyd/);

  // Amy saw Cyd come in, and Cyd can talk.
  assert.equal((await amy.nextType("joined")).name, "Cyd");
  await page.getByLabel("Message").fill("made it");
  await page.getByLabel("Message").press("Enter");
  const said = await amy.nextType("message");
  assert.equal(said.from, "Cyd");
  assert.equal(said.text, "made it");
  assert.deepEqual(browser.problems, []);
});

test("leaving the queue and a refused name return to the name prompt", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  // The room (capacity 2) holds amy and Cyd from the test above, so Eve waits.
  await joinAs(page, "eve");
  await page.locator("#queue-text").waitFor({ state: "visible" });
  await page.getByRole("button", { name: "Leave the queue" }).click();
  await page.locator("#left-screen").waitFor({ state: "visible" });
  assert.equal(await page.locator("#left-title").textContent(), "You left the queue");
  assert.equal(await page.locator("#left-text").textContent(), "The server said: Goodbye!");
  await page.getByRole("button", { name: "Use another name" }).click();
  assert.equal(await page.evaluate(() => document.activeElement?.id), "name");

  // A name held by someone else is refused; the prompt says so.
  await joinAs(page, "CYD");
  const problem = page.locator("#name-error");
  await eventually("the refusal", async () => (await problem.textContent()).startsWith("That name is taken"));
  assert.equal(await page.getByLabel("Your name").getAttribute("aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "name");

  // Names the client can judge are refused before anything is sent.
  await joinAs(page, "   ");
  assert.match(await problem.textContent(), /1 to 32 characters/);
  await joinAs(page, "x".repeat(33));
  assert.match(await problem.textContent(), /33 characters long/);
  assert.deepEqual(browser.problems, []);
});
