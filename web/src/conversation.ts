// The conversation: live entries batched per frame, earlier messages from
// the chat log (on joining, and page by page when the user scrolls back),
// whispers and attachments. Messages are kept once per id.

import { IMAGE_TYPES } from "./upload";
import type { Attachment, ClientFrame, MessageFrame } from "./protocol";
import { appendPieces, nameElement, span, timeElement } from "./dom";
import { humanSize, plainText, textPieces } from "./text";

/** The conversation keeps this many entries; older ones are dropped first. */
export const MAX_ENTRIES = 5000;
/** How many earlier messages one scroll back asks for. */
export const PAGE = 50;
/** Missed messages after a reconnect are fetched in pages this large, for at most this many pages. */
const FILL_PAGE = 200;
const FILL_PAGES = 5;
/** Scrolling this close to the top loads the next page of earlier messages. */
const NEAR_TOP_PX = 64;
/** This close to the bottom counts as reading the newest entries. */
const NEAR_BOTTOM_PX = 48;

export type NoticeKind = "info" | "problem" | "connection";

type Request =
  /** The page the server sends after `welcome`. */
  | { kind: "join" }
  /** Older than everything shown, for scrolling back. */
  | { kind: "older" }
  /** Missed while disconnected: newer than `after`, inserted before `anchor`. */
  | { kind: "fill"; after: number; anchor: Element; pagesLeft: number };

export interface HistoryPage {
  messages: MessageFrame[];
  more: boolean;
  epoch: string;
}

export interface ConversationParts {
  log: HTMLDivElement;
  list: HTMLOListElement;
  top: HTMLDivElement;
  topState: HTMLParagraphElement;
  loadOlder: HTMLButtonElement;
  /** Sends a request on the current connection; says whether it went out. */
  send(frame: ClientFrame): boolean;
}

export class Conversation {
  /** The user's own name, to mark their entries. */
  me = "";
  private readonly pending: HTMLLIElement[] = [];
  private pendingScroll = false;
  private flushScheduled = false;
  /** Message entries by id, shown or pending. */
  private readonly ids = new Map<number, HTMLLIElement>();
  /** The chat log the ids belong to; null before the first page. */
  private epoch: string | null = null;
  private historyOn = false;
  /** Whether the log holds messages older than the oldest shown. */
  private more = false;
  /** How many messages came from the log rather than live. */
  private earlier = 0;
  private request: Request | null = null;
  /** The current connection's welcome notice: earlier messages go before it. */
  private anchor: HTMLLIElement | null = null;
  /** Whether the view follows the newest entries (for pictures that load later). */
  private stuck = true;

  constructor(private readonly parts: ConversationParts) {
    parts.log.addEventListener("scroll", () => this.onScroll(), { passive: true });
    // A narrower window or an on-screen keyboard must not hide the newest entries.
    new ResizeObserver(() => {
      if (this.stuck) {
        this.scrollToEnd();
      }
    }).observe(parts.log);
    parts.loadOlder.addEventListener("click", () => this.loadOlder());
  }

  // ------------------------------------------------------------ a stay, a connection

  /** Empties everything: a new stay. */
  clear(): void {
    this.pending.length = 0;
    this.ids.clear();
    this.parts.list.replaceChildren();
    this.epoch = null;
    this.more = false;
    this.earlier = 0;
    this.request = null;
    this.anchor = null;
    this.historyOn = false;
    this.stuck = true;
    this.renderTop();
  }

  /**
   * A `welcome` on a new connection, whose notice is `welcomeItem`: with
   * `history`, the server's next frame is the join page.
   */
  entered(historyOn: boolean, welcomeItem: HTMLLIElement): void {
    this.historyOn = historyOn;
    this.anchor = welcomeItem;
    this.request = historyOn ? { kind: "join" } : null;
    this.renderTop();
  }

  /** The connection is gone, and with it the answer to any request. */
  disconnected(): void {
    this.request = null;
    this.renderTop();
  }

  // ------------------------------------------------------------ entries

  /** A notice: joins, leaves, answers, refusals, goodbyes, connection changes. */
  notice(text: string, kind: NoticeKind = "info", ts = Date.now()): HTMLLIElement {
    const item = document.createElement("li");
    item.className = `entry notice notice-${kind}`;
    const mark = span("mark", kind === "problem" ? "!" : "*");
    mark.setAttribute("aria-hidden", "true");
    const body = document.createElement("span");
    body.className = "body";
    appendPieces(body, textPieces(text));
    item.append(timeElement(ts), mark, body);
    this.add(item);
    return item;
  }

  /** A live `message`. */
  message(message: MessageFrame): void {
    if (this.request?.kind === "join") {
      // The join page comes before any live frame: a server that sent none will not.
      this.request = null;
      this.renderTop();
    }
    if (this.ids.has(message.id)) {
      return;
    }
    const item = this.messageItem(message, false);
    this.add(item, message.from === this.me);
  }

  /** A `whisper`, to or from the user. */
  whisper(from: string, to: string, text: string, ts: number): void {
    const item = document.createElement("li");
    const mine = from === this.me;
    item.className = mine ? "entry whisper mine" : "entry whisper";
    const arrow = span("arrow", " → ");
    arrow.setAttribute("aria-hidden", "true");
    const body = document.createElement("span");
    body.className = "body";
    body.dir = "auto";
    appendPieces(body, textPieces(text));
    item.append(
      timeElement(ts),
      nameElement(from),
      arrow,
      span("visually-hidden", " privately to "),
      nameElement(to),
      span("private-tag", " (private)"),
      span("sep", ": "),
      body,
    );
    this.add(item, mine);
  }

  private messageItem(message: MessageFrame, earlier: boolean): HTMLLIElement {
    const item = document.createElement("li");
    const mine = message.from === this.me;
    item.className = `entry message${mine ? " mine" : ""}${earlier ? " earlier" : ""}`;
    item.dataset.id = String(message.id);
    const body = document.createElement("span");
    body.className = "body";
    body.dir = "auto";
    appendPieces(body, textPieces(message.text));
    item.append(timeElement(message.ts), nameElement(message.from), span("sep", ": "), body);
    if (message.attachment) {
      item.append(this.attachmentBlock(message.attachment));
    }
    this.ids.set(message.id, item);
    return item;
  }

  private attachmentBlock(file: Attachment): HTMLDivElement {
    const block = document.createElement("div");
    block.className = "attachment";
    const name = plainText(file.name) || "file";
    if (IMAGE_TYPES.has(file.mime.toLowerCase())) {
      const img = document.createElement("img");
      img.className = "preview";
      img.alt = name;
      img.decoding = "async";
      img.src = file.url;
      // A picture that arrives later keeps a reader of the newest entries at the bottom.
      img.addEventListener("load", () => {
        if (this.stuck) {
          this.scrollToEnd();
        }
      });
      block.append(img);
    }
    const link = document.createElement("a");
    link.className = "file-link";
    link.href = file.url;
    link.download = name;
    appendPieces(link, textPieces(file.name || "file"));
    const size = span("file-size", ` (${humanSize(file.size)})`);
    block.append(link, size);
    return block;
  }

  /**
   * Entries wait here until the next frame: a busy room delivers many
   * messages between two paints, and adding them together costs one layout
   * instead of one each. A hidden tab paints nothing, so it flushes on a timer.
   */
  private add(item: HTMLLIElement, forceScroll = false): void {
    this.pending.push(item);
    if (this.pending.length > MAX_ENTRIES) {
      for (const dropped of this.pending.splice(0, this.pending.length - MAX_ENTRIES)) {
        this.forget(dropped);
      }
    }
    this.pendingScroll ||= forceScroll;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      if (document.hidden) {
        setTimeout(() => this.flush(), 250);
      } else {
        requestAnimationFrame(() => this.flush());
      }
    }
  }

  private forget(item: Element): void {
    const id = (item as HTMLElement).dataset.id;
    if (id !== undefined && this.ids.get(Number(id)) === item) {
      this.ids.delete(Number(id));
    }
  }

  private atBottom(): boolean {
    const log = this.parts.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_BOTTOM_PX;
  }

  /** Puts the waiting entries into the page now. */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) {
      return;
    }
    const atBottom = this.atBottom();
    const list = this.parts.list;
    const fragment = document.createDocumentFragment();
    fragment.append(...this.pending);
    this.pending.length = 0;
    list.append(fragment);
    let excess = list.childElementCount - MAX_ENTRIES;
    if (excess > 0) {
      // Older messages now exist that are not shown.
      this.more = true;
    }
    while (excess > 0 && list.firstElementChild) {
      this.forget(list.firstElementChild);
      list.firstElementChild.remove();
      excess -= 1;
    }
    if (atBottom || this.pendingScroll) {
      this.scrollToEnd();
    }
    this.pendingScroll = false;
    this.renderTop();
  }

  scrollToEnd(): void {
    this.parts.log.scrollTop = this.parts.log.scrollHeight;
    this.stuck = true;
  }

  // ------------------------------------------------------------ earlier messages

  /** A `history` frame: the answer to the one request in flight. */
  history(page: HistoryPage): void {
    const request = this.request;
    this.request = null;
    this.flush();
    if (request === null || request.kind === "join") {
      this.joinPage(page);
    } else if (page.epoch !== this.epoch) {
      // The log was replaced between two pages: its ids mean nothing here.
      this.more = false;
    } else if (request.kind === "older") {
      this.olderPage(page);
    } else {
      this.fillPage(page, request);
    }
    this.renderTop();
  }

  private newestId(): number {
    let newest = -Infinity;
    for (const id of this.ids.keys()) newest = Math.max(newest, id);
    return newest;
  }

  private oldestId(): number {
    let oldest = Infinity;
    for (const id of this.ids.keys()) oldest = Math.min(oldest, id);
    return oldest;
  }

  /** Inserts messages not shown yet before `before`; returns the first one inserted. */
  private insert(messages: MessageFrame[], before: Node | null): HTMLLIElement | null {
    const fragment = document.createDocumentFragment();
    let first: HTMLLIElement | null = null;
    for (const message of messages) {
      if (this.ids.has(message.id)) {
        continue;
      }
      const item = this.messageItem(message, true);
      this.earlier += 1;
      first ??= item;
      fragment.append(item);
    }
    const list = this.parts.list;
    list.insertBefore(fragment, before !== null && before.parentNode === list ? before : null);
    return first;
  }

  private joinPage(page: HistoryPage): void {
    const anchor = this.anchor;
    const wasAtBottom = this.stuck || this.atBottom();
    if (this.epoch !== null && this.epoch !== page.epoch && this.ids.size > 0) {
      // A new log: ids cannot be compared, so what was shown goes.
      const list = this.parts.list;
      while (list.firstElementChild && list.firstElementChild !== anchor) {
        this.forget(list.firstElementChild);
        list.firstElementChild.remove();
      }
      this.ids.clear();
      this.epoch = null;
      this.earlier = 0;
      this.notice("The server's chat log is new: the conversation starts again.", "connection");
      this.flush();
    }
    if (this.epoch === null || this.ids.size === 0) {
      this.epoch = page.epoch;
      this.more = page.more;
      this.insert(page.messages, anchor);
    } else {
      // The same log after a reconnect: only what was missed meanwhile.
      const newest = this.newestId();
      const first = this.insert(
        page.messages.filter((m) => m.id > newest),
        anchor,
      );
      const oldestOfPage = page.messages[0]?.id;
      if (page.more && oldestOfPage !== undefined && oldestOfPage > newest && first !== null) {
        this.ask({ kind: "fill", after: newest, anchor: first, pagesLeft: FILL_PAGES }, oldestOfPage, FILL_PAGE);
      }
    }
    if (wasAtBottom) {
      this.scrollToEnd();
    }
  }

  private olderPage(page: HistoryPage): void {
    const log = this.parts.log;
    const height = log.scrollHeight;
    const top = log.scrollTop;
    const oldest = this.oldestId();
    const older = page.messages.filter((m) => m.id < oldest);
    const first = this.insert(older, this.parts.list.firstElementChild);
    // A page that adds nothing would be asked for again and again.
    this.more = page.more && first !== null;
    // The entries that were on screen stay where they were.
    log.scrollTop = top + (log.scrollHeight - height);
  }

  private fillPage(page: HistoryPage, request: Extract<Request, { kind: "fill" }>): void {
    const wasAtBottom = this.stuck;
    const first = this.insert(
      page.messages.filter((m) => m.id > request.after),
      request.anchor,
    );
    const oldestOfPage = page.messages[0]?.id;
    if (page.more && oldestOfPage !== undefined && oldestOfPage > request.after && first !== null) {
      if (request.pagesLeft > 1) {
        this.ask({ ...request, anchor: first, pagesLeft: request.pagesLeft - 1 }, oldestOfPage, FILL_PAGE);
      } else {
        this.notice("More messages were written while you were away than are shown here.", "connection");
      }
    }
    if (wasAtBottom) {
      this.scrollToEnd();
    }
  }

  private ask(request: Request, before: number, limit: number): void {
    if (this.request === null && this.parts.send({ type: "history", before, limit })) {
      this.request = request;
    }
  }

  private canLoadOlder(): boolean {
    return (
      this.historyOn &&
      this.more &&
      this.request === null &&
      this.ids.size > 0 &&
      this.parts.list.childElementCount < MAX_ENTRIES
    );
  }

  /** Asks for the page before the oldest message shown. */
  loadOlder(): void {
    if (!this.canLoadOlder()) {
      return;
    }
    const limit = Math.min(PAGE, MAX_ENTRIES - this.parts.list.childElementCount);
    this.ask({ kind: "older" }, this.oldestId(), limit);
    this.renderTop();
  }

  private onScroll(): void {
    this.stuck = this.atBottom();
    if (this.parts.log.scrollTop < NEAR_TOP_PX) {
      this.loadOlder();
    }
  }

  /** The line above the conversation: what there is before it. */
  private renderTop(): void {
    const { top, topState, loadOlder } = this.parts;
    const loading = this.request !== null && this.request.kind !== "fill";
    // Nothing to say when the log had nothing before this visit.
    const hide = !this.historyOn || (!loading && !this.more && this.earlier === 0);
    if (hide && top.contains(document.activeElement)) {
      this.parts.log.focus({ preventScroll: true });
    }
    top.hidden = hide;
    if (hide) {
      return;
    }
    const full = this.parts.list.childElementCount >= MAX_ENTRIES;
    let text = "";
    if (loading) {
      text = "";
    } else if (!this.more) {
      text = "This is the start of the conversation.";
    } else if (full) {
      text = `The page keeps the latest ${MAX_ENTRIES} entries.`;
    }
    if (topState.textContent !== text) {
      topState.textContent = text;
    }
    // The button stays while it loads (disabled), so that a keyboard user keeps the focus.
    const shown = loading || (this.more && !full && this.ids.size > 0);
    if (!shown && document.activeElement === loadOlder) {
      // The start is reached: the focus goes to the conversation, not to nowhere.
      this.parts.log.focus({ preventScroll: true });
    }
    loadOlder.hidden = !shown;
    const label = loading ? "Loading earlier messages…" : "Load earlier messages";
    if (loadOlder.textContent !== label) {
      loadOlder.textContent = label;
    }
    if (loading) {
      loadOlder.setAttribute("aria-disabled", "true");
    } else {
      loadOlder.removeAttribute("aria-disabled");
    }
  }
}
