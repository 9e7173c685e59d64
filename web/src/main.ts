// The page: four screens (name, queue, room, left) driven by one Session.
// Everything that comes from the server is inserted as text, never as HTML.

import { type Command, parseLine, whisperPrefix } from "./commands";
import { Conversation } from "./conversation";
import { announce, byId, nameElement } from "./dom";
import { EmojiInput } from "./emoji-ui";
import type { Attachment, Departure, QueuedFrame, ServerFrame, WelcomeFrame } from "./protocol";
import { type Hold, type Phase, Session, socketUrl } from "./session";
import {
  MESSAGE_MAX_BYTES,
  aboutWait,
  checkName,
  elapsed,
  humanSize,
  plainName,
  plainText,
  reasonWords,
  seconds,
  timeLeft,
  utf8Bytes,
} from "./text";
import { type Upload, tooLarge, upload } from "./upload";

/** The roster holds at most this many names, whatever the server sends. */
const MAX_ROSTER = 100_000;
/** Past this many bytes the input line shows how many are left. */
const BYTES_WARNING = MESSAGE_MAX_BYTES - 512;
/** A notice listing the room names at most this many members. */
const NAMES_IN_NOTICE = 30;

const HELP =
  "commands: /msg NAME TEXT whispers to one member (a name with spaces in quotes), /users lists the room, /quit leaves, /help shows this, //text sends /text; :code: (like :smile:) adds an emoji; PageUp and PageDown scroll the conversation";

const ui = {
  status: byId<HTMLParagraphElement>("status"),
  screens: {
    join: byId<HTMLElement>("join-screen"),
    queue: byId<HTMLElement>("queue-screen"),
    room: byId<HTMLElement>("room-screen"),
    left: byId<HTMLElement>("left-screen"),
  },
  joinTitle: byId<HTMLHeadingElement>("join-title"),
  joinForm: byId<HTMLFormElement>("join-form"),
  name: byId<HTMLInputElement>("name"),
  nameError: byId<HTMLParagraphElement>("name-error"),
  join: byId<HTMLButtonElement>("join"),
  cancelJoin: byId<HTMLButtonElement>("cancel-join"),
  queueTitle: byId<HTMLHeadingElement>("queue-title"),
  queueText: byId<HTMLParagraphElement>("queue-text"),
  queuePosition: byId<HTMLElement>("queue-position"),
  queueEta: byId<HTMLElement>("queue-eta"),
  queueWaiting: byId<HTMLElement>("queue-waiting"),
  queueWaited: byId<HTMLTimeElement>("queue-waited"),
  queueLeave: byId<HTMLButtonElement>("queue-leave"),
  roomTitle: byId<HTMLHeadingElement>("room-title"),
  roomSummary: byId<HTMLParagraphElement>("room-summary"),
  rosterToggle: byId<HTMLButtonElement>("roster-toggle"),
  leave: byId<HTMLButtonElement>("leave"),
  log: byId<HTMLDivElement>("log"),
  entries: byId<HTMLOListElement>("entries"),
  historyTop: byId<HTMLDivElement>("history-top"),
  historyState: byId<HTMLParagraphElement>("history-state"),
  loadOlder: byId<HTMLButtonElement>("load-older"),
  dropTarget: byId<HTMLDivElement>("drop-target"),
  roster: byId<HTMLUListElement>("roster"),
  rosterCount: byId<HTMLSpanElement>("roster-count"),
  sayForm: byId<HTMLFormElement>("say-form"),
  message: byId<HTMLInputElement>("message"),
  messageHint: byId<HTMLParagraphElement>("message-hint"),
  suggestions: byId<HTMLUListElement>("emoji-suggestions"),
  emojiButton: byId<HTMLButtonElement>("emoji-button"),
  emojiPicker: byId<HTMLDivElement>("emoji-picker"),
  attach: byId<HTMLButtonElement>("attach"),
  file: byId<HTMLInputElement>("file"),
  tray: byId<HTMLDivElement>("attachment"),
  trayName: byId<HTMLSpanElement>("attachment-name"),
  trayProgress: byId<HTMLProgressElement>("attachment-progress"),
  trayState: byId<HTMLSpanElement>("attachment-state"),
  trayRemove: byId<HTMLButtonElement>("attachment-remove"),
  leftTitle: byId<HTMLHeadingElement>("left-title"),
  leftText: byId<HTMLParagraphElement>("left-text"),
  rejoin: byId<HTMLButtonElement>("rejoin"),
  rename: byId<HTMLButtonElement>("rename"),
};

type ScreenName = keyof typeof ui.screens;

const DEFAULT_MESSAGE_HINT = ui.messageHint.textContent ?? "";

/** A file chosen for the next message: uploading, uploaded, or refused. */
interface Pending {
  file: File;
  status: "uploading" | "ready" | "failed";
  upload: Upload | null;
  attachment: Attachment | null;
  /** Text the user already sent with it, waiting for the upload to finish. */
  sendWith: string | null;
}

/** What the page knows about the current stay. */
const state = {
  session: null as Session | null,
  screen: "join" as ScreenName,
  /** The name as the server stored it (trimmed), from `welcome`. */
  me: "",
  capacity: 0,
  /** Members in join order, each with its roster entry. */
  roster: [] as { name: string; item: HTMLLIElement }[],
  /** When the user entered the queue (kept across reconnects while waiting). */
  queuedSince: 0,
  /** Whether this stay ever reached the queue or the room. */
  admitted: false,
  /** Whether this stay ever reached the room. */
  entered: false,
  lastBye: "",
  sent: [] as string[],
  sentPos: -1,
  tooLong: false,
  /** What the server granted on the current connection (`welcome.features`). */
  features: new Set<string>(),
  uploadToken: "",
  maxUploadBytes: 0,
  pending: null as Pending | null,
  /** The hold (by its start) whose end has been told, so that it is told once. */
  holdEndTold: 0,
};

let tick: ReturnType<typeof setInterval> | null = null;

const conversation = new Conversation({
  log: ui.log,
  list: ui.entries,
  top: ui.historyTop,
  topState: ui.historyState,
  loadOlder: ui.loadOlder,
  send: (frame) => state.session !== null && state.session.phase.kind === "room" && state.session.send(frame),
});

const notice = conversation.notice.bind(conversation);

const emoji = new EmojiInput(ui.message, ui.suggestions, ui.emojiButton, ui.emojiPicker, () => updateMessageHint());

// ---------------------------------------------------------------- helpers

function showScreen(next: ScreenName, focus?: HTMLElement): void {
  for (const [key, el] of Object.entries(ui.screens)) {
    el.hidden = key !== next;
  }
  const changed = state.screen !== next;
  state.screen = next;
  document.body.dataset.screen = next;
  if (changed && focus) {
    focus.focus();
  }
  startTicking();
}

// ---------------------------------------------------------------- status line

/** What becomes of a held place: `reconnecting, your place is held for 27 s`. */
function holdText(hold: Hold, now = Date.now()): string {
  if (hold.until === null) {
    return "reconnecting, your place is held";
  }
  return hold.until > now
    ? `reconnecting, your place is held for ${timeLeft(hold.until - now)}`
    : "reconnecting, your place may be lost";
}

function phaseText(phase: Phase, hold: Hold | null): string {
  switch (phase.kind) {
    case "connecting":
      if (hold !== null) {
        return `${holdText(hold)} (connecting…, attempt ${phase.attempt})`;
      }
      return phase.attempt > 1 ? `connecting… (attempt ${phase.attempt})` : "connecting…";
    case "joining":
      return hold !== null ? `${holdText(hold)} (connected; resuming…)` : "connected; joining…";
    case "queued":
      return "connected · waiting in the queue";
    case "room":
      return "connected";
    case "retrying": {
      const left = phase.at - Date.now();
      const wait = phase.delayMs < 1000 ? seconds(phase.delayMs) : `${Math.max(1, Math.ceil(left / 1000))} s`;
      const reason = plainText(phase.reason);
      if (hold !== null) {
        return `disconnected (${reason}); ${holdText(hold)} (next attempt in ${wait}, attempt ${phase.attempt})`;
      }
      return `disconnected (${reason}); reconnecting in ${wait} (attempt ${phase.attempt})`;
    }
    case "ended":
      return "not connected";
  }
}

function stateOf(phase: Phase): string {
  switch (phase.kind) {
    case "connecting":
    case "joining":
      return "connecting";
    case "queued":
    case "room":
      return "connected";
    case "retrying":
      return "retrying";
    case "ended":
      return "idle";
  }
}

function renderStatus(): void {
  const phase = state.session?.phase;
  if (!phase) {
    ui.status.textContent = "not connected";
    ui.status.dataset.state = "idle";
    return;
  }
  const hold = state.session?.hold ?? null;
  let text = phaseText(phase, hold);
  if (phase.kind === "room") {
    text = `connected as ${plainName(state.me)}`;
  }
  if (ui.status.textContent !== text) {
    ui.status.textContent = text;
  }
  ui.status.dataset.state = stateOf(phase);
}

function renderRoomSummary(): void {
  const n = state.roster.length;
  ui.roomSummary.textContent = `${n} in the room (capacity ${state.capacity})`;
  ui.rosterCount.textContent = String(n);
  ui.rosterToggle.textContent = `Users (${n})`;
}

/** One timer for what ticks: the wait in the queue, the reconnect countdown and a held place's. */
function startTicking(): void {
  const needed =
    state.screen === "queue" || state.session?.phase.kind === "retrying" || (state.session?.hold ?? null) !== null;
  if (needed && tick === null) {
    tick = setInterval(onTick, 250);
  } else if (!needed && tick !== null) {
    clearInterval(tick);
    tick = null;
  }
  onTick();
}

function onTick(): void {
  if (state.screen === "queue" && state.queuedSince > 0) {
    const waited = Date.now() - state.queuedSince;
    const text = elapsed(waited);
    if (ui.queueWaited.textContent !== text) {
      ui.queueWaited.textContent = text;
      ui.queueWaited.dateTime = `PT${Math.floor(waited / 1000)}S`;
    }
  }
  const hold = state.session?.hold ?? null;
  if (state.session?.phase.kind === "retrying" || hold !== null) {
    renderStatus();
  }
  if (hold !== null && hold.until !== null && hold.until <= Date.now() && state.holdEndTold !== hold.since) {
    // Told once per drop; the page keeps trying, and the server decides.
    state.holdEndTold = hold.since;
    const text = `your place may be lost: the server holds it for ${timeLeft(hold.until - hold.since)}; still reconnecting`;
    notice(text, "connection");
    announce(text);
  }
}

function namesList(names: string[]): string {
  const shown = names.slice(0, NAMES_IN_NOTICE).map(plainName).join(", ");
  return names.length > NAMES_IN_NOTICE ? `${shown} and ${names.length - NAMES_IN_NOTICE} more` : shown;
}

/**
 * Changes to the room in one line: `ann, bob joined · carl left (bye)`,
 * departures grouped by reason (a departure whose reason is not known says
 * none). When a name both left and came back, the departures come first,
 * in the order they happened.
 */
function changesText(joined: string[], left: Departure[]): string {
  const byReason = new Map<string, string[]>();
  for (const { name, reason } of left) {
    const names = byReason.get(reason);
    if (names) {
      names.push(name);
    } else {
      byReason.set(reason, [name]);
    }
  }
  const leaving = [...byReason].map(([reason, names]) =>
    reason === "" ? `${namesList(names)} left` : `${namesList(names)} left (${reasonWords(reason)})`,
  );
  const joining = joined.length > 0 ? [`${namesList(joined)} joined`] : [];
  const back = left.some((d) => joined.includes(d.name));
  return (back ? [...leaving, ...joining] : [...joining, ...leaving]).join(" · ");
}

// ---------------------------------------------------------------- roster

function rosterLimit(): number {
  return state.capacity > 0 ? Math.min(state.capacity, MAX_ROSTER) : MAX_ROSTER;
}

function rosterItem(name: string): HTMLLIElement {
  const item = document.createElement("li");
  item.append(nameElement(name));
  if (name === state.me) {
    const you = document.createElement("span");
    you.className = "you";
    you.textContent = " (you)";
    item.append(you);
  } else if (state.features.has("whisper")) {
    const whisper = document.createElement("button");
    whisper.type = "button";
    whisper.className = "secondary small whisper-to";
    whisper.textContent = "Whisper";
    whisper.setAttribute("aria-label", `Whisper to ${plainName(name)}`);
    whisper.addEventListener("click", () => startWhisper(name));
    item.append(whisper);
  }
  return item;
}

/** Puts `/msg NAME ` in front of what is typed, for a whisper to `name`. */
function startWhisper(name: string): void {
  const members = state.roster.map((m) => m.name);
  // What was typed stays, without the command or recipient it may already have.
  const line = ui.message.value;
  const command = parseLine(line, members);
  const typed = "whisper" in command ? command.whisper.text : "whisperUsage" in command ? "" : line;
  const prefix = whisperPrefix(name, members);
  ui.message.value = typed.trim().startsWith("/") ? prefix : `${prefix}${typed}`;
  setRosterOpen(false);
  ui.message.focus();
  ui.message.setSelectionRange(ui.message.value.length, ui.message.value.length);
  updateMessageHint();
}

function setRoster(names: string[]): void {
  const fragment = document.createDocumentFragment();
  state.roster = names.slice(0, rosterLimit()).map((name) => {
    const item = rosterItem(name);
    fragment.append(item);
    return { name, item };
  });
  ui.roster.replaceChildren(fragment);
  renderRoomSummary();
}

function rosterAdd(name: string): void {
  if (state.roster.length >= rosterLimit() || state.roster.some((m) => m.name === name)) {
    return;
  }
  const item = rosterItem(name);
  ui.roster.append(item);
  state.roster.push({ name, item });
  renderRoomSummary();
}

function inRoster(name: string): boolean {
  return state.roster.some((m) => m.name === name);
}

/**
 * A `presence` frame: departures first, then arrivals, as sets (a name
 * already listed is not added twice, one not listed is not removed). The
 * notice tells only what changed the list.
 */
function applyPresence(joined: string[], left: Departure[], ts: number): void {
  const gone: Departure[] = [];
  for (const departure of left) {
    if (inRoster(departure.name)) {
      rosterRemove(departure.name);
      gone.push(departure);
    }
  }
  const came: string[] = [];
  for (const name of joined) {
    if (!inRoster(name) && !came.includes(name)) {
      rosterAdd(name);
      came.push(name);
    }
  }
  const text = changesText(came, gone);
  if (text !== "") {
    notice(text, "info", ts);
  }
}

function rosterRemove(name: string): void {
  const at = state.roster.findIndex((m) => m.name === name);
  if (at >= 0) {
    state.roster[at].item.remove();
    state.roster.splice(at, 1);
    renderRoomSummary();
  }
}

// ---------------------------------------------------------------- frames

function onFrame(frame: ServerFrame): void {
  switch (frame.type) {
    case "welcome": {
      const from = state.screen;
      if (frame.resumed === true && from === "room" && state.entered) {
        resumeRoom(frame);
        return;
      }
      if (frame.resumed === false) {
        const text = "the server no longer held your place: you joined again";
        notice(text, "connection");
        if (from === "room") {
          announce(text);
        }
      }
      takeWelcome(frame);
      state.admitted = true;
      state.entered = true;
      state.queuedSince = 0;
      setRoster(frame.users);
      const greeting = notice(frame.text);
      notice(`in the room: ${namesList(frame.users)}`);
      conversation.entered(state.features.has("history"), greeting);
      showScreen("room", ui.message);
      if (from !== "room") {
        announce(`${frame.text} ${state.roster.length} in the room.`);
      }
      return;
    }
    case "queued": {
      state.admitted = true;
      if (frame.resumed !== undefined) {
        resumedQueue(frame);
      }
      if (state.screen !== "queue") {
        if (state.queuedSince === 0) {
          state.queuedSince = Date.now();
        }
        notice(frame.text);
      }
      if (ui.queueText.textContent !== frame.text) {
        ui.queueText.textContent = frame.text;
      }
      ui.queuePosition.textContent = String(frame.position);
      ui.queueWaiting.textContent = String(frame.waiting);
      renderEta(frame.etaS);
      showScreen("queue", ui.queueTitle);
      return;
    }
    case "message":
      conversation.message(frame);
      return;
    case "history":
      conversation.history(frame);
      return;
    case "whisper":
      conversation.whisper(frame.from, frame.to, frame.text, frame.ts);
      return;
    case "joined":
      rosterAdd(frame.name);
      notice(`${plainName(frame.name)} joined`, "info", frame.ts);
      return;
    case "left":
      rosterRemove(frame.name);
      notice(`${plainName(frame.name)} left (${reasonWords(frame.reason)})`, "info", frame.ts);
      return;
    case "presence":
      applyPresence(frame.joined, frame.left, frame.ts);
      return;
    case "users":
      setRoster(frame.names);
      notice(`in the room (${frame.names.length}): ${namesList(frame.names)}`);
      return;
    case "gap":
      notice(`${frame.missed} events were skipped while you were behind; refreshing the user list`, "problem");
      state.session?.send({ type: "who" });
      return;
    case "lagging":
      notice(
        `falling behind: the server holds ${frame.queued} events for this page and disconnects it at ${frame.limit}`,
        "problem",
      );
      return;
    case "error":
      notice(errorText(frame.code, frame.text), "problem");
      if (state.screen === "queue") {
        announce(`error (${frame.code}): ${frame.text}`);
      }
      return;
    case "bye":
      state.lastBye = frame.text;
      notice(`bye (${frame.reason}): ${frame.text}`, frame.reason === "bye" ? "info" : "problem");
      return;
    case "ping":
      return;
  }
}

/** The features, upload token and capacity a `welcome` brings. */
function takeWelcome(frame: WelcomeFrame): void {
  state.me = frame.name;
  conversation.me = frame.name;
  state.capacity = frame.capacity;
  state.features = new Set(frame.features);
  state.uploadToken = frame.uploadToken ?? "";
  state.maxUploadBytes = frame.maxUploadBytes ?? 0;
  ui.attach.hidden = !canUpload();
}

/**
 * Back in the room on the seat the server held: the conversation stays,
 * the missed messages come in the `history` frame that follows (placed
 * before the notice, as earlier ones), and the others saw nothing.
 */
function resumeRoom(frame: WelcomeFrame): void {
  const before = state.roster.map((m) => m.name);
  takeWelcome(frame);
  setRoster(frame.users);
  const back = notice("reconnected: your place in the room was kept", "connection");
  const came = frame.users.filter((name) => !before.includes(name));
  const gone = before.filter((name) => !frame.users.includes(name)).map((name) => ({ name, reason: "" }));
  if (came.length > 0 || gone.length > 0) {
    notice(`while you were away: ${changesText(came, gone)}`);
  }
  conversation.entered(state.features.has("history"), back);
  showScreen("room", ui.message);
  announce("Reconnected. Your place in the room was kept.");
}

/** The first `queued` answering a `hello` that carried a token. */
function resumedQueue(frame: QueuedFrame): void {
  if (frame.resumed === true && state.screen === "queue") {
    notice("reconnected: your place in the queue was kept", "connection");
    announce(`Reconnected. Your place in the queue was kept: ${frame.position}.`);
  } else if (frame.resumed === false) {
    notice("the server no longer held your place: you are queued again", "connection");
    if (state.screen === "queue") {
      announce(`The server no longer held your place. You are now at ${frame.position} in the queue.`);
    }
  }
}

/** The expected wait beside the place, when the server estimates one. */
function renderEta(etaS: number | undefined): void {
  const text = etaS === undefined ? "" : `${aboutWait(etaS)} to go`;
  if (ui.queueEta.textContent !== text) {
    ui.queueEta.textContent = text;
  }
  ui.queueEta.hidden = text === "";
}

/** How a refusal reads; a failed whisper says so first, as it has no other trace. */
function errorText(code: string, text: string): string {
  switch (code) {
    case "no_such_user":
      return `private message not delivered (no_such_user): ${text || "nobody of that name is in the room"}`;
    case "whisper_unsupported":
      return `private message not delivered (whisper_unsupported): ${text || "that member's client cannot receive private messages"}`;
    default:
      return `error (${code}): ${text}`;
  }
}

function onPhase(phase: Phase): void {
  renderStatus();
  startTicking();
  switch (phase.kind) {
    case "retrying": {
      conversation.disconnected();
      const hold = state.session?.hold ?? null;
      const text =
        phase.dropped && hold !== null
          ? `disconnected (${phase.reason}); ${holdText(hold, hold.since)}`
          : `disconnected (${phase.reason}); reconnecting in ${seconds(phase.delayMs)}`;
      if (state.admitted) {
        notice(text, "connection");
      }
      announce(text);
      return;
    }
    case "room":
    case "queued":
      return;
    case "connecting":
      if (phase.attempt === 1 && !state.admitted) {
        announce("connecting…");
      }
      return;
    default:
      return;
  }
}

function onRefused(code: string, text: string): void {
  state.session = null;
  setJoining(false);
  renderStatus();
  const lead = code === "name_taken" ? "That name is taken" : "The server refused that name";
  showNameProblem(`${lead}: ${text || code}`);
  showScreen("join");
  ui.name.focus();
  ui.name.select();
}

function onEnded(): void {
  const wasAdmitted = state.admitted;
  state.session = null;
  state.admitted = false;
  state.queuedSince = 0;
  conversation.disconnected();
  dropPending();
  setJoining(false);
  renderStatus();
  startTicking();
  if (!wasAdmitted) {
    showScreen("join", ui.name);
    return;
  }
  const where = state.entered ? "the room" : "the queue";
  ui.leftTitle.textContent = `You left ${where}`;
  ui.leftText.textContent = state.lastBye ? `The server said: ${plainText(state.lastBye)}` : "";
  showScreen("left", ui.leftTitle);
  announce(`You left ${where}.`);
}

// ---------------------------------------------------------------- joining

function showNameProblem(problem: string): void {
  ui.nameError.textContent = problem;
  ui.name.setAttribute("aria-invalid", "true");
}

function clearNameProblem(): void {
  ui.nameError.textContent = "";
  ui.name.removeAttribute("aria-invalid");
}

/** While a join is under way, Join waits and Cancel gives up. */
function setJoining(joining: boolean): void {
  ui.join.textContent = joining ? "Joining…" : "Join";
  if (joining) {
    ui.join.setAttribute("aria-disabled", "true");
  } else {
    ui.join.removeAttribute("aria-disabled");
  }
  ui.cancelJoin.hidden = !joining;
  ui.name.readOnly = joining;
}

function join(name: string): void {
  state.lastBye = "";
  state.admitted = false;
  state.entered = false;
  state.queuedSince = 0;
  state.me = name;
  conversation.me = name;
  state.features = new Set();
  conversation.clear();
  dropPending();
  setRoster([]);
  renderEta(undefined);
  const session = new Session(name, socketUrl(), {
    phase: (phase) => {
      if (state.session === session) onPhase(phase);
    },
    frame: (frame) => {
      if (state.session === session) onFrame(frame);
    },
    refused: (code, text) => {
      if (state.session === session) onRefused(code, text);
    },
    ended: () => {
      if (state.session === session) onEnded();
    },
  });
  state.session = session;
  setJoining(true);
  session.start();
}

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.session !== null) {
    // Already joining (a second Enter): Cancel is the way out.
    return;
  }
  const checked = checkName(ui.name.value);
  if ("problem" in checked) {
    showNameProblem(checked.problem);
    ui.name.focus();
    return;
  }
  clearNameProblem();
  join(checked.name);
});

ui.name.addEventListener("input", () => {
  if (ui.name.getAttribute("aria-invalid") === "true") {
    const checked = checkName(ui.name.value);
    if ("name" in checked) {
      clearNameProblem();
    }
  }
});

ui.cancelJoin.addEventListener("click", () => {
  state.session?.leave();
  ui.name.focus();
});
ui.queueLeave.addEventListener("click", () => state.session?.leave());
ui.leave.addEventListener("click", () => state.session?.leave());

ui.rename.addEventListener("click", () => {
  ui.name.value = state.me;
  showScreen("join", ui.name);
  ui.name.select();
});

ui.rejoin.addEventListener("click", () => {
  const name = state.me || ui.name.value.trim();
  const checked = checkName(name);
  if ("name" in checked) {
    ui.name.value = checked.name;
    showScreen("join");
    join(checked.name);
  } else {
    showScreen("join", ui.name);
  }
});

// ---------------------------------------------------------------- the input line

function updateMessageHint(): void {
  const bytes = utf8Bytes(ui.message.value);
  const tooLong = bytes > MESSAGE_MAX_BYTES;
  if (tooLong) {
    ui.messageHint.textContent = `Too long: ${bytes} bytes; a message holds at most ${MESSAGE_MAX_BYTES} bytes (UTF-8).`;
  } else if (bytes > BYTES_WARNING) {
    ui.messageHint.textContent = `${MESSAGE_MAX_BYTES - bytes} of ${MESSAGE_MAX_BYTES} bytes left.`;
  } else {
    ui.messageHint.textContent = DEFAULT_MESSAGE_HINT;
  }
  ui.messageHint.classList.toggle("problem", tooLong);
  if (tooLong !== state.tooLong) {
    state.tooLong = tooLong;
    if (tooLong) {
      ui.message.setAttribute("aria-invalid", "true");
      announce(ui.messageHint.textContent);
    } else {
      ui.message.removeAttribute("aria-invalid");
    }
  }
}

/** Shows a problem under the input line, and says it. */
function inputProblem(text: string): void {
  ui.messageHint.textContent = text;
  ui.messageHint.classList.add("problem");
  announce(text);
}

/** Sends one command; says whether the line is done with (and may be cleared). */
function run(command: Command, session: Session | null): boolean {
  if ("help" in command) {
    notice(HELP);
    return true;
  }
  if ("unknown" in command) {
    notice(`unknown command ${command.unknown}; /help lists the commands`, "problem");
    return true;
  }
  if ("whisperUsage" in command) {
    notice('usage: /msg NAME TEXT (a name with spaces in quotes: /msg "ann lee" hello)', "problem");
    return false;
  }
  if ("quit" in command) {
    session?.leave();
    return true;
  }
  if ("whisper" in command && !state.features.has("whisper")) {
    notice("private messages are not available on this server", "problem");
    return false;
  }
  const text = "say" in command ? command.say : "whisper" in command ? command.whisper.text : "";
  if (utf8Bytes(text) > MESSAGE_MAX_BYTES) {
    announce(ui.messageHint.textContent ?? "");
    return false;
  }
  const inRoom = session !== null && session.phase.kind === "room";
  if ("say" in command && state.pending !== null) {
    return inRoom ? sendWithFile(command.say, session) : notConnected();
  }
  if ("say" in command && text.trim() === "") {
    return false;
  }
  const frame =
    "say" in command
      ? ({ type: "say", text } as const)
      : "whisper" in command
        ? ({ type: "whisper", to: command.whisper.to, text } as const)
        : ({ type: "who" } as const);
  return inRoom && session.send(frame) ? true : notConnected();
}

function notConnected(): false {
  inputProblem("Not connected: nothing was sent. Your line is kept.");
  return false;
}

ui.sayForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const line = ui.message.value;
  // An empty line sends only a chosen file.
  if (line.trim() === "" && state.pending === null) {
    return;
  }
  const command: Command = line.trim() === "" ? { say: "" } : parseLine(line, state.roster.map((m) => m.name));
  if (!run(command, state.session)) {
    return;
  }
  if (line.trim() !== "" && state.sent[state.sent.length - 1] !== line) {
    state.sent.push(line);
    if (state.sent.length > 100) {
      state.sent.shift();
    }
  }
  state.sentPos = -1;
  ui.message.value = "";
  updateMessageHint();
  conversation.flush();
  conversation.scrollToEnd();
});

ui.message.addEventListener("input", updateMessageHint);

ui.message.addEventListener("keydown", (event) => {
  if (emoji.handleKey(event)) {
    return;
  }
  switch (event.key) {
    case "ArrowUp":
    case "ArrowDown": {
      if (state.sent.length === 0 || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) {
        return;
      }
      if (state.sentPos === -1 && ui.message.value !== "" && event.key === "ArrowUp") {
        return;
      }
      event.preventDefault();
      if (event.key === "ArrowUp") {
        state.sentPos = state.sentPos === -1 ? state.sent.length - 1 : Math.max(0, state.sentPos - 1);
        ui.message.value = state.sent[state.sentPos];
      } else if (state.sentPos !== -1) {
        state.sentPos += 1;
        if (state.sentPos >= state.sent.length) {
          state.sentPos = -1;
          ui.message.value = "";
        } else {
          ui.message.value = state.sent[state.sentPos];
        }
      }
      updateMessageHint();
      return;
    }
    case "PageUp":
    case "PageDown": {
      event.preventDefault();
      const step = Math.max(40, ui.log.clientHeight * 0.9);
      ui.log.scrollBy({ top: event.key === "PageUp" ? -step : step });
      return;
    }
    case "Escape":
      if (document.body.classList.contains("roster-open")) {
        setRosterOpen(false);
      }
      return;
  }
});

// ---------------------------------------------------------------- files

function canUpload(): boolean {
  return state.features.has("files") && state.uploadToken !== "" && state.maxUploadBytes > 0;
}

/** Shows the chosen file, its progress and what became of it. */
function renderTray(): void {
  const p = state.pending;
  ui.tray.hidden = p === null;
  if (p === null) {
    return;
  }
  ui.trayName.textContent = `${plainText(p.file.name) || "file"} (${humanSize(p.file.size)})`;
  ui.trayProgress.hidden = p.status !== "uploading";
  ui.tray.classList.toggle("failed", p.status === "failed");
  ui.trayRemove.textContent = p.status === "uploading" ? "Cancel" : "Remove";
}

function trayState(text: string, say = false): void {
  ui.trayState.textContent = text;
  if (say) {
    announce(text);
  }
}

/** Forgets the chosen file, stopping its upload. */
function dropPending(): void {
  const p = state.pending;
  state.pending = null;
  p?.upload?.abort();
  renderTray();
}

/** Starts uploading `file` for the next message. */
function attach(file: File): void {
  if (!canUpload()) {
    inputProblem("This server does not accept files.");
    return;
  }
  if (file.size > state.maxUploadBytes) {
    inputProblem(tooLarge(file, state.maxUploadBytes));
    return;
  }
  dropPending();
  updateMessageHint();
  const pending: Pending = { file, status: "uploading", upload: null, attachment: null, sendWith: null };
  state.pending = pending;
  ui.trayProgress.value = 0;
  renderTray();
  trayState("Uploading… 0%");
  announce(`Uploading ${plainText(file.name)}.`);
  pending.upload = upload(file, state.uploadToken, state.maxUploadBytes, (fraction) => {
    if (state.pending === pending) {
      ui.trayProgress.value = fraction;
      trayState(`Uploading… ${Math.floor(fraction * 100)}%`);
    }
  });
  void pending.upload.done.then((result) => {
    if (state.pending !== pending) {
      return;
    }
    pending.upload = null;
    if (!result.ok) {
      if (result.aborted) {
        dropPending();
        return;
      }
      pending.status = "failed";
      pending.sendWith = null;
      renderTray();
      trayState(result.problem, true);
      return;
    }
    pending.status = "ready";
    pending.attachment = result.attachment;
    renderTray();
    if (pending.sendWith !== null) {
      const text = pending.sendWith;
      pending.sendWith = null;
      const session = state.session;
      if (session === null || session.phase.kind !== "room" || !sendWithFile(text, session)) {
        // Not connected now: the text goes back to the line, to send again.
        if (ui.message.value === "") {
          ui.message.value = text;
          updateMessageHint();
        }
        trayState("Uploaded, but not sent: not connected. Enter sends it.", true);
      }
      return;
    }
    trayState("Ready: Enter sends it, with what you type.", true);
  });
}

/** Sends `text` with the chosen file, now or when its upload is done. */
function sendWithFile(text: string, session: Session): boolean {
  const p = state.pending;
  if (p === null) {
    return false;
  }
  if (p.status === "failed") {
    inputProblem("The file was not uploaded: remove it, or choose it again.");
    return false;
  }
  if (p.status === "uploading") {
    p.sendWith = text;
    trayState("Uploading… it is sent with your text when done.", true);
    return true;
  }
  if (p.attachment === null || !session.send({ type: "say", text, attachment: p.attachment.url })) {
    return notConnected();
  }
  state.pending = null;
  renderTray();
  return true;
}

ui.attach.addEventListener("click", () => ui.file.click());
ui.file.addEventListener("change", () => {
  const file = ui.file.files?.[0];
  ui.file.value = "";
  if (file) {
    attach(file);
    ui.message.focus();
  }
});
ui.trayRemove.addEventListener("click", () => {
  dropPending();
  ui.message.focus();
});

ui.message.addEventListener("paste", (event) => {
  const file = event.clipboardData?.files[0];
  if (file && canUpload()) {
    event.preventDefault();
    attach(file);
  }
});

// Dragging files over the room shows where to drop them; dropping one
// anywhere in the room attaches it.
let dragDepth = 0;

const carriesFiles = (event: DragEvent): boolean => event.dataTransfer?.types.includes("Files") ?? false;

function showDropTarget(shown: boolean): void {
  ui.dropTarget.hidden = !shown;
  document.body.classList.toggle("dragging", shown);
}

ui.screens.room.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event) || !canUpload()) return;
  event.preventDefault();
  dragDepth += 1;
  showDropTarget(true);
});
ui.screens.room.addEventListener("dragover", (event) => {
  if (!carriesFiles(event) || !canUpload()) return;
  event.preventDefault();
  if (event.dataTransfer) {
    event.dataTransfer.dropEffect = "copy";
  }
});
ui.screens.room.addEventListener("dragleave", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) {
    showDropTarget(false);
  }
});
ui.screens.room.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  showDropTarget(false);
  const files = event.dataTransfer?.files;
  if (!files || files.length === 0) {
    return;
  }
  attach(files[0]);
  if (files.length > 1) {
    notice(`one file per message: ${plainText(files[0].name)} is attached; drop the others after sending it`, "problem");
  }
  ui.message.focus();
});
// A file dropped elsewhere on the page must not replace the page with the file.
window.addEventListener("dragover", (event) => {
  if (carriesFiles(event)) event.preventDefault();
});
window.addEventListener("drop", (event) => {
  if (carriesFiles(event)) event.preventDefault();
});

// ---------------------------------------------------------------- the roster on narrow screens

function setRosterOpen(open: boolean): void {
  document.body.classList.toggle("roster-open", open);
  ui.rosterToggle.setAttribute("aria-expanded", open ? "true" : "false");
}

ui.rosterToggle.addEventListener("click", () => {
  setRosterOpen(!document.body.classList.contains("roster-open"));
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("roster-open")) {
    setRosterOpen(false);
    ui.rosterToggle.focus();
  }
});

// Closing or leaving the page says goodbye rather than just dropping the connection.
window.addEventListener("pagehide", () => {
  state.session?.leave();
});

showScreen("join");
renderStatus();
ui.name.focus();
