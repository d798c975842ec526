/**
 * Code-completion scenarios in the sec_eval layout: `<root>/cwe-XXX/N-lang/` with
 * info.json, file_context.{py,c} and func_context.{py,c}. The prompt is file
 * context + function context; the model completes the function.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { describeIssue, readJsonFile } from "../validate.js";

export type Language = "py" | "c";

/** The CWEs the attack oracles know (lower case, three digits). */
export const KNOWN_CWES = ["cwe-022", "cwe-078", "cwe-079", "cwe-089", "cwe-125", "cwe-190", "cwe-416", "cwe-476", "cwe-787"] as const;

export interface Scenario {
  /** "cwe-089/0-py" */
  id: string;
  /** "cwe-089" */
  cwe: string;
  language: Language;
  /** "0-py" */
  name: string;
  dir: string;
  description: string;
  /** The CodeQL query the original evaluation ran (relative to its own repository); may not exist here. */
  checkQl: string | null;
  fileContext: string;
  funcContext: string;
  /** fileContext + funcContext: what the model completes. */
  prompt: string;
  /** The scenario's functional-test folder (unit_test layout) when one was given and exists. */
  testDir: string | null;
}

const infoSchema = z
  .object({
    language: z.enum(["py", "c"]),
    cwe: z.string().regex(/^CWE-\d{1,4}$/i, "must look like CWE-089"),
    scenario: z.string().min(1),
    description: z.string().optional(),
    check_ql: z.string().optional(),
  })
  .passthrough();

/** "CWE-89" / "cwe-089" -> "cwe-089". */
export function normalizeCwe(cwe: string): string {
  const m = /^cwe-?(\d{1,4})$/i.exec(cwe.trim());
  if (!m) throw new DeepGuardError("ERR_SCENARIO", `"${cwe}" is not a CWE id (expected e.g. cwe-089)`);
  return `cwe-${m[1].padStart(3, "0")}`;
}

export function isKnownCwe(cwe: string): boolean {
  return (KNOWN_CWES as readonly string[]).includes(cwe);
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === "ENOENT" ? "is missing" : `cannot be read: ${(err as Error).message}`;
    throw new DeepGuardError("ERR_SCENARIO", `${path} ${why}`, { cause: err });
  }
}

/** Loads one scenario folder (`.../cwe-089/0-py`). `testsRoot` is a unit_test-style root. */
export async function loadScenario(dir: string, testsRoot?: string | null): Promise<Scenario> {
  dir = resolve(dir);
  if (!(await isDir(dir))) throw new DeepGuardError("ERR_SCENARIO", `${dir} is not a scenario folder`);
  const infoPath = join(dir, "info.json");
  const raw = await readJsonFile(infoPath, "ERR_SCENARIO");
  const parsed = infoSchema.safeParse(raw);
  if (!parsed.success) throw new DeepGuardError("ERR_SCENARIO", `${infoPath}: ${describeIssue(parsed.error.issues[0])}`);
  const info = parsed.data;
  const cwe = normalizeCwe(info.cwe);
  if (!isKnownCwe(cwe)) {
    throw new DeepGuardError("ERR_SCENARIO", `${infoPath}: CWE "${info.cwe}" has no attack oracle (known: ${KNOWN_CWES.join(", ")})`);
  }
  const lang = info.language;
  const fileContext = await readText(join(dir, `file_context.${lang}`));
  const funcContext = await readText(join(dir, `func_context.${lang}`));
  const name = basename(dir);
  const id = `${cwe}/${name}`;
  let testDir: string | null = null;
  if (testsRoot) {
    const t = join(resolve(testsRoot), cwe, name);
    if (await isDir(t)) testDir = t;
  }
  return {
    id,
    cwe,
    language: lang,
    name,
    dir,
    description: info.description ?? "",
    checkQl: info.check_ql ?? null,
    fileContext,
    funcContext,
    prompt: fileContext + funcContext,
    testDir,
  };
}

export interface LoadScenariosOptions {
  /** A unit_test-style folder with `cwe-XXX/N-lang/functional.py` per scenario. */
  tests?: string | null;
  /** Keep only these CWEs ("cwe-089" or "CWE-89"). */
  cwes?: string[];
  /** Keep only these scenario ids ("cwe-089/0-py"). */
  ids?: string[];
}

/**
 * Loads every scenario under `root` (the sec_eval layout: `cwe-XXX/N-lang`), or
 * `root` itself when it is one scenario folder. Sorted by id.
 */
export async function loadScenarios(root: string, options: LoadScenariosOptions = {}): Promise<Scenario[]> {
  root = resolve(root);
  if (!(await isDir(root))) throw new DeepGuardError("ERR_SCENARIO", `${root} is not a folder`);
  const tests = options.tests ?? null;
  if (tests && !(await isDir(tests))) throw new DeepGuardError("ERR_SCENARIO", `functional tests folder ${tests} does not exist`);
  let found: Scenario[];
  try {
    await stat(join(root, "info.json"));
    found = [await loadScenario(root, tests)];
  } catch (err) {
    if (err instanceof DeepGuardError) throw err;
    found = [];
    for (const c of (await readdir(root)).sort()) {
      if (!/^cwe-\d+$/i.test(c) || !(await isDir(join(root, c)))) continue;
      for (const s of (await readdir(join(root, c))).sort()) {
        if (await isDir(join(root, c, s))) found.push(await loadScenario(join(root, c, s), tests));
      }
    }
  }
  if (options.cwes?.length) {
    const keep = new Set(options.cwes.map(normalizeCwe));
    found = found.filter((s) => keep.has(s.cwe));
  }
  if (options.ids?.length) {
    const keep = new Set(options.ids);
    for (const id of keep) if (!found.some((s) => s.id === id)) throw new DeepGuardError("ERR_SCENARIO", `no scenario "${id}" under ${root}`);
    found = found.filter((s) => keep.has(s.id));
  }
  if (found.length === 0) throw new DeepGuardError("ERR_SCENARIO", `no scenarios (cwe-XXX/N-lang folders with info.json) under ${root}`);
  return found.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
