// Model.load on broken checkpoints: every case must fail with a coded error that
// names the file, tensor or field at fault, and leave the process healthy.
import { mkdtemp, readFile, rm, truncate, writeFile, unlink, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { readSafetensorsHeader, readTensorData, writeSafetensors } from "../../lib/io/safetensors.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

let root = "";
let n = 0;
const spec = tinySpecs()["qwen2-f32-gqa-tied"];

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-load-"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function fresh(extra: Partial<typeof spec> = {}) {
  return makeTinyCheckpoint(join(root, `ckpt-${n++}`), { ...spec, ...extra });
}

async function editConfig(dir: string, edit: (c: Record<string, unknown>) => void) {
  const path = join(dir, "config.json");
  const c = JSON.parse(await readFile(path, "utf8"));
  edit(c);
  await writeFile(path, JSON.stringify(c));
}

/** Rewrites model.safetensors through fn(tensors) -> tensors. */
async function editWeights(
  dir: string,
  fn: (t: Record<string, { dtype: string; shape: number[]; data: Uint8Array }>) => void,
) {
  const path = join(dir, "model.safetensors");
  const header = await readSafetensorsHeader(path);
  const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
  for (const t of header.tensors.values()) {
    tensors[t.name] = { dtype: t.dtype, shape: t.shape, data: new Uint8Array(await readTensorData(header, t.name)) };
  }
  fn(tensors);
  await writeSafetensors(path, tensors);
}

test("a config.json missing a required field names the field", async () => {
  const { dir } = await fresh();
  await editConfig(dir, (c) => delete c.hidden_size);
  await expectError(() => Model.load(dir), "ERR_CONFIG", /config\.json.*missing required field "hidden_size"/);
});

test("an unsupported architecture is named", async () => {
  const { dir } = await fresh();
  await editConfig(dir, (c) => (c.architectures = ["GPT2LMHeadModel"]));
  await expectError(() => Model.load(dir), "ERR_CONFIG", /unsupported architecture "GPT2LMHeadModel"/);
});

test("config.json that is not JSON, or absent", async () => {
  const { dir } = await fresh();
  await writeFile(join(dir, "config.json"), "{ not json");
  await expectError(() => Model.load(dir), "ERR_CONFIG", /config\.json is not valid JSON/);
  await unlink(join(dir, "config.json"));
  await expectError(() => Model.load(dir), "ERR_CONFIG", /cannot read .*config\.json/);
});

test("a missing tensor is named", async () => {
  const { dir } = await fresh();
  await editWeights(dir, (t) => delete t["model.layers.1.mlp.up_proj.weight"]);
  await expectError(() => Model.load(dir), "ERR_MISSING_TENSOR", /model\.layers\.1\.mlp\.up_proj\.weight/);
});

test("a tensor of the wrong shape is named with both shapes", async () => {
  const { dir } = await fresh();
  await editWeights(dir, (t) => {
    const q = t["model.layers.0.self_attn.q_proj.weight"];
    q.shape = [q.shape[0] / 2, q.shape[1] * 2];
  });
  await expectError(() => Model.load(dir), "ERR_TENSOR_SHAPE", /q_proj\.weight has shape \[\d+, \d+\], expected/);
});

test("a bound tensor in a dtype the kernels cannot read is named", async () => {
  const { dir } = await fresh();
  await editWeights(dir, (t) => {
    const w = t["model.norm.weight"];
    t["model.norm.weight"] = { dtype: "I32", shape: w.shape, data: w.data };
  });
  await expectError(() => Model.load(dir), "ERR_UNSUPPORTED_DTYPE", /model\.norm\.weight has dtype I32/);
});

test("a truncated weights file is reported, not read past its end", async () => {
  const { dir } = await fresh();
  const path = join(dir, "model.safetensors");
  await truncate(path, (await stat(path)).size - 100);
  await expectError(() => Model.load(dir), "ERR_SAFETENSORS", /model\.safetensors/);
});

test("a sharded index naming a missing shard, or a file outside the directory", async () => {
  const { dir } = await fresh({ shards: 2 });
  const indexPath = join(dir, "model.safetensors.index.json");
  const index = JSON.parse(await readFile(indexPath, "utf8"));
  const first = Object.keys(index.weight_map)[0];
  index.weight_map[first] = "../elsewhere.safetensors";
  await writeFile(indexPath, JSON.stringify(index));
  await expectError(() => Model.load(dir), "ERR_CHECKPOINT", /lies outside/);
  index.weight_map[first] = "model-00009-of-00009.safetensors";
  await writeFile(indexPath, JSON.stringify(index));
  await expectError(() => Model.load(dir), "ERR_CHECKPOINT", /model-00009-of-00009\.safetensors, which does not exist/);
  await writeFile(indexPath, JSON.stringify({ weight_map: [] }));
  await expectError(() => Model.load(dir), "ERR_CHECKPOINT", /weight_map/);
});

test("a directory without weights, and a path that is not a directory", async () => {
  const { dir } = await fresh();
  await unlink(join(dir, "model.safetensors"));
  await expectError(() => Model.load(dir), "ERR_CHECKPOINT", /neither model\.safetensors nor/);
  await expectError(() => Model.load(join(dir, "config.json")), "ERR_CHECKPOINT", /is not a directory/);
  await expectError(() => Model.load(""), "ERR_ARGUMENT");
});

test("no tokenizer: the model loads, id APIs work, text APIs explain", async () => {
  const { dir } = await fresh({ tokenizer: false });
  const model = await Model.load(dir);
  assert.is(model.tokenizer, null);
  assert.is(model.info.tokenizer, false);
  assert.is((await model.forward([1, 2, 3])).logits.rows, 3);
  await expectError(() => model.forward("def f():"), "ERR_NO_TOKENIZER", /no tokenizer\.json/);
  await expectError(() => model.complete("x"), "ERR_NO_TOKENIZER");
  const r = await model.complete([1, 2], { maxTokens: 3, stopOnEos: false });
  assert.is(r.tokens.length, 3);
});

test("a broken tokenizer.json is named", async () => {
  const { dir } = await fresh({ tokenizer: true });
  await writeFile(join(dir, "tokenizer.json"), "[1,2");
  await expectError(() => Model.load(dir), "ERR_TOKENIZER", /tokenizer\.json is not valid JSON/);
  await writeFile(join(dir, "tokenizer.json"), "[1,2]");
  await expectError(() => Model.load(dir), "ERR_TOKENIZER", /tokenizer\.json must hold a JSON object/);
});

test.run();
