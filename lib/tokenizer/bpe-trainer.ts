/**
 * Byte-level BPE training (GPT-2 / Qwen2 style) over word counts.
 *
 * The corpus is split with Qwen2's pre-tokenizer pattern into words; each word is
 * its UTF-8 bytes as byte symbols. Training repeatedly merges the adjacent pair
 * with the highest count (ties: the smaller "left right" text), as Hugging Face's
 * BpeTrainer does; a merge whose result already is a token adds a merge but no
 * token. Pair counts are updated incrementally: a merge only revisits the words
 * that contain its pair, and a max-heap with lazy deletion finds the next pair, so
 * the cost follows the corpus's unique words rather than its size.
 */
import { baseVocabulary, byteSymbols, SPLIT_REGEX } from "./byte-level.js";

/** Counts pre-tokenized words over any number of texts. */
export class WordCounter {
  readonly counts = new Map<string, number>();
  /** Words seen, with repeats. */
  total = 0;

  add(text: string): void {
    for (const m of text.matchAll(SPLIT_REGEX)) {
      const w = m[0];
      this.counts.set(w, (this.counts.get(w) ?? 0) + 1);
      this.total++;
    }
  }
}

export interface BpeOptions {
  /** Tokens to learn in all, the 256 byte symbols included (special tokens come on top). */
  vocabSize: number;
  /** Pairs seen fewer times are never merged; training stops early when none is left (default 2). */
  minFrequency?: number;
  /** Called every `progressEvery` merges with merges done and the target. */
  onProgress?: (done: number, target: number) => void;
  progressEvery?: number;
}

export interface BpeResult {
  /** tokens[id]: the byte symbols first, then learned tokens in creation order. */
  tokens: string[];
  /** "left right" in rank order. */
  merges: string[];
  /** True when training ran out of pairs at minFrequency before reaching vocabSize. */
  stoppedEarly: boolean;
}

const PAIR_BASE = 1 << 21; // token ids stay below 2^21, so a pair key a * 2^21 + b is an exact double

interface HeapEntry {
  count: number;
  key: number;
  text: string;
}

/** Max-heap on count, then smaller text first. */
class PairHeap {
  readonly #a: HeapEntry[] = [];
  get size(): number {
    return this.#a.length;
  }
  static #before(x: HeapEntry, y: HeapEntry): boolean {
    return x.count > y.count || (x.count === y.count && x.text < y.text);
  }
  push(e: HeapEntry): void {
    const a = this.#a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!PairHeap.#before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  pop(): HeapEntry | undefined {
    const a = this.#a;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < a.length && PairHeap.#before(a[l], a[best])) best = l;
        if (r < a.length && PairHeap.#before(a[r], a[best])) best = r;
        if (best === i) break;
        [a[i], a[best]] = [a[best], a[i]];
        i = best;
      }
    }
    return top;
  }
}

export function trainBpe(wordCounts: ReadonlyMap<string, number>, options: BpeOptions): BpeResult {
  const { vocabSize, minFrequency = 2, onProgress, progressEvery = 256 } = options;
  if (!Number.isInteger(vocabSize) || vocabSize < 256 || vocabSize >= PAIR_BASE) {
    throw new RangeError(`vocabSize must be an integer in [256, ${PAIR_BASE}), got ${vocabSize}`);
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new RangeError(`minFrequency must be an integer >= 1`);

  const tokens = baseVocabulary();
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const byteId = byteSymbols().map((s) => idOf.get(s)!);
  const encoder = new TextEncoder();

  const words: Int32Array[] = [];
  const freq: number[] = [];
  for (const [word, n] of wordCounts) {
    const bytes = encoder.encode(word);
    if (bytes.length < 2) continue; // no pair inside
    words.push(Int32Array.from(bytes, (b) => byteId[b]));
    freq.push(n);
  }

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>(); // may hold stale entries; checked on use
  const note = (key: number, w: number) => {
    const list = pairWords.get(key);
    if (list === undefined) pairWords.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  words.forEach((sym, w) => {
    for (let i = 0; i + 1 < sym.length; i++) {
      const key = sym[i] * PAIR_BASE + sym[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + freq[w]);
      note(key, w);
    }
  });
  const pairText = (key: number) => `${tokens[Math.floor(key / PAIR_BASE)]} ${tokens[key % PAIR_BASE]}`;
  const heap = new PairHeap();
  for (const [key, count] of pairCount) heap.push({ count, key, text: pairText(key) });

  const merges: string[] = [];
  const target = vocabSize - tokens.length;
  let stoppedEarly = false;
  while (tokens.length < vocabSize) {
    const top = heap.pop();
    if (top === undefined || top.count < minFrequency) {
      stoppedEarly = true;
      break;
    }
    if (pairCount.get(top.key) !== top.count) continue; // stale entry
    const a = Math.floor(top.key / PAIR_BASE);
    const b = top.key % PAIR_BASE;
    const merged = tokens[a] + tokens[b];
    let id = idOf.get(merged);
    if (id === undefined) {
      id = tokens.length;
      tokens.push(merged);
      idOf.set(merged, id);
    }
    merges.push(top.text);

    const delta = new Map<number, number>();
    const bump = (key: number, by: number) => delta.set(key, (delta.get(key) ?? 0) + by);
    for (const w of pairWords.get(top.key) ?? []) {
      const sym = words[w];
      const n = freq[w];
      const out: number[] = [];
      let changed = false;
      for (let i = 0; i < sym.length; i++) {
        if (i + 1 < sym.length && sym[i] === a && sym[i + 1] === b) {
          out.push(id);
          i++;
          changed = true;
        } else out.push(sym[i]);
      }
      if (!changed) continue;
      for (let i = 0; i + 1 < sym.length; i++) bump(sym[i] * PAIR_BASE + sym[i + 1], -n);
      for (let i = 0; i + 1 < out.length; i++) {
        const key = out[i] * PAIR_BASE + out[i + 1];
        bump(key, n);
        note(key, w);
      }
      words[w] = Int32Array.from(out);
    }
    pairWords.delete(top.key);
    for (const [key, d] of delta) {
      if (d === 0) continue;
      const count = (pairCount.get(key) ?? 0) + d;
      if (count <= 0) pairCount.delete(key);
      else {
        pairCount.set(key, count);
        heap.push({ count, key, text: pairText(key) });
      }
    }
    if (onProgress && merges.length % progressEvery === 0) onProgress(merges.length, target);
  }
  onProgress?.(merges.length, target);
  return { tokens, merges, stoppedEarly };
}
