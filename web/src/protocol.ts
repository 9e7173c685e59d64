// The anteroom protocol, version 1, as the browser sees it over WebSocket:
// one binary message holds exactly one MessagePack map, no length prefix.

import { Decoder, encode } from "@msgpack/msgpack";

/** The WebSocket subprotocol the server selects when offered. */
export const SUBPROTOCOL = "anteroom.v1";

/** Server frames can be large (a `welcome` listing a big room): accept up to 16 MiB. */
export const MAX_SERVER_FRAME = 16 * 1024 * 1024;

export type ClientFrame =
  | { type: "hello"; name: string }
  | { type: "say"; text: string }
  | { type: "who" }
  | { type: "pong"; id: unknown }
  | { type: "bye" };

export type ServerFrame =
  | { type: "welcome"; name: string; users: string[]; capacity: number; text: string }
  | { type: "queued"; position: number; waiting: number; text: string }
  | { type: "message"; id: number; from: string; text: string; ts: number }
  | { type: "joined"; name: string; ts: number }
  | { type: "left"; name: string; reason: string; ts: number }
  | { type: "users"; names: string[] }
  | { type: "gap"; missed: number }
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
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) {
    return null;
  }
  const f = value as Fields;
  switch (f.type) {
    case "welcome":
      return str(f.name) && strs(f.users) && num(f.capacity) && str(f.text)
        ? { type: "welcome", name: f.name, users: f.users, capacity: f.capacity, text: f.text }
        : null;
    case "queued":
      return num(f.position) && num(f.waiting) && str(f.text)
        ? { type: "queued", position: f.position, waiting: f.waiting, text: f.text }
        : null;
    case "message":
      return num(f.id) && str(f.from) && str(f.text) && num(f.ts)
        ? { type: "message", id: f.id, from: f.from, text: f.text, ts: f.ts }
        : null;
    case "joined":
      return str(f.name) && num(f.ts) ? { type: "joined", name: f.name, ts: f.ts } : null;
    case "left":
      return str(f.name) && str(f.reason) && num(f.ts)
        ? { type: "left", name: f.name, reason: f.reason, ts: f.ts }
        : null;
    case "users":
      return strs(f.names) ? { type: "users", names: f.names } : null;
    case "gap":
      return num(f.missed) ? { type: "gap", missed: f.missed } : null;
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
