/**
 * Guided generation (DESIGN.md "Guided inference"): the model generates, the
 * guard scores the sequence from the aggregated hidden states of its layers,
 * and the score sets how hard the token security statistics push the logits:
 *
 *   n = stats / (max|stats| + 1e-8)
 *   logits += n * strength / max(s, eps)          every step
 *   logits += max(n, 0)                           on the first two generated tokens
 *
 * `s` is recomputed every `interval` generated tokens (Infinity: once, after
 * the prompt). Everything runs inside the model's serving scheduler: the bias
 * is added natively before sampling, guided sequences batch with plain ones,
 * and the guard layers' hidden states are captured by the decode step that
 * computes them (no second forward pass). A sequence pauses only where its bias
 * may change (the first three tokens and every interval); a re-score runs the
 * aggregator and analyzer over the tokens fed since the last one (earlier token
 * scores do not change, so the sequence mean is updated incrementally), and
 * the re-scores of every sequence due in one scheduler iteration go to the
 * guard in one batched native call.
 *
 *   const gen = new Generator(model, guard, { interval: 64, strength: 1 });
 *   for await (const piece of gen.stream(prompt, { maxTokens: 256, seed: 7 })) ...   // piece.score
 *   const r = await gen.complete(prompt, { maxTokens: 256, n: 8 });                    // one batch
 */
import { z } from "zod";
import { abortError, DeepGuardError } from "../errors.js";
import { parseOptions, signalSchema } from "../validate.js";
import type { Model } from "../model/model.js";
import { toTokenArray, type ModelSession } from "../model/session.js";
import type { Guard, GuardScorer, HiddenBatchItem } from "../guard/guard.js";
import { Scheduler, type RequestStream } from "../serve/scheduler.js";
import type { NativeServeEvent, NativeServeRequest } from "../native-types.js";
import { TextStream, type FinishReason, type SamplingOptions } from "./generate.js";

export interface GeneratorOptions {
  /** Re-score every k generated tokens: a positive integer, or Infinity (score the prompt once). Default 64. */
  interval?: number;
  /** How hard the token statistics push the logits (finite, >= 0; 0 = plain generation). Default 1. */
  strength?: number;
  /** Lower bound of the score in strength / max(s, eps). Default 0.01. */
  eps?: number;
  /**
   * Candidate mode (off by default: 1): at each interval decode this many
   * continuations of `interval` tokens as a batch, score them in one call and
   * keep the most secure (ties broken by likelihood). Needs a finite interval.
   */
  candidates?: number;
  /**
   * How a re-score gets its hidden states: "captured" (default: from the decode
   * steps) or "reforward" (the reference implementation's way: a full forward
   * pass over the whole sequence at every re-score; for comparison only).
   */
  rescore?: "captured" | "reforward";
}

export interface GuidedGenerateOptions extends SamplingOptions {
  /** Maximum number of new tokens per sample (default 256, lowered to fit the context). */
  maxTokens?: number;
  /** Stop at the model's end-of-sequence token (default true). */
  stopOnEos?: boolean;
  signal?: AbortSignal;
  /**
   * Score the tokens fed since the last re-score when the generation ends, so
   * that the sample's `score` covers the whole sequence (default true; false
   * leaves it at the last re-score, e.g. for timing generation alone).
   */
  finalScore?: boolean;
}

export interface GuidedCompleteOptions extends GuidedGenerateOptions {
  /** Samples of the prompt, decoded as one batch after one shared prefill; sample i uses seed + i. Default 1. */
  n?: number;
}

export interface GuidedPiece {
  /** Newly visible text. */
  text: string;
  /** The token sampled (none for the final flush of held-back text). */
  tokens: number[];
  /** The latest sequence score (NaN before the prompt has been scored). */
  score: number;
}

export interface GuidedSample {
  text: string;
  tokens: number[];
  /** The sequence score at each re-score (the first: after the prompt). */
  scores: number[];
  /** The score over every token whose hidden states were computed (the prompt and all generated tokens but the last). */
  score: number;
  finishReason: FinishReason;
  seed: number;
  /** Candidate mode: intervals decided, and how often the most secure candidate was not the first (the unguided draw). */
  candidates?: { intervals: number; changed: number };
}

export interface GuidedTimings {
  /** From the call to the first generated token. */
  firstTokenMs: number;
  totalMs: number;
  /** Time in re-scoring calls (guard, or model forward + guard with "reforward"). */
  rescoreMs: number;
  /** Sequence re-scores done, and the native calls they took (batched: fewer calls). */
  rescores: number;
  rescoreCalls: number;
  generatedTokens: number;
}

export interface GuidedResult {
  samples: GuidedSample[];
  timings: GuidedTimings;
}

const generatorSchema = z
  .object({
    interval: z
      .custom<number>((k) => k === Infinity || (typeof k === "number" && Number.isInteger(k) && k >= 1), "must be a positive integer or Infinity")
      .default(64),
    strength: z.number().finite().nonnegative().default(1),
    eps: z.number().finite().gt(0).lte(1).default(0.01),
    candidates: z.number().int().min(1).max(64).default(1),
    rescore: z.enum(["captured", "reforward"]).default("captured"),
  })
  .strict()
  .refine((o) => o.candidates === 1 || o.interval !== Infinity, { message: "candidate mode needs a finite interval", path: ["candidates"] })
  .refine((o) => o.candidates === 1 || o.rescore === "captured", { message: 'candidate mode re-scores captured states only (rescore: "captured")', path: ["candidates"] });

const runSchema = z
  .object({
    temperature: z.number().finite().nonnegative().default(0),
    topK: z.number().int().nonnegative().max(2 ** 31 - 1).default(0),
    topP: z.number().gt(0).lte(1).default(1),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER - 1024).optional(),
    maxTokens: z.number().int().positive().max(1_000_000).optional(),
    stopOnEos: z.boolean().default(true),
    signal: signalSchema,
    n: z.number().int().min(1).max(256).default(1),
    finalScore: z.boolean().default(true),
  })
  .strict();

type RunOptions = z.output<typeof runSchema> & { seed: number; maxTokens: number };

/** Prompt tokens the text stream decodes along with the generated ones (as in generate.ts). */
const TEXT_CONTEXT = 4;

export class Generator {
  readonly model: Model;
  readonly guard: Guard | GuardScorer;
  readonly interval: number;
  readonly strength: number;
  readonly eps: number;
  readonly candidates: number;
  readonly rescore: "captured" | "reforward";
  /** n = stats / (max|stats| + 1e-8), and max(n, 0). */
  readonly #push: Float32Array;
  readonly #headPush: Float32Array;
  #scorer: Promise<GuardScorer> | null = null;

  constructor(model: Model, guard: Guard | GuardScorer, options?: GeneratorOptions) {
    const o = parseOptions(generatorSchema, options, "Generator");
    if (!model || typeof model.generationContext !== "function") throw new DeepGuardError("ERR_ARGUMENT", "Generator: model must be a Model");
    if (!guard || typeof guard.scoreHidden !== "function" || !guard.model) throw new DeepGuardError("ERR_ARGUMENT", "Generator: guard must be a Guard or GuardScorer");
    const a = guard.model.config, b = model.config;
    for (const [field, x, y] of [
      ["hidden size", a.hiddenSize, b.hiddenSize],
      ["layer count", a.numLayers, b.numLayers],
      ["vocab size", a.vocabSize, b.vocabSize],
    ] as const) {
      if (x !== y) throw new DeepGuardError("ERR_GUARD_MISMATCH", `Generator: the guard was made for a model with ${field} ${x}; this model has ${y}`);
    }
    this.model = model;
    this.guard = guard;
    this.interval = o.interval;
    this.strength = o.strength;
    this.eps = o.eps;
    this.candidates = o.candidates;
    this.rescore = o.rescore;
    const stats = tokenStatsOf(guard);
    let max = 0;
    for (const v of stats) max = Math.max(max, Math.abs(v));
    this.#push = new Float32Array(stats.length);
    this.#headPush = new Float32Array(stats.length);
    for (let i = 0; i < stats.length; i++) {
      this.#push[i] = stats[i] / (max + 1e-8);
      this.#headPush[i] = Math.max(this.#push[i], 0);
    }
  }

  /** The bias for a sequence score s; `head`: one of the first two generated tokens. */
  biasFor(score: number, head: boolean): Float32Array {
    const scale = this.strength / Math.max(score, this.eps);
    const out = new Float32Array(this.#push.length);
    for (let i = 0; i < out.length; i++) out[i] = this.#push[i] * scale + (head ? this.#headPush[i] : 0);
    return out;
  }

  /** Streams one guided sample; the return value is its GuidedResult. */
  async *stream(prompt: string | ArrayLike<number>, options?: GuidedGenerateOptions): AsyncGenerator<GuidedPiece, GuidedResult> {
    const o = this.#resolve(prompt, options, "Generator.stream");
    if ((options as GuidedCompleteOptions | undefined)?.n !== undefined && o.opts.n !== 1) {
      throw new DeepGuardError("ERR_ARGUMENT", 'Generator.stream: option "n" must be 1 (use complete() for several samples)');
    }
    return yield* this.#run(o.ids, o.opts);
  }

  /** `n` guided samples of one prompt, decoded as one batch. */
  async complete(prompt: string | ArrayLike<number>, options?: GuidedCompleteOptions): Promise<GuidedResult> {
    const o = this.#resolve(prompt, options, "Generator.complete");
    const it = this.#run(o.ids, o.opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  #resolve(prompt: string | ArrayLike<number>, options: GuidedCompleteOptions | undefined, what: string): { ids: Int32Array; opts: RunOptions } {
    const parsed = parseOptions(runSchema, options, what);
    const ids = toTokenArray(typeof prompt === "string" ? this.model.tokenize(prompt) : prompt, this.model.config.vocabSize, "prompt");
    if (ids.length === 0) throw new DeepGuardError("ERR_ARGUMENT", `${what}: the prompt is empty`);
    const { maxPositions } = this.model.generationContext();
    if (ids.length >= maxPositions) {
      throw new DeepGuardError("ERR_CONTEXT_LENGTH", `${what}: the prompt has ${ids.length} tokens; the context (max_position_embeddings) holds ${maxPositions}, leaving no room to generate`);
    }
    let maxTokens = parsed.maxTokens ?? Math.min(256, maxPositions - ids.length + 1);
    if (parsed.maxTokens !== undefined && ids.length + maxTokens - 1 > maxPositions) {
      throw new DeepGuardError("ERR_CONTEXT_LENGTH", `${what}: ${ids.length} prompt tokens + maxTokens ${maxTokens} would reach ${ids.length + maxTokens - 1} positions; max_position_embeddings is ${maxPositions}`);
    }
    maxTokens = Math.max(1, maxTokens);
    return { ids, opts: { ...parsed, maxTokens, seed: parsed.seed ?? Math.floor(Math.random() * 2 ** 32) } };
  }

  async #getScorer(): Promise<GuardScorer> {
    const g = this.guard as Guard;
    if (typeof g.scorer !== "function") return this.guard as GuardScorer;
    this.#scorer ??= g.scorer();
    return this.#scorer;
  }

  async *#run(prompt: Int32Array, opts: RunOptions): AsyncGenerator<GuidedPiece, GuidedResult> {
    const run = new GuidedRun(this, await this.#getScorer(), prompt, opts);
    try {
      yield* run.pieces();
      return await run.result();
    } finally {
      run.close();
    }
  }
}

function tokenStatsOf(guard: Guard | GuardScorer): Float32Array {
  const g = guard as Guard;
  if (g.tokenStats instanceof Float32Array) return g.tokenStats;
  const s = (guard as GuardScorer & { tokenStats?: Float32Array }).tokenStats;
  if (s instanceof Float32Array) return s;
  throw new DeepGuardError("ERR_ARGUMENT", "Generator: the guard has no token statistics");
}

/** One sample in flight. */
class Sample {
  id = -1;
  stream: RequestStream | null = null;
  /** The tokens of its current request (fed before its generated ones). */
  input: Int32Array = new Int32Array(0);
  fedOfRequest = 0;
  readonly generated: number[] = [];
  logprob = 0;
  /** Token ids and hidden rows (per guard layer) fed since the last re-score. */
  pendIds: number[] = [];
  pendRows: Float32Array[][];
  /** Every id fed (for "reforward"). */
  readonly allFed: number[] = [];
  sum = 0;
  count = 0;
  score = NaN;
  readonly scores: number[] = [];
  bias: Float32Array | null = null;
  done = false;
  finishReason: FinishReason = "maxTokens";
  error: DeepGuardError | null = null;
  readonly text: TextStream | null;
  out = "";
  readonly pieces: GuidedPiece[] = [];
  candidates?: { intervals: number; changed: number };
  /** Candidate mode: the sample this continuation belongs to, its place, and the parent's tokens before it. */
  parent: Sample | null = null;
  slot = 0;
  offset = 0;

  constructor(
    readonly index: number,
    readonly seed: number,
    public session: ModelSession,
    layers: number,
    text: TextStream | null,
  ) {
    this.pendRows = Array.from({ length: layers }, () => []);
    this.text = text;
  }
}

/** One call of stream() / complete(): n samples of a prompt. */
class GuidedRun {
  readonly #gen: Generator;
  readonly #scorer: GuardScorer;
  readonly #prompt: Int32Array;
  readonly #opts: RunOptions;
  readonly #ctx: ReturnType<Model["generationContext"]>;
  /** Hidden-state indices to capture (ascending) and, per guard layer, its place among them. */
  readonly #capture: number[];
  readonly #slot: number[];
  readonly #samples: Sample[] = [];
  /** Every request in flight by id (samples, or candidates in candidate mode). */
  readonly #byId = new Map<number, Sample>();
  #roundLeft = 0;
  #roundDone: (() => void) | null = null;
  readonly #extraSessions: ModelSession[] = [];
  #due: Sample[] = [];
  #flushQueued = false;
  #wake: (() => void) | null = null;
  #failed: DeepGuardError | null = null;
  #closed = false;
  readonly #t0 = performance.now();
  #firstTokenMs = NaN;
  #rescoreMs = 0;
  #rescores = 0;
  #rescoreCalls = 0;
  readonly #onAbort = () => this.#cancelAll();

  constructor(gen: Generator, scorer: GuardScorer, prompt: Int32Array, opts: RunOptions) {
    this.#gen = gen;
    this.#scorer = scorer;
    this.#prompt = prompt;
    this.#opts = opts;
    this.#ctx = gen.model.generationContext();
    this.#capture = gen.rescore === "captured" ? [...new Set(gen.guard.layers)].sort((a, b) => a - b) : [];
    this.#slot = gen.guard.layers.map((l) => this.#capture.indexOf(l));
  }

  /** Pieces of sample 0 as they come (stream()); complete() just drains them. */
  async *pieces(): AsyncGenerator<GuidedPiece> {
    const { signal } = this.#opts;
    if (signal?.aborted) throw abortError(signal, "guided generation");
    signal?.addEventListener("abort", this.#onAbort, { once: true });
    await this.#start();
    const first = this.#samples[0];
    for (;;) {
      if (this.#failed) throw this.#failed;
      // The scheduler runs ahead of a slow consumer: nothing more once aborted.
      if (signal?.aborted) throw abortError(signal, "guided generation");
      const piece = first.pieces.shift();
      if (piece) {
        yield piece;
        continue;
      }
      if (this.#samples.every((s) => s.done)) break;
      await new Promise<void>((r) => (this.#wake = r));
    }
    if (this.#failed) throw this.#failed;
    const failed = this.#samples.find((s) => s.error);
    if (failed) throw failed.error!;
    const rest = first.text?.flush() ?? "";
    if (rest) {
      first.out += rest;
      yield { text: rest, tokens: [], score: first.score };
    }
  }

  async result(): Promise<GuidedResult> {
    for (const s of this.#samples.slice(1)) s.out += s.text?.flush() ?? "";
    const total = performance.now() - this.#t0;
    // Final scores over every token fed since the last re-score (one batched call).
    if (this.#opts.finalScore) {
      await this.#rescoreBatch(this.#samples.filter((s) => s.pendIds.length > 0 || (this.#gen.rescore === "reforward" && this.#gen.candidates === 1)));
    }
    return {
      samples: this.#samples.map((s) => ({
        text: s.out,
        tokens: s.generated,
        scores: s.scores,
        score: s.score,
        finishReason: s.finishReason,
        seed: s.seed,
        ...(s.candidates ? { candidates: s.candidates } : {}),
      })),
      timings: {
        firstTokenMs: this.#firstTokenMs,
        totalMs: total,
        rescoreMs: this.#rescoreMs,
        rescores: this.#rescores,
        rescoreCalls: this.#rescoreCalls,
        generatedTokens: this.#samples.reduce((a, s) => a + s.generated.length, 0),
      },
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#opts.signal?.removeEventListener("abort", this.#onAbort);
    this.#cancelAll();
    for (const s of this.#samples) s.session.dispose();
    for (const s of this.#byId.values()) s.session.dispose();
    for (const s of this.#extraSessions) s.dispose();
  }

  #cancelAll(): void {
    for (const s of this.#byId.values()) if (!s.done) this.#ctx.scheduler.cancel(s.id);
  }

  #fail(err: unknown): void {
    if (!this.#failed) this.#failed = err instanceof DeepGuardError ? err : new DeepGuardError("ERR_NATIVE", String(err), { cause: err });
    this.#cancelAll();
    this.#wakeUp();
  }

  #wakeUp(): void {
    this.#wake?.();
    this.#wake = null;
  }

  /** Prefills the prompt once and submits the n samples as one batch. */
  async #start(): Promise<void> {
    const { n } = this.#opts;
    const model = this.#gen.model;
    const layers = this.#gen.guard.layers.length;
    const context = Array.from(this.#prompt.subarray(-TEXT_CONTEXT));
    for (let i = 0; i < n; i++) {
      const text = this.#ctx.tokenizer ? new TextStream(this.#ctx.tokenizer, context) : null;
      this.#samples.push(new Sample(i, this.#opts.seed + i, model.createSession(), layers, text));
    }
    let input = this.#prompt;
    if (n > 1 || this.#gen.candidates > 1) {
      // Shared prefill: all but the last 1-4 prompt tokens once (a multiple of 4
      // rows, the attention kernel's grouping), then n copies of its KV cache.
      const shared = Math.floor((this.#prompt.length - 1) / 4) * 4;
      if (shared > 0) {
        const base = model.createSession();
        this.#extraSessions.push(base);
        const r = await base.eval(this.#prompt.subarray(0, shared), {
          logits: "none",
          hiddenStates: this.#capture,
          signal: this.#opts.signal,
        });
        if (this.#gen.rescore === "captured") {
          const hidden = this.#gen.guard.layers.map((l) => r.hiddenStates.get(l)!.data);
          const t = performance.now();
          const [s] = await this.#scorer.scoreHidden([{ ids: this.#prompt.slice(0, shared), hidden }]);
          this.#rescoreMs += performance.now() - t;
          this.#rescoreCalls++;
          let sum = 0;
          for (const v of s.tokens) sum += v;
          for (const smp of this.#samples) {
            smp.sum = sum;
            smp.count = shared;
          }
        }
        for (const smp of this.#samples) {
          smp.session.native.copyFrom(base.native);
          for (let i = 0; i < shared; i++) smp.allFed.push(this.#prompt[i]);
        }
        base.dispose();
        input = this.#prompt.subarray(shared);
      }
    }
    if (this.#opts.signal?.aborted) throw abortError(this.#opts.signal, "guided generation");
    if (this.#gen.candidates > 1) void this.#candidateRounds(input).catch((err) => this.#fail(err));
    else this.#submit(this.#samples, input);
  }

  /**
   * Candidate mode: every interval, each sample forks `c` continuations of k
   * tokens from its KV cache; all samples' candidates decode as one batch,
   * are scored in one call, and the most secure (ties: the most likely) is
   * kept, its KV cache becoming the sample's.
   */
  async #candidateRounds(firstInput: Int32Array): Promise<void> {
    const gen = this.#gen;
    const c = gen.candidates;
    const o = this.#opts;
    const inputs = new Map(this.#samples.map((s) => [s, firstInput]));
    for (let round = 0; ; round++) {
      const active = this.#samples.filter((s) => !s.done);
      if (active.length === 0 || this.#failed) return;
      if (o.signal?.aborted) throw abortError(o.signal, "guided generation");
      const cands: Sample[] = [];
      for (const p of active) {
        for (let j = 0; j < c; j++) {
          const cs = new Sample(p.index, (p.seed + 7919 * (round * c + j)) % 2 ** 32, gen.model.createSession(), gen.guard.layers.length, null);
          cs.session.native.copyFrom(p.session.native);
          cs.parent = p;
          cs.slot = j;
          cs.offset = p.generated.length;
          cs.sum = p.sum;
          cs.count = p.count;
          cs.score = p.score;
          cands.push(cs);
        }
      }
      const done = new Promise<void>((r) => (this.#roundDone = r));
      this.#roundLeft = cands.length;
      const guided = gen.strength > 0;
      const requests = cands.map((cs) => {
        const head = guided ? Math.max(0, 3 - cs.offset) : cs.offset === 0 ? 1 : 0;
        return this.#request(cs, inputs.get(cs.parent!)!, {
          maxTokens: Math.min(gen.interval, o.maxTokens - cs.offset),
          logitBias: guided && cs.offset > 0 ? gen.biasFor(cs.parent!.score, cs.offset < 2) : null,
          stepwise: head > 0,
          pauseEvery: 0,
          pauseHead: head,
          logprobs: true,
          keepSession: true,
        });
      });
      this.#admit(cands, requests);
      await done;
      if (this.#failed) return;
      await this.#rescoreBatch(cands);
      for (const p of active) {
        const group = cands.filter((x) => x.parent === p);
        let best = group[0];
        for (const x of group.slice(1)) {
          if (x.score > best.score + 1e-9 || (Math.abs(x.score - best.score) <= 1e-9 && x.logprob > best.logprob)) best = x;
        }
        p.candidates ??= { intervals: 0, changed: 0 };
        p.candidates.intervals++;
        if (best.slot !== 0) p.candidates.changed++;
        for (const token of best.generated) this.#emit(p, token, best.score);
        p.sum = best.sum;
        p.count = best.count;
        p.score = best.score;
        p.scores.push(best.score);
        p.logprob += best.logprob;
        p.allFed.push(...best.allFed);
        p.session.dispose();
        p.session = best.session;
        for (const x of group) {
          this.#byId.delete(x.id);
          if (x !== best) x.session.dispose();
        }
        if (best.finishReason === "eos" || p.generated.length >= o.maxTokens) {
          p.done = true;
          p.finishReason = best.finishReason;
        } else {
          inputs.set(p, Int32Array.of(p.generated[p.generated.length - 1]));
        }
      }
      this.#wakeUp();
    }
  }

  #request(s: Sample, input: Int32Array, extra: Partial<NativeServeRequest>): NativeServeRequest {
    const o = this.#opts;
    s.input = input;
    s.fedOfRequest = 0;
    return {
      kind: "generate",
      session: s.session.native,
      tokens: input,
      capture: this.#capture,
      temperature: o.temperature,
      topK: o.topK,
      topP: o.topP,
      seed: s.seed,
      maxTokens: o.maxTokens,
      stopIds: o.stopOnEos ? [...this.#ctx.eosTokenIds] : [],
      logitBias: null,
      ...extra,
    };
  }

  /** Admits the requests atomically (they start in the same scheduler iteration). */
  #admit(samples: Sample[], requests: NativeServeRequest[]): void {
    const ids = this.#ctx.scheduler.submitAll(requests, (ev) => this.#onEvent(ev));
    ids.forEach((id, i) => {
      samples[i].id = id;
      this.#byId.set(id, samples[i]);
    });
  }

  #submit(samples: Sample[], input: Int32Array): void {
    const k = this.#gen.interval;
    const requests = samples.map((s) =>
      this.#request(s, input, {
        stepwise: true,
        // Pause where the bias may change: tokens 0, 1, 2 (the head push) and every interval.
        pauseEvery: k === Infinity ? 0 : k,
        pauseHead: this.#gen.strength > 0 ? 3 : 1,
      }),
    );
    this.#admit(samples, requests);
  }

  /** A generated token of a sample: its text, and a piece for stream(). */
  #emit(s: Sample, token: number, score: number): void {
    if (Number.isNaN(this.#firstTokenMs)) this.#firstTokenMs = performance.now() - this.#t0;
    s.generated.push(token);
    const text = s.text ? s.text.push(token) : "";
    s.out += text;
    if (s.index === 0 && s.parent === null) s.pieces.push({ text, tokens: [token], score });
  }

  #onEvent(ev: NativeServeEvent): void {
    const s = this.#byId.get(ev.id);
    if (!s || s.done) return;
    try {
      if (ev.code !== undefined) {
        s.done = true;
        s.error = Scheduler.errorOf(ev, this.#opts.signal, "guided generation");
        this.#fail(s.error);
        return;
      }
      if (s.parent) s.generated.push(...ev.tokens);
      else for (const token of ev.tokens) this.#emit(s, token, s.score);
      if (ev.logprobs) for (const lp of ev.logprobs) s.logprob += lp;
      // Rows of the tokens fed this iteration: a token sampled after a pause is fed in
      // the same iteration, so the sampled tokens are recorded first.
      if (ev.fed > 0) {
        const d = this.#ctx.hiddenSize;
        const block = ev.fed * d;
        for (let i = 0; i < ev.fed; i++, s.fedOfRequest++) {
          const id = s.fedOfRequest < s.input.length ? s.input[s.fedOfRequest] : s.generated[s.fedOfRequest - s.input.length];
          s.pendIds.push(id);
          s.allFed.push(id);
        }
        if (this.#capture.length > 0) {
          this.#slot.forEach((c, l) => s.pendRows[l].push(ev.hidden.subarray(c * block, (c + 1) * block)));
        }
      }
      if (ev.done) {
        s.done = true;
        s.finishReason = ev.finishReason ?? "maxTokens";
        if (s.parent && --this.#roundLeft === 0) this.#roundDone?.();
      } else if (ev.awaiting) {
        this.#due.push(s);
        if (!this.#flushQueued) {
          this.#flushQueued = true;
          queueMicrotask(() => void this.#flush());
        }
      }
    } catch (err) {
      this.#fail(err);
    }
    this.#wakeUp();
  }

  /** Re-scores every sequence waiting now in one call, then resumes each with its bias. */
  async #flush(): Promise<void> {
    this.#flushQueued = false;
    const due = this.#due;
    this.#due = [];
    const gen = this.#gen;
    try {
      // Candidates are scored after their round; only the prompt is scored at a pause.
      const rescore = due.filter((s) => (s.parent ? s.offset === 0 && s.generated.length === 0 : s.generated.length % gen.interval === 0));
      await this.#rescoreBatch(rescore);
      for (const s of rescore) if (!s.parent) s.scores.push(s.score);
      for (const s of due) {
        if (s.done) continue;
        const g = s.offset + s.generated.length;
        let decision: Float32Array | undefined;
        if (gen.strength > 0 && (g <= 2 || rescore.includes(s))) decision = gen.biasFor(s.score, g < 2);
        this.#ctx.scheduler.resume(s.id, decision);
      }
    } catch (err) {
      this.#fail(err);
    }
  }

  /** Updates the score of each sample from the tokens fed since its last re-score: one native call for all. */
  async #rescoreBatch(samples: Sample[]): Promise<void> {
    if (samples.length === 0) return;
    const t = performance.now();
    if (this.#gen.rescore === "reforward") {
      // The reference way: a full forward pass over the whole sequence, then every token scored.
      for (const s of samples) {
        const ids = Int32Array.from(s.allFed);
        const fw = await this.#gen.model.forward(ids, { logits: "none", hiddenStates: [...this.#gen.guard.layers] });
        const [r] = await this.#scorer.scoreHidden([{ ids, hidden: this.#gen.guard.layers.map((l) => fw.hiddenStates.get(l)!.data) }]);
        s.score = r.sequence;
        s.pendIds = [];
        this.#rescoreCalls++;
      }
    } else {
      const items: HiddenBatchItem[] = [];
      const scored = samples.filter((s) => s.pendIds.length > 0);
      for (const s of scored) items.push({ ids: Int32Array.from(s.pendIds), hidden: s.pendRows.map(concat) });
      if (items.length > 0) {
        const out = await this.#scorer.scoreHidden(items);
        this.#rescoreCalls++;
        scored.forEach((s, i) => {
          for (const v of out[i].tokens) s.sum += v;
          s.count += out[i].tokens.length;
          s.score = s.sum / s.count;
          s.pendIds = [];
          s.pendRows = s.pendRows.map(() => []);
        });
      }
    }
    this.#rescores += samples.length;
    this.#rescoreMs += performance.now() - t;
  }
}

function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Guided completions for the evaluation harness (deepguard eval --guard): one
 * guided sample per request, every request of a batch in flight together (the
 * scheduler batches them). Stop strings are not applied; the harness cuts the
 * completion itself.
 */
export function guidedCompletionGenerator(gen: Generator, options: { name?: string } = {}): {
  readonly name: string;
  complete(requests: readonly { prompt: string; seed: number; maxTokens: number; temperature: number; topP: number; signal?: AbortSignal }[]): Promise<string[]>;
} {
  const m = gen.model;
  const adapter = m.adapter ? `+adapter:${m.adapter.directory}` : "";
  const k = gen.interval === Infinity ? "inf" : String(gen.interval);
  return {
    name: options.name ?? `model:${m.info.directory}${adapter}+guard(interval ${k}, strength ${gen.strength})`,
    async complete(requests) {
      return Promise.all(
        requests.map(async (r) => {
          const res = await gen.complete(r.prompt, { maxTokens: r.maxTokens, temperature: r.temperature, topP: r.topP, seed: r.seed, signal: r.signal, finalScore: false });
          return res.samples[0].text;
        }),
      );
    },
  };
}
