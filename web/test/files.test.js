// Files: one page attaches a picture with the button and drops a text file
// on the conversation; the other page gets working download links (the
// bytes compared) and a preview of the picture. Sizes over the limit are
// refused before uploading; the server's refusals are explained.

import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import { after, before, test } from "node:test";
import {
  PHONE,
  enterRoom,
  eventually,
  launchBrowser,
  messages,
  say,
  screenshot,
  skipReason,
  startServer,
} from "./support.js";

const skip = skipReason();
const MAX_BYTES = 100_000;

let server;
let browser;

before(async () => {
  if (skip) return;
  // Two uploads a minute per connection: the third is refused.
  server = await startServer({ args: ["--max-upload-bytes", String(MAX_BYTES), "--upload-rate", "2"] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

function crc32(bytes) {
  let crc = ~0;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k += 1) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}

/** A `width` × `height` PNG of diagonal stripes (RGB, 8 bits). */
function png(width, height) {
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "latin1");
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const rows = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const at = y * (1 + width * 3) + 1 + x * 3;
      const stripe = Math.floor((x + y) / 12) % 2 === 0;
      rows.set(stripe ? [29, 78, 216] : [250, 204, 21], at);
    }
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk("IHDR", header), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

/** Fetches a link of the page from outside the browser. */
async function download(href) {
  const res = await fetch(new URL(href, server.url));
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

/** Drags a file onto the conversation and drops it, as a file manager would. */
async function dropFile(page, { name, mimeType, buffer }) {
  const dataTransfer = await page.evaluateHandle(
    ({ name, mimeType, bytes }) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], name, { type: mimeType }));
      return dt;
    },
    { name, mimeType, bytes: [...buffer] },
  );
  await page.dispatchEvent("#log", "dragenter", { dataTransfer });
  await page.dispatchEvent("#log", "dragover", { dataTransfer });
  assert.ok(await page.locator("#drop-target").isVisible(), "the drop target shows while dragging");
  await page.dispatchEvent("#log", "drop", { dataTransfer });
  assert.equal(await page.locator("#drop-target").isVisible(), false);
}

test("a picture and a dropped file reach the other member", { skip: skip ?? false }, async () => {
  const ann = await browser.open(server.url);
  await enterRoom(ann, "ann");
  const bo = await browser.open(server.url);
  await enterRoom(bo, "bo");

  // The attach button opens the file chooser.
  const picture = png(160, 90);
  const chooser = ann.waitForEvent("filechooser");
  await ann.getByRole("button", { name: "Attach a file" }).click();
  await (await chooser).setFiles({ name: "stripes.png", mimeType: "image/png", buffer: picture });
  const tray = ann.locator("#attachment");
  await eventually("the upload", async () => (await ann.locator("#attachment-state").textContent()).startsWith("Ready"));
  assert.match(await tray.locator("#attachment-name").textContent(), /^stripes\.png \(\d+(\.\d)? (B|KB)\)$/);
  await say(ann, "look at this");
  assert.equal(await tray.isVisible(), false, "sent: the tray empties");

  for (const page of [ann, bo]) {
    await eventually("the picture", async () => (await messages(page)).includes("<ann> look at this [file: stripes.png]"));
  }
  const entry = bo.locator("#log li.message").filter({ hasText: "look at this" });
  const link = entry.locator("a.file-link");
  const href = await link.getAttribute("href");
  assert.match(href, /^\/files\/[0-9a-f]{32}$/);
  assert.equal(await link.getAttribute("download"), "stripes.png");
  assert.match(await entry.locator(".file-size").textContent(), /^ \(\d+(\.\d)? (B|KB)\)$/);
  const { res, body } = await download(href);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "image/png");
  assert.match(res.headers.get("content-disposition") ?? "", /^attachment/);
  assert.ok(body.equals(picture), "the download is the file that was sent");
  // The preview is the same file, loaded and shown.
  const img = entry.locator("img.preview");
  assert.equal(await img.getAttribute("src"), href);
  assert.equal(await img.getAttribute("alt"), "stripes.png");
  await eventually("the preview", () => img.evaluate((el) => el.complete && el.naturalWidth === 160));

  // A file dropped on the conversation, sent with no text.
  const notes = Buffer.from("Notes in UTF-8: é, ü, 😀\n", "utf8");
  await dropFile(ann, { name: "notes ü.txt", mimeType: "text/plain", buffer: notes });
  await eventually("the upload", async () => (await ann.locator("#attachment-state").textContent()).startsWith("Ready"));
  await ann.getByLabel("Message").press("Enter");
  await eventually("the file", async () => (await messages(bo)).includes("<ann>  [file: notes ü.txt]"));
  const textEntry = bo.locator("#log li.message").filter({ hasText: "notes ü.txt" });
  assert.equal(await textEntry.locator("img").count(), 0, "no preview for text");
  const fetched = await download(await textEntry.locator("a.file-link").getAttribute("href"));
  assert.ok(fetched.body.equals(notes));
  assert.match(fetched.res.headers.get("content-type"), /^text\/plain/);
  assert.equal(fetched.res.headers.get("x-content-type-options"), "nosniff");

  // Too large: said at once, nothing uploaded.
  await dropFile(ann, { name: "big.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(MAX_BYTES + 1) });
  assert.equal(await ann.locator("#message-hint").textContent(), "big.bin is too large (100001 bytes): the server accepts files up to 100000 bytes.");
  assert.equal(await tray.isVisible(), false);

  // A third upload within the minute: the server's rate limit.
  await dropFile(ann, { name: "third.txt", mimeType: "text/plain", buffer: Buffer.from("3") });
  await eventually("the refusal", async () =>
    (await ann.locator("#attachment-state").textContent()).startsWith("Too many uploads in the last minute"),
  );
  assert.ok(await tray.evaluate((el) => el.classList.contains("failed")));
  await ann.getByRole("button", { name: "Remove" }).click();
  assert.equal(await tray.isVisible(), false);

  await say(ann, "/msg bo the stripes are for you");
  await eventually("the whisper", async () => (await bo.locator("#log li.whisper").count()) === 1);
  await bo.getByLabel("Message").fill("nice stripes");
  await screenshot(bo, "files");
  await bo.setViewportSize(PHONE);
  await screenshot(bo, "files-phone");
  // The refused upload is logged by the browser itself.
  assert.deepEqual(browser.problems.filter((p) => !p.includes("Failed to load resource")), []);
});

test("the server's refusals of an upload are explained", { skip: skip ?? false }, async () => {
  const page = await browser.open(server.url);
  await enterRoom(page, "cy");
  const state = page.locator("#attachment-state");
  // Answers the real server gives in situations a test cannot easily make
  // (an expired token, a proxy that dropped the length, a lower limit on the way).
  for (const [status, text] of [
    [401, "The server no longer accepts uploads from this connection (it was probably renewed); try again."],
    [411, "The server needs the length of the file first, and the browser did not send it."],
    [413, "a.txt is too large (1 B): the server accepts files up to 97.7 KB."],
    [500, "The upload failed (HTTP 500)."],
  ]) {
    await page.route("**/upload", (route) => route.fulfill({ status, body: "" }));
    await dropFile(page, { name: "a.txt", mimeType: "text/plain", buffer: Buffer.from("a") });
    await eventually(`the ${status} explained`, async () => (await state.textContent()) === text);
    await page.unroute("**/upload");
  }
  // Sending while the upload failed keeps the line.
  await say(page, "with the file");
  assert.equal(await page.getByLabel("Message").inputValue(), "with the file");
  assert.equal(await page.locator("#message-hint").textContent(), "The file was not uploaded: remove it, or choose it again.");
  assert.deepEqual(browser.problems.filter((p) => !p.includes("Failed to load resource")), []);
});
