/**
 * The byte-level BPE conventions of GPT-2 and Qwen2 tokenizers: bytes as printable
 * symbols, the pre-tokenizer's split pattern, and the tokenizer.json /
 * tokenizer_config.json layout that Hugging Face tokenizers and this engine load.
 */

/** Qwen2's pre-tokenizer split pattern, as stored in tokenizer.json (Oniguruma syntax). */
export const SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** The same pattern for JavaScript (no inline case-insensitive group), to split a training corpus. */
export const SPLIT_REGEX =
  /'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to code points from 256 up. */
export function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const symbols: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) symbols[b] = String.fromCodePoint(printable(b) ? b : next++);
  return symbols;
}

/** The 256 byte symbols in GPT-2's base-vocabulary order (by code point: printable bytes first). */
export function baseVocabulary(): string[] {
  return byteSymbols().sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
}

const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };

export interface TokenizerFiles {
  tokenizerJson: object;
  tokenizerConfig: object;
  /** Tokens in all: learned vocabulary plus special tokens (ids after the learned ones). */
  vocabSize: number;
}

/**
 * tokenizer.json + tokenizer_config.json in Qwen2's layout for a learned vocabulary
 * (`tokens[id]`, byte symbols first) and its merges in rank order. `specialTokens`
 * get the ids after the vocabulary; the first is the end-of-text (eos) token and the
 * second, when given, the padding token (else padding uses eos).
 */
export function tokenizerFiles(
  tokens: readonly string[],
  merges: readonly string[],
  specialTokens: readonly string[],
  modelMaxLength: number,
): TokenizerFiles {
  if (specialTokens.length === 0) throw new Error("tokenizerFiles needs at least the end-of-text special token");
  const entry = (content: string) => ({ content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const specials = specialTokens.map((content, i) => ({ id: tokens.length + i, ...entry(content) }));
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "Split", pattern: { Regex: SPLIT_PATTERN }, behavior: "Isolated", invert: false }, byteLevel],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(tokens.map((token, id) => [token, id])),
      merges: [...merges],
    },
  };
  const tokenizerConfig = {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(specials.map(({ id, ...e }) => [String(id), e])),
    bos_token: null,
    clean_up_tokenization_spaces: false,
    eos_token: specialTokens[0],
    errors: "replace",
    model_max_length: modelMaxLength,
    pad_token: specialTokens[1] ?? specialTokens[0],
    split_special_tokens: false,
    tokenizer_class: "PreTrainedTokenizerFast",
    unk_token: null,
  };
  return { tokenizerJson, tokenizerConfig, vocabSize: tokens.length + specials.length };
}
