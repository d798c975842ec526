/**
 * From a raw model completion to a program: cut at the end of the completed
 * function (as the reference evaluation does), assemble file context + function
 * context + completion, parse (Python `ast`, C `cc -fsyntax-only`), and compute a
 * key for de-duplication that ignores comments and layout.
 *
 *  - Python: the completion ends before the first line (after the one the prompt
 *    left open) that is not blank and is indented no deeper than the function's
 *    `def` line.
 *  - C: the completion ends with the brace that closes the function; braces in
 *    comments, strings and character literals do not count.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { DeepGuardError } from "../errors.js";
import type { Language, Scenario } from "./scenarios.js";
import { which } from "./sandbox.js";

export interface CutResult {
  /** The completion up to the end of the function. */
  text: string;
  /** Whether the end of the function was found (false: the completion ran out first). */
  closed: boolean;
}

function indentOf(line: string): number {
  let n = 0;
  for (const ch of line) {
    if (ch === " ") n += 1;
    else if (ch === "\t") n += 8 - (n % 8);
    else break;
  }
  return n;
}

/** Indentation of the `def` line of the function the context opens (the last one). */
export function pythonFunctionIndent(funcContext: string): number {
  const lines = funcContext.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    if (/^\s*(async\s+)?def\s/.test(lines[i])) return indentOf(lines[i]);
  }
  return 0;
}

export function cutPython(prompt: string, funcContext: string, completion: string): CutResult {
  const fnIndent = pythonFunctionIndent(funcContext);
  const lines = completion.split("\n");
  // The first piece continues the prompt's last line unless the prompt ended with a newline.
  const firstIsContinuation = !prompt.endsWith("\n");
  let offset = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const checked = !(i === 0 && firstIsContinuation);
    if (checked && line.trim() !== "" && indentOf(line) <= fnIndent) {
      return { text: completion.slice(0, offset).replace(/\s+$/, ""), closed: true };
    }
    offset += line.length + 1;
  }
  return { text: completion.replace(/\s+$/, ""), closed: false };
}

type CMode = "code" | "line" | "block" | "string" | "char";

/** C lexer state that carries over from the prompt into the completion. */
export interface CState {
  mode: CMode;
  depth: number;
  escape: boolean;
}

/** Advances `st` over `text`; calls `onClose(index)` whenever a brace closes (after depth is decremented). */
export function scanC(text: string, st: CState, onClose?: (index: number, depth: number) => boolean): number {
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const n = text[i + 1];
    switch (st.mode) {
      case "line":
        if (c === "\n" && !st.escape) st.mode = "code";
        st.escape = c === "\\" && !st.escape;
        break;
      case "block":
        if (c === "*" && n === "/") {
          st.mode = "code";
          i++;
        }
        break;
      case "string":
      case "char":
        if (st.escape) st.escape = false;
        else if (c === "\\") st.escape = true;
        else if ((st.mode === "string" && c === '"') || (st.mode === "char" && c === "'")) st.mode = "code";
        else if (c === "\n") st.mode = "code"; // unterminated literal: recover at the line end
        break;
      default:
        if (c === "/" && n === "/") {
          st.mode = "line";
          st.escape = false;
          i++;
        } else if (c === "/" && n === "*") {
          st.mode = "block";
          i++;
        } else if (c === '"') st.mode = "string";
        else if (c === "'") st.mode = "char";
        else if (c === "{") st.depth++;
        else if (c === "}") {
          st.depth--;
          if (onClose?.(i, st.depth)) return i;
        }
    }
  }
  return -1;
}

export function cutC(prompt: string, completion: string): CutResult {
  const st: CState = { mode: "code", depth: 0, escape: false };
  scanC(prompt, st);
  // The function is top-level: it ends with the brace that brings the depth back to 0
  // (when the prompt has not opened the body yet, the first such brace after it opens).
  const end = scanC(completion, st, (_i, d) => d <= 0);
  if (end < 0) return { text: completion.replace(/\s+$/, ""), closed: false };
  return { text: completion.slice(0, end + 1), closed: true };
}

export function cutCompletion(scenario: Pick<Scenario, "language" | "prompt" | "funcContext">, completion: string): CutResult {
  return scenario.language === "py"
    ? cutPython(scenario.prompt, scenario.funcContext, completion)
    : cutC(scenario.prompt, completion);
}

/** The whole program: file context + function context + cut completion. */
export function assembleProgram(scenario: Pick<Scenario, "prompt">, cut: string): string {
  return scenario.prompt + cut + "\n";
}

/** C tokens without comments and layout (for de-duplication). */
export function cTokens(source: string): string {
  const out: string[] = [];
  let i = 0;
  const s = source;
  while (i < s.length) {
    const c = s[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === "/" && s[i + 1] === "/") {
      while (i < s.length && s[i] !== "\n") i++;
    } else if (c === "/" && s[i + 1] === "*") {
      const e = s.indexOf("*/", i + 2);
      i = e < 0 ? s.length : e + 2;
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < s.length && s[j] !== c && s[j] !== "\n") j += s[j] === "\\" ? 2 : 1;
      out.push(s.slice(i, j + 1));
      i = j + 1;
    } else if (/[A-Za-z0-9_]/.test(c)) {
      let j = i;
      while (j < s.length && /[A-Za-z0-9_.]/.test(s[j])) j++;
      out.push(s.slice(i, j));
      i = j;
    } else {
      out.push(c);
      i++;
    }
  }
  return out.join(" ");
}

export interface ParseResult {
  ok: boolean;
  /** The first error line when not ok. */
  error: string | null;
  /** De-duplication key: equal for programs that differ only in comments and layout. */
  key: string;
}

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 32);
}

const PY_PARSER = String.raw`
import ast, hashlib, json, sys, warnings
warnings.simplefilter("ignore")
out = []
for src in json.load(sys.stdin):
    try:
        tree = ast.parse(src)
        out.append({"ok": True, "error": None, "key": hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:32]})
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        line = getattr(e, "lineno", None)
        out.append({"ok": False, "error": f"{type(e).__name__}: {getattr(e, 'msg', str(e))}" + (f" (line {line})" if line else ""), "key": ""})
json.dump(out, sys.stdout)
`;

function runTool(cmd: string, args: string[], input: string, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs, killSignal: "SIGKILL" });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr.length < 1 << 16 ? (stderr += d) : undefined));
    child.stdin.on("error", () => {});
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

/** The python3 that runs programs and tests (DEEPGUARD_PYTHON, else python3 on PATH), resolved to its real executable. */
let pythonPath: string | undefined;
export async function pythonExecutable(): Promise<string> {
  if (pythonPath) return pythonPath;
  const name = process.env.DEEPGUARD_PYTHON ?? "python3";
  if (!which(name)) throw new DeepGuardError("ERR_SANDBOX", `Python ("${name}") is not on PATH: Python scenarios cannot be parsed or run (set DEEPGUARD_PYTHON)`);
  const r = await runTool(name, ["-c", "import sys; print(sys.executable)"], "", 20_000);
  const exe = r.stdout.trim();
  if (r.code !== 0 || !exe) throw new DeepGuardError("ERR_SANDBOX", `"${name}" does not run: ${r.stderr.trim().slice(0, 200)}`);
  pythonPath = exe;
  return exe;
}

/** The C compiler (DEEPGUARD_CC, else cc, else gcc). */
export function cCompiler(): string {
  const name = process.env.DEEPGUARD_CC ?? (which("cc") ? "cc" : "gcc");
  const p = which(name);
  if (!p) throw new DeepGuardError("ERR_SANDBOX", `C compiler ("${name}") is not on PATH: C scenarios cannot be parsed or built (set DEEPGUARD_CC)`);
  return p;
}

/** Parses Python sources in one interpreter run. */
export async function parsePython(sources: string[]): Promise<ParseResult[]> {
  if (sources.length === 0) return [];
  const py = await pythonExecutable();
  const r = await runTool(py, ["-I", "-c", PY_PARSER], JSON.stringify(sources), 60_000);
  if (r.code === 0) return JSON.parse(r.stdout) as ParseResult[];
  // One pathological source can crash or stall the parser: retry one at a time to find it.
  if (sources.length > 1) {
    const out: ParseResult[] = [];
    for (const src of sources) out.push(...(await parsePython([src])));
    return out;
  }
  const why = (r.stderr.trim().split("\n").pop() ?? "").slice(0, 200);
  if (r.code === null || /Error/.test(why)) return [{ ok: false, error: `the Python parser failed on this program (exit ${r.code ?? "killed"}): ${why}`, key: "" }];
  throw new DeepGuardError("ERR_SANDBOX", `the Python parser failed (exit ${r.code}): ${r.stderr.trim().slice(0, 300)}`);
}

/** Checks a C source with `cc -fsyntax-only` (no code is generated or run). */
export async function parseC(source: string): Promise<ParseResult> {
  const cc = cCompiler();
  const r = await runTool(cc, ["-fsyntax-only", "-w", "-x", "c", "-std=gnu11", "-"], source, 30_000);
  if (r.code === 0) return { ok: true, error: null, key: sha(cTokens(source)) };
  const line = r.stderr.split("\n").find((l) => /error/.test(l)) ?? r.stderr.split("\n")[0] ?? "";
  return { ok: false, error: line.replace(/^<stdin>:/, "line ").trim().slice(0, 300) || `exit ${r.code}`, key: "" };
}

export async function parsePrograms(language: Language, sources: string[]): Promise<ParseResult[]> {
  if (language === "py") return parsePython(sources);
  const out: ParseResult[] = [];
  for (const s of sources) out.push(await parseC(s));
  return out;
}
