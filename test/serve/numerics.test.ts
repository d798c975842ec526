// NaN and infinities propagate the same way on every ISA (DEEPGUARD_ISA in a
// child process each), and sampling non-finite logits is a coded error;
// invalid DEEPGUARD_* variables are named errors, never ignored.
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { native } from "../../lib/native.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";

let root = "";
let dir = "";
const libIndex = resolve("dist/lib/index.js");
const best = native().systemInfo().bestIsa;
const ISAS = ["scalar", "avx2", "avx512"].slice(0, ["scalar", "avx2", "avx512"].indexOf(best) + 1);

/** Sets one f32 element of a tensor in a single-file safetensors checkpoint. */
async function poke(file: string, tensor: string, index: number, value: number): Promise<void> {
  const buf = await readFile(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString("utf8"));
  const [start] = header[tensor].data_offsets as number[];
  buf.writeFloatLE(value, 8 + headerLen + start + index * 4);
  await writeFile(file, buf);
}

/** Runs `body` (an async function body with `Model` and `dir` in scope) in a child with `env`; returns its JSON. */
function child(body: string, env: Record<string, string>): { status: number | null; out: unknown; stderr: string } {
  const script = `import { Model } from ${JSON.stringify(libIndex)}; const dir = ${JSON.stringify(dir)};
    const out = await (async () => { ${body} })(); process.stdout.write(JSON.stringify(out));`;
  const res = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    env: { ...process.env, ...env },
  });
  let out: unknown = null;
  try {
    out = JSON.parse(res.stdout);
  } catch {
    out = res.stdout;
  }
  return { status: res.status, out, stderr: res.stderr };
}

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-nan-"));
  // Qwen2 (q/k/v biases), head_dim 16: every SIMD attention kernel is eligible.
  const spec = { ...tinySpecs()["qwen2-f32-gqa-tied"], tokenizer: false };
  dir = (await makeTinyCheckpoint(join(root, "m"), spec)).dir;
  // A NaN in one K bias of layer 1: every score of that kv head is NaN from layer 1 on.
  await poke(join(dir, "model.safetensors"), "model.layers.1.self_attn.k_proj.bias", 0, NaN);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

test("NaN propagation is identical for DEEPGUARD_ISA=scalar|avx2|avx512; sampling it is ERR_NON_FINITE", () => {
  const body = `
    const m = await Model.load(dir);
    const f = await m.forward([1, 2, 3, 4, 5, 6], { hiddenStates: [1, 2] });
    const mask = (a) => Array.from(a, (x) => (Number.isNaN(x) ? "n" : Number.isFinite(x) ? "f" : "i")).join("");
    let code = null;
    try { await m.complete([1, 2, 3], { maxTokens: 2 }); } catch (e) { code = e.code; }
    return { logits: mask(f.logits.data), h1: mask(f.hiddenStates.get(1).data), h2: mask(f.hiddenStates.get(2).data), code };`;
  const results = ISAS.map((isa) => ({ isa, ...child(body, { DEEPGUARD_ISA: isa }) }));
  for (const r of results) assert.is(r.status, 0, `${r.isa}: ${r.stderr}`);
  const ref = results[0].out as { logits: string; h1: string; h2: string; code: string };
  assert.ok(!ref.h1.includes("n"), "layer 0's output is still finite");
  assert.ok(/^n+$/.test(ref.h2) && /^n+$/.test(ref.logits), "NaN reaches every later state and logit");
  assert.is(ref.code, "ERR_NON_FINITE");
  for (const r of results.slice(1)) assert.equal(r.out, ref, `${r.isa} differs from scalar`);
});

test("invalid DEEPGUARD_* variables are named errors", () => {
  const body = `try { await Model.load(dir); return "loaded"; } catch (e) { return [e.code, e.message]; }`;
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ DEEPGUARD_ISA: "bogus" }, "ERR_ENV", /DEEPGUARD_ISA="bogus"/],
    [{ DEEPGUARD_THREADS: "abc" }, "ERR_ENV", /DEEPGUARD_THREADS="abc"/],
    [{ DEEPGUARD_THREADS: "0" }, "ERR_ENV", /DEEPGUARD_THREADS/],
    [{ DEEPGUARD_THREADS: "2.5" }, "ERR_ENV", /DEEPGUARD_THREADS/],
  ];
  if (best !== "avx512") cases.push([{ DEEPGUARD_ISA: "avx512" }, "ERR_ISA_UNSUPPORTED", /avx512/]);
  for (const [env, code, message] of cases) {
    const r = child(body, env);
    assert.is(r.status, 0, r.stderr);
    const [gotCode, gotMessage] = r.out as [string, string];
    assert.is(gotCode, code, JSON.stringify(env));
    assert.match(gotMessage, message);
  }
  assert.is(child(body, { DEEPGUARD_THREADS: "1", DEEPGUARD_ISA: "scalar" }).out, "loaded");
});

test.run();
