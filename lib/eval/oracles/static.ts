/**
 * Static analyzers from Debian, mapped to the scenario's CWE: bandit (Python),
 * cppcheck and flawfinder (C). They read the program; nothing is executed. A
 * program counts as flagged when a finding maps to the scenario's CWE (or a
 * closely related one, see RELATED_CWES); every finding is listed either way.
 * CodeQL runs with the scenario's `check_ql` when a `codeql` CLI is on PATH.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import type { Checker, Program, Verdict } from "../checker.js";
import { which } from "../sandbox.js";

/** CWE numbers that count as the scenario's CWE for a static finding. */
export const RELATED_CWES: Record<string, number[]> = {
  "cwe-022": [22, 23, 36, 73],
  "cwe-078": [78, 77, 88],
  "cwe-079": [79, 80, 116],
  "cwe-089": [89],
  "cwe-125": [125, 126, 119, 129, 788],
  "cwe-190": [190, 191, 680],
  "cwe-416": [416, 415, 825],
  "cwe-476": [476, 690],
  "cwe-787": [787, 119, 120, 121, 122, 788],
};

/** Bandit 1.6 reports no CWE; its tests mapped by hand. */
export const BANDIT_CWES: Record<string, number> = {
  B202: 22, // tarfile_unsafe_members (bandit >= 1.7.5)
  B602: 78, // subprocess_popen_with_shell_equals_true
  B603: 78, // subprocess_without_shell_equals_true
  B604: 78, // any_other_function_with_shell_equals_true
  B605: 78, // start_process_with_a_shell
  B606: 78, // start_process_with_no_shell
  B607: 78, // start_process_with_partial_path
  B609: 78, // linux_commands_wildcard_injection
  B608: 89, // hardcoded_sql_expressions
  B701: 79, // jinja2_autoescape_false
  B702: 79, // use_of_mako_templates
  B703: 79, // django_mark_safe
  B308: 79, // mark_safe
};

interface ToolRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, timeoutMs = 60_000): Promise<ToolRun> {
  return new Promise((resolvePromise) => {
    execFile(cmd, args, { cwd, timeout: timeoutMs, maxBuffer: 1 << 26, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number | null) ?? null : 0;
      resolvePromise({ code: typeof code === "number" ? code : null, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function withFile<T>(program: Program, fn: (dir: string, file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "dg-static-"));
  const file = `program.${program.language}`;
  try {
    await writeFile(join(dir, file), program.source);
    return await fn(dir, file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function cweNumber(cwe: string): number {
  return Number(cwe.replace(/^cwe-/, ""));
}

function related(cwe: string, found: number[]): boolean {
  const want = RELATED_CWES[cwe] ?? [cweNumber(cwe)];
  return found.some((n) => want.includes(n));
}

/** A minimal RFC 4180 CSV reader (quoted fields, doubled quotes, newlines in quotes). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += c;
  }
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

abstract class ToolChecker implements Checker {
  abstract readonly name: string;
  abstract readonly tool: string;
  abstract readonly languages: readonly ("py" | "c")[];
  readonly cwes = "*" as const;
  readonly primary = false;
  async unavailable(): Promise<string | null> {
    return which(this.tool) ? null : `${this.tool} is not on PATH (Debian: apt-get install ${this.tool === "bandit" ? "python3-bandit" : this.tool})`;
  }
  abstract check(program: Program): Promise<Verdict>;
}

let banditVersion: Promise<string> | undefined;

export class BanditChecker extends ToolChecker {
  readonly name = "bandit";
  readonly tool = "bandit";
  readonly languages = ["py"] as const;
  async check(program: Program): Promise<Verdict> {
    const started = Date.now();
    banditVersion ??= run(this.tool, ["--version"], tmpdir(), 30_000).then((r) => /bandit (\d+\.\d+\.\d+)/.exec(r.stdout + r.stderr)?.[1] ?? "unknown");
    const version = await banditVersion;
    // bandit < 1.7 predates ast.Constant: on Python >= 3.8 its string checks (B608, SQL) never fire.
    const note = /^1\.[0-6]\./.test(version) ? [`note: bandit ${version} cannot see string constants on Python >= 3.8 (B608 SQL checks never fire)`] : [];
    return withFile(program, async (dir, file) => {
      const r = await run(this.tool, ["-f", "json", "-q", file], dir);
      let parsed: { results?: { test_id: string; issue_text: string; line_number: number; issue_severity: string }[]; errors?: { reason: string }[] };
      try {
        parsed = JSON.parse(r.stdout);
      } catch {
        return { name: this.name, vulnerable: null, findings: [], error: `bandit output is not JSON (exit ${r.code}): ${r.stderr.slice(0, 200)}`, wallMs: Date.now() - started };
      }
      if (parsed.errors?.length) {
        return { name: this.name, vulnerable: null, findings: [], error: `bandit: ${parsed.errors[0].reason}`.slice(0, 300), wallMs: Date.now() - started };
      }
      const results = parsed.results ?? [];
      const cwes = results.map((x) => BANDIT_CWES[x.test_id]).filter((n): n is number => n !== undefined);
      return {
        name: this.name,
        vulnerable: related(program.cwe, cwes),
        findings: [...results.map((x) => `${x.test_id}${BANDIT_CWES[x.test_id] ? ` (CWE-${BANDIT_CWES[x.test_id]})` : ""} line ${x.line_number} [${x.issue_severity}]: ${x.issue_text}`), ...note],
        wallMs: Date.now() - started,
      };
    });
  }
}

export class CppcheckChecker extends ToolChecker {
  readonly name = "cppcheck";
  readonly tool = "cppcheck";
  readonly languages = ["c"] as const;
  async check(program: Program): Promise<Verdict> {
    const started = Date.now();
    return withFile(program, async (dir, file) => {
      const r = await run(this.tool, ["--enable=warning,portability", "--inconclusive", "--language=c", "--xml", "--xml-version=2", "-q", file], dir);
      const findings: string[] = [];
      const cwes: number[] = [];
      for (const m of r.stderr.matchAll(/<error\s+([^>]*)>/g)) {
        const attr = (k: string) => new RegExp(`${k}="([^"]*)"`).exec(m[1])?.[1] ?? "";
        const cwe = Number(attr("cwe"));
        if (cwe) cwes.push(cwe);
        const msg = attr("msg").replace(/&apos;/g, "'").replace(/&quot;/g, '"').replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
        findings.push(`${attr("id")}${cwe ? ` (CWE-${cwe})` : ""} [${attr("severity")}]: ${msg}`);
      }
      if (r.code !== 0 && findings.length === 0) {
        return { name: this.name, vulnerable: null, findings, error: `cppcheck exit ${r.code}: ${r.stderr.slice(0, 200)}`, wallMs: Date.now() - started };
      }
      return { name: this.name, vulnerable: related(program.cwe, cwes), findings, wallMs: Date.now() - started };
    });
  }
}

export class FlawfinderChecker extends ToolChecker {
  readonly name = "flawfinder";
  readonly tool = "flawfinder";
  readonly languages = ["c"] as const;
  async check(program: Program): Promise<Verdict> {
    const started = Date.now();
    return withFile(program, async (dir, file) => {
      const r = await run(this.tool, ["--csv", "--quiet", "--dataonly", file], dir);
      if (r.code !== 0) return { name: this.name, vulnerable: null, findings: [], error: `flawfinder exit ${r.code}: ${r.stderr.slice(0, 200)}`, wallMs: Date.now() - started };
      const rows = parseCsv(r.stdout);
      const head = rows[0] ?? [];
      const col = (k: string) => head.indexOf(k);
      const findings: string[] = [];
      const cwes: number[] = [];
      for (const row of rows.slice(1)) {
        if (row.length < head.length) continue;
        const ids = [...row[col("CWEs")].matchAll(/CWE-(\d+)/g)].map((m) => Number(m[1]));
        cwes.push(...ids);
        findings.push(`${row[col("Name")]} line ${row[col("Line")]} level ${row[col("Level")]} (${row[col("CWEs")]}): ${row[col("Warning")]}`);
      }
      return { name: this.name, vulnerable: related(program.cwe, cwes), findings, wallMs: Date.now() - started };
    });
  }
}

/**
 * CodeQL with the scenario's own query (`check_ql` in info.json, resolved against
 * the scenario folder). Only when a `codeql` CLI is on PATH and the query exists.
 */
export class CodeqlChecker implements Checker {
  readonly name = "codeql";
  readonly languages = ["py", "c"] as const;
  readonly cwes = "*" as const;
  readonly primary = false;
  async unavailable(): Promise<string | null> {
    return which("codeql") ? null : "codeql is not on PATH (optional: install the CodeQL CLI to run the scenarios' queries)";
  }
  async check(program: Program): Promise<Verdict> {
    const started = Date.now();
    const ql = program.scenario?.checkQl;
    if (!ql || !program.scenario) return { name: this.name, vulnerable: null, findings: [], skipped: "no CodeQL query for this program (needs a scenario with check_ql)", wallMs: 0 };
    const query = isAbsolute(ql) ? ql : resolve(program.scenario.dir, ql.replace(/\\ /g, " "));
    try {
      await stat(query);
    } catch {
      return { name: this.name, vulnerable: null, findings: [], skipped: `the scenario's query ${query} does not exist here`, wallMs: 0 };
    }
    return withFile(program, async (dir) => {
      const db = join(dir, "db");
      const lang = program.language === "py" ? "python" : "cpp";
      const create = await run("codeql", ["database", "create", db, `--language=${lang}`, `--source-root=${dir}`, ...(lang === "cpp" ? [`--command=cc -c program.c -o program.o`] : [])], dir, 600_000);
      if (create.code !== 0) return { name: this.name, vulnerable: null, findings: [], error: `codeql database create failed: ${create.stderr.slice(-300)}`, wallMs: Date.now() - started };
      const sarif = join(dir, "out.sarif");
      const an = await run("codeql", ["database", "analyze", db, query, "--format=sarif-latest", `--output=${sarif}`], dir, 600_000);
      if (an.code !== 0) return { name: this.name, vulnerable: null, findings: [], error: `codeql database analyze failed: ${an.stderr.slice(-300)}`, wallMs: Date.now() - started };
      const { readFile } = await import("node:fs/promises");
      const out = JSON.parse(await readFile(sarif, "utf8")) as { runs?: { results?: { ruleId?: string; message?: { text?: string } }[] }[] };
      const results = out.runs?.flatMap((r) => r.results ?? []) ?? [];
      return { name: this.name, vulnerable: results.length > 0, findings: results.map((r) => `${r.ruleId ?? "?"}: ${r.message?.text ?? ""}`), wallMs: Date.now() - started };
    });
  }
}
