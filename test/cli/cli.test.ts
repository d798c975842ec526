// The deepguard CLI as a user runs it: a child process, its stdout, its exit code.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { flatten, relativeError } from "../support/compare.js";
import { referenceForward } from "../support/reference.js";
import { CLI_PATH, runCli } from "../support/cli.js";

const cli = CLI_PATH;
const spec = { ...tinySpecs()["llama-bf16-gqa-rope-linear"], tokenizer: true, vocab: 300 };
let root = "";
let ckpt: TinyCheckpoint;

const run = (...args: string[]) => runCli(args);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-cli-"));
  ckpt = await makeTinyCheckpoint(join(root, "m"), spec);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

test("inspect --json describes the checkpoint", async () => {
  const r = await run("inspect", ckpt.dir, "--json");
  assert.is(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  assert.is(info.architecture, "LlamaForCausalLM");
  assert.is(info.numLayers, spec.layers);
  assert.is(info.hiddenSize, spec.hidden);
  assert.is(info.numKvHeads, spec.kvHeads);
  assert.is(info.dtype, "BF16");
  assert.is(info.tokenizer, true);
  let params = 0;
  for (const w of ckpt.weights.values()) params += w.values.length;
  assert.is(info.parameterCount, params);
  const text = await run("inspect", ckpt.dir);
  assert.match(text.stdout, /architecture\s+LlamaForCausalLM/);
});

test("forward --ids --json prints full-precision logits and L+1 hidden states", async () => {
  const ids = [5, 17, 2, 250];
  const r = await run("forward", ckpt.dir, "--ids", ids.join(","), "--json");
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { logits: number[][]; hiddenStates: number[][][] };
  assert.is(out.logits.length, ids.length);
  assert.is(out.logits[0].length, spec.vocab);
  assert.is(out.hiddenStates.length, spec.layers + 1);
  assert.is(out.hiddenStates[0][0].length, spec.hidden);
  // The CLI loads with the defaults (activations "auto", a BF16 KV cache for a
  // BF16 checkpoint): it prints exactly what Model.forward computes in-process
  // with them (checked against the float64 references in test/model/); with
  // --activations float32 --kv-cache f32 it is the exact reference's.
  const model = await Model.load(ckpt.dir);
  const api = await model.forward(ids, { hiddenStates: "all" });
  model.dispose();
  assert.equal(flatten(out.logits), Float64Array.from(api.logits.data));
  for (let l = 0; l <= spec.layers; l++) assert.equal(flatten(out.hiddenStates[l]), Float64Array.from(api.hiddenStates.get(l)!.data), `hidden ${l}`);
  const r32 = await run("forward", ckpt.dir, "--ids", ids.join(","), "--json", "--activations", "float32", "--kv-cache", "f32");
  assert.is(r32.code, 0, r32.stderr);
  const f32 = JSON.parse(r32.stdout) as { logits: number[][]; hiddenStates: number[][][] };
  const ref = referenceForward(ckpt.config, ckpt.weights, ids);
  assert.ok(relativeError(flatten(f32.logits), flatten(ref.logits)) <= 1e-4);
  for (let l = 0; l <= spec.layers; l++) {
    assert.ok(relativeError(flatten(f32.hiddenStates[l]), flatten(ref.hiddenStates[l])) <= 1e-4, `hidden ${l}`);
  }
  const bad = await run("inspect", ckpt.dir, "--activations", "f16");
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--activations must be one of auto, float32, bfloat16, got "f16"/);
  const shown = await run("inspect", ckpt.dir, "--json", "--activations", "bfloat16");
  assert.is(JSON.parse(shown.stdout).activations, "bfloat16");
});

test("forward --text tokenizes with the checkpoint's tokenizer", async () => {
  const r = await run("forward", ckpt.dir, "--text", "int main() {", "--json");
  assert.is(r.code, 0, r.stderr);
  assert.ok(JSON.parse(r.stdout).logits.length > 1);
});

test("forward without --json lists each token with its top 5 next tokens", async () => {
  const r = await run("forward", ckpt.dir, "--ids", "5,17,2");
  assert.is(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split("\n");
  assert.is(lines.length, 3);
  assert.match(lines[0], /^\s+0\s+5 ".*"\s+-> (\d+ ".*" \(-?\d+\.\d\d\)(, )?){5}$/);
});

test("forward --logits last|none limits the logits printed; the listing's top 5 equal a full sort", async () => {
  const ids = [5, 17, 2, 250];
  const all = JSON.parse((await run("forward", ckpt.dir, "--ids", ids.join(","), "--json")).stdout) as { logits: number[][] };
  const last = await run("forward", ckpt.dir, "--ids", ids.join(","), "--json", "--logits", "last");
  assert.is(last.code, 0, last.stderr);
  const lastOut = JSON.parse(last.stdout) as { logits: number[][]; hiddenStates: number[][][] };
  // One row through the LM head (AVX-512) vs four (AMX tiles, under the default
  // activations on AMX): the same BF16-rounded products, summed in another order.
  assert.is(lastOut.logits.length, 1);
  assert.ok(relativeError(Float64Array.from(lastOut.logits[0]), Float64Array.from(all.logits[3])) <= 1e-5);
  assert.is(lastOut.hiddenStates[0].length, ids.length);
  const none = JSON.parse((await run("forward", ckpt.dir, "--ids", ids.join(","), "--json", "--logits", "none")).stdout);
  assert.equal(none.logits, []);
  const listing = (await run("forward", ckpt.dir, "--ids", ids.join(","))).stdout.trimEnd().split("\n");
  listing.forEach((line, t) => {
    const shown = [...line.split("->")[1].matchAll(/(\d+) "/g)].map((m) => Number(m[1]));
    const sorted = all.logits[t].map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 5).map((x) => x[1]);
    assert.equal(shown, sorted, `token ${t}`);
  });
  const lastListing = (await run("forward", ckpt.dir, "--ids", ids.join(","), "--logits", "last")).stdout.trimEnd().split("\n");
  assert.is(lastListing.length, ids.length);
  assert.ok(!lastListing[0].includes("->") && lastListing[3].includes("->"));
});

test("generate --ids works without a tokenizer and prints token ids; a prompt may start with '-'", async () => {
  const bare = await makeTinyCheckpoint(join(root, "bare"), { ...spec, tokenizer: false });
  const r = await run("generate", bare.dir, "--ids", "1,2,3", "--max-tokens", "5", "--seed", "2", "--temperature", "0.9");
  assert.is(r.code, 0, r.stderr);
  const printed = r.stdout.trim().split(" ").map(Number);
  const { Model } = await import("../../lib/index.js");
  const model = await Model.load(bare.dir);
  const expected = await model.complete([1, 2, 3], { maxTokens: 5, seed: 2, temperature: 0.9 });
  assert.equal(printed, expected.tokens);
  const dash = await run("generate", ckpt.dir, "-x = 1 # --not-a-flag", "--max-tokens", "3");
  assert.is(dash.code, 0, dash.stderr);
  const dashed = await run("generate", ckpt.dir, "--max-tokens", "3", "--", "--version");
  assert.is(dashed.code, 0, dashed.stderr);
});

test("generate streams text to stdout", async () => {
  const r = await run("generate", ckpt.dir, "def f(x):", "--max-tokens", "8", "--temperature", "0.7", "--seed", "3");
  assert.is(r.code, 0, r.stderr);
  const again = await run("generate", ckpt.dir, "def f(x):", "--max-tokens", "8", "--temperature", "0.7", "--seed", "3");
  assert.is(again.stdout, r.stdout);
});

test("a reader that closes the pipe early ends the CLI quietly", async () => {
  const { spawn } = await import("node:child_process");
  const child = spawn(process.execPath, [cli, "forward", ckpt.dir, "--ids", "1,2,3,4,5,6,7,8", "--json"]);
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  child.stdout.once("data", () => child.stdout.destroy()); // like `| head -c 100`
  const code = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
  assert.is(stderr, "", stderr);
  assert.is(code, 0);
});

test("bad usage exits 2 with a message; runtime errors exit 1 with the code", async () => {
  const cases: [string[], number, RegExp][] = [
    [[], 2, /usage:/],
    [["frobnicate"], 2, /unknown command "frobnicate"/],
    [["forward", ckpt.dir, "--ids", "1,x"], 2, /--ids entry 1 \("x"\)/],
    [["forward", ckpt.dir], 2, /exactly one of --ids or --text/],
    [["generate", ckpt.dir, "p", "--max-tokens", "lots"], 2, /--max-tokens must be an integer/],
    [["generate", ckpt.dir, "p", "--top-p", "0"], 2, /--top-p must be in \(0, 1\], got 0/],
    [["generate", ckpt.dir, "p", "--temperature", "-1"], 2, /--temperature must be in \[0, /],
    [["generate", ckpt.dir, "p", "--seed", "1.5"], 2, /--seed must be an integer, got "1.5"/],
    [["generate", ckpt.dir, "p", "--max-tokens", "0x10"], 2, /--max-tokens must be an integer, got "0x10"/],
    [["generate", ckpt.dir, "p", "--max-tokens", "0"], 2, /--max-tokens must be in \[1, /],
    [["forward", ckpt.dir, "--ids", "1", "--logits", "some"], 2, /--logits must be all, last or none/],
    [["forward", ckpt.dir, "--ids", `1,${spec.vocab}`], 1, /\[ERR_TOKEN_ID\]/],
    [["inspect", join(root, "nope")], 1, /\[ERR_CHECKPOINT\]/],
    [["inspect", ckpt.dir, "--bogus"], 2, /bogus/],
  ];
  for (const [args, code, message] of cases) {
    const r = await run(...args);
    assert.is(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr + r.stdout, message);
  }
});

test.run();
