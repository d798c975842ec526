// The KV cache's dtype (Model.load kvCacheDtype, --kv-cache): a BF16 cache is
// the float64 reference with K (after RoPE) and V rounded to BF16; it halves the
// cache's bytes; fork, free and growth keep working; the default follows the
// rule in README ("BF16 KV cache"); bad values are coded errors.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model, defaultKvCacheDtype } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { flatten, randomIds, relativeError } from "../support/compare.js";
import { expectError } from "../support/expect.js";
import { runCli } from "../support/cli.js";
import { bf16Round, referenceForward } from "../support/reference.js";

// BF16 keeps 8 significant bits: round to nearest even moves a value by at most
// u = 2^-9 of itself.
const U_BF16 = 2 ** -9;
const TOL = 1e-4; // the F32 engine against the float64 reference (model.test.ts)

let root = "";
const ckpts = new Map<string, TinyCheckpoint>();
test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-kv-"));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function checkpoint(name: string): Promise<TinyCheckpoint> {
  let c = ckpts.get(name);
  if (!c) {
    c = await makeTinyCheckpoint(join(root, name), { ...tinySpecs()[name], maxPositions: 4096 });
    ckpts.set(name, c);
  }
  return c;
}

for (const name of ["qwen2-f32-gqa-tied", "llama-bf16-gqa-rope-linear", "llama-attention-bias"]) {
  test(`BF16 cache: prefill and decode equal the reference of BF16-rounded K/V: ${name}`, async () => {
    const ckpt = await checkpoint(name);
    // f32 activations: the reference rounds K/V only.
    const model = await Model.load(ckpt.dir, { kvCacheDtype: "bfloat16", activations: "float32" });
    // 70 positions: past the cache's first capacity (64), so growth copies BF16 rows.
    const ids = randomIds(70, ckpt.config.vocab_size as number, 5);
    const ref = referenceForward(ckpt.config, ckpt.weights, ids, { kvRound: bf16Round });
    const exact = referenceForward(ckpt.config, ckpt.weights, ids);
    const session = model.createSession();
    const rows: Float32Array[] = [];
    const pre = await session.eval(ids.slice(0, 40), { logits: "all" });
    for (let t = 0; t < 40; t++) rows.push(pre.logits.row(t));
    for (let t = 40; t < ids.length; t++) rows.push((await session.eval([ids[t]])).logits.row(0));
    const got = Float32Array.from(rows.flatMap((r) => Array.from(r)));
    const err = relativeError(got, flatten(ref.logits));
    assert.ok(err <= TOL, `vs BF16-rounded K/V reference: ${err}`);
    // Against exact K/V: the rounding shows (well above the F32 engine's 1e-4),
    // and stays within a small multiple of u: each layer's attention sees K and V
    // off by <= u relative (V enters a convex combination, K a softmax of scores
    // moved by <= u |q||k| / sqrt(d)); 2u per layer bounds what these shapes reach.
    const layers = ckpt.config.num_hidden_layers as number;
    const exactErr = relativeError(got, flatten(exact.logits));
    assert.ok(exactErr > TOL, `a BF16 cache must differ from exact K/V: ${exactErr}`);
    assert.ok(exactErr <= 2 * layers * U_BF16, `vs exact K/V: ${exactErr} > ${2 * layers * U_BF16}`);
    session.dispose();
    model.dispose();
  });
}

test("a BF16 cache holds half the bytes; fork (copyFrom) and free work", async () => {
  const ckpt = await checkpoint("qwen2-f32-gqa-tied");
  const f32 = await Model.load(ckpt.dir, { kvCacheDtype: "float32" });
  const bf16 = await Model.load(ckpt.dir, { kvCacheDtype: "bfloat16" });
  assert.is(f32.info.kvCacheDtype, "float32");
  assert.is(bf16.info.kvCacheDtype, "bfloat16");
  const c = ckpt.config as Record<string, number>;
  const perToken = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size / c.num_attention_heads);
  assert.is(f32.info.kvCacheBytesPerToken, 4 * perToken);
  assert.is(bf16.info.kvCacheBytesPerToken, 2 * perToken);

  const ids = randomIds(30, c.vocab_size, 8);
  const a = f32.createSession();
  const b = bf16.createSession();
  await a.eval(ids);
  await b.eval(ids);
  assert.ok(b.cacheBytes > 0);
  assert.is(b.cacheBytes * 2, a.cacheBytes);

  // A fork continues exactly as the original does.
  const fork = bf16.createSession();
  fork.native.copyFrom(b.native); // as guided generation forks its samples
  assert.is(fork.length, b.length);
  const next = [3, 9, 27];
  for (const t of next) {
    const x = await b.eval([t]);
    const y = await fork.eval([t]);
    assert.equal(Array.from(y.logits.data), Array.from(x.logits.data));
  }
  b.dispose();
  assert.is(b.cacheBytes, 0);
  assert.is((await fork.eval([1])).logits.rows, 1, "the fork owns its own copy");
  fork.dispose();
  assert.is(fork.cacheBytes, 0);
  a.dispose();
  f32.dispose();
  bf16.dispose();
});

test("the default KV cache: BF16 for BF16 checkpoints and quantized loads, F32 otherwise", async () => {
  assert.is(defaultKvCacheDtype("BF16"), "bfloat16");
  assert.is(defaultKvCacheDtype("F32"), "float32");
  assert.is(defaultKvCacheDtype("F16"), "float32");
  assert.is(defaultKvCacheDtype("F32", "q8_0"), "bfloat16");
  const bf = await Model.load((await checkpoint("llama-bf16-gqa-rope-linear")).dir);
  assert.is(bf.info.kvCacheDtype, "bfloat16");
  bf.dispose();
  const f = await Model.load((await checkpoint("qwen2-f32-gqa-tied")).dir);
  assert.is(f.info.kvCacheDtype, "float32");
  f.dispose();
  const q = await Model.load((await checkpoint("qwen2-f32-gqa-tied")).dir, { quantize: "q8_0" });
  assert.is(q.info.kvCacheDtype, "bfloat16");
  q.dispose();
});

test("bad kvCacheDtype and --kv-cache values are coded errors", async () => {
  const ckpt = await checkpoint("qwen2-f32-gqa-tied");
  await expectError(() => Model.load(ckpt.dir, { kvCacheDtype: "f16" as never }), "ERR_ARGUMENT", /option "kvCacheDtype"/);
  await expectError(() => Model.load(ckpt.dir, { kvCacheDtype: 2 as never }), "ERR_ARGUMENT", /kvCacheDtype/);
  const bad = await runCli(["inspect", ckpt.dir, "--kv-cache", "bogus"]);
  assert.is(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /ERR_USAGE.*--kv-cache must be f32 or bf16, got "bogus"/);
  const good = await runCli(["inspect", ckpt.dir, "--json", "--kv-cache", "bf16"]);
  assert.is(good.code, 0, good.stderr);
  assert.is(JSON.parse(good.stdout).kvCacheDtype, "bfloat16");
});

test.run();
