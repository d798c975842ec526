// Every error code thrown anywhere (TypeScript, bindings, native) is one of ERROR_CODES,
// so users can switch on `err.code` exhaustively.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ERROR_CODES, isErrorCode } from "../lib/index.js";

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : /\.(ts|cpp|h|cu|cuh)$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

test("every ERR_ code used in lib/, native/ and bindings/ is in ERROR_CODES", () => {
  const unknown = new Set<string>();
  for (const file of ["lib", "native", "bindings"].flatMap(sources)) {
    for (const m of readFileSync(file, "utf8").matchAll(/"(ERR_[A-Z0-9_]+)"/g)) {
      if (!isErrorCode(m[1])) unknown.add(`${m[1]} (${file})`);
    }
  }
  assert.equal([...unknown], []);
});

test("ERROR_CODES has no duplicates", () => {
  assert.is(new Set(ERROR_CODES).size, ERROR_CODES.length);
});

test.run();
