// Pure helpers: name rules, byte counts, clocks, colours and the visible
// escapes that keep what others write from disguising itself.

/** Names are 1 to 32 characters (Unicode scalar values) after trimming. */
export const NAME_MAX_CHARS = 32;

/** The server's default `max_message_bytes`: `say.text` is counted in UTF-8 bytes. */
export const MESSAGE_MAX_BYTES = 4096;

/** How many sender colours there are (`.sender-0` … `.sender-7` in app.css). */
export const PALETTE_SIZE = 8;

const encoder = new TextEncoder();

/** UTF-8 length of `text`, which is what the server's limits count. */
export function utf8Bytes(text: string): number {
  return encoder.encode(text).length;
}

/** Characters the name rule refuses: controls (Cc), format characters (Cf) and U+2028/U+2029. */
const REFUSED_IN_NAME = /[\p{Cc}\p{Cf}\u2028\u2029]/u;

/**
 * Checks a name the way the server does, so that the prompt can say what is
 * wrong before anything is sent. Returns the trimmed name, or a hint.
 */
export function checkName(raw: string): { name: string } | { problem: string } {
  const name = raw.trim();
  const chars = [...name].length;
  if (chars === 0) {
    return { problem: "Type a name: 1 to 32 characters." };
  }
  if (chars > NAME_MAX_CHARS) {
    return { problem: `That name is ${chars} characters long; the most is ${NAME_MAX_CHARS}.` };
  }
  if (REFUSED_IN_NAME.test(name)) {
    return { problem: "A name cannot hold control or invisible formatting characters." };
  }
  return { name };
}

/**
 * The colour of a sender: FNV-1a (64 bits) over the name's UTF-8 bytes, modulo
 * the palette, the hash the terminal client uses, so a name keeps its place in
 * the palette on every screen.
 */
export function colourIndex(name: string): number {
  let hash = 0xcbf29ce484222325n;
  for (const byte of encoder.encode(name)) {
    hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return Number(hash % BigInt(PALETTE_SIZE));
}

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** Local time `HH:MM` of a Unix time in milliseconds. */
export function clock(ts: number): string {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) {
    return "--:--";
  }
  return `${two(d.getHours())}:${two(d.getMinutes())}`;
}

/** A duration as `mm:ss` (or `h:mm:ss` past an hour). */
export function elapsed(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

/** A delay in seconds as the status line says it: `0.5 s`, `4 s`. */
export function seconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

/** A time left, whole seconds rounded up: `27 s`, `4 min 7 s`. */
export function timeLeft(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(total / 60);
  const s = total % 60;
  if (m === 0) {
    return `${s} s`;
  }
  return s === 0 ? `${m} min` : `${m} min ${s} s`;
}

/**
 * An estimated wait, as roughly as it is known: `about 8 s`, `about 40 s`
 * (in fives from 10 s), `about 2 min`, `about 1 h 20 min` (in fives of
 * minutes from an hour); empty for no usable number.
 */
export function aboutWait(s: number): string {
  if (!Number.isFinite(s) || s < 0) {
    return "";
  }
  if (s < 10) {
    return `about ${Math.max(1, Math.ceil(s))} s`;
  }
  if (s < 55) {
    return `about ${Math.ceil(s / 5) * 5} s`;
  }
  if (s < 3570) {
    return `about ${Math.max(1, Math.round(s / 60))} min`;
  }
  const minutes = Math.round(s / 300) * 5;
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return m === 0 ? `about ${h} h` : `about ${h} h ${m} min`;
}

/**
 * Characters shown as escapes in text: C0 and C1 controls, DEL, the
 * bidirectional controls and the line and paragraph separators. A newline in a
 * message would let a member forge what looks like a second entry; a
 * bidirectional override would reorder the text around it.
 */
const ESCAPED_IN_TEXT = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/gu;

/** In names, every character the name rule refuses is escaped, zero-width ones too. */
const ESCAPED_IN_NAME = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;

/** How one escaped character is written: `\n`, `\t`, `\x1b`, `\u{202e}`. */
export function escapeOf(ch: string): string {
  switch (ch) {
    case "\n":
      return "\\n";
    case "\r":
      return "\\r";
    case "\t":
      return "\\t";
  }
  const cp = ch.codePointAt(0) ?? 0;
  if (cp < 0x80) {
    return `\\x${cp.toString(16).padStart(2, "0")}`;
  }
  return `\\u{${cp.toString(16)}}`;
}

/** Text split into plain runs and escaped characters. */
export type Piece = { text: string; escaped: boolean };

function split(text: string, pattern: RegExp): Piece[] {
  const pieces: Piece[] = [];
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    const at = match.index ?? 0;
    if (at > last) {
      pieces.push({ text: text.slice(last, at), escaped: false });
    }
    pieces.push({ text: escapeOf(match[0]), escaped: true });
    last = at + match[0].length;
  }
  if (last < text.length) {
    pieces.push({ text: text.slice(last), escaped: false });
  }
  return pieces;
}

export function textPieces(text: string): Piece[] {
  return split(text, ESCAPED_IN_TEXT);
}

export function namePieces(name: string): Piece[] {
  return split(name, ESCAPED_IN_NAME);
}

/** A name with its refused characters escaped, as one string (roster, notices). */
export function plainName(name: string): string {
  return namePieces(name)
    .map((p) => p.text)
    .join("");
}

/** Text with its controls escaped, as one string. */
export function plainText(text: string): string {
  return textPieces(text)
    .map((p) => p.text)
    .join("");
}

/** `idle_timeout` is said `idle timeout`, as the terminal client says it. */
export function reasonWords(reason: string): string {
  return reason.replace(/_/g, " ");
}

/** A byte count as people read it: `512 B`, `12.3 KB`, `8 MB` (units of 1024). */
export function humanSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) {
    return "? B";
  }
  if (bytes < 1024) {
    return `${Math.round(bytes)} B`;
  }
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = value < 100 ? value.toFixed(1).replace(/\.0$/, "") : String(Math.round(value));
  return `${shown} ${units[unit]}`;
}

/** A size and a limit, in exact bytes when rounding would make them look equal. */
export function sizeAgainstLimit(size: number, limit: number): [string, string] {
  const [a, b] = [humanSize(size), humanSize(limit)];
  return a === b ? [`${size} bytes`, `${limit} bytes`] : [a, b];
}
