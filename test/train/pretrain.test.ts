// Full-parameter training: weight gradients of every weight kind against central
// finite differences, pretraining lowers held-out loss, resume reproduces the loss
// curve bit for bit, and the exported Hugging Face checkpoint loads in the engine
// with logits equal to the trainer's forward.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Model, parseModelConfig } from "../../lib/index.js";
import { PretrainModel, parsePretrainConfig, pretrain, readPretrainConfig, type PretrainConfig } from "../../lib/train/pretrain.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import { Random } from "../../lib/random.js";
import { expectError } from "../support/expect.js";

function hfConfig(o: { arch: "Qwen2ForCausalLM" | "LlamaForCausalLM"; tied: boolean; vocab?: number; extra?: Record<string, unknown> }) {
  return {
    architectures: [o.arch],
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: o.vocab ?? 16,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: o.tied,
    max_position_embeddings: 64,
    eos_token_id: 0,
    ...o.extra,
  };
}

function fdCheck(name: string, analytic: number, numeric: number): string | null {
  const err = Math.abs(analytic - numeric);
  return err <= 3e-4 + 3e-2 * Math.abs(numeric) ? null : `${name}: analytic ${analytic} vs finite difference ${numeric}`;
}

for (const variant of [
  { label: "Qwen2, untied head, q/k/v biases", arch: "Qwen2ForCausalLM" as const, tied: false, extra: {} },
  { label: "Llama, tied head, o_proj and MLP biases", arch: "LlamaForCausalLM" as const, tied: true, extra: { attention_bias: true, mlp_bias: true } },
]) {
  test(`every weight gradient matches finite differences (${variant.label})`, async () => {
    const config = parseModelConfig(hfConfig(variant));
    const model = new PretrainModel(config);
    model.initialize(5, 0.5);
    const r = new Random(9);
    for (const [name, p] of model.params) if (model.shapes.get(name)!.length === 1) for (let i = 0; i < p.length; i++) p[i] += (r.nextDouble() - 0.5) * 0.4;
    const B = 2, width = 7;
    const rows = Int32Array.from({ length: B * width }, () => Math.floor(r.nextDouble() * 16));
    await model.step(rows, width, true);
    const kinds = new Set<string>();
    const failures: string[] = [];
    for (const [name, p] of model.params) {
      const g = model.grads.get(name)!;
      let big = 0;
      for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[big])) big = i;
      const picks = [big, Math.floor(r.nextDouble() * p.length), Math.floor(r.nextDouble() * p.length)];
      for (const i of picks) {
        const keep = p[i], h = 3e-3;
        p[i] = keep + h;
        const up = (await model.step(rows, width, false)).loss;
        p[i] = keep - h;
        const down = (await model.step(rows, width, false)).loss;
        p[i] = keep;
        const f = fdCheck(`${name}[${i}]`, g[i], (up - down) / (2 * h));
        if (f) failures.push(f);
      }
      assert.ok(Math.abs(g[big]) > 1e-5, `${name} has an all-zero gradient`);
      kinds.add(name.replace(/^model\.layers\.\d+\./, "layer."));
    }
    assert.equal(failures, []);
    const expected = ["model.embed_tokens.weight", "model.norm.weight", "layer.input_layernorm.weight", "layer.post_attention_layernorm.weight",
      ...["q", "k", "v", "o"].map((x) => `layer.self_attn.${x}_proj.weight`), ...["gate", "up", "down"].map((x) => `layer.mlp.${x}_proj.weight`)];
    if (!variant.tied) expected.push("lm_head.weight");
    if (variant.arch === "Qwen2ForCausalLM") expected.push(...["q", "k", "v"].map((x) => `layer.self_attn.${x}_proj.bias`));
    else expected.push("layer.self_attn.o_proj.bias", ...["q", "k", "v"].map((x) => `layer.self_attn.${x}_proj.bias`), ...["gate", "up", "down"].map((x) => `layer.mlp.${x}_proj.bias`));
    assert.equal([...kinds].sort(), expected.sort());
  });
}

test("BF16 compute copies: loss and gradients near the F32 masters, and refreshed after an update", async () => {
  const config = parseModelConfig(hfConfig({ arch: "Qwen2ForCausalLM", tied: true }));
  const f32 = new PretrainModel(config), bf16 = new PretrainModel(config, { computeDtype: "bfloat16" });
  f32.initialize(2, 0.3);
  for (const [name, p] of f32.params) bf16.params.get(name)!.set(p);
  const r = new Random(1);
  const rows = Int32Array.from({ length: 2 * 9 }, () => Math.floor(r.nextDouble() * 16));
  const a = await f32.step(rows, 9, true), b = await bf16.step(rows, 9, true);
  assert.ok(Math.abs(a.loss - b.loss) < 2e-2 * a.loss, `${a.loss} vs ${b.loss}`);
  const ga = f32.grads.get("model.layers.1.mlp.up_proj.weight")!, gb = bf16.grads.get("model.layers.1.mlp.up_proj.weight")!;
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < ga.length; i++) (dot += ga[i] * gb[i]), (na += ga[i] * ga[i]), (nb += gb[i] * gb[i]);
  assert.ok(dot / Math.sqrt(na * nb) > 0.99, `gradient cosine ${dot / Math.sqrt(na * nb)}`);
  // A master update must reach the compute copies before the next pass.
  bf16.params.get("model.embed_tokens.weight")!.fill(0);
  const c = await bf16.step(rows, 9, false);
  assert.ok(Math.abs(c.loss - Math.log(16)) < 1e-3, `all-zero embeddings give uniform logits: ${c.loss}`);
});

/** A learnable synthetic packed corpus: mostly next = (3 * prev + 1) mod V, some noise. */
async function writePacked(path: string, rows: number, seqLen: number, vocab: number, seed: number): Promise<void> {
  const r = new Random(seed);
  const tokens = new Uint16Array(rows * (seqLen + 1));
  for (let i = 0; i < rows; i++) {
    let t = Math.floor(r.nextDouble() * vocab);
    for (let j = 0; j <= seqLen; j++) {
      tokens[i * (seqLen + 1) + j] = t;
      t = r.nextDouble() < 0.85 ? (3 * t + 1) % vocab : Math.floor(r.nextDouble() * vocab);
    }
  }
  await writeSafetensors(path, { tokens: { dtype: "U16", shape: [rows, seqLen + 1], data: new Uint8Array(tokens.buffer) } }, {
    format: "deepguard-packed-v1",
    seq_len: String(seqLen),
    vocab_size: String(vocab),
  });
}

async function setup(): Promise<{ dir: string; config: PretrainConfig; train: string; held: string }> {
  const dir = await mkdtemp(join(tmpdir(), "dg-pretrain-"));
  const train = join(dir, "train.safetensors"), held = join(dir, "held.safetensors");
  await writePacked(train, 48, 16, 32, 1);
  await writePacked(held, 8, 16, 32, 2);
  const json = {
    ...hfConfig({ arch: "Qwen2ForCausalLM", tied: false, vocab: 32 }),
    hidden_size: 16,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 32,
    training: { lr: 1e-2, warmupSteps: 2, batchSize: 4, seqLen: 16, steps: 24, seed: 3, evalEvery: 12, evalRows: 8, saveEvery: 5, outputDtype: "float32" },
  };
  await writeFile(join(dir, "config.json"), JSON.stringify(json));
  return { dir, config: await readPretrainConfig(join(dir, "config.json")), train, held };
}

test("pretraining lowers held-out loss; resume reproduces the loss curve exactly; the export loads with the trainer's logits", async () => {
  const { dir, config, train, held } = await setup();
  try {
    const full = await pretrain({ config, data: train, heldout: held, out: join(dir, "a") });
    assert.is(full.step, 24);
    assert.ok(full.finished);
    assert.is(full.evals.length, 3);
    const [first, , last] = full.evals;
    assert.ok(last.heldoutLoss < first.heldoutLoss - 0.5, `held-out loss ${first.heldoutLoss} -> ${last.heldoutLoss}`);

    const part = await pretrain({ config, data: train, heldout: held, out: join(dir, "b"), maxSteps: 11 });
    assert.is(part.step, 11);
    assert.not.ok(part.finished);
    const rest = await pretrain({ config, data: train, heldout: held, out: join(dir, "b"), resume: true });
    assert.is(rest.step, 24);
    assert.equal(rest.losses, full.losses); // bit-exact
    assert.equal(rest.evals, full.evals);

    // An abort (Ctrl-C) stops after the current step with a checkpoint that resumes on the same curve.
    const abort = new AbortController();
    const stopped = await pretrain({ config, data: train, out: join(dir, "c"), signal: abort.signal, onStep: (e) => e.step === 7 && abort.abort() });
    assert.ok(stopped.aborted);
    assert.is(stopped.step, 7);
    const resumed = await pretrain({ config, data: train, out: join(dir, "c"), resume: true, maxSteps: 3 });
    assert.equal(resumed.losses, full.losses.slice(0, 10));

    // The exported checkpoint (F32 here) in the inference engine vs the trainer's forward.
    const trained = new PretrainModel(config.model);
    await trained.loadF32(join(dir, "a", "checkpoint", "model.safetensors"));
    const ids = Int32Array.from([1, 4, 13, 8, 25, 12, 5]);
    const want = await trained.logits(ids);
    const model = await Model.load(join(dir, "a"));
    const flat = (await model.forward(Array.from(ids))).logits.data;
    assert.is(flat.length, want.length);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(flat[i] - want[i]));
    assert.ok(worst < 1e-4, `max |engine - trainer| logit difference ${worst}`);
    const cfg = JSON.parse(await readFile(join(dir, "a", "config.json"), "utf8"));
    assert.is(cfg.torch_dtype, "float32");
    assert.not.ok("training" in cfg);
    model.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("bad configs, data and resume are refused with codes", async () => {
  const { dir, config, train, held } = await setup();
  try {
    await expectError(() => parsePretrainConfig({ ...config.hf }), "ERR_CONFIG", /training/);
    await expectError(() => parsePretrainConfig({ ...config.hf, training: { ...config.training, lr: -1 } }), "ERR_CONFIG", /training\.lr/);
    await expectError(() => parsePretrainConfig({ ...config.hf, training: { ...config.training, bogus: 1 } }), "ERR_CONFIG", /training/);
    await expectError(() => parsePretrainConfig({ ...config.hf, training: { ...config.training, seqLen: 65 } }), "ERR_CONFIG", /max_position_embeddings/);
    await expectError(() => pretrain({ config, data: train, out: join(dir, "x"), resume: true }), "ERR_TRAIN_CHECKPOINT");
    const other = parsePretrainConfig({ ...config.hf, training: { ...config.training, seqLen: 8 } });
    await expectError(() => pretrain({ config: other, data: train, out: join(dir, "y") }), "ERR_ARGUMENT", /seq_len/);
    await pretrain({ config, data: train, heldout: held, out: join(dir, "z"), maxSteps: 1 });
    const changed = parsePretrainConfig({ ...config.hf, training: { ...config.training, lr: 2e-2 } });
    await expectError(() => pretrain({ config: changed, data: train, out: join(dir, "z"), resume: true }), "ERR_TRAIN_CHECKPOINT", /another config/);
    const m = new PretrainModel(config.model);
    await expectError(() => m.step(Int32Array.from([1, 2, 99]), 3, true), "ERR_TOKEN_ID");
    await expectError(() => m.step(Int32Array.from([1, 2, 3]), 2, true), "ERR_ARGUMENT");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
