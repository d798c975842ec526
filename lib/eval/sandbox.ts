/**
 * Sandboxed execution of untrusted (model-generated) programs.
 *
 * Every program runs in its own temporary folder, in a child process with
 * wall-clock, CPU, memory, file-size, open-file and process-count limits, and is
 * killed with its whole process group (and PID namespace, where there is one) on
 * timeout. Isolation, strongest first (probed once, reported in every result):
 *
 *  - "bwrap": bubblewrap with a read-only root, private /tmp (size-capped tmpfs),
 *    no network, own PID/IPC/UTS namespaces; only the program's folder is writable.
 *  - "unshare": util-linux `unshare -n -p -f --kill-child` (root only): no network,
 *    own PID namespace; the rest of the file system is protected by the uid below.
 *  - "none": resource limits only (reported as such, never silently).
 *
 * When we run as root, the program itself runs as an unprivileged uid (setpriv),
 * which makes RLIMIT_NPROC effective (it is not enforced for root) and keeps the
 * program from writing anywhere but its own folder (and /tmp in "unshare" mode).
 * Limits are set with prlimit(1). Programs built with AddressSanitizer cannot run
 * under an address-space limit (ASan reserves terabytes of shadow memory); for them
 * ASan's own hard_rss_limit_mb bounds memory instead.
 *
 * `DEEPGUARD_SANDBOX=bwrap|unshare|none` forces a mode (tests of the fallbacks).
 */
import { spawn, spawnSync } from "node:child_process";
import { constants as osConstants } from "node:os";
import { accessSync, constants, existsSync, realpathSync, statSync } from "node:fs";
import { chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { DeepGuardError } from "../errors.js";

export type IsolationMode = "bwrap" | "unshare" | "none";

export interface Isolation {
  mode: IsolationMode;
  /** Network namespace (no interfaces but a down loopback). */
  network: boolean;
  pidNamespace: boolean;
  /** Everything outside the program folder (and a private /tmp) is read-only. */
  readOnlyRoot: boolean;
  /** The uid programs run as (65534 when we are root, else our own). */
  uid: number;
  /** One line for reports. */
  description: string;
}

export interface SandboxLimits {
  /** Wall-clock limit; the whole process tree is killed when it passes. */
  wallMs: number;
  cpuSeconds: number;
  /** Address-space limit (or ASan's RSS limit for sanitizer builds). */
  memoryMb: number;
  /** Largest file the program may write (RLIMIT_FSIZE). */
  fileSizeMb: number;
  /** Processes of the sandbox uid (RLIMIT_NPROC); not enforced for root. */
  processes: number;
  openFiles: number;
  /** stdout and stderr are each kept up to this many bytes. */
  outputBytes: number;
}

export const DEFAULT_LIMITS: SandboxLimits = {
  wallMs: 10_000,
  cpuSeconds: 10,
  memoryMb: 1024,
  fileSizeMb: 16,
  processes: 128,
  openFiles: 256,
  outputBytes: 1 << 20,
};

export interface RunOptions {
  /** The program's folder (from `Sandbox.folder()`): the working directory, the only writable place. */
  dir: string;
  /** Working directory inside `dir` (default: `dir`). */
  cwd?: string;
  command: string;
  args?: string[];
  stdin?: string | Buffer;
  env?: Record<string, string>;
  limits?: Partial<SandboxLimits>;
  /** A sanitizer build: no address-space limit (see the header). */
  sanitizer?: boolean;
  signal?: AbortSignal;
}

export interface RunResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  outputTruncated: boolean;
  wallMs: number;
}

const SANDBOX_UID = 65534;
const BASE_PATH = "/usr/local/bin:/usr/bin:/bin";

/** Resolves a program name on PATH (or null). */
export function which(name: string): string | null {
  if (name.includes("/")) return existsSync(name) ? name : null;
  for (const d of (process.env.PATH ?? BASE_PATH).split(delimiter)) {
    if (!d) continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      /* next */
    }
  }
  return null;
}

function probe(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: "ignore", timeout: 10_000 });
  return r.status === 0;
}

/** The highest ancestor of `path` that others cannot traverse, or null. */
function closedAncestor(path: string): string | null {
  let found: string | null = null;
  for (let d = dirname(path); d !== "/" && d !== "."; d = dirname(d)) {
    try {
      if ((statSync(d).mode & 0o001) === 0) found = d;
    } catch {
      return found;
    }
  }
  return found;
}

let detected: Isolation | undefined;

/** Probes (once) the strongest isolation this machine offers. */
export function detectIsolation(): Isolation {
  if (detected) return detected;
  const forced = process.env.DEEPGUARD_SANDBOX;
  if (forced !== undefined && !["bwrap", "unshare", "none"].includes(forced)) {
    throw new DeepGuardError("ERR_SANDBOX", `DEEPGUARD_SANDBOX must be bwrap, unshare or none, got "${forced}"`);
  }
  const root = process.getuid?.() === 0;
  const uid = root ? SANDBOX_UID : (process.getuid?.() ?? -1);
  const prlimit = which("prlimit");
  if (!prlimit) throw new DeepGuardError("ERR_SANDBOX", "prlimit (util-linux) is not on PATH: cannot limit sandboxed programs");
  if (root && !which("setpriv")) throw new DeepGuardError("ERR_SANDBOX", "setpriv (util-linux) is not on PATH: cannot drop root for sandboxed programs");
  const canBwrap = (forced === undefined || forced === "bwrap") && which("bwrap") !== null &&
    probe("bwrap", ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--unshare-pid", "--die-with-parent", "true"]);
  if (forced === "bwrap" && !canBwrap) throw new DeepGuardError("ERR_SANDBOX", "DEEPGUARD_SANDBOX=bwrap but bubblewrap is missing or cannot create namespaces here");
  const who = root ? `uid ${uid}` : `own uid ${uid}`;
  if (canBwrap) {
    detected = { mode: "bwrap", network: true, pidNamespace: true, readOnlyRoot: true, uid, description: `bubblewrap (no network, PID namespace, read-only root, private /tmp), ${who}, prlimit` };
    return detected;
  }
  const canUnshare = (forced === undefined || forced === "unshare") && which("unshare") !== null &&
    probe("unshare", ["-n", "-p", "-f", "--kill-child", "true"]);
  if (forced === "unshare" && !canUnshare) throw new DeepGuardError("ERR_SANDBOX", "DEEPGUARD_SANDBOX=unshare but unshare -n -p cannot create namespaces here (needs root)");
  if (canUnshare) {
    detected = { mode: "unshare", network: true, pidNamespace: true, readOnlyRoot: false, uid, description: `unshare (no network, PID namespace), ${who}, prlimit` };
    return detected;
  }
  detected = { mode: "none", network: false, pidNamespace: false, readOnlyRoot: false, uid, description: `NO namespace isolation (network reachable), ${who}, prlimit only` };
  return detected;
}

/** Forgets the probed isolation (tests switch DEEPGUARD_SANDBOX). */
export function resetIsolation(): void {
  detected = undefined;
}

/** Creates a fresh program folder owned by the sandbox uid. Remove it with `removeFolder`. */
export async function makeFolder(prefix = "dg-sbx-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return dir;
}

/** Gives the folder (recursively: files written into it after creation) to the sandbox uid. */
async function handOver(dir: string, iso: Isolation): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const r = spawnSync("chown", ["-R", `${iso.uid}:${iso.uid}`, dir]);
  if (r.status !== 0) await chown(dir, iso.uid, iso.uid);
}

export async function removeFolder(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

function wrap(iso: Isolation, opts: RunOptions, limits: SandboxLimits, command: string, dropUid: boolean): string[] {
  const rl = [
    "prlimit",
    `--cpu=${limits.cpuSeconds}`,
    `--fsize=${limits.fileSizeMb * 1024 * 1024}`,
    `--nofile=${limits.openFiles}`,
    `--nproc=${limits.processes}`,
    "--core=0",
    ...(opts.sanitizer ? [] : [`--as=${limits.memoryMb * 1024 * 1024}`]),
    "--",
  ];
  const drop = dropUid ? ["setpriv", `--reuid=${iso.uid}`, `--regid=${iso.uid}`, "--clear-groups", "--"] : [];
  const inner = [...drop, ...rl, command, ...(opts.args ?? [])];
  if (iso.mode === "bwrap") {
    const binds: string[] = [];
    // Tools installed under a folder others cannot enter (e.g. pyenv under /root):
    // cover that folder with an empty tmpfs and bind the tool's tree back read-only.
    const closed = closedAncestor(command);
    if (closed) {
      const rel = command.slice(closed.length + 1).split("/")[0];
      binds.push("--tmpfs", closed, "--ro-bind", join(closed, rel), join(closed, rel));
    }
    return [
      "bwrap", "--ro-bind", "/", "/", ...binds, "--dev", "/dev", "--proc", "/proc",
      "--perms", "1777", "--size", String(64 * 1024 * 1024), "--tmpfs", "/tmp",
      "--bind", opts.dir, opts.dir, "--chdir", opts.cwd ?? opts.dir,
      "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
      "--", ...inner,
    ];
  }
  if (iso.mode === "unshare") return ["unshare", "-n", "-p", "-f", "--kill-child", "--", ...inner];
  return inner;
}

/** Resolves `command` to an absolute real path. */
function resolveCommand(command: string): string {
  const p = which(command);
  if (!p) throw new DeepGuardError("ERR_SANDBOX", `"${command}" is not on PATH`);
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/**
 * Runs one command in the program folder under the detected isolation. Never
 * throws for anything the program does: a crash, a timeout, a limit hit all come
 * back in the result.
 */
export async function runSandboxed(opts: RunOptions): Promise<RunResult> {
  const iso = detectIsolation();
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const command = resolveCommand(opts.command);
  await handOver(opts.dir, iso);
  // In "unshare"/"none" mode a tool under /root (pyenv) is unreachable for the
  // sandbox uid; it then runs with our own uid (bwrap binds it back instead).
  const dropUid = process.getuid?.() === 0 && (iso.mode === "bwrap" || closedAncestor(command) === null);
  const argv = wrap(iso, opts, limits, command, dropUid);
  const env: Record<string, string> = {
    PATH: BASE_PATH,
    HOME: opts.dir,
    TMPDIR: opts.dir,
    LANG: "C.UTF-8",
    PYTHONDONTWRITEBYTECODE: "1",
    ...opts.env,
  };
  const started = Date.now();
  const child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd ?? opts.dir, env, detached: true, stdio: ["pipe", "pipe", "pipe"] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let outLen = 0;
  let errLen = 0;
  let truncated = false;
  child.stdout.on("data", (b: Buffer) => {
    if (outLen < limits.outputBytes) out.push(b.subarray(0, limits.outputBytes - outLen));
    else truncated = true;
    outLen += b.length;
  });
  child.stderr.on("data", (b: Buffer) => {
    if (errLen < limits.outputBytes) err.push(b.subarray(0, limits.outputBytes - errLen));
    else truncated = true;
    errLen += b.length;
  });
  child.stdin.on("error", () => {}); // the program may exit without reading its input
  child.stdin.end(opts.stdin ?? "");
  let timedOut = false;
  const killAll = () => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      /* already gone */
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killAll();
  }, limits.wallMs);
  const onAbort = () => killAll();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    let status: [number | null, NodeJS.Signals | null] = [null, null];
    let settled = false;
    const finish = () => {
      if (!settled) {
        settled = true;
        resolve(status);
      }
    };
    child.on("error", finish);
    child.on("close", finish);
    child.on("exit", (code, sig) => {
      status = [code, sig];
      // Orphans that escaped the group may keep the pipes open: do not wait for them.
      killAll();
      setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        finish();
      }, 300).unref();
    });
  });
  clearTimeout(timer);
  opts.signal?.removeEventListener("abort", onAbort);
  if (opts.signal?.aborted) throw new DeepGuardError("ERR_ABORTED", "sandboxed run aborted", { cause: opts.signal.reason });
  // bwrap and unshare report a program killed by a signal as exit status 128 + n.
  let sig = signal;
  let code = exitCode;
  if (sig === null && iso.mode !== "none" && code !== null && code > 128 && code < 128 + 32) {
    const name = Object.entries(osConstants.signals).find(([, n]) => n === code! - 128)?.[0];
    if (name) {
      sig = name as NodeJS.Signals;
      code = null;
    }
  }
  return {
    exitCode: code,
    signal: sig,
    stdout: Buffer.concat(out).toString("utf8"),
    stderr: Buffer.concat(err).toString("utf8"),
    timedOut,
    outputTruncated: truncated,
    wallMs: Date.now() - started,
  };
}
