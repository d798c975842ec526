/**
 * npm run bench:pretrain-sizes [-- --seconds 240 --shapes 7m,10m,16m --data <train> --heldout <heldout> --batch 4 --lr 3e-3]
 *
 * Short pretraining runs of the candidate shapes on the real corpus for EQUAL
 * WALL TIME at the speeds bench:pretrain measured (benchmarks/results/pretrain.json,
 * float32 rows): each shape trains for round(seconds x tokens/s / (batch x seq))
 * steps with its own cosine schedule (warmup 10%), then reports the held-out loss on
 * the first --eval-rows (32) held-out rows. Budgets come from the measured speeds,
 * not from a clock, so the comparison does not depend on the load while it runs
 * (the load average is still recorded). Writes benchmarks/out/pretrain-sizes.json
 * (git-ignored) or --out FILE; --speeds FILE reads other bench:pretrain results.
 * Defaults read /root/corpus/{train,heldout}.safetensors (scripts/build-corpus.sh).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { parsePretrainConfig, pretrain } from "../lib/train/pretrain.js";
import { shapeConfig } from "./pretrain.js";
import { defaultOutput, writeResult } from "./support/output.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");

const { values } = parseArgs({
  options: {
    seconds: { type: "string" }, shapes: { type: "string" }, data: { type: "string" }, heldout: { type: "string" },
    batch: { type: "string" }, lr: { type: "string" }, "eval-rows": { type: "string" },
    speeds: { type: "string", default: join(repoRoot, "benchmarks", "results", "pretrain.json") },
    out: { type: "string", default: defaultOutput("pretrain-sizes") },
  },
});
const seconds = Number(values.seconds ?? 240), batch = Number(values.batch ?? 4), lr = Number(values.lr ?? 3e-3);
const evalRows = Number(values["eval-rows"] ?? 32), seq = 512;
const data = values.data ?? "/root/corpus/train.safetensors", heldout = values.heldout ?? "/root/corpus/heldout.safetensors";
const speeds = JSON.parse(await readFile(values.speeds!, "utf8")) as {
  results: { shape: string; compute: string; tokensPerSec: number }[];
};
const results = [];
for (const shape of (values.shapes ?? "7m,10m,16m").split(",")) {
  const speed = speeds.results.find((r) => r.shape === shape && r.compute === "float32");
  if (!speed) throw new Error(`no float32 speed for ${shape} in benchmarks/results/pretrain.json: run bench:pretrain first`);
  const steps = Math.max(2, Math.round((seconds * speed.tokensPerSec) / (batch * seq)));
  const config = parsePretrainConfig({
    ...shapeConfig(shape, seq),
    training: { lr, warmupSteps: Math.max(1, Math.round(steps / 10)), batchSize: batch, seqLen: seq, steps, seed: 1, evalEvery: 0, evalRows, saveEvery: 0 },
  });
  const out = await mkdtemp(join(tmpdir(), `dg-sizes-${shape}-`));
  const load = loadavg()[0];
  const t0 = Date.now();
  try {
    const r = await pretrain({ config, data, heldout, out });
    const row = {
      shape, steps, batch, tokens: steps * batch * seq, parameters: r.parameters, lr,
      finalTrainLoss: +r.losses.at(-1)!.toFixed(4),
      heldoutLossStart: +r.evals[0].heldoutLoss.toFixed(4),
      heldoutLoss: +r.evals.at(-1)!.heldoutLoss.toFixed(4),
      wallSeconds: Math.round((Date.now() - t0) / 1000),
      loadavg1m: [+load.toFixed(2), +loadavg()[0].toFixed(2)],
    };
    results.push(row);
    console.log(JSON.stringify(row));
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}
const path = await writeResult(values.out!, { benchmark: "pretrain-sizes", date: new Date().toISOString(), secondsAtMeasuredSpeed: seconds, data, heldout, evalRows, results });
console.log(`wrote ${path}`);
