// Small DOM helpers shared by the page's parts. Text from the server only
// ever becomes text nodes.

import { type Piece, clock, colourIndex, namePieces } from "./text";

export function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error(`#${id} is missing from index.html`);
  }
  return el as T;
}

export function appendPieces(parent: HTMLElement, pieces: Piece[]): void {
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

export function nameElement(name: string, tag: "bdi" | "span" = "bdi"): HTMLElement {
  const el = document.createElement(tag);
  el.className = `name sender-${colourIndex(name)}`;
  appendPieces(el, namePieces(name));
  return el;
}

export function timeElement(ts: number): HTMLTimeElement {
  const t = document.createElement("time");
  const d = new Date(ts);
  if (!Number.isNaN(d.getTime())) {
    t.dateTime = d.toISOString();
  }
  t.textContent = clock(ts);
  return t;
}

export function span(className: string, text: string): HTMLSpanElement {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

const announcer = byId<HTMLDivElement>("announcer");

/** Says `text` through the polite live region. */
export function announce(text: string): void {
  // Clearing first makes a repeated text be announced again.
  announcer.textContent = "";
  window.setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}
