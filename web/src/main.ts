// The page: four screens (name, queue, room, left) driven by one Session.
// Everything that comes from the server is inserted as text, never as HTML.

import type { ServerFrame } from "./protocol";
import { type Phase, Session, socketUrl } from "./session";
import {
  MESSAGE_MAX_BYTES,
  type Piece,
  checkName,
  clock,
  colourIndex,
  elapsed,
  namePieces,
  plainName,
  plainText,
  reasonWords,
  seconds,
  textPieces,
  utf8Bytes,
} from "./text";

/** The conversation keeps this many entries; older ones are dropped first. */
const MAX_ENTRIES = 5000;
/** The roster holds at most this many names, whatever the server sends. */
const MAX_ROSTER = 100_000;
/** Past this many bytes the input line shows how many are left. */
const BYTES_WARNING = MESSAGE_MAX_BYTES - 512;
/** A notice listing the room names at most this many members. */
const NAMES_IN_NOTICE = 30;

const HELP =
  "commands: /users lists the room, /quit leaves, /help shows this, //text sends /text; PageUp and PageDown scroll the conversation";

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error(`#${id} is missing from index.html`);
  }
  return el as T;
}

const ui = {
  status: byId<HTMLParagraphElement>("status"),
  announcer: byId<HTMLDivElement>("announcer"),
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
  queueWaiting: byId<HTMLElement>("queue-waiting"),
  queueWaited: byId<HTMLTimeElement>("queue-waited"),
  queueLeave: byId<HTMLButtonElement>("queue-leave"),
  roomTitle: byId<HTMLHeadingElement>("room-title"),
  roomSummary: byId<HTMLParagraphElement>("room-summary"),
  rosterToggle: byId<HTMLButtonElement>("roster-toggle"),
  leave: byId<HTMLButtonElement>("leave"),
  log: byId<HTMLDivElement>("log"),
  entries: byId<HTMLOListElement>("entries"),
  roster: byId<HTMLUListElement>("roster"),
  rosterCount: byId<HTMLSpanElement>("roster-count"),
  sayForm: byId<HTMLFormElement>("say-form"),
  message: byId<HTMLInputElement>("message"),
  messageHint: byId<HTMLParagraphElement>("message-hint"),
  leftTitle: byId<HTMLHeadingElement>("left-title"),
  leftText: byId<HTMLParagraphElement>("left-text"),
  rejoin: byId<HTMLButtonElement>("rejoin"),
  rename: byId<HTMLButtonElement>("rename"),
};

type ScreenName = keyof typeof ui.screens;

const DEFAULT_MESSAGE_HINT = ui.messageHint.textContent ?? "";

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
};

let tick: ReturnType<typeof setInterval> | null = null;

// ---------------------------------------------------------------- helpers

function announce(text: string): void {
  // Clearing first makes a repeated text be announced again.
  ui.announcer.textContent = "";
  window.setTimeout(() => {
    ui.announcer.textContent = text;
  }, 50);
}

function appendPieces(parent: HTMLElement, pieces: Piece[]): void {
  for (const piece of pieces) {
    if (piece.escaped) {
      const esc = document.createElement("span");
      esc.className = "esc";
      esc.textContent = piece.text;
      parent.append(esc);
    } else {
      parent.append(document.createTextNode(piece.text));
    }
  }
}

function nameElement(name: string, tag: "bdi" | "span" = "bdi"): HTMLElement {
  const el = document.createElement(tag);
  el.className = `name sender-${colourIndex(name)}`;
  appendPieces(el, namePieces(name));
  return el;
}

function timeElement(ts: number): HTMLTimeElement {
  const t = document.createElement("time");
  const d = new Date(ts);
  if (!Number.isNaN(d.getTime())) {
    t.dateTime = d.toISOString();
  }
  t.textContent = clock(ts);
  return t;
}

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

function phaseText(phase: Phase): string {
  switch (phase.kind) {
    case "connecting":
      return phase.attempt > 1 ? `connecting… (attempt ${phase.attempt})` : "connecting…";
    case "joining":
      return "connected; joining…";
    case "queued":
      return "connected · waiting in the queue";
    case "room":
      return "connected";
    case "retrying": {
      const left = phase.at - Date.now();
      const wait = phase.delayMs < 1000 ? seconds(phase.delayMs) : `${Math.max(1, Math.ceil(left / 1000))} s`;
      return `disconnected (${plainText(phase.reason)}); reconnecting in ${wait} (attempt ${phase.attempt})`;
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
  let text = phaseText(phase);
  if (phase.kind === "room") {
    text = `connected as ${plainName(state.me)}`;
  }
  ui.status.textContent = text;
  ui.status.dataset.state = stateOf(phase);
}

function renderRoomSummary(): void {
  const n = state.roster.length;
  ui.roomSummary.textContent = `${n} in the room (capacity ${state.capacity})`;
  ui.rosterCount.textContent = String(n);
  ui.rosterToggle.textContent = `Users (${n})`;
}

/** One timer for what ticks: the wait in the queue and the reconnect countdown. */
function startTicking(): void {
  const needed = state.screen === "queue" || state.session?.phase.kind === "retrying";
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
  if (state.session?.phase.kind === "retrying") {
    renderStatus();
  }
}

// ---------------------------------------------------------------- conversation

/**
 * Entries wait here until the next frame: a busy room delivers many
 * messages between two paints, and adding them together costs one layout
 * instead of one each. A hidden tab paints nothing, so it flushes on a timer.
 */
const pending: HTMLLIElement[] = [];
let pendingScroll = false;
let flushScheduled = false;

function addEntry(item: HTMLLIElement, forceScroll = false): void {
  pending.push(item);
  if (pending.length > MAX_ENTRIES) {
    pending.splice(0, pending.length - MAX_ENTRIES);
  }
  pendingScroll ||= forceScroll;
  if (!flushScheduled) {
    flushScheduled = true;
    if (document.hidden) {
      setTimeout(flushEntries, 250);
    } else {
      requestAnimationFrame(flushEntries);
    }
  }
}

function flushEntries(): void {
  flushScheduled = false;
  if (pending.length === 0) {
    return;
  }
  const log = ui.log;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  const list = ui.entries;
  const fragment = document.createDocumentFragment();
  fragment.append(...pending);
  pending.length = 0;
  list.append(fragment);
  let excess = list.childElementCount - MAX_ENTRIES;
  while (excess > 0 && list.firstElementChild) {
    list.firstElementChild.remove();
    excess -= 1;
  }
  if (atBottom || pendingScroll) {
    log.scrollTop = log.scrollHeight;
  }
  pendingScroll = false;
}

/** Empties the conversation (a new stay). */
function clearEntries(): void {
  pending.length = 0;
  ui.entries.replaceChildren();
}

type NoticeKind = "info" | "problem" | "connection";

/** A notice: joins, leaves, answers, refusals, goodbyes, connection changes. */
function notice(text: string, kind: NoticeKind = "info", ts = Date.now()): void {
  const item = document.createElement("li");
  item.className = `entry notice notice-${kind}`;
  const mark = document.createElement("span");
  mark.className = "mark";
  mark.setAttribute("aria-hidden", "true");
  mark.textContent = kind === "problem" ? "!" : "*";
  const body = document.createElement("span");
  body.className = "body";
  appendPieces(body, textPieces(text));
  item.append(timeElement(ts), mark, body);
  addEntry(item);
}

function addMessage(from: string, text: string, ts: number): void {
  const item = document.createElement("li");
  const mine = from === state.me;
  item.className = mine ? "entry message mine" : "entry message";
  const sep = document.createElement("span");
  sep.className = "sep";
  sep.textContent = ": ";
  const body = document.createElement("span");
  body.className = "body";
  body.dir = "auto";
  appendPieces(body, textPieces(text));
  item.append(timeElement(ts), nameElement(from), sep, body);
  addEntry(item, mine);
}

function namesList(names: string[]): string {
  const shown = names.slice(0, NAMES_IN_NOTICE).map(plainName).join(", ");
  return names.length > NAMES_IN_NOTICE ? `${shown} and ${names.length - NAMES_IN_NOTICE} more` : shown;
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
  }
  return item;
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
      state.me = frame.name;
      state.capacity = frame.capacity;
      state.admitted = true;
      state.entered = true;
      state.queuedSince = 0;
      setRoster(frame.users);
      notice(frame.text);
      notice(`in the room: ${namesList(frame.users)}`);
      showScreen("room", ui.message);
      if (from !== "room") {
        announce(`${frame.text} ${state.roster.length} in the room.`);
      }
      return;
    }
    case "queued": {
      state.admitted = true;
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
      showScreen("queue", ui.queueTitle);
      return;
    }
    case "message":
      addMessage(frame.from, frame.text, frame.ts);
      return;
    case "joined":
      rosterAdd(frame.name);
      notice(`${plainName(frame.name)} joined`, "info", frame.ts);
      return;
    case "left":
      rosterRemove(frame.name);
      notice(`${plainName(frame.name)} left (${reasonWords(frame.reason)})`, "info", frame.ts);
      return;
    case "users":
      setRoster(frame.names);
      notice(`in the room (${frame.names.length}): ${namesList(frame.names)}`);
      return;
    case "gap":
      notice(`${frame.missed} events were skipped while you were behind; refreshing the user list`, "problem");
      state.session?.send({ type: "who" });
      return;
    case "error":
      notice(`error (${frame.code}): ${frame.text}`, "problem");
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

function onPhase(phase: Phase): void {
  renderStatus();
  startTicking();
  switch (phase.kind) {
    case "retrying": {
      const text = `disconnected (${phase.reason}); reconnecting in ${seconds(phase.delayMs)}`;
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
  clearEntries();
  setRoster([]);
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

type Command = { say: string } | { who: true } | { quit: true } | { help: true } | { unknown: string };

function parseLine(line: string): Command {
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
    default:
      return { unknown: `/${word}` };
  }
}

ui.sayForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const line = ui.message.value;
  if (line.trim() === "") {
    return;
  }
  const session = state.session;
  const command = parseLine(line);
  if ("help" in command) {
    notice(HELP);
  } else if ("unknown" in command) {
    notice(`unknown command ${command.unknown}; /help lists the commands`, "problem");
  } else if ("quit" in command) {
    session?.leave();
  } else {
    if ("say" in command && utf8Bytes(command.say) > MESSAGE_MAX_BYTES) {
      announce(ui.messageHint.textContent ?? "");
      return;
    }
    const sent =
      session !== null && session.phase.kind === "room" && session.send("say" in command ? { type: "say", text: command.say } : { type: "who" });
    if (!sent) {
      ui.messageHint.textContent = "Not connected: nothing was sent. Your line is kept.";
      ui.messageHint.classList.add("problem");
      announce(ui.messageHint.textContent);
      return;
    }
  }
  if (state.sent[state.sent.length - 1] !== line) {
    state.sent.push(line);
    if (state.sent.length > 100) {
      state.sent.shift();
    }
  }
  state.sentPos = -1;
  ui.message.value = "";
  updateMessageHint();
  flushEntries();
  ui.log.scrollTop = ui.log.scrollHeight;
});

ui.message.addEventListener("input", updateMessageHint);

ui.message.addEventListener("keydown", (event) => {
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
