// Every native binding called directly (below lib/'s validation) with hostile
// values in every argument and every field: NaN, infinities, huge and negative
// numbers, wrong types, wrong and detached typed arrays, other native objects.
// The promise: a coded error (a code from ERROR_CODES) or a normal result,
// never a crash, a hang or an uncoded exception.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { ERROR_CODES } from "../../lib/index.js";
import { locateCheckpoint } from "../../lib/model/checkpoint.js";
import { readModelConfig, toNativeConfig } from "../../lib/model/config.js";
import { native } from "../../lib/native.js";
import type { NativeModel } from "../../lib/native-types.js";
import { makeTinyAdapter } from "../support/adapter.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";

const spec = { ...tinySpecs()["qwen2-f32-gqa-tied"], tokenizer: false, hidden: 32, intermediate: 48, vocab: 64 };
const codes = new Set<string>(ERROR_CODES);
let root = "";
let dir = "";
let adapterDir = "";

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-fuzz-native-"));
  const tiny = await makeTinyCheckpoint(join(root, "m"), spec);
  dir = tiny.dir;
  adapterDir = (await makeTinyAdapter(join(root, "a"), tiny.weights, spec.layers, { rank: 2, alpha: 4, targets: ["q_proj"], dtype: "F32", seed: 1 })).dir;
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

function detached(kind: "f32" | "i32"): Float32Array | Int32Array {
  const a = kind === "f32" ? new Float32Array(4) : new Int32Array(4);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
}

/** Values that must never get past a binding's checks unnoticed. */
function hostile(): unknown[] {
  return [
    undefined, null, NaN, Infinity, -Infinity, -1, -0.5, 0.5, 2 ** 31, 2 ** 53, 2 ** 64, -(2 ** 63), 1e308, "1", "", true,
    {}, [], [NaN], [2 ** 40], 1n, () => 1, new Float64Array(4), new Uint8Array(4), new Float32Array(0), new Int32Array(0),
    detached("f32"), detached("i32"), Symbol("s"),
  ];
}

/** Copies of `args` with one argument, or one field / element of it, replaced by each hostile value. */
function mutations(args: unknown[]): { what: string; args: unknown[] }[] {
  const out: { what: string; args: unknown[] }[] = [];
  const values = hostile();
  args.forEach((arg, i) => {
    values.forEach((v, j) => out.push({ what: `arg ${i} = hostile[${j}]`, args: args.map((a, k) => (k === i ? v : a)) }));
    if (Array.isArray(arg) && arg.length > 0) {
      values.forEach((v, j) => out.push({ what: `arg ${i}[0] = hostile[${j}]`, args: args.map((a, k) => (k === i ? [v, ...arg.slice(1)] : a)) }));
      const first = arg[0];
      if (first && typeof first === "object" && !ArrayBuffer.isView(first)) {
        for (const key of Object.keys(first)) {
          values.forEach((v, j) =>
            out.push({ what: `arg ${i}[0].${key} = hostile[${j}]`, args: args.map((a, k) => (k === i ? [{ ...first, [key]: v }, ...arg.slice(1)] : a)) }),
          );
        }
      }
    } else if (arg && typeof arg === "object" && !ArrayBuffer.isView(arg) && !Array.isArray(arg)) {
      for (const key of Object.keys(arg)) {
        values.forEach((v, j) => out.push({ what: `arg ${i}.${key} = hostile[${j}]`, args: args.map((a, k) => (k === i ? { ...arg, [key]: v } : a)) }));
      }
    }
  });
  return out;
}

/** Calls fn; returns a problem description, or null for a result or a coded error. */
async function probe(fn: () => unknown): Promise<string | null> {
  try {
    const r = fn();
    if (r instanceof Promise) {
      let timer: NodeJS.Timeout | undefined;
      const hang = new Promise<"hang">((res) => (timer = setTimeout(() => res("hang"), 5000)));
      const outcome = await Promise.race([r.then(() => "ok"), hang]).finally(() => clearTimeout(timer));
      if (outcome === "hang") return "hung";
    }
    return null;
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    if (typeof code === "string" && codes.has(code)) return null;
    return `uncoded ${(err as Error)?.name}: ${(err as Error)?.message}`;
  }
}

async function fuzz(name: string, base: unknown[], call: (args: unknown[]) => unknown, problems: string[]): Promise<number> {
  const cases = mutations(base);
  for (const c of cases) {
    if (process.env.DG_FUZZ_VERBOSE === "1") console.error(`${name}(${c.what})`);
    const p = await probe(() => call(c.args));
    if (p) problems.push(`${name}(${c.what}): ${p}`);
  }
  return cases.length;
}

test("every native binding answers hostile arguments with coded errors", async () => {
  const addon = native() as unknown as Record<string, (...a: unknown[]) => unknown> & { NativeScheduler: new (...a: unknown[]) => Record<string, (...a: unknown[]) => unknown> };
  const config = toNativeConfig(await readModelConfig(join(dir, "config.json")));
  const files = await locateCheckpoint(dir);
  const adapterFiles = await locateCheckpoint(adapterDir).catch(() => null);
  const model = (await native().loadModel(config, files.files, files.tensors, { mmap: true })) as NativeModel & Record<string, (...a: unknown[]) => unknown>;
  const otherModel = await native().loadModel(config, files.files, files.tensors, { mmap: false });
  const problems: string[] = [];
  let n = 0;

  n += await fuzz("loadModel", [config, files.files, files.tensors, { mmap: true }], (a) => addon.loadModel(...a), problems);
  n += await fuzz("sampleToken", [new Float32Array([0, 1, 2]), { temperature: 1, topK: 2, topP: 0.9 }, 0.5, new Float32Array(3)], (a) => addon.sampleToken(...a), problems);
  // A valid large size (up to 16 GiB) is legitimately slow: such cases only check the type.
  n += await fuzz("measureBandwidth", [1 << 20, 1], (a) => {
    if (typeof a[0] === "number" && a[0] > 1 << 24 && Number.isInteger(a[0])) return addon.measureBandwidth(2 ** 40, a[1]);
    return addon.measureBandwidth(...a);
  }, problems);
  n += await fuzz("systemInfo", [], (a) => addon.systemInfo(...a), problems);

  const session = model.createSession() as unknown as Record<string, (...a: unknown[]) => unknown>;
  n += await fuzz("session.truncate", [0], (a) => session.truncate(...a), problems);
  n += await fuzz("model.createSession", [], (a) => model.createSession(...(a as [])), problems);
  n += await fuzz("model.info", [], (a) => (model.info as (...x: unknown[]) => unknown)(...a), problems);
  if (adapterFiles) {
    const adapterSpec = { rank: 2, scale: 2, targets: ["q_proj"], layers: [0, 1] };
    n += await fuzz("model.loadAdapter", [adapterSpec, adapterFiles.files, adapterFiles.tensors], (a) => model.loadAdapter(...(a as Parameters<NativeModel["loadAdapter"]>)), problems);
    model.unloadAdapter();
  }

  n += await fuzz("new NativeScheduler", [model, { prefillChunk: 8, maxPositions: 0 }], (a) => new addon.NativeScheduler(...a), problems);
  const scheduler = new addon.NativeScheduler(model, { prefillChunk: 8, maxPositions: 0 });
  const onEvent = () => {};
  const evalReq = { kind: "eval", session: model.createSession(), tokens: Int32Array.of(1, 2), capture: [1], adapter: true, logits: "last" };
  n += await fuzz("scheduler.submit(eval)", [[evalReq], onEvent], (a) => scheduler.submit(...a), problems);
  const genReq = {
    kind: "generate", session: model.createSession(), tokens: Int32Array.of(1, 2), capture: [0], temperature: 1, topK: 0, topP: 1,
    seed: 1, maxTokens: 2, stopIds: [3], logitBias: new Float32Array(spec.vocab), stepwise: false,
  };
  // A fresh session per case: an admitted request keeps its session busy until it ends.
  n += await fuzz("scheduler.submit(generate)", [[genReq], onEvent], (a) => {
    const reqs = a[0];
    if (Array.isArray(reqs) && reqs[0] && typeof reqs[0] === "object" && (reqs[0] as { session?: unknown }).session === genReq.session) {
      reqs[0] = { ...(reqs[0] as object), session: model.createSession() };
    }
    return scheduler.submit(...a);
  }, problems);
  // A session of another model is refused.
  const foreign = { ...evalReq, session: otherModel.createSession() };
  const p = await probe(() => scheduler.submit([foreign], onEvent));
  if (p) problems.push(`submit(foreign session): ${p}`);
  n += await fuzz("scheduler.cancel", [1], (a) => scheduler.cancel(...a), problems);
  n += await fuzz("scheduler.resume", [1, new Float32Array(spec.vocab)], (a) => scheduler.resume(...a), problems);
  n += await fuzz("scheduler.stats", [], (a) => scheduler.stats(...a), problems);

  // Cancel whatever was admitted (a stepwise request waits for resume() forever),
  // then check the engine still computes.
  const [lastId] = scheduler.submit([{ ...evalReq, session: model.createSession() }], onEvent) as number[];
  for (let id = 1; id <= lastId; id++) scheduler.cancel(id);
  while ((scheduler.stats() as { active: number }).active > 0) await new Promise((r) => setTimeout(r, 5));
  const ids = scheduler.submit([{ ...evalReq, session: model.createSession() }], (ev: { done: boolean; code?: string }) => {
    if (ev.done) done(ev);
  }) as number[];
  let done!: (ev: { code?: string }) => void;
  const last = await new Promise<{ code?: string }>((r) => (done = r));
  assert.is(ids.length, 1);
  assert.is(last.code, undefined, "the engine still works after the fuzzing");
  n += await fuzz("scheduler.close", [], (a) => scheduler.close(...a), problems);
  n += await fuzz("session.dispose", [], (a) => session.dispose(...a), problems);
  n += await fuzz("model.dispose", [], (a) => model.dispose(...(a as [])), problems);
  otherModel.dispose();
  assert.ok(n > 1500, `only ${n} cases`);
  assert.equal(problems.slice(0, 20), [], `${problems.length} problems`);
});

test.run();
