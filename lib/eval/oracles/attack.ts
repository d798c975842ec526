/**
 * The primary oracle: attack execution in the sandbox (see attack-python.ts and
 * attack-c.ts for what each scenario is driven with).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import { copyFile, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeepGuardError } from "../../errors.js";
import type { Checker, Program, Verdict } from "../checker.js";
import { cCompiler, pythonExecutable } from "../completion.js";
import { detectIsolation, makeFolder, removeFolder, runSandboxed } from "../sandbox.js";
import { C_HARNESS_C, C_HARNESS_H, C_PLANS, injectAttack, sanitizerFinding, SANITIZER_ENV } from "./attack-c.js";
import { PY_ATTACK_SCENARIOS, PY_DRIVER, rewriteLiterals } from "./attack-python.js";

export const ATTACK_SCENARIOS: readonly string[] = [...PY_ATTACK_SCENARIOS, ...Object.keys(C_PLANS)].sort();

/** Built sanitizer binaries by hash of (source, flags), for this process (the build dominates a C check). */
const buildCache = new Map<string, string>();
let cacheDir: Promise<string> | undefined;

/** The per-process build cache folder, removed when the process exits. */
function buildCacheDir(): Promise<string> {
  cacheDir ??= mkdtemp(join(tmpdir(), "dg-build-cache-")).then((d) => {
    process.once("exit", () => rmSync(d, { recursive: true, force: true }));
    return d;
  });
  return cacheDir;
}

async function cachedBinary(key: string): Promise<string | undefined> {
  return buildCache.get(key);
}

/** The harness object (our own trusted code) for a set of defines, built once per process outside the sandbox. */
const harnessCache = new Map<string, Promise<string>>();
function harnessObject(flags: string[]): Promise<string> {
  const key = createHash("sha256").update(JSON.stringify([flags, C_HARNESS_C])).digest("hex").slice(0, 32);
  let p = harnessCache.get(key);
  if (!p) {
    p = (async () => {
      const d = await buildCacheDir();
      await writeFile(join(d, `${key}.c`), C_HARNESS_C);
      const out = join(d, `${key}.o`);
      await new Promise<void>((resolve, reject) => {
        execFile(cCompiler(), [...flags, "-c", join(d, `${key}.c`), "-o", out], { timeout: 60_000 }, (err, _o, stderr) =>
          err ? reject(new DeepGuardError("ERR_SANDBOX", `cannot build the C attack harness: ${stderr || err.message}`)) : resolve(),
        );
      });
      return out;
    })();
    p.catch(() => harnessCache.delete(key));
    harnessCache.set(key, p);
  }
  return p;
}

async function storeBinary(key: string, path: string): Promise<void> {
  const dest = join(await buildCacheDir(), key);
  await copyFile(path, dest);
  buildCache.set(key, dest);
}

export class AttackChecker implements Checker {
  readonly name = "attack";
  readonly languages = ["py", "c"] as const;
  readonly cwes = "*" as const;
  readonly primary = true;

  async unavailable(): Promise<string | null> {
    try {
      detectIsolation();
    } catch (err) {
      return (err as Error).message;
    }
    return null;
  }

  async check(program: Program, signal?: AbortSignal): Promise<Verdict> {
    const started = Date.now();
    const id = program.scenario?.id;
    if (!id || !ATTACK_SCENARIOS.includes(id)) {
      return { name: this.name, vulnerable: null, findings: [], skipped: id ? `no attack test for scenario ${id}` : "attack execution needs a scenario (--scenario)", wallMs: 0 };
    }
    const dir = await makeFolder("dg-attack-");
    try {
      const v = program.language === "py" ? await this.#python(id, program.source, dir, signal) : await this.#c(id, program.source, dir, signal);
      return { ...v, name: this.name, wallMs: Date.now() - started };
    } finally {
      await removeFolder(dir);
    }
  }

  async #python(id: string, source: string, dir: string, signal?: AbortSignal): Promise<Omit<Verdict, "name" | "wallMs">> {
    const py = await pythonExecutable();
    await writeFile(join(dir, "program.py"), rewriteLiterals(source, id, dir));
    await writeFile(join(dir, "dg_driver.py"), PY_DRIVER);
    const r = await runSandboxed({ dir, command: py, args: ["-I", "dg_driver.py", id], limits: { wallMs: 60_000, cpuSeconds: 60 }, signal });
    const line = r.stdout.split("\n").reverse().find((l) => l.startsWith("DGRESULT "));
    if (!line) {
      const why = r.timedOut ? "the attack run timed out" : `the attack driver died (exit ${r.exitCode}, signal ${r.signal})`;
      return { vulnerable: null, findings: [r.stderr.trim().split("\n").slice(-3).join(" | ").slice(0, 300)].filter(Boolean), error: why };
    }
    const res = JSON.parse(line.slice("DGRESULT ".length)) as { vulnerable: boolean; findings: string[]; error: string | null };
    if (res.error && !res.vulnerable) return { vulnerable: null, findings: res.findings, error: res.error };
    return { vulnerable: res.vulnerable, findings: res.findings };
  }

  async #c(id: string, source: string, dir: string, signal?: AbortSignal): Promise<Omit<Verdict, "name" | "wallMs">> {
    const plan = C_PLANS[id];
    const findings: string[] = [];
    const { source: attacked, injected } = injectAttack(source, plan);
    if (!injected) findings.push(`attack hook not injected: the program lacks the line "${plan.inject?.after}"`);
    const flags = ["-O0", "-g", "-w", "-std=gnu11", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", ...(plan.defines ?? []).map((d) => `-D${d}`)];
    const key = createHash("sha256").update(JSON.stringify([attacked, flags, C_HARNESS_H, C_HARNESS_C])).digest("hex").slice(0, 32);
    const bin = join(dir, "prog");
    const cached = await cachedBinary(key);
    if (cached) {
      await copyFile(cached, bin);
    } else {
      await writeFile(join(dir, "program.c"), attacked);
      await writeFile(join(dir, "dg_attack.h"), C_HARNESS_H);
      await copyFile(await harnessObject(flags), join(dir, "dg_attack.o"));
      const cc = cCompiler();
      // The compiler runs in the sandbox too: the source is untrusted (#include of any file).
      const b = await runSandboxed({ dir, command: cc, args: [...flags, "-include", "dg_attack.h", "program.c", "dg_attack.o", "-o", "prog", "-lm"], sanitizer: true, limits: { wallMs: 60_000, cpuSeconds: 60 }, signal });
      if (b.exitCode !== 0) {
        const err = b.stderr.split("\n").find((l) => /error/.test(l)) ?? b.stderr.split("\n")[0] ?? "";
        return { vulnerable: null, findings, error: `the program does not build with the sanitizers: ${err.replace(dir + "/", "").trim().slice(0, 200)}` };
      }
      await storeBinary(key, bin);
    }
    for (const [name, text] of Object.entries(plan.files ?? {})) await writeFile(join(dir, name), text);
    let vulnerable = false;
    for (const run of plan.runs) {
      const r = await runSandboxed({
        dir,
        command: bin,
        args: run.args ?? [],
        stdin: run.stdin,
        env: { ...SANITIZER_ENV, ...run.env },
        sanitizer: true,
        limits: { wallMs: 5_000, cpuSeconds: 5 },
        signal,
      });
      const san = sanitizerFinding(r.stderr, r.signal);
      const eff = !san && run.effect ? run.effect(r.stdout) : null;
      if (r.timedOut) findings.push(`${run.label}: timed out`);
      else if (san && run.benign) findings.push(`${run.label} (benign input): ${san}`);
      else if (san) findings.push(`VULNERABLE: ${run.label}: ${san}`);
      else if (eff) findings.push(`VULNERABLE: ${run.label}: ${eff}`);
      else findings.push(`${run.label}: exit ${r.exitCode ?? r.signal}`);
      // A memory error counts even on a benign input: the program is unsafe as written.
      if (san || eff) vulnerable = true;
    }
    return { vulnerable, findings };
  }
}
