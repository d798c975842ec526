/**
 * npm run bench:pretrain [-- --shapes a,b --repeats N --seq 512 --batch 1 --compute float32|bfloat16|both]
 *
 * Full-parameter training speed for the candidate default-model shapes (Qwen2
 * architecture, vocab 8192, tied embeddings, sequence 512, ~7-27M parameters):
 * one optimizer step = forward + backward of every weight over `batch` packed rows
 * of `seq` tokens (native FullModel), global-norm clipping and AdamW over all
 * parameters, timed end to end after one warm-up step; medians of --repeats
 * (default 3), the shapes interleaved round-robin so each sees the same load. GFLOP/s counts 6 FLOPs per matmul parameter per token (LM head
 * included, the embedding lookup not) plus causal attention (lib/train/pretrain.ts
 * trainFlopsPerToken). CPU seconds per step (all threads, process.cpuUsage) are
 * reported beside wall time, as tokens per CPU-second. The load average is recorded before and after each shape:
 * the machine is shared.
 *
 * For the size choice it also reports, per shape, the tokens a 3-hour run reaches
 * at that speed, tokens per parameter, and the Chinchilla (Hoffmann et al. 2022,
 * approach 3) loss estimate L(N, D) = 1.69 + 406.4 / N^0.34 + 410.7 / D^0.28, used
 * only to rank the shapes (its constants are for web text, not this corpus).
 * Writes benchmarks/out/pretrain.json (git-ignored) or --out FILE; the recorded results are
 * benchmarks/results/pretrain.json.
 */
import { loadavg, cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { parseModelConfig, type ModelConfig } from "../lib/model/config.js";
import { AdamW, clipGradNorm } from "../lib/train/optimizer.js";
import { PretrainModel, isNoDecay, trainFlopsPerToken } from "../lib/train/pretrain.js";
import { Random } from "../lib/random.js";
import { defaultOutput, writeResult } from "./support/output.js";


/** Candidate shapes: [hidden, layers, heads, kv heads, intermediate]; head_dim 64. */
export const PRETRAIN_SHAPES: Record<string, [number, number, number, number, number]> = {
  "7m": [256, 6, 4, 2, 704],
  "10m": [320, 6, 5, 5, 864],
  "16m": [384, 8, 6, 2, 1024],
  "27m": [512, 8, 8, 2, 1408],
};

export function shapeConfig(name: string, seq = 512): Record<string, unknown> {
  const [d, L, h, kv, I] = PRETRAIN_SHAPES[name];
  return {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_size: d,
    num_hidden_layers: L,
    num_attention_heads: h,
    num_key_value_heads: kv,
    intermediate_size: I,
    vocab_size: 8192,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: true,
    max_position_embeddings: Math.max(1024, seq),
    hidden_act: "silu",
  };
}

export function chinchillaLoss(params: number, tokens: number): number {
  return 1.69 + 406.4 / params ** 0.34 + 410.7 / tokens ** 0.28;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Runner {
  name: string;
  compute: "float32" | "bfloat16";
  cfg: ModelConfig;
  model: PretrainModel;
  step: () => Promise<{ wall: number; cpu: number }>;
  times: number[];
  cpuTimes: number[];
  loads: number[];
}

function runner(name: string, cfg: ModelConfig, seq: number, batch: number, compute: "float32" | "bfloat16"): Runner {
  const model = new PretrainModel(cfg, { computeDtype: compute });
  model.initialize(1, 0.02);
  const adamw = new AdamW(model.params, { weightDecay: 0.1, noDecay: isNoDecay });
  const r = new Random(7);
  const rows = Int32Array.from({ length: batch * (seq + 1) }, () => Math.floor(r.nextDouble() * cfg.vocabSize));
  const grads = [...model.grads.values()];
  const step = async () => {
    const t0 = performance.now(), c0 = process.cpuUsage();
    await model.step(rows, seq + 1, true);
    await clipGradNorm(grads, 1);
    await adamw.step(model.grads, 1e-4);
    const c = process.cpuUsage(c0);
    return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
  };
  return { name, compute, cfg, model, step, times: [], cpuTimes: [], loads: [] };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { shapes: { type: "string" }, repeats: { type: "string" }, seq: { type: "string" }, batch: { type: "string" }, compute: { type: "string" }, out: { type: "string", default: defaultOutput("pretrain") } },
  });
  const names = values.shapes ? values.shapes.split(",") : Object.keys(PRETRAIN_SHAPES);
  for (const n of names) if (!(n in PRETRAIN_SHAPES)) throw new Error(`unknown shape ${n} (${Object.keys(PRETRAIN_SHAPES).join(", ")})`);
  const repeats = Number(values.repeats ?? 3), seq = Number(values.seq ?? 512), batch = Number(values.batch ?? 1);
  const computes = values.compute === "both" ? (["float32", "bfloat16"] as const) : [(values.compute ?? "float32") as "float32" | "bfloat16"];
  const budgetSec = 3 * 3600;
  const runners: Runner[] = [];
  for (const name of names) for (const compute of computes) runners.push(runner(name, parseModelConfig(shapeConfig(name, seq)), seq, batch, compute));
  for (const r of runners) await r.step(); // warm-up
  // Round-robin over the shapes so that each sees the same (shifting) machine load.
  for (let i = 0; i < repeats; i++) {
    for (const r of runners) {
      r.loads.push(loadavg()[0]);
      const t = await r.step();
      r.times.push(t.wall);
      r.cpuTimes.push(t.cpu);
    }
  }
  const results = [];
  for (const { name, compute, cfg, model, times, cpuTimes, loads } of runners) {
    const step = median(times);
    const tokensPerSec = (batch * seq) / step;
    const params = model.parameterCount;
    const embedding = cfg.vocabSize * cfg.hiddenSize;
    const tokens3h = tokensPerSec * budgetSec;
    const row = {
      shape: name,
      compute,
      hidden: cfg.hiddenSize, layers: cfg.numLayers, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, intermediate: cfg.intermediateSize,
      parameters: params,
      nonEmbeddingParameters: params - embedding,
      seq, batch,
      stepSeconds: times.map((t) => +t.toFixed(3)),
      medianStepSeconds: +step.toFixed(3),
      tokensPerSec: +tokensPerSec.toFixed(1),
      gflops: +((trainFlopsPerToken(cfg, seq) * tokensPerSec) / 1e9).toFixed(2),
      // CPU seconds (all threads) per step: less sensitive to the other tenants' load than wall time.
      medianCpuSecondsPerStep: +median(cpuTimes).toFixed(3),
      tokensPerCpuSecond: +((batch * seq) / median(cpuTimes)).toFixed(1),
      tokensIn3h: Math.round(tokens3h),
      tokensPerParameterIn3h: +(tokens3h / params).toFixed(3),
      chinchillaLossEstimate: +chinchillaLoss(params, tokens3h).toFixed(3),
      loadavg1mAtSteps: loads.map((x) => +x.toFixed(2)),
    };
    results.push(row);
    console.log(
      `${name.padEnd(4)} ${compute.padEnd(8)} ${(params / 1e6).toFixed(2)}M params  step ${step.toFixed(2)} s  ${tokensPerSec.toFixed(0)} tok/s  ` +
        `${row.gflops} GFLOP/s  ${row.tokensPerCpuSecond} tok/cpu-s  3h: ${(tokens3h / 1e6).toFixed(1)}M tokens (${row.tokensPerParameterIn3h} tok/param)  ` +
        `L_chinchilla ${row.chinchillaLossEstimate}  load ${median(loads).toFixed(1)}`,
    );
  }
  const out = await writeResult(values.out!, {
    benchmark: "pretrain",
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    threads: process.env.DEEPGUARD_THREADS ?? "default",
    note: "medians of repeats after one warm-up step, shapes interleaved round-robin; a step = forward + backward of all weights + clipping + AdamW; machine shared, see loadavg",
    results,
  });
  console.log(`wrote ${out}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
