/**
 * The serving scheduler, TypeScript side: every eval(), evalBatch(), forward()
 * and generate() of a Model becomes a request to the model's native scheduler
 * (native/serve/scheduler.h), which runs all active sequences together on its
 * own thread: one batched step per iteration over every decoding sequence plus
 * a bounded chunk of pending prefill (continuous batching, chunked prefill).
 * Nothing here runs on libuv's worker pool, so fs, crypto, zlib and dns never
 * wait on inference.
 */
import { abortError, DeepGuardError, isErrorCode, throwIfAborted } from "../errors.js";
import { native } from "../native.js";
import type { NativeModel, NativeSchedulerHandle, NativeServeEvent, NativeServeRequest } from "../native-types.js";

export interface SchedulerStats {
  /** Requests admitted and not yet finished. */
  active: number;
  /** Batched steps run so far. */
  iterations: number;
  /** The most token rows one iteration has run. */
  maxBatchRows: number;
  /** Prompt tokens one iteration prefills while other sequences decode. */
  prefillChunk: number;
}

function eventError(ev: NativeServeEvent, signal: AbortSignal | undefined, what: string): DeepGuardError {
  if (ev.code === "ERR_ABORTED") return abortError(signal, what, ev.message);
  return new DeepGuardError(isErrorCode(ev.code) ? ev.code : "ERR_NATIVE", ev.message ?? "native failure");
}

/** Events of one request, pulled in order (the scheduler runs ahead; they queue). */
export class RequestStream {
  readonly #events: NativeServeEvent[] = [];
  #wake: (() => void) | null = null;
  #done = false;

  /** @internal */
  push(ev: NativeServeEvent): void {
    this.#events.push(ev);
    this.#wake?.();
    this.#wake = null;
  }

  async next(): Promise<NativeServeEvent> {
    while (this.#events.length === 0) await new Promise<void>((r) => (this.#wake = r));
    const ev = this.#events.shift()!;
    if (ev.done) this.#done = true;
    return ev;
  }

  get done(): boolean {
    return this.#done;
  }
}

export class Scheduler {
  readonly #native: NativeSchedulerHandle;

  constructor(engine: NativeModel, options: { prefillChunk: number; maxPositions: number }) {
    this.#native = new (native().NativeScheduler)(engine, options);
  }

  stats(): SchedulerStats {
    return this.#native.stats();
  }

  /** No new requests; the scheduler goes once those in flight have finished. */
  close(): void {
    this.#native.close();
  }

  cancel(id: number): void {
    this.#native.cancel(id);
  }

  /** Continues a stepwise generation: a new bias, null for none, undefined to keep the current one. */
  resume(id: number, bias: Float32Array | null | undefined): void {
    this.#native.resume(id, bias);
  }

  /**
   * Admits eval requests atomically (they are stepped together) and resolves
   * with each one's final event. An abort cancels them all: the promise rejects
   * with ERR_ABORTED once the scheduler has dropped them.
   */
  async evalAll(requests: NativeServeRequest[], signal: AbortSignal | undefined): Promise<NativeServeEvent[]> {
    throwIfAborted(signal, "eval");
    const results: (NativeServeEvent | undefined)[] = new Array(requests.length);
    let left = requests.length;
    let finished!: () => void;
    const all = new Promise<void>((r) => (finished = r));
    const index = new Map<number, number>();
    const ids = this.#native.submit(requests, (ev) => {
      const i = index.get(ev.id);
      if (i === undefined || !ev.done) return;
      results[i] = ev;
      if (--left === 0) finished();
    });
    ids.forEach((id, i) => index.set(id, i));
    const onAbort = () => ids.forEach((id) => this.#native.cancel(id));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await all;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    const failed = results.find((r) => r!.code !== undefined);
    if (failed) throw eventError(failed, signal, "eval");
    return results as NativeServeEvent[];
  }

  /** Admits one generation; its events arrive on the returned stream. */
  generate(request: NativeServeRequest): { id: number; stream: RequestStream } {
    const stream = new RequestStream();
    const [id] = this.#native.submit([request], (ev) => stream.push(ev));
    return { id, stream };
  }

  /** Admits several generations atomically (they start in the same iteration); every event goes to onEvent. */
  submitAll(requests: NativeServeRequest[], onEvent: (ev: NativeServeEvent) => void): number[] {
    return this.#native.submit(requests, onEvent);
  }

  /** The DeepGuardError a failed event stands for. */
  static errorOf(ev: NativeServeEvent, signal: AbortSignal | undefined, what: string): DeepGuardError {
    return eventError(ev, signal, what);
  }
}
