/**
 * npm run bench:probe
 *
 * Layer-wise probing (probeLayers) of the random ~100M-parameter Qwen2-shaped bench
 * checkpoint over SVEN: how the time splits between the forward passes (one per
 * function, all 13 hidden states captured) and the logistic-regression fits
 * (13 layers x k folds). The bench checkpoint has no tokenizer, so the tiny
 * byte-level BPE tokenizer of the test fixtures (512 ids, which the 32000-id model
 * accepts) is put beside it in a sibling folder; it splits code into ~2-3x more
 * tokens than a real code tokenizer, which makes the forward share larger, not smaller.
 *
 * A second measurement times the fits alone at Qwen2.5-Coder-1.5B's size on the full
 * SVEN train split (720 pairs, hidden 1536, 29 hidden states, 5 folds) on synthetic
 * features, to show that the fits stay small next to that model's forward passes.
 *
 * Options: --split val|train (val), --max-tokens N (512), --folds K (5), --seed S (1),
 * --pooling mean|changed (mean), --repeats N (3; medians reported), --dtype F32|BF16 (BF16).
 * Cache: DEEPGUARD_BENCH_CACHE, default ~/.cache/deepguard/bench (shared with bench:decode).
 * Writes benchmarks/out/probe.json (git-ignored) or --out FILE; the recorded results
 * are benchmarks/results/probe.json.
 */
import { mkdir, rename, stat, symlink, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Dataset, Model, probeLayers, type ProbeReport } from "../lib/index.js";
import { pairFolds, probeLayer } from "../lib/guard/probe.js";
import { Random } from "../lib/random.js";
import { makeTokenizerFiles } from "../test/support/tokenizer-fixture.js";
import { BENCH_SHAPES, ensureRandomCheckpoint, BENCH_CACHE_DIR } from "./support/random-checkpoint.js";
import { defaultOutput, writeResult } from "./support/output.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");
const { values } = parseArgs({
  options: {
    split: { type: "string", default: "val" },
    "max-tokens": { type: "string", default: "512" },
    folds: { type: "string", default: "5" },
    seed: { type: "string", default: "1" },
    pooling: { type: "string", default: "mean" },
    repeats: { type: "string", default: "3" },
    dtype: { type: "string", default: "BF16" },
    out: { type: "string", default: defaultOutput("probe") },
  },
});
const dtype = values.dtype === "F32" ? "F32" : "BF16";
const pooling = values.pooling === "changed" ? "changed" : "mean";
const maxTokens = Number(values["max-tokens"]);
const folds = Number(values.folds);
const seed = Number(values.seed);
const repeats = Math.max(1, Number(values.repeats));

/** The bench checkpoint plus the fixture tokenizer, in a sibling folder of links. */
async function checkpointWithTokenizer(): Promise<string> {
  const base = await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, `qwen2-100m-${dtype.toLowerCase()}`), BENCH_SHAPES["100m"], dtype);
  const dir = `${base}-tokenizer`;
  if (await stat(join(dir, "tokenizer.json")).then(() => true, () => false)) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await mkdir(tmp, { recursive: true });
  for (const f of ["config.json", "model.safetensors"]) await symlink(join(base, f), join(tmp, f));
  const files = makeTokenizerFiles(512);
  await writeFile(join(tmp, "tokenizer.json"), JSON.stringify(files.tokenizerJson));
  await writeFile(join(tmp, "tokenizer_config.json"), JSON.stringify(files.tokenizerConfig));
  await rename(tmp, dir);
  return dir;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const dir = await checkpointWithTokenizer();
  const model = await Model.load(dir);
  const data = join(repoRoot, "..", "shared", "datasets", "sven", values.split!);
  const dataset = await Dataset.fromSven(data, { maxTokens });
  await dataset.pairs(model); // tokenize once, outside the timings
  const runs: { report: ProbeReport; load: number[] }[] = [];
  for (let i = 0; i < repeats; i++) {
    const before = loadavg();
    const report = await probeLayers(model, dataset, {
      folds,
      seed,
      pooling,
      onProgress: (p) => p.done === p.total && process.stderr.write(`run ${i + 1}: ${p.phase} ${p.done}/${p.total}\n`),
    });
    runs.push({ report, load: [before[0], loadavg()[0]] });
    const t = report.timings;
    process.stderr.write(
      `run ${i + 1}: forward ${t.forwardSeconds.toFixed(2)} s (${Math.round(t.tokensPerSecond)} tok/s), fits ${t.fitSeconds.toFixed(2)} s, load ${before[0].toFixed(2)} -> ${loadavg()[0].toFixed(2)}\n`,
    );
  }
  model.dispose();

  // Fits alone at 1.5B size on the full train split: 720 pairs, 1536 features, 29 hidden states.
  const pairs = 720;
  const hidden = 1536;
  const r = new Random(1);
  // Uniform noise; secure rows (odd) shifted by 0.3 on 16 features, so the fits have a weak signal to find.
  const features = new Float32Array(pairs * 2 * hidden);
  for (let row = 0; row < pairs * 2; row++) {
    for (let j = 0; j < hidden; j++) features[row * hidden + j] = r.nextDouble() + (row & 1 && j < 16 ? 0.3 : 0);
  }
  const fitStarted = performance.now();
  probeLayer(features, hidden, pairFolds(pairs, 5, 1), 5, 1);
  const oneLayer = (performance.now() - fitStarted) / 1000;

  const reports = runs.map((x) => x.report);
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model },
    checkpoint: { shape: "100m", dtype, parameters: "~98M", hidden: 768, layers: 12, tokenizer: "test fixture byte-level BPE, 512 ids" },
    options: { split: values.split, maxTokens, folds, seed, pooling, repeats },
    dataset: reports[0].dataset,
    medians: {
      forwardSeconds: median(reports.map((x) => x.timings.forwardSeconds)),
      poolSeconds: median(reports.map((x) => x.timings.poolSeconds)),
      fitSeconds: median(reports.map((x) => x.timings.fitSeconds)),
      totalSeconds: median(reports.map((x) => x.timings.totalSeconds)),
      tokensPerSecond: median(reports.map((x) => x.timings.tokensPerSecond)),
    },
    runs: runs.map((x) => ({ timings: x.report.timings, loadAverage1mBeforeAfter: x.load })),
    fitsAt1_5bFullTrain: {
      note: "synthetic features: 720 pairs, hidden 1536, 5 folds; one layer timed, x29 hidden states",
      oneLayerSeconds: oneLayer,
      allLayersSeconds: oneLayer * 29,
    },
    report: reports[0],
  };
  const out = await writeResult(values.out!, result);
  const m = result.medians;
  process.stdout.write(
    `probe, 100M ${dtype}, SVEN ${values.split} (${result.dataset.pairs} pairs, ${result.dataset.tokens} tokens), ${folds} folds, medians of ${repeats}:\n` +
      `  forward passes ${m.forwardSeconds.toFixed(2)} s (${Math.round(m.tokensPerSecond)} tok/s; pooling ${m.poolSeconds.toFixed(2)} s of it)\n` +
      `  logistic fits  ${m.fitSeconds.toFixed(2)} s (${reports[0].layers.length} layers x ${folds} folds)\n` +
      `  fits at 1.5B size on full train (synthetic): ${oneLayer.toFixed(2)} s per layer, ${(oneLayer * 29).toFixed(1)} s for 29\n` +
      `wrote ${out}\n`,
  );
}

await main();
