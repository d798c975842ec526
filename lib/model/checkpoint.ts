/**
 * Locates and validates the weight files of a Hugging Face checkpoint directory:
 * model.safetensors, or shards listed in model.safetensors.index.json. Headers are
 * parsed (and distrusted) in lib/io/safetensors.ts; the result is the tensor table
 * the native loader memory-maps.
 */
import { access } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { readSafetensorsHeader, type SafetensorsHeader } from "../io/safetensors.js";
import type { NativeTensorRef } from "../native-types.js";
import { describeIssue, readJsonFile } from "../validate.js";

export interface CheckpointFiles {
  /** Absolute paths of the safetensors files, in shard order. */
  files: string[];
  tensors: NativeTensorRef[];
  /** Dtype of the largest group of tensors ("BF16", "F32", ...). */
  dominantDtype: string;
  totalBytes: number;
}

const indexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).optional(),
  weight_map: z.record(z.string(), z.string().min(1)),
});

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function readIndex(dir: string, indexPath: string): Promise<Map<string, string>> {
  const parsed = indexSchema.safeParse(await readJsonFile(indexPath, "ERR_CHECKPOINT"));
  if (!parsed.success) throw new DeepGuardError("ERR_CHECKPOINT", `${indexPath}: ${describeIssue(parsed.error.issues[0])}`);
  const root = resolve(dir) + sep;
  const map = new Map<string, string>();
  for (const [tensor, file] of Object.entries(parsed.data.weight_map)) {
    const full = resolve(dir, file);
    if (!full.startsWith(root)) {
      throw new DeepGuardError("ERR_CHECKPOINT", `${indexPath}: shard "${file}" of ${tensor} lies outside ${dir}`);
    }
    map.set(tensor, full);
  }
  return map;
}

/** The native loader's view of parsed headers: absolute offsets, file = index into headers. */
export function tensorTable(headers: readonly SafetensorsHeader[]): NativeTensorRef[] {
  const out: NativeTensorRef[] = [];
  headers.forEach((h, file) => {
    for (const t of h.tensors.values()) {
      out.push({ name: t.name, file, dtype: t.dtype, shape: t.shape, offset: h.dataOffset + t.begin, length: t.end - t.begin });
    }
  });
  return out;
}

export async function locateCheckpoint(dir: string): Promise<CheckpointFiles> {
  const single = join(dir, "model.safetensors");
  const indexPath = join(dir, "model.safetensors.index.json");
  let headers: SafetensorsHeader[];
  let owner: Map<string, string> | null = null;
  if (await exists(indexPath)) {
    owner = await readIndex(dir, indexPath);
    const shardPaths = [...new Set(owner.values())].sort();
    for (const p of shardPaths) {
      if (!(await exists(p))) {
        throw new DeepGuardError("ERR_CHECKPOINT", `${indexPath} names shard ${p}, which does not exist`);
      }
    }
    headers = await Promise.all(shardPaths.map((p) => readSafetensorsHeader(p)));
  } else if (await exists(single)) {
    headers = [await readSafetensorsHeader(single)];
  } else {
    const hint = (await exists(join(dir, "pytorch_model.bin")))
      ? " (pytorch_model.bin found: convert it to safetensors; pickled weights are never loaded)"
      : "";
    throw new DeepGuardError("ERR_CHECKPOINT", `${dir} has neither model.safetensors nor model.safetensors.index.json${hint}`);
  }

  if (owner) {
    for (const h of headers) {
      for (const name of h.tensors.keys()) {
        const expected = owner.get(name);
        // A tensor the index does not list, or lists in another shard, would be ambiguous.
        if (expected !== h.path) {
          throw new DeepGuardError(
            "ERR_CHECKPOINT",
            `${name} is stored in ${h.path} but the index ${expected ? `puts it in ${expected}` : "does not list it"}`,
          );
        }
      }
    }
  }
  const tensors = tensorTable(headers);
  const bytesByDtype = new Map<string, number>();
  let totalBytes = 0;
  for (const t of tensors) {
    bytesByDtype.set(t.dtype, (bytesByDtype.get(t.dtype) ?? 0) + t.length);
    totalBytes += t.length;
  }
  if (owner) {
    const found = new Set(tensors.map((t) => t.name));
    for (const [name, file] of owner) {
      if (!found.has(name)) throw new DeepGuardError("ERR_MISSING_TENSOR", `${file} has no tensor ${name} listed in ${indexPath}`);
    }
  }
  const dominantDtype = [...bytesByDtype.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "F32";
  return { files: headers.map((h) => h.path), tensors, dominantDtype, totalBytes };
}
