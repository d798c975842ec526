// `deepguard train` as a user runs it: --json step lines with every loss term, the
// PEFT adapter and guard files in --out, --resume, usage errors; then forward and
// generate with --adapter.
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { parseLayers } from "../../lib/cli/train.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { runCli } from "../support/cli.js";

const SVEN = join(process.cwd(), "..", "shared", "datasets", "sven");
let root = "";
let ckpt: TinyCheckpoint;

const run = (...args: string[]) => runCli(args);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-cli-train-"));
  ckpt = await makeTinyCheckpoint(join(root, "m"), { ...tinySpecs()["qwen2-f32-gqa-tied"], maxPositions: 4096 });
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

const common = ["--data", join(SVEN, "val"), "--max-tokens", "110", "--rank", "4", "--batch-size", "1", "--json"];

test("train --json: one object per step with every term; the adapter and guard land in --out; --resume continues", async () => {
  const out = join(root, "run");
  const r = await run("train", ckpt.dir, ...common, "--out", out, "--max-steps", "2", "--layers=-2--1", "--security", "0.5");
  assert.is(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  const steps = lines.filter((l) => l.type === "step");
  assert.is(steps.length, 2);
  for (const s of steps) for (const k of ["step", "loss", "generation", "security", "kl", "lr", "gradNorm", "tokensPerSec"]) assert.type(s[k], "number", k);
  assert.is(lines.at(-1).type, "done");
  const files = await readdir(out);
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "guard.json", "guard.safetensors", "last"]) assert.ok(files.includes(f), f);
  const again = await run("train", ckpt.dir, ...common, "--out", out, "--max-steps", "3", "--resume");
  assert.is(again.code, 0, again.stderr);
  const resumed = again.stdout.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => l.type === "step");
  assert.equal(resumed.map((s) => s.step), [3]);

  const fwd = await run("forward", ckpt.dir, "--ids", "1,2,3", "--adapter", out, "--json");
  assert.is(fwd.code, 0, fwd.stderr);
  const gen = await run("generate", ckpt.dir, "def f(", "--adapter", out, "--max-tokens", "3");
  assert.is(gen.code, 0, gen.stderr);
});

test("train: usage errors exit 2 and name the flag", async () => {
  for (const [args, pattern] of [
    [["--out", join(root, "x")], /--data/],
    [["--data", join(SVEN, "val")], /--out/],
    [[...common, "--out", join(root, "y"), "--layers", "x-y"], /--layers/],
    [[...common, "--out", join(root, "y"), "--targets", "q_proj,zz"], /--targets/],
    [[...common, "--out", join(root, "y"), "--rank", "1.5"], /--rank/],
  ] as const) {
    const r = await run("train", ckpt.dir, ...args);
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, pattern);
  }
  const r = await run("train", ckpt.dir, ...common, "--out", join(root, "z"), "--rank", "0", "--security", "0");
  assert.is(r.code, 1);
  assert.match(r.stderr, /ERR_ARGUMENT.*rank/);
  assert.equal(parseLayers("20-23"), [20, 21, 22, 23]);
  assert.equal(parseLayers("-4,-1"), [-4, -1]);
  assert.is(parseLayers("auto"), "auto");
});

test.run();
