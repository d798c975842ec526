/** Runs the compiled CLI (dist/lib/cli/main.js) in a child process, as a user would. */
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const CLI_PATH = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "lib", "cli", "main.js");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Exit code and both streams of `deepguard ...args`, with `env` added to this process's environment. */
export async function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliResult> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [CLI_PATH, ...args], {
      maxBuffer: 1 << 28,
      env: { ...process.env, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
