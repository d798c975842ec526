/**
 * Where completions come from. `evaluate` takes any CompletionGenerator; the
 * default one samples from a Model through its public API (`model.complete`, one
 * seeded call per sample, the calls of a batch in flight together so that the
 * engine's async workers overlap them).
 */
import type { Model } from "../model/model.js";

export interface CompletionRequest {
  prompt: string;
  seed: number;
  maxTokens: number;
  temperature: number;
  topP: number;
  /** Text at which generation may stop early (the cut happens later anyway). */
  stopStrings: string[];
  signal?: AbortSignal;
}

export interface CompletionGenerator {
  /** Shown in reports ("model:<dir>", "model:<dir>+adapter:<dir>", ...). */
  readonly name: string;
  /** One completion per request, in order. */
  complete(requests: readonly CompletionRequest[]): Promise<string[]>;
}

export function modelGenerator(model: Model, options: { name?: string } = {}): CompletionGenerator {
  const adapter = model.adapter ? `+adapter:${model.adapter.directory}` : "";
  return {
    name: options.name ?? `model:${model.info.directory}${adapter}`,
    async complete(requests) {
      return Promise.all(
        requests.map(async (r) => {
          const res = await model.complete(r.prompt, {
            maxTokens: r.maxTokens,
            temperature: r.temperature,
            topP: r.topP,
            seed: r.seed,
            stopStrings: r.stopStrings.length ? r.stopStrings : undefined,
            signal: r.signal,
          });
          return res.text;
        }),
      );
    },
  };
}
