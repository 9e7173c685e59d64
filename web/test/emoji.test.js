// Emoji from the keyboard: `:code` completion in the input line and the
// picker behind its button.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { enterRoom, eventually, launchBrowser, messages, skipReason, startServer } from "./support.js";

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

test("typing a short code offers emoji and Enter takes one", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  await enterRoom(page, "ann");
  const input = page.getByLabel("Message");
  const list = page.locator("#emoji-suggestions");

  await page.keyboard.type("hi :smi");
  await list.waitFor({ state: "visible" });
  const options = await list.getByRole("option").allTextContents();
  assert.deepEqual(options.slice(0, 2), ["😄 :smile:", "😃 :smiley:"]);
  assert.equal(await input.getAttribute("aria-expanded"), "true");
  assert.equal(await input.getAttribute("aria-activedescendant"), "emoji-option-0");
  await page.keyboard.press("ArrowDown");
  assert.equal(await input.getAttribute("aria-activedescendant"), "emoji-option-1");
  assert.equal(await list.getByRole("option", { selected: true }).textContent(), "😃 :smiley:");
  await page.keyboard.press("ArrowUp");
  // Enter takes the emoji and sends nothing.
  await page.keyboard.press("Enter");
  assert.equal(await input.inputValue(), "hi 😄 ");
  assert.equal(await list.isVisible(), false);
  assert.equal(await input.getAttribute("aria-expanded"), "false");

  // A code typed out in full becomes its emoji; Tab also takes a suggestion.
  await page.keyboard.type("and :tada: and :thumbs");
  await list.waitFor({ state: "visible" });
  await page.keyboard.press("Tab");
  assert.equal(await input.inputValue(), "hi 😄 and 🎉 and 👍 ");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "message", "Tab took the emoji, not the focus");

  // Escape closes the list and leaves the text as typed.
  await page.keyboard.type(":check");
  await list.waitFor({ state: "visible" });
  assert.ok((await list.getByRole("option").allTextContents()).includes("✅ :white_check_mark:"), "words inside codes match too");
  await page.keyboard.press("Escape");
  assert.equal(await list.isVisible(), false);
  assert.equal(await input.inputValue(), "hi 😄 and 🎉 and 👍 :check");

  // A time is not a short code.
  await input.fill("");
  await page.keyboard.type("at 10:30");
  assert.equal(await list.isVisible(), false);

  await input.fill("hi 😄 and 🎉");
  await page.keyboard.press("Enter");
  await eventually("the message", async () => (await messages(page)).includes("<ann> hi 😄 and 🎉"));
  assert.deepEqual(browser.problems, []);
});

test("the picker works from the keyboard", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  await enterRoom(page, "bo");
  const input = page.getByLabel("Message");
  await page.keyboard.type("so ");
  const button = page.getByRole("button", { name: "Insert an emoji" });
  assert.equal(await button.getAttribute("aria-expanded"), "false");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "emoji-button");
  await page.keyboard.press("Enter");
  const picker = page.locator("#emoji-picker");
  await picker.waitFor({ state: "visible" });
  assert.equal(await button.getAttribute("aria-expanded"), "true");
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-label")), "smile", "the focus is on the first emoji");

  // Escape closes it and gives the focus back to the button.
  await page.keyboard.press("Escape");
  assert.equal(await picker.isVisible(), false);
  assert.equal(await page.evaluate(() => document.activeElement?.id), "emoji-button");

  // Arrows move through the grid; Enter puts the emoji where the caret was.
  await page.keyboard.press("Enter");
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("ArrowDown");
  const chosen = await page.evaluate(() => document.activeElement?.textContent);
  const all = await picker.locator("button").allTextContents();
  assert.equal(all.indexOf(chosen), 1 + 8, "one right and one row down");
  await page.keyboard.press("Enter");
  assert.equal(await picker.isVisible(), false);
  assert.equal(await page.evaluate(() => document.activeElement?.id), "message");
  assert.equal(await input.inputValue(), `so ${chosen}`);

  // With the mouse, too.
  await button.click();
  await picker.getByRole("button", { name: "fire" }).click();
  assert.equal(await input.inputValue(), `so ${chosen}🔥`);
  await page.keyboard.press("Enter");
  await eventually("the message", async () => (await messages(page)).includes(`<bo> so ${chosen}🔥`));
  assert.deepEqual(browser.problems, []);
});
