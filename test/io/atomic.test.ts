import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeFileAtomic, writeJsonAtomic } from "../../lib/io/atomic.js";

let dir = "";
test.before.each(async () => {
  dir = await mkdtemp(join(tmpdir(), "dg-atomic-"));
});
test.after.each(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("writes and replaces a file, leaving no temp file", async () => {
  const path = join(dir, "a.json");
  await writeFile(path, "old");
  await writeJsonAtomic(path, { x: 1 });
  assert.equal(JSON.parse(await readFile(path, "utf8")), { x: 1 });
  await writeFileAtomic(path, new Uint8Array([104, 105]));
  assert.is(await readFile(path, "utf8"), "hi");
  assert.equal(await readdir(dir), ["a.json"]);
});

test("a failed write leaves the old file intact and no temp file", async () => {
  const path = join(dir, "missing-dir", "a.json");
  let failed = false;
  await writeFileAtomic(path, "x").catch(() => (failed = true));
  assert.ok(failed);
  const target = join(dir, "b.txt");
  await writeFile(target, "old");
  // A directory in the way of the rename makes it fail after the temp file was written.
  const blocked = join(dir, "sub");
  await writeFile(join(dir, "keep"), "k");
  await import("node:fs/promises").then((fs) => fs.mkdir(join(blocked, "inner"), { recursive: true }));
  failed = false;
  await writeFileAtomic(blocked, "x").catch(() => (failed = true));
  assert.ok(failed);
  assert.is(await readFile(target, "utf8"), "old");
  assert.equal((await readdir(dir)).sort(), ["b.txt", "keep", "sub"]);
});

test.run();
