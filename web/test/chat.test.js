// Two browser users and a TCP user in one room: one order for everyone, the
// roster following joins and leaves, notices worded like the terminal
// client's, server text kept as text, pings answered, refusals shown.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  PHONE,
  TcpClient,
  entries,
  seeEntry,
  eventually,
  joinAs,
  launchBrowser,
  messages,
  roster,
  say,
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
    args: ["--max-active", "10", "--heartbeat-interval", "1s", "--idle-timeout", "3s", "--rate-limit", "0.2", "--rate-burst", "3"],
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

test("two browser users and a TCP user chat in one order", { skip: skip ?? false }, async () => {
  const tom = await TcpClient.join(server.port, "tom");

  const ann = await browser.open(server.url);
  await joinAs(ann, "ann");
  await ann.locator("#room-screen").waitFor({ state: "visible" });
  assert.deepEqual(await roster(ann), ["tom", "ann"]);
  await seeEntry(ann, "* Welcome to anteroom! You are now connected to the chat.");
  await seeEntry(ann, "* in the room: tom, ann");

  const mia = await browser.open(server.url);
  await joinAs(mia, "mia");
  await mia.locator("#room-screen").waitFor({ state: "visible" });
  assert.deepEqual(await roster(mia), ["tom", "ann", "mia"]);
  await eventually("mia in ann's roster", async () => (await roster(ann)).join() === "tom,ann,mia");
  await seeEntry(ann, "* mia joined");
  assert.equal(await ann.locator("#room-summary").textContent(), "3 in the room (capacity 10)");

  // Everyone talks at once; the browsers send without waiting for their echo.
  const hostile = `<img src=x onerror="document.title='owned'">`;
  await Promise.all([
    (async () => {
      await say(ann, "hello from ann");
      await say(ann, "ann again");
    })(),
    (async () => {
      await say(mia, "hello from mia");
      await say(mia, "mia again");
    })(),
    (async () => {
      tom.send({ type: "say", text: "hello from tom" });
      tom.send({ type: "say", text: hostile });
      tom.send({ type: "say", text: "two\nlines\u202e" });
    })(),
  ]);
  const tcpSeen = [];
  while (tcpSeen.length < 7) {
    const m = await tom.nextType("message");
    tcpSeen.push(`<${m.from}> ${shown(m.text)}`);
    if (m.from === "tom" && m.text === "hello from tom") {
      // The time is the server's `ts`, as local HH:MM.
      const d = new Date(m.ts);
      tom.clock = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    }
  }
  for (const page of [ann, mia]) {
    await eventually("seven messages", async () => (await messages(page)).length === 7);
    assert.deepEqual(await messages(page), tcpSeen, "every member sees one order");
  }
  assert.equal(await ann.title(), "anteroom", "server text is never HTML");
  assert.equal(await ann.locator("#log img").count(), 0);
  assert.equal(await ann.locator("#log .esc").first().textContent(), "\\n");
  const tomLine = ann.locator("#log li.message").filter({ hasText: "hello from tom" });
  assert.equal(await tomLine.locator("time").textContent(), tom.clock);

  // Sender colours come from the fixed palette by a stable hash of the name.
  for (const name of ["ann", "mia", "tom"]) {
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
  await eventually("the users notice", async () => (await entries(ann)).includes("* in the room (3): tom, ann, mia"));

  // The roster follows leaves and joins, with the reasons as the terminal client words them.
  await tom.leave();
  await eventually("tom gone", async () => (await roster(ann)).join() === "ann,mia");
  await seeEntry(ann, "* tom left (bye)");
  const uma = await TcpClient.join(server.port, "uma");
  await eventually("uma in", async () => (await roster(mia)).join() === "ann,mia,uma");
  uma.close();
  await eventually("uma gone", async () => (await roster(mia)).join() === "ann,mia");
  await seeEntry(mia, "* uma left (disconnected)");
  assert.equal(await ann.locator("#roster-toggle").textContent(), "Users (2)");

  // On a phone the roster opens from its button.
  await ann.getByRole("button", { name: "Users (2)" }).click();
  assert.equal(await ann.locator("#roster-toggle").getAttribute("aria-expanded"), "true");
  assert.ok(await ann.locator("#roster").isVisible());
  await ann.keyboard.press("Escape");
  assert.ok(!(await ann.locator("#roster").isVisible()));

  // Mia leaves with the button.
  await mia.getByRole("button", { name: "Leave" }).click();
  await mia.locator("#left-screen").waitFor({ state: "visible" });
  assert.equal(await mia.locator("#left-title").textContent(), "You left the room");
  assert.equal(await mia.evaluate(() => document.activeElement?.id), "left-title");
  await eventually("mia gone", async () => (await roster(ann)).join() === "ann");
  await seeEntry(ann, "* mia left (bye)");
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
  // The messages of the test above come first, as earlier ones.
  const live = () => page.locator("#log li.message:not(.earlier)").count();
  await eventually("the long message", async () => (await live()) === 1);
  assert.equal(await input.inputValue(), "", "a sent line is cleared");

  // Unknown commands are not sent; `//` sends a leading slash.
  await say(page, "/nope");
  await say(page, "//shrug");
  await eventually("the slash message", async () => (await messages(page)).at(-1) === "<cy> /shrug");
  await seeEntry(page, "* unknown command /nope; /help lists the commands");

  // Over the rate limit (a burst of 3 at 0.2/s): the server's refusal shows.
  for (let i = 0; i < 6; i += 1) {
    await say(page, `quick ${i}`);
  }
  await eventually("the refusal", async () =>
    (await entries(page)).some((e) => e.startsWith("* error (rate_limited): ")),
  );
  assert.ok((await page.locator("#log li.notice-problem").filter({ hasText: "rate_limited" }).count()) > 0);

  // Up recalls the lines entered before.
  await input.press("ArrowUp");
  assert.equal(await input.inputValue(), "quick 5");
  await input.press("ArrowUp");
  assert.equal(await input.inputValue(), "quick 4");
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

  // Back from the input line: a whisper button for each other member, the
  // conversation (scrollable), then Leave.
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute("aria-label") ?? document.activeElement?.id);
  await page.keyboard.press("Shift+Tab");
  assert.equal(await focused(), "Whisper to cy");
  await page.keyboard.press("Shift+Tab");
  assert.equal(await focused(), "Whisper to ann");
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
