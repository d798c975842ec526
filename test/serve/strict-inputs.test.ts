// Mistakes that used to be accepted silently are named errors now: checkpoint
// tensors the config does not use (e.g. num_hidden_layers too low), adapter
// tensors outside target_modules / layers_to_transform / the model's layers, and
// a memory-mapped checkpoint that changes size on disk while loaded.
import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { encodeTensor } from "../../lib/io/dtype.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import { makeTinyAdapter } from "../support/adapter.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

let root = "";
let tiny: TinyCheckpoint;
const spec = { ...tinySpecs()["llama-f32-untied-mha"], tokenizer: false };

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-strict-"));
  tiny = await makeTinyCheckpoint(join(root, "m"), spec);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A copy of the tiny checkpoint with extra tensors added to its weights file. */
async function withExtraTensors(name: string, extra: Record<string, number[]>): Promise<string> {
  const dir = (await makeTinyCheckpoint(join(root, name), spec)).dir;
  const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
  for (const [n, t] of tiny.weights) tensors[n] = { dtype: "F32", shape: t.shape, data: encodeTensor(t.values, "F32") };
  for (const [n, shape] of Object.entries(extra)) {
    tensors[n] = { dtype: "F32", shape, data: encodeTensor(new Float64Array(shape.reduce((a, b) => a * b, 1)), "F32") };
  }
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

test("checkpoint tensors the config does not use are ERR_CHECKPOINT, naming them", async () => {
  const dir = (await makeTinyCheckpoint(join(root, "fewer-layers"), spec)).dir;
  const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
  cfg.num_hidden_layers = 1; // the weights have 2
  await writeFile(join(dir, "config.json"), JSON.stringify(cfg));
  await expectError(() => Model.load(dir), "ERR_CHECKPOINT", /not used by config\.json \(1 layers\): model\.layers\.1\..*num_hidden_layers/);

  const extra = await withExtraTensors("extra", { "model.mystery.weight": [4, 4] });
  await expectError(() => Model.load(extra), "ERR_CHECKPOINT", /1 checkpoint tensor\(s\).*model\.mystery\.weight/);
  // Rotary buffers some exports carry are not weights: accepted.
  const rope = await withExtraTensors("rope-buffer", { "model.layers.0.self_attn.rotary_emb.inv_freq": [8] });
  (await Model.load(rope)).dispose();
});

test("adapter tensors outside target_modules, layers_to_transform or the model are ERR_ADAPTER", async () => {
  const model = await Model.load(tiny.dir);
  // Tensors for q_proj and v_proj, but the config targets only q_proj.
  const a = await makeTinyAdapter(join(root, "a-targets"), tiny.weights, spec.layers, { rank: 2, alpha: 4, targets: ["q_proj", "v_proj"], dtype: "F32", seed: 1 });
  await writeFile(join(a.dir, "adapter_config.json"), JSON.stringify({ ...a.config, target_modules: ["q_proj"] }));
  await expectError(() => model.loadAdapter(a.dir), "ERR_ADAPTER", /outside the adapter's target_modules.*v_proj/);
  // Tensors for layers 0 and 1, but layers_to_transform is [0].
  const b = await makeTinyAdapter(join(root, "a-layers"), tiny.weights, spec.layers, { rank: 2, alpha: 4, targets: ["q_proj"], dtype: "F32", seed: 2 });
  await writeFile(join(b.dir, "adapter_config.json"), JSON.stringify({ ...b.config, layers_to_transform: [0] }));
  await expectError(() => model.loadAdapter(b.dir), "ERR_ADAPTER", /layers\.1\.self_attn\.q_proj/);
  // Tensors for a layer the model does not have (an adapter for a deeper model).
  const deep = await makeTinyCheckpoint(join(root, "deep"), { ...spec, layers: 3 });
  const c = await makeTinyAdapter(join(root, "a-deep"), deep.weights, 3, { rank: 2, alpha: 4, targets: ["q_proj"], dtype: "F32", seed: 3 });
  await expectError(() => model.loadAdapter(c.dir), "ERR_ADAPTER", /layers\.2\.self_attn\.q_proj/);
  assert.is(model.adapter, null);
  model.dispose();
});

test("a mapped checkpoint that changes size on disk fails with ERR_CHECKPOINT_CHANGED; mmap: false is immune", async () => {
  const dir = (await makeTinyCheckpoint(join(root, "shrinks"), spec)).dir;
  const file = join(dir, "model.safetensors");
  const mapped = await Model.load(dir);
  const copied = await Model.load(dir, { mmap: false });
  await mapped.forward([1, 2, 3]);
  const before = await copied.forward([1, 2, 3]);
  await truncate(file, 1000); // overwritten in place, e.g. by a download into the same path
  await expectError(() => mapped.forward([1, 2, 3]), "ERR_CHECKPOINT_CHANGED", /model\.safetensors changed size.*reload/);
  await expectError(() => mapped.complete([1], { maxTokens: 2 }), "ERR_CHECKPOINT_CHANGED");
  const after = await copied.forward([1, 2, 3]);
  assert.equal(Array.from(after.logits.data), Array.from(before.logits.data));
  mapped.dispose();
  copied.dispose();
});

test.run();
