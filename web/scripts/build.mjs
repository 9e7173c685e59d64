// Builds the browser client into dist/: index.html, app.js (the TypeScript
// bundled with @msgpack/msgpack), app.css and favicon.svg.
//
//   node scripts/build.mjs            writes dist/
//   node scripts/build.mjs --check    builds into a temporary directory and
//                                     fails if it differs from dist/
//
// The output depends only on the sources and package-lock.json: no
// timestamps, hashes or absolute paths, so two builds are byte-identical and
// the committed dist/ can be checked.

import { build } from "esbuild";
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const src = join(root, "src");
const dist = join(root, "dist");

/** Files copied as they are. */
const STATIC = ["index.html", "favicon.svg"];

async function buildInto(out) {
  await mkdir(out, { recursive: true });
  const common = {
    absWorkingDir: root,
    bundle: true,
    minify: true,
    charset: "utf8",
    legalComments: "eof",
    logLevel: "warning",
    write: false,
  };
  const js = await build({
    ...common,
    entryPoints: [join(src, "main.ts")],
    format: "iife",
    target: ["es2020", "chrome90", "firefox90", "safari15"],
    platform: "browser",
    outfile: join(out, "app.js"),
  });
  const css = await build({
    ...common,
    entryPoints: [join(src, "app.css")],
    target: ["chrome90", "firefox90", "safari15"],
    outfile: join(out, "app.css"),
  });
  for (const file of [...js.outputFiles, ...css.outputFiles]) {
    await writeFile(file.path, file.contents);
  }
  for (const name of STATIC) {
    await copyFile(join(src, name), join(out, name));
  }
}

async function listing(dir) {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

async function check() {
  const tmp = await mkdtemp(join(tmpdir(), "anteroom-web-"));
  try {
    await buildInto(tmp);
    const built = await listing(tmp);
    const committed = await listing(dist);
    const problems = [];
    for (const name of new Set([...built, ...committed])) {
      if (!built.includes(name)) {
        problems.push(`dist/${name} is not produced by the build`);
      } else if (!committed.includes(name)) {
        problems.push(`dist/${name} is missing`);
      } else {
        const [a, b] = await Promise.all([readFile(join(tmp, name)), readFile(join(dist, name))]);
        if (!a.equals(b)) {
          problems.push(`dist/${name} differs from a fresh build`);
        }
      }
    }
    if (problems.length > 0) {
      for (const p of problems) console.error(p);
      console.error("web/dist is out of date: run `npm run build` in web/ and commit dist/");
      process.exitCode = 1;
    } else {
      console.log(`web/dist matches a fresh build (${built.join(", ")})`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

if (process.argv.includes("--check")) {
  await check();
} else {
  await rm(dist, { recursive: true, force: true });
  await buildInto(dist);
  for (const name of await listing(dist)) {
    const { size } = await import("node:fs").then((fs) => fs.promises.stat(join(dist, name)));
    console.log(`dist/${name}  ${size} bytes`);
  }
}
