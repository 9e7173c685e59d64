// The server restarts: the page shows that it is reconnecting, with the
// backoff, and rejoins by itself under the same name once the server is back
// on the same ports, retrying while the name is still held.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  TcpClient,
  entries,
  seeEntry,
  eventually,
  freePort,
  joinAs,
  launchBrowser,
  roster,
  skipReason,
  sleep,
  startServer,
} from "./support.js";

const skip = skipReason();

const servers = [];
let browser;

before(async () => {
  if (skip) return;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const server of servers) {
    await server.stop();
  }
});

test("the page reconnects and rejoins after the server restarts", { skip: skip ?? false }, async () => {
  const webPort = await freePort();
  const first = await startServer({ webPort });
  servers.push(first);

  const page = await browser.open(first.url);
  await joinAs(page, "ann");
  await page.locator("#room-screen").waitFor({ state: "visible" });
  const status = page.locator("#status");
  assert.equal(await status.textContent(), "connected as ann");
  assert.equal(await status.getAttribute("data-state"), "connected");

  // The server goes away: its goodbye is shown, then the backoff.
  await first.stop();
  await eventually("the goodbye", async () =>
    (await entries(page)).includes("* bye (shutdown): The server is shutting down."),
  );
  await eventually("the retry state", async () => (await status.getAttribute("data-state")) === "retrying");
  await seeEntry(page, "* disconnected (server closed the connection: shutdown); reconnecting in 0.5 s");
  // Attempts keep failing while the server is down, each after a longer wait.
  await eventually("a later attempt", async () => / \(attempt [3-9]\)$/.test(await status.textContent()), 15_000);
  assert.match(await status.textContent(), /^disconnected \(could not connect\); reconnecting in \d+ s \(attempt \d\)$/);
  await seeEntry(page, "* disconnected (could not connect); reconnecting in 2 s");

  // Back on the same ports. Someone else takes the name first: the page
  // keeps trying, since the name may be held by its own old connection.
  const second = await startServer({ webPort, listen: first.listen });
  servers.push(second);
  const impostor = await TcpClient.connect(second.port);
  impostor.send({ type: "hello", name: "ann" });
  const answer = await impostor.next((f) => f.type === "welcome" || f.type === "error");
  if (answer.type === "welcome") {
    await eventually("a name_taken retry", async () =>
      (await entries(page)).some((e) =>
        e.startsWith("* disconnected (the name is still held by the old connection); reconnecting in "),
      ),
    );
    assert.equal(await page.locator("#room-screen").isVisible(), true, "the room stays on screen");
    await impostor.leave();
  } else {
    // The page was faster.
    assert.equal(answer.code, "name_taken");
    impostor.close();
  }

  // An attempt just before the impostor left fails with name_taken, and the
  // next comes a whole backoff (at most 10 s) later: allow two of them.
  await eventually("rejoined", async () => (await status.textContent()) === "connected as ann", 30_000);
  assert.equal(await status.getAttribute("data-state"), "connected");
  assert.deepEqual(await roster(page), ["ann"]);
  const welcome = "* Welcome to anteroom! You are now connected to the chat.";
  await eventually("a second welcome", async () => (await entries(page)).filter((e) => e === welcome).length === 2);

  // The rejoined page is a member like any other.
  const tess = await TcpClient.join(second.port, "tess");
  tess.send({ type: "who" });
  assert.deepEqual((await tess.nextType("users")).names, ["ann", "tess"]);
  await page.getByLabel("Message").fill("back again");
  await page.getByLabel("Message").press("Enter");
  const said = await tess.nextType("message");
  assert.deepEqual([said.from, said.text], ["ann", "back again"]);
  await tess.leave();
  await sleep(100);
  assert.deepEqual(
    browser.problems.filter((p) => !p.includes("WebSocket connection to")),
    [],
    "no page errors other than the refused connections",
  );
});

test("a join the server does not answer can be cancelled", { skip: skip ?? false }, async () => {
  const server = await startServer();
  servers.push(server);
  const page = await browser.open(server.url);
  await server.stop();

  await joinAs(page, "zed");
  const status = page.locator("#status");
  await eventually("the retry state", async () => (await status.getAttribute("data-state")) === "retrying");
  assert.match(await status.textContent(), /^disconnected \(could not connect\); reconnecting in /);
  const join = page.locator("#join");
  assert.equal(await join.textContent(), "Joining…");
  assert.equal(await join.getAttribute("aria-disabled"), "true");
  // Another Enter does not cancel; the Cancel button does.
  await page.getByLabel("Your name").press("Enter");
  assert.equal(await page.locator("#cancel-join").isVisible(), true);
  await page.getByRole("button", { name: "Cancel" }).click();
  await eventually("not connected", async () => (await status.textContent()) === "not connected");
  assert.equal(await page.locator("#join-screen").isVisible(), true);
  assert.equal(await join.textContent(), "Join");
  assert.equal(await page.locator("#cancel-join").isVisible(), false);
  assert.equal(await page.evaluate(() => document.activeElement?.id), "name");
});
