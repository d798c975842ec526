/**
 * Seeded uniform draws for sampling: xoshiro128** seeded through splitmix32, so a
 * given seed reproduces the same tokens on every platform.
 */
export class Random {
  #s = new Uint32Array(4);

  constructor(seed: number) {
    let x = seed >>> 0 ^ Math.floor(seed / 2 ** 32) >>> 0;
    for (let i = 0; i < 4; i++) {
      // splitmix32
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.#s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** The generator's state, for checkpoints: `Random.fromState(r.state())` continues the same stream. */
  state(): [number, number, number, number] {
    return [this.#s[0], this.#s[1], this.#s[2], this.#s[3]];
  }

  static fromState(state: readonly number[]): Random {
    if (!Array.isArray(state) || state.length !== 4 || !state.every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff) || state.every((x) => x === 0)) {
      throw new RangeError("a Random state is four uint32 values, not all zero");
    }
    const r = new Random(0);
    r.#s.set(state);
    return r;
  }

  nextUint32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * A 53-bit seed for a sub-stream (an epoch, a fold split...) derived from `seed`
 * and `salt` through splitmix mixing, so nearby seeds and salts give unrelated streams.
 */
export function deriveSeed(seed: number, salt: number): number {
  const mix = (x: number) => {
    x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
    x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
    return (x ^ (x >>> 16)) >>> 0;
  };
  const lo = mix((seed >>> 0) ^ mix(salt >>> 0));
  const hi = mix((Math.floor(seed / 2 ** 32) >>> 0) ^ mix((salt + 0x9e3779b9) >>> 0) ^ lo);
  return (hi & 0x1fffff) * 2 ** 32 + lo;
}

/** Fisher-Yates shuffle in place with uniform draws from `random`. */
export function shuffleInPlace<T>(items: T[], random: Random): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random.nextDouble() * (i + 1));
    const t = items[i];
    items[i] = items[j];
    items[j] = t;
  }
  return items;
}
