/**
 * Text <-> token ids through the checkpoint's own tokenizer.json and
 * tokenizer_config.json, using @huggingface/tokenizers (pure JS, offline).
 */
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { DeepGuardError } from "../errors.js";
import { readJsonFile } from "../validate.js";
import { tokenSpans, type TokenSpans } from "./token-offsets.js";

export interface EncodeOptions {
  /** Add the tokenizer's special tokens (e.g. BOS), as HF `tokenizer(text)` does. Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens such as <|endoftext|> from the text. Default false. */
  skipSpecialTokens?: boolean;
}

export class Tokenizer {
  readonly #hf: HfTokenizer;
  #added: Map<number, { content: string }> | undefined;
  /** Id of the tokenizer's eos_token, when tokenizer_config.json names one in the vocabulary. */
  readonly eosTokenId: number | null;

  private constructor(hf: HfTokenizer, eosToken: string | null) {
    this.#hf = hf;
    this.eosTokenId = eosToken === null ? null : (hf.token_to_id(eosToken) ?? null);
  }

  /** Loads dir/tokenizer.json (+ tokenizer_config.json if present); null when there is no tokenizer.json. */
  static async fromDirectory(dir: string): Promise<Tokenizer | null> {
    const tokenizerPath = join(dir, "tokenizer.json");
    const configPath = join(dir, "tokenizer_config.json");
    const json = await readJsonFile(tokenizerPath, "ERR_TOKENIZER", true);
    if (json === undefined) return null;
    const config = (await readJsonFile(configPath, "ERR_TOKENIZER", true)) ?? {};
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new DeepGuardError("ERR_TOKENIZER", `${tokenizerPath} must hold a JSON object`);
    }
    if (typeof config !== "object" || config === null || Array.isArray(config)) {
      throw new DeepGuardError("ERR_TOKENIZER", `${configPath} must hold a JSON object`);
    }
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (err) {
      throw new DeepGuardError("ERR_TOKENIZER", `${tokenizerPath} could not be loaded: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const eos = (config as Record<string, unknown>).eos_token;
    const eosToken = typeof eos === "string" ? eos : isContent(eos) ? eos.content : null;
    return new Tokenizer(hf, eosToken);
  }

  /** One more than the largest token id, added tokens included. */
  get vocabSize(): number {
    let max = -1;
    for (const id of this.#hf.get_vocab(true).values()) if (id > max) max = id;
    return max + 1;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== "string") throw new DeepGuardError("ERR_ARGUMENT", "encode() needs a string");
    return this.#hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    if (ids === null || typeof ids !== "object" || !Number.isSafeInteger(ids.length) || ids.length < 0) {
      throw new DeepGuardError("ERR_ARGUMENT", "decode() needs an array of token ids");
    }
    const list = Array.from(ids);
    const bad = list.findIndex((id) => !Number.isInteger(id) || id < 0);
    if (bad >= 0) throw new DeepGuardError("ERR_TOKEN_ID", `decode(): ids[${bad}] is not a token id`);
    if (list.length === 0) return ""; // @huggingface/tokenizers throws on an empty list
    try {
      return this.#hf.decode(list, { skip_special_tokens: options?.skipSpecialTokens ?? false });
    } catch (err) {
      throw new DeepGuardError("ERR_TOKENIZER", `decode() failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Each token's span in `text` (UTF-16 units) for ids that encode `text`, e.g.
   * encode(text, { addSpecialTokens: false }); null when the ids do not reproduce
   * the text. The tokenizer library has no offsets: see token-offsets.ts.
   */
  spans(text: string, ids: ArrayLike<number>): TokenSpans | null {
    const hf = this.#hf;
    const added = (this.#added ??= hf.get_added_tokens_decoder());
    return tokenSpans(
      {
        idToToken: (id) => hf.id_to_token(id),
        addedTokenContent: (id) => added.get(id)?.content,
        decode: (ids) => this.decode(ids),
      },
      text,
      ids,
    );
  }
}

function isContent(v: unknown): v is { content: string } {
  return typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string";
}
