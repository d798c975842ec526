// Model.load(dir, { quantize }): the forward pass, hidden states included,
// against the float64 reference run on the dequantized weights (decoded here
// from the documented block layout), for every format; the documented
// fallbacks; LoRA on a quantized base; progress; bad options.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { native } from "../../lib/native.js";
import { makeTinyAdapter, mergeAdapter } from "../support/adapter.js";
import { makeTinyCheckpoint, tinySpecs, type TinySpec, type TinyWeights } from "../support/checkpoint.js";
import { flatten, randomIds, relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { QK, decodeMatrix, type Format } from "../support/quant.js";
import { referenceForward } from "../support/reference.js";

const ops = (native() as unknown as { testing: { quantize(x: Float32Array, rows: number, cols: number, f: string): Uint8Array } })
  .testing;
// Activations are rounded to int8 per 32-block (|dx| / 2 per element), so the
// engine matches the dequantized-weight reference to about 1%.
const TOLERANCE = 2e-2;
let root = "";

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-quant-"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

const LINEAR = /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/;

/** The format a matrix of `cols` inputs gets (README: Q4_K falls back to Q4_0, then to the stored dtype). */
function effective(f: Format, cols: number): Format | null {
  if (cols % QK[f] === 0) return f;
  if (f === "q4_k" && cols % 32 === 0) return "q4_0";
  return null;
}

function dequantized(values: Float64Array, rows: number, cols: number, f: Format): Float64Array {
  const g = effective(f, cols);
  if (!g) return values;
  return decodeMatrix(g, ops.quantize(Float32Array.from(values), rows, cols, g), rows, cols).w;
}

/** The checkpoint's weights as the quantized engine sees them; a tied LM head becomes an untied quantized copy. */
function quantizedWeights(config: Record<string, unknown>, weights: TinyWeights, f: Format) {
  const out: TinyWeights = new Map(weights);
  for (const [name, t] of weights) {
    if (LINEAR.test(name)) out.set(name, { shape: t.shape, values: dequantized(t.values, t.shape[0], t.shape[1], f) });
  }
  const tied = config.tie_word_embeddings === true;
  const head = tied ? weights.get("model.embed_tokens.weight")! : weights.get("lm_head.weight")!;
  out.set("lm_head.weight", { shape: head.shape, values: dequantized(head.values, head.shape[0], head.shape[1], f) });
  return { config: { ...config, tie_word_embeddings: false }, weights: out };
}

async function check(name: string, spec: TinySpec, f: Format, expectDtype: RegExp) {
  const ckpt = await makeTinyCheckpoint(join(root, `${name}-${f}`), spec);
  const model = await Model.load(ckpt.dir, { quantize: f });
  assert.is(model.info.quantization, f);
  assert.match(model.info.linearDtype, expectDtype);
  const q = quantizedWeights(ckpt.config, ckpt.weights, f);
  // 11 tokens take the int8-activation kernels, 21 the prefill path (matmul_impl.h).
  for (const n of [11, 21]) {
    const ids = randomIds(n, spec.vocab, spec.seed);
    const ref = referenceForward(q.config, q.weights, ids);
    const out = await model.forward(ids, { hiddenStates: "all" });
    const logitErr = relativeError(out.logits.data, flatten(ref.logits));
    assert.ok(logitErr <= TOLERANCE, `${name} ${f} (${n} tokens): logits relative error ${logitErr}`);
    for (let l = 0; l <= spec.layers; l++) {
      const err = relativeError(out.hiddenStates.get(l)!.data, flatten(ref.hiddenStates[l]));
      assert.ok(err <= TOLERANCE, `${name} ${f} (${n} tokens): hidden state ${l} relative error ${err}`);
    }
  }
  const ids = randomIds(11, spec.vocab, spec.seed);
  const out = await model.forward(ids);
  const logitErr = relativeError(out.logits.data, flatten(referenceForward(q.config, q.weights, ids).logits));
  // The engine really runs on the quantized weights: against the unquantized
  // reference the 4-bit formats are clearly further off.
  if (f !== "q8_0") {
    const orig = referenceForward(ckpt.config, ckpt.weights, ids);
    const origErr = relativeError(out.logits.data, flatten(orig.logits));
    assert.ok(origErr > 2 * logitErr, `${name} ${f}: ${origErr} vs ${logitErr}`);
  }
  model.dispose();
}

const specs = tinySpecs();
const FORMATS: Format[] = ["q8_0", "q4_0", "q4_k"];
for (const f of FORMATS) {
  test(`${f}: forward and every hidden state match the reference on the dequantized weights (tied, qkv bias)`, async () => {
    // hidden 64: Q4_K (blocks of 256) falls back to Q4_0.
    await check("qwen2-bf16-tied", specs["qwen2-bf16-tied"], f, f === "q8_0" ? /^Q8_0$/ : /^Q4_0$/);
  });
}

test("q8_0 on an untied F32 Llama", async () => {
  await check("llama-f32-untied-mha", specs["llama-f32-untied-mha"], "q8_0", /^Q8_0$/);
});

test("q4_k at widths of whole 256-blocks", async () => {
  const spec: TinySpec = { arch: "qwen2", dtype: "BF16", hidden: 256, layers: 1, heads: 4, kvHeads: 2, intermediate: 512, vocab: 96, tie: true, seed: 9 };
  await check("qwen2-256", spec, "q4_k", /^Q4_K$/);
});

test("a width that is not a multiple of 32 keeps that matrix in its stored dtype", async () => {
  const spec: TinySpec = { arch: "llama", dtype: "F32", hidden: 48, layers: 1, heads: 4, kvHeads: 2, intermediate: 64, vocab: 80, tie: false, seed: 12 };
  // q/k/v/gate/up/lm_head read 48 inputs (F32); o_proj reads 48 too; down_proj reads 64 (Q8_0).
  await check("llama-48", spec, "q8_0", /^(F32\+Q8_0|Q8_0\+F32)$/);
});

test("LoRA applies on top of a quantized base", async () => {
  const spec = specs["llama-f32-untied-mha"];
  const ckpt = await makeTinyCheckpoint(join(root, "lora-base"), spec);
  const adapter = await makeTinyAdapter(join(root, "lora"), ckpt.weights, spec.layers, {
    rank: 4,
    alpha: 8,
    targets: ["q_proj", "v_proj", "down_proj"],
    dtype: "F32",
    seed: 5,
  });
  const model = await Model.load(ckpt.dir, { quantize: "q8_0" });
  await model.loadAdapter(adapter.dir);
  const q = quantizedWeights(ckpt.config, ckpt.weights, "q8_0");
  const merged = mergeAdapter(q.weights, adapter, 4);
  const ids = randomIds(9, spec.vocab, 3);
  const ref = referenceForward(q.config, merged, ids);
  const out = await model.forward(ids);
  const err = relativeError(out.logits.data, flatten(ref.logits));
  assert.ok(err <= TOLERANCE, `LoRA on q8_0: logits relative error ${err}`);
  const base = referenceForward(q.config, q.weights, ids);
  assert.ok(relativeError(out.logits.data, flatten(base.logits)) > 5 * err, "the adapter changes the output");
  model.dispose();
});

test("quantization reports progress up to the total, and decode equals recomputation", async () => {
  const spec = specs["qwen2-bf16-tied"];
  const ckpt = await makeTinyCheckpoint(join(root, "progress"), spec);
  const seen: { done: number; total: number }[] = [];
  const model = await Model.load(ckpt.dir, { quantize: "q4_0", onProgress: (p) => seen.push(p) });
  assert.ok(seen.length > 0, "progress was reported");
  const last = seen[seen.length - 1];
  assert.is(last.done, last.total);
  // 3 layers x (q, k, v, o, gate, up, down) + the LM head, in weights.
  const h = spec.hidden, i = spec.intermediate;
  assert.is(last.total, spec.layers * (4 * h * h + 3 * h * i) + spec.vocab * h);
  for (let k = 1; k < seen.length; k++) assert.ok(seen[k].done >= seen[k - 1].done);

  const ids = randomIds(8, spec.vocab, 4);
  const full = await model.forward(ids, { logits: "all" });
  const s = model.createSession();
  await s.eval(ids.slice(0, 5));
  const step = await s.eval(ids.slice(5), { logits: "all" });
  const err = relativeError(step.logits.data, full.logits.data.subarray(5 * spec.vocab));
  assert.ok(err <= 1e-5, `decode vs full pass: ${err}`);
  s.dispose();
  model.dispose();
});

test("bad quantize options: unknown format, wrong types", async () => {
  const ckpt = await makeTinyCheckpoint(join(root, "bad"), specs["qwen2-bf16-tied"]);
  await expectError(() => Model.load(ckpt.dir, { quantize: "q5_1" as never }), "ERR_QUANT_FORMAT", /q5_1.*q8_0, q4_0, q4_k/);
  await expectError(() => Model.load(ckpt.dir, { quantize: 8 as never }), "ERR_QUANT_FORMAT");
  await expectError(() => Model.load(ckpt.dir, { quantize: "q8_0", onProgress: "x" as never }), "ERR_ARGUMENT", /onProgress/);
  // A throwing progress callback fails the load with its own error, and nothing crashes.
  const boom = new Error("boom");
  let caught: unknown = null;
  await Model.load(ckpt.dir, { quantize: "q8_0", onProgress: () => { throw boom; } }).catch((e) => (caught = e));
  assert.is(caught, boom);
});

test.run();
