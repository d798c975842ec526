// probeLayers on a tiny random model and a slice of SVEN, its report files, and the CLI.
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Dataset, Model, probeLayers, type ProbeProgress, type ProbeReport } from "../../lib/index.js";
import { extractFeatures, specialPrefix } from "../../lib/guard/probe.js";
import { probeSvg, probeTable, writeProbeReport } from "../../lib/guard/probe-report.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";
import { runCli } from "../support/cli.js";

const SVEN_VAL = join(process.cwd(), "..", "shared", "datasets", "sven", "val");
const spec = { ...tinySpecs()["qwen2-f32-gqa-tied"], layers: 3, maxPositions: 1024 };
let root = "";
let model: Model;
let slice: Dataset;
let report: ProbeReport;

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-probe-"));
  await makeTinyCheckpoint(join(root, "m"), spec);
  model = await Model.load(join(root, "m"));
  slice = await Dataset.fromSven(SVEN_VAL, { maxTokens: 256 }); // 14 pairs with the tiny tokenizer
});

test.after(async () => {
  model?.dispose();
  await rm(root, { recursive: true, force: true });
});

test("a report for every hidden state 0..L, progress for both phases, the band inside the upper half", async () => {
  const progress: ProbeProgress[] = [];
  report = await probeLayers(model, slice, { folds: 3, seed: 1, onProgress: (p) => progress.push(p) });
  const pairs = await slice.pairs(model);
  assert.is(report.layers.length, spec.layers + 1);
  assert.equal(report.layers.map((l) => l.layer), [0, 1, 2, 3]);
  for (const l of report.layers) {
    for (const v of [l.accuracy, l.auc]) assert.ok(v >= 0 && v <= 1, `layer ${l.layer}: ${v}`);
    assert.ok(l.accuracyStd >= 0 && l.aucStd >= 0);
  }
  assert.is(report.dataset.pairs, pairs.length);
  assert.is(report.dataset.tokens, pairs.reduce((n, p) => n + p.vulnerable.ids.length + p.secure.ids.length, 0));
  const best = Math.max(...report.layers.map((l) => l.auc));
  assert.is(report.bestAuc, best);
  assert.is(report.finalLayerDrop, best - report.layers[spec.layers].auc);
  assert.ok(report.recommendedLayers.length >= 1 && report.recommendedLayers.every((l) => l >= 2 && l <= 3));
  assert.is(report.unconvergedFits, 0);
  const forward = progress.filter((p) => p.phase === "forward");
  assert.is(forward.length, pairs.length * 2);
  assert.equal(forward.at(-1), { phase: "forward", done: pairs.length * 2, total: pairs.length * 2 });
  assert.equal(progress.filter((p) => p.phase === "fit").map((p) => p.done), [1, 2, 3, 4]);
  assert.ok(report.timings.forwardSeconds > 0 && report.timings.fitSeconds > 0);
  assert.ok(report.timings.totalSeconds >= report.timings.forwardSeconds + report.timings.fitSeconds - 1e-6);
});

test("deterministic for a seed; another seed deals other folds", async () => {
  const again = await probeLayers(model, slice, { folds: 3, seed: 1 });
  assert.equal(again.layers, report.layers);
  assert.equal(again.recommendedLayers, report.recommendedLayers);
  const other = await probeLayers(model, slice, { folds: 3, seed: 2 });
  assert.not.equal(other.layers, report.layers);
});

test("features: one forward per function, mean pooling equals a hand mean of the hidden states", async () => {
  const pairs = (await slice.pairs(model)).slice(0, 2);
  const mean = await extractFeatures(model, pairs, "mean");
  const changed = await extractFeatures(model, pairs, "changed");
  const hidden = spec.hidden;
  for (const [row, side] of [pairs[0].vulnerable, pairs[0].secure, pairs[1].vulnerable].entries()) {
    const out = await model.forward(side.ids, { hiddenStates: [2], logits: "none" });
    const h = out.hiddenStates.get(2)!;
    const sum = (mask: Uint8Array | null) => {
      const acc = new Float64Array(hidden);
      let n = 0;
      for (let t = 0; t < h.rows; t++) {
        if (mask && !mask[t]) continue;
        n++;
        for (let j = 0; j < hidden; j++) acc[j] += h.row(t)[j];
      }
      return Array.from(acc, (v) => Math.fround(v / n));
    };
    assert.equal(Array.from(mean.features[2].subarray(row * hidden, (row + 1) * hidden)), sum(null));
    const mask = side.changed.some((v) => v === 1) ? side.changed : null;
    assert.equal(Array.from(changed.features[2].subarray(row * hidden, (row + 1) * hidden)), sum(mask));
  }
});

test("a tokenizer that adds BOS: every forward starts with it, pooling leaves it out", async () => {
  const dir = join(root, "bos-model");
  await mkdir(dir);
  for (const f of ["config.json", "model.safetensors", "tokenizer_config.json"]) await copyFile(join(root, "m", f), join(dir, f));
  const json = JSON.parse(await readFile(join(root, "m", "tokenizer.json"), "utf8")) as { added_tokens: { id: number; content: string }[] };
  const bos = json.added_tokens[0];
  const special = { [bos.content]: { id: bos.content, ids: [bos.id], tokens: [bos.content] } };
  const templated = {
    ...json,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos.content, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos.content, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: special,
    },
  };
  await writeFile(join(dir, "tokenizer.json"), JSON.stringify(templated));
  const withBos = await Model.load(dir);
  assert.equal(specialPrefix(withBos), [bos.id]);
  assert.equal(specialPrefix(model), [], "the Qwen2-style fixture adds nothing");
  const pairs = (await slice.pairs(withBos)).slice(0, 1);
  const features = await extractFeatures(withBos, pairs, "mean");
  assert.equal(features.prefix, [bos.id]);
  const ids = pairs[0].secure.ids;
  const out = await withBos.forward([bos.id, ...ids], { hiddenStates: [1], logits: "none" });
  const h = out.hiddenStates.get(1)!;
  const expected = Array.from({ length: spec.hidden }, (_, j) => {
    let sum = 0;
    for (let t = 1; t < h.rows; t++) sum += h.row(t)[j];
    return Math.fround(sum / ids.length);
  });
  assert.equal(Array.from(features.features[1].subarray(spec.hidden, 2 * spec.hidden)), expected);
  withBos.dispose();
});

test("changed pooling runs and counts the functions with no changed token", async () => {
  const r = await probeLayers(model, slice, { folds: 2, seed: 3, pooling: "changed" });
  const pairs = await slice.pairs(model);
  const none = pairs.flatMap((p) => [p.vulnerable, p.secure]).filter((s) => !s.changed.some((v) => v === 1)).length;
  assert.is(r.changedFallbacks, none);
  assert.is(r.options.pooling, "changed");
  assert.is(r.layers.length, spec.layers + 1);
});

test("bad options are coded errors naming the option", async () => {
  await expectError(() => probeLayers(model, slice, { folds: 1 }), "ERR_ARGUMENT", /folds/);
  await expectError(() => probeLayers(model, slice, { folds: 99 }), "ERR_ARGUMENT", /99 folds need at least 99 pairs/);
  await expectError(() => probeLayers(model, slice, { pooling: "max" as never }), "ERR_ARGUMENT", /pooling/);
  await expectError(() => probeLayers(model, slice, { l2: 0 }), "ERR_ARGUMENT", /l2/);
  await expectError(() => probeLayers(model, slice, { seed: 0.5 }), "ERR_ARGUMENT", /seed/);
  await expectError(() => probeLayers(model, slice, { bandSize: 0 }), "ERR_ARGUMENT", /bandSize/);
  await expectError(() => probeLayers(model, slice, { onProgress: 3 as never }), "ERR_ARGUMENT", /onProgress/);
  await expectError(() => probeLayers(model, slice, { fold: 3 } as never), "ERR_ARGUMENT");
});

test("an abort stops the forward passes", async () => {
  const ac = new AbortController();
  const run = probeLayers(model, slice, { folds: 2, signal: ac.signal, onProgress: (p) => p.done === 3 && ac.abort() });
  let caught: unknown;
  await run.catch((err) => (caught = err));
  assert.is((caught as { code?: string })?.code, "ERR_ABORTED");
  assert.is(((caught as Error).cause as Error)?.name, "AbortError");
});

test("report files: JSON round-trips, the SVG shades the band and plots every layer, the table marks them", async () => {
  const dir = join(root, "out & <report>");
  const { json, svg } = await writeProbeReport(dir, report);
  assert.equal(JSON.parse(await readFile(json, "utf8")), JSON.parse(JSON.stringify(report)));
  const text = await readFile(svg, "utf8");
  assert.equal(text, probeSvg(report));
  assert.ok(text.startsWith("<svg") && text.trimEnd().endsWith("</svg>"));
  assert.is(text.match(/<circle /g)?.length, report.layers.length);
  assert.ok(text.includes(`recommended layers ${report.recommendedLayers.join(", ")}`));
  assert.equal((await readdir(dir)).sort(), ["probe-auc.svg", "probe-report.json"], "no temp files left");
  const renamed = { ...report, model: { ...report.model, directory: "/m/a&b<c>" } };
  assert.ok(probeSvg(renamed).includes("a&amp;b&lt;c&gt;") && !probeSvg(renamed).includes("a&b<c>"));
  const table = probeTable(report).split("\n");
  for (const l of report.recommendedLayers) assert.ok(table.some((line) => line.startsWith(String(l).padStart(5)) && line.includes("band")));
  await expectError(() => writeProbeReport(join(json, "sub"), report), "ERR_FILE_WRITE");
});

const run = (...args: string[]) => runCli(args);

test("deepguard probe --json: layers {layer, accuracy, auc} for 0..L, files in --out, progress on stderr", async () => {
  const out = join(root, "cli-out");
  const r = await run("probe", join(root, "m"), "--data", SVEN_VAL, "--out", out, "--folds", "3", "--seed", "1", "--max-tokens", "256", "--json");
  assert.is(r.code, 0, r.stderr);
  const printed = JSON.parse(r.stdout) as ProbeReport;
  assert.equal(printed.layers.map((l) => l.layer), [0, 1, 2, 3]);
  for (const l of printed.layers) assert.ok(typeof l.accuracy === "number" && typeof l.auc === "number");
  assert.equal(printed.layers, report.layers, "the CLI and the API agree for the same data and seed");
  assert.equal(printed.recommendedLayers, report.recommendedLayers);
  assert.match(r.stderr, /forward passes \d+\/28/);
  assert.equal(JSON.parse(await readFile(join(out, "probe-report.json"), "utf8")).layers, printed.layers);
  assert.ok((await readFile(join(out, "probe-auc.svg"), "utf8")).startsWith("<svg"));
  const table = await run("probe", join(root, "m"), "--data", join(SVEN_VAL, "cwe-089.jsonl"), "--out", out, "--folds", "2", "--max-tokens", "300", "--pooling", "changed");
  assert.is(table.code, 0, table.stderr);
  assert.match(table.stdout, /recommended layers: /);
});

test("deepguard probe: usage errors exit 2, bad data exits 1, naming what is wrong", async () => {
  const m = join(root, "m");
  const out = join(root, "bad-out");
  for (const [args, pattern] of [
    [["probe", m, "--out", out], /--data/],
    [["probe", m, "--data", SVEN_VAL], /--out/],
    [["probe", m, m, "--data", SVEN_VAL, "--out", out], /at most one model directory/],
    [["probe", m, "--data", SVEN_VAL, "--out", out, "--folds", "1"], /--folds must be an integer >= 2/],
    [["probe", m, "--data", SVEN_VAL, "--out", out, "--pooling", "max"], /--pooling/],
    [["probe", m, "--data", SVEN_VAL, "--out", out, "--max-tokens", "x"], /--max-tokens/],
    [["probe", m, "--data", SVEN_VAL, "--out", out, "--colour"], /colour/],
  ] as const) {
    const r = await run(...args);
    assert.is(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
  const missing = await run("probe", m, "--data", join(root, "nope.jsonl"), "--out", out);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /\[ERR_DATASET\].*nope\.jsonl/);
  assert.is(await readdir(out).catch(() => null), null, "nothing written on failure");
});

test.run();
