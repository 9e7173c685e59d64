// Emoji in the input line: `:code` completion (a combobox list under the
// caret's word) and a picker grid behind a button. Both work from the
// keyboard: arrows choose, Enter or Tab takes, Escape closes.

import { EMOJI, type Emoji, codeBefore, finishedCodeBefore, suggest } from "./emoji";

/** The picker's grid is this many emoji wide; Up and Down move by a row. */
const COLUMNS = 8;

export class EmojiInput {
  private shown: Emoji[] = [];
  private selected = 0;
  /** Where the code being completed starts in the input. */
  private start = 0;
  private pickerBuilt = false;
  /** The input's selection when the picker opened, where the emoji goes. */
  private caret: [number, number] = [0, 0];

  constructor(
    private readonly input: HTMLInputElement,
    private readonly list: HTMLUListElement,
    private readonly pickerButton: HTMLButtonElement,
    private readonly picker: HTMLDivElement,
    /** Called after the input's text was changed here. */
    private readonly changed: () => void,
  ) {
    input.addEventListener("input", () => this.onInput());
    input.addEventListener("blur", () => this.closeList());
    // Choosing with the mouse must not take the focus from the input first.
    list.addEventListener("mousedown", (event) => event.preventDefault());
    list.addEventListener("click", (event) => {
      const option = (event.target as Element).closest("li[data-index]");
      if (option instanceof HTMLElement) {
        this.take(Number(option.dataset.index));
      }
    });
    pickerButton.addEventListener("click", () => (this.picker.hidden ? this.openPicker() : this.closePicker(true)));
    picker.addEventListener("keydown", (event) => this.onPickerKey(event));
    picker.addEventListener("click", (event) => {
      const button = (event.target as Element).closest("button[data-emoji]");
      if (button instanceof HTMLButtonElement) {
        this.pick(button.dataset.emoji ?? "");
      }
    });
    document.addEventListener("mousedown", (event) => {
      const target = event.target as Node;
      if (!this.picker.hidden && !this.picker.contains(target) && !this.pickerButton.contains(target)) {
        this.closePicker(false);
      }
    });
    picker.addEventListener("focusout", (event) => {
      const next = event.relatedTarget as Node | null;
      if (next !== null && !this.picker.contains(next) && next !== this.pickerButton) {
        this.closePicker(false);
      }
    });
  }

  // ------------------------------------------------------------ completion

  private onInput(): void {
    const caret = this.input.selectionStart ?? this.input.value.length;
    const finished = finishedCodeBefore(this.input.value, caret);
    if (finished !== null) {
      // `:smile:` typed out in full becomes the emoji at once.
      this.replace(finished.start, caret, finished.emoji, "");
      this.closeList();
      return;
    }
    const typing = codeBefore(this.input.value, caret);
    const found = typing === null ? [] : suggest(typing.typed);
    if (typing === null || found.length === 0) {
      this.closeList();
      return;
    }
    this.start = typing.start;
    this.shown = found;
    this.selected = 0;
    this.renderList();
  }

  private renderList(): void {
    const items = this.shown.map((e, i) => {
      const li = document.createElement("li");
      li.id = `emoji-option-${i}`;
      li.dataset.index = String(i);
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", i === this.selected ? "true" : "false");
      const glyph = document.createElement("span");
      glyph.className = "glyph";
      glyph.textContent = e.emoji;
      li.append(glyph, document.createTextNode(` :${e.code}:`));
      return li;
    });
    this.list.replaceChildren(...items);
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
    this.input.setAttribute("aria-activedescendant", `emoji-option-${this.selected}`);
  }

  private closeList(): void {
    if (this.list.hidden) {
      return;
    }
    this.shown = [];
    this.list.hidden = true;
    this.list.replaceChildren();
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }

  get listOpen(): boolean {
    return !this.list.hidden;
  }

  private take(index: number): void {
    const choice = this.shown[index];
    if (choice === undefined) {
      return;
    }
    const caret = this.input.selectionStart ?? this.input.value.length;
    this.closeList();
    this.replace(this.start, caret, choice.emoji, " ");
  }

  /** Replaces `from..to` of the input with `emoji`, and a space unless one follows. */
  private replace(from: number, to: number, emoji: string, space: string): void {
    const value = this.input.value;
    const after = value.slice(to);
    const gap = space !== "" && !/^\s/.test(after) ? space : "";
    const inserted = `${emoji}${gap}`;
    this.input.value = `${value.slice(0, from)}${inserted}${after}`;
    const at = from + inserted.length;
    this.input.setSelectionRange(at, at);
    this.changed();
  }

  /**
   * Keys for the open completion list. Returns true when the key was used
   * (the input line's own keys must then leave it alone).
   */
  handleKey(event: KeyboardEvent): boolean {
    if (!this.listOpen || event.altKey || event.ctrlKey || event.metaKey) {
      return false;
    }
    switch (event.key) {
      case "ArrowDown":
      case "ArrowUp": {
        const step = event.key === "ArrowDown" ? 1 : -1;
        this.selected = (this.selected + step + this.shown.length) % this.shown.length;
        this.renderList();
        break;
      }
      case "Enter":
      case "Tab":
        this.take(this.selected);
        break;
      case "Escape":
        this.closeList();
        break;
      default:
        return false;
    }
    event.preventDefault();
    event.stopPropagation();
    return true;
  }

  // ------------------------------------------------------------ the picker

  private buildPicker(): void {
    const seen = new Set<string>();
    const buttons: HTMLButtonElement[] = [];
    for (const e of EMOJI) {
      if (seen.has(e.emoji)) {
        continue;
      }
      seen.add(e.emoji);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "emoji";
      button.dataset.emoji = e.emoji;
      button.textContent = e.emoji;
      button.title = `:${e.code}:`;
      button.setAttribute("aria-label", e.code.replace(/_/g, " "));
      button.tabIndex = -1;
      buttons.push(button);
    }
    this.picker.replaceChildren(...buttons);
    this.pickerBuilt = true;
  }

  private pickerButtons(): HTMLButtonElement[] {
    return [...this.picker.querySelectorAll<HTMLButtonElement>("button[data-emoji]")];
  }

  openPicker(): void {
    if (!this.pickerBuilt) {
      this.buildPicker();
    }
    this.closeList();
    this.caret = [this.input.selectionStart ?? this.input.value.length, this.input.selectionEnd ?? this.input.value.length];
    this.picker.hidden = false;
    this.pickerButton.setAttribute("aria-expanded", "true");
    this.focusEmoji(0);
  }

  /** Closes the picker; `refocus` gives the focus back to its button. */
  closePicker(refocus: boolean): void {
    if (this.picker.hidden) {
      return;
    }
    this.picker.hidden = true;
    this.pickerButton.setAttribute("aria-expanded", "false");
    if (refocus) {
      this.pickerButton.focus();
    }
  }

  private focusEmoji(index: number): void {
    const buttons = this.pickerButtons();
    const at = Math.max(0, Math.min(buttons.length - 1, index));
    buttons.forEach((b, i) => {
      b.tabIndex = i === at ? 0 : -1;
    });
    buttons[at]?.focus();
  }

  private onPickerKey(event: KeyboardEvent): void {
    const buttons = this.pickerButtons();
    const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
    let next: number | null = null;
    switch (event.key) {
      case "ArrowRight":
        next = at + 1;
        break;
      case "ArrowLeft":
        next = at - 1;
        break;
      case "ArrowDown":
        next = at + COLUMNS;
        break;
      case "ArrowUp":
        next = at - COLUMNS;
        break;
      case "Home":
        next = 0;
        break;
      case "End":
        next = buttons.length - 1;
        break;
      case "Escape":
        event.preventDefault();
        event.stopPropagation();
        this.closePicker(true);
        return;
      default:
        return;
    }
    event.preventDefault();
    if (next >= 0 && next < buttons.length) {
      this.focusEmoji(next);
    }
  }

  /** Puts `emoji` where the caret was and goes back to typing. */
  private pick(emoji: string): void {
    const [from, to] = this.caret;
    this.closePicker(false);
    this.input.focus();
    this.replace(Math.min(from, this.input.value.length), Math.min(to, this.input.value.length), emoji, "");
  }
}
