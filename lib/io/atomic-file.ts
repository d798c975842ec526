/** Writes a whole file atomically: to a temp name beside it, fsynced, then renamed over `path`. */
import { randomBytes } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { writeFully } from "./safetensors.js";

export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const temp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  const file = await open(temp, "wx");
  try {
    try {
      await writeFully(file, bytes, 0, path);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}
