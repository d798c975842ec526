/**
 * Streaming text generation over a ModelSession: sampling (greedy, temperature,
 * top-k, top-p, seeded), stop strings, EOS, max tokens and AbortSignal.
 */
import { z } from "zod";
import { native } from "../native.js";
import { parseOptions, signalSchema } from "../validate.js";
import { Random } from "../random.js";
import type { EvalResult, ModelSession } from "../model/session.js";
import type { Tokenizer } from "../model/tokenizer.js";

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
  })
  .strict();

export type ResolvedGenerateOptions = z.output<typeof generateOptionsSchema> & { seed: number };

export function resolveGenerateOptions(options: GenerateOptions | undefined): ResolvedGenerateOptions {
  const parsed = parseOptions(generateOptionsSchema, options, "generate");
  return { ...parsed, seed: parsed.seed ?? Math.floor(Math.random() * 2 ** 32) };
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

const PREFILL_CHUNK = 512;
/** Prompt tokens the text stream decodes along with the generated ones (see TextStream). */
const TEXT_CONTEXT = 4;

/**
 * Prefills `prompt` into `session` and samples up to maxTokens new tokens,
 * yielding text as it becomes final. Returns the full result.
 */
export async function* generateTokens(
  session: ModelSession,
  prompt: Int32Array,
  tokenizer: Tokenizer | null,
  eosTokenIds: ReadonlySet<number>,
  opts: ResolvedGenerateOptions,
): AsyncGenerator<GenerationChunk, GenerationResult> {
  const { signal } = opts;
  const rng = new Random(opts.seed);
  const params = { temperature: opts.temperature, topK: opts.topK, topP: opts.topP };
  const text = tokenizer ? new TextStream(tokenizer, Array.from(prompt.subarray(-TEXT_CONTEXT))) : null;
  const stops = new StopMatcher(opts.stopStrings);
  const tokens: number[] = [];
  let out = "";
  let finishReason: FinishReason = "maxTokens";

  // Prefill in chunks so that an abort takes effect between them on long prompts.
  let step!: EvalResult;
  for (let i = 0; i < prompt.length; i += PREFILL_CHUNK) {
    const last = i + PREFILL_CHUNK >= prompt.length;
    step = await session.eval(prompt.subarray(i, i + PREFILL_CHUNK), { logits: last ? "last" : "none", signal });
  }
  while (tokens.length < opts.maxTokens) {
    signal?.throwIfAborted();
    const token = native().sampleToken(step.logits.row(0), params, rng.nextDouble());
    if (opts.stopOnEos && eosTokenIds.has(token)) {
      finishReason = "eos";
      break;
    }
    tokens.push(token);
    const [visible, stopped] = text ? stops.push(text.push(token)) : ["", false];
    out += visible;
    yield { text: visible, tokens: [token] };
    if (stopped) {
      finishReason = "stopString";
      break;
    }
    if (tokens.length < opts.maxTokens) step = await session.eval([token], { logits: "last", signal });
  }
  if (finishReason !== "stopString") {
    const [visible, stopped] = stops.push(text ? text.flush() : "");
    const rest = visible + (stopped ? "" : stops.flush());
    if (stopped) finishReason = "stopString";
    if (rest) {
      out += rest;
      yield { text: rest, tokens: [] };
    }
  }
  return { text: out, tokens, finishReason, seed: opts.seed };
}
