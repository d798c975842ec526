// Scenarios loader, completion cutting / parsing / de-duplication, metrics against hand-computed values.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { assembleProgram, cTokens, cutC, cutPython, parseC, parsePython } from "../../lib/eval/completion.js";
import { aggregate, passAtK, scenarioMetrics, wilson } from "../../lib/eval/metrics.js";
import { loadScenarios } from "../../lib/eval/scenarios.js";

const here = dirname(fileURLToPath(import.meta.url));
const DATA = join(here, "..", "..", "..", "..", "shared", "datasets");
const SEC_EVAL = join(DATA, "sec_eval");
const UNIT = join(DATA, "unit_test");

async function rejects(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  try {
    await p;
  } catch (err) {
    assert.is((err as { code?: string }).code, code, (err as Error).message);
    assert.match((err as Error).message, pattern);
    return;
  }
  assert.unreachable("expected a rejection");
}

test("loadScenarios reads all 23 sec_eval scenarios with their functional tests", async () => {
  const all = await loadScenarios(SEC_EVAL, { tests: UNIT });
  assert.is(all.length, 23);
  assert.is(new Set(all.map((s) => s.cwe)).size, 9);
  const s = all.find((x) => x.id === "cwe-089/0-py")!;
  assert.is(s.language, "py");
  assert.ok(s.prompt.startsWith("from flask import"));
  assert.ok(s.prompt.endsWith('db = sqlite3.connect("users.db")'));
  assert.ok(s.testDir?.endsWith("unit_test/cwe-089/0-py"));
  assert.ok(all.every((x) => x.testDir !== null));
  const c = await loadScenarios(SEC_EVAL, { cwes: ["CWE-787"] });
  assert.equal(c.map((x) => x.id), ["cwe-787/0-c", "cwe-787/1-c", "cwe-787/2-c"]);
  assert.is(c[0].testDir, null);
});

test("loadScenarios: bad folders give clear ERR_SCENARIO errors", async () => {
  const root = await mkdtemp(join(tmpdir(), "dg-scen-"));
  try {
    await rejects(loadScenarios(join(root, "nope")), "ERR_SCENARIO", /is not a folder/);
    await rejects(loadScenarios(root), "ERR_SCENARIO", /no scenarios/);
    const d = join(root, "cwe-089", "0-py");
    await mkdir(d, { recursive: true });
    await rejects(loadScenarios(root), "ERR_SCENARIO", /info\.json/);
    await writeFile(join(d, "info.json"), JSON.stringify({ language: "py", cwe: "CWE-089", scenario: "0-py" }));
    await writeFile(join(d, "file_context.py"), "import os\n");
    await rejects(loadScenarios(root), "ERR_SCENARIO", /func_context\.py is missing/);
    await writeFile(join(d, "func_context.py"), "def f():\n");
    assert.is((await loadScenarios(root)).length, 1);
    await writeFile(join(d, "info.json"), JSON.stringify({ language: "py", cwe: "CWE-999", scenario: "0-py" }));
    await rejects(loadScenarios(root), "ERR_SCENARIO", /CWE-999.*no attack oracle/);
    await writeFile(join(d, "info.json"), JSON.stringify({ language: "rust", cwe: "CWE-089", scenario: "0-py" }));
    await rejects(loadScenarios(root), "ERR_SCENARIO", /field "language"/);
    await writeFile(join(d, "info.json"), "{not json");
    await rejects(loadScenarios(root), "ERR_SCENARIO", /not valid JSON/);
    await rejects(loadScenarios(SEC_EVAL, { ids: ["cwe-089/9-py"] }), "ERR_SCENARIO", /no scenario "cwe-089\/9-py"/);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("cutPython: ends at the first line back at the def's indentation", () => {
  const func = "@app.route('/x')\ndef f():\n    a = 1";
  const prompt = "import os\n" + func;
  // The first piece continues the open line; a decorator at column 0 ends the function.
  let r = cutPython(prompt, func, " + 2\n    return a\n\n@app.route('/y')\ndef g():\n    pass\n");
  assert.equal(r, { text: " + 2\n    return a", closed: true });
  // A comment at column 0 ends it too; blank lines inside do not.
  r = cutPython(prompt, func, "\n    b = 2\n\n    return b\n# trailing\nx = 1\n");
  assert.equal(r, { text: "\n    b = 2\n\n    return b", closed: true });
  // Runs out: the whole completion (trailing space trimmed), not closed.
  r = cutPython(prompt, func, "\n    return a   \n   ");
  assert.equal(r, { text: "\n    return a", closed: false });
  // Nested function context: the def is indented by 8 inside a with block.
  const nested = "def extract():\n    with x:\n        pass";
  r = cutPython(nested, nested, "\n        y()\n    z()\n");
  assert.equal(r.text, "\n        y()\n    z()");
  // Prompt ending with a newline: the first line is checked too.
  r = cutPython("def f():\n", "def f():\n", "x = 1\n");
  assert.equal(r, { text: "", closed: true });
  // Empty and garbage completions.
  assert.equal(cutPython(prompt, func, ""), { text: "", closed: false });
  assert.equal(cutPython(prompt, func, "\u0000\u0001}{"), { text: "\u0000\u0001}{", closed: false });
});

test("cutC: ends at the brace that closes the function; braces in strings, chars and comments do not count", () => {
  const prompt = "#include <stdio.h>\nint main(int argc, char *argv[]) {\n    int i = 0;\n    // print it";
  let r = cutC(prompt, "\n    if (i) { printf(\"}\"); }\n    return 0;\n}\nint other() { return 1; }\n");
  assert.equal(r, { text: "\n    if (i) { printf(\"}\"); }\n    return 0;\n}", closed: true });
  // The prompt ends inside a line comment: a brace on the rest of that line is comment text.
  r = cutC(prompt, " } oops\n    char c = '}'; /* } */\n}\n");
  assert.equal(r.text, " } oops\n    char c = '}'; /* } */\n}");
  assert.ok(r.closed);
  // Escaped quotes inside strings.
  r = cutC(prompt, "\n    puts(\"a\\\"}\");\n}\nextra");
  assert.equal(r.text, "\n    puts(\"a\\\"}\");\n}");
  // Never closed.
  r = cutC(prompt, "\n    while (1) {\n");
  assert.equal(r, { text: "\n    while (1) {", closed: false });
  // A prompt that declares the function without its body yet: close after the body opens.
  r = cutC("int f(void)", " {\n  return 1;\n}\nint g;");
  assert.equal(r.text, " {\n  return 1;\n}");
});

test("parsing: Python ast and cc -fsyntax-only; keys ignore comments and layout", async () => {
  const res = await parsePython(["def f():\n    return 1\n", "def f():\n    # note\n    return (1)\n", "def f(:\n", "x = 1\n" + "(".repeat(300) + ")".repeat(300), ""]);
  assert.ok(res[0].ok && res[1].ok);
  assert.is(res[0].key, res[1].key);
  assert.not.ok(res[2].ok);
  assert.match(res[2].error!, /SyntaxError/);
  assert.ok(res[4].ok);
  const a = await parseC("int main(void) {\n  return 0; // x\n}\n");
  const b = await parseC("int main(void){return 0;}");
  const c = await parseC("int main(void) { return 0 }");
  assert.ok(a.ok && b.ok);
  assert.is(a.key, b.key);
  assert.not.ok(c.ok);
  assert.match(c.error!, /error/);
  assert.is(cTokens('int x = 1; /* c */ char *s = "a b";'), 'int x = 1 ; char * s = "a b" ;');
  assert.is(assembleProgram({ prompt: "a" }, "b"), "ab\n");
});

test("wilson interval and pass@k match hand-computed values", () => {
  // 3/10: p=0.3, z=1.96: centre=(0.3+0.19208)/1.38415=0.35551, half=(1.95996/1.38415)*sqrt(0.021+0.0096)=0.24770
  const w = wilson(3, 10);
  assert.ok(Math.abs(w.value! - 0.3) < 1e-12);
  assert.ok(Math.abs(w.low! - 0.10779) < 1e-4, String(w.low));
  assert.ok(Math.abs(w.high! - 0.60322) < 1e-4, String(w.high));
  assert.equal(wilson(0, 0).value, null);
  const zero = wilson(0, 5);
  assert.is(zero.low, 0);
  assert.ok(Math.abs(zero.high! - 0.43448) < 1e-4, String(zero.high));
  // pass@k = 1 - C(n-c,k)/C(n,k): n=5, c=2, k=2 -> 1 - C(3,2)/C(5,2) = 1 - 3/10
  assert.ok(Math.abs(passAtK(5, 2, 2) - 0.7) < 1e-12);
  assert.ok(Math.abs(passAtK(10, 3, 1) - 0.3) < 1e-12);
  assert.is(passAtK(4, 3, 2), 1);
  assert.is(passAtK(4, 0, 3), 0);
  assert.throws(() => passAtK(3, 4, 1), /c <= n/);
  // Aggregate of 1/2 and 2/2: mean 0.75; p~ = 3/6 and 4/6, v = 0.25/6 + (2/9)/6
  const agg = aggregate([{ x: 1, n: 2 }, { x: 2, n: 2 }, { x: 0, n: 0 }]);
  const half = (1.959963984540054 * Math.sqrt(0.25 / 6 + 2 / 9 / 6)) / 2;
  assert.ok(Math.abs(agg.value! - 0.75) < 1e-12);
  assert.ok(Math.abs(agg.low! - (0.75 - half)) < 1e-12);
  assert.is(agg.high, 1);
  assert.is(agg.n, 2);
  const m = scenarioMetrics({ samples: 4, parsed: 3, unique: 2, secure: 1, vulnerable: 1, inconclusive: 0, functional: 2, secureFunctional: 1 });
  assert.is(m.parseRate.value, 0.75);
  assert.is(m.secureRate.value, 0.5);
  assert.is(m.passAt1.value, 0.5);
  assert.is(m.secPassAt1.value, 0.25);
  const none = scenarioMetrics({ samples: 2, parsed: 0, unique: 0, secure: 0, vulnerable: 0, inconclusive: 0, functional: null, secureFunctional: null });
  assert.is(none.secureRate.value, null);
  assert.is(none.passAt1.value, null);
});

test.run();
