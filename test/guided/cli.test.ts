// CLI: deepguard generate --guard, deepguard bench-k --json, deepguard eval --guard.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Generator, Guard, Model } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { runCli } from "../support/cli.js";

const here = dirname(fileURLToPath(import.meta.url));
const DATA = join(here, "..", "..", "..", "..", "shared", "datasets");
let root = "", modelDir = "", guardDir = "";
let model: Model;

const run = (...args: string[]) => runCli(args);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-guided-cli-"));
  modelDir = join(root, "model");
  await makeTinyCheckpoint(modelDir, { ...tinySpecs()["llama-f32-untied-mha"], vocab: 300, maxPositions: 512 });
  model = await Model.load(modelDir);
  const guard = Guard.create(model, { layers: [-2, -1], seed: 4 });
  for (let i = 0; i < guard.tokenStats.length; i++) guard.tokenStats[i] = ((i * 7) % 11) / 10 - 0.5;
  guardDir = join(root, "guard");
  await guard.save(guardDir);
});
test.after(async () => {
  model?.dispose();
  await rm(root, { recursive: true, force: true });
});

test("generate --guard: the guided text on stdout, each sample's final score on stderr; same as the API", async () => {
  const r = await run("generate", modelDir, "def f(x):", "--guard", guardDir, "--interval", "3", "--strength", "2", "--max-tokens", "10", "--temperature", "1", "--seed", "5");
  assert.is(r.code, 0, r.stderr);
  const gen = new Generator(model, await Guard.load(guardDir, model), { interval: 3, strength: 2 });
  const api = await gen.complete("def f(x):", { maxTokens: 10, temperature: 1, seed: 5 });
  assert.is(r.stdout, api.samples[0].text + "\n");
  assert.match(r.stderr, new RegExp(`sample 1: score ${api.samples[0].score.toFixed(4)} \\(seed 5\\)`));
  const n = await run("generate", modelDir, "def f(x):", "--guard", guardDir, "--n", "3", "--max-tokens", "6", "--temperature", "1", "--seed", "1", "--interval", "inf");
  assert.is(n.code, 0, n.stderr);
  assert.is(n.stdout.match(/^--- sample \d/gm)?.length, 3);
  assert.is(n.stderr.match(/^sample \d: score 0\.\d{4}/gm)?.length, 3);
  for (const [args, code, pattern] of [
    [["--interval", "0"], 1, /ERR_ARGUMENT.*interval/],
    [["--interval", "1.5"], 2, /--interval must be an integer/],
    [["--strength=-1"], 1, /ERR_ARGUMENT.*strength/],
    [["--n", "0"], 1, /ERR_ARGUMENT.*"n"/],
  ] as const) {
    const b = await run("generate", modelDir, "x", "--guard", guardDir, ...args);
    assert.is(b.code, code, b.stderr);
    assert.match(b.stderr, pattern);
  }
  const missing = await run("generate", modelDir, "x", "--guard", join(root, "nope"));
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /ERR_GUARD_FILE/);
});

test("bench-k --json: one object of rows {strategy, k, latencyMs, tokensPerSec, overheadPct}; --out writes JSON and SVG", async () => {
  const out = join(root, "bench");
  const r = await run("bench-k", modelDir, "--k", "1,4,inf", "--tokens", "6", "--prompts", "1", "--repeats", "1", "--prompt-tokens", "5", "--json", "--out", out);
  assert.is(r.code, 0, r.stderr);
  const parsed = JSON.parse(r.stdout);
  assert.equal(Object.keys(parsed), ["rows"]);
  const rows = parsed.rows as Record<string, unknown>[];
  assert.equal(rows.map((x) => [x.strategy, x.k]), [["plain", null], ["captured", 1], ["captured", 4], ["captured", "inf"], ["reforward", 1], ["reforward", 4], ["reforward", "inf"]]);
  for (const row of rows) {
    assert.equal(Object.keys(row), ["strategy", "k", "latencyMs", "tokensPerSec", "overheadPct"]);
    assert.ok((row.latencyMs as number) > 0 && Math.abs((row.tokensPerSec as number) - 6000 / (row.latencyMs as number)) < 1e-6);
  }
  assert.is(rows[0].overheadPct, 0);
  const file = JSON.parse(await readFile(join(out, "latency-vs-k.json"), "utf8"));
  assert.equal(file.rows, rows);
  assert.is(file.loadAverage.length, 3);
  const svg = await readFile(join(out, "latency-vs-k.svg"), "utf8");
  assert.match(svg, /^<svg[^>]*xmlns/);
  assert.is(svg.match(/<polyline/g)?.length, 2, "one line per guided strategy");
  const table = await run("bench-k", modelDir, "--k", "2", "--tokens", "4", "--prompts", "1", "--repeats", "1", "--prompt-tokens", "4");
  assert.is(table.code, 0, table.stderr);
  assert.match(table.stdout, /strategy\s+k\s+latency ms\s+tokens\/s\s+overhead %/);
  const bad = await run("bench-k", modelDir, "--k", "0,2");
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--k entry 0/);
});

test("eval --guard / --interval run the guided generator", async () => {
  const out = join(root, "eval-run");
  const r = await run("eval", modelDir, "--scenarios", join(DATA, "sec_eval"), "--scenario", "cwe-089/0-py", "--samples", "1", "--max-tokens", "6", "--no-functional", "--guard", guardDir, "--interval", "2", "--out", out, "--json");
  assert.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.match(summary.generator, /\+guard\(interval 2, strength 1\)/);
  const bad = await run("eval", modelDir, "--scenarios", join(DATA, "sec_eval"), "--interval", "2");
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--interval needs --guard/);
});

test.run();
