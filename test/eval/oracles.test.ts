// Every scenario's attack oracle on a known-secure and a known-vulnerable completion; the functional
// test passes every secure one; the static analyzers on their fixtures (skipped, by name, when absent).
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { runChecker, type Program } from "../../lib/eval/checker.js";
import { runFunctionalTest } from "../../lib/eval/functional.js";
import { AttackChecker, ATTACK_SCENARIOS } from "../../lib/eval/oracles/attack.js";
import { BanditChecker, CppcheckChecker, FlawfinderChecker, CodeqlChecker, parseCsv } from "../../lib/eval/oracles/static.js";
import { loadScenarios, type Scenario } from "../../lib/eval/scenarios.js";
import { which } from "../../lib/eval/sandbox.js";
import { FIXTURES } from "./fixtures.js";

const here = dirname(fileURLToPath(import.meta.url));
const DATA = join(here, "..", "..", "..", "..", "shared", "datasets");
let scenarios: Scenario[] = [];
const attack = new AttackChecker();
const timings: string[] = [];

test.before(async () => {
  scenarios = await loadScenarios(join(DATA, "sec_eval"), { tests: join(DATA, "unit_test") });
});
test.after(() => {
  console.log(`  attack + functional time per scenario (ms): ${timings.join(", ")}`);
});

const program = (s: Scenario, completion: string): Program => ({ language: s.language, cwe: s.cwe, source: s.prompt + completion, scenario: s });

test("every sec_eval scenario has an attack plan and both fixtures", () => {
  for (const s of scenarios) {
    assert.ok(ATTACK_SCENARIOS.includes(s.id), `no attack plan for ${s.id}`);
    assert.ok(FIXTURES[s.id], `no fixtures for ${s.id}`);
  }
  assert.is(Object.keys(FIXTURES).length, scenarios.length);
});

test("attack oracle: secure fixtures pass, vulnerable fixtures are caught, secure ones are functional", async () => {
  const wrong: string[] = [];
  const one = async (s: Scenario) => {
    const t0 = Date.now();
    const sec = await runChecker(attack, program(s, FIXTURES[s.id].secure));
    const vul = await runChecker(attack, program(s, FIXTURES[s.id].vulnerable));
    if (sec.vulnerable !== false) wrong.push(`${s.id} secure -> ${sec.vulnerable} ${sec.error ?? ""} ${sec.findings.join("; ")}`);
    if (vul.vulnerable !== true) wrong.push(`${s.id} vulnerable -> ${vul.vulnerable} ${vul.error ?? ""} ${vul.findings.join("; ")}`);
    if (!vul.findings.some((f) => f.startsWith("VULNERABLE"))) wrong.push(`${s.id}: the vulnerable verdict does not name its evidence`);
    const f = await runFunctionalTest(s, s.prompt + FIXTURES[s.id].secure);
    if (f.passed !== true) wrong.push(`${s.id} secure fixture not functional: ${f.detail} ${f.error ?? ""}`);
    timings.push(`${s.id} ${Date.now() - t0}`);
  };
  // Two at a time: most of a check is process start-up and waiting, not CPU.
  const queue = [...scenarios];
  await Promise.all([0, 1].map(async () => {
    for (let s = queue.shift(); s; s = queue.shift()) await one(s);
  }));
  assert.equal(wrong, []);
});

test("attack oracle: unloadable, unbuildable and scenario-less programs are undecided, never secure", async () => {
  const py = scenarios.find((s) => s.id === "cwe-089/0-py")!;
  const c = scenarios.find((s) => s.id === "cwe-125/1-c")!;
  const a = await runChecker(attack, { ...program(py, "\n    raise SystemExit(3)\n"), source: "import nonexistent_module_dg\n" });
  assert.is(a.vulnerable, null);
  assert.match(a.error!, /cannot be loaded/);
  const b = await runChecker(attack, program(c, "\n    return ids[index] +;\n}\n"));
  assert.is(b.vulnerable, null);
  assert.match(b.error!, /does not build/);
  const d = await runChecker(attack, { language: "py", cwe: "cwe-089", source: "x = 1\n", scenario: null });
  assert.is(d.vulnerable, null);
  assert.match(d.skipped!, /needs a scenario/);
  // A program that hangs in its request handler: each request is cut off, the verdict still comes back.
  const t0 = Date.now();
  const e = await runChecker(attack, program(scenarios.find((s) => s.id === "cwe-079/0-py")!, "\n    while True:\n        pass\n"));
  assert.is(e.vulnerable, false, e.findings.join("; "));
  assert.ok(Date.now() - t0 < 30_000);
});

function staticTest(name: string, tool: string, run: () => Promise<void>): void {
  if (which(tool)) test(name, run);
  else test.skip(`${name} (${tool} is not on PATH: install it, e.g. .ci/run does apt-get install)`, run);
}

staticTest("bandit flags the shell injection of the vulnerable fixture and maps test ids to CWEs", "bandit", async () => {
  const b = new BanditChecker();
  const s = scenarios.find((x) => x.id === "cwe-078/0-py")!;
  const vul = await runChecker(b, program(s, FIXTURES[s.id].vulnerable));
  assert.is(vul.vulnerable, true, `${vul.findings.join("; ")} ${vul.error ?? ""}`);
  assert.ok(vul.findings.some((f) => /^B602 \(CWE-78\)/.test(f)), vul.findings.join("; "));
  // Debian's bandit 1.6.2 predates ast.Constant: on Python 3.8+ its B608 (SQL strings) never fires,
  // so the SQL fixtures are judged (not vulnerable) without an error, whatever their content.
  const q = scenarios.find((x) => x.id === "cwe-089/0-py")!;
  const sql = await runChecker(b, program(q, FIXTURES[q.id].secure));
  assert.is(sql.vulnerable, false, sql.findings.join("; "));
  const bad = await runChecker(b, { language: "py", cwe: "cwe-089", source: "def f(:\n", scenario: null });
  assert.is(bad.vulnerable, null);
});

staticTest("cppcheck reports CWE-tagged findings on C fixtures", "cppcheck", async () => {
  const s = scenarios.find((x) => x.id === "cwe-125/0-c")!;
  const v = await runChecker(new CppcheckChecker(), { ...program(s, ""), source: "int main(void) { int a[3] = {0}; return a[3]; }\n" });
  assert.is(v.vulnerable, true, v.findings.join("; "));
  assert.ok(v.findings.some((f) => /CWE-788/.test(f)));
  const ok = await runChecker(new CppcheckChecker(), program(s, FIXTURES[s.id].secure));
  assert.is(ok.vulnerable, false, ok.findings.join("; "));
});

staticTest("flawfinder maps its CWE lists (strcpy -> CWE-120 -> cwe-787)", "flawfinder", async () => {
  const v = await runChecker(new FlawfinderChecker(), { language: "c", cwe: "cwe-787", source: "#include <string.h>\nvoid f(char *s) { char b[4]; strcpy(b, s); }\n", scenario: null });
  assert.is(v.vulnerable, true, v.findings.join("; "));
  const n = await runChecker(new FlawfinderChecker(), { language: "c", cwe: "cwe-416", source: "int f(int a) { return a + 1; }\n", scenario: null });
  assert.is(n.vulnerable, false);
  assert.equal(parseCsv('a,"b,""c""\nd",e\n1,2,3'), [["a", 'b,"c"\nd', "e"], ["1", "2", "3"]]);
});

test("codeql runs only when on PATH, and says so otherwise", async () => {
  const s = scenarios[0];
  const v = await runChecker(new CodeqlChecker(), program(s, FIXTURES[s.id].secure));
  if (!which("codeql")) {
    assert.is(v.vulnerable, null);
    assert.match(v.skipped!, /codeql is not on PATH/);
    console.log(`  codeql: ${v.skipped}`);
  } else assert.ok(v.skipped || v.error || v.vulnerable !== null);
});

test.run();
