/**
 * npm run bench:accuracy
 *
 * How far each load-time quantization format moves the model from its BF16
 * weights: over --sequences x --length positions (default 8 x 512 = 4096) of
 * pseudo-random token ids, the mean and max KL divergence KL(p_bf16 || p_q) of
 * the next-token distributions, the top-1 agreement, and the relative error
 * ||h_q - h|| / ||h|| of the captured hidden states (the middle layer's output
 * and the final normed state), averaged over positions.
 *
 * Options: --shape 100m|1.5b (default 100m), --sequences N, --length N,
 * --formats q8_0,q4_0,q4_k, --out FILE. Writes benchmarks/out/accuracy[-<shape>].json (git-ignored)
 * unless --out names a file; the recorded results are in benchmarks/results/.
 * The checkpoints are the random bench ones (benchmarks/support/random-checkpoint.ts).
 */
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Model, QUANT_FORMATS, type QuantFormat } from "../lib/index.js";
import { BENCH_SHAPES, ensureRandomCheckpoint, type BenchShapeName, BENCH_CACHE_DIR } from "./support/random-checkpoint.js";
import { defaultOutput, writeResult } from "./support/output.js";
import { argmax, logSoftmax } from "./support/distribution.js";

interface Acc {
  positions: number;
  klSum: number;
  klMax: number;
  top1: number;
  hidden: Map<number, { relSum: number; relMax: number }>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      shape: { type: "string", default: "100m" },
      sequences: { type: "string", default: "8" },
      length: { type: "string", default: "512" },
      formats: { type: "string", default: QUANT_FORMATS.join(",") },
      out: { type: "string" },
    },
  });
  const shapeName = values.shape as BenchShapeName;
  const shape = BENCH_SHAPES[shapeName];
  if (!shape) throw new Error(`--shape must be one of ${Object.keys(BENCH_SHAPES).join(", ")}`);
  const sequences = Number(values.sequences);
  const length = Number(values.length);
  if (!Number.isInteger(sequences) || sequences < 1 || !Number.isInteger(length) || length < 2) throw new Error("--sequences and --length must be positive integers");
  const formats = values.formats!.split(",") as QuantFormat[];
  for (const f of formats) if (!QUANT_FORMATS.includes(f)) throw new Error(`unknown format ${f}`);

  const dir = await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, `qwen2-${shapeName}-bf16`), shape, "BF16");
  const base = await Model.load(dir, { mmap: false });
  const layers = [Math.floor(shape.layers / 2), shape.layers];
  const results: Record<string, Acc> = {};
  for (const f of formats) {
    const model = await Model.load(dir, { quantize: f });
    const acc: Acc = { positions: 0, klSum: 0, klMax: 0, top1: 0, hidden: new Map(layers.map((l) => [l, { relSum: 0, relMax: 0 }])) };
    for (let s = 0; s < sequences; s++) {
      let x = (s + 1) * 2654435761;
      const ids = Array.from({ length }, () => {
        x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
        return x % shape.vocab;
      });
      const ref = await base.forward(ids, { hiddenStates: layers });
      const out = await model.forward(ids, { hiddenStates: layers });
      for (let t = 0; t < length; t++) {
        const p = logSoftmax(ref.logits.row(t));
        const q = logSoftmax(out.logits.row(t));
        let kl = 0;
        for (let i = 0; i < p.length; i++) kl += Math.exp(p[i]) * (p[i] - q[i]);
        acc.klSum += kl;
        acc.klMax = Math.max(acc.klMax, kl);
        if (argmax(ref.logits.row(t)) === argmax(out.logits.row(t))) acc.top1++;
        for (const l of layers) {
          const h = ref.hiddenStates.get(l)!.row(t);
          const hq = out.hiddenStates.get(l)!.row(t);
          let num = 0;
          let den = 0;
          for (let i = 0; i < h.length; i++) {
            num += (hq[i] - h[i]) ** 2;
            den += h[i] ** 2;
          }
          const rel = Math.sqrt(num / den);
          const a = acc.hidden.get(l)!;
          a.relSum += rel;
          a.relMax = Math.max(a.relMax, rel);
        }
        acc.positions++;
      }
    }
    model.dispose();
    results[f] = acc;
    console.error(`${f}: done`);
  }

  const load = loadavg();
  console.log(`${shapeName}: ${sequences} x ${length} positions per format vs BF16 weights (load average ${load.map((l) => l.toFixed(2)).join(", ")})`);
  console.log(`| format | mean KL | max KL | top-1 agreement | hidden ${layers[0]} rel. error (mean / max) | final hidden rel. error (mean / max) |`);
  console.log("|---|---|---|---|---|---|");
  const rows = formats.map((f) => {
    const a = results[f];
    const h = layers.map((l) => ({ layer: l, meanRelativeError: a.hidden.get(l)!.relSum / a.positions, maxRelativeError: a.hidden.get(l)!.relMax }));
    const row = { format: f, positions: a.positions, meanKl: a.klSum / a.positions, maxKl: a.klMax, top1Agreement: a.top1 / a.positions, hidden: h };
    console.log(
      `| ${f} | ${row.meanKl.toExponential(2)} | ${row.maxKl.toExponential(2)} | ${(100 * row.top1Agreement).toFixed(2)}% | ${h[0].meanRelativeError.toExponential(2)} / ${h[0].maxRelativeError.toExponential(2)} | ${h[1].meanRelativeError.toExponential(2)} / ${h[1].maxRelativeError.toExponential(2)} |`,
    );
    return row;
  });
  const file = values.out ?? defaultOutput(`accuracy${shapeName === "100m" ? "" : `-${shapeName}`}`);
  const command = `npm run bench:accuracy -- ${process.argv.slice(2).join(" ")}`.trim();
  console.log(`wrote ${await writeResult(file, { date: new Date().toISOString(), command, loadAverage: load, shape: shapeName, sequences, length, reference: "BF16 weights, same engine", rows })}`);
}

await main();
