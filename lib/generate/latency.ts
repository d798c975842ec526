/**
 * Latency versus re-scoring interval k (deepguard bench-k, npm run bench:k):
 * for each k, plain generation, guided generation re-scoring from captured
 * hidden states ("captured"), and the reference implementation's way, a full
 * forward pass over the whole sequence at every re-score ("reforward").
 * Median end-to-end latency and tokens/s over several prompts and seeds;
 * overhead relative to plain generation measured in the same run.
 */
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import type { Guard, GuardScorer } from "../guard/guard.js";
import type { Model } from "../model/model.js";
import { parseOptions } from "../validate.js";
import { Generator } from "./guided.js";

export type Strategy = "plain" | "captured" | "reforward";
export const STRATEGIES: readonly Strategy[] = ["plain", "captured", "reforward"];

/** One row of `--json`: exactly these fields. */
export interface LatencyRow {
  strategy: Strategy;
  /** null for plain generation (no k). */
  k: number | "inf" | null;
  latencyMs: number;
  tokensPerSec: number;
  overheadPct: number;
}

export interface LatencyReport {
  rows: LatencyRow[];
  /** Every measured latency (ms) per row, same order as rows. */
  runs: number[][];
  /** Process CPU time (ms, all threads) of the same runs. */
  cpuRuns: number[][];
  /** Per row: the median over pairs of guided / plain CPU time - 1, in %. */
  cpuOverheadPct: number[];
  tokens: number;
  promptTokens: number;
  prompts: number;
  repeats: number;
}

export interface LatencyOptions {
  /** Intervals; Infinity = once after the prompt. Default 1,2,4,8,16,32,64,128,Infinity. */
  ks?: number[];
  /** Generated tokens per run (default 256). */
  tokens?: number;
  /** Prompt length in tokens (default 64). */
  promptTokens?: number;
  /** Distinct prompts (each with its own seed) per repeat (default 2). */
  prompts?: number;
  /** Rounds over all prompts (default 2). */
  repeats?: number;
  strategies?: Strategy[];
  strength?: number;
  temperature?: number;
  onRun?: (info: { strategy: Strategy; k: number | null; ms: number; cpuMs: number }) => void;
}

export const DEFAULT_KS = [1, 2, 4, 8, 16, 32, 64, 128, Infinity];

const kSchema = z.custom<number>((k) => k === Infinity || (typeof k === "number" && Number.isInteger(k) && k >= 1), "must be positive integers or Infinity");
const latencySchema = z
  .object({
    ks: z.array(kSchema).min(1).default(DEFAULT_KS),
    tokens: z.number().int().min(2).max(100_000).default(256),
    promptTokens: z.number().int().min(1).max(100_000).default(64),
    prompts: z.number().int().min(1).max(100).default(2),
    repeats: z.number().int().min(1).max(100).default(2),
    strategies: z.array(z.enum(["plain", "captured", "reforward"])).min(1).default(["plain", "captured", "reforward"]),
    strength: z.number().finite().nonnegative().default(1),
    temperature: z.number().finite().nonnegative().default(0.4),
    onRun: z.custom<LatencyOptions["onRun"]>((v) => typeof v === "function").optional(),
  })
  .strict();

/** Parses "1,2,4,inf" into intervals. */
export function parseKList(raw: string, what = "--k"): number[] {
  return raw.split(",").map((s, i) => {
    const t = s.trim().toLowerCase();
    if (t === "inf" || t === "infinity") return Infinity;
    if (!/^\d+$/.test(t) || Number(t) < 1) throw new DeepGuardError("ERR_USAGE", `${what} entry ${i} ("${s}") is not a positive integer or "inf"`);
    return Number(t);
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs the measurement. For every repeat, prompt and k, plain generation and
 * each guided strategy run back to back (the order rotating), so that a shared
 * machine's changing load hits a guided run and its plain baseline alike; a
 * row's overhead is the median over those pairs of guided / plain - 1 (plain's
 * own row: the median of every plain run). Process CPU time (every thread) is
 * recorded beside wall time: on a loaded machine it shows the work done.
 */
export async function measureLatencyVsK(model: Model, guard: Guard | GuardScorer, options?: LatencyOptions): Promise<LatencyReport> {
  const o = parseOptions(latencySchema, options, "measureLatencyVsK");
  const vocab = model.config.vocabSize;
  const guidedStrategies = (["captured", "reforward"] as const).filter((s) => o.strategies.includes(s));
  const gens = new Map<string, Generator>();
  for (const k of o.ks) {
    for (const strategy of guidedStrategies) {
      gens.set(`${strategy}:${k}`, new Generator(model, guard, { interval: k, strength: o.strength, rescore: strategy }));
    }
  }
  const times = new Map<string, number[]>();
  const cpu = new Map<string, number[]>();
  const ratios = new Map<string, number[]>();
  const cpuRatios = new Map<string, number[]>();
  const push = <T>(m: Map<string, T[]>, key: string, v: T) => (m.get(key) ?? m.set(key, []).get(key)!).push(v);
  const sampling = (seed: number) => ({ maxTokens: o.tokens, temperature: o.temperature, topP: 0.95, seed, stopOnEos: false });
  const guidedSampling = (seed: number) => ({ ...sampling(seed), finalScore: false });
  const timed = async (fn: () => Promise<unknown>) => {
    const c0 = process.cpuUsage();
    const t = performance.now();
    await fn();
    const ms = performance.now() - t;
    const c = process.cpuUsage(c0);
    return { ms, cpuMs: (c.user + c.system) / 1000 };
  };
  // Warm-up: page in the weights, build the guard's fused copy.
  const warm = Array.from({ length: o.promptTokens }, (_, i) => (i * 131 + 7) % vocab);
  await model.complete(warm, { ...sampling(0), maxTokens: 4 });
  for (const g of gens.values()) await g.complete(warm, { ...sampling(0), maxTokens: 2 });
  let turn = 0;
  for (let r = 0; r < o.repeats; r++) {
    for (let p = 0; p < o.prompts; p++) {
      const prompt = Array.from({ length: o.promptTokens }, (_, i) => (i * 7919 + p * 104729 + 13) % vocab);
      const seed = 1000 + p;
      for (const k of o.ks) {
        const order: Strategy[] = ["plain", ...guidedStrategies];
        const rot = turn++ % order.length;
        const runs = [...order.slice(rot), ...order.slice(0, rot)];
        const got = new Map<Strategy, { ms: number; cpuMs: number }>();
        for (const strategy of runs) {
          const m =
            strategy === "plain"
              ? await timed(async () => {
                  const res = await model.complete(prompt, sampling(seed));
                  if (res.tokens.length !== o.tokens) throw new DeepGuardError("ERR_NATIVE", `plain run generated ${res.tokens.length} tokens`);
                })
              : await timed(() => gens.get(`${strategy}:${k}`)!.complete(prompt, guidedSampling(seed)));
          got.set(strategy, m);
          const key = strategy === "plain" ? "plain" : `${strategy}:${k}`;
          push(times, key, m.ms);
          push(cpu, key, m.cpuMs);
          o.onRun?.({ strategy, k: strategy === "plain" ? null : k, ms: m.ms, cpuMs: m.cpuMs });
        }
        const base = got.get("plain")!;
        for (const strategy of guidedStrategies) {
          push(ratios, `${strategy}:${k}`, got.get(strategy)!.ms / base.ms);
          push(cpuRatios, `${strategy}:${k}`, got.get(strategy)!.cpuMs / base.cpuMs);
        }
      }
    }
  }
  const rows: LatencyRow[] = [];
  const runs: number[][] = [];
  const cpuRuns: number[][] = [];
  const cpuOverheadPct: number[] = [];
  const add = (strategy: Strategy, k: number | null, key: string) => {
    const ms = median(times.get(key)!);
    rows.push({
      strategy,
      k: k === null ? null : k === Infinity ? "inf" : k,
      latencyMs: ms,
      tokensPerSec: (o.tokens * 1000) / ms,
      overheadPct: k === null ? 0 : (median(ratios.get(key)!) - 1) * 100,
    });
    runs.push(times.get(key)!);
    cpuRuns.push(cpu.get(key)!);
    cpuOverheadPct.push(k === null ? 0 : (median(cpuRatios.get(key)!) - 1) * 100);
  };
  add("plain", null, "plain");
  for (const strategy of guidedStrategies) for (const k of o.ks) add(strategy, k, `${strategy}:${k}`);
  return { rows, runs, cpuRuns, cpuOverheadPct, tokens: o.tokens, promptTokens: o.promptTokens, prompts: o.prompts, repeats: o.repeats };
}

/** The terminal table. */
export function latencyTable(rows: LatencyRow[], cpuOverheadPct?: number[]): string {
  const head = ["strategy", "k", "latency ms", "tokens/s", "overhead %", ...(cpuOverheadPct ? ["cpu overhead %"] : [])];
  const body = rows.map((r, i) => [
    r.strategy,
    r.k === null ? "-" : String(r.k),
    r.latencyMs.toFixed(1),
    r.tokensPerSec.toFixed(2),
    r.overheadPct.toFixed(1),
    ...(cpuOverheadPct ? [cpuOverheadPct[i].toFixed(1)] : []),
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(width[i]) : c.padStart(width[i]))).join("  ");
  return [line(head), width.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n") + "\n";
}

const esc = (s: string) => s.replace(/[<>&"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!);

/** Overhead % versus k, one line per strategy, log-scale k ("inf" at the right end). */
export function latencySvg(rows: LatencyRow[], title = "Guided generation: overhead over plain generation vs re-scoring interval k"): string {
  const W = 720, H = 420, L = 70, R = 150, T = 40, B = 60;
  const guided = rows.filter((r) => r.k !== null);
  const finite = guided.map((r) => r.k).filter((k): k is number => typeof k === "number");
  const hasInf = guided.some((r) => r.k === "inf");
  const lo = Math.log2(Math.min(1, ...finite));
  const hiFinite = Math.log2(Math.max(2, ...finite));
  const hi = hasInf ? hiFinite + 1 : hiFinite;
  const xOf = (k: number | "inf") => L + ((k === "inf" ? hi : Math.log2(k)) - lo) / (hi - lo || 1) * (W - L - R);
  const ys = guided.map((r) => r.overheadPct);
  const yMax = Math.max(5, ...ys) * 1.1, yMin = Math.min(0, ...ys) * 1.1;
  const yOf = (v: number) => T + (1 - (v - yMin) / (yMax - yMin)) * (H - T - B);
  const colors: Record<string, string> = { captured: "#1f77b4", reforward: "#d62728" };
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  parts.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`);
  const ticks = [...new Set(guided.map((r) => r.k as number | "inf"))];
  for (const k of ticks) {
    const x = xOf(k);
    parts.push(`<line x1="${x}" y1="${H - B}" x2="${x}" y2="${H - B + 5}" stroke="black"/><text x="${x}" y="${H - B + 18}" text-anchor="middle">${k === "inf" ? "∞" : k}</text>`);
  }
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 15}" text-anchor="middle">re-scoring interval k (log scale)</text>`);
  const step = niceStep((yMax - yMin) / 6);
  for (let v = Math.ceil(yMin / step) * step; v <= yMax; v += step) {
    const y = yOf(v);
    parts.push(`<line x1="${L - 5}" y1="${y}" x2="${W - R}" y2="${y}" stroke="${Math.abs(v) < 1e-9 ? "#888" : "#eee"}"/><text x="${L - 8}" y="${y + 4}" text-anchor="end">${+v.toFixed(6)}</text>`);
  }
  parts.push(`<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">overhead over plain generation (%)</text>`);
  let legend = 0;
  for (const strategy of ["captured", "reforward"]) {
    const pts = guided.filter((r) => r.strategy === strategy);
    if (pts.length === 0) continue;
    const c = colors[strategy];
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((r) => `${xOf(r.k as number | "inf").toFixed(1)},${yOf(r.overheadPct).toFixed(1)}`).join(" ")}"/>`);
    for (const r of pts) parts.push(`<circle cx="${xOf(r.k as number | "inf").toFixed(1)}" cy="${yOf(r.overheadPct).toFixed(1)}" r="3" fill="${c}"><title>${strategy} k=${r.k}: ${r.overheadPct.toFixed(1)}%</title></circle>`);
    const ly = T + 10 + legend++ * 20;
    parts.push(`<line x1="${W - R + 15}" y1="${ly}" x2="${W - R + 40}" y2="${ly}" stroke="${c}" stroke-width="2"/><text x="${W - R + 45}" y="${ly + 4}">${strategy}</text>`);
  }
  const plain = rows.find((r) => r.strategy === "plain");
  if (plain) parts.push(`<text x="${W - R + 15}" y="${T + 10 + legend * 20 + 4}" fill="#555">plain: ${plain.tokensPerSec.toFixed(1)} tok/s</text>`);
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/**
 * The guard bench-k uses without --guard: the default shape (attention over the
 * top 4 hidden states), seeded random weights and token statistics, so the
 * timing is real (the analyzer and bias do their full work).
 */
export async function randomBenchGuard(model: Model, seed = 1): Promise<Guard> {
  const { Guard } = await import("../guard/guard.js");
  const { Random } = await import("../random.js");
  // The top 4 hidden states (fewer on a model with fewer layers).
  const m = Math.min(4, model.config.numLayers + 1);
  const guard = Guard.create(model, { layers: Array.from({ length: m }, (_, i) => i - m), aggregation: "attention", seed });
  const rng = new Random(seed + 1);
  for (let i = 0; i < guard.tokenStats.length; i++) guard.tokenStats[i] = Math.round((2 * rng.nextDouble() - 1) * 100) / 100;
  return guard;
}
