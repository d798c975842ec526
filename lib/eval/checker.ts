/**
 * The pluggable oracle interface. A Checker looks at one whole program (file
 * context + function context + completion) and says whether it is vulnerable to
 * the scenario's CWE, with findings. `vulnerable: null` means the oracle could not
 * decide (it was skipped, a tool is missing, the program could not be built or
 * loaded): such a verdict is reported with its reason, never counted as a pass.
 */
import type { Language, Scenario } from "./scenarios.js";

export interface Program {
  language: Language;
  /** "cwe-089" */
  cwe: string;
  source: string;
  /** The scenario the program completes (null for `check --cwe` on code outside a scenario). */
  scenario: Scenario | null;
}

export interface Verdict {
  name: string;
  vulnerable: boolean | null;
  findings: string[];
  /** Why there is no verdict (a missing tool, an unsupported scenario). */
  skipped?: string;
  /** Why the oracle could not decide although it ran (build failure, crash on load). */
  error?: string;
  wallMs: number;
}

export interface Checker {
  readonly name: string;
  readonly languages: readonly Language[];
  /** The CWEs it can judge ("*" for any). */
  readonly cwes: readonly string[] | "*";
  /** The primary oracle decides whether a sample counts as vulnerable. */
  readonly primary: boolean;
  /** null when usable, else the reason it is not (e.g. "bandit is not on PATH"). */
  unavailable(): Promise<string | null>;
  check(program: Program, signal?: AbortSignal): Promise<Verdict>;
}

export function applies(checker: Checker, program: Program): boolean {
  return checker.languages.includes(program.language) && (checker.cwes === "*" || checker.cwes.includes(program.cwe));
}

/** Runs a checker and turns "not applicable" / "unavailable" / thrown errors into a reported verdict. */
export async function runChecker(checker: Checker, program: Program, signal?: AbortSignal): Promise<Verdict> {
  const started = Date.now();
  if (!applies(checker, program)) {
    return { name: checker.name, vulnerable: null, findings: [], skipped: `does not handle ${program.language} / ${program.cwe}`, wallMs: 0 };
  }
  const why = await checker.unavailable();
  if (why) return { name: checker.name, vulnerable: null, findings: [], skipped: why, wallMs: 0 };
  try {
    return await checker.check(program, signal);
  } catch (err) {
    if ((err as { code?: string }).code === "ERR_ABORTED") throw err;
    return { name: checker.name, vulnerable: null, findings: [], error: (err as Error).message, wallMs: Date.now() - started };
  }
}
