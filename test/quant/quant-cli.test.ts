// --quantize on every CLI command that loads a model.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { relativeError } from "../support/compare.js";
import { runCli } from "../support/cli.js";

const spec = { ...tinySpecs()["qwen2-f32-gqa-tied"], vocab: 300 };
let root = "";
let ckpt: TinyCheckpoint;

const run = (...args: string[]) => runCli(args);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-quant-cli-"));
  ckpt = await makeTinyCheckpoint(join(root, "m"), spec);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

test("inspect --quantize reports the quantized linear layers", async () => {
  const r = await run("inspect", ckpt.dir, "--json", "--quantize", "q4_0");
  assert.is(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  assert.is(info.quantization, "q4_0");
  assert.is(info.linearDtype, "Q4_0");
  const plain = JSON.parse((await run("inspect", ckpt.dir, "--json")).stdout);
  assert.is(plain.quantization, null);
  assert.is(plain.linearDtype, "F32");
  assert.ok(info.linearBytes * 6 < plain.linearBytes, `${info.linearBytes} vs ${plain.linearBytes}`);
});

test("forward --quantize gives the logits of Model.load(dir, { quantize })", async () => {
  const r = await run("forward", ckpt.dir, "--ids", "1,2,3,4", "--json", "--quantize", "q8_0");
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  const model = await Model.load(ckpt.dir, { quantize: "q8_0" });
  const want = await model.forward([1, 2, 3, 4]);
  const got = Float32Array.from((out.logits as number[][]).flat());
  assert.ok(relativeError(got, want.logits.data) <= 1e-6);
  model.dispose();
});

test("generate --quantize runs; a bad --quantize is a usage error", async () => {
  const r = await run("generate", ckpt.dir, "hello", "--max-tokens", "3", "--quantize", "q4_k");
  assert.is(r.code, 0, r.stderr);
  const bad = await run("forward", ckpt.dir, "--ids", "1", "--quantize", "q3");
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /ERR_USAGE.*--quantize must be one of q8_0, q4_0, q4_k, got "q3"/);
});

test("the commands added since (scan, probe, guard train, eval, bench-k, generate --guard) take --quantize too", async () => {
  const cases: string[][] = [
    ["scan", ckpt.dir, "--guard", join(root, "no-guard"), join(root, "x.py")],
    ["probe", ckpt.dir, "--data", join(root, "no-data"), "--out", join(root, "p")],
    ["guard", "train", ckpt.dir, "--data", join(root, "no-data"), "--val", join(root, "no-data"), "--out", join(root, "g")],
    ["eval", ckpt.dir, "--scenarios", join(root, "no-scenarios"), "--out", join(root, "e")],
    ["bench-k", ckpt.dir],
    ["generate", ckpt.dir, "hi", "--guard", join(root, "no-guard")],
  ];
  for (const args of cases) {
    const bad = await run(...args, "--quantize", "q9_9");
    assert.is(bad.code, 2, `${args[0]}: ${bad.stderr}`);
    assert.match(bad.stderr, /--quantize must be one of q8_0, q4_0, q4_k, got "q9_9"/, args[0]);
    const lone = await run(...args, "--quant-cache");
    assert.is(lone.code, 2, `${args[0]}: ${lone.stderr}`);
    assert.match(lone.stderr, /--quant-cache needs --quantize/, args[0]);
  }
});

test.run();
