/**
 * safetensors reading and writing. The reader trusts nothing, following the
 * safetensors Rust crate: the header size is bounded before it is read, every
 * entry is schema-checked, each byte length must equal shape x dtype size, and
 * the tensors must tile the data section exactly, so that no later read (here
 * or in the native mmap loader) can run outside the file or alias two tensors.
 */
import { open, rename, unlink, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { DeepGuardError } from "../errors.js";
import { syncDirectory, tempPathFor } from "./atomic.js";

/** Bytes per element of every standard safetensors dtype. */
export const SAFETENSORS_DTYPES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const satisfies Record<string, number>;

export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte offsets relative to the data section, as in the header's data_offsets. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  path: string;
  fileSize: number;
  /** Absolute offset of the data section: 8 + header length. */
  dataOffset: number;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** The crate's MAX_HEADER_SIZE: larger headers are refused before any allocation. */
const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = "__metadata__";

const dtypeNames = Object.keys(SAFETENSORS_DTYPES) as [SafetensorsDtype, ...SafetensorsDtype[]];
const byteOffset = z.int().nonnegative();
const tensorEntrySchema = z.object({
  dtype: z.enum(dtypeNames, { error: (issue) => `unknown dtype ${JSON.stringify(issue.input)}` }),
  shape: z.array(z.int().nonnegative()),
  data_offsets: z.tuple([byteOffset, byteOffset]).refine(([begin, end]) => begin <= end, "begin must not exceed end"),
});
const metadataSchema = z.record(z.string(), z.string());

function fail(path: string, detail: string, cause?: unknown): DeepGuardError {
  return new DeepGuardError("ERR_SAFETENSORS", `${path}: ${detail}`, cause === undefined ? undefined : { cause });
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message))
    .join("; ");
}

/** Byte length implied by shape and dtype, computed in BigInt so huge shapes cannot overflow. */
function expectedByteLength(dtype: SafetensorsDtype, shape: number[]): bigint {
  return shape.reduce((n, d) => n * BigInt(d), BigInt(SAFETENSORS_DTYPES[dtype]));
}

async function readExactly(path: string, position: number, length: number, what: string): Promise<Buffer> {
  const file = await open(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await file.read(buffer, 0, length, position);
    if (bytesRead !== length) throw fail(path, `${what}: expected ${length} bytes at ${position}, read ${bytesRead}`);
    return buffer;
  } finally {
    await file.close();
  }
}

function parseHeaderJson(path: string, bytes: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (err) {
    throw fail(path, "header is not valid UTF-8", err);
  }
  // ignoreBOM keeps a byte-order mark in the text, so it is refused here as the Rust crate refuses it.
  if (!text.startsWith("{")) throw fail(path, "header must be a JSON object starting with '{'");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw fail(path, `header is not valid JSON (${(err as Error).message})`, err);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw fail(path, "header must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

function parseEntries(path: string, fileSize: number, dataOffset: number, json: Record<string, unknown>) {
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, value] of Object.entries(json)) {
    if (name === METADATA_KEY) {
      const result = metadataSchema.safeParse(value);
      if (!result.success)
        throw fail(path, `__metadata__ must map strings to strings (${describeIssues(result.error)})`);
      metadata = result.data;
      continue;
    }
    const result = tensorEntrySchema.safeParse(value);
    if (!result.success) throw fail(path, `tensor "${name}": ${describeIssues(result.error)}`);
    const {
      dtype,
      shape,
      data_offsets: [begin, end],
    } = result.data;
    const expected = expectedByteLength(dtype, shape);
    if (BigInt(end - begin) !== expected) {
      throw fail(
        path,
        `tensor "${name}": ${dtype} [${shape.join(", ")}] needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`,
      );
    }
    if (end > fileSize - dataOffset) {
      throw fail(
        path,
        `truncated file: tensor "${name}" ends at data byte ${end} but the data section has only ${fileSize - dataOffset} bytes`,
      );
    }
    tensors.set(name, { name, dtype, shape, begin, end });
  }
  return { tensors, metadata };
}

/**
 * Tensors must tile [0, data size) in offset order with no gap, overlap or
 * trailing bytes. This also covers duplicated JSON keys: JSON.parse keeps only
 * the last entry, so the bytes a dropped entry owned show up as a hole (a
 * dropped entry that owned no bytes, or the same bytes, changes nothing).
 */
function checkTiling(path: string, tensors: Iterable<TensorInfo>, dataSize: number): void {
  const ordered = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous: TensorInfo | undefined;
  for (const t of ordered) {
    if (t.begin < covered) {
      throw fail(
        path,
        `tensor "${t.name}" [${t.begin}, ${t.end}) overlaps tensor "${previous!.name}" [${previous!.begin}, ${previous!.end})`,
      );
    }
    if (t.begin > covered) {
      throw fail(
        path,
        `hole in the data section: bytes [${covered}, ${t.begin}) before tensor "${t.name}" belong to no tensor`,
      );
    }
    covered = t.end;
    previous = t;
  }
  if (covered !== dataSize) {
    throw fail(path, `data section has ${dataSize} bytes but the tensors cover only ${covered} (trailing bytes)`);
  }
}

/** Reads and validates the header; touches only the first 8 + header-length bytes of the file. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const file = await open(path, "r").catch((err: unknown) => {
    throw new DeepGuardError("ERR_FILE_OPEN", `cannot open ${path}: ${(err as Error).message}`, { cause: err });
  });
  let fileSize: number;
  let headerBytes: Buffer;
  try {
    fileSize = (await file.stat()).size;
    if (fileSize < 8) throw fail(path, `file has ${fileSize} bytes, fewer than the 8-byte header length`);
    const lengthBytes = Buffer.alloc(8);
    await file.read(lengthBytes, 0, 8, 0);
    const headerLength = lengthBytes.readBigUInt64LE(0);
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw fail(path, `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    if (headerLength > BigInt(fileSize - 8)) {
      throw fail(path, `header length ${headerLength} exceeds the ${fileSize - 8} bytes after the length prefix`);
    }
    headerBytes = Buffer.alloc(Number(headerLength));
    const { bytesRead } = await file.read(headerBytes, 0, headerBytes.length, 8);
    if (bytesRead !== headerBytes.length)
      throw fail(path, `header: expected ${headerBytes.length} bytes, read ${bytesRead}`);
  } finally {
    await file.close();
  }
  const dataOffset = 8 + headerBytes.length;
  const json = parseHeaderJson(path, headerBytes);
  const { tensors, metadata } = parseEntries(path, fileSize, dataOffset, json);
  checkTiling(path, tensors.values(), fileSize - dataOffset);
  return { path, fileSize, dataOffset, tensors, metadata };
}

/** Reads one tensor's bytes. Meant for tests and small tensors; models are mmapped natively. */
export async function readTensorData(header: SafetensorsHeader, name: string): Promise<Buffer> {
  const info = header.tensors.get(name);
  if (!info) throw fail(header.path, `no tensor named "${name}"`);
  return readExactly(header.path, header.dataOffset + info.begin, info.end - info.begin, `tensor "${name}"`);
}

export interface TensorToWrite {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

function checkTensorToWrite(path: string, name: string, tensor: TensorToWrite): void {
  if (name === METADATA_KEY) throw fail(path, `"${METADATA_KEY}" is reserved and cannot name a tensor`);
  if (!Object.hasOwn(SAFETENSORS_DTYPES, tensor.dtype))
    throw fail(path, `tensor "${name}": unknown dtype ${tensor.dtype}`);
  if (!tensor.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw fail(path, `tensor "${name}": shape [${tensor.shape.join(", ")}] must hold non-negative integers`);
  }
  const expected = expectedByteLength(tensor.dtype as SafetensorsDtype, tensor.shape);
  if (BigInt(tensor.data.byteLength) !== expected) {
    throw fail(
      path,
      `tensor "${name}": ${tensor.dtype} [${tensor.shape.join(", ")}] needs ${expected} bytes but data has ${tensor.data.byteLength}`,
    );
  }
}

/**
 * Largest element size first, then name: with the data section starting at a
 * multiple of 8 every tensor then starts aligned to its element size, which
 * lets the native loader use the mmap directly. The order is deterministic.
 */
function storageOrder(tensors: Record<string, TensorToWrite>): string[] {
  const size = (name: string) => SAFETENSORS_DTYPES[tensors[name].dtype as SafetensorsDtype];
  return Object.keys(tensors).sort((a, b) => size(b) - size(a) || (a < b ? -1 : a > b ? 1 : 0));
}

function encodeHeader(
  order: string[],
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const name of order) {
    const { dtype, shape, data } = tensors[name];
    header[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, " ");
  json.copy(padded);
  return padded;
}

/** Writes a safetensors file atomically: to a temp name, fsynced, then renamed over `path`. */
// One write() moves at most ~2 GiB on Linux and may move less; loop in chunks.
const WRITE_CHUNK = 1 << 30;

/** Writes all of `data` at `position`, however short each write; returns the position after it. @internal */
export async function writeFully(
  file: Pick<FileHandle, "write">,
  data: Uint8Array,
  position: number,
  path: string,
): Promise<number> {
  for (let offset = 0; offset < data.byteLength; ) {
    const length = Math.min(WRITE_CHUNK, data.byteLength - offset);
    const { bytesWritten } = await file.write(data, offset, length, position);
    if (bytesWritten <= 0) throw fail(path, `write made no progress at byte ${position}`);
    offset += bytesWritten;
    position += bytesWritten;
  }
  return position;
}

export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  for (const [name, tensor] of Object.entries(tensors)) checkTensorToWrite(path, name, tensor);
  const metadataCheck = metadata === undefined ? undefined : metadataSchema.safeParse(metadata);
  if (metadataCheck && !metadataCheck.success) {
    throw fail(path, `metadata must map strings to strings (${describeIssues(metadataCheck.error)})`);
  }
  const order = storageOrder(tensors);
  const header = encodeHeader(order, tensors, metadata);
  const lengthPrefix = Buffer.alloc(8);
  lengthPrefix.writeBigUInt64LE(BigInt(header.length));

  const tempPath = tempPathFor(path);
  const file = await open(tempPath, "wx");
  try {
    try {
      let position = 0;
      for (const buffer of [lengthPrefix, header, ...order.map((name) => tensors[name].data)]) {
        position = await writeFully(file, buffer, position, path);
      }
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tempPath, path);
  } catch (err) {
    await unlink(tempPath).catch(() => undefined);
    throw err;
  }
  await syncDirectory(dirname(path));
}
