/**
 * A small but real Hugging Face byte-level BPE tokenizer, built from code the way
 * GPT-2 / Qwen2 tokenizers are: the 256 byte symbols, merges learned greedily
 * from a built-in code corpus, and `<|endoftext|>` as the one special token.
 * The files have the layout of Qwen2's tokenizer.json / tokenizer_config.json.
 */

export const EOS_TOKEN = "<|endoftext|>";

/** Qwen2's pre-tokenizer split pattern, as stored in tokenizer.json (Oniguruma syntax). */
const SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** The same pattern for JavaScript (no inline case-insensitive group), used to split the training corpus. */
const SPLIT_REGEX =
  /'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

const CORPUS = `
def get_user(conn, user_id):
    query = "SELECT * FROM users WHERE id = %s"
    cursor = conn.cursor()
    cursor.execute(query, (user_id,))
    return cursor.fetchone()

def run_command(args):
    import subprocess
    return subprocess.run(args, shell=False, check=True, capture_output=True)

def read_file(base_dir, name):
    path = os.path.realpath(os.path.join(base_dir, name))
    if not path.startswith(base_dir):
        raise ValueError("path escapes the base directory")
    with open(path, "r", encoding="utf-8") as f:
        return f.read()

class Session:
    def __init__(self, token, expires_at):
        self.token = token
        self.expires_at = expires_at

    def is_valid(self, now):
        return hmac.compare_digest(self.token, self.token) and now < self.expires_at

#include <stdio.h>
#include <string.h>
#include <stdlib.h>

int copy_name(char *dst, size_t dst_size, const char *src) {
    size_t len = strlen(src);
    if (len >= dst_size) {
        return -1;
    }
    memcpy(dst, src, len + 1);
    return 0;
}

static int parse_int(const char *text, int *out) {
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\\0' || value > INT_MAX || value < INT_MIN) {
        return -1;
    }
    *out = (int)value;
    return 0;
}

int main(int argc, char **argv) {
    char buffer[64];
    for (int i = 1; i < argc; i++) {
        if (copy_name(buffer, sizeof(buffer), argv[i]) != 0) {
            fprintf(stderr, "name too long: %s\\n", argv[i]);
            return 1;
        }
        printf("hello, %s!\\n", buffer);
    }
    return 0;
}
`;

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to code points from 256 up. */
function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const symbols: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) symbols[b] = String.fromCodePoint(printable(b) ? b : next++);
  return symbols;
}

/** GPT-2 orders the base vocabulary printable bytes first, then the remapped ones. */
function baseVocabulary(symbols: string[]): string[] {
  const codePoint = (s: string) => s.codePointAt(0)!;
  return [...symbols].sort((a, b) => codePoint(a) - codePoint(b));
}

/**
 * Greedy BPE training: repeatedly merge the most frequent adjacent pair (ties:
 * smallest pair text) until the vocabulary has `size` tokens. As in the HF
 * trainer, a merge whose result is already a token adds a merge but no token.
 */
function learnVocabulary(symbols: string[], size: number): { tokens: string[]; merges: string[] } {
  const encoder = new TextEncoder();
  const wordCounts = new Map<string, number>();
  for (const word of CORPUS.match(SPLIT_REGEX) ?? []) wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
  const words = [...wordCounts].map(([word, n]) => ({ parts: Array.from(encoder.encode(word), (b) => symbols[b]), n }));

  const tokens = baseVocabulary(symbols);
  const known = new Set(tokens);
  const merges: string[] = [];
  while (tokens.length < size) {
    const pairCounts = new Map<string, number>();
    for (const { parts, n } of words) {
      for (let i = 0; i + 1 < parts.length; i++) {
        const key = `${parts[i]} ${parts[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + n);
      }
    }
    let best: string | undefined;
    for (const [key, n] of pairCounts) {
      const bestCount = best === undefined ? 0 : pairCounts.get(best)!;
      if (n > bestCount || (n === bestCount && key < best!)) best = key;
    }
    if (best === undefined) {
      throw new Error(`the tokenizer corpus supports at most ${tokens.length + 1} tokens, asked for ${size + 1}`);
    }
    const [left, right] = best.split(" ") as [string, string];
    merges.push(best);
    if (!known.has(left + right)) {
      known.add(left + right);
      tokens.push(left + right);
    }
    for (const word of words) {
      const merged: string[] = [];
      for (let i = 0; i < word.parts.length; i++) {
        if (word.parts[i] === left && word.parts[i + 1] === right) {
          merged.push(left + right);
          i++;
        } else {
          merged.push(word.parts[i]);
        }
      }
      word.parts = merged;
    }
  }
  return { tokens, merges };
}

const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };

/** `vocabSize` counts the special token: ids are 256 bytes, then merges, then `<|endoftext|>` last. */
export function makeTokenizerFiles(
  vocabSize: number,
  modelMaxLength = 2048,
): { tokenizerJson: object; tokenizerConfig: object; vocabSize: number } {
  if (!Number.isInteger(vocabSize) || vocabSize < 257) {
    throw new Error(`tokenizer vocabSize must be an integer >= 257 (256 bytes + ${EOS_TOKEN}), got ${vocabSize}`);
  }
  const symbols = byteSymbols();
  const { tokens, merges } = learnVocabulary(symbols, vocabSize - 1);
  const vocab = Object.fromEntries(tokens.map((token, id) => [token, id]));
  const eosId = tokens.length;
  const eosEntry = {
    content: EOS_TOKEN,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };

  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: eosId, ...eosEntry }],
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: SPLIT_PATTERN }, behavior: "Isolated", invert: false },
        byteLevel,
      ],
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
      vocab,
      merges,
    },
  };
  const tokenizerConfig = {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: { [eosId]: eosEntry },
    bos_token: null,
    clean_up_tokenization_spaces: false,
    eos_token: EOS_TOKEN,
    errors: "replace",
    model_max_length: modelMaxLength,
    pad_token: EOS_TOKEN,
    split_special_tokens: false,
    tokenizer_class: "PreTrainedTokenizerFast",
    unk_token: null,
  };
  return { tokenizerJson, tokenizerConfig, vocabSize: eosId + 1 };
}
