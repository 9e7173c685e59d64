// Emoji by short code: the picker's table and the `:code` completion in the
// input line. A small fixed table keeps the page free of a dependency and of
// a data file; the codes are the ones most chat services share.

export interface Emoji {
  /** The short code without colons: `smile`. */
  code: string;
  emoji: string;
}

const TABLE: [string, string][] = [
  ["smile", "😄"],
  ["smiley", "😃"],
  ["grinning", "😀"],
  ["grin", "😁"],
  ["laughing", "😆"],
  ["sweat_smile", "😅"],
  ["joy", "😂"],
  ["rofl", "🤣"],
  ["slightly_smiling_face", "🙂"],
  ["upside_down_face", "🙃"],
  ["wink", "😉"],
  ["blush", "😊"],
  ["innocent", "😇"],
  ["heart_eyes", "😍"],
  ["star_struck", "🤩"],
  ["kissing_heart", "😘"],
  ["yum", "😋"],
  ["stuck_out_tongue", "😛"],
  ["stuck_out_tongue_winking_eye", "😜"],
  ["zany_face", "🤪"],
  ["hugs", "🤗"],
  ["thinking", "🤔"],
  ["shushing_face", "🤫"],
  ["neutral_face", "😐"],
  ["expressionless", "😑"],
  ["no_mouth", "😶"],
  ["smirk", "😏"],
  ["unamused", "😒"],
  ["roll_eyes", "🙄"],
  ["grimacing", "😬"],
  ["relieved", "😌"],
  ["pensive", "😔"],
  ["sleepy", "😪"],
  ["sleeping", "😴"],
  ["mask", "😷"],
  ["nerd_face", "🤓"],
  ["sunglasses", "😎"],
  ["confused", "😕"],
  ["worried", "😟"],
  ["slightly_frowning_face", "🙁"],
  ["open_mouth", "😮"],
  ["astonished", "😲"],
  ["flushed", "😳"],
  ["pleading_face", "🥺"],
  ["cry", "😢"],
  ["sob", "😭"],
  ["scream", "😱"],
  ["confounded", "😖"],
  ["disappointed", "😞"],
  ["sweat", "😓"],
  ["weary", "😩"],
  ["yawning_face", "🥱"],
  ["triumph", "😤"],
  ["rage", "😡"],
  ["angry", "😠"],
  ["skull", "💀"],
  ["poop", "💩"],
  ["clown_face", "🤡"],
  ["ghost", "👻"],
  ["alien", "👽"],
  ["robot", "🤖"],
  ["see_no_evil", "🙈"],
  ["wave", "👋"],
  ["ok_hand", "👌"],
  ["v", "✌️"],
  ["crossed_fingers", "🤞"],
  ["point_up", "☝️"],
  ["point_right", "👉"],
  ["thumbsup", "👍"],
  ["+1", "👍"],
  ["thumbsdown", "👎"],
  ["-1", "👎"],
  ["clap", "👏"],
  ["raised_hands", "🙌"],
  ["pray", "🙏"],
  ["muscle", "💪"],
  ["eyes", "👀"],
  ["brain", "🧠"],
  ["heart", "❤️"],
  ["orange_heart", "🧡"],
  ["yellow_heart", "💛"],
  ["green_heart", "💚"],
  ["blue_heart", "💙"],
  ["purple_heart", "💜"],
  ["broken_heart", "💔"],
  ["sparkling_heart", "💖"],
  ["100", "💯"],
  ["boom", "💥"],
  ["zzz", "💤"],
  ["fire", "🔥"],
  ["sparkles", "✨"],
  ["star", "⭐"],
  ["zap", "⚡"],
  ["rainbow", "🌈"],
  ["sunny", "☀️"],
  ["cloud", "☁️"],
  ["snowflake", "❄️"],
  ["tada", "🎉"],
  ["confetti_ball", "🎊"],
  ["gift", "🎁"],
  ["trophy", "🏆"],
  ["rocket", "🚀"],
  ["coffee", "☕"],
  ["tea", "🍵"],
  ["beer", "🍺"],
  ["wine_glass", "🍷"],
  ["pizza", "🍕"],
  ["cake", "🍰"],
  ["apple", "🍎"],
  ["cat", "🐱"],
  ["dog", "🐶"],
  ["unicorn", "🦄"],
  ["bug", "🐛"],
  ["seedling", "🌱"],
  ["bulb", "💡"],
  ["memo", "📝"],
  ["paperclip", "📎"],
  ["lock", "🔒"],
  ["key", "🔑"],
  ["bell", "🔔"],
  ["hourglass", "⌛"],
  ["warning", "⚠️"],
  ["x", "❌"],
  ["white_check_mark", "✅"],
  ["heavy_check_mark", "✔️"],
  ["question", "❓"],
  ["exclamation", "❗"],
];

export const EMOJI: readonly Emoji[] = TABLE.map(([code, emoji]) => ({ code, emoji }));

const BY_CODE = new Map(EMOJI.map((e) => [e.code, e.emoji]));

/** The emoji of a short code (without colons), if the table has it. */
export function emojiOf(code: string): string | undefined {
  return BY_CODE.get(code.toLowerCase());
}

/** How many suggestions the completion shows at most. */
export const MAX_SUGGESTIONS = 8;

/**
 * Codes that match what was typed: those starting with it first, then those
 * with a word starting with it (`:check` offers `white_check_mark`).
 */
export function suggest(typed: string): Emoji[] {
  const q = typed.toLowerCase();
  if (q === "") {
    return [];
  }
  const starts = EMOJI.filter((e) => e.code.startsWith(q));
  const words = EMOJI.filter((e) => !e.code.startsWith(q) && e.code.split("_").some((w) => w.startsWith(q)));
  return [...starts, ...words].slice(0, MAX_SUGGESTIONS);
}

/** A short code being typed: `:` after a space or the start, then two or more code characters. */
const TYPING = /(^|\s)(:([a-z0-9_+-]{2,}))$/i;

/** The short code being typed just before the caret, with where it starts. */
export function codeBefore(value: string, caret: number): { start: number; typed: string } | null {
  const match = TYPING.exec(value.slice(0, caret));
  if (match === null) {
    return null;
  }
  return { start: caret - match[2].length, typed: match[3] };
}

/** A complete `:code:` just before the caret, when the table knows it. */
export function finishedCodeBefore(value: string, caret: number): { start: number; emoji: string } | null {
  const match = /(^|\s):([a-z0-9_+-]+):$/i.exec(value.slice(0, caret));
  if (match === null) {
    return null;
  }
  const emoji = emojiOf(match[2]);
  return emoji === undefined ? null : { start: caret - match[2].length - 2, emoji };
}
