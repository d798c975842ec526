// Fuzzing of the API (case 4): seeded random calls with junk arguments must
// resolve or fail with a coded error, never crash, hang or leave a session
// locked, and leave the model's logits bit-identical. Shared helpers and the
// promise itself: support/fuzz.ts.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Matrix, Model, ModelSession } from "../../lib/index.js";
import { makeTinyCheckpoint, type TinyCheckpoint } from "../support/checkpoint.js";
import {
  FIXED_IDS,
  Findings,
  HANG_MS,
  Rng,
  SCALE,
  SEED,
  apiSpec,
  codedProblem,
  errorText,
  labels,
  sameBits,
  settle,
  show,
  trace,
} from "../support/fuzz.js";

/** Time limit of the "is this session still usable" probe after each misuse call. */
const PROBE_MS = 2000;

let root = "";
let api: TinyCheckpoint;

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-fuzz-api-"));
  api = await makeTinyCheckpoint(join(root, "api"), apiSpec);
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Case 4: API misuse. Seeded random calls of forward, session.eval, evalBatch
// and complete (plus truncate, Model.load and loadAdapter), with junk where an
// argument or option is expected. Each must resolve (to a well-formed result)
// or reject with a coded DeepGuardError, or an AbortError when an aborted
// signal was passed. After each call, every real session it touched must still
// answer (a rejected call must not leave a session's queue locked); at the end
// the model must give the same logits, bit for bit, as before.
// ---------------------------------------------------------------------------

/** Junk values; factories, so mutable ones are fresh per use. */
const JUNK: Array<() => unknown> = [
  () => NaN,
  () => -1,
  () => 0,
  () => -0,
  () => 1.5,
  () => 2 ** 31,
  () => 1e300,
  () => -Infinity,
  () => "abc",
  () => "",
  () => null,
  () => undefined,
  () => true,
  () => ({}),
  () => ({ length: 3 }),
  () => ({ length: -1 }),
  () => ({ length: 2 ** 40 }),
  () => ({ 0: 1, length: 1 }),
  () => [],
  () => [NaN],
  () => [1, "2"],
  () => [-1],
  () => [2 ** 31],
  () => [apiSpec.vocab],
  () => [[1, 2]],
  () => new Float32Array([1.5, 2]),
  () => new Float64Array([1, 2]),
  () => new Uint8Array([1, 2]),
  () => new BigInt64Array([1n]),
  () => Symbol("junk"),
  () => () => 1,
  () => new Date(0),
  () => new Map([[0, 1]]),
  () => Object.create(null),
  () => 2n,
];

interface Call {
  what: string;
  run: () => unknown;
  /** Real sessions of the fuzzed model the call touches: probed afterwards. */
  sessions: ModelSession[];
  /** An AbortError is an acceptable outcome. */
  abortable: boolean;
}

/**
 * Generates the random calls; sessions and signals it creates are tracked per
 * call. Each call draws a "mess" level (the chance that any one argument or
 * option is bad): at 0 the call is valid and reaches the native engine, so
 * successes, mid-flight aborts and concurrent steps get their share too.
 */
class CallMaker {
  shared: ModelSession;
  #fresh: ModelSession[] = [];
  #abortable = false;
  #mess = 0;

  constructor(
    readonly r: Rng,
    readonly model: Model,
    readonly foreign: Model,
  ) {
    this.shared = this.#session("sharedSession");
  }

  #session(label: string): ModelSession {
    const s = this.model.createSession();
    labels.set(s, label);
    return s;
  }

  /** Whether this argument or option should be a bad one. */
  bad(): boolean {
    return this.r.chance(this.#mess);
  }

  junk(): unknown {
    return this.r.pick(JUNK)();
  }

  /** Valid ids (several array kinds) or text; when bad, near-valid (one junk element) or junk. */
  tokens(): unknown {
    const r = this.r;
    const ids = () => Array.from({ length: 1 + r.int(6) }, () => r.int(apiSpec.vocab));
    if (!this.bad()) {
      const roll = r.next();
      if (roll < 0.6) return ids();
      if (roll < 0.8) return r.pick([Int32Array, Uint16Array, Float64Array]).from(ids());
      return r.pick(["def f():", "x", "  \n\t", "é✓😀", "\ud800", "<|endoftext|>", "SELECT * FROM t", "a".repeat(300)]);
    }
    if (r.chance(0.5)) {
      const near: unknown[] = ids();
      near[r.int(near.length)] = this.junk();
      return near;
    }
    return r.chance(0.2) ? "" : this.junk();
  }

  /** A live signal, one aborted already or mid-flight, or (when bad) junk. */
  signal(): unknown {
    if (this.bad()) return this.junk();
    switch (this.r.int(3)) {
      case 0:
        return new AbortController().signal;
      case 1:
        this.#abortable = true;
        return AbortSignal.abort();
      default: {
        // Aborted while the call is in flight (or not, if it is quick).
        this.#abortable = true;
        const c = new AbortController();
        setTimeout(() => c.abort(), 0);
        return c.signal;
      }
    }
  }

  /** Eval / forward options: absent, or an object whose fields may be bad; when bad, null or junk. */
  evalOptions(): unknown {
    const r = this.r;
    if (r.chance(0.15)) return undefined;
    if (this.bad() && r.chance(0.3)) return r.chance(0.4) ? null : this.junk();
    const o: Record<string, unknown> = {};
    const bad = () => this.bad();
    if (r.chance(0.5)) o.logits = bad() ? r.pick<unknown>(["first", "ALL", "", this.junk()]) : r.pick(["all", "last", "none"]);
    if (r.chance(0.4)) {
      o.hiddenStates = bad()
        ? r.pick<unknown>([[3], [-4], [1.5], ["1"], [2 ** 31], [NaN], this.junk()])
        : r.pick<unknown>(["all", "none", [0], [-1], [0, 2], [2, 0, 0], [], [-0], [-3, 2]]);
    }
    if (r.chance(0.2)) o.adapter = bad() ? this.junk() : r.chance(0.5);
    if (r.chance(0.2)) o.signal = this.signal();
    if (bad() && r.chance(0.2)) o[r.pick(["logit", "hidden_states", "Signal"])] = "all";
    return o;
  }

  /** generate options: valid maxTokens values are small, so that no call runs long. */
  generateOptions(): unknown {
    const r = this.r;
    if (this.bad() && r.chance(0.3)) return r.pick<unknown>([undefined, null, this.junk()]);
    const o: Record<string, unknown> = {};
    const field = (valid: unknown[], invalid: unknown[]) => (this.bad() ? r.pick(invalid) : r.pick(valid));
    if (r.chance(0.95)) o.maxTokens = field([1, 2, 3, 5], [0, -1, 1.5, "2", null, 1e9, NaN, Infinity]);
    if (r.chance(0.3)) o.temperature = field([0, 0.7, 1, 2], [-1, NaN, Infinity, "1"]);
    if (r.chance(0.3)) o.topK = field([0, 1, 5, 1e9], [-1, 1.5, "5"]);
    if (r.chance(0.3)) o.topP = field([1, 0.9, 0.01], [0, -0.1, 1.5, NaN]);
    if (r.chance(0.3)) o.seed = field([0, 1, 42, 2 ** 53 - 1], [-1, 1.5, 2 ** 53, "7"]);
    if (r.chance(0.2)) o.stopStrings = field([[], ["\n"], ["a", "b"], ["\ud800"]], [[""], "x", [1]]);
    if (r.chance(0.2)) o.stopOnEos = field([true, false], ["yes", 1]);
    if (r.chance(0.15)) o.signal = this.signal();
    if (this.bad() && r.chance(0.2)) o[r.pick(["max_tokens", "stop", "top_p"])] = 3;
    return o;
  }

  /** A real session: fresh or the shared one; when bad, a disposed one or another model's. */
  session(): ModelSession {
    if (!this.bad()) {
      if (this.r.chance(0.3)) return this.shared;
      const s = this.#session("freshSession");
      this.#fresh.push(s);
      return s;
    }
    if (this.r.chance(0.5)) {
      const s = this.#session("disposedSession");
      s.dispose();
      return s;
    }
    const s = this.foreign.createSession();
    labels.set(s, "foreignModelSession");
    return s;
  }

  batchItems(): unknown {
    const r = this.r;
    if (this.bad() && r.chance(0.1)) return this.junk();
    return Array.from({ length: 1 + r.int(4) }, () => {
      if (!this.bad() || r.chance(0.5)) return { session: this.session(), tokens: this.tokens() };
      return r.pick<() => unknown>([
        () => null,
        () => ({}),
        () => ({ session: this.shared }),
        () => ({ tokens: [1] }),
        () => ({ session: {}, tokens: [1] }),
        () => ({ session: this.shared.native, tokens: [1] }),
        () => "item",
      ])();
    });
  }

  /** One random call, with the real sessions it may touch. */
  next(): Call {
    const r = this.r;
    this.#fresh = [];
    this.#abortable = false;
    this.#mess = r.pick([0, 0, 0.1, 0.3, 0.6]);
    let what: string;
    let run: () => unknown;
    const model = this.model;
    const roll = r.next();
    if (roll < 0.25) {
      const input = this.tokens();
      const options = this.evalOptions();
      what = `model.forward(${show(input)}, ${show(options)})`;
      run = () => model.forward(input as never, options as never);
    } else if (roll < 0.5) {
      const s = this.session();
      const input = this.tokens();
      const options = this.evalOptions();
      what = `${show(s)}.eval(${show(input)}, ${show(options)})`;
      run = () => s.eval(input as never, options as never);
    } else if (roll < 0.72) {
      const items = this.batchItems();
      const options = this.evalOptions();
      what = `model.evalBatch(${show(items)}, ${show(options)})`;
      run = () => model.evalBatch(items as never, options as never);
    } else if (roll < 0.9) {
      const input = this.tokens();
      const options = this.generateOptions();
      what = `model.complete(${show(input)}, ${show(options)})`;
      run = () => model.complete(input as never, options as never);
    } else if (roll < 0.95) {
      const shared = this.shared;
      const n = r.pick<unknown>([0, 1, -1, 1.5, NaN, shared.length, shared.length + 1, "0", null, 2 ** 31]);
      what = `sharedSession.truncate(${show(n)}) at length ${shared.length}`;
      run = () => shared.truncate(n as never);
    } else if (roll < 0.98) {
      const dir = r.pick<unknown>([api.dir, join(api.dir, "config.json"), join(root, "missing"), ...JUNK.slice(0, 14).map((f) => f())]);
      const options = r.chance(0.5) ? this.junk() : { mmap: r.chance(0.5) ? this.junk() : false, signal: this.signal() };
      what = `Model.load(${show(dir)}, ${show(options)})`;
      run = async () => {
        const m = await Model.load(dir as never, options as never);
        m.dispose();
      };
    } else {
      const dir = r.pick<unknown>([api.dir, join(root, "missing"), "", null, 5, {}]);
      what = `model.loadAdapter(${show(dir)})`;
      run = () => model.loadAdapter(dir as never);
    }
    const sessions = [this.shared, ...this.#fresh];
    return { what, run, sessions, abortable: this.#abortable };
  }
}

/** null if `value` is a well-formed result of the call, else what is wrong. */
function resultProblem(value: unknown): string | null {
  const checkEval = (e: unknown): string | null => {
    const res = e as { logits?: unknown; hiddenStates?: unknown };
    if (!(res.logits instanceof Matrix)) return `result has no logits Matrix: ${show(res)}`;
    const { logits } = res;
    if (logits.cols !== apiSpec.vocab || logits.data.length !== logits.rows * logits.cols) return `logits ${logits.rows}x${logits.cols}`;
    if (!logits.data.every(Number.isFinite)) return "non-finite logits";
    if (!(res.hiddenStates instanceof Map)) return "hiddenStates is not a Map";
    for (const [layer, m] of res.hiddenStates as Map<number, Matrix>) {
      if (!Number.isInteger(layer) || layer < 0 || layer > apiSpec.layers) return `hidden state index ${layer}`;
      if (m.cols !== apiSpec.hidden || !m.data.every(Number.isFinite)) return `hidden state ${layer} malformed`;
    }
    return null;
  };
  if (value === undefined) return null; // truncate, Model.load (disposed inside), loadAdapter
  if (Array.isArray(value)) {
    for (const v of value) {
      const p = checkEval(v);
      if (p) return p;
    }
    return null;
  }
  const v = value as { logits?: unknown; tokens?: unknown; text?: unknown; finishReason?: unknown };
  if ("finishReason" in v) {
    const tokens = v.tokens as number[];
    if (typeof v.text !== "string" || !["maxTokens", "eos", "stopString"].includes(v.finishReason as string)) return `complete(): ${show(v)}`;
    if (!tokens.every((t) => Number.isInteger(t) && t >= 0 && t < apiSpec.vocab)) return `complete() tokens ${show(tokens)}`;
    return null;
  }
  if ("logits" in v) return checkEval(v);
  return `unexpected result ${show(value)}`;
}

test("case 4: ~200 seeded API misuse calls resolve or fail with a code; the model's logits stay bit-identical", async () => {
  const r = new Rng(0xab1 + SEED);
  const findings = new Findings();
  const model = await Model.load(api.dir);
  const foreign = await Model.load(api.dir);
  const before = (await model.forward(FIXED_IDS)).logits.data;
  const maker = new CallMaker(r, model, foreign);
  const deadSessions = new WeakSet<ModelSession>();
  let hangProbes = 0;

  /** A session the call touched must still evaluate; a locked one is a finding (probed at most 3 times in all). */
  const probe = async (call: Call) => {
    for (const s of call.sessions) {
      if (deadSessions.has(s) || hangProbes >= 3) continue;
      const out = await settle(() => s.eval([1], { logits: "last" }), PROBE_MS);
      if (out.kind === "resolved") continue;
      if (out.kind === "hung") hangProbes++;
      const why = out.kind === "hung" ? `eval hangs (queue left locked?)` : codedProblem(out.error, true) ?? errorText(out.error);
      findings.add(call.what, `afterwards ${show(s)}.eval([1]) fails: ${why}`);
      deadSessions.add(s);
      if (s === maker.shared) maker.shared = model.createSession();
    }
  };

  const judge = async (call: Call) => {
    const out = await settle(call.run);
    trace(call.what, out.kind === "rejected" ? String((out.error as { code?: unknown }).code ?? (out.error as Error).name) : out.kind);
    if (out.kind === "hung") findings.add(call.what, `did not settle within ${HANG_MS} ms`);
    else if (out.kind === "resolved") {
      const problem = resultProblem(out.value);
      if (problem) findings.add(call.what, `resolved to a malformed result: ${problem}`);
    } else {
      const err = out.error;
      const aborted = call.abortable && err instanceof Error && err.name === "AbortError";
      const problem = aborted ? null : codedProblem(err, true);
      if (problem) findings.add(call.what, problem);
    }
  };

  let calls = 0;
  while (calls < 200 * SCALE) {
    // Mostly one call at a time; sometimes several at once, sharing sessions.
    const group = Array.from({ length: r.chance(0.1) ? 2 + r.int(2) : 1 }, () => maker.next());
    calls += group.length;
    await Promise.all(group.map(judge));
    for (const call of group) await probe(call);
    if (maker.shared.length > 200) await maker.shared.truncate(0);
  }

  findings.assertNone("API misuse");
  assert.is(model.adapter, null);
  const after = (await model.forward(FIXED_IDS)).logits.data;
  assert.ok(sameBits(before, after), "logits for a fixed input changed after the API fuzzing");
  model.dispose();
  foreign.dispose();
});

// ---------------------------------------------------------------------------
// Minimal reproductions of library bugs the API fuzzing found, since fixed in
// lib/: each "Regression" note says what used to go wrong.
// ---------------------------------------------------------------------------

test("case 4, pinned: misuse found by the fuzzing gets coded errors and leaves sessions usable", async () => {
  const model = await Model.load(api.dir);
  const findings = new Findings();
  const expectCoded = async (what: string, fn: () => unknown) => {
    const out = await settle(fn);
    if (out.kind === "resolved") findings.add(what, "resolved, expected a coded rejection");
    else if (out.kind === "hung") findings.add(what, `did not settle within ${HANG_MS} ms`);
    else {
      const problem = codedProblem(out.error, true);
      if (problem) findings.add(what, problem);
    }
  };
  const nullProto = Object.create(null) as unknown;

  // Regression: forward(ids, null) threw a TypeError; null options now count as {}, as in eval().
  const forwardNull = await settle(() => model.forward([1, 2], null as never));
  if (forwardNull.kind !== "resolved") {
    const problem = forwardNull.kind === "hung" ? "hung" : codedProblem(forwardNull.error, true);
    if (problem) findings.add("model.forward([1, 2], null)", problem);
  }
  // Regression: toTokenArray allocated before checking the length (RangeError); now ERR_ARGUMENT.
  await expectCoded("model.forward({ length: -1 })", () => model.forward({ length: -1 } as never));
  await expectCoded("model.forward({ length: 2 ** 40 })", () => model.forward({ length: 2 ** 40 } as never));
  // Regression: error messages called String(value), a TypeError for a prototype-less object.
  await expectCoded("model.forward([1, Object.create(null)])", () => model.forward([1, nullProto] as never));
  await expectCoded("session.truncate(Object.create(null))", () => model.createSession().truncate(nullProto as never));
  // Regression: evalBatch did not check its items and threw TypeErrors; now ERR_ARGUMENT.
  await expectCoded("model.evalBatch([null])", () => model.evalBatch([null] as never));
  await expectCoded("model.evalBatch([{ tokens: [1] }])", () => model.evalBatch([{ tokens: [1] }] as never));
  await expectCoded("model.evalBatch([{ session: {}, tokens: [1] }])", () => model.evalBatch([{ session: {}, tokens: [1] }] as never));
  // Regression: a bad item after a good one left the good session locked forever; items are
  // now checked before any lock is taken.
  const s = model.createSession();
  const what = "model.evalBatch([{ session: s, tokens: [1] }, { session: {}, tokens: [1] }])";
  await expectCoded(what, () => model.evalBatch([{ session: s, tokens: [1] }, { session: {}, tokens: [1] }] as never));
  const after = await settle(() => s.eval([1]), PROBE_MS);
  if (after.kind === "hung") findings.add(what, `afterwards s.eval([1]) hangs: the session's queue was left locked`);
  else if (after.kind === "rejected") findings.add(what, `afterwards s.eval([1]) fails: ${errorText(after.error)}`);

  findings.assertNone("pinned misuse");
  model.dispose();
});

test.run();
