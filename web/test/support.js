// Test support: the real `anteroom serve` as a child process, a small TCP
// client (4-byte big-endian length + one MessagePack map), and headless
// Chromium driven by playwright-core.
//
// ANTEROOM_BIN names the anteroom binary (the Rust wrapper test
// crates/anteroom/tests/browser.rs sets it). Without it, or without
// /usr/bin/chromium, the tests are skipped with the reason printed.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { decode, encode } from "@msgpack/msgpack";

export const CHROMIUM = "/usr/bin/chromium";
export const BIN = process.env.ANTEROOM_BIN ?? "";
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** How long a test waits for something it expects. */
export const WAIT_MS = 10_000;

/** Phone and desktop viewports for screenshots. */
export const PHONE = { width: 360, height: 740 };
export const DESKTOP = { width: 1280, height: 800 };

/** Why the tests cannot run here, or null. Under CI a missing tool fails instead. */
export function skipReason({ browser = true } = {}) {
  let why = null;
  if (!BIN) {
    why = "ANTEROOM_BIN is not set (cargo test sets it; or ANTEROOM_BIN=../target/debug/anteroom npm run test:browser)";
  } else if (!existsSync(BIN)) {
    why = `ANTEROOM_BIN=${BIN} does not exist`;
  } else if (browser && !existsSync(CHROMIUM)) {
    why = `${CHROMIUM} is missing (apt-get install chromium)`;
  }
  if (why !== null) {
    const ci = process.env.CI ?? "";
    if (ci !== "" && ci !== "false") {
      throw new Error(`required under CI: ${why}`);
    }
    console.log(`skipped: ${why}`);
  }
  return why;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value, failing after `ms`. */
export async function eventually(what, probe, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) {
      return last;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; last saw ${JSON.stringify(last)}`);
    }
    await sleep(50);
  }
}

/** A port that was free a moment ago, for the web listener. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- the server

/**
 * Starts `anteroom serve` on 127.0.0.1: the chat and metrics listeners on
 * port 0 (or `listen`), the web listener on `webPort`, with `args` added and
 * `env` (`ANTEROOM_*` settings) set. Resolves once the server has logged the
 * address of its TCP listener.
 */
export async function startServer({ webPort, listen = "127.0.0.1:0", args = [], env: settings = {} } = {}) {
  webPort ??= await freePort();
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("ANTEROOM_")) {
      env[key] = value;
    }
  }
  // Every test client comes from 127.0.0.1: the per-address limits are off.
  Object.assign(env, {
    RUST_LOG: "info",
    NO_COLOR: "1",
    ANTEROOM_MAX_CONNECTIONS_PER_IP: "0",
    ANTEROOM_CONNECTION_RATE_PER_IP: "0",
    ANTEROOM_STORE: "memory",
  }, settings);
  // Uploaded files go to a directory of each server's own, unless a test
  // names one: tests never share files, nor leave them behind.
  const ownDir = args.includes("--data-dir") ? null : await mkdtemp(join(tmpdir(), "anteroom-data-"));
  const store = ownDir === null ? [] : ["--data-dir", ownDir];
  const argv = [
    "serve",
    "--listen",
    listen,
    "--metrics-listen",
    "127.0.0.1:0",
    "--web-listen",
    `127.0.0.1:${webPort}`,
    ...store,
    ...args,
  ];
  const child = spawn(BIN, argv, { env, stdio: ["ignore", "pipe", "inherit"] });
  const log = [];
  const echo = Boolean(process.env.TEST_SERVER_LOGS);
  const lines = createInterface({ input: child.stdout });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not log its address; log:\n${log.join("\n")}`)), 20_000);
    lines.on("line", (line) => {
      log.push(line);
      if (echo) {
        console.error(`server: ${line}`);
      }
      const found = /listening on (\S+)/.exec(line);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? signal}) before listening; log:\n${log.join("\n")}`));
    });
  });
  const addr = await listening.catch(async (error) => {
    child.kill("SIGKILL");
    if (ownDir !== null) {
      await rm(ownDir, { recursive: true, force: true });
    }
    throw error;
  });
  const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
  // The web listener binds at start-up too: wait until it answers.
  const webUrl = `http://127.0.0.1:${webPort}`;
  await eventually(`the web listener on ${webUrl}`, async () => {
    try {
      const res = await fetch(`${webUrl}/`);
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    }
  });
  return {
    child,
    log,
    port,
    webPort,
    url: `${webUrl}/`,
    listen: `127.0.0.1:${port}`,
    /** Stops the server with SIGTERM (a clean shutdown) and waits for it to exit. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      if (ownDir !== null) {
        await rm(ownDir, { recursive: true, force: true });
      }
    },
  };
}

// ---------------------------------------------------------------- a TCP client

/** A raw protocol client over TCP; answers the server's pings itself. */
export class TcpClient {
  static async connect(port) {
    const socket = net.connect(port, "127.0.0.1");
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    return new TcpClient(socket);
  }

  constructor(socket) {
    this.socket = socket;
    this.frames = [];
    this.waiters = [];
    this.closed = false;
    let buffer = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      while (buffer.length >= 4) {
        const length = buffer.readUInt32BE(0);
        if (buffer.length < 4 + length) {
          break;
        }
        const frame = decode(buffer.subarray(4, 4 + length));
        buffer = buffer.subarray(4 + length);
        if (frame.type === "ping") {
          this.send({ type: "pong", id: frame.id });
          continue;
        }
        this.frames.push(frame);
        this.wake();
      }
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    socket.on("error", () => {});
  }

  wake() {
    for (const waiter of this.waiters.splice(0)) {
      waiter();
    }
  }

  send(map) {
    const payload = encode(map);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(payload.length);
    this.socket.write(Buffer.concat([header, payload]));
  }

  /** Takes the next frame that satisfies `match`, dropping the ones before it. */
  async next(match, what = "a frame", ms = WAIT_MS) {
    const deadline = Date.now() + ms;
    for (;;) {
      const at = this.frames.findIndex(match);
      if (at >= 0) {
        const [frame] = this.frames.splice(0, at + 1).slice(-1);
        return frame;
      }
      if (this.closed) {
        throw new Error(`connection closed while waiting for ${what}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out waiting for ${what}; frames: ${JSON.stringify(this.frames)}`);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  nextType(type, ms) {
    return this.next((f) => f.type === type, `a ${type} frame`, ms);
  }

  /** Connects and joins as `name` (asking for `features`, if given), expecting `welcome`. */
  static async join(port, name, features) {
    const client = await TcpClient.connect(port);
    client.send(features ? { type: "hello", name, features } : { type: "hello", name });
    const first = await client.next((f) => f.type === "welcome" || f.type === "queued" || f.type === "error" || f.type === "bye");
    if (first.type !== "welcome") {
      throw new Error(`${name} expected welcome, got ${JSON.stringify(first)}`);
    }
    return client;
  }

  /** Sends `bye` and waits for the server to close. */
  async leave() {
    this.send({ type: "bye" });
    await this.nextType("bye");
    this.close();
  }

  close() {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------- a network that fails

/**
 * A TCP relay in front of the web listener, for a page opened at its `url`:
 * `cut()` drops every connection through it at once (a reset on both sides,
 * no WebSocket close, no `bye`, as when a network fails), and between
 * `down()` and `up()` it accepts nothing, as an unreachable server.
 */
export async function startRelay(targetPort) {
  const pairs = new Set();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on("error", end);
      socket.on("close", end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    /** How many connections go through it now. */
    get connections() {
      return pairs.size;
    },
    cut() {
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
    },
    down() {
      open = false;
    },
    up() {
      open = true;
    },
    async close() {
      open = false;
      this.cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// ---------------------------------------------------------------- the browser

export const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Launches headless Chromium with a fresh profile. Every page opened through
 * `open` fails the test if the page logs an error (a Content-Security-Policy
 * refusal included) or throws.
 */
export async function launchBrowser({ colorScheme = "light", bypassCSP = false } = {}) {
  const { chromium } = await import("playwright-core");
  const profile = await mkdtemp(join(tmpdir(), "anteroom-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: DESKTOP,
    colorScheme,
    // Only the accessibility check, which injects axe-core, sets this.
    bypassCSP,
  });
  const problems = [];
  return {
    context,
    problems,
    /** Opens the client at `url` in a new tab. */
    async open(url, viewport = DESKTOP) {
      const page = await context.newPage();
      await page.setViewportSize(viewport);
      page.on("console", (message) => {
        if (message.type() === "error") {
          problems.push(`console: ${message.text()}`);
        }
      });
      page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
      await page.goto(url);
      return page;
    },
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Records the frames of every WebSocket the page opens, decoded:
 * `{ sent: [...], received: [...] }`, pings and pongs left out.
 */
export function recordFrames(page) {
  const record = { sent: [], received: [] };
  const add = (list, payload) => {
    if (typeof payload === "string") return;
    const frame = decode(payload);
    if (frame.type !== "ping" && frame.type !== "pong") list.push(frame);
  };
  page.on("websocket", (ws) => {
    ws.on("framesent", ({ payload }) => add(record.sent, payload));
    ws.on("framereceived", ({ payload }) => add(record.received, payload));
  });
  return record;
}

/** Types a name on the name screen and presses Enter. */
export async function joinAs(page, name) {
  await page.getByLabel("Your name").fill(name);
  await page.getByLabel("Your name").press("Enter");
}

/**
 * The texts of the conversation's entries: `<from> text` for messages (with
 * ` [file: NAME]` for an attachment), `[from → to] text` for whispers and
 * `* text` for notices.
 */
export function entries(page) {
  return page.locator("#log li").evaluateAll((items) =>
    items.map((li) => {
      const names = li.querySelectorAll(".name");
      const body = li.querySelector(".body")?.textContent ?? "";
      if (li.classList.contains("whisper")) {
        return `[${names[0].textContent} → ${names[1].textContent}] ${body}`;
      }
      const file = li.querySelector(".file-link");
      const attached = file ? ` [file: ${file.textContent}]` : "";
      return names.length > 0 ? `<${names[0].textContent}> ${body}${attached}` : `* ${body}`;
    }),
  );
}

/** Waits until the conversation holds an entry equal to `text`. */
export function seeEntry(page, text) {
  return eventually(JSON.stringify(text), async () => (await entries(page)).includes(text));
}

/** Says `text` on the input line and presses Enter. */
export async function say(page, text) {
  const input = page.getByLabel("Message");
  await input.fill(text);
  await input.press("Enter");
}

/** Joins as `name` and waits for the room. */
export async function enterRoom(page, name) {
  await joinAs(page, name);
  await page.locator("#room-screen").waitFor({ state: "visible" });
}

/** The message entries only, as `<from> text`. */
export async function messages(page) {
  return (await entries(page)).filter((e) => e.startsWith("<"));
}

/** The roster, in order. */
export function roster(page) {
  return page.locator("#roster .name").allTextContents();
}

/**
 * Saves a screenshot as docs/screenshots/NAME.png when UPDATE_SCREENSHOTS is
 * set (or the file is missing), and otherwise into a temporary directory, so
 * that running the tests does not touch the committed images.
 */
export async function screenshot(page, name) {
  const committed = join(ROOT, "docs", "screenshots", `${name}.png`);
  const update = Boolean(process.env.UPDATE_SCREENSHOTS) || !existsSync(committed);
  const dir = update ? dirname(committed) : join(tmpdir(), "anteroom-screenshots");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${name}.png`);
  await writeFile(file, await page.screenshot({ animations: "disabled", caret: "hide" }));
  return file;
}
