// The default model shipped in models/default/ (issue 9): it loads with no
// folder named, generates deterministically for a seed, its guard and adapter
// load onto it (and onto nothing else), the CLI uses it, and the README's quick
// start runs as written.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { DEFAULT_GUARD_DIR, DEFAULT_MODEL_DIR, Generator, Guard, Model } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { runCli } from "../support/cli.js";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..", ".."); // dist/test/model -> the checkout
let model: Model;

test.before(async () => {
  model = await Model.loadDefault();
});
test.after(() => model?.dispose());

test("Model.loadDefault() and Model.load() with no folder load models/default/", async () => {
  assert.is(DEFAULT_MODEL_DIR, join(repo, "models", "default"));
  assert.is(model.info.directory, DEFAULT_MODEL_DIR);
  assert.is(model.config.architecture, "Qwen2ForCausalLM");
  assert.ok(model.tokenizer, "the default model has its tokenizer");
  const again = await Model.load();
  try {
    assert.is(again.info.directory, DEFAULT_MODEL_DIR);
    assert.is(again.info.parameterCount, model.info.parameterCount);
  } finally {
    again.dispose();
  }
});

test("the shipped folder: BF16 weights, at most 40 MB in all, a model card", async () => {
  assert.is(model.info.dtype, "BF16");
  let total = 0;
  for (const f of ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"]) {
    total += (await stat(join(DEFAULT_MODEL_DIR, f))).size;
  }
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "guard.json", "guard.safetensors"]) total += (await stat(join(DEFAULT_GUARD_DIR, f))).size;
  assert.ok(total <= 40 * 1024 * 1024, `models/default is ${total} bytes`);
  const card = await readFile(join(DEFAULT_MODEL_DIR, "README.md"), "utf8");
  for (const section of ["Data", "Licen", "Training", "Held-out", "Limitations"]) assert.match(card, section);
});

test("generation is deterministic for a seed", async () => {
  const run = async (seed: number) => {
    let text = "";
    for await (const piece of model.generate("def read_file(path):", { maxTokens: 24, temperature: 0.8, seed })) text += piece.text;
    return text;
  };
  const a = await run(7);
  assert.ok(a.length > 0);
  assert.is(await run(7), a);
});

test("Guard.loadDefault attaches the trained guard and adapter; a guided run is deterministic", async () => {
  const m = await Model.loadDefault();
  try {
    const guard = await Guard.loadDefault(m);
    assert.ok(guard.layers.length > 0);
    assert.ok(m.adapter, "the default adapter is attached");
    const gen = new Generator(m, guard, { interval: 8 });
    const a = await gen.complete("def read_file(path):", { maxTokens: 16, temperature: 0.8, seed: 3 });
    const b = await gen.complete("def read_file(path):", { maxTokens: 16, temperature: 0.8, seed: 3 });
    assert.is(a.samples[0].text, b.samples[0].text);
    assert.ok(a.samples[0].score >= 0 && a.samples[0].score <= 1);
    const bare = await Model.loadDefault();
    try {
      await Guard.loadDefault(bare, { adapter: false });
      assert.is(bare.adapter, null);
      await Guard.loadDefault(bare, { adapter: "yes" } as never).then(
        () => assert.unreachable("accepted a string"),
        (e: { code?: string; message: string }) => {
          assert.is(e.code, "ERR_ARGUMENT");
          assert.match(e.message, /adapter/);
        },
      );
    } finally {
      bare.dispose();
    }
  } finally {
    m.dispose();
  }
});

test("the default guard refuses any other base model", async () => {
  const root = await mkdtemp(join(tmpdir(), "dg-default-"));
  try {
    await makeTinyCheckpoint(root, tinySpecs()["qwen2-f32-gqa-tied"]);
    const other = await Model.load(root);
    try {
      await Guard.loadDefault(other).then(
        () => assert.unreachable("loaded"),
        (e: { code?: string }) => assert.is(e.code, "ERR_GUARD_MISMATCH"),
      );
    } finally {
      other.dispose();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("CLI: no model folder means the default model; generate is guarded unless --no-guard", async () => {
  const inspect = await runCli(["inspect", "--json"]);
  assert.is(inspect.code, 0, inspect.stderr);
  assert.is(JSON.parse(inspect.stdout).directory, DEFAULT_MODEL_DIR);
  const guided = await runCli(["generate", "def read_file(path):", "--max-tokens", "12", "--seed", "1"]);
  assert.is(guided.code, 0, guided.stderr);
  assert.match(guided.stderr, /^sample 1: score 0\.\d{4}/m);
  const plain = await runCli(["generate", "def read_file(path):", "--max-tokens", "12", "--seed", "1", "--no-guard"]);
  assert.is(plain.code, 0, plain.stderr);
  assert.not.match(plain.stderr, /score/);
  assert.ok(plain.stdout.trim().length > 0);
  const both = await runCli(["generate", "x", "--guard", DEFAULT_GUARD_DIR, "--no-guard"]);
  assert.is(both.code, 2);
  assert.match(both.stderr, /--guard and --no-guard/);
  const stray = await runCli(["generate", "x", "--no-guard", "--interval", "4"]);
  assert.is(stray.code, 2);
  assert.match(stray.stderr, /--interval needs guidance/);
  const dir = await mkdtemp(join(tmpdir(), "dg-default-scan-"));
  try {
    const file = join(dir, "query.py");
    await writeFile(file, 'def find(db, name):\n    return db.execute("SELECT * FROM users WHERE name = \'" + name + "\'")\n');
    const scan = await runCli(["scan", "--json", file]);
    assert.is(scan.code, 0, scan.stderr);
    const s = JSON.parse(scan.stdout).sequence;
    assert.ok(s >= 0 && s <= 1, scan.stdout);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("README quick start: its shell commands and its TypeScript run as written", async () => {
  const readme = await readFile(join(repo, "README.md"), "utf8");
  const section = readme.split(/^## /m).find((s) => s.startsWith("Quick start"));
  assert.ok(section, "README has a Quick start section");
  const blocks = [...section!.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], code: m[2] }));
  const sh = blocks.find((b) => b.lang === "sh")!;
  const commands = sh.code.split("\n").map((l) => l.replace(/#.*$/, "").trim()).filter((l) => l.startsWith("npx deepguard "));
  assert.ok(commands.length >= 2);
  for (const line of commands) {
    const args = [...line.slice("npx deepguard ".length).matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
    const r = await runCli(args);
    assert.is(r.code, 0, `${line}: ${r.stderr}`);
    assert.ok(r.stdout.trim().length > 0, line);
  }
  const ts = blocks.find((b) => b.lang === "ts")!;
  const dir = await mkdtemp(join(tmpdir(), "dg-readme-"));
  try {
    const file = join(dir, "quickstart.mjs");
    const entry = join(repo, "dist", "lib", "index.js");
    await writeFile(file, ts.code.replace(/from "deepguard"/g, `from ${JSON.stringify(entry)}`));
    const { stdout } = await promisify(execFile)(process.execPath, [file], { maxBuffer: 1 << 24 });
    assert.ok(stdout.length > 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
