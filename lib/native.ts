/**
 * Loads the compiled addon (build/Release/deepguard.node). Everything native is
 * reached through this module, so the rest of lib/ never touches paths.
 */
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DeepGuardError } from "./errors.js";
import type { NativeAddon } from "./native-types.js";

let cached: NativeAddon | undefined;

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new DeepGuardError("ERR_NATIVE_LOAD", "cannot find the deepguard package root");
    dir = parent;
  }
  return dir;
}

export function native(): NativeAddon {
  if (cached) return cached;
  const root = packageRoot();
  const candidates = [join(root, "build", "Release", "deepguard.node"), join(root, "build", "Debug", "deepguard.node")];
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new DeepGuardError(
      "ERR_NATIVE_LOAD",
      `the native addon is not built (looked for ${candidates.join(", ")}); run "npm install" or "npm run build:native"`,
    );
  }
  const require = createRequire(import.meta.url);
  cached = require(found) as NativeAddon;
  return cached;
}
