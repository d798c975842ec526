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

/** The DEEPGUARD_* variables the engine reads, each checked before the addon loads. */
export const ENV_VARIABLES = {
  DEEPGUARD_THREADS: "an integer in [1, 1024]: threads of the engine's pool (default: all cores)",
  DEEPGUARD_ISA: '"scalar", "avx2" or "avx512": force these kernels (at most what the CPU runs)',
} as const;

/** Throws ERR_ENV naming the variable when a DEEPGUARD_* setting is invalid (they are never ignored). */
export function checkEnvironment(env: NodeJS.ProcessEnv = process.env): void {
  const threads = env.DEEPGUARD_THREADS;
  if (threads !== undefined && !(/^[0-9]+$/.test(threads) && Number(threads) >= 1 && Number(threads) <= 1024)) {
    throw new DeepGuardError("ERR_ENV", `DEEPGUARD_THREADS=${JSON.stringify(threads)}: must be ${ENV_VARIABLES.DEEPGUARD_THREADS}`);
  }
  const isa = env.DEEPGUARD_ISA;
  if (isa !== undefined && !["scalar", "avx2", "avx512"].includes(isa)) {
    throw new DeepGuardError("ERR_ENV", `DEEPGUARD_ISA=${JSON.stringify(isa)}: must be ${ENV_VARIABLES.DEEPGUARD_ISA}`);
  }
}

export function native(): NativeAddon {
  if (cached) return cached;
  checkEnvironment();
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
  const addon = require(found) as NativeAddon;
  const isa = process.env.DEEPGUARD_ISA;
  if (isa !== undefined && addon.systemInfo().isa !== isa) {
    throw new DeepGuardError(
      "ERR_ISA_UNSUPPORTED",
      `DEEPGUARD_ISA=${isa}: this CPU (or build) cannot run ${isa} kernels; the best available is ${addon.systemInfo().bestIsa}`,
    );
  }
  cached = addon;
  return cached;
}
