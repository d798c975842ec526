import { test } from "uvu";
import * as assert from "uvu/assert";
import { parseModelConfig } from "../../lib/index.js";
import { expectError } from "../support/expect.js";

const base = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  vocab_size: 100,
};

test("HF defaults are applied like LlamaConfig / Qwen2Config", () => {
  const c = parseModelConfig(base);
  assert.is(c.numKvHeads, 4);
  assert.is(c.headDim, 16);
  assert.is(c.rmsNormEps, 1e-6);
  assert.is(c.ropeTheta, 10000);
  assert.is(c.ropeScaling, null);
  assert.is(c.tieWordEmbeddings, false);
  assert.is(c.maxPositionEmbeddings, 2048);
  assert.is(c.attentionBias, false);
  const q = parseModelConfig({ ...base, architectures: ["Qwen2ForCausalLM"] });
  assert.is(q.attentionBias, true);
  assert.is(q.maxPositionEmbeddings, 32768);
});

test("explicit fields win: GQA, head_dim, linear rope scaling, eos lists", () => {
  const c = parseModelConfig({
    ...base,
    num_key_value_heads: 2,
    head_dim: 32,
    rope_scaling: { type: "linear", factor: 4 },
    rope_theta: 100000,
    eos_token_id: [5, 6],
    tie_word_embeddings: true,
  });
  assert.is(c.numKvHeads, 2);
  assert.is(c.headDim, 32);
  assert.equal(c.ropeScaling, { type: "linear", factor: 4 });
  assert.is(c.ropeTheta, 100000);
  assert.equal(c.eosTokenIds, [5, 6]);
  assert.is(c.tieWordEmbeddings, true);
  assert.equal(parseModelConfig({ ...base, rope_scaling: { rope_type: "linear", factor: 2 } }).ropeScaling, { type: "linear", factor: 2 });
  assert.is(parseModelConfig({ ...base, rope_scaling: null }).ropeScaling, null);
  assert.is(parseModelConfig({ ...base, rope_scaling: { rope_type: "default" } }).ropeScaling, null);
  const llama3 = { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  assert.equal(parseModelConfig({ ...base, rope_scaling: llama3 }).ropeScaling, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
});

const bad: [string, Record<string, unknown>, RegExp][] = [
  ["missing vocab_size", { ...base, vocab_size: undefined }, /missing required field "vocab_size"/],
  ["string hidden_size", { ...base, hidden_size: "64" }, /field "hidden_size"/],
  ["negative layers", { ...base, num_hidden_layers: -1 }, /field "num_hidden_layers"/],
  ["fractional heads", { ...base, num_attention_heads: 2.5 }, /field "num_attention_heads"/],
  ["no architectures", { ...base, architectures: [] }, /field "architectures"/],
  ["unknown architecture", { ...base, architectures: ["MistralForCausalLM"] }, /unsupported architecture "MistralForCausalLM"/],
  ["kv heads not dividing", { ...base, num_key_value_heads: 3 }, /num_key_value_heads/],
  ["hidden not divisible", { ...base, hidden_size: 66 }, /not divisible by num_attention_heads/],
  ["odd head dim", { ...base, head_dim: 15 }, /must be even/],
  ["absurd head dim", { ...base, head_dim: 2 ** 30 }, /head dimension 1073741824 exceeds 65536/],
  ["yarn scaling", { ...base, rope_scaling: { type: "yarn", factor: 4 } }, /type "yarn" is not supported/],
  ["linear without factor", { ...base, rope_scaling: { type: "linear" } }, /rope_scaling\.factor" is required/],
  [
    "llama3 without low_freq_factor",
    { ...base, rope_scaling: { rope_type: "llama3", factor: 8, high_freq_factor: 4, original_max_position_embeddings: 64 } },
    /rope_scaling\.low_freq_factor" is required for type "llama3"/,
  ],
  [
    "llama3 with high <= low",
    { ...base, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 4, high_freq_factor: 4, original_max_position_embeddings: 64 } },
    /high_freq_factor" must exceed/,
  ],
  ["gelu", { ...base, hidden_act: "gelu" }, /hidden_act/],
  ["sliding window", { ...base, architectures: ["Qwen2ForCausalLM"], use_sliding_window: true }, /use_sliding_window/],
  ["zero eps", { ...base, rms_norm_eps: 0 }, /field "rms_norm_eps"/],
  ["not an object", [] as unknown as Record<string, unknown>, /config\.json/],
];
for (const [name, json, message] of bad) {
  test(`rejects ${name}`, async () => {
    await expectError(() => parseModelConfig(json), "ERR_CONFIG", message);
  });
}

test.run();
