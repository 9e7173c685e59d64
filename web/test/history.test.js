// The chat log in the page: the messages written before joining are shown
// above the live ones, older pages load as the user scrolls up (keeping what
// is on screen in place), and a reconnect neither repeats what is shown nor
// keeps what belongs to another log.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  TcpClient,
  enterRoom,
  entries,
  eventually,
  freePort,
  launchBrowser,
  messages,
  screenshot,
  seeEntry,
  skipReason,
  startServer,
} from "./support.js";

const skip = skipReason();
// Enough for 120 messages in a row.
const FAST = ["--rate-limit", "1000", "--rate-burst", "1000", "--request-rate", "0"];

const servers = [];
let browser;
let dataDir;

before(async () => {
  if (skip) return;
  browser = await launchBrowser();
  dataDir = await mkdtemp(join(tmpdir(), "anteroom-history-"));
});

after(async () => {
  await browser?.close();
  for (const server of servers) await server.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

/** Says `texts` from a TCP member and waits for the echo of the last one (it is then in the log). */
async function post(member, texts) {
  for (const text of texts) member.send({ type: "say", text });
  await member.next((f) => f.type === "message" && f.text === texts.at(-1), `the echo of ${texts.at(-1)}`);
}

const numbered = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `old ${from + i}`);

/** The ids of the page's message entries, in order. */
const shownIds = (page) => page.locator("#log li.message").evaluateAll((items) => items.map((li) => Number(li.dataset.id)));

/** Where `li` is, in pixels from the top of the visible conversation. */
const offsetInLog = (page, text) =>
  page.evaluate((text) => {
    const log = document.getElementById("log");
    const li = [...log.querySelectorAll("li.message")].find((item) => item.querySelector(".body").textContent === text);
    return li.getBoundingClientRect().top - log.getBoundingClientRect().top;
  }, text);

test("earlier messages are shown on joining and older pages load when scrolling up", { skip: skip ?? false }, async () => {
  const server = await startServer({ args: FAST });
  servers.push(server);
  const tom = await TcpClient.join(server.port, "tom");
  await post(tom, numbered(1, 120));

  const page = await browser.open(server.url);
  await enterRoom(page, "ann");
  // The last 50 (history_on_join), oldest first, above the welcome.
  await eventually("the join page", async () => (await messages(page)).length === 50);
  assert.deepEqual(
    await messages(page),
    numbered(71, 120).map((t) => `<tom> ${t}`),
  );
  const shown = await entries(page);
  assert.equal(shown[50], "* Welcome to anteroom! You are now connected to the chat.", "earlier messages come before the welcome");
  assert.equal(await page.locator("#log li.earlier").count(), 50, "they are marked as earlier");
  assert.equal(await page.locator("#history-top .history-divider").textContent(), "Earlier messages");
  assert.ok(await page.getByRole("button", { name: "Load earlier messages" }).isVisible());
  // The newest entry is in view.
  const atBottom = () => page.locator("#log").evaluate((log) => log.scrollHeight - log.scrollTop - log.clientHeight < 48);
  assert.ok(await atBottom());

  // A live message goes after the welcome, not among the earlier ones.
  await post(tom, ["live one"]);
  await eventually("the live message", async () => (await messages(page)).at(-1) === "<tom> live one");
  assert.equal(await page.locator("#log li.earlier").count(), 50);

  // Scrolling to the top asks for the 50 before: they are added above and
  // the message that was at the top stays where it was on screen.
  const contentTop = await page.evaluate(() => {
    const log = document.getElementById("log");
    const first = log.querySelector("li.message");
    return first.getBoundingClientRect().top - log.getBoundingClientRect().top + log.scrollTop;
  });
  await page.locator("#log").evaluate((log) => log.scrollTo({ top: 0 }));
  await eventually("the second page", async () => (await messages(page)).length === 101);
  assert.ok(Math.abs((await offsetInLog(page, "old 71")) - contentTop) <= 2, "the view did not jump");
  assert.deepEqual((await messages(page)).slice(0, 50), numbered(21, 70).map((t) => `<tom> ${t}`));

  // Once more: the last 20, and the start of the conversation.
  await page.locator("#log").evaluate((log) => log.scrollTo({ top: 0 }));
  await eventually("the third page", async () => (await messages(page)).length === 121);
  await eventually("the start", async () => (await page.locator("#history-state").textContent()) === "This is the start of the conversation.");
  assert.equal(await page.getByRole("button", { name: "Load earlier messages" }).isVisible(), false);
  assert.deepEqual(await messages(page), [...numbered(1, 120), "live one"].map((t) => `<tom> ${t}`));
  const ids = await shownIds(page);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), "ids increase down the page");
  assert.equal(new Set(ids).size, 121, "no message twice");

  // Scrolling up again asks for nothing more.
  await page.locator("#log").evaluate((log) => log.scrollTo({ top: 0 }));
  await page.waitForTimeout(300);
  assert.equal((await messages(page)).length, 121);
  tom.close();
  assert.deepEqual(browser.problems, []);
});

test("the button loads earlier messages when the page is too short to scroll", { skip: skip ?? false }, async () => {
  const server = await startServer({ args: [...FAST, "--history-on-join", "3"] });
  servers.push(server);
  const tom = await TcpClient.join(server.port, "tom");
  await post(tom, numbered(1, 5));
  const page = await browser.open(server.url);
  await enterRoom(page, "bea");
  await eventually("the join page", async () => (await messages(page)).length === 3);
  await post(tom, ["and now, live"]);
  await eventually("the live message", async () => (await messages(page)).length === 4);
  await screenshot(page, "history");
  const button = page.getByRole("button", { name: "Load earlier messages" });
  await button.focus();
  await page.keyboard.press("Enter");
  await eventually("the rest", async () => (await messages(page)).length === 6);
  assert.deepEqual(await messages(page), [...numbered(1, 5), "and now, live"].map((t) => `<tom> ${t}`));
  assert.equal(await page.evaluate(() => document.activeElement?.id), "log", "at the start the focus moves from the button to the conversation");
  assert.equal(await page.locator("#history-state").textContent(), "This is the start of the conversation.");
  tom.close();
  assert.deepEqual(browser.problems, []);
});

test("after a reconnect nothing is shown twice, and a new log starts the conversation again", { skip: skip ?? false }, async () => {
  const webPort = await freePort();
  // An SQLite log in a directory that outlives the server.
  const args = [...FAST, "--store", "sqlite", "--data-dir", dataDir];
  const first = await startServer({ webPort, args });
  servers.push(first);
  const tom = await TcpClient.join(first.port, "tom");
  await post(tom, numbered(1, 10));
  const page = await browser.open(first.url);
  await enterRoom(page, "cat");
  await eventually("the join page", async () => (await messages(page)).length === 10);
  await post(tom, ["before the restart"]);
  await eventually("the live message", async () => (await messages(page)).length === 11);
  tom.close();

  // The same log after a restart: the page rejoins, and only what is new
  // appears (whether it came in the join page or live).
  await first.stop();
  const second = await startServer({ webPort, listen: first.listen, args });
  servers.push(second);
  const tim = await TcpClient.join(second.port, "tim");
  await post(tim, ["after the restart"]);
  await eventually("rejoined", async () => (await page.locator("#status").textContent()) === "connected as cat", 20_000);
  await eventually("the new message", async () => (await messages(page)).includes("<tim> after the restart"));
  assert.deepEqual(await messages(page), [
    ...numbered(1, 10).map((t) => `<tom> ${t}`),
    "<tom> before the restart",
    "<tim> after the restart",
  ]);
  const ids = await shownIds(page);
  assert.equal(new Set(ids).size, ids.length, "no message twice");
  tim.close();

  // Another log (a memory store has a new epoch): what was shown goes.
  await second.stop();
  const third = await startServer({ webPort, listen: first.listen, args: [...FAST, "--store", "memory"] });
  servers.push(third);
  const tia = await TcpClient.join(third.port, "tia");
  await post(tia, ["a new beginning"]);
  await seeEntry(page, "* The server's chat log is new: the conversation starts again.");
  await eventually("only the new log", async () => (await messages(page)).join() === "<tia> a new beginning");
  tia.close();
  assert.deepEqual(
    browser.problems.filter((p) => !p.includes("WebSocket connection to")),
    [],
    "no page errors other than the refused connections",
  );
});

test("messages missed while away are fetched after the join page", { skip: skip ?? false }, async () => {
  const webPort = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "anteroom-history-"));
  // The join page holds 3: what was missed beyond that comes in pages of its own.
  const args = [...FAST, "--store", "sqlite", "--data-dir", dir, "--history-on-join", "3"];
  const first = await startServer({ webPort, args });
  servers.push(first);
  const page = await browser.open(first.url);
  await enterRoom(page, "dan");
  const tom = await TcpClient.join(first.port, "tom");
  await post(tom, numbered(1, 2));
  await eventually("the first messages", async () => (await messages(page)).length === 2);
  tom.close();

  // Down long enough for the page to wait seconds between attempts, so
  // that the messages below are written before it is back.
  await first.stop();
  await eventually("a long wait", async () => /reconnecting in [4-9] s/.test(await page.locator("#status").textContent()), 20_000);
  const second = await startServer({ webPort, listen: first.listen, args });
  servers.push(second);
  const tim = await TcpClient.join(second.port, "tim");
  await post(tim, numbered(3, 14));
  tim.close();
  await eventually("rejoined", async () => (await page.locator("#status").textContent()) === "connected as dan", 20_000);
  await eventually("all that was missed", async () => (await messages(page)).length === 14);
  assert.deepEqual(
    await messages(page),
    numbered(1, 14).map((t, i) => `<${i < 2 ? "tom" : "tim"}> ${t}`),
  );
  const ids = await shownIds(page);
  assert.equal(new Set(ids).size, 14, "no message twice");
  // They come before the new welcome, as earlier messages.
  const shown = await entries(page);
  const welcomes = shown.flatMap((e, i) => (e.startsWith("* Welcome to anteroom!") ? [i] : []));
  assert.equal(welcomes.length, 2);
  assert.ok(shown.indexOf("<tim> old 14") < welcomes[1]);
  await second.stop();
  await rm(dir, { recursive: true, force: true });
  assert.deepEqual(
    browser.problems.filter((p) => !p.includes("WebSocket connection to")),
    [],
    "no page errors other than the refused connections",
  );
});

