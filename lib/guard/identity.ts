/**
 * The identity of a base model a guard was made for: its shape, plus a
 * fingerprint of its embedding weights (two checkpoints of one shape are told
 * apart without reading the whole matrix: the bytes of 64 evenly spaced rows,
 * the dtype and shape go into a SHA-256).
 */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { DeepGuardError } from "../errors.js";
import type { Model } from "../model/model.js";
import { locateCheckpoint } from "../model/checkpoint.js";

export interface ModelIdentity {
  architecture: string;
  hiddenSize: number;
  numLayers: number;
  vocabSize: number;
  /** "sha256:<hex>" over the embedding's dtype, shape and 64 sampled rows. */
  embeddingFingerprint: string;
}

const SAMPLED_ROWS = 64;
const cache = new WeakMap<Model, Promise<ModelIdentity>>();

export function modelIdentity(model: Model): Promise<ModelIdentity> {
  let p = cache.get(model);
  if (!p) {
    p = computeIdentity(model);
    cache.set(model, p);
    p.catch(() => cache.delete(model));
  }
  return p;
}

async function computeIdentity(model: Model): Promise<ModelIdentity> {
  const { files, tensors } = await locateCheckpoint(model.info.directory);
  const emb = tensors.find((t) => t.name === "model.embed_tokens.weight");
  if (!emb || emb.shape.length !== 2) {
    throw new DeepGuardError("ERR_MISSING_TENSOR", `${model.info.directory}: no 2-D model.embed_tokens.weight to fingerprint`);
  }
  const [rows] = emb.shape;
  const rowBytes = emb.length / rows;
  const hash = createHash("sha256");
  hash.update(`${emb.dtype}[${emb.shape.join(",")}]`);
  const file = await open(files[emb.file], "r");
  try {
    const buf = Buffer.alloc(rowBytes);
    const n = Math.min(rows, SAMPLED_ROWS);
    for (let i = 0; i < n; i++) {
      const row = Math.floor((i * (rows - 1)) / Math.max(1, n - 1));
      const { bytesRead } = await file.read(buf, 0, rowBytes, emb.offset + row * rowBytes);
      if (bytesRead !== rowBytes) throw new DeepGuardError("ERR_CHECKPOINT", `${files[emb.file]}: embedding row ${row} is truncated`);
      hash.update(buf);
    }
  } finally {
    await file.close();
  }
  return {
    architecture: model.info.architecture,
    hiddenSize: model.info.hiddenSize,
    numLayers: model.info.numLayers,
    vocabSize: model.info.vocabSize,
    embeddingFingerprint: `sha256:${hash.digest("hex")}`,
  };
}
