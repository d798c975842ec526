// The quantized-weights cache: written on the first load, mapped on the next
// with identical results, rebuilt when stale or damaged, errors when unwritable.
import { mkdtemp, readFile, rm, stat, utimes, writeFile, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs, type TinyCheckpoint } from "../support/checkpoint.js";
import { randomIds } from "../support/compare.js";
import { expectError } from "../support/expect.js";

let root = "";
let ckpt: TinyCheckpoint;
const spec = tinySpecs()["qwen2-bf16-tied"];
const ids = randomIds(20, spec.vocab, 3);

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-qcache-"));
  ckpt = await makeTinyCheckpoint(join(root, "m"), spec);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function logits(model: Model): Promise<Float32Array> {
  const a = (await model.forward(ids.slice(0, 9))).logits.data; // int8 path
  const b = (await model.forward(ids)).logits.data; // prefill path
  return Float32Array.from([...a, ...b]);
}

test("first load writes the cache, the next maps it with identical results", async () => {
  const fresh = await Model.load(ckpt.dir, { quantize: "q4_0" });
  const want = await logits(fresh);
  assert.is(fresh.info.quantCache, null);
  fresh.dispose();

  const first = await Model.load(ckpt.dir, { quantize: "q4_0", quantCache: true });
  assert.is(first.info.quantCache, "written");
  const file = join(ckpt.dir, "deepguard-q4_0.dgq");
  const bytes = await readFile(file);
  assert.is(bytes.subarray(0, 8).toString("latin1"), "DGQUANT1");
  assert.equal(await logits(first), want);
  first.dispose();

  const seen: number[] = [];
  const second = await Model.load(ckpt.dir, { quantize: "q4_0", quantCache: true, onProgress: (p) => seen.push(p.done / p.total) });
  assert.is(second.info.quantCache, "loaded");
  assert.is(second.info.linearDtype, "Q4_0");
  assert.equal(seen[seen.length - 1], 1);
  assert.equal(await logits(second), want);
  second.dispose();

  // Another format has its own file.
  const q8 = await Model.load(ckpt.dir, { quantize: "q8_0", quantCache: true });
  assert.is(q8.info.quantCache, "written");
  q8.dispose();
});

test("a stale or damaged cache is rebuilt, never used", async () => {
  const file = join(root, "explicit.dgq");
  const want = await logits(await Model.load(ckpt.dir, { quantize: "q8_0" }));
  assert.is((await Model.load(ckpt.dir, { quantize: "q8_0", quantCache: file })).info.quantCache, "written");
  assert.is((await Model.load(ckpt.dir, { quantize: "q8_0", quantCache: file })).info.quantCache, "loaded");

  // The source changed (a new modification time): rebuilt.
  const src = join(ckpt.dir, "model.safetensors");
  const st = await stat(src);
  await utimes(src, st.atime, new Date(st.mtimeMs + 5000));
  assert.is((await Model.load(ckpt.dir, { quantize: "q8_0", quantCache: file })).info.quantCache, "written");

  // Damaged blocks of the right size would be used, so damage the header instead; and a truncated file.
  const good = await readFile(file);
  const bad = Buffer.from(good);
  bad[40] ^= 0xff; // first record's rows
  await writeFile(file, bad);
  let m = await Model.load(ckpt.dir, { quantize: "q8_0", quantCache: file });
  assert.is(m.info.quantCache, "written");
  assert.equal(await logits(m), want);
  await writeFile(file, good.subarray(0, good.length - 1));
  m = await Model.load(ckpt.dir, { quantize: "q8_0", quantCache: file });
  assert.is(m.info.quantCache, "written");
  await writeFile(file, "not a cache");
  m = await Model.load(ckpt.dir, { quantize: "q8_0", quantCache: file });
  assert.is(m.info.quantCache, "written");
  assert.equal(await logits(m), want);
});

test("bad cache options: without quantize, unwritable place", async () => {
  await expectError(() => Model.load(ckpt.dir, { quantCache: true }), "ERR_ARGUMENT", /quantCache.*quantize/);
  await expectError(() => Model.load(ckpt.dir, { quantize: "q8_0", quantCache: 3 as never }), "ERR_ARGUMENT");
  await expectError(() => Model.load(ckpt.dir, { quantize: "q8_0", quantCache: join(root, "no-such-dir", "c.dgq") }), "ERR_QUANT_CACHE", /no-such-dir/);
  if (process.getuid?.() !== 0) {
    const ro = join(root, "ro");
    await makeTinyCheckpoint(ro, spec);
    await chmod(ro, 0o555);
    await expectError(() => Model.load(ro, { quantize: "q8_0", quantCache: true }), "ERR_QUANT_CACHE");
  }
});

test.run();
