// The tiny checkpoints must have exactly the HF layout: read every file back
// with the safetensors parser and compare names, shapes, dtypes and values.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { decodeTensor } from "../../lib/io/dtype.js";
import { readSafetensorsHeader, readTensorData } from "../../lib/io/safetensors.js";
import { makeTinyCheckpoint, tinySpecs, type TinySpec } from "../support/checkpoint.js";
import { EOS_TOKEN } from "../support/tokenizer-fixture.js";

let root = "";
test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-tiny-checkpoint-"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

const readJson = async (path: string) => JSON.parse(await readFile(path, "utf8"));

/** Every tensor in the directory, from model.safetensors or the shards named by the index. */
async function storedTensors(dir: string) {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".safetensors"));
  const tensors = new Map<string, { file: string; dtype: string; shape: number[]; values: Float64Array }>();
  for (const file of files) {
    const header = await readSafetensorsHeader(join(dir, file));
    assert.equal(header.metadata, { format: "pt" });
    for (const [name, info] of header.tensors) {
      assert.not.ok(tensors.has(name), `${name} stored twice`);
      tensors.set(name, {
        file,
        dtype: info.dtype,
        shape: info.shape,
        values: decodeTensor(await readTensorData(header, name), info.dtype),
      });
    }
  }
  return { files, tensors };
}

function layerNames(spec: TinySpec): string[] {
  const attention = ["q_proj", "k_proj", "v_proj", "o_proj"].map((m) => `self_attn.${m}.weight`);
  const biases =
    spec.arch === "qwen2"
      ? ["q_proj", "k_proj", "v_proj"].map((m) => `self_attn.${m}.bias`)
      : spec.attentionBias
        ? ["q_proj", "k_proj", "v_proj", "o_proj"].map((m) => `self_attn.${m}.bias`)
        : [];
  const mlp = ["gate_proj", "up_proj", "down_proj"].map((m) => `mlp.${m}.weight`);
  return ["input_layernorm.weight", "post_attention_layernorm.weight", ...attention, ...biases, ...mlp];
}

for (const [name, spec] of Object.entries(tinySpecs())) {
  test(`layout, config and values: ${name}`, async () => {
    const ckpt = await makeTinyCheckpoint(join(root, name), spec);
    const { files, tensors } = await storedTensors(ckpt.dir);

    const expectedNames = ["model.embed_tokens.weight", "model.norm.weight", ...(spec.tie ? [] : ["lm_head.weight"])];
    for (let i = 0; i < spec.layers; i++) expectedNames.push(...layerNames(spec).map((n) => `model.layers.${i}.${n}`));
    assert.equal([...tensors.keys()].sort(), expectedNames.sort());
    assert.equal([...ckpt.weights.keys()].sort(), expectedNames.sort());

    const headDim = spec.headDim ?? spec.hidden / spec.heads;
    assert.equal(tensors.get("model.layers.0.self_attn.q_proj.weight")!.shape, [spec.heads * headDim, spec.hidden]);
    assert.equal(tensors.get("model.layers.0.self_attn.k_proj.weight")!.shape, [spec.kvHeads * headDim, spec.hidden]);
    assert.equal(tensors.get("model.layers.0.self_attn.o_proj.weight")!.shape, [spec.hidden, spec.heads * headDim]);
    assert.equal(tensors.get("model.layers.0.mlp.down_proj.weight")!.shape, [spec.hidden, spec.intermediate]);
    assert.equal(tensors.get("model.embed_tokens.weight")!.shape, [spec.vocab, spec.hidden]);
    for (const [tensorName, stored] of tensors) {
      assert.is(stored.dtype, spec.dtype, tensorName);
      const returned = ckpt.weights.get(tensorName)!;
      assert.equal(returned.shape, stored.shape, tensorName);
      assert.equal(Array.from(returned.values), Array.from(stored.values), tensorName);
    }
    const norm = tensors.get("model.norm.weight")!.values;
    assert.ok(
      norm.every((v) => v > 0.85 && v < 1.15),
      "norm weights near 1",
    );

    const config = await readJson(join(ckpt.dir, "config.json"));
    assert.equal(config, ckpt.config);
    assert.equal(Object.keys(config), Object.keys(config).sort(), "keys sorted as transformers writes them");
    assert.equal(config.architectures, [spec.arch === "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"]);
    assert.is(config.model_type, spec.arch);
    assert.is(config.torch_dtype, { F32: "float32", F16: "float16", BF16: "bfloat16" }[spec.dtype]);
    assert.is(config.tie_word_embeddings, spec.tie);
    assert.is(config.num_key_value_heads, spec.kvHeads);
    assert.is(config.head_dim, spec.headDim);
    if (spec.arch === "qwen2") assert.is(config.use_sliding_window, false);
    else assert.is(config.attention_bias, spec.attentionBias ?? false);
    if (spec.ropeScaling)
      assert.equal(
        config.rope_scaling,
        spec.ropeScaling.type === "linear"
          ? { factor: spec.ropeScaling.factor, rope_type: "linear", type: "linear" }
          : {
              factor: spec.ropeScaling.factor,
              high_freq_factor: spec.ropeScaling.highFreqFactor,
              low_freq_factor: spec.ropeScaling.lowFreqFactor,
              original_max_position_embeddings: spec.ropeScaling.originalMaxPositionEmbeddings,
              rope_type: "llama3",
            },
      );
    else assert.is(config.rope_scaling, null);

    const shards = spec.shards ?? 1;
    if (shards === 1) {
      assert.equal(files, ["model.safetensors"]);
    } else {
      const index = await readJson(join(ckpt.dir, "model.safetensors.index.json"));
      assert.equal(
        files.sort(),
        Array.from({ length: shards }, (_, i) => `model-0000${i + 1}-of-0000${shards}.safetensors`),
      );
      assert.equal(Object.keys(index.weight_map).sort(), expectedNames.sort());
      for (const [tensorName, file] of Object.entries(index.weight_map))
        assert.is(tensors.get(tensorName)!.file, file, tensorName);
      const bytes = [...tensors.values()].reduce((n, t) => n + t.values.length * (spec.dtype === "F32" ? 4 : 2), 0);
      assert.is(index.metadata.total_size, bytes);
    }

    const hasTokenizer = (await readdir(ckpt.dir)).includes("tokenizer.json");
    assert.is(hasTokenizer, spec.tokenizer === true);
    if (hasTokenizer) {
      const tokenizer = new Tokenizer(
        await readJson(join(ckpt.dir, "tokenizer.json")),
        await readJson(join(ckpt.dir, "tokenizer_config.json")),
      );
      assert.is(tokenizer.token_to_id(EOS_TOKEN), config.eos_token_id);
      assert.ok(tokenizer.get_vocab(true).size <= spec.vocab);
      const ids = tokenizer.encode("int main(void) { return 0; }").ids;
      assert.ok(ids.every((id: number) => id < spec.vocab));
    }
  });
}

test("the same seed writes the same bytes; another seed other values", async () => {
  const spec = tinySpecs()["qwen2-bf16-tied"];
  await makeTinyCheckpoint(join(root, "seed-a"), spec);
  await makeTinyCheckpoint(join(root, "seed-b"), spec);
  const c = await makeTinyCheckpoint(join(root, "seed-c"), { ...spec, seed: spec.seed + 100 });
  const bytes = (dir: string) => readFile(join(root, dir, "model.safetensors"));
  assert.equal(await bytes("seed-a"), await bytes("seed-b"));
  assert.not.equal(await bytes("seed-a"), await bytes("seed-c"));
  assert.ok(c.weights.get("model.embed_tokens.weight")!.values.some((v) => Math.abs(v) > 0.5));
});

test.run();
