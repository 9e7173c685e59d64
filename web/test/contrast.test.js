// WCAG AA contrast of the client's colours, in the light and the dark
// scheme, read from src/app.css: 4.5:1 for text, 3:1 for the focus ring.
// Needs neither the server nor a browser.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const css = readFileSync(new URL("../src/app.css", import.meta.url), "utf8");

/** The custom properties of the first `:root { … }` block after `from`. */
function variables(from) {
  const start = css.indexOf(":root {", css.indexOf(from));
  const block = css.slice(start, css.indexOf("}", start));
  const vars = {};
  for (const [, name, value] of block.matchAll(/--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;/g)) {
    vars[name] = value;
  }
  return vars;
}

const light = variables(":root");
const dark = { ...light, ...variables("@media (prefers-color-scheme: dark)") };

function luminance(hex) {
  const channel = (i) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
}

function contrast(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

const senders = [...Array(8).keys()].map((i) => `sender-${i}`);
const TEXT = [
  ...["text", "muted", "problem", "ok", "warn", "accent"].flatMap((fg) => [[fg, "surface"], [fg, "bg"]]),
  ["accent-text", "accent"],
  ["text", "mine"],
  ["muted", "mine"],
  ["text", "esc-bg"],
  ["accent", "mine"],
  ["text", "whisper"],
  ["muted", "whisper"],
  ["private", "whisper"],
  ...senders.flatMap((s) => [[s, "surface"], [s, "mine"], [s, "bg"], [s, "whisper"]]),
];

for (const [scheme, vars] of [["light", light], ["dark", dark]]) {
  test(`text meets 4.5:1 in the ${scheme} scheme`, () => {
    const failures = [];
    for (const [fg, bg] of TEXT) {
      assert.ok(vars[fg] && vars[bg], `--${fg} and --${bg} are defined`);
      const ratio = contrast(vars[fg], vars[bg]);
      if (ratio < 4.5) failures.push(`--${fg} on --${bg}: ${ratio.toFixed(2)}`);
    }
    assert.deepEqual(failures, []);
  });

  test(`the focus ring meets 3:1 in the ${scheme} scheme`, () => {
    for (const bg of ["surface", "bg"]) {
      assert.ok(contrast(vars.focus, vars[bg]) >= 3, `--focus on --${bg}`);
    }
  });
}
