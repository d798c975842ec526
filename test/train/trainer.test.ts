// The LoRA Trainer on a tiny random model and a slice of SVEN: the loss goes
// down; the saved PEFT adapter has PEFT's keys, shapes and config fields and
// reloads with the logits of the trained factors; kill-and-resume reproduces the
// uninterrupted loss curve exactly; the security term flows through a guard's
// hidden-state gradients; bad inputs are coded errors and leave no checkpoint.
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Dataset, Model } from "../../lib/index.js";
import { readSafetensorsHeader } from "../../lib/io/safetensors.js";
import { LoraParameters, trainForward } from "../../lib/train/lora.js";
import { Trainer, type StepEvent, type TrainableGuard, type TrainerOptions } from "../../lib/train/trainer.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";

const SVEN = join(process.cwd(), "..", "shared", "datasets", "sven");
let root = "";
let model: Model;
let train: Dataset;
let val: Dataset;
let n = 0;
const out = () => join(root, `run-${n++}`);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-trainer-"));
  const ckpt = await makeTinyCheckpoint(join(root, "model"), { ...tinySpecs()["qwen2-f32-gqa-tied"], maxPositions: 4096 });
  model = await Model.load(ckpt.dir);
  train = await Dataset.fromSven(join(SVEN, "train"), { maxTokens: 100, cwes: ["cwe-089", "cwe-079", "cwe-022", "cwe-078"] });
  val = await Dataset.fromSven(join(SVEN, "val"), { maxTokens: 110 });
  assert.ok((await train.pairs(model)).length >= 4, "enough short training pairs");
  assert.ok((await val.pairs(model)).length >= 1, "a validation pair");
});
test.after(async () => {
  model?.dispose();
  await rm(root, { recursive: true, force: true });
});

const base: TrainerOptions = {
  lora: { rank: 4, alpha: 8, targetModules: ["q_proj", "v_proj", "o_proj", "down_proj"] },
  loss: { generation: 1, security: 0, kl: 1 },
  lr: 2e-2, warmupSteps: 1, batchSize: 2, gradAccum: 1, seed: 3, epochs: 3,
};

test("fit: the loss goes down; events carry every term; the adapter is PEFT's and reloads with the trained logits", async () => {
  const dir = out();
  const trainer = new Trainer(model, base);
  const steps: StepEvent[] = [];
  trainer.on("step", (s: StepEvent) => steps.push(s));
  const evals: unknown[] = [];
  trainer.on("eval", (e) => evals.push(e));
  const result = await trainer.fit(train, { outDir: dir, val, evalEvery: 2 });
  assert.is(result.stopped, "completed");
  assert.ok(steps.length >= 6);
  for (const s of steps) for (const k of ["step", "epoch", "loss", "generation", "security", "kl", "lr", "gradNorm", "tokensPerSec", "eta"]) assert.ok(Number.isFinite((s as unknown as Record<string, number>)[k]), k);
  const firstEpoch = steps.filter((s) => s.epoch === 0), lastEpoch = steps.filter((s) => s.epoch === 2);
  const mean = (xs: StepEvent[]) => xs.reduce((a, s) => a + s.generation, 0) / xs.length;
  assert.ok(mean(lastEpoch) < mean(firstEpoch) - 0.05, `generation loss ${mean(firstEpoch)} -> ${mean(lastEpoch)}`);
  assert.ok(evals.length >= 2);

  // PEFT layout.
  const config = JSON.parse(await readFile(join(dir, "adapter_config.json"), "utf8"));
  for (const [k, v] of Object.entries({ peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, bias: "none", use_rslora: false })) assert.equal(config[k], v, k);
  assert.equal(config.target_modules, ["q_proj", "v_proj", "o_proj", "down_proj"]);
  assert.ok("lora_dropout" in config && "base_model_name_or_path" in config);
  const header = await readSafetensorsHeader(join(dir, "adapter_model.safetensors"));
  const c = model.config;
  assert.is(header.tensors.size, c.numLayers * 4 * 2);
  const q = header.tensors.get("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight")!;
  assert.equal(q.shape, [4, c.hiddenSize]);
  assert.equal(header.tensors.get("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight")!.shape, [c.hiddenSize, 4]);
  assert.equal(header.tensors.get("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")!.shape, [c.numKvHeads * c.headDim, 4]);

  // loadAdapter gives the logits of the trained factors (the final adapter is best/'s).
  const ids = (await val.pairs(model))[0].secure.ids;
  const trained = await LoraParameters.load(join(dir, "best"), model);
  const pass = await trainForward(model, ids, trained, { returnLogits: true, train: false });
  await model.loadAdapter(dir);
  const engine = await model.forward(ids);
  model.unloadAdapter();
  assert.ok(relativeError(engine.logits.data, pass.logits!) < 1e-6, `adapter logits ${relativeError(engine.logits.data, pass.logits!)}`);
  pass.dispose();
  const files = await readdir(dir);
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "best", "last"]) assert.ok(files.includes(f), f);
  assert.ok(!files.some((f) => f.includes(".tmp")), "no temp files left");
});

test("kill and resume reproduces the uninterrupted loss curve exactly", async () => {
  const opts: TrainerOptions = { ...base, lora: { ...base.lora, dropout: 0.1 }, maxSteps: 6, epochs: 5 };
  const full: number[] = [];
  const a = new Trainer(model, opts);
  a.on("step", (s: StepEvent) => full.push(s.loss));
  await a.fit(train, { outDir: out() });

  const dir = out();
  const ctrl = new AbortController();
  const b = new Trainer(model, opts);
  const part: number[] = [];
  b.on("step", (s: StepEvent) => {
    part.push(s.loss);
    if (s.step === 3) ctrl.abort();
  });
  const r = await b.fit(train, { outDir: dir, signal: ctrl.signal });
  assert.is(r.stopped, "aborted");
  assert.is(r.steps, 3);
  const c = await Trainer.resume(join(dir, "last"), model);
  assert.is(c.stepCount, 3);
  c.on("step", (s: StepEvent) => part.push(s.loss));
  const r2 = await c.fit(train, { outDir: dir });
  assert.is(r2.steps, 6);
  assert.equal(part, full);
});

test("custom loops: step() accumulates, optimizerStep() updates; the security term reaches LoRA through the guard's hidden-state gradients", async () => {
  // A tiny differentiable stand-in for lib/guard (GUARD-CONTRACT.md surface):
  // score = sigmoid(mean_t w . h_t) over the last hidden state.
  const L = model.config.numLayers, d = model.config.hiddenSize;
  const w = Float32Array.from({ length: d }, (_, i) => Math.sin(i + 1));
  const gw = new Float32Array(d);
  let statsUpdates = 0;
  const guard: TrainableGuard = {
    layers: [L],
    async forwardTrain(batch) {
      const scores = batch.map(({ hidden }) => {
        const h = hidden[0], T = h.length / d;
        let s = 0;
        for (let t = 0; t < T; t++) for (let i = 0; i < d; i++) s += w[i] * h[t * d + i];
        return 1 / (1 + Math.exp(-s / T));
      });
      return {
        scores,
        tokens: batch.map(() => new Float32Array(0)),
        async backward(dSeq) {
          return {
            dHidden: batch.map(({ hidden }, b) => {
              const h = hidden[0], T = h.length / d, g = (dSeq[b] * scores[b] * (1 - scores[b])) / T;
              const dh = new Float32Array(h.length);
              for (let t = 0; t < T; t++) for (let i = 0; i < d; i++) { dh[t * d + i] = g * w[i]; gw[i] += g * h[t * d + i]; }
              return [dh];
            }),
          };
        },
      };
    },
    parameters: () => ({ "analyzer.w": w }),
    gradients: () => ({ "analyzer.w": gw }),
    zeroGrad: () => gw.fill(0),
    updateTokenStats: () => void statsUpdates++,
    save: async (dir) => writeFile(join(dir, "guard.json"), "{}"),
  };
  const trainer = new Trainer(model, { ...base, loss: { generation: 0, kl: 0, security: 1, margin: 5 }, lr: 5e-2 }, { guard });
  const pairs = (await train.pairs(model)).slice(0, 2);
  const first = await trainer.step(pairs);
  assert.ok(first.terms.security > 0 && first.terms.generation === 0 && first.terms.kl === 0);
  const gB = Object.entries(trainer.lora.gradients()).filter(([k]) => k.includes("lora_B"));
  assert.ok(gB.some(([, g]) => g.some((v) => v !== 0)), "LoRA B gets a gradient from the security term alone");
  assert.ok(gw.some((v) => v !== 0), "the guard gets its gradient");
  assert.is(statsUpdates, 2);
  await trainer.optimizerStep();
  assert.ok(gw.every((v) => v === 0), "optimizerStep clears gradients");
  for (let i = 0; i < 4; i++) {
    await trainer.step(pairs);
    await trainer.optimizerStep();
  }
  const later = await trainer.evaluate(train);
  const again = await trainer.step(pairs);
  assert.ok(again.terms.security < first.terms.security, `margin term ${first.terms.security} -> ${again.terms.security} (eval ${later.loss})`);
});

test("with the real Guard: the security term is trained, guard files sit beside the adapter, resume reloads the guard", async () => {
  const dir = out();
  const opts: TrainerOptions = { ...base, layers: [-2, -1], aggregation: "attention", loss: { generation: 1, security: 0.5, kl: 1 }, maxSteps: 2 };
  const trainer = new Trainer(model, opts);
  assert.ok(trainer.guard);
  const steps: StepEvent[] = [];
  trainer.on("step", (s: StepEvent) => steps.push(s));
  await trainer.fit(train, { outDir: dir });
  assert.is(steps.length, 2);
  assert.ok(steps.every((s) => Number.isFinite(s.security) && s.security >= 0));
  const files = await readdir(dir);
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "guard.json", "guard.safetensors"]) assert.ok(files.includes(f), f);
  const again = await Trainer.resume(join(dir, "last"), model);
  assert.ok(again.guard);
  const stats = (g: unknown) => Array.from((g as { tokenStats: Float32Array }).tokenStats);
  assert.equal(stats(again.guard), stats(trainer.guard), "token statistics saved with the guard");
  assert.ok(stats(again.guard).some((v) => v !== 0), "token statistics were updated");
  assert.equal([...again.guard!.layers], [...trainer.guard!.layers]);
  const g1 = trainer.guard!.parameters(), g2 = again.guard!.parameters();
  for (const k of Object.keys(g1)) assert.equal(Array.from(g2[k]), Array.from(g1[k]), k);
});

test("kill and resume with the guard trained too reproduces the loss curve exactly", async () => {
  const opts: TrainerOptions = { ...base, layers: [-1], loss: { generation: 1, security: 0.5, kl: 0, margin: 2 }, maxSteps: 4, epochs: 5 };
  const full: number[] = [];
  const a = new Trainer(model, opts);
  a.on("step", (s: StepEvent) => full.push(s.loss));
  await a.fit(train, { outDir: out() });
  const dir = out();
  const ctrl = new AbortController();
  const b = new Trainer(model, opts);
  const part: number[] = [];
  b.on("step", (s: StepEvent) => {
    part.push(s.loss);
    if (s.step === 2) ctrl.abort();
  });
  await b.fit(train, { outDir: dir, signal: ctrl.signal });
  const c = await Trainer.resume(join(dir, "last"), model);
  c.on("step", (s: StepEvent) => part.push(s.loss));
  await c.fit(train, { outDir: dir });
  assert.equal(part, full);
});

test("bad inputs: rank 0, unknown target, layers out of range, no guard, empty data, unwritable or corrupt folders", async () => {
  await expectError(() => new Trainer(model, { ...base, lora: { rank: 0 } }), "ERR_ARGUMENT", /rank/);
  await expectError(() => new Trainer(model, { ...base, lora: { targetModules: ["qq_proj" as "q_proj"] } }), "ERR_ARGUMENT", /targetModules/);
  await expectError(() => new Trainer(model, { ...base, lora: { layers: [99] } }), "ERR_ARGUMENT", /layer 99/);
  const pairs = (await train.pairs(model)).slice(0, 1);
  await expectError(() => new Trainer(model, { ...base, loss: { security: 0.5 } }).step(pairs), "ERR_ARGUMENT", /auto/);
  await expectError(() => new Trainer(model, { ...base, loss: { security: 0.5 }, layers: [7] }), "ERR_ARGUMENT");
  const trainer = new Trainer(model, base);
  await expectError(() => trainer.step([]), "ERR_ARGUMENT");
  const empty = await Dataset.fromSven(join(SVEN, "train"), { maxTokens: 3 });
  await expectError(() => trainer.fit(empty, { outDir: out() }), "ERR_DATASET_EMPTY");
  if (process.getuid?.() !== 0) {
    const ro = out();
    await mkdir(ro);
    await chmod(ro, 0o500);
    await expectError(() => trainer.fit(train, { outDir: join(ro, "x") }), "ERR_FILE_WRITE");
    await expectError(() => trainer.save(join(ro, "ckpt")), "ERR_FILE_WRITE");
    assert.equal(await readdir(ro), [], "nothing partial left");
  }
  const dir = out();
  await trainer.save(join(dir, "last"));
  await expectError(() => Trainer.resume(join(dir, "nothing"), model), "ERR_TRAIN_CHECKPOINT");
  await writeFile(join(dir, "last", "trainer_state.json"), "{ not json");
  await expectError(() => Trainer.resume(join(dir, "last"), model), "ERR_TRAIN_CHECKPOINT");
  await trainer.save(join(dir, "last"));
  await writeFile(join(dir, "last", "optimizer.safetensors"), "garbage");
  await expectError(() => Trainer.resume(join(dir, "last"), model), "ERR_TRAIN_CHECKPOINT", /optimizer/);
});

test.run();
