// deepguard guard train and deepguard scan as a user runs them: child processes,
// their output and exit codes, the files they write.
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Guard, Model } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { runCli } from "../support/cli.js";

const SVEN = join(process.cwd(), "..", "shared", "datasets", "sven");
let root = "", modelDir = "";

const run = (...args: string[]) => runCli(args);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-guard-cli-"));
  modelDir = (await makeTinyCheckpoint(join(root, "m"), { ...tinySpecs()["qwen2-f32-gqa-tied"], maxPositions: 4096 })).dir;
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

const SOURCE = 'def f(x):\n    q = "SELECT * FROM t WHERE id=%s" % x\n\n    return db.execute(q)  # é\n';

test("guard train writes a loadable guard; scan --json / --html / heat map describe the file token by token", async () => {
  const out = join(root, "guard");
  const t = await run("guard", "train", modelDir, "--data", join(SVEN, "train", "cwe-089.jsonl"), "--val", join(SVEN, "val", "cwe-089.jsonl"),
    "--out", out, "--layers", "1-2", "--aggregation", "mean", "--epochs", "1", "--seed", "3", "--max-tokens", "120");
  assert.is(t.code, 0, t.stderr);
  assert.match(t.stderr, /epoch 1\/1: train loss [\d.]+, val margin loss [\d.]+/);
  const summary = JSON.parse(t.stdout);
  assert.equal(summary.layers, [1, 2]);
  assert.is(summary.epochs.length, 1);
  assert.equal((await readdir(out)).sort(), ["guard.json", "guard.safetensors"]);

  const file = join(root, "s.py");
  await writeFile(file, SOURCE);
  const html = join(root, "s.html");
  const s = await run("scan", modelDir, "--guard", out, file, "--json", "--html", html);
  assert.is(s.code, 0, s.stderr);
  const r = JSON.parse(s.stdout) as { sequence: number; tokens: { id: number; text: string; score: number }[]; lines: { line: number; score: number }[] };
  const model = await Model.load(modelDir);
  try {
    assert.equal(r.tokens.map((x) => x.id), model.tokenize(SOURCE));
    const scored = await (await Guard.load(out, model)).score(model.tokenize(SOURCE));
    r.tokens.forEach((x, i) => assert.ok(Math.abs(x.score - scored.tokens[i]) < 1e-7));
    assert.ok(Math.abs(r.sequence - scored.sequence) < 1e-9);
  } finally {
    model.dispose();
  }
  assert.is(r.tokens.map((x) => x.text).join(""), SOURCE);
  assert.equal(r.lines.map((l) => l.line), [1, 2, 4]);
  const line2 = r.tokens.filter((_, i) => {
    const start = r.tokens.slice(0, i).map((x) => x.text).join("").length;
    return start >= SOURCE.indexOf("    q") && start < SOURCE.indexOf("\n\n");
  });
  const mean2 = line2.reduce((a, x) => a + x.score, 0) / line2.length;
  assert.ok(Math.abs(r.lines[1].score - mean2) < 0.05, "a line's score is the mean of its tokens");
  const page = await readFile(html, "utf8");
  assert.match(page, /^<!doctype html>/);
  assert.is((page.match(/<span style="background:hsla/g) ?? []).length, r.tokens.filter((x) => x.text !== "").length);
  assert.ok(r.tokens.some((x) => x.text === ""), "the split é leaves one token without text");
  assert.match(page, /&quot;SELECT \* FROM t WHERE id=%s&quot;|&quot;/);

  const plain = await run("scan", modelDir, "--guard", out, file);
  assert.is(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, /^sequence score 0\.\d{4}/);
  assert.match(plain.stdout, /\n2 0\.\d{3} [█░]{8} │ {5}q = "SELECT/);
  assert.not.match(plain.stdout, /\x1b\[/, "no colors when stdout is not a terminal");
});

test("guard train / scan: usage and input errors exit non-zero with the reason", async () => {
  const cases: [string[], number, RegExp][] = [
    [["guard"], 2, /guard needs a subcommand/],
    [["guard", "fit", modelDir], 2, /unknown guard subcommand "fit"/],
    [["guard", "train", modelDir, "--data", "x", "--val", "y"], 2, /needs --out/],
    [["guard", "train", modelDir, "--data", "x", "--val", "y", "--out", "z", "--aggregation", "max"], 2, /--aggregation must be one of/],
    [["guard", "train", modelDir, "--data", "x", "--val", "y", "--out", "z", "--layers", "3-1"], 2, /end before start/],
    [["guard", "train", modelDir, "--data", "x", "--val", "y", "--out", "z", "--layers", "a"], 2, /not an integer/],
    [["guard", "train", modelDir, "--data", join(SVEN, "val"), "--val", join(SVEN, "val"), "--out", join(root, "z"), "--layers", "0-7"], 1, /ERR_ARGUMENT.*guard layer 3 is out of range/],
    [["scan", modelDir, join(root, "nothing.py")], 2, /needs --guard/],
    [["scan", modelDir, "--guard", join(root, "no-guard"), join(root, "nothing.py")], 1, /cannot read .*nothing\.py/],
  ];
  for (const [args, code, re] of cases) {
    const r = await run(...args);
    assert.is(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
  await writeFile(join(root, "a.py"), "x = 1\n");
  const r = await run("scan", modelDir, "--guard", join(root, "no-guard"), join(root, "a.py"));
  assert.is(r.code, 1);
  assert.match(r.stderr, /\[ERR_GUARD_FILE\].*guard\.json: cannot read/);
});

test.run();
