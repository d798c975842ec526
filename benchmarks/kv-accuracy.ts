/**
 * npm run bench:kv-accuracy
 *
 * What a BF16 KV cache does to the logits, against an F32 cache, at long
 * contexts. For each prompt length P (default 512, 1024, 1536, 2048) one
 * pseudo-random sequence of P + D tokens is run through two sessions of the
 * same BF16-weight model, one with kvCacheDtype "float32" and one with
 * "bfloat16": the prompt as one eval (prefill: logits for every row, each row
 * attending over the cache) and then D tokens one at a time (decode, the T = 1
 * kernels). Per position: max and mean |logit difference|, KL(p_f32 || p_bf16)
 * of the next-token distributions and top-1 agreement, reported separately for
 * prefill and decode positions.
 *
 * Two yardsticks on the same positions:
 * - the F32 engine's own noise: the decode positions' F32-cache logits against
 *   the same positions computed by one prefill over the whole sequence
 *   (model.forward): the same math, summed in another order;
 * - the BF16 rounding the checkpoint's weights went through: the same model
 *   with its weights in F32 (the bench's F32 checkpoint holds the same random
 *   values unrounded) against BF16 weights, both with an F32 cache
 *   (--no-weights skips it).
 *
 * Options: --shape 100m|0.5b|1.5b (default 100m), --prompts 512,1024,1536,2048,
 * --decode D (default 256), --out FILE (default benchmarks/out/kv-accuracy[-<shape>].json;
 * recorded results are in benchmarks/results/).
 */
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Model } from "../lib/index.js";
import { BENCH_SHAPES, ensureRandomCheckpoint, type BenchShapeName, BENCH_CACHE_DIR } from "./support/random-checkpoint.js";
import { defaultOutput, writeResult } from "./support/output.js";
import { argmax, logSoftmax } from "./support/distribution.js";

interface DiffSummary {
  positions: number;
  maxAbsLogitDiff: number;
  meanAbsLogitDiff: number;
  meanAbsLogit: number;
  meanKl: number;
  maxKl: number;
  top1Agreement: number;
}

/** Running comparison of reference rows against other rows. */
class Diff {
  positions = 0;
  maxAbs = 0;
  absSum = 0;
  absCount = 0;
  klSum = 0;
  klMax = 0;
  top1 = 0;
  refAbsSum = 0;

  add(ref: Float32Array, other: Float32Array): void {
    let worst = 0;
    for (let i = 0; i < ref.length; i++) {
      const d = Math.abs(ref[i] - other[i]);
      this.absSum += d;
      this.refAbsSum += Math.abs(ref[i]);
      worst = Math.max(worst, d);
    }
    this.absCount += ref.length;
    this.maxAbs = Math.max(this.maxAbs, worst);
    const p = logSoftmax(ref);
    const q = logSoftmax(other);
    let kl = 0;
    for (let i = 0; i < p.length; i++) kl += Math.exp(p[i]) * (p[i] - q[i]);
    this.klSum += kl;
    this.klMax = Math.max(this.klMax, kl);
    if (argmax(ref) === argmax(other)) this.top1++;
    this.positions++;
  }

  summary(): DiffSummary {
    return {
      positions: this.positions,
      maxAbsLogitDiff: this.maxAbs,
      meanAbsLogitDiff: this.absSum / this.absCount,
      meanAbsLogit: this.refAbsSum / this.absCount,
      meanKl: this.klSum / this.positions,
      maxKl: this.klMax,
      top1Agreement: this.top1 / this.positions,
    };
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      shape: { type: "string", default: "100m" },
      prompts: { type: "string", default: "512,1024,1536,2048" },
      decode: { type: "string", default: "256" },
      "no-weights": { type: "boolean", default: false },
      out: { type: "string" },
    },
  });
  const shapeName = values.shape as BenchShapeName;
  const shape = BENCH_SHAPES[shapeName];
  if (!shape) throw new Error(`--shape must be one of ${Object.keys(BENCH_SHAPES).join(", ")}`);
  const prompts = values.prompts!.split(",").map(Number);
  const decode = Number(values.decode);
  if (!prompts.every((p) => Number.isInteger(p) && p >= 1) || !Number.isInteger(decode) || decode < 1) {
    throw new Error("--prompts must be positive integers and --decode a positive integer");
  }

  const dir = await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, `qwen2-${shapeName}-bf16`), shape, "BF16");
  const f32 = await Model.load(dir, { mmap: false, kvCacheDtype: "float32" });
  const bf16 = await Model.load(dir, { mmap: false, kvCacheDtype: "bfloat16" });
  const f32Weights = values["no-weights"]
    ? null
    : await Model.load(await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, `qwen2-${shapeName}-f32`), shape, "F32"), { kvCacheDtype: "float32" });
  const sections = {
    prefill: new Diff(),
    decode: new Diff(),
    all: new Diff(),
    noiseFloorDecode: new Diff(),
    bf16WeightsVsF32Weights: new Diff(),
  };
  const perPrompt: Record<string, unknown>[] = [];
  for (const [n, P] of prompts.entries()) {
    let x = (n + 1) * 2654435761;
    const ids = Array.from({ length: P + decode }, () => {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      return x % shape.vocab;
    });
    const run = async (model: Model): Promise<Float32Array[]> => {
      const s = model.createSession();
      try {
        const rows: Float32Array[] = [];
        const pre = await s.eval(ids.slice(0, P), { logits: "all" });
        for (let t = 0; t < P; t++) rows.push(pre.logits.row(t).slice());
        for (let t = P; t < P + decode; t++) rows.push((await s.eval([ids[t]], { logits: "last" })).logits.row(0).slice());
        return rows;
      } finally {
        s.dispose();
      }
    };
    const a = await run(f32);
    const b = await run(bf16);
    const whole = await f32.forward(ids, { logits: "all" });
    const w = f32Weights ? await run(f32Weights) : null;
    const local = { prefill: new Diff(), decode: new Diff() };
    for (let t = 0; t < P + decode; t++) {
      const part = t < P ? "prefill" : "decode";
      sections[part].add(a[t], b[t]);
      sections.all.add(a[t], b[t]);
      local[part].add(a[t], b[t]);
      if (t >= P) sections.noiseFloorDecode.add(whole.logits.row(t), a[t]);
      if (w) sections.bf16WeightsVsF32Weights.add(w[t], a[t]);
    }
    perPrompt.push({ prompt: P, decode, prefill: local.prefill.summary(), decoded: local.decode.summary() });
    console.error(`prompt ${P}: done`);
  }
  f32.dispose();
  bf16.dispose();
  f32Weights?.dispose();

  const load = loadavg();
  const rows = Object.entries(sections)
    .filter(([, d]) => d.positions > 0)
    .map(([name, d]) => ({ section: name, ...d.summary() }));
  const labels: Record<string, string> = {
    noiseFloorDecode: "yardstick: F32 cache, decode vs one prefill (engine noise)",
    bf16WeightsVsF32Weights: "yardstick: BF16 vs F32 weights, F32 cache (all)",
  };
  console.log(
    `${shapeName}: BF16 vs F32 KV cache, prompts ${prompts.join(", ")} + ${decode} decoded tokens each (load average ${load.map((l) => l.toFixed(2)).join(", ")})`,
  );
  console.log("| positions | n | max abs logit diff | mean abs logit diff | mean KL | max KL | top-1 agreement |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of rows) {
    const label = labels[r.section] ?? `BF16 vs F32 cache: ${r.section}`;
    console.log(
      `| ${label} | ${r.positions} | ${r.maxAbsLogitDiff.toExponential(2)} | ${r.meanAbsLogitDiff.toExponential(2)} | ${r.meanKl.toExponential(2)} | ${r.maxKl.toExponential(2)} | ${(100 * r.top1Agreement).toFixed(2)}% |`,
    );
  }
  const file = values.out ?? defaultOutput(`kv-accuracy${shapeName === "100m" ? "" : `-${shapeName}`}`);
  const command = `npm run bench:kv-accuracy -- ${process.argv.slice(2).join(" ")}`.trim();
  console.log(
    `wrote ${await writeResult(file, {
      date: new Date().toISOString(),
      command,
      loadAverage: load,
      shape: shapeName,
      weights: "BF16 (random bench checkpoint)",
      reference: "F32 KV cache, same engine and weights",
      prompts,
      decode,
      rows,
      perPrompt,
    })}`,
  );
}

await main();
