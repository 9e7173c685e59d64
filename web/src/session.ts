// One user's stay: the WebSocket, the hello, the answers to pings, and the
// reconnecting, with the terminal client's rules (docs/chat.md, "Losing the
// server"): try again after 0.5 s, twice as long each time up to 10 s, under
// the same name; after a lost connection `name_taken` is retried too. With
// `resume`, the `hello` after a drop carries the latest token and the id of
// the last message seen, so that the server gives the held place back.

import {
  type ClientFrame,
  type QueuedFrame,
  type ServerFrame,
  SUBPROTOCOL,
  WANTED_FEATURES,
  type WelcomeFrame,
  decodeFrame,
  encodeFrame,
} from "./protocol";

export const FIRST_BACKOFF_MS = 500;
export const MAX_BACKOFF_MS = 10_000;
/** How long the server has to accept the connection, and then to answer `hello`. */
export const STEP_TIMEOUT_MS = 10_000;
/** How long to wait for the server's goodbye after sending `bye`. */
const LEAVE_TIMEOUT_MS = 2_000;
/** After a server `bye` for these reasons the server holds no place: the token is forgotten. */
const NOTHING_HELD = new Set(["protocol_error", "shutdown", "server_full"]);

/** A place the server holds for this stay since its connection dropped. */
export interface Hold {
  /** When the connection dropped (Unix time in milliseconds). */
  since: number;
  /** When the server gives the place up, if it said how long it holds one. */
  until: number | null;
}

type Hello = Extract<ClientFrame, { type: "hello" }>;

export type Phase =
  | { kind: "connecting"; attempt: number }
  /** Connected, `hello` sent, no answer yet. */
  | { kind: "joining"; attempt: number }
  | { kind: "queued" }
  | { kind: "room" }
  | {
      kind: "retrying";
      reason: string;
      attempt: number;
      delayMs: number;
      at: number;
      /** Whether the connection just lost had been let in (rather than a failed attempt). */
      dropped: boolean;
    }
  | { kind: "ended" };

export interface SessionEvents {
  /** The connection state changed. */
  phase(phase: Phase): void;
  /** A frame from the server (pings are answered here and not passed on). */
  frame(frame: ServerFrame): void;
  /** The name was refused on the first join: back to the prompt. */
  refused(code: string, text: string): void;
  /** The stay is over: the user left, or the server said goodbye to a `bye`. */
  ended(): void;
}

/** The WebSocket address of the page's own listener. */
export function socketUrl(loc: Location = window.location): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

export class Session {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private backoff = FIRST_BACKOFF_MS;
  /** Whether this stay has ever been let in (queued or welcomed). */
  private everAdmitted = false;
  /** Whether the current connection has been let in. */
  private admitted = false;
  private leaving = false;
  private over = false;
  /** Why the current connection is ending, when the server said so. */
  private lostReason: string | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private current: Phase = { kind: "connecting", attempt: 1 };
  /** The latest resume token; null when `resume` was not granted or nothing can be resumed. */
  private token: string | null = null;
  /** How long the server holds a dropped place, in seconds, when it said so. */
  private graceS: number | null = null;
  /** The id of the newest `message` seen since the last fresh `welcome`. */
  private lastId: number | null = null;
  private held: Hold | null = null;

  constructor(
    readonly name: string,
    private readonly url: string,
    private readonly on: SessionEvents,
  ) {}

  get phase(): Phase {
    return this.current;
  }

  /** The place the server holds while this page reconnects with a token, or null. */
  get hold(): Hold | null {
    return this.held;
  }

  start(): void {
    this.connect();
  }

  /** Sends a frame if the connection is open; says whether it was sent. */
  send(frame: ClientFrame): boolean {
    if (this.ws === null || this.ws.readyState !== WebSocket.OPEN || this.leaving) {
      return false;
    }
    this.ws.send(encodeFrame(frame));
    return true;
  }

  /** Leaves: `bye` if connected, and no more reconnecting. */
  leave(): void {
    if (this.over || this.leaving) {
      return;
    }
    const open = this.ws !== null && this.ws.readyState === WebSocket.OPEN;
    if (open) {
      this.ws!.send(encodeFrame({ type: "bye" }));
    }
    this.leaving = true;
    this.clearTimer();
    if (open) {
      this.timer = setTimeout(() => this.finish(), LEAVE_TIMEOUT_MS);
    } else {
      this.finish();
    }
  }

  private setPhase(phase: Phase): void {
    this.current = phase;
    this.on.phase(phase);
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private connect(): void {
    this.attempt += 1;
    this.admitted = false;
    this.lostReason = null;
    this.setPhase({ kind: "connecting", attempt: this.attempt });
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url, SUBPROTOCOL);
    } catch (error) {
      this.lost(`cannot open ${this.url}: ${String(error)}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    this.timer = setTimeout(() => this.lost("the server did not accept the connection in time"), STEP_TIMEOUT_MS);
    ws.onopen = () => {
      opened = true;
      this.clearTimer();
      ws.send(encodeFrame(this.hello()));
      this.setPhase({ kind: "joining", attempt: this.attempt });
      this.timer = setTimeout(() => this.lost("the server did not answer hello in time"), STEP_TIMEOUT_MS);
    };
    ws.onmessage = (event: MessageEvent) => {
      if (event.data instanceof ArrayBuffer) {
        const frame = decodeFrame(event.data);
        if (frame !== null) {
          this.receive(frame);
        }
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) {
        return;
      }
      if (this.leaving) {
        this.finish();
        return;
      }
      this.lost(this.lostReason ?? (opened ? "connection closed" : "could not connect"));
    };
  }

  private hello(): Hello {
    const hello: Hello = { type: "hello", name: this.name, features: [...WANTED_FEATURES] };
    if (this.token !== null) {
      hello.resume = this.token;
      if (this.lastId !== null) {
        hello.last_id = this.lastId;
      }
    }
    return hello;
  }

  /** Keeps what `resume` needs from a `welcome` or `queued`. */
  private keepResume(frame: WelcomeFrame | QueuedFrame, first: boolean): void {
    if (frame.resume !== undefined) {
      this.token = frame.resume;
    } else if (first) {
      // Not granted on this connection: an older token means nothing to it.
      this.token = null;
    }
    if (frame.resumeGraceS !== undefined) {
      this.graceS = frame.resumeGraceS;
    }
    if (frame.type === "welcome" && frame.resumed !== true) {
      // A fresh entry: the history that follows says what this page has seen.
      this.lastId = null;
    }
  }

  private saw(id: number): void {
    if (this.lastId === null || id > this.lastId) {
      this.lastId = id;
    }
  }

  private receive(frame: ServerFrame): void {
    switch (frame.type) {
      case "ping":
        this.send({ type: "pong", id: frame.id });
        return;
      case "welcome":
      case "queued": {
        const first = !this.admitted;
        if (first) {
          this.admitted = true;
          this.everAdmitted = true;
          this.backoff = FIRST_BACKOFF_MS;
          this.held = null;
          this.clearTimer();
        }
        this.keepResume(frame, first);
        this.on.frame(frame);
        this.setPhase({ kind: frame.type === "welcome" ? "room" : "queued" });
        return;
      }
      case "message":
        this.saw(frame.id);
        this.on.frame(frame);
        return;
      case "history":
        for (const message of frame.messages) {
          this.saw(message.id);
        }
        this.on.frame(frame);
        return;
      case "error":
        if (!this.admitted && (frame.code === "name_taken" || frame.code === "name_invalid")) {
          if (frame.code === "name_taken" && this.everAdmitted) {
            // Rejoining: the server may still hold the name for the old connection.
            this.lost("the name is still held by the old connection");
          } else {
            this.refuse(frame.code, frame.text);
          }
          return;
        }
        this.on.frame(frame);
        return;
      case "bye":
        this.on.frame(frame);
        if (this.leaving || frame.reason === "bye") {
          this.finish();
        } else {
          if (NOTHING_HELD.has(frame.reason)) {
            this.token = null;
            this.held = null;
          }
          this.lostReason = `server closed the connection: ${frame.reason}`;
          this.lost(this.lostReason);
        }
        return;
      default:
        this.on.frame(frame);
    }
  }

  /** Drops the current socket without reporting its close. */
  private drop(): void {
    this.clearTimer();
    const ws = this.ws;
    this.ws = null;
    if (ws !== null) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
        ws.close(1000);
      }
    }
  }

  private refuse(code: string, text: string): void {
    this.drop();
    this.over = true;
    this.held = null;
    this.setPhase({ kind: "ended" });
    this.on.refused(code, text);
  }

  private finish(): void {
    if (this.over) {
      return;
    }
    this.drop();
    this.over = true;
    this.held = null;
    this.setPhase({ kind: "ended" });
    this.on.ended();
  }

  /** The connection is gone: try again after the backoff. */
  private lost(reason: string): void {
    if (this.over) {
      return;
    }
    const wasAdmitted = this.admitted;
    this.drop();
    const now = Date.now();
    if (wasAdmitted) {
      // The connection that was just lost had been let in: count afresh.
      this.attempt = 0;
      // With a token, the server holds the place from now on; failed
      // attempts after this do not move the deadline.
      this.held =
        this.token === null ? null : { since: now, until: this.graceS === null ? null : now + this.graceS * 1000 };
    }
    const delayMs = this.backoff;
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.setPhase({
      kind: "retrying",
      reason,
      attempt: this.attempt + 1,
      delayMs,
      at: now + delayMs,
      dropped: wasAdmitted,
    });
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delayMs);
  }
}
