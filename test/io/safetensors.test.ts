import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdtemp, mkdir, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeTensor, encodeTensor } from "../../lib/io/dtype.js";
import { readSafetensorsHeader, readTensorData, SAFETENSORS_DTYPES, writeFully, writeSafetensors } from "../../lib/io/safetensors.js";
import { expectError } from "../support/expect.js";

let dir = "";
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "dg-safetensors-"));
});
test.after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Builds a file byte by byte, so tests can write headers no honest writer would. */
async function rawFile(name: string, header: unknown, dataBytes: number, headerLength?: bigint): Promise<string> {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  const path = join(dir, name);
  await writeFile(path, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
  return path;
}

async function expectRejection(promise: Promise<unknown>, ...fragments: string[]): Promise<void> {
  try {
    await promise;
  } catch (err) {
    assert.is((err as { code?: string }).code, "ERR_SAFETENSORS", (err as Error).message);
    for (const fragment of fragments)
      assert.ok((err as Error).message.includes(fragment), `"${(err as Error).message}" should name ${fragment}`);
    return;
  }
  assert.unreachable("expected a rejection");
}

const f32 = (shape: number[], begin: number) => ({
  dtype: "F32",
  shape,
  data_offsets: [begin, begin + 4 * shape.reduce((a, b) => a * b, 1)],
});

test("SAFETENSORS_DTYPES lists the standard dtypes with their sizes", () => {
  assert.is(Object.keys(SAFETENSORS_DTYPES).length, 15);
  assert.is(SAFETENSORS_DTYPES.BF16, 2);
  assert.is(SAFETENSORS_DTYPES.F8_E4M3, 1);
  assert.is(SAFETENSORS_DTYPES.U64, 8);
});

test("round trip keeps bytes, shapes and dtypes, and aligns every tensor", async () => {
  const values = Array.from({ length: 12 }, (_, i) => (i - 5) / 7);
  const tensors = {
    "w.f32": { dtype: "F32", shape: [3, 4], data: encodeTensor(values, "F32") },
    "w.f16": { dtype: "F16", shape: [4, 3], data: encodeTensor(values, "F16") },
    "w.bf16": { dtype: "BF16", shape: [12], data: encodeTensor(values, "BF16") },
    "a.scalar": { dtype: "F64", shape: [], data: encodeTensor([Math.PI], "F64") },
    "z.empty": { dtype: "F32", shape: [0, 5], data: new Uint8Array(0) },
    "b.byte": { dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 3]) },
  };
  const path = join(dir, "roundtrip.safetensors");
  await writeSafetensors(path, tensors);
  const header = await readSafetensorsHeader(path);
  assert.is(header.fileSize, (await stat(path)).size);
  assert.is(header.dataOffset % 8, 0, "data section starts 8-byte aligned");
  assert.equal([...header.tensors.keys()].sort(), Object.keys(tensors).sort());
  for (const [name, tensor] of Object.entries(tensors)) {
    const info = header.tensors.get(name)!;
    assert.is(info.dtype, tensor.dtype, name);
    assert.equal(info.shape, tensor.shape, name);
    assert.is((header.dataOffset + info.begin) % SAFETENSORS_DTYPES[info.dtype as "F32"], 0, `${name} aligned`);
    assert.equal(new Uint8Array(await readTensorData(header, name)), tensor.data, name);
  }
  const bf16 = decodeTensor(await readTensorData(header, "w.bf16"), "BF16");
  values.forEach((v, i) => assert.ok(Math.abs(bf16[i] - v) <= Math.abs(v) * 2 ** -8, `bf16[${i}]`));
  assert.equal(header.metadata, {});
});

test("writing is deterministic", async () => {
  const tensors = {
    b: { dtype: "F32", shape: [1], data: encodeTensor([1], "F32") },
    a: { dtype: "F32", shape: [1], data: encodeTensor([2], "F32") },
  };
  await writeSafetensors(join(dir, "d1.safetensors"), tensors);
  await writeSafetensors(join(dir, "d2.safetensors"), { a: tensors.a, b: tensors.b });
  assert.equal(await readFile(join(dir, "d1.safetensors")), await readFile(join(dir, "d2.safetensors")));
});

test("metadata round trips", async () => {
  const path = join(dir, "meta.safetensors");
  const metadata = { format: "pt", note: "ünïcode ✓" };
  await writeSafetensors(path, { x: { dtype: "I32", shape: [2], data: new Uint8Array(8) } }, metadata);
  assert.equal((await readSafetensorsHeader(path)).metadata, metadata);
});

test("atomic write: no temp file left after success or failure, old file kept on failure", async () => {
  const sub = join(dir, "atomic");
  await mkdir(sub);
  const path = join(sub, "model.safetensors");
  const good = { x: { dtype: "F32", shape: [2], data: encodeTensor([1, 2], "F32") } };
  await writeSafetensors(path, good);
  await writeSafetensors(path, { x: { dtype: "F32", shape: [1], data: encodeTensor([3], "F32") } });
  assert.equal(await readdir(sub), ["model.safetensors"]);

  const before = await readFile(path);
  await expectRejection(
    writeSafetensors(path, { x: { dtype: "F32", shape: [3], data: new Uint8Array(4) } }),
    path,
    '"x"',
    "12",
  );
  assert.equal(await readFile(path), before);

  // Renaming onto a directory fails after the temp file is written: it must be removed.
  const blocked = join(sub, "blocked");
  await mkdir(blocked);
  try {
    await writeSafetensors(blocked, good);
    assert.unreachable("rename onto a directory should fail");
  } catch (err) {
    assert.not.instance(err, assert.Assertion);
  }
  assert.equal((await readdir(sub)).sort(), ["blocked", "model.safetensors"]);
});

test("writer rejects unknown dtype, bad shape, reserved name and non-string metadata", async () => {
  const path = join(dir, "never.safetensors");
  await expectRejection(
    writeSafetensors(path, { t: { dtype: "F12", shape: [1], data: new Uint8Array(2) } }),
    path,
    "F12",
  );
  await expectRejection(
    writeSafetensors(path, { t: { dtype: "toString", shape: [1], data: new Uint8Array(2) } }),
    path,
    "toString",
  );
  await expectRejection(
    writeSafetensors(path, { t: { dtype: "U8", shape: [-1], data: new Uint8Array(0) } }),
    path,
    '"t"',
  );
  await expectRejection(
    writeSafetensors(path, { __metadata__: { dtype: "U8", shape: [0], data: new Uint8Array(0) } }),
    path,
  );
  await expectRejection(writeSafetensors(path, {}, { n: 1 } as unknown as Record<string, string>), path, "metadata");
});

test("truncated file: cut inside the data section", async () => {
  const path = join(dir, "cut.safetensors");
  await writeSafetensors(path, {
    a: { dtype: "F32", shape: [8], data: new Uint8Array(32) },
    b: { dtype: "F32", shape: [8], data: new Uint8Array(32) },
  });
  await truncate(path, (await stat(path)).size - 10);
  await expectRejection(readSafetensorsHeader(path), path, "truncated file", '"b"');
});

test("header that lies: data_offsets end past the end of the file", async () => {
  const path = await rawFile("lies.safetensors", { w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8);
  await expectRejection(readSafetensorsHeader(path), path, "truncated file", '"w"');
});

test("byte length different from shape x dtype size names tensor, expected and actual", async () => {
  const path = await rawFile("len.safetensors", { w: { dtype: "BF16", shape: [2, 3], data_offsets: [0, 10] } }, 10);
  await expectRejection(readSafetensorsHeader(path), path, '"w"', "12", "10");
});

test("overlapping tensors", async () => {
  const path = await rawFile("overlap.safetensors", { a: f32([4], 0), b: f32([4], 8) }, 24);
  await expectRejection(readSafetensorsHeader(path), path, "overlaps", '"a"', '"b"');
});

test("hole in the data section", async () => {
  const path = await rawFile("hole.safetensors", { a: f32([2], 0), b: f32([2], 12) }, 20);
  await expectRejection(readSafetensorsHeader(path), path, "hole", '"b"');
});

test("trailing bytes after the last tensor", async () => {
  const path = await rawFile("trailing.safetensors", { a: f32([2], 0) }, 12);
  await expectRejection(readSafetensorsHeader(path), path, "trailing");
});

test("oversized header length (2^40)", async () => {
  const path = await rawFile("huge.safetensors", {}, 0, 2n ** 40n);
  await expectRejection(readSafetensorsHeader(path), path, "1099511627776", "limit");
});

test("header length larger than the file", async () => {
  const path = await rawFile("long.safetensors", { a: f32([1], 0) }, 4, 1000n);
  await expectRejection(readSafetensorsHeader(path), path, "1000");
});

test("header that is not JSON", async () => {
  const path = await rawFile("notjson.safetensors", "{not json at all", 0);
  await expectRejection(readSafetensorsHeader(path), path, "JSON");
});

test("header that is not UTF-8", async () => {
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(4n);
  const path = join(dir, "latin1.safetensors");
  await writeFile(path, Buffer.concat([prefix, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]));
  await expectRejection(readSafetensorsHeader(path), path, "UTF-8");
});

test("JSON array header and header not starting with '{'", async () => {
  await expectRejection(
    readSafetensorsHeader(await rawFile("array.safetensors", "[1,2]", 0)),
    "array.safetensors",
    "'{'",
  );
  await expectRejection(
    readSafetensorsHeader(await rawFile("space.safetensors", " {}", 0)),
    "space.safetensors",
    "'{'",
  );
  await expectRejection(
    readSafetensorsHeader(await rawFile("null.safetensors", "{}null", 0)),
    "null.safetensors",
    "JSON",
  );
});

test("unknown dtype", async () => {
  const path = await rawFile("dtype.safetensors", { w: { dtype: "F12", shape: [1], data_offsets: [0, 2] } }, 2);
  await expectRejection(readSafetensorsHeader(path), path, '"w"', "unknown dtype", "F12");
});

test("negative and fractional shapes", async () => {
  const negative = await rawFile("neg.safetensors", { w: { dtype: "U8", shape: [-1], data_offsets: [0, 0] } }, 0);
  await expectRejection(readSafetensorsHeader(negative), negative, '"w"', "shape");
  const fractional = await rawFile("frac.safetensors", { w: { dtype: "U8", shape: [1.5], data_offsets: [0, 1] } }, 1);
  await expectRejection(readSafetensorsHeader(fractional), fractional, '"w"', "shape");
});

test("missing or reversed data_offsets", async () => {
  const missing = await rawFile("nooffsets.safetensors", { w: { dtype: "U8", shape: [1] } }, 1);
  await expectRejection(readSafetensorsHeader(missing), missing, '"w"', "data_offsets");
  const reversed = await rawFile("reversed.safetensors", { w: { dtype: "U8", shape: [0], data_offsets: [4, 0] } }, 4);
  await expectRejection(readSafetensorsHeader(reversed), reversed, '"w"', "data_offsets");
});

test("shape whose byte count overflows 2^53 is rejected, not wrapped", async () => {
  const path = await rawFile(
    "overflow.safetensors",
    { w: { dtype: "U8", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 0] } },
    0,
  );
  await expectRejection(readSafetensorsHeader(path), path, '"w"', "1208925819614629174706176");
});

test("metadata with non-string values", async () => {
  const path = await rawFile("meta-bad.safetensors", { __metadata__: { epoch: 3 }, a: f32([1], 0) }, 4);
  await expectRejection(readSafetensorsHeader(path), path, "__metadata__", "epoch");
});

test("file of 3 bytes", async () => {
  const path = join(dir, "tiny.safetensors");
  await writeFile(path, Buffer.from([1, 2, 3]));
  await expectRejection(readSafetensorsHeader(path), path, "3 bytes");
});

test("readTensorData names a missing tensor", async () => {
  const path = await rawFile("one.safetensors", { a: f32([1], 0) }, 4);
  await expectRejection(readTensorData(await readSafetensorsHeader(path), "b"), path, '"b"');
});

test("writes loop until done: short writes continue, a write making no progress fails", async () => {
  // A fake file that takes at most 3 bytes per write, as a kernel may.
  const written = new Uint8Array(20);
  const slow = {
    write: async (data: Uint8Array, offset: number, length: number, position: number) => {
      const n = Math.min(3, length);
      written.set(data.subarray(offset, offset + n), position);
      return { bytesWritten: n, buffer: data };
    },
  } as unknown as Parameters<typeof writeFully>[0];
  const data = Uint8Array.from({ length: 17 }, (_, i) => i + 1);
  assert.is(await writeFully(slow, data, 2, "fake"), 19);
  assert.equal(Array.from(written.subarray(2, 19)), Array.from(data));
  const stuck = { write: async () => ({ bytesWritten: 0 }) } as unknown as Parameters<typeof writeFully>[0];
  await expectError(() => writeFully(stuck, data, 0, "stuck.safetensors"), "ERR_SAFETENSORS", /stuck\.safetensors: write made no progress/);
});

test.run();
