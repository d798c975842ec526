/**
 * Guard files (DESIGN.md "File formats"): guard.json (schema version, the base
 * model's identity, layers, aggregation, analyzer sizes, and the SHA-256 of the
 * weights file) beside guard.safetensors (F32, PyTorch [out, in] layout, names
 * as in DESIGN.md, plus token_stats [vocab]). Both are written to temp names and
 * renamed, weights first: a crash between the two renames leaves a guard.json
 * whose checksum no longer matches, which load() reports instead of mixing them.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import { readSafetensorsHeader, writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import type { Model } from "../model/model.js";
import { describeIssue } from "../validate.js";
import { ANALYZER_SIZES, aggregationSchema, parameterShapes, resolveGuardLayers, type GuardState } from "./guard.js";
import { modelIdentity, type ModelIdentity } from "./identity.js";

export const GUARD_JSON = "guard.json";
export const GUARD_WEIGHTS = "guard.safetensors";
export const GUARD_SCHEMA_VERSION = 1;
const TOKEN_STATS = "token_stats";

const guardJsonSchema = z
  .object({
    format: z.literal("deepguard-guard"),
    schemaVersion: z.number().int(),
    baseModel: z.object({
      architecture: z.string(),
      hiddenSize: z.number().int().positive(),
      numLayers: z.number().int().positive(),
      vocabSize: z.number().int().positive(),
      embeddingFingerprint: z.string(),
    }),
    layers: z.array(z.number().int().nonnegative()).min(1),
    aggregation: aggregationSchema,
    analyzer: z.object({
      embedding: z.literal(ANALYZER_SIZES.embedding),
      hidden: z.tuple([z.literal(512), z.literal(256), z.literal(128)]),
      dropout: z.number().min(0).lt(1),
      layerNormEps: z.number().positive(),
    }),
    weights: z.object({ file: z.literal(GUARD_WEIGHTS), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  })
  .passthrough();

export type GuardJson = z.output<typeof guardJsonSchema>;

const fileError = (path: string, message: string, cause?: unknown) =>
  new DeepGuardError("ERR_GUARD_FILE", `${path}: ${message}`, cause === undefined ? undefined : { cause });

export async function saveGuardFiles(dir: string, model: Model, state: GuardState): Promise<void> {
  if (typeof dir !== "string" || dir.length === 0) throw new DeepGuardError("ERR_ARGUMENT", "Guard.save needs a directory path");
  const root = resolve(dir);
  const identity = await modelIdentity(model);
  const tensors: Record<string, TensorToWrite> = {};
  const shapes = parameterShapes(identity.hiddenSize, state.layers.length, identity.vocabSize, state.aggregation);
  for (const [name, shape] of Object.entries(shapes)) {
    const a = state.params[name];
    tensors[name] = { dtype: "F32", shape, data: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) };
  }
  const s = state.tokenStats;
  tensors[TOKEN_STATS] = { dtype: "F32", shape: [s.length], data: new Uint8Array(s.buffer, s.byteOffset, s.byteLength) };
  await mkdir(root, { recursive: true });
  const weightsPath = join(root, GUARD_WEIGHTS);
  await writeSafetensors(weightsPath, tensors, { format: "deepguard-guard" });
  const sha256 = createHash("sha256").update(await readFile(weightsPath)).digest("hex");
  const json: GuardJson = {
    format: "deepguard-guard",
    schemaVersion: GUARD_SCHEMA_VERSION,
    baseModel: identity,
    layers: state.layers,
    aggregation: state.aggregation,
    analyzer: {
      embedding: ANALYZER_SIZES.embedding,
      hidden: [...ANALYZER_SIZES.hidden],
      dropout: ANALYZER_SIZES.dropout,
      layerNormEps: 1e-5,
    },
    weights: { file: GUARD_WEIGHTS, sha256 },
  };
  await writeFileAtomic(join(root, GUARD_JSON), Buffer.from(JSON.stringify(json, null, 2) + "\n"));
}

/** Reads and checks guard.json alone (also for tools that only inspect a guard). */
export async function readGuardJson(dir: string): Promise<GuardJson> {
  const path = join(resolve(dir), GUARD_JSON);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw fileError(path, `cannot read (${(err as Error).message})`, err);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw fileError(path, `is not valid JSON: ${(err as Error).message}`, err);
  }
  const version = (raw as { schemaVersion?: unknown })?.schemaVersion;
  if (typeof version === "number" && version !== GUARD_SCHEMA_VERSION) {
    throw fileError(path, `schemaVersion ${version} is not supported (this version reads ${GUARD_SCHEMA_VERSION})`);
  }
  const parsed = guardJsonSchema.safeParse(raw);
  if (!parsed.success) throw fileError(path, describeIssue(parsed.error.issues[0]));
  return parsed.data;
}

function checkIdentity(path: string, saved: ModelIdentity, actual: ModelIdentity, dir: string): void {
  for (const key of ["architecture", "hiddenSize", "numLayers", "vocabSize", "embeddingFingerprint"] as const) {
    if (saved[key] !== actual[key]) {
      throw new DeepGuardError(
        "ERR_GUARD_MISMATCH",
        `${path}: the guard was made for a model with ${key} ${JSON.stringify(saved[key])}, but ${dir} has ${JSON.stringify(actual[key])}`,
      );
    }
  }
}

export async function loadGuardFiles(dir: string, model: Model): Promise<GuardState> {
  if (typeof dir !== "string" || dir.length === 0) throw new DeepGuardError("ERR_ARGUMENT", "Guard.load needs a directory path");
  const root = resolve(dir);
  const jsonPath = join(root, GUARD_JSON);
  const json = await readGuardJson(root);
  checkIdentity(jsonPath, json.baseModel, await modelIdentity(model), model.info.directory);
  let layers: number[];
  try {
    layers = resolveGuardLayers(json.layers, model.config.numLayers);
  } catch (err) {
    throw fileError(jsonPath, `layers: ${(err as Error).message}`, err);
  }
  const weightsPath = join(root, GUARD_WEIGHTS);
  let bytes: Buffer;
  try {
    bytes = await readFile(weightsPath);
  } catch (err) {
    throw fileError(weightsPath, `cannot read (${(err as Error).message})`, err);
  }
  const sha = createHash("sha256").update(bytes).digest("hex");
  if (sha !== json.weights.sha256) {
    throw fileError(weightsPath, `SHA-256 ${sha} differs from ${json.weights.sha256} recorded in ${GUARD_JSON} (corrupt or from another save)`);
  }
  let header;
  try {
    header = await readSafetensorsHeader(weightsPath);
  } catch (err) {
    throw fileError(weightsPath, (err as Error).message, err);
  }
  const expected: Record<string, number[]> = {
    ...parameterShapes(model.config.hiddenSize, layers.length, model.config.vocabSize, json.aggregation),
    [TOKEN_STATS]: [model.config.vocabSize],
  };
  for (const name of header.tensors.keys()) {
    if (!(name in expected)) throw fileError(weightsPath, `unexpected tensor "${name}" for a ${json.aggregation} guard`);
  }
  const params: Record<string, Float32Array> = {};
  let tokenStats: Float32Array | undefined;
  for (const [name, shape] of Object.entries(expected)) {
    const t = header.tensors.get(name);
    if (!t) throw fileError(weightsPath, `missing tensor "${name}"`);
    if (t.dtype !== "F32") throw fileError(weightsPath, `tensor "${name}" is ${t.dtype}, expected F32`);
    if (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i])) {
      throw fileError(weightsPath, `tensor "${name}" has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}]`);
    }
    const start = header.dataOffset + t.begin;
    const a = new Float32Array((t.end - t.begin) / 4);
    new Uint8Array(a.buffer).set(bytes.subarray(start, header.dataOffset + t.end));
    for (let i = 0; i < a.length; i++) {
      if (!Number.isFinite(a[i])) throw fileError(weightsPath, `tensor "${name}" holds a non-finite value at index ${i}`);
    }
    if (name === TOKEN_STATS) tokenStats = a;
    else params[name] = a;
  }
  return { layers, aggregation: json.aggregation, params, tokenStats: tokenStats! };
}
