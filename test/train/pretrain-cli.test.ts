// `deepguard pretrain` as a user runs it: --json step/eval/done lines, --max-steps
// then --resume to the end of the schedule, the tokenizer copied into the output,
// and the output generating with `deepguard generate`; usage errors.
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import { Random } from "../../lib/random.js";
import { makeTokenizerFiles } from "../support/tokenizer-fixture.js";
import { runCli } from "../support/cli.js";


const run = (...args: string[]) => runCli(args);

const lines = (s: string) => s.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);

test("pretrain --json, --max-steps then --resume, tokenizer copied, output generates", async () => {
  const root = await mkdtemp(join(tmpdir(), "dg-cli-pretrain-"));
  try {
    const vocab = 260, seqLen = 12;
    const tok = makeTokenizerFiles(vocab);
    await mkdir(join(root, "tok"));
    await writeFile(join(root, "tok", "tokenizer.json"), JSON.stringify(tok.tokenizerJson));
    await writeFile(join(root, "tok", "tokenizer_config.json"), JSON.stringify(tok.tokenizerConfig));
    const r = new Random(4);
    for (const [name, rows] of [["train", 24], ["held", 4]] as const) {
      const t = Uint16Array.from({ length: rows * (seqLen + 1) }, () => Math.floor(r.nextDouble() * vocab));
      await writeSafetensors(join(root, `${name}.safetensors`), { tokens: { dtype: "U16", shape: [rows, seqLen + 1], data: new Uint8Array(t.buffer) } }, {
        format: "deepguard-packed-v1", seq_len: String(seqLen), vocab_size: String(vocab),
      });
    }
    const config = {
      architectures: ["Qwen2ForCausalLM"], hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2,
      num_key_value_heads: 1, vocab_size: vocab, tie_word_embeddings: true, max_position_embeddings: 64, eos_token_id: vocab - 1,
      training: { lr: 3e-3, batchSize: 2, seqLen, steps: 5, evalEvery: 2, evalRows: 4, saveEvery: 2 },
    };
    await writeFile(join(root, "config.json"), JSON.stringify(config));
    const out = join(root, "out");
    const args = ["pretrain", join(root, "config.json"), "--data", join(root, "train.safetensors"), "--heldout", join(root, "held.safetensors"), "--out", out, "--tokenizer", join(root, "tok"), "--json"];
    const a = await run(...args, "--max-steps", "3");
    assert.is(a.code, 0, a.stderr);
    const la = lines(a.stdout);
    assert.equal(la.filter((l) => l.type === "step").map((l) => l.step), [1, 2, 3]);
    assert.equal(la.filter((l) => l.type === "eval").map((l) => l.step), [0, 2]);
    assert.equal(la.at(-1), { ...la.at(-1), type: "done", step: 3, finished: false });
    const b = await run(...args, "--resume");
    assert.is(b.code, 0, b.stderr);
    const lb = lines(b.stdout);
    assert.equal(lb.filter((l) => l.type === "step").map((l) => l.step), [4, 5]);
    assert.equal(lb.at(-1), { ...lb.at(-1), type: "done", step: 5, finished: true });
    const files = await readdir(out);
    for (const f of ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "checkpoint"]) assert.ok(files.includes(f), f);
    assert.not.ok(files.some((f) => f.includes(".tmp") || f.endsWith(".old")), files.join(", "));
    const g = await run("generate", out, "def f", "--max-tokens", "4", "--seed", "1");
    assert.is(g.code, 0, g.stderr);

    const bad = await run("pretrain", join(root, "config.json"), "--out", out);
    assert.is(bad.code, 2);
    assert.match(bad.stderr, /--data/);
    const steps = await run(...args, "--max-steps", "0");
    assert.is(steps.code, 2);
    assert.match(steps.stderr, /--max-steps/);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test.run();
