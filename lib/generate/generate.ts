/**
 * Streaming text generation over a ModelSession: sampling (greedy, temperature,
 * top-k, top-p, seeded), stop strings, EOS, max tokens and AbortSignal.
 */
import { z } from "zod";
import { abortError, DeepGuardError, throwIfAborted } from "../errors.js";
import { parseOptions, signalSchema } from "../validate.js";
import { resolveHiddenStates, type ModelSession } from "../model/session.js";
import { Matrix } from "../model/tensor.js";
import type { Tokenizer } from "../model/tokenizer.js";
import { stepHookSchema, type StepHook } from "../serve/hook.js";
import { Scheduler } from "../serve/scheduler.js";

export interface SamplingOptions {
  /** 0 (default) = greedy. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 (default) = off. */
  topK?: number;
  /** Nucleus sampling mass; 1 (default) = off. */
  topP?: number;
  /** Seed of the sampler's random stream; random when omitted (reported in the result). */
  seed?: number;
}

export interface GenerateOptions extends SamplingOptions {
  /** Maximum number of new tokens (default 256). */
  maxTokens?: number;
  /** Stop when the text contains one of these; the stop string is not returned. */
  stopStrings?: string[];
  /** Stop at the model's end-of-sequence token (default true). */
  stopOnEos?: boolean;
  signal?: AbortSignal;
  /** The per-step hook: captured hidden states, a logit bias, a callback before each sample (lib/serve/hook.ts). */
  hook?: StepHook;
}

export interface GenerationChunk {
  /** Newly visible text (may be empty while a multi-byte character or a possible stop string is pending). */
  text: string;
  /** Tokens sampled for this chunk: one per step; none for the final flush of held-back text. */
  tokens: number[];
}

export type FinishReason = "maxTokens" | "eos" | "stopString";

export interface GenerationResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  seed: number;
}

const generateOptionsSchema = z
  .object({
    temperature: z.number().finite().nonnegative().default(0),
    topK: z.number().int().nonnegative().default(0),
    topP: z.number().gt(0).lte(1).default(1),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    maxTokens: z.number().int().positive().max(1_000_000).default(256),
    stopStrings: z.array(z.string().min(1)).default([]),
    stopOnEos: z.boolean().default(true),
    signal: signalSchema,
    hook: stepHookSchema.optional(),
  })
  .strict();

export type ResolvedGenerateOptions = z.output<typeof generateOptionsSchema> & {
  seed: number;
  /** maxTokens was left to its default (it may then be lowered to fit the context). */
  defaultMaxTokens: boolean;
};

export function resolveGenerateOptions(options: GenerateOptions | undefined): ResolvedGenerateOptions {
  const parsed = parseOptions(generateOptionsSchema, options, "generate");
  const defaultMaxTokens = (options as GenerateOptions | undefined)?.maxTokens === undefined;
  return { ...parsed, seed: parsed.seed ?? Math.floor(Math.random() * 2 ** 32), defaultMaxTokens };
}

/**
 * Incremental detokenization: decodes from a moving prefix so that tokenizers
 * whose decoders depend on context (leading spaces, byte fallback) stream the
 * same text as one final decode, and never emits half a UTF-8 character.
 */
export class TextStream {
  #ids: number[];
  #prefix = 0;
  #read: number;

  /**
   * `context`: the last few prompt tokens. Decoding starts in their company, so
   * decoders that drop a sequence's leading space (SentencePiece "▁") keep the
   * space before the first generated word; their own text is never emitted.
   */
  constructor(
    private readonly tokenizer: Tokenizer,
    context: number[] = [],
  ) {
    this.#ids = [...context];
    this.#read = context.length;
  }

  push(id: number): string {
    this.#ids.push(id);
    const before = this.tokenizer.decode(this.#ids.slice(this.#prefix, this.#read));
    const after = this.tokenizer.decode(this.#ids.slice(this.#prefix));
    if (after.length > before.length && !after.endsWith("\uFFFD")) {
      this.#prefix = this.#read;
      this.#read = this.#ids.length;
      return after.slice(before.length);
    }
    return "";
  }

  /** Whatever is still held back (e.g. an incomplete character at the end). */
  flush(): string {
    const before = this.tokenizer.decode(this.#ids.slice(this.#prefix, this.#read));
    const after = this.tokenizer.decode(this.#ids.slice(this.#prefix));
    this.#prefix = this.#read = this.#ids.length;
    return after.slice(before.length);
  }
}

/** Holds back text that may be the start of a stop string. */
class StopMatcher {
  #pending = "";
  constructor(private readonly stops: string[]) {}

  /** Returns [text safe to emit, stopped?]. */
  push(text: string): [string, boolean] {
    this.#pending += text;
    let cut = -1;
    for (const s of this.stops) {
      const at = this.#pending.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const out = this.#pending.slice(0, cut);
      this.#pending = "";
      return [out, true];
    }
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.#pending.length); n > keep; n--) {
        if (this.#pending.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    const out = this.#pending.slice(0, this.#pending.length - keep);
    this.#pending = this.#pending.slice(this.#pending.length - keep);
    return [out, false];
  }

  flush(): string {
    const out = this.#pending;
    this.#pending = "";
    return out;
  }
}

/** Prompt tokens the text stream decodes along with the generated ones (see TextStream). */
const TEXT_CONTEXT = 4;

/** What generateTokens needs of the model. */
export interface GenerationContext {
  scheduler: Scheduler;
  tokenizer: Tokenizer | null;
  eosTokenIds: ReadonlySet<number>;
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
}

/**
 * Runs `prompt` through the model's scheduler on `session` (which the
 * generation owns: its KV cache is freed when it ends) and yields text as it
 * becomes final. Prefill, decoding and sampling all happen natively; stop
 * strings and text are handled here. Returns the full result.
 */
export async function* generateTokens(
  ctx: GenerationContext,
  session: ModelSession,
  prompt: Int32Array,
  opts: ResolvedGenerateOptions,
): AsyncGenerator<GenerationChunk, GenerationResult> {
  const { signal, hook } = opts;
  const { tokenizer } = ctx;
  throwIfAborted(signal, "generate");
  const capture = resolveHiddenStates(hook?.hiddenStates, ctx.numLayers);
  if (hook?.logitBias && hook.logitBias.length !== ctx.vocabSize) {
    throw new DeepGuardError("ERR_ARGUMENT", `generate option "hook.logitBias": needs ${ctx.vocabSize} entries (the vocabulary), got ${hook.logitBias.length}`);
  }
  const text = tokenizer ? new TextStream(tokenizer, Array.from(prompt.subarray(-TEXT_CONTEXT))) : null;
  const stops = new StopMatcher(opts.stopStrings);
  const tokens: number[] = [];
  let out = "";
  let finishReason: FinishReason = "maxTokens";

  const { id, stream } = ctx.scheduler.generate({
    kind: "generate",
    session: session.native,
    tokens: prompt,
    capture,
    temperature: opts.temperature,
    topK: opts.topK,
    topP: opts.topP,
    seed: opts.seed,
    maxTokens: opts.maxTokens,
    stopIds: opts.stopOnEos ? [...ctx.eosTokenIds] : [],
    logitBias: hook?.logitBias ?? null,
    stepwise: hook?.onStep !== undefined,
  });
  const onAbort = () => ctx.scheduler.cancel(id);
  signal?.addEventListener("abort", onAbort, { once: true });
  // Stepwise hook state: tokens fed and hidden rows gathered since the last onStep.
  const fedIds: number[] = [];
  let fedTotal = 0;
  let hiddenChunks: Float32Array[][] = capture.map(() => []);
  let step = 0;
  try {
    for (;;) {
      const ev = await stream.next();
      if (ev.code !== undefined) throw Scheduler.errorOf(ev, signal, "generate");
      // The scheduler runs ahead of a slow consumer: an abort also stops the
      // tokens it has already produced, once the request has been dropped.
      if (signal?.aborted) {
        ctx.scheduler.cancel(id);
        let last = ev;
        while (!stream.done) last = await stream.next();
        throw last.code ? Scheduler.errorOf(last, signal, "generate") : abortError(signal, "generate");
      }
      for (const token of ev.tokens) {
        tokens.push(token);
        const [visible, stopped] = text ? stops.push(text.push(token)) : ["", false];
        out += visible;
        yield { text: visible, tokens: [token] };
        if (stopped) {
          finishReason = "stopString";
          return { text: out, tokens, finishReason, seed: opts.seed };
        }
      }
      if (hook?.onStep && ev.fed > 0) {
        for (let i = 0; i < ev.fed; i++, fedTotal++) fedIds.push(fedTotal < prompt.length ? prompt[fedTotal] : tokens[fedTotal - prompt.length]);
        const block = ev.fed * ctx.hiddenSize;
        capture.forEach((_, c) => hiddenChunks[c].push(ev.hidden.subarray(c * block, (c + 1) * block)));
      }
      if (ev.awaiting && hook?.onStep) {
        const hiddenStates = new Map<number, Matrix>();
        capture.forEach((layer, c) => {
          const rows = concat(hiddenChunks[c]);
          hiddenStates.set(layer, new Matrix(rows, rows.length / ctx.hiddenSize, ctx.hiddenSize));
        });
        const state = { step: step++, fed: Int32Array.from(fedIds), hiddenStates, generated: [...tokens] };
        fedIds.length = 0;
        hiddenChunks = capture.map(() => []);
        const decision = await hook.onStep(state);
        if (decision !== undefined && decision !== null && !(decision instanceof Float32Array && decision.length === ctx.vocabSize)) {
          throw new DeepGuardError("ERR_ARGUMENT", `hook.onStep must return a Float32Array of ${ctx.vocabSize} entries, null or undefined`);
        }
        ctx.scheduler.resume(id, decision);
      }
      if (ev.done) {
        finishReason = ev.finishReason ?? "maxTokens";
        break;
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (!stream.done) ctx.scheduler.cancel(id); // a consumer that stopped early, a stop string, an error
  }
  const [visible, stopped] = stops.push(text ? text.flush() : "");
  const rest = visible + (stopped ? "" : stops.flush());
  if (stopped) finishReason = "stopString";
  if (rest) {
    out += rest;
    yield { text: rest, tokens: [] };
  }
  return { text: out, tokens, finishReason, seed: opts.seed };
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
