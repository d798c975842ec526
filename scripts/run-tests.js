#!/usr/bin/env node
// Runs every compiled uvu suite (dist/test/**/*.test.js, in subfolders by capability)
// and ends with the line "N passed, N failed" that CI counts. Exit code is non-zero on
// any failure. Arguments filter suites by substring of their path.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(root, "dist", "test");
const only = process.argv.slice(2);

function suites(d) {
  return readdirSync(d, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? suites(join(d, e.name)) : e.name.endsWith(".test.js") ? [join(d, e.name)] : [],
  );
}
// tsc never deletes outputs of removed sources: run only tests whose .ts exists.
const files = suites(dir)
  .map((f) => relative(dir, f))
  .filter((f) => existsSync(join(root, "test", f.replace(/\.js$/, ".ts"))))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
if (files.length === 0) {
  console.log("no test suite matched");
  process.exit(1);
}

let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of files) {
  const started = Date.now();
  const res = spawnSync(process.execPath, [join(dir, file)], { cwd: root, encoding: "utf8", env: process.env });
  const out = (res.stdout ?? "") + (res.stderr ?? "");
  process.stdout.write(out);
  const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? NaN);
  const ok = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? NaN);
  const skip = Number(/Skipped:\s+(\d+)/.exec(out)?.[1] ?? 0);
  if (Number.isNaN(total) || Number.isNaN(ok)) {
    // The suite crashed before uvu could report: count it as one failure.
    failed += 1;
    console.log(`!! ${file} did not report (exit ${res.status}, signal ${res.signal})`);
    continue;
  }
  passed += ok;
  skipped += skip;
  failed += total - ok - skip;
  if (res.status !== 0 && total - ok - skip === 0) failed += 1;
  console.log(`-- ${file}: ${ok}/${total} passed in ${((Date.now() - started) / 1000).toFixed(1)}s`);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed === 0 ? 0 : 1);
