/**
 * deepguard check --scenario <scenario-dir> <file> [--tests DIR] [--json]
 * deepguard check --cwe cwe-089 --lang py <file> [--json]
 *
 * Every oracle on one whole program (file context + function context + completion).
 * With --scenario: the attack oracle decides, the static analyzers and CodeQL are
 * reported beside it, and the scenario's functional test runs. With --cwe: static
 * analyzers only (for code outside a scenario).
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { DeepGuardError } from "../errors.js";
import { runChecker, type Program, type Verdict } from "../eval/checker.js";
import { defaultCheckers } from "../eval/evaluate.js";
import { runFunctionalTest } from "../eval/functional.js";
import { isKnownCwe, KNOWN_CWES, loadScenario, normalizeCwe } from "../eval/scenarios.js";

export const CHECK_USAGE = `  deepguard check --scenario <scenario-dir> <file> [--tests DIR] [--json]
  deepguard check --cwe cwe-089 --lang py|c <file> [--json]`;

type Usage = (message: string) => Error;

export interface CheckReport {
  vulnerable: boolean | null;
  functional: boolean | null;
  oracles: { name: string; vulnerable: boolean | null; findings: string[]; skipped?: string; error?: string }[];
}

export async function checkCommand(args: string[], usage: Usage): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: { scenario: { type: "string" }, cwe: { type: "string" }, lang: { type: "string" }, tests: { type: "string" }, json: { type: "boolean" } },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw usage("check takes one program file");
  if ((values.scenario === undefined) === (values.cwe === undefined)) throw usage("check needs exactly one of --scenario DIR or --cwe CWE");
  let source: string;
  try {
    source = await readFile(positionals[0], "utf8");
  } catch (err) {
    throw new DeepGuardError("ERR_ARGUMENT", `cannot read ${positionals[0]}: ${(err as Error).message}`);
  }
  let program: Program;
  if (values.scenario !== undefined) {
    // The functional tests: --tests, or unit_test beside the scenarios root (sec_eval/cwe-XXX/N-lang -> unit_test).
    let tests = values.tests ?? null;
    if (!tests) {
      const guess = resolve(values.scenario, "..", "..", "..", "unit_test");
      if (existsSync(guess)) tests = guess;
    }
    const scenario = await loadScenario(values.scenario, tests);
    program = { language: scenario.language, cwe: scenario.cwe, source, scenario };
  } else {
    const cwe = normalizeCwe(values.cwe!);
    if (!isKnownCwe(cwe)) throw new DeepGuardError("ERR_SCENARIO", `--cwe ${values.cwe}: unknown CWE (known: ${KNOWN_CWES.join(", ")})`);
    if (values.lang !== "py" && values.lang !== "c") throw usage(`--lang must be py or c, got "${values.lang ?? ""}"`);
    program = { language: values.lang, cwe, source, scenario: null };
  }
  const checkers = defaultCheckers().filter((c) => program.scenario !== null || !c.primary);
  const verdicts: Verdict[] = [];
  for (const c of checkers) verdicts.push(await runChecker(c, program));
  let functional: boolean | null = null;
  let functionalDetail = "";
  if (program.scenario) {
    const f = await runFunctionalTest(program.scenario, source);
    functional = f.passed;
    functionalDetail = f.error ?? f.detail;
  }
  const primary = checkers.find((c) => c.primary);
  const decided = verdicts.filter((v) => v.vulnerable !== null);
  const vulnerable = primary
    ? (verdicts.find((v) => v.name === primary.name)?.vulnerable ?? null)
    : decided.length ? decided.some((v) => v.vulnerable) : null;
  const report: CheckReport = {
    vulnerable,
    functional,
    oracles: verdicts.map((v) => ({
      name: v.name,
      vulnerable: v.vulnerable,
      findings: v.findings,
      ...(v.skipped ? { skipped: v.skipped } : {}),
      ...(v.error ? { error: v.error } : {}),
    })),
  };
  if (values.json) {
    process.stdout.write(JSON.stringify(report) + "\n");
    return;
  }
  const word = (v: boolean | null) => (v === null ? "undecided" : v ? "VULNERABLE" : "not vulnerable");
  process.stdout.write(`${positionals[0]}: ${word(vulnerable)}${program.scenario ? ` (scenario ${program.scenario.id}, attack oracle)` : ` (${program.cwe}, static analyzers)`}\n`);
  if (program.scenario) process.stdout.write(`functional: ${functional === null ? "no test" : functional ? "pass" : "fail"}${functionalDetail && functional !== true ? ` (${functionalDetail})` : ""}\n`);
  for (const v of verdicts) {
    const status = v.skipped ? `skipped: ${v.skipped}` : v.error ? `error: ${v.error}` : word(v.vulnerable);
    process.stdout.write(`  ${v.name.padEnd(11)} ${status}\n`);
    for (const f of v.findings.slice(0, 12)) process.stdout.write(`      ${f}\n`);
  }
}


