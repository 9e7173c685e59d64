// Two browser users and a TCP user in one room: one order for everyone, the
// roster following joins and leaves, notices worded like the terminal
// client's, server text kept as text, pings answered, refusals shown.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  PHONE,
  TcpClient,
  entries,
  eventually,
  joinAs,
  launchBrowser,
  messages,
  roster,
  screenshot,
  skipReason,
  sleep,
  startServer,
} from "./support.js";

const skip = skipReason();

let server;
let browser;

before(async () => {
  if (skip) return;
  // Short heartbeats: a page that did not answer pings would be cut off
  // during the test. A small burst makes the rate limit easy to reach.
  server = await startServer({
    args: ["--heartbeat-interval", "1s", "--idle-timeout", "3s", "--rate-limit", "0.5", "--rate-burst", "3"],
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The palette slot of a name: FNV-1a over its UTF-8 bytes, as the terminal client computes it. */
function colourIndex(name) {
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(name)) {
    hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return Number(hash % 8n);
}

/** How the page shows a text: control characters as visible escapes. */
const shown = (text) => text.replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\u202e/g, "\\u{202e}");

async function say(page, text) {
  const input = page.getByLabel("Message");
  await input.fill(text);
  await input.press("Enter");
}

test("two browser users and a TCP user chat in one order", { skip: skip ?? false }, async () => {
  const tess = await TcpClient.join(server.port, "tess");

  const ann = await browser.open(server.url);
  await joinAs(ann, "ann");
  await ann.locator("#room-screen").waitFor({ state: "visible" });
  assert.deepEqual(await roster(ann), ["tess", "ann"]);
  assert.ok((await entries(ann)).includes("* Welcome to anteroom! You are now connected to the chat."));
  assert.ok((await entries(ann)).includes("* in the room: tess, ann"));

  const bob = await browser.open(server.url);
  await joinAs(bob, "bob");
  await bob.locator("#room-screen").waitFor({ state: "visible" });
  assert.deepEqual(await roster(bob), ["tess", "ann", "bob"]);
  await eventually("bob in ann's roster", async () => (await roster(ann)).join() === "tess,ann,bob");
  assert.ok((await entries(ann)).includes("* bob joined"));
  assert.equal(await ann.locator("#room-summary").textContent(), "3 in the room (capacity 100)");

  // Everyone talks at once; the browsers send without waiting for their echo.
  const hostile = `<img src=x onerror="document.title='owned'">`;
  await Promise.all([
    (async () => {
      await say(ann, "hello from ann");
      await say(ann, "ann again");
    })(),
    (async () => {
      await say(bob, "hello from bob");
      await say(bob, "bob again");
    })(),
    (async () => {
      tess.send({ type: "say", text: "hello from tess" });
      tess.send({ type: "say", text: hostile });
      tess.send({ type: "say", text: "two\nlines\u202e" });
    })(),
  ]);
  const tcpSeen = [];
  while (tcpSeen.length < 7) {
    const m = await tess.nextType("message");
    tcpSeen.push(`<${m.from}> ${shown(m.text)}`);
    if (m.from === "tess" && m.text === "hello from tess") {
      // The time is the server's `ts`, as local HH:MM.
      const d = new Date(m.ts);
      tess.clock = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    }
  }
  for (const page of [ann, bob]) {
    await eventually("seven messages", async () => (await messages(page)).length === 7);
    assert.deepEqual(await messages(page), tcpSeen, "every member sees one order");
  }
  assert.equal(await ann.title(), "anteroom", "server text is never HTML");
  assert.equal(await ann.locator("#log img").count(), 0);
  assert.equal(await ann.locator("#log .esc").first().textContent(), "\\n");
  const tessLine = ann.locator("#log li.message").filter({ hasText: "hello from tess" });
  assert.equal(await tessLine.locator("time").textContent(), tess.clock);

  // Sender colours come from the fixed palette by a stable hash of the name.
  for (const name of ["ann", "bob", "tess"]) {
    const classes = await ann.locator("#log li.message .name", { hasText: name }).first().getAttribute("class");
    assert.ok(classes.split(" ").includes(`sender-${colourIndex(name)}`), `${name}: ${classes}`);
  }
  assert.equal(await ann.locator("#log li.mine").count(), 2, "ann's own messages are marked");

  // The room as people see it.
  await ann.locator("#message").fill("a draft");
  await screenshot(ann, "room");
  await ann.setViewportSize(PHONE);
  await screenshot(ann, "room-phone");
  await ann.locator("#message").fill("");

  // Silent for longer than idle_timeout: the pages answer the server's pings.
  await sleep(4000);
  assert.match(await ann.locator("#status").textContent(), /^connected as ann/);
  assert.ok(!(await entries(ann)).some((e) => e.includes("disconnected")), "no reconnect happened");

  // `/users` asks with `who`; the answer is a notice and refreshes the roster.
  await say(ann, "/users");
  await eventually("the users notice", async () => (await entries(ann)).includes("* in the room (3): tess, ann, bob"));

  // The roster follows leaves and joins, with the reasons as the terminal client words them.
  await tess.leave();
  await eventually("tess gone", async () => (await roster(ann)).join() === "ann,bob");
  assert.ok((await entries(ann)).includes("* tess left (bye)"));
  const uma = await TcpClient.join(server.port, "uma");
  await eventually("uma in", async () => (await roster(bob)).join() === "ann,bob,uma");
  uma.close();
  await eventually("uma gone", async () => (await roster(bob)).join() === "ann,bob");
  assert.ok((await entries(bob)).includes("* uma left (disconnected)"));
  assert.equal(await ann.locator("#roster-toggle").textContent(), "Users (2)");

  // On a phone the roster opens from its button.
  await ann.getByRole("button", { name: "Users (2)" }).click();
  assert.equal(await ann.locator("#roster-toggle").getAttribute("aria-expanded"), "true");
  assert.ok(await ann.locator("#roster").isVisible());
  await ann.keyboard.press("Escape");
  assert.ok(!(await ann.locator("#roster").isVisible()));

  // Bob leaves with the button.
  await bob.getByRole("button", { name: "Leave" }).click();
  await bob.locator("#left-screen").waitFor({ state: "visible" });
  assert.equal(await bob.locator("#left-title").textContent(), "You left the room");
  assert.equal(await bob.evaluate(() => document.activeElement?.id), "left-title");
  await eventually("bob gone", async () => (await roster(ann)).join() === "ann");
  assert.ok((await entries(ann)).includes("* bob left (bye)"));
  assert.deepEqual(browser.problems, []);
});

test("the input line keeps to the limits and shows refusals", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  await joinAs(page, "cy");
  await page.locator("#room-screen").waitFor({ state: "visible" });
  const input = page.getByLabel("Message");
  const hint = page.locator("#message-hint");

  // 2,049 two-byte characters are 4,098 bytes: over the server's 4,096.
  await input.fill("é".repeat(2049));
  assert.match(await hint.textContent(), /^Too long: 4098 bytes; a message holds at most 4096 bytes/);
  assert.equal(await input.getAttribute("aria-invalid"), "true");
  await input.press("Enter");
  await input.fill("é".repeat(2048));
  assert.equal(await input.getAttribute("aria-invalid"), null);
  assert.match(await hint.textContent(), /^0 of 4096 bytes left/);
  await input.press("Enter");
  await eventually("the long message", async () => (await messages(page)).length === 1);
  assert.equal(await input.inputValue(), "", "a sent line is cleared");

  // Unknown commands are not sent; `//` sends a leading slash.
  await say(page, "/nope");
  await say(page, "//shrug");
  await eventually("the slash message", async () => (await messages(page)).at(-1) === "<cy> /shrug");
  assert.ok((await entries(page)).includes("* unknown command /nope; /help lists the commands"));

  // Over the rate limit (a burst of 3 at 0.5/s): the server's refusal shows.
  for (let i = 0; i < 3; i += 1) {
    await say(page, `quick ${i}`);
  }
  await eventually("the refusal", async () =>
    (await entries(page)).some((e) => e.startsWith("* error (rate_limited): ")),
  );
  assert.equal(await page.locator("#log li.notice-problem").filter({ hasText: "rate_limited" }).count() > 0, true);

  // Up recalls the lines entered before.
  await input.press("ArrowUp");
  assert.equal(await input.inputValue(), "quick 2");
  await input.press("ArrowUp");
  assert.equal(await input.inputValue(), "quick 1");
  await input.press("ArrowDown");
  await input.press("ArrowDown");
  assert.equal(await input.inputValue(), "");
  assert.deepEqual(browser.problems, []);
});

test("everything works from the keyboard", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  // The name field has the focus on arrival.
  await page.keyboard.type("kim");
  await page.keyboard.press("Enter");
  await page.locator("#room-screen").waitFor({ state: "visible" });
  await page.keyboard.type("typed, not clicked");
  await page.keyboard.press("Enter");
  await eventually("kim's message", async () => (await messages(page)).includes("<kim> typed, not clicked"));

  // Back from the input line: the conversation (scrollable), then Leave.
  await page.keyboard.press("Shift+Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "log");
  await page.keyboard.press("Shift+Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "leave");
  await page.keyboard.press("Enter");
  await page.locator("#left-screen").waitFor({ state: "visible" });
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "rejoin");
  await page.keyboard.press("Enter");
  await page.locator("#room-screen").waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => document.activeElement?.id), "message");
  assert.match(await page.locator("#status").textContent(), /^connected as kim/);
  assert.deepEqual(browser.problems, []);
});
