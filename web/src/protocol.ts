// The anteroom protocol, version 1.1, as the browser sees it over WebSocket:
// one binary message holds exactly one MessagePack map, no length prefix.

import { Decoder, encode } from "@msgpack/msgpack";

/** The WebSocket subprotocol the server selects when offered. */
export const SUBPROTOCOL = "anteroom.v1";

/** Server frames can be large (a `welcome` listing a big room): accept up to 16 MiB. */
export const MAX_SERVER_FRAME = 16 * 1024 * 1024;

/** The version 1.1 features this client asks for; `welcome.features` says which it got. */
export const WANTED_FEATURES = ["history", "whisper", "files", "lagging", "resume", "eta", "presence_batch"] as const;

export type Feature = (typeof WANTED_FEATURES)[number];

export type ClientFrame =
  | {
      type: "hello";
      name: string;
      features: string[];
      /** The latest resume token, to take a held place back after a drop. */
      resume?: string;
      /** With `resume`: the id of the last `message` this page saw. */
      last_id?: number;
    }
  | { type: "say"; text: string; attachment?: string }
  | { type: "history"; before?: number; limit: number }
  | { type: "whisper"; to: string; text: string }
  | { type: "who" }
  | { type: "pong"; id: unknown }
  | { type: "bye" };

/** A file attached to a message, as the server describes it. */
export interface Attachment {
  /** An absolute path on the page's own origin (`/files/…`). */
  url: string;
  name: string;
  size: number;
  mime: string;
}

export interface MessageFrame {
  type: "message";
  id: number;
  from: string;
  text: string;
  ts: number;
  attachment?: Attachment;
}

export interface WelcomeFrame {
  type: "welcome";
  name: string;
  users: string[];
  capacity: number;
  text: string;
  /** Granted features; empty from a server that knows none. */
  features: string[];
  uploadToken?: string;
  maxUploadBytes?: number;
  /** With `resume`: the token that takes this place back after a drop. */
  resume?: string;
  /** With `resume`: how many seconds the server holds a dropped place. */
  resumeGraceS?: number;
  /** Answering a `hello` that carried a token: whether the held place was taken back. */
  resumed?: boolean;
}

export interface QueuedFrame {
  type: "queued";
  position: number;
  waiting: number;
  text: string;
  /** Granted features: on the first `queued` of a connection only. */
  features?: string[];
  resume?: string;
  resumeGraceS?: number;
  resumed?: boolean;
  /** With `eta`: seconds until the expected promotion, when the server can tell. */
  etaS?: number;
}

/** One departure in a `presence` frame. */
export interface Departure {
  name: string;
  reason: string;
}

export type ServerFrame =
  | WelcomeFrame
  | QueuedFrame
  | MessageFrame
  | { type: "history"; messages: MessageFrame[]; more: boolean; epoch: string }
  | { type: "whisper"; from: string; to: string; text: string; ts: number }
  | { type: "joined"; name: string; ts: number }
  | { type: "left"; name: string; reason: string; ts: number }
  | { type: "presence"; joined: string[]; left: Departure[]; ts: number }
  | { type: "users"; names: string[] }
  | { type: "gap"; missed: number }
  | { type: "lagging"; queued: number; limit: number }
  | { type: "error"; code: string; text: string }
  | { type: "ping"; id: unknown }
  | { type: "bye"; reason: string; text: string };

export function encodeFrame(frame: ClientFrame): Uint8Array {
  return encode(frame);
}

const decoder = new Decoder();

type Fields = Record<string, unknown>;

const str = (v: unknown): v is string => typeof v === "string";
const num = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const strs = (v: unknown): v is string[] => Array.isArray(v) && v.every(str);
const isMap = (v: unknown): v is Fields =>
  v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);

/**
 * Only a path on the page's own origin is a usable file address: anything
 * else (another host, `javascript:`) is never put into a link or an image.
 */
export function isFileUrl(v: unknown): v is string {
  return str(v) && /^\/[^/\\]/.test(v) && !/[\s"'<>\\]/.test(v);
}

function attachmentOf(v: unknown): Attachment | null {
  if (!isMap(v)) {
    return null;
  }
  return isFileUrl(v.url) && str(v.name) && num(v.size) && str(v.mime)
    ? { url: v.url, name: v.name, size: v.size, mime: v.mime }
    : null;
}

function messageOf(f: Fields): MessageFrame | null {
  if (!(num(f.id) && str(f.from) && str(f.text) && num(f.ts))) {
    return null;
  }
  const message: MessageFrame = { type: "message", id: f.id, from: f.from, text: f.text, ts: f.ts };
  const attachment = attachmentOf(f.attachment);
  if (attachment !== null) {
    message.attachment = attachment;
  }
  return message;
}

function welcomeOf(f: Fields): WelcomeFrame | null {
  if (!(str(f.name) && strs(f.users) && num(f.capacity) && str(f.text))) {
    return null;
  }
  const welcome: WelcomeFrame = {
    type: "welcome",
    name: f.name,
    users: f.users,
    capacity: f.capacity,
    text: f.text,
    features: strs(f.features) ? f.features : [],
  };
  if (str(f.upload_token)) {
    welcome.uploadToken = f.upload_token;
  }
  if (num(f.max_upload_bytes)) {
    welcome.maxUploadBytes = f.max_upload_bytes;
  }
  Object.assign(welcome, resumeFieldsOf(f));
  return welcome;
}

/** The fields `resume` adds to `welcome` and `queued`, those that are well-formed. */
function resumeFieldsOf(f: Fields): Pick<QueuedFrame, "resume" | "resumeGraceS" | "resumed"> {
  const fields: Pick<QueuedFrame, "resume" | "resumeGraceS" | "resumed"> = {};
  if (str(f.resume) && f.resume !== "") {
    fields.resume = f.resume;
  }
  if (num(f.resume_grace_s) && f.resume_grace_s >= 0) {
    fields.resumeGraceS = f.resume_grace_s;
  }
  if (typeof f.resumed === "boolean") {
    fields.resumed = f.resumed;
  }
  return fields;
}

function queuedOf(f: Fields): QueuedFrame | null {
  if (!(num(f.position) && num(f.waiting) && str(f.text))) {
    return null;
  }
  const queued: QueuedFrame = { type: "queued", position: f.position, waiting: f.waiting, text: f.text };
  if (strs(f.features)) {
    queued.features = f.features;
  }
  if (num(f.eta_s) && f.eta_s >= 0) {
    queued.etaS = f.eta_s;
  }
  return Object.assign(queued, resumeFieldsOf(f));
}

function presenceOf(f: Fields): ServerFrame | null {
  if (!(Array.isArray(f.joined) && Array.isArray(f.left) && num(f.ts))) {
    return null;
  }
  // As with history, a malformed entry is left out rather than the whole frame.
  const joined = f.joined.filter(str);
  const left = f.left.flatMap((d) =>
    isMap(d) && str(d.name) ? [{ name: d.name, reason: str(d.reason) ? d.reason : "" }] : [],
  );
  return { type: "presence", joined, left, ts: f.ts };
}

/**
 * Decodes one server message. Anything that is not a map with the fields
 * its `type` needs is ignored (`null`), as are types this client does not
 * know: unknown keys and frames are the protocol's room to grow.
 */
export function decodeFrame(data: ArrayBuffer): ServerFrame | null {
  if (data.byteLength === 0 || data.byteLength > MAX_SERVER_FRAME) {
    return null;
  }
  let value: unknown;
  try {
    value = decoder.decode(new Uint8Array(data));
  } catch {
    return null;
  }
  if (!isMap(value)) {
    return null;
  }
  const f = value;
  switch (f.type) {
    case "welcome":
      return welcomeOf(f);
    case "queued":
      return queuedOf(f);
    case "message":
      return messageOf(f);
    case "history": {
      if (!(Array.isArray(f.messages) && typeof f.more === "boolean" && str(f.epoch))) {
        return null;
      }
      // A malformed entry is left out rather than losing the whole page.
      const messages = f.messages.flatMap((m) => (isMap(m) ? (messageOf(m) ?? []) : []));
      return { type: "history", messages, more: f.more, epoch: f.epoch };
    }
    case "whisper":
      return str(f.from) && str(f.to) && str(f.text) && num(f.ts)
        ? { type: "whisper", from: f.from, to: f.to, text: f.text, ts: f.ts }
        : null;
    case "joined":
      return str(f.name) && num(f.ts) ? { type: "joined", name: f.name, ts: f.ts } : null;
    case "left":
      return str(f.name) && str(f.reason) && num(f.ts)
        ? { type: "left", name: f.name, reason: f.reason, ts: f.ts }
        : null;
    case "presence":
      return presenceOf(f);
    case "users":
      return strs(f.names) ? { type: "users", names: f.names } : null;
    case "gap":
      return num(f.missed) ? { type: "gap", missed: f.missed } : null;
    case "lagging":
      return num(f.queued) && num(f.limit) ? { type: "lagging", queued: f.queued, limit: f.limit } : null;
    case "error":
      return str(f.code) ? { type: "error", code: f.code, text: str(f.text) ? f.text : "" } : null;
    case "ping":
      return { type: "ping", id: f.id };
    case "bye":
      return str(f.reason) ? { type: "bye", reason: f.reason, text: str(f.text) ? f.text : "" } : null;
    default:
      return null;
  }
}
