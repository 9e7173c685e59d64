// Whispers between two browser users: typed as /msg NAME TEXT or started
// from the roster, shown to both and to nobody else, marked as private; the
// refusals for an unknown name and for a client without whispers.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  TcpClient,
  enterRoom,
  entries,
  eventually,
  launchBrowser,
  say,
  seeEntry,
  skipReason,
  startServer,
} from "./support.js";

const skip = skipReason();

let server;
let browser;

before(async () => {
  if (skip) return;
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("whispers reach the one member they are for", { skip: skip ?? false }, async () => {
  const ann = await browser.open(server.url);
  await enterRoom(ann, "ann");
  const bo = await browser.open(server.url);
  await enterRoom(bo, "bo");
  // A member whose client asked for whispers too, to see that it gets none of them.
  const cy = await TcpClient.join(server.port, "cy", ["whisper"]);
  await eventually("cy in ann's roster", async () => (await ann.locator("#roster .name").allTextContents()).includes("cy"));

  await say(ann, "/msg bo psst, a secret");
  for (const page of [ann, bo]) {
    await seeEntry(page, "[ann → bo] psst, a secret");
  }
  const line = bo.locator("#log li.whisper");
  assert.match(await line.textContent(), /ann → .*bo \(private\): psst, a secret$/);
  assert.equal(await ann.locator("#log li.whisper.mine").count(), 1, "the sender's copy is marked as its own");

  // From the roster: the button fills in the command and the focus goes to the line.
  await bo.getByRole("button", { name: "Whisper to ann" }).click();
  assert.equal(await bo.getByLabel("Message").inputValue(), "/msg ann ");
  assert.equal(await bo.evaluate(() => document.activeElement?.id), "message");
  await bo.keyboard.type("back at you");
  await bo.keyboard.press("Enter");
  for (const page of [ann, bo]) {
    await seeEntry(page, "[bo → ann] back at you");
  }
  assert.equal(await ann.getByRole("button", { name: "Whisper to ann" }).count(), 0, "no button for oneself");

  // cy sees the room's messages but not the whispers.
  await say(ann, "said to all");
  const next = await cy.next((f) => f.type === "message" || f.type === "whisper");
  assert.deepEqual([next.type, next.text], ["message", "said to all"]);

  // A name with a space, and case-insensitive as the server matches names.
  const dee = await browser.open(server.url);
  await enterRoom(dee, "dee dee");
  await eventually("dee dee in ann's roster", async () => (await ann.locator("#roster .name").allTextContents()).includes("dee dee"));
  await say(ann, "/msg Dee Dee hello there");
  await seeEntry(dee, "[ann → dee dee] hello there");

  // Refusals show as problems.
  await say(ann, "/msg nobody hello?");
  await eventually("the refusal", async () =>
    (await entries(ann)).some((e) => e.startsWith("* private message not delivered (no_such_user)")),
  );
  assert.equal(await ann.locator("#log li.notice-problem").filter({ hasText: "no_such_user" }).count(), 1);
  await say(ann, "/msg bo");
  await seeEntry(ann, '* usage: /msg NAME TEXT (a name with spaces in quotes: /msg "ann lee" hello)');
  assert.equal(await ann.getByLabel("Message").inputValue(), "/msg bo", "a line without text is kept");
  cy.close();
  assert.deepEqual(browser.problems, []);
});

test("a member whose client cannot receive whispers is reported", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  await enterRoom(page, "eve");
  // A version-1 client: it asked for no features.
  const old = await TcpClient.join(server.port, "old");
  await say(page, "/msg old are you there?");
  await eventually("the refusal", async () =>
    (await entries(page)).some((e) => e.startsWith("* private message not delivered (whisper_unsupported)")),
  );
  old.close();
  assert.deepEqual(browser.problems, []);
});
