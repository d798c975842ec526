/**
 * The default model shipped inside the package (models/default/, model card in
 * its README.md): a small Qwen2 code model pretrained by this project, with
 * its DeepGuard guard and LoRA adapter in models/default/guard/. Model.load()
 * with no directory, Model.loadDefault(), Guard.loadDefault(model) and every
 * CLI command given no model folder use it.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DeepGuardError } from "../errors.js";

/** models/default/ at the package root (this file runs as dist/lib/model/default-model.js). */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL("../../../models/default/", import.meta.url)).replace(/\/$/, "");
/** The default model's guard and adapter (the folder `deepguard train` wrote). */
export const DEFAULT_GUARD_DIR = join(DEFAULT_MODEL_DIR, "guard");

/** `dir` itself, after checking that the shipped folder is there (an install may have pruned it). */
export async function requireDefaultFolder(dir: string, file: string): Promise<string> {
  const st = await stat(join(dir, file)).catch(() => null);
  if (!st?.isFile()) {
    throw new DeepGuardError(
      "ERR_NO_DEFAULT_MODEL",
      `the default model is missing from this installation (${join(dir, file)} not found); pass a model directory instead`,
    );
  }
  return dir;
}
