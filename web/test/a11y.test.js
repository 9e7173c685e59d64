// An automated accessibility audit (axe-core, WCAG 2.1 A and AA rules) of
// every screen, in the light and the dark scheme, at desktop and phone
// width. It complements, and does not replace, the keyboard and focus
// checks of the other tests. axe-core is injected into the page, so this
// browser alone runs with the Content-Security-Policy bypassed.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { after, before, test } from "node:test";
import {
  PHONE,
  TcpClient,
  eventually,
  joinAs,
  launchBrowser,
  skipReason,
  startRelay,
  startServer,
} from "./support.js";

const skip = skipReason();
const AXE = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
/** A 1 × 1 PNG. */
const PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

let server;
let relay;
const browsers = [];

before(async () => {
  if (skip) return;
  server = await startServer({ args: ["--max-active", "1"] });
  relay = await startRelay(server.webPort);
});

after(async () => {
  for (const b of browsers) await b.close();
  await relay?.close();
  await server?.stop();
});

/** Runs axe on the page as it is; returns the violations, one line each. */
async function audit(page, where) {
  await page.addScriptTag({ path: AXE });
  const results = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  return results.violations.map(
    (v) => `${where}: ${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`,
  );
}

for (const colorScheme of ["light", "dark"]) {
  test(`every screen passes axe in the ${colorScheme} scheme`, { skip: skip ?? false }, async () => {
    const browser = await launchBrowser({ colorScheme, bypassCSP: true });
    browsers.push(browser);
    const found = [];
    const who = colorScheme === "light" ? "l" : "d";
    const member = await TcpClient.join(server.port, `member-${who}`);
    member.send({ type: "say", text: "hello, auditors" });

    // The name prompt, with a problem shown.
    const queued = await browser.open(server.url);
    found.push(...(await audit(queued, "name")));
    await joinAs(queued, " ");
    found.push(...(await audit(queued, "name with a problem")));

    // The queue, behind the member.
    await joinAs(queued, `waiting-${who}`);
    await queued.locator("#queue-text").waitFor({ state: "visible" });
    found.push(...(await audit(queued, "queue")));
    await queued.setViewportSize(PHONE);
    found.push(...(await audit(queued, "queue (phone)")));

    // The room, once the member leaves.
    await member.leave();
    await queued.locator("#room-screen").waitFor({ state: "visible" });
    await queued.getByLabel("Message").fill("x".repeat(5000));
    await eventually("the welcome", async () => (await queued.locator("#log li").count()) >= 2);
    found.push(...(await audit(queued, "room (phone, a line too long)")));
    await queued.getByRole("button", { name: /^Users/ }).click();
    found.push(...(await audit(queued, "room (phone, users open)")));
    await queued.setViewportSize({ width: 1280, height: 800 });
    await queued.getByLabel("Message").fill("");
    // The member's message was written before: it shows as an earlier one.
    await queued.locator("#log li.earlier").first().waitFor();
    found.push(...(await audit(queued, "room")));

    // The emoji completion and the picker, open.
    await queued.getByLabel("Message").pressSequentially(":smi");
    await queued.locator("#emoji-suggestions").waitFor({ state: "visible" });
    found.push(...(await audit(queued, "room (emoji suggestions)")));
    await queued.keyboard.press("Escape");
    await queued.getByRole("button", { name: "Insert an emoji" }).click();
    found.push(...(await audit(queued, "room (emoji picker)")));
    await queued.keyboard.press("Escape");

    // A whisper (to oneself), a file on its way and a picture received.
    await queued.getByLabel("Message").fill(`/msg waiting-${who} a note to self`);
    await queued.getByLabel("Message").press("Enter");
    await queued.locator("#log li.whisper").waitFor();
    const chooser = queued.waitForEvent("filechooser");
    await queued.getByRole("button", { name: "Attach a file" }).click();
    await (await chooser).setFiles({ name: "pixel.png", mimeType: "image/png", buffer: Buffer.from(PIXEL, "base64") });
    await eventually("the upload", async () => (await queued.locator("#attachment-state").textContent()).startsWith("Ready"));
    found.push(...(await audit(queued, "room (a file ready to send)")));
    await queued.getByLabel("Message").press("Enter");
    await queued.locator("#log li.message:not(.earlier) img.preview").waitFor();
    found.push(...(await audit(queued, "room (a whisper and a picture)")));

    // The goodbye.
    await queued.getByRole("button", { name: "Leave" }).click();
    await queued.locator("#left-screen").waitFor({ state: "visible" });
    found.push(...(await audit(queued, "left")));
    assert.deepEqual(found, []);
  });
}

test("the expected wait and a held place pass axe", { skip: skip ?? false }, async () => {
  // Six promotions through the one seat, so that the server estimates waits.
  let member = await TcpClient.join(server.port, "cycle-0");
  for (let i = 1; i <= 6; i += 1) {
    const next = await TcpClient.connect(server.port);
    next.send({ type: "hello", name: `cycle-${i}` });
    await next.nextType("queued");
    await member.leave();
    await next.nextType("welcome");
    member = next;
  }
  for (const colorScheme of ["light", "dark"]) {
    const browser = await launchBrowser({ colorScheme, bypassCSP: true });
    browsers.push(browser);
    const found = [];
    // Through the relay, whose connections the test cuts.
    const page = await browser.open(relay.url);
    const status = () => page.locator("#status").textContent();
    const held = async (where) => {
      relay.down();
      relay.cut();
      await eventually("the held place", async () => /your place is held for/.test(await status()));
      found.push(...(await audit(page, where)));
      relay.up();
    };
    await joinAs(page, `held-${colorScheme}`);
    await page.locator("#queue-eta").waitFor({ state: "visible" });
    found.push(...(await audit(page, "queue (expected wait)")));
    await held("queue (place held)");
    await eventually("queued again", async () => (await status()).includes("waiting in the queue"), 20_000);

    await member.leave();
    await page.locator("#room-screen").waitFor({ state: "visible" });
    await held("room (place held)");
    await eventually("back in the room", async () => (await status()).startsWith("connected as"), 20_000);
    found.push(...(await audit(page, "room (place taken back)")));
    await page.getByRole("button", { name: "Leave" }).click();
    await page.locator("#left-screen").waitFor({ state: "visible" });
    // Someone takes the seat, so that the next page waits again.
    member = await TcpClient.join(server.port, `seat-${colorScheme}`);
    assert.deepEqual(found, []);
  }
  member.close();
});
