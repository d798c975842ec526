// The sandbox contains programs that loop, fork, allocate without bound, write outside their
// folder, fill the disk or open network connections; each is reported and the harness goes on.
import { existsSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { pythonExecutable } from "../../lib/eval/completion.js";
import { detectIsolation, makeFolder, removeFolder, runSandboxed } from "../../lib/eval/sandbox.js";

let py = "";
let dir = "";
const outside = `/tmp/dg-escape-${process.pid}`;

test.before(async () => {
  py = await pythonExecutable();
  dir = await makeFolder("dg-sbx-test-");
});
test.after(async () => {
  await removeFolder(dir);
  await rm(outside, { force: true });
});

const iso = () => detectIsolation();

test("isolation is detected and described", () => {
  const i = iso();
  console.log(`  sandbox: ${i.description}`);
  assert.ok(["bwrap", "unshare", "none"].includes(i.mode));
  assert.ok(i.description.length > 10);
});

test("an endless loop is killed at the wall-clock limit", async () => {
  const r = await runSandboxed({ dir, command: py, args: ["-c", "while True: pass"], limits: { wallMs: 800 } });
  assert.ok(r.timedOut);
  assert.is(r.signal, "SIGKILL");
  assert.ok(r.wallMs < 5000, String(r.wallMs));
});

test("a CPU limit stops a busy program even without the wall clock", async () => {
  const r = await runSandboxed({ dir, command: py, args: ["-c", "while True: pass"], limits: { wallMs: 20_000, cpuSeconds: 1 } });
  assert.not.ok(r.timedOut);
  assert.ok(r.signal === "SIGKILL" || r.signal === "SIGXCPU", String(r.signal));
});

test("a fork bomb is contained and the whole process tree is killed", async () => {
  const r = await runSandboxed({
    dir,
    command: py,
    args: ["-c", "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"],
    limits: { wallMs: 1500 },
  });
  assert.ok(r.timedOut);
  // Nothing of it survives: no process of the sandbox uid is left (when we dropped to one).
  if (process.getuid?.() === 0) {
    // Killed processes take a moment to be reaped on a loaded machine: poll for up to 5 s.
    let left: string[] = [];
    for (let waited = 0; waited <= 5000; waited += 100) {
      await new Promise((res) => setTimeout(res, 100));
      left = [];
      for (const p of await readdir("/proc")) {
        if (!/^\d+$/.test(p)) continue;
        try {
          const st = (await import("node:fs")).statSync(`/proc/${p}`);
          if (st.uid === iso().uid) left.push(p);
        } catch {
          /* gone */
        }
      }
      if (left.length === 0) break;
    }
    assert.is(left.length, 0, `processes left after 5 s: ${left.join(",")}`);
  }
  const after = await runSandboxed({ dir, command: py, args: ["-c", "print('still works')"] });
  assert.is(after.stdout.trim(), "still works");
});

test("unbounded allocation fails inside the memory limit", async () => {
  const r = await runSandboxed({ dir, command: py, args: ["-c", "x = []\nwhile True: x.append(bytearray(10**7))"], limits: { memoryMb: 256 } });
  assert.not.ok(r.timedOut);
  assert.match(r.stderr, /MemoryError/);
});

test("a huge file hits the file-size limit", async () => {
  const r = await runSandboxed({ dir, command: py, args: ["-c", "f = open('big', 'wb')\nwhile True: f.write(b'x' * 1000000)"], limits: { fileSizeMb: 2 } });
  assert.ok(r.exitCode !== 0);
  assert.match(r.stderr + String(r.signal), /File too large|SIGXFSZ/);
});

test("writing outside the program folder is refused (read-only root / unprivileged uid)", async () => {
  const r = await runSandboxed({ dir, command: "sh", args: ["-c", `echo x > ${outside}; echo y > /etc/dg-escape; echo z > ./inside`] });
  assert.ok(existsSync(`${dir}/inside`));
  assert.not.ok(existsSync("/etc/dg-escape"));
  if (iso().mode === "bwrap") assert.not.ok(existsSync(outside), "bwrap: /tmp outside the folder is private");
  else console.log(`  ${iso().mode}: /tmp outside the folder ${existsSync(outside) ? "WAS" : "was not"} writable`);
  assert.ok(r.exitCode !== null);
});

test("network connections fail (no network namespace interfaces)", async () => {
  const code = "import socket\ns = socket.socket()\ns.settimeout(2)\nprint(s.connect_ex(('1.1.1.1', 80)))";
  const r = await runSandboxed({ dir, command: py, args: ["-c", code] });
  if (!iso().network) {
    console.log("  skipped: no network namespace available on this machine (reported as such)");
    return;
  }
  assert.not.equal(r.stdout.trim(), "0", "connect must fail");
});

test("stdin, environment and output capture; huge output is truncated", async () => {
  const r = await runSandboxed({ dir, command: "sh", args: ["-c", "cat; echo $DGX; head -c 3000000 /dev/zero"], stdin: "in\n", env: { DGX: "env-ok" }, limits: { outputBytes: 1000 } });
  assert.ok(r.stdout.startsWith("in\nenv-ok"));
  assert.is(r.stdout.length, 1000);
  assert.ok(r.outputTruncated);
});

test("a missing command is a clear error", async () => {
  try {
    await runSandboxed({ dir, command: "definitely-not-a-command-dg" });
    assert.unreachable();
  } catch (err) {
    assert.is((err as { code?: string }).code, "ERR_SANDBOX");
    assert.match((err as Error).message, /not on PATH/);
  }
});

test.run();
