/**
 * A small but real Hugging Face byte-level BPE tokenizer, built from code the way
 * GPT-2 / Qwen2 tokenizers are: the 256 byte symbols, merges learned greedily
 * from a built-in code corpus, and `<|endoftext|>` as the one special token.
 * The files have the layout of Qwen2's tokenizer.json / tokenizer_config.json.
 * `naiveBpe` (a full recount per merge) is also the reference that the SDK's
 * incremental trainer (lib/tokenizer/bpe-trainer.ts) is tested against.
 */
import { baseVocabulary, byteSymbols, SPLIT_REGEX, tokenizerFiles, type TokenizerFiles } from "../../lib/tokenizer/byte-level.js";

export const EOS_TOKEN = "<|endoftext|>";

export const CORPUS = `
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

/**
 * Greedy BPE training: repeatedly merge the most frequent adjacent pair (ties:
 * smallest pair text) until the vocabulary has `size` tokens. As in the HF
 * trainer, a merge whose result is already a token adds a merge but no token.
 */
export function naiveBpe(corpus: string, size: number): { tokens: string[]; merges: string[] } {
  const symbols = byteSymbols();
  const encoder = new TextEncoder();
  const wordCounts = new Map<string, number>();
  for (const word of corpus.match(SPLIT_REGEX) ?? []) wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
  const words = [...wordCounts].map(([word, n]) => ({ parts: Array.from(encoder.encode(word), (b) => symbols[b]), n }));

  const tokens = baseVocabulary();
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

/** `vocabSize` counts the special token: ids are 256 bytes, then merges, then `<|endoftext|>` last. */
export function makeTokenizerFiles(vocabSize: number, modelMaxLength = 2048): TokenizerFiles {
  if (!Number.isInteger(vocabSize) || vocabSize < 257) {
    throw new Error(`tokenizer vocabSize must be an integer >= 257 (256 bytes + ${EOS_TOKEN}), got ${vocabSize}`);
  }
  const { tokens, merges } = naiveBpe(CORPUS, vocabSize - 1);
  return tokenizerFiles(tokens, merges, [EOS_TOKEN], modelMaxLength);
}
