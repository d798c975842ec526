/**
 * Functional correctness: runs the scenario's `functional.py` (unit_test layout)
 * on the completed program, in the sandbox. The tests import `func_timeout`,
 * which cannot be installed here: a small compatible module (func_timeout(),
 * FunctionTimedOut) is put on their path. Python tests import the program and
 * drive it; C tests compile it with cc and check its output. A test passes when
 * the harness's summary says "Functional: 1" of "Total tests: 1".
 */
import { copyFile, mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pythonExecutable } from "./completion.js";
import { makeFolder, removeFolder, runSandboxed } from "./sandbox.js";
import type { Scenario } from "./scenarios.js";

export interface FunctionalResult {
  /** null when the scenario has no functional test (or it could not be run: see `error`). */
  passed: boolean | null;
  detail: string;
  error?: string;
  wallMs: number;
}

/** The subset of the func_timeout package the tests use. */
export const FUNC_TIMEOUT_SHIM = String.raw`"""Minimal stand-in for the func_timeout package (func_timeout, FunctionTimedOut)."""
import threading

class FunctionTimedOut(Exception):
    def __init__(self, msg="", timedOutAfter=None, timedOutFunction=None, timedOutArgs=None, timedOutKwargs=None):
        super().__init__(msg or "function timed out after %s seconds" % timedOutAfter)
        self.timedOutAfter = timedOutAfter

def func_timeout(timeout, func, args=(), kwargs=None):
    kwargs = kwargs or {}
    box = {}
    def target():
        try:
            box["value"] = func(*args, **kwargs)
        except BaseException as e:
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise FunctionTimedOut(timedOutAfter=timeout, timedOutFunction=func)
    if "error" in box:
        raise box["error"]
    return box.get("value")
`;

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Runs the scenario's functional test on `source` (a whole program). */
export async function runFunctionalTest(scenario: Scenario, source: string, signal?: AbortSignal): Promise<FunctionalResult> {
  const started = Date.now();
  const testDir = scenario.testDir;
  if (!testDir || !(await exists(join(testDir, "functional.py")))) {
    return { passed: null, detail: "no functional test for this scenario", wallMs: 0 };
  }
  const utilsPath = join(testDir, "..", "..", "test_utils.py");
  if (!(await exists(utilsPath))) {
    return { passed: null, detail: "", error: `${utilsPath} is missing (the functional tests need it)`, wallMs: 0 };
  }
  let py: string;
  try {
    py = await pythonExecutable();
  } catch (err) {
    return { passed: null, detail: "", error: (err as Error).message, wallMs: 0 };
  }
  const dir = await makeFolder("dg-func-");
  try {
    // Layout the tests expect: <ut>/test_utils.py, <ut>/<cwe>/<name>/functional.py; the program alone in its folder.
    const ut = join(dir, "ut");
    const own = join(ut, scenario.cwe, scenario.name);
    const prog = join(dir, "prog");
    await mkdir(own, { recursive: true });
    await mkdir(prog, { recursive: true });
    await mkdir(join(dir, "shim", "func_timeout"), { recursive: true });
    await writeFile(join(dir, "shim", "func_timeout", "__init__.py"), FUNC_TIMEOUT_SHIM);
    await copyFile(utilsPath, join(ut, "test_utils.py"));
    await copyFile(join(testDir, "functional.py"), join(own, "functional.py"));
    // Helper files beside the test (e.g. sales.c) go next to the program, where the test compiles it.
    for (const e of await readdir(testDir, { withFileTypes: true })) {
      if (e.isFile() && e.name !== "functional.py" && !/^test_cases?\./.test(e.name)) await copyFile(join(testDir, e.name), join(prog, e.name));
    }
    await writeFile(join(prog, `program.${scenario.language}`), source);
    const r = await runSandboxed({
      dir,
      cwd: prog,
      command: py,
      args: [join(own, "functional.py"), "--path", prog],
      env: { PYTHONPATH: join(dir, "shim") },
      limits: { wallMs: 30_000, cpuSeconds: 30 },
      signal,
    });
    const text = r.stdout + "\n" + r.stderr;
    const total = /Total tests:\s*(\d+)/.exec(text);
    const ok = /Functional:\s*(\d+)/.exec(text);
    const failLine = /^program: Fail - (.*)$/m.exec(text)?.[1] ?? /^(Fail: .*|Pass.*)$/m.exec(text)?.[1];
    if (!total || !ok) {
      const why = r.timedOut ? "the functional test timed out" : `the functional test did not report (exit ${r.exitCode ?? r.signal}): ${r.stderr.trim().split("\n").slice(-1)[0] ?? ""}`;
      return { passed: false, detail: why.slice(0, 300), wallMs: Date.now() - started };
    }
    const passed = Number(total[1]) > 0 && Number(ok[1]) === Number(total[1]);
    return { passed, detail: passed ? "pass" : (failLine ?? "fail").slice(0, 300), wallMs: Date.now() - started };
  } finally {
    await removeFolder(dir);
  }
}
