/**
 * Character spans of tokens: which part of the source text each token id covers,
 * in JavaScript string units (UTF-16), for mapping character-level annotations
 * (SVEN's char_changes, per-line heat maps) onto tokens.
 *
 * @huggingface/tokenizers returns no offsets, so they are rebuilt from the ids:
 * - Byte-level BPE (GPT-2, Qwen2, DeepSeek-Coder): every token is a run of bytes
 *   written with GPT-2's byte-to-symbol alphabet. The bytes of all tokens must
 *   concatenate to the text's UTF-8 bytes; a token's span runs from the character
 *   holding its first byte to the end of the character holding its last byte, so
 *   when one character is split over two tokens, both tokens cover it.
 * - Anything else (SentencePiece, byte fallback, a normalizer that rewrote the
 *   text): incremental decoding as a text streamer does. Tokens that together
 *   decode to one piece of text (e.g. the bytes of one character) share its span.
 * Either way the spans must reproduce the text exactly, or null is returned: a
 * wrong mask is worse than none.
 */

export interface TokenSpans {
  /** start[i], end[i]: token i covers text.slice(start[i], end[i]) (UTF-16 units). */
  start: Int32Array;
  end: Int32Array;
}

/** What the alignment needs from a tokenizer. */
export interface SpanSource {
  /** The vocabulary string of an id (byte-level symbols for byte-level BPE). */
  idToToken(id: number): string | undefined;
  /** Content of an added (special) token id, which is not byte-level encoded. */
  addedTokenContent(id: number): string | undefined;
  decode(ids: number[]): string;
}

let symbolToByte: Map<number, number> | undefined;

/** Inverse of GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest use code points from 256 up. */
function byteLevelAlphabet(): Map<number, number> {
  if (symbolToByte) return symbolToByte;
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const map = new Map<number, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) map.set(printable(b) ? b : next++, b);
  symbolToByte = map;
  return map;
}

const encoder = new TextEncoder();

/** Spans through the byte-level alphabet, or null when some token is not byte-level or the bytes differ from the text. */
export function byteLevelSpans(source: SpanSource, text: string, ids: ArrayLike<number>): TokenSpans | null {
  const alphabet = byteLevelAlphabet();
  const textBytes = encoder.encode(text);
  // unitOfByte[b]: UTF-16 index of the character that byte b belongs to; charEnd[b]: the index just after it.
  const unitOfByte = new Int32Array(textBytes.length + 1);
  const charEnd = new Int32Array(textBytes.length + 1);
  let b = 0;
  for (let u = 0; u < text.length; ) {
    const cp = text.codePointAt(u)!;
    const units = cp > 0xffff ? 2 : 1;
    const nbytes = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (let k = 0; k < nbytes; k++, b++) {
      unitOfByte[b] = u;
      charEnd[b] = u + units;
    }
    u += units;
  }
  unitOfByte[textBytes.length] = text.length;

  const start = new Int32Array(ids.length);
  const end = new Int32Array(ids.length);
  let pos = 0; // byte position in the text
  for (let i = 0; i < ids.length; i++) {
    const added = source.addedTokenContent(ids[i]);
    let bytes: Uint8Array | number[];
    if (added !== undefined) {
      bytes = encoder.encode(added);
    } else {
      const token = source.idToToken(ids[i]);
      if (token === undefined) return null;
      const out: number[] = [];
      for (const ch of token) {
        const byte = alphabet.get(ch.codePointAt(0)!);
        if (byte === undefined) return null;
        out.push(byte);
      }
      bytes = out;
    }
    if (pos + bytes.length > textBytes.length) return null;
    for (let k = 0; k < bytes.length; k++) if (textBytes[pos + k] !== bytes[k]) return null;
    start[i] = unitOfByte[pos];
    end[i] = bytes.length === 0 ? unitOfByte[pos] : charEnd[pos + bytes.length - 1];
    pos += bytes.length;
  }
  return pos === textBytes.length ? { start, end } : null;
}

/**
 * Spans by incremental decoding (the text-streamer method): a group of tokens is
 * closed when decoding from a moving prefix yields new text that does not end in
 * U+FFFD; every token of the group gets the group's span. Linear in the length.
 */
export function decodedSpans(source: SpanSource, text: string, ids: ArrayLike<number>): TokenSpans | null {
  const list = Array.from(ids);
  const start = new Int32Array(list.length);
  const end = new Int32Array(list.length);
  let prefix = 0;
  let read = 0;
  let pos = 0;
  const close = (upTo: number, piece: string): boolean => {
    if (text.slice(pos, pos + piece.length) !== piece) return false;
    for (let k = read; k < upTo; k++) {
      start[k] = pos;
      end[k] = pos + piece.length;
    }
    pos += piece.length;
    return true;
  };
  for (let i = 0; i < list.length; i++) {
    const before = read > prefix ? source.decode(list.slice(prefix, read)) : "";
    const after = source.decode(list.slice(prefix, i + 1));
    if (after.length > before.length && !after.endsWith("\uFFFD")) {
      if (!after.startsWith(before) || !close(i + 1, after.slice(before.length))) return null;
      prefix = read;
      read = i + 1;
    }
  }
  if (read < list.length) {
    // Tokens that never completed a character (or decode to nothing): they sit at the end.
    const before = read > prefix ? source.decode(list.slice(prefix, read)) : "";
    const after = source.decode(list.slice(prefix));
    if (!after.startsWith(before) || !close(list.length, after.slice(before.length))) return null;
  }
  return pos === text.length ? { start, end } : null;
}

/** Byte-level spans when the tokenizer is byte-level, else decoded spans; null when neither reproduces the text. */
export function tokenSpans(source: SpanSource, text: string, ids: ArrayLike<number>): TokenSpans | null {
  if (ids.length === 0) return text.length === 0 ? { start: new Int32Array(0), end: new Int32Array(0) } : null;
  return byteLevelSpans(source, text, ids) ?? decodedSpans(source, text, ids);
}
