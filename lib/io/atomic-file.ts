/**
 * Whole-file writes that never leave a half-written file behind: the data goes to
 * a temp name beside the target, is fsynced, then renamed over it.
 */
import { randomBytes } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { DeepGuardError } from "../errors.js";

export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tempPath = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  try {
    const file = await open(tempPath, "wx");
    try {
      await file.writeFile(data);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tempPath, path);
  } catch (err) {
    await unlink(tempPath).catch(() => undefined);
    throw new DeepGuardError("ERR_FILE_WRITE", `cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}
