/**
 * An independent float64 forward pass for Llama / Qwen2, written from the
 * semantics of transformers' modeling_llama.py and modeling_qwen2.py (see
 * DESIGN.md, "Semantics that must match"). Plain loops on purpose: it is the
 * ground truth the native engine is compared against, so it must be easy to check.
 */

export type ReferenceWeights = Map<string, { shape: number[]; values: Float64Array }>;

export interface ReferenceOutput {
  /** [seq][vocab] */
  logits: Float64Array[];
  /** [L + 1][seq][hidden]: embeddings, outputs of layers 1..L-1, then the final norm of layer L's output. */
  hiddenStates: Float64Array[][];
}

interface Dimensions {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  /** Per-pair rotation frequencies, rope_scaling applied. */
  ropeFreqs: Float64Array;
  tied: boolean;
  qkvBias: boolean;
  outputBias: boolean;
  /** ReferenceOptions.bf16Activations. */
  bf16: boolean;
}

function fail(message: string): never {
  throw new Error(`reference forward: ${message}`);
}

function positiveNumber(config: Record<string, unknown>, key: string): number {
  const value = config[key];
  if (typeof value !== "number" || !(value > 0))
    fail(`config.${key} must be a positive number, got ${JSON.stringify(value)}`);
  return value;
}

function positiveField(scaling: Record<string, unknown>, key: string): number {
  const v = scaling[key];
  if (typeof v !== "number" || !(v > 0)) fail(`rope_scaling.${key} must be positive, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Frequency of each rotation pair, as transformers' rope init functions compute
 * it: theta^(-2i/d), divided by factor for "linear"; for "llama3" (written from
 * _compute_llama3_parameters, one pair at a time):
 *   wavelen = 2 pi / freq
 *   wavelen < original / high_freq_factor   -> freq               (kept)
 *   wavelen > original / low_freq_factor    -> freq / factor      (stretched)
 *   otherwise, s = (original / wavelen - low) / (high - low)
 *                                            -> (1 - s) freq / factor + s freq
 */
export function ropeFrequencies(theta: number, dim: number, scaling: unknown): Float64Array {
  const out = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = theta ** (-(2 * i) / dim);
  if (scaling === null || scaling === undefined) return out;
  const s = scaling as Record<string, unknown>;
  const kind = s.rope_type ?? s.type;
  if (kind === "default") return out;
  const factor = positiveField(s, "factor");
  if (kind === "linear") return out.map((f) => f / factor);
  if (kind !== "llama3") fail(`rope_scaling ${JSON.stringify(scaling)} is not supported (linear, llama3)`);
  const low = positiveField(s, "low_freq_factor");
  const high = positiveField(s, "high_freq_factor");
  const original = positiveField(s, "original_max_position_embeddings");
  for (let i = 0; i < out.length; i++) {
    const wavelen = (2 * Math.PI) / out[i];
    if (wavelen > original / low) {
      out[i] = out[i] / factor;
    } else if (wavelen >= original / high) {
      const smooth = (original / wavelen - low) / (high - low);
      out[i] = (1 - smooth) * (out[i] / factor) + smooth * out[i];
    }
  }
  return out;
}

function dimensions(config: Record<string, unknown>): Omit<Dimensions, "bf16"> {
  const hidden = positiveNumber(config, "hidden_size");
  const heads = positiveNumber(config, "num_attention_heads");
  const kvHeads = positiveNumber(config, "num_key_value_heads");
  if (heads % kvHeads !== 0) fail(`num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const isQwen2 = config.model_type === "qwen2";
  if (!isQwen2 && config.model_type !== "llama")
    fail(`model_type ${JSON.stringify(config.model_type)} is not llama or qwen2`);
  // modeling_llama: getattr(config, "head_dim", hidden_size // num_attention_heads)
  const headDim = config.head_dim == null ? hidden / heads : positiveNumber(config, "head_dim");
  return {
    hidden,
    layers: positiveNumber(config, "num_hidden_layers"),
    heads,
    kvHeads,
    headDim,
    eps: positiveNumber(config, "rms_norm_eps"),
    ropeFreqs: ropeFrequencies(positiveNumber(config, "rope_theta"), headDim, config.rope_scaling),
    tied: config.tie_word_embeddings === true,
    // Qwen2 always has q/k/v biases; Llama's attention_bias adds them to q, k, v and o.
    qkvBias: isQwen2 || config.attention_bias === true,
    outputBias: !isQwen2 && config.attention_bias === true,
  };
}

function tensor(weights: ReferenceWeights, name: string, shape: number[]): Float64Array {
  const entry = weights.get(name);
  if (!entry) fail(`missing tensor ${name}`);
  if (entry.shape.join(",") !== shape.join(",")) fail(`${name} has shape [${entry.shape}], expected [${shape}]`);
  return entry.values;
}

export interface ReferenceOptions {
  /**
   * Round the input of every linear layer (q/k/v/o, gate/up/down and the LM
   * head) to BF16 first (via f32, nearest even), as Model.load's
   * activations: "bfloat16" does for BF16 weights, and a BF16 PyTorch model.
   * Meant for checkpoints whose matrices are all BF16.
   */
  bf16Activations?: boolean;
  /** Applied to every K (after RoPE) and V value as it enters the KV cache, e.g. BF16 rounding. */
  kvRound?: (x: number) => number;
}

const roundScratch = new Float32Array(1);
const roundBits = new Uint32Array(roundScratch.buffer);
/** v rounded to f32, then to the nearest BF16 (ties to even). */
export function roundToBf16(v: number): number {
  roundScratch[0] = v;
  const x = roundBits[0];
  roundBits[0] = (((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16) >>> 0;
  return roundScratch[0];
}

/** y = W x + b with W stored [out, in], as nn.Linear; x rounded to BF16 first when `bf16`. */
function linearLayer(w: Float64Array, xIn: Float64Array, out: number, bias?: Float64Array, bf16 = false): Float64Array {
  const x = bf16 ? xIn.map(roundToBf16) : xIn;
  const inDim = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let sum = bias ? bias[o] : 0;
    for (let i = 0; i < inDim; i++) sum += w[o * inDim + i] * x[i];
    y[o] = sum;
  }
  return y;
}

function rmsNorm(x: Float64Array, weight: Float64Array, eps: number): Float64Array {
  let meanSquare = 0;
  for (const v of x) meanSquare += v * v;
  const scale = 1 / Math.sqrt(meanSquare / x.length + eps);
  return x.map((v, i) => v * scale * weight[i]);
}

const silu = (v: number) => v / (1 + Math.exp(-v));

/**
 * Rotary embedding of one head vector in rotate-half form:
 * out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1],
 * angle_i = position * freqs[i].
 */
export function rotate(x: Float64Array, position: number, freqs: Float64Array): Float64Array {
  const half = x.length / 2;
  const out = new Float64Array(x.length);
  for (let i = 0; i < half; i++) {
    const angle = position * freqs[i];
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    out[i] = x[i] * cos - x[i + half] * sin;
    out[i + half] = x[i + half] * cos + x[i] * sin;
  }
  return out;
}

/** rotate() with plain RoPE frequencies theta^(-2i/d), positions divided by `factor` (linear scaling). */
export function applyRope(x: Float64Array, position: number, theta: number, factor = 1): Float64Array {
  return rotate(x, position / factor, ropeFrequencies(theta, x.length, null));
}

function ropeHeads(x: Float64Array, heads: number, headDim: number, position: number, d: Dimensions): Float64Array {
  const out = new Float64Array(x.length);
  for (let h = 0; h < heads; h++) {
    out.set(rotate(x.subarray(h * headDim, (h + 1) * headDim), position, d.ropeFreqs), h * headDim);
  }
  return out;
}

/** Causal softmax(q.k / sqrt(d)) v per query head; query head h reads kv head h / (heads / kvHeads), as repeat_kv. */
function attention(q: Float64Array[], k: Float64Array[], v: Float64Array[], d: Dimensions): Float64Array[] {
  const group = d.heads / d.kvHeads;
  const scale = 1 / Math.sqrt(d.headDim);
  return q.map((qt, t) => {
    const out = new Float64Array(d.heads * d.headDim);
    for (let h = 0; h < d.heads; h++) {
      const qOff = h * d.headDim;
      const kvOff = Math.floor(h / group) * d.headDim;
      const scores = new Float64Array(t + 1);
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let i = 0; i < d.headDim; i++) dot += qt[qOff + i] * k[s][kvOff + i];
        scores[s] = dot * scale;
      }
      const max = scores.reduce((a, b) => Math.max(a, b), -Infinity);
      let total = 0;
      for (let s = 0; s <= t; s++) total += scores[s] = Math.exp(scores[s] - max);
      for (let s = 0; s <= t; s++) {
        const p = scores[s] / total;
        for (let i = 0; i < d.headDim; i++) out[qOff + i] += p * v[s][kvOff + i];
      }
    }
    return out;
  });
}

function decoderLayer(
  hidden: Float64Array[],
  weights: ReferenceWeights,
  layer: number,
  d: Dimensions,
  intermediate: number,
  kvRound: (x: number) => number,
): void {
  const p = `model.layers.${layer}`;
  const qDim = d.heads * d.headDim;
  const kvDim = d.kvHeads * d.headDim;
  const bias = (name: string, size: number) =>
    d.qkvBias ? tensor(weights, `${p}.self_attn.${name}.bias`, [size]) : undefined;
  const wq = tensor(weights, `${p}.self_attn.q_proj.weight`, [qDim, d.hidden]);
  const wk = tensor(weights, `${p}.self_attn.k_proj.weight`, [kvDim, d.hidden]);
  const wv = tensor(weights, `${p}.self_attn.v_proj.weight`, [kvDim, d.hidden]);
  const wo = tensor(weights, `${p}.self_attn.o_proj.weight`, [d.hidden, qDim]);
  const bq = bias("q_proj", qDim);
  const bk = bias("k_proj", kvDim);
  const bv = bias("v_proj", kvDim);
  const bo = d.outputBias ? tensor(weights, `${p}.self_attn.o_proj.bias`, [d.hidden]) : undefined;
  const inputNorm = tensor(weights, `${p}.input_layernorm.weight`, [d.hidden]);
  const postNorm = tensor(weights, `${p}.post_attention_layernorm.weight`, [d.hidden]);
  const gate = tensor(weights, `${p}.mlp.gate_proj.weight`, [intermediate, d.hidden]);
  const up = tensor(weights, `${p}.mlp.up_proj.weight`, [intermediate, d.hidden]);
  const down = tensor(weights, `${p}.mlp.down_proj.weight`, [d.hidden, intermediate]);

  const linear = (w: Float64Array, x: Float64Array, out: number, b?: Float64Array) => linearLayer(w, x, out, b, d.bf16);
  const normed = hidden.map((x) => rmsNorm(x, inputNorm, d.eps));
  const q = normed.map((x, t) => ropeHeads(linear(wq, x, qDim, bq), d.heads, d.headDim, t, d));
  const k = normed.map((x, t) => ropeHeads(linear(wk, x, kvDim, bk), d.kvHeads, d.headDim, t, d).map(kvRound));
  const v = normed.map((x) => linear(wv, x, kvDim, bv).map(kvRound));
  attention(q, k, v, d).forEach((a, t) => addInPlace(hidden[t], linear(wo, a, d.hidden, bo)));

  for (const x of hidden) {
    const y = rmsNorm(x, postNorm, d.eps);
    const g = linear(gate, y, intermediate);
    const u = linear(up, y, intermediate);
    addInPlace(
      x,
      linear(
        down,
        g.map((gi, i) => silu(gi) * u[i]),
        d.hidden,
      ),
    );
  }
}

function addInPlace(x: Float64Array, delta: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i] += delta[i];
}

/** x rounded to float32 and then to BF16 (nearest even), as a BF16 KV cache stores the f32 projections. */
export function bf16Round(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if (Number.isNaN(x)) return x;
  u[0] = (((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) << 16) >>> 0;
  return f[0];
}

/**
 * Options: `kvRound` is applied to every element of K (after RoPE) and V before
 * attention reads them (e.g. bf16Round: the math of a BF16 KV cache); identity by default.
 */
export function referenceForward(
  config: Record<string, unknown>,
  weights: ReferenceWeights,
  ids: number[],
  options: ReferenceOptions = {},
): ReferenceOutput {
  const kvRound = options.kvRound ?? ((x: number) => x);
  const d = { ...dimensions(config), bf16: options.bf16Activations === true };
  const vocab = positiveNumber(config, "vocab_size");
  const intermediate = positiveNumber(config, "intermediate_size");
  const embed = tensor(weights, "model.embed_tokens.weight", [vocab, d.hidden]);
  // Tied: lm_head shares embed_tokens and any stored lm_head.weight is ignored, as in HF.
  const lmHead = d.tied ? embed : tensor(weights, "lm_head.weight", [vocab, d.hidden]);
  const finalNorm = tensor(weights, "model.norm.weight", [d.hidden]);

  const hidden = ids.map((id) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) fail(`token id ${id} is outside [0, ${vocab})`);
    return embed.slice(id * d.hidden, (id + 1) * d.hidden);
  });
  const hiddenStates: Float64Array[][] = [hidden.map((x) => x.slice())];
  for (let layer = 0; layer < d.layers; layer++) {
    decoderLayer(hidden, weights, layer, d, intermediate, kvRound);
    if (layer < d.layers - 1) hiddenStates.push(hidden.map((x) => x.slice()));
  }
  const final = hidden.map((x) => rmsNorm(x, finalNorm, d.eps));
  hiddenStates.push(final);
  return { logits: final.map((x) => linearLayer(lmHead, x, vocab, undefined, d.bf16)), hiddenStates };
}
