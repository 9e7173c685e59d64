// What a line typed into the input means: text to say, or a command.

export type Command =
  | { say: string }
  | { whisper: { to: string; text: string } }
  | { whisperUsage: true }
  | { who: true }
  | { quit: true }
  | { help: true }
  | { unknown: string };

/**
 * The recipient and text of `/msg NAME TEXT`. Names may hold spaces, so a
 * name of the room that the rest starts with wins (the longest, compared
 * case-insensitively as the server does); `"a name"` in quotes always works;
 * otherwise the first word is the name.
 */
export function parseWhisper(rest: string, members: readonly string[]): { to: string; text: string } | null {
  const line = rest.replace(/^\s+/, "");
  const quoted = /^"([^"]+)"\s+([\s\S]*)$/.exec(line);
  if (quoted !== null) {
    return quoted[2].trim() === "" ? null : { to: quoted[1], text: quoted[2] };
  }
  const lower = line.toLowerCase();
  const known = [...members]
    .sort((a, b) => b.length - a.length)
    .find((name) => lower.startsWith(name.toLowerCase()) && /^\s/.test(line.slice(name.length)));
  if (known !== undefined) {
    const text = line.slice(known.length).replace(/^\s/, "");
    return text.trim() === "" ? null : { to: known, text };
  }
  const word = /^(\S+)\s+([\s\S]*)$/.exec(line);
  if (word === null || word[2].trim() === "") {
    return null;
  }
  return { to: word[1], text: word[2] };
}

export function parseLine(line: string, members: readonly string[]): Command {
  const trimmed = line.trim();
  if (!trimmed.startsWith("/")) {
    return { say: line };
  }
  const rest = trimmed.slice(1);
  if (rest.startsWith("/")) {
    return { say: rest };
  }
  const word = rest.split(/\s+/, 1)[0];
  switch (word) {
    case "users":
    case "who":
      return { who: true };
    case "quit":
    case "exit":
      return { quit: true };
    case "help":
      return { help: true };
    case "msg":
    case "whisper": {
      // The text after the name keeps its spaces as typed.
      const after = line.slice(line.indexOf(`/${word}`) + word.length + 1);
      const whisper = parseWhisper(after, members);
      return whisper === null ? { whisperUsage: true } : { whisper };
    }
    default:
      return { unknown: `/${word}` };
  }
}

/** What the roster's whisper button puts into the input line. */
export function whisperPrefix(name: string, members: readonly string[]): string {
  // Quotes only when another member's name starts with this one, which the
  // longest-match rule would otherwise prefer.
  const lower = name.toLowerCase();
  const shadowed = members.some((m) => m.length > name.length && m.toLowerCase().startsWith(lower));
  return shadowed && !name.includes('"') ? `/msg "${name}" ` : `/msg ${name} `;
}
