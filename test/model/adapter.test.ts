// PEFT LoRA adapters: the adapted forward equals the float64 reference with
// merged weights W + (alpha/r)·B·A; switching the adapter off (per call or by
// unloading) gives the base model exactly; bad adapter directories are named.
import { mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { readSafetensorsHeader, readTensorData, writeSafetensors } from "../../lib/io/safetensors.js";
import { makeTinyAdapter, mergeAdapter, type AdapterSpec } from "../support/adapter.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { flatten, randomIds, relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { referenceForward } from "../support/reference.js";

const spec = tinySpecs()["llama-bf16-gqa-rope-linear"];
const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
let root = "";
let ckpt: TinyCheckpoint;
let model: Model;
let n = 0;

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-lora-"));
  ckpt = await makeTinyCheckpoint(join(root, "base"), spec);
  // Exact f32 semantics and exact K/V: the merged-weight reference has no place for
  // BF16-rounded base inputs beside f32 LoRA factors (activations.test.ts covers "bfloat16").
  model = await Model.load(ckpt.dir, { activations: "float32", kvCacheDtype: "float32" });
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function adapter(over: Partial<AdapterSpec> = {}) {
  const s: AdapterSpec = { rank: 4, alpha: 8, targets: ALL, dtype: "F32", seed: 5, ...over };
  return { s, a: await makeTinyAdapter(join(root, `adapter-${n++}`), ckpt.weights, spec.layers, s) };
}

const cases: [string, Partial<AdapterSpec>][] = [
  ["all projections, F32", {}],
  ["attention only, BF16 factors", { targets: ["q_proj", "v_proj"], dtype: "BF16", rank: 8, alpha: 16 }],
  ["MLP of one layer, rsLoRA", { targets: ["gate_proj", "up_proj", "down_proj"], layers: [1], rslora: true }],
];
for (const [name, over] of cases) {
  test(`adapted forward matches the merged-weight reference: ${name}`, async () => {
    const { s, a } = await adapter(over);
    const info = await model.loadAdapter(a.dir);
    assert.is(info.scale, a.scale);
    const ids = randomIds(11, spec.vocab, 2);
    const ref = referenceForward(ckpt.config, mergeAdapter(ckpt.weights, a, s.rank), ids);
    const out = await model.forward(ids, { hiddenStates: "all" });
    assert.ok(relativeError(out.logits.data, flatten(ref.logits)) <= 1e-4, "logits");
    for (let l = 0; l <= spec.layers; l++) {
      assert.ok(relativeError(out.hiddenStates.get(l)!.data, flatten(ref.hiddenStates[l])) <= 1e-4, `hidden ${l}`);
    }
    model.unloadAdapter();
  });
}

test("adapter: false and unloadAdapter() give the base model bit for bit", async () => {
  const ids = randomIds(9, spec.vocab, 4);
  const base = await model.forward(ids);
  const { a } = await adapter();
  await model.loadAdapter(a.dir);
  assert.ok(model.adapter);
  const adapted = await model.forward(ids);
  assert.ok(relativeError(adapted.logits.data, base.logits.data) > 1e-3, "the adapter changes the output");
  const off = await model.forward(ids, { adapter: false });
  assert.equal(Array.from(off.logits.data), Array.from(base.logits.data));
  model.unloadAdapter();
  assert.is(model.adapter, null);
  assert.equal(Array.from((await model.forward(ids)).logits.data), Array.from(base.logits.data));
  await expectError(() => model.forward(ids, { adapter: "yes" as unknown as boolean }), "ERR_ARGUMENT", /option "adapter"/);
});

async function brokenConfig(edit: (c: Record<string, unknown>) => void) {
  const { a } = await adapter();
  const path = join(a.dir, "adapter_config.json");
  const c = JSON.parse(await readFile(path, "utf8"));
  edit(c);
  await writeFile(path, JSON.stringify(c));
  return a.dir;
}

const badConfigs: [string, (c: Record<string, unknown>) => void, RegExp][] = [
  ["another PEFT type", (c) => (c.peft_type = "PREFIX_TUNING"), /field "peft_type"/],
  ["no rank", (c) => delete c.r, /missing required field "r"/],
  ["an unknown target", (c) => (c.target_modules = ["c_attn"]), /"c_attn" is not one of/],
  ["a regex target", (c) => (c.target_modules = ".*proj"), /regular expression/],
  ["trained biases", (c) => (c.bias = "all"), /field "bias"/],
  ["DoRA", (c) => (c.use_dora = true), /field "use_dora"/],
  ["modules_to_save", (c) => (c.modules_to_save = ["lm_head"]), /field "modules_to_save"/],
  ["a layer the model lacks", (c) => (c.layers_to_transform = [7]), /layer 7 does not exist/],
];
for (const [name, edit, message] of badConfigs) {
  test(`rejects an adapter config with ${name}`, async () => {
    await expectError(async () => model.loadAdapter(await brokenConfig(edit)), "ERR_ADAPTER", message);
    assert.is(model.adapter, null, "a failed load leaves no adapter attached");
  });
}

test("missing or mis-shaped factors are named; missing files too", async () => {
  const { a } = await adapter();
  const path = join(a.dir, "adapter_model.safetensors");
  const header = await readSafetensorsHeader(path);
  const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
  for (const t of header.tensors.values()) {
    tensors[t.name] = { dtype: t.dtype, shape: t.shape, data: new Uint8Array(await readTensorData(header, t.name)) };
  }
  const victim = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight";
  const { [victim]: removed, ...rest } = tensors;
  await writeSafetensors(path, rest);
  await expectError(() => model.loadAdapter(a.dir), "ERR_MISSING_TENSOR", new RegExp(victim.replace(/\./g, "\\.")));
  await writeSafetensors(path, { ...rest, [victim]: { ...removed, shape: [removed.shape[1], removed.shape[0]] } });
  await expectError(() => model.loadAdapter(a.dir), "ERR_TENSOR_SHAPE", /lora_B\.weight has shape/);
  await unlink(path);
  await expectError(() => model.loadAdapter(a.dir), "ERR_ADAPTER", /no adapter_model\.safetensors/);
  await expectError(() => model.loadAdapter(join(root, "nowhere")), "ERR_ADAPTER", /adapter_config\.json: not found/);
  assert.is(model.adapter, null);
});

test.run();
