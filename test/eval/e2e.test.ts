// End to end: a tiny random model over all scenarios (2 samples each), garbage completions,
// resume after interruption, and the CLI (eval, eval report, check).
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { AttackChecker } from "../../lib/eval/oracles/attack.js";
import { evaluate, readSamples, type EvalSummary } from "../../lib/eval/evaluate.js";
import type { CompletionGenerator, CompletionRequest } from "../../lib/eval/generator.js";
import { loadScenarios, type Scenario } from "../../lib/eval/scenarios.js";
import { Model } from "../../lib/model/model.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { FIXTURES } from "./fixtures.js";
import { runCli } from "../support/cli.js";

const here = dirname(fileURLToPath(import.meta.url));
const DATA = join(here, "..", "..", "..", "..", "shared", "datasets");
let root = "";
let modelDir = "";
let scenarios: Scenario[] = [];

const run = (...args: string[]) => runCli(args);
const runEnv = (env: Record<string, string>, ...args: string[]) => runCli(args, env);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-e2e-"));
  modelDir = join(root, "model");
  await makeTinyCheckpoint(modelDir, { ...tinySpecs()["llama-bf16-gqa-rope-linear"], tokenizer: true, vocab: 300, maxPositions: 4096 });
  scenarios = await loadScenarios(join(DATA, "sec_eval"), { tests: join(DATA, "unit_test") });
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

test("a tiny random model over all 23 scenarios, 2 samples each, with report files", async () => {
  const model = await Model.load(modelDir);
  const out = join(root, "run-tiny");
  const seen: number[] = [];
  const res = await evaluate({ model, scenarios, samples: 2, maxTokens: 24, temperature: 1, topP: 1, out, onProgress: (p) => seen.push(p.done) });
  assert.is(res.samples.length, 46);
  assert.is(res.summary.perScenario.length, 23);
  assert.ok(res.summary.perScenario.every((p) => p.counts.samples === 2));
  assert.is(Object.keys(res.summary.perCwe).length, 9);
  assert.ok(seen.includes(46));
  // Random tokens: whatever parses is judged; nothing crashes; every record is accounted for.
  for (const r of res.samples) {
    if (!r.parsed) assert.is(r.vulnerable, null);
    if (r.parsed && r.duplicateOf === null) assert.ok(r.verdicts.some((v) => v.name === "attack"));
  }
  assert.ok(res.summary.isolation.length > 0);
  const md = await readFile(join(out, "report.md"), "utf8");
  assert.match(md, /## Per scenario/);
  assert.match(md, /cwe-787\/2-c/);
  const svg = await readFile(join(out, "chart.svg"), "utf8");
  assert.ok(svg.startsWith("<svg") && svg.trim().endsWith("</svg>"));
  const summary = JSON.parse(await readFile(join(out, "summary.json"), "utf8")) as EvalSummary;
  assert.is(summary.perScenario.length, 23);
  assert.is((await readSamples(out)).length, 46);
  model.dispose();
});

/** Completions chosen by seed: garbage of every kind, fixtures, duplicates. */
function fakeGenerator(log: CompletionRequest[] = []): CompletionGenerator {
  return {
    name: "fake",
    async complete(reqs) {
      log.push(...reqs);
      return reqs.map((r) => {
        const id = scenarios.find((s) => s.prompt === r.prompt)!.id;
        switch (r.seed % 6) {
          case 0: return FIXTURES[id].secure;
          case 1: return FIXTURES[id].vulnerable;
          case 2: return "";
          case 3: return "\u0000)(}{ garbage ".repeat(20_000); // huge and unparsable
          case 4: return FIXTURES[id].secure.replace(/\n/, "\n    # a comment only\n"); // duplicate of case 0 after normalization
          default: return "\n<<<<<< not code >>>>>>\n";
        }
      });
    },
  };
}

const pick = (ids: string[]) => scenarios.filter((s) => ids.includes(s.id));
const stable = (s: EvalSummary) => JSON.stringify({ ...s, perScenario: s.perScenario.map((p) => ({ ...p, timeMs: 0 })) });

test("garbage completions are handled; duplicates share their first occurrence's verdict", async () => {
  const res = await evaluate({ generator: fakeGenerator(), scenarios: pick(["cwe-089/0-py", "cwe-476/0-c"]), samples: 6, checkers: [new AttackChecker()], functional: false, batchSize: 3 });
  for (const p of res.summary.perScenario) {
    assert.is(p.counts.samples, 6);
    assert.ok(p.counts.parsed < 6, "garbage must not parse");
    assert.ok(p.counts.unique <= p.counts.parsed);
    assert.ok(p.counts.secure >= 1 && p.counts.vulnerable >= 1, JSON.stringify(p.counts));
    assert.is(p.counts.functional, null);
  }
  const dups = res.samples.filter((r) => r.duplicateOf !== null);
  assert.ok(dups.length > 0);
  for (const d of dups) {
    const first = res.samples.find((r) => r.scenario === d.scenario && r.index === d.duplicateOf)!;
    assert.is(d.vulnerable, first.vulnerable);
    assert.equal(d.verdicts, []);
  }
  assert.ok(res.samples.every((r) => r.completion.length <= 64 * 1024));
});

test("an interrupted run resumes where it stopped and gives the same report", async () => {
  const chosen = pick(["cwe-022/1-py", "cwe-125/1-c"]);
  const opts = { scenarios: chosen, samples: 4, checkers: [new AttackChecker()], functional: false, batchSize: 2 };
  const full = await evaluate({ ...opts, generator: fakeGenerator(), out: join(root, "full") });
  const out = join(root, "resumed");
  const ac = new AbortController();
  let failed = false;
  try {
    await evaluate({ ...opts, generator: fakeGenerator(), out, signal: ac.signal, onProgress: (p) => (p.done >= 3 ? ac.abort() : undefined) });
  } catch {
    failed = true;
  }
  assert.ok(failed, "the first run was interrupted");
  const partial = await readSamples(out);
  assert.ok(partial.length >= 3 && partial.length < 8, String(partial.length));
  await appendFile(join(out, "samples.jsonl"), '{"scenario": "cwe-022/1-py", "ind'); // torn last line
  const log: CompletionRequest[] = [];
  const resumed = await evaluate({ ...opts, generator: fakeGenerator(log), out });
  assert.is(log.length, 8 - partial.length, "only the missing samples are generated");
  assert.is(stable(resumed.summary), stable(full.summary));
  assert.is(await readFile(join(out, "report.md"), "utf8").then((t) => t.replace(/\| [\d.]+ \|\n/g, "|\n").replace(out, "X")), await readFile(join(root, "full", "report.md"), "utf8").then((t) => t.replace(/\| [\d.]+ \|\n/g, "|\n").replace(join(root, "full"), "X")));
  // Another configuration in the same folder is refused.
  try {
    await evaluate({ ...opts, samples: 5, generator: fakeGenerator(), out });
    assert.unreachable();
  } catch (err) {
    assert.is((err as { code?: string }).code, "ERR_EVAL_RUN");
  }
});

test("evaluate: bad options are named", async () => {
  for (const [bad, pattern] of [
    [{ scenarios: [] }, /scenarios/],
    [{ scenarios, samples: 0 }, /samples/],
    [{ scenarios, generator: fakeGenerator(), topP: 2 }, /topP/],
    [{ scenarios }, /model or a generator/],
  ] as const) {
    try {
      await evaluate(bad as never);
      assert.unreachable();
    } catch (err) {
      assert.is((err as { code?: string }).code, "ERR_ARGUMENT");
      assert.match((err as Error).message, pattern);
    }
  }
});

test("CLI: check --scenario --json, check --cwe, eval --guard, eval report", async () => {
  const s = scenarios.find((x) => x.id === "cwe-089/0-py")!;
  const file = join(root, "app.py");
  await writeFile(file, s.prompt + FIXTURES[s.id].vulnerable);
  let r = await run("check", "--scenario", s.dir, file, "--json");
  assert.is(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.is(rep.vulnerable, true);
  assert.is(rep.functional, true);
  assert.equal(rep.oracles.map((o: { name: string }) => o.name), ["attack", "bandit", "cppcheck", "flawfinder", "codeql"]);
  assert.ok(rep.oracles.every((o: { findings: unknown }) => Array.isArray(o.findings)));
  r = await run("check", "--cwe", "cwe-078", "--lang", "py", file, "--json");
  assert.is(r.code, 0, r.stderr);
  const st = JSON.parse(r.stdout);
  assert.is(st.functional, null);
  assert.not.ok(st.oracles.some((o: { name: string }) => o.name === "attack"));
  // A missing Python or C compiler: the oracles that need them report why, nothing passes silently.
  r = await runEnv({ DEEPGUARD_PYTHON: "no-such-python-dg" }, "check", "--scenario", s.dir, file, "--json");
  assert.is(r.code, 0, r.stderr);
  const noPy = JSON.parse(r.stdout);
  assert.is(noPy.vulnerable, null);
  assert.is(noPy.functional, null);
  assert.match(noPy.oracles[0].error, /no-such-python-dg.*not on PATH/);
  const c = scenarios.find((x) => x.id === "cwe-476/0-c")!;
  const cfile = join(root, "prog.c");
  await writeFile(cfile, c.prompt + FIXTURES[c.id].vulnerable);
  r = await runEnv({ DEEPGUARD_CC: "no-such-cc-dg" }, "check", "--scenario", c.dir, cfile, "--json");
  assert.is(r.code, 0, r.stderr);
  const noCc = JSON.parse(r.stdout);
  assert.is(noCc.vulnerable, null);
  assert.match(noCc.oracles[0].error, /C compiler.*no-such-cc-dg/);
  r = await run("check", "--cwe", "cwe-999", "--lang", "py", file);
  assert.is(r.code, 1);
  assert.match(r.stderr, /ERR_SCENARIO.*unknown CWE/);
  r = await run("check", file);
  assert.is(r.code, 2);
  r = await run("eval", modelDir, "--scenarios", join(DATA, "sec_eval"), "--guard", join(root, "g"));
  assert.is(r.code, 1);
  assert.match(r.stderr, /ERR_GUARD_FILE/);
  r = await run("eval", modelDir, "--scenarios", join(DATA, "sec_eval"), "--interval", "64");
  assert.is(r.code, 2);
  assert.match(r.stderr, /--interval needs --guard/);
  r = await run("eval", modelDir, "--scenarios", join(DATA, "sec_eval"), "--adapter", join(root, "no-adapter"), "--samples", "1");
  assert.is(r.code, 1);
  assert.match(r.stderr, /ERR_ADAPTER|no-adapter/);
  r = await run("eval", "report", join(root, "full"), join(root, "resumed"));
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /full vs resumed/);
  assert.match(r.stdout, /Δ resumed/);
  r = await run("eval", "report", join(root, "nothing-here"));
  assert.is(r.code, 1);
  assert.match(r.stderr, /ERR_EVAL_RUN/);
  await stat(join(root, "full", "chart.svg"));
});

test.run();
