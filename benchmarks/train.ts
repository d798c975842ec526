/**
 * npm run bench:train
 *
 * One LoRA training step at sequence 512 on the random ~100M-parameter Qwen2 bench
 * checkpoint (benchmarks/support/random-checkpoint.ts), BF16 weights by default:
 *   (a) "generation": next-token CE on one 512-token sequence, forward + backward;
 *   (b) "full": the multi-objective step of one SVEN-like pair: the secure side with
 *       CE + KL (an adapter-off base pass) and the guard's hidden states, the
 *       vulnerable side with its hidden states, the guard (attention aggregation over
 *       the top 4 hidden states) forward/backward, both LoRA backwards;
 * each with and without activation recompute. LoRA r = 16 on q/k/v/o/gate/up/down of
 * every layer. Every configuration runs in its own process (so its peak RSS is its
 * own), --repeats times (default 3) after one warm-up step; the table shows medians.
 *
 * tokens/s counts the tokens pushed through the LoRA model per step (512 for (a),
 * 1024 for (b)). GFLOP/s counts the model's matmul work (forward GEMMs 2·T·P, the
 * input-gradient GEMMs of backward the same again, causal attention, plus the base
 * pass for KL), not the recomputed forward; it is set against the machine's GEMM
 * peak measured here with the engine's own forward GEMM (T = 512, 768 x 2048, same dtype).
 *
 * On a shared host the wall-clock rate depends on the other load, so each step's
 * process CPU time is recorded too: tokens / (CPU seconds / threads) is the rate the
 * step would reach with its threads' cores to itself (pool threads that spin while
 * waiting count as busy, so it errs low). Both are reported, with the load average.
 *
 * Options: --dtype BF16|F32, --seq N (512), --repeats N (3), --threads from
 * DEEPGUARD_THREADS. Writes benchmarks/out/train.json (git-ignored) or --out FILE; the recorded results
 * are benchmarks/results/train.json.
 */
import { execFileSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Guard, Model } from "../lib/index.js";
import { native } from "../lib/native.js";
import { LoraParameters, trainForward } from "../lib/train/lora.js";
import { encodeTensor } from "../lib/io/dtype.js";
import { BENCH_SHAPES, ensureRandomCheckpoint, tensorShapes, BENCH_CACHE_DIR } from "./support/random-checkpoint.js";
import { defaultOutput, writeResult } from "./support/output.js";

type Dtype = "F32" | "BF16";
type Kind = "generation" | "full";
const shape = BENCH_SHAPES["100m"];
const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

interface RunResult {
  kind: Kind;
  recompute: boolean;
  dtype: Dtype;
  seq: number;
  tokensPerStep: number;
  stepSeconds: number;
  tokensPerSecond: number;
  /** Process CPU time (user + system, all threads) of the step. */
  cpuSeconds: number;
  /** tokens / (cpuSeconds / threads): the rate with the threads' cores to ourselves (see header). */
  tokensPerSecondIdle: number;
  gflopPerStep: number;
  gflops: number;
  peakRssMiB: number;
  activationMiB: number;
}

/** Model matmul FLOPs of one forward over T tokens: GEMMs (incl. the tied LM head) + causal attention. */
function forwardFlops(T: number): { gemm: number; attention: number } {
  let params = 0;
  for (const [name, dims] of tensorShapes(shape)) if (dims.length === 2 && !name.includes("embed")) params += dims[0] * dims[1];
  params += shape.vocab * shape.hidden; // lm_head (tied)
  const hd = shape.hidden / shape.heads;
  return { gemm: 2 * T * params, attention: shape.layers * 2 * T * T * shape.heads * hd }; // QK^T and PV over the causal half each
}

async function runOne(kind: Kind, recompute: boolean, dtype: Dtype, T: number, repeats: number): Promise<RunResult[]> {
  const dir = await ensureRandomCheckpoint(join(BENCH_CACHE_DIR, `qwen2-100m-${dtype.toLowerCase()}`), shape, dtype);
  const model = await Model.load(dir);
  const lora = LoraParameters.create(model, { rank: 16, alpha: 32, targetModules: [...ALL] }, 1);
  for (const [k, p] of Object.entries(lora.parameters())) if (k.includes("lora_B")) p.fill(1e-3);
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919 + 13) % shape.vocab);
  const vul = Int32Array.from({ length: T }, (_, i) => (i * 104729 + 7) % shape.vocab);
  const targets = Int32Array.from({ length: T }, (_, t) => (t + 1 < T ? ids[t + 1] : -1));
  const ceWeights = new Float32Array(T).fill(1 / (T - 1));
  const L = shape.layers;
  const guard = kind === "full" ? Guard.create(model, { layers: [-4, -3, -2, -1], aggregation: "attention", seed: 1 }) : null;
  const capture = guard ? [...guard.layers] : [];
  let activation = 0;
  const step = async () => {
    const sec = await trainForward(model, ids, lora, {
      targets, ceWeights, recompute, capture, seed: 1,
      ...(kind === "full" ? { klWeights: new Float32Array(T).fill(1 / T) } : {}),
    });
    activation = Math.max(activation, sec.activationBytes);
    if (!guard) {
      await sec.backward({ ceCoef: 1, klCoef: 0 });
      sec.dispose();
      return;
    }
    const v = await trainForward(model, vul, lora, { recompute, capture, seed: 2 });
    const g = await guard.forwardTrain([{ ids, hidden: sec.hidden }, { ids: vul, hidden: v.hidden }], { train: true, seed: 3 });
    const { dHidden } = await g.backward([-0.5, 0.5]);
    await sec.backward({ ceCoef: 1, klCoef: 1, dHidden: dHidden[0] });
    await v.backward({ ceCoef: 0, klCoef: 0, dHidden: dHidden[1] });
    sec.dispose();
    v.dispose();
  };
  await step(); // warm-up: fault the weights in
  const f = forwardFlops(T);
  const seqs = kind === "full" ? 2 : 1;
  // forward + input-gradient backward (same GEMM work) + attention backward (~2x its forward); KL adds the base forward.
  const perSeq = 2 * f.gemm + 3 * f.attention;
  const gflop = (seqs * perSeq + (kind === "full" ? f.gemm + f.attention : 0)) / 1e9;
  const out: RunResult[] = [];
  for (let r = 0; r < repeats; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await step();
    const s = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    const cpuSeconds = (c.user + c.system) / 1e6;
    out.push({
      kind, recompute, dtype, seq: T, tokensPerStep: seqs * T, stepSeconds: s, tokensPerSecond: (seqs * T) / s,
      cpuSeconds, tokensPerSecondIdle: (seqs * T) / (cpuSeconds / native().systemInfo().threads),
      gflopPerStep: gflop, gflops: gflop / s, peakRssMiB: process.resourceUsage().maxRSS / 1024, activationMiB: activation / 2 ** 20,
    });
  }
  void L;
  return out;
}

/** GFLOP/s of the engine's forward GEMM and of the backward input-gradient GEMM at T tokens (median of 5). */
function gemmPeak(dtype: Dtype, T: number): { forward: number; backwardDx: number; forwardIdle: number; backwardDxIdle: number } {
  const ops = (native() as unknown as { testing: {
    linear(x: Float32Array, T: number, w: Uint8Array, dtype: string, rows: number, cols: number, bias: null, acc: null): Float32Array;
    linearBackward(dy: Float32Array, x: Float32Array, T: number, w: Uint8Array, dtype: string, rows: number, cols: number, dx: Float32Array, dw: null, db: null): void;
  } }).testing;
  const rows = 2048, cols = 768;
  const w = encodeTensor(Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i) * 0.02), dtype);
  const x = Float32Array.from({ length: T * cols }, (_, i) => Math.cos(i));
  const dy = Float32Array.from({ length: T * rows }, (_, i) => Math.sin(i * 0.7));
  const dx = new Float32Array(T * cols);
  const threads = native().systemInfo().threads;
  // Median wall time and median CPU time (per thread) of 7 calls.
  const time = (fn: () => void) => {
    const ts: number[] = [], cs: number[] = [];
    for (let i = 0; i < 7; i++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      fn();
      ts.push((performance.now() - t0) / 1000);
      const c = process.cpuUsage(c0);
      cs.push((c.user + c.system) / 1e6 / threads);
    }
    ts.sort((a, b) => a - b);
    cs.sort((a, b) => a - b);
    const flop = 2 * T * rows * cols;
    return { wall: flop / ts[3] / 1e9, idle: flop / cs[3] / 1e9 };
  };
  const f = time(() => ops.linear(x, T, w, dtype, rows, cols, null, null));
  const b = time(() => ops.linearBackward(dy, x, T, w, dtype, rows, cols, dx, null, null));
  return { forward: f.wall, backwardDx: b.wall, forwardIdle: f.idle, backwardDxIdle: b.idle };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dtype: { type: "string", default: "BF16" },
      seq: { type: "string", default: "512" },
      repeats: { type: "string", default: "3" },
      child: { type: "string" },
      recompute: { type: "boolean" },
      out: { type: "string", default: defaultOutput("train") },
    },
  });
  const dtype = values.dtype as Dtype;
  if (dtype !== "BF16" && dtype !== "F32") throw new Error(`--dtype must be BF16 or F32`);
  const T = Number(values.seq), repeats = Number(values.repeats);
  if (!Number.isInteger(T) || T < 2 || !Number.isInteger(repeats) || repeats < 1) throw new Error("--seq >= 2 and --repeats >= 1 must be integers");
  if (values.child) {
    const r = await runOne(values.child as Kind, values.recompute ?? false, dtype, T, repeats);
    process.stdout.write(JSON.stringify(r) + "\n");
    return;
  }
  const sys = native().systemInfo();
  const loadBefore = loadavg();
  console.log(`CPU: ${cpus()[0]?.model} · ${sys.threads} threads · kernels ${sys.isa} · load average ${loadBefore.map((l) => l.toFixed(2)).join(" ")}`);
  const peak = gemmPeak(dtype, T);
  console.log(
    `GEMM at T=${T}, 2048x768 ${dtype}: forward ${peak.forward.toFixed(1)} GFLOP/s wall (${peak.forwardIdle.toFixed(1)} on own cores by CPU time), ` +
      `backward dX ${peak.backwardDx.toFixed(1)} (${peak.backwardDxIdle.toFixed(1)})`,
  );
  const medians: (RunResult & { range: [number, number] })[] = [];
  const runs: RunResult[] = [];
  for (const kind of ["generation", "full"] as Kind[]) {
    for (const recompute of [false, true]) {
      const args = ["--child", kind, "--dtype", dtype, "--seq", String(T), "--repeats", String(repeats), ...(recompute ? ["--recompute"] : [])];
      const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
      const mine: RunResult[] = JSON.parse(out.trim().split("\n").pop()!);
      runs.push(...mine);
      const sorted = [...mine].sort((a, b) => a.tokensPerSecondIdle - b.tokensPerSecondIdle);
      medians.push({ ...sorted[Math.floor(sorted.length / 2)], range: [sorted[0].tokensPerSecondIdle, sorted[sorted.length - 1].tokensPerSecondIdle] });
    }
  }
  const loadAfter = loadavg();
  console.log(`\nmedian of ${repeats} step(s) per row (range in brackets); load average after: ${loadAfter.map((l) => l.toFixed(2)).join(" ")}`);
  console.log("| step | recompute | tokens/step | wall s/step | wall tokens/s | CPU s/step | tokens/s, own cores (CPU time) | GFLOP/s (own cores) | % of GEMM peak (CPU time) | peak RSS MiB | saved activations MiB |");
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of medians) {
    const gflopsIdle = r.gflopPerStep / (r.cpuSeconds / sys.threads);
    console.log(
      `| ${r.kind} | ${r.recompute ? "yes" : "no"} | ${r.tokensPerStep} | ${r.stepSeconds.toFixed(2)} | ${r.tokensPerSecond.toFixed(1)} | ${r.cpuSeconds.toFixed(2)} | ${r.tokensPerSecondIdle.toFixed(1)} [${r.range[0].toFixed(1)}-${r.range[1].toFixed(1)}] | ${gflopsIdle.toFixed(1)} | ${((100 * gflopsIdle) / peak.forwardIdle).toFixed(0)}% | ${r.peakRssMiB.toFixed(0)} | ${r.activationMiB.toFixed(0)} |`,
    );
  }
  const report = {
    date: new Date().toISOString(),
    command: "npm run bench:train",
    cpu: cpus()[0]?.model ?? "unknown",
    threads: sys.threads,
    isa: sys.isa,
    loadAverage: { before: loadBefore, after: loadAfter },
    model: { architecture: "Qwen2ForCausalLM", shape: "100m", dtype, ...shape },
    lora: { rank: 16, alpha: 32, targets: ALL, layers: "all" },
    seq: T,
    gemmPeakGflops: peak,
    medians,
    runs,
  };
  console.log(`\nwrote ${await writeResult(values.out!, report)}`);
}

await main();
