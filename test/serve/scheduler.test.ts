// The serving scheduler: batched generations equal sequential ones, requests
// joining mid-way change nothing, cancellation (prefill and decode) is coded,
// frees the sequence and leaves the others alone; the step hook (logit bias,
// captured hidden states, stepwise callback); the exported sampler; context
// length limits.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { DeepGuardError, Model, Sampler, sampleToken, type GenerateOptions } from "../../lib/index.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

let root = "";
let dir = "";
let model: Model;
/** A larger model with the smallest chunks: a 400-token prefill takes ~100 iterations of real work. */
let slowModel: Model;
// F32 weights, untied head (logits of order 1: sampling at temperature ~1 is really random).
const spec = { ...tinySpecs()["llama-f32-untied-mha"], vocab: 300, maxPositions: 512 };

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-serve-"));
  dir = (await makeTinyCheckpoint(join(root, "m"), spec)).dir;
  // Small chunks, so prompts are prefilled over several iterations.
  model = await Model.load(dir, { prefillChunk: 8 });
  const slowDir = (await makeTinyCheckpoint(join(root, "slow"), { ...spec, hidden: 256, intermediate: 512, layers: 4, heads: 4, kvHeads: 4 })).dir;
  slowModel = await Model.load(slowDir, { prefillChunk: 4 });
});

/**
 * Runs `attempt` until it reports that the abort landed mid-prefill (at most 4
 * times): whether an abort issued from JavaScript lands before a fast model has
 * finished is a race, and the property is checked whenever it does.
 */
async function midPrefill(attempt: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 4; i++) if (await attempt()) return;
  assert.unreachable("the abort never landed during prefill");
}
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A deterministic prompt of n ids. */
function promptOf(n: number, salt: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 37 + salt * 101 + 11) % spec.vocab);
}

const opts = (seed: number, maxTokens = 10): GenerateOptions => ({ maxTokens, temperature: 1, topP: 0.9, seed, stopOnEos: false });

/**
 * Options for a background generation that stays active for a while: stepwise,
 * its hook waits `ms` before each token (the tiny model is otherwise done in
 * microseconds), and `at` runs at the given steps. Its tokens equal the same
 * generation without the hook.
 */
function slow(seed: number, maxTokens: number, ms: number, at: Record<number, () => void> = {}): GenerateOptions {
  return {
    ...opts(seed, maxTokens),
    hook: {
      onStep: async ({ step }) => {
        at[step]?.();
        await new Promise((r) => setTimeout(r, ms));
        return undefined;
      },
    },
  };
}

test("16 concurrent generations give the tokens of 16 sequential ones (same seeds)", async () => {
  const lengths = [1, 3, 7, 8, 9, 15, 16, 17, 30, 2, 40, 5, 64, 11, 23, 4];
  const prompts = lengths.map((n, i) => promptOf(n, i));
  const sequential = [];
  for (let i = 0; i < 16; i++) sequential.push((await model.complete(prompts[i], opts(i))).tokens);
  const before = model.servingStats;
  const concurrent = await Promise.all(prompts.map((p, i) => model.complete(p, opts(i))));
  for (let i = 0; i < 16; i++) assert.equal(concurrent[i].tokens, sequential[i], `request ${i}`);
  const after = model.servingStats;
  // Batched: far fewer iterations than the 16 * 10 decode steps, and batches of many rows.
  assert.ok(after.iterations - before.iterations < 120, `${after.iterations - before.iterations} iterations`);
  assert.ok(after.maxBatchRows >= 16);
  assert.is(after.active, 0);
});

test("a request that joins mid-way does not change the others' tokens", async () => {
  const a = promptOf(20, 1);
  const b = promptOf(45, 2);
  const aloneA = (await model.complete(a, opts(7, 30))).tokens;
  const aloneB = (await model.complete(b, opts(8, 12))).tokens;
  const joined: Promise<{ tokens: number[] }>[] = [];
  const ra = await model.complete(a, slow(7, 30, 1, { 10: () => joined.push(model.complete(b, opts(8, 12))) }));
  assert.is(joined.length, 1, "B joined");
  assert.equal(ra.tokens, aloneA);
  assert.equal((await joined[0]).tokens, aloneB);
});

test("abort during prefill: ERR_ABORTED with the reason, sequence dropped, others unaffected", async () => {
  const a = promptOf(10, 3);
  const aloneA = (await slowModel.complete(a, opts(3, 12))).tokens;
  await midPrefill(async () => {
    let err: unknown = null;
    let activeAfter = -1;
    const ra = await slowModel.complete(
      a,
      slow(3, 12, 2, {
        3: () => {
          const ac = new AbortController();
          const reason = new Error("client went away");
          // 400 prompt tokens in chunks of 4 while A is generating: ~100 iterations of prefill.
          slowModel.complete(promptOf(400, 4), { ...opts(4), signal: ac.signal }).then(
            () => (err = "resolved"),
            (e: unknown) => {
              err = e;
              activeAfter = slowModel.servingStats.active;
            },
          );
          ac.abort(reason);
        },
      }),
    );
    assert.equal(ra.tokens, aloneA);
    assert.instance(err, DeepGuardError);
    assert.is((err as DeepGuardError).code, "ERR_ABORTED");
    assert.instance((err as DeepGuardError).cause, Error);
    assert.ok(activeAfter <= 1, "the aborted sequence was gone at once");
    assert.is(slowModel.servingStats.active, 0);
    return /during prefill/.test((err as DeepGuardError).message);
  });
});

test("abort during decode: coded error, others unaffected", async () => {
  const a = promptOf(12, 5);
  const aloneA = (await model.complete(a, opts(5, 40))).tokens;
  const ac = new AbortController();
  let got = 0;
  const runB = (async () => {
    for await (const piece of model.generate(promptOf(6, 6), { ...opts(6, 200), signal: ac.signal })) {
      got += piece.tokens.length;
      if (got === 3) ac.abort();
    }
  })();
  const outcome = runB.then(
    () => null,
    (e: unknown) => e,
  );
  const ra = await model.complete(a, slow(5, 40, 1));
  await expectError(async () => {
    const e = await outcome;
    if (e) throw e;
  }, "ERR_ABORTED");
  assert.is(got, 3);
  assert.equal(ra.tokens, aloneA);
  assert.is(model.servingStats.active, 0);
});

test("abort of a long eval during prefill leaves the session as it was", async () => {
  const s = slowModel.createSession();
  await s.eval(promptOf(5, 7));
  await midPrefill(async () => {
    const pendings: Promise<unknown>[] = [];
    await slowModel.complete(
      promptOf(4, 8),
      slow(8, 6, 2, {
        2: () => {
          const ac = new AbortController();
          const pending = s.eval(promptOf(400, 9), { signal: ac.signal });
          pending.catch(() => {});
          pendings.push(pending);
          setImmediate(() => ac.abort()); // once the call has taken the session's turn and been admitted
        },
      }),
    );
    const err = await pendings[0].then(
      () => null,
      (e: unknown) => e as DeepGuardError,
    );
    if (err === null) {
      await s.truncate(5); // it finished first: try again
      return false;
    }
    assert.is(err.code, "ERR_ABORTED");
    assert.is(s.length, 5);
    return /during prefill/.test(err.message);
  });
  // The session goes on as if the aborted call never happened.
  const next = await s.eval([42]);
  const fresh = slowModel.createSession();
  const ref = await fresh.eval([...promptOf(5, 7), 42]);
  assert.equal(Array.from(next.logits.row(0)), Array.from(ref.logits.row(0)));
  s.dispose();
  fresh.dispose();
});

test("evalBatch and eval go through the scheduler with chunked prefill; results equal unchunked ones", async () => {
  const big = await Model.load(dir, { prefillChunk: 512 });
  const tokens = promptOf(100, 10);
  const a = await model.forward(tokens, { hiddenStates: [1, -1] });
  const b = await big.forward(tokens, { hiddenStates: [1, -1] });
  assert.equal(Array.from(a.logits.data), Array.from(b.logits.data));
  assert.equal(Array.from(a.hiddenStates.get(1)!.data), Array.from(b.hiddenStates.get(1)!.data));
  const s1 = model.createSession();
  const s2 = model.createSession();
  const [r1, r2] = await model.evalBatch([
    { session: s1, tokens: promptOf(9, 11) },
    { session: s2, tokens: [5] },
  ]);
  assert.is(r1.logits.rows, 1);
  assert.is(r2.logits.rows, 1);
  assert.is(s1.length, 9);
  await expectError(() => model.evalBatch([{ session: s1, tokens: [1] }, { session: s1, tokens: [2] }]), "ERR_ARGUMENT", /twice/);
  big.dispose();
});

test("hook.logitBias is applied natively before sampling; -Infinity bans tokens", async () => {
  const bias = new Float32Array(spec.vocab).fill(-Infinity);
  bias[17] = 0;
  bias[99] = 0;
  const r = await model.complete(promptOf(5, 12), { ...opts(1, 12), hook: { logitBias: bias } });
  assert.ok(r.tokens.every((t) => t === 17 || t === 99), String(r.tokens));
  const zero = await model.complete(promptOf(5, 12), { ...opts(1, 12), hook: { logitBias: new Float32Array(spec.vocab) } });
  assert.equal(zero.tokens, (await model.complete(promptOf(5, 12), opts(1, 12))).tokens);
  await expectError(
    () => model.complete(promptOf(5, 12), { ...opts(1), hook: { logitBias: new Float32Array(3) } }),
    "ERR_ARGUMENT",
    /logitBias/,
  );
  const nan = new Float32Array(spec.vocab);
  nan[3] = NaN;
  await expectError(() => model.complete(promptOf(5, 12), { ...opts(1), hook: { logitBias: nan } }), "ERR_NON_FINITE", /NaN/);
});

test("hook.onStep sees the fed tokens' hidden states and steers the next token", async () => {
  const prompt = promptOf(13, 13);
  const calls: { step: number; fed: number[]; rows: number; generated: number[] }[] = [];
  let firstHidden: Float32Array | null = null;
  const r = await model.complete(prompt, {
    ...opts(2, 6),
    hook: {
      hiddenStates: [-1],
      onStep: async ({ step, fed, hiddenStates, generated }) => {
        const m = hiddenStates.get(spec.layers)!;
        if (step === 0) firstHidden = m.data.slice();
        calls.push({ step, fed: Array.from(fed), rows: m.rows, generated: [...generated] });
        await new Promise((res) => setTimeout(res, 1)); // the sequence waits for us
        const bias = new Float32Array(spec.vocab).fill(-Infinity);
        bias[(step * 7 + 1) % spec.vocab] = 0; // force a known token
        return bias;
      },
    },
  });
  assert.equal(r.tokens, [1, 8, 15, 22, 29, 36]);
  assert.is(calls.length, 6);
  assert.equal(calls[0].fed, prompt);
  assert.is(calls[0].rows, prompt.length);
  for (let i = 1; i < 6; i++) {
    assert.equal(calls[i].fed, [r.tokens[i - 1]]);
    assert.equal(calls[i].generated, r.tokens.slice(0, i));
  }
  // The captured rows are the final-norm hidden states a forward pass returns.
  const ref = await model.forward(prompt, { hiddenStates: [-1], logits: "none" });
  assert.equal(Array.from(firstHidden!), Array.from(ref.hiddenStates.get(spec.layers)!.data));
  await expectError(() => model.complete(prompt, { ...opts(1), hook: { hiddenStates: [1] } }), "ERR_ARGUMENT", /onStep/);
});

test("the exported Sampler reproduces generate() in a custom eval loop", async () => {
  const prompt = promptOf(9, 14);
  const o = { temperature: 1.1, topK: 40, topP: 0.95, seed: 1234 };
  const expected = (await model.complete(prompt, { ...o, maxTokens: 8, stopOnEos: false })).tokens;
  const sampler = new Sampler(o);
  const s = model.createSession();
  let step = await s.eval(prompt);
  const got: number[] = [];
  for (let i = 0; i < 8; i++) {
    got.push(sampler.sample(step.logits.row(0)));
    if (i < 7) step = await s.eval([got[i]]);
  }
  assert.equal(got, expected);
  s.dispose();
  const logits = Float32Array.from([0, 1, 5, 2]);
  assert.is(sampleToken(logits, {}, 0), 2);
  assert.is(sampleToken(logits, {}, 0, Float32Array.from([0, 0, -Infinity, 0])), 3);
  await expectError(() => sampleToken(Float32Array.from([0, NaN]), {}, 0), "ERR_NON_FINITE", /NaN/);
  await expectError(() => sampleToken(Float32Array.from([0, Infinity]), { temperature: 1 }, 0.5), "ERR_NON_FINITE");
  await expectError(() => sampleToken(Float32Array.from([-Infinity, -Infinity]), {}, 0), "ERR_NON_FINITE", /-Infinity/);
  await expectError(() => sampleToken(logits, {}, 0, new Float32Array(2)), "ERR_ARGUMENT", /bias/);
});

test("max_position_embeddings is enforced unless allowLongContext", async () => {
  const dir2 = (await makeTinyCheckpoint(join(root, "short"), { ...spec, maxPositions: 32 })).dir;
  const short = await Model.load(dir2);
  const s = short.createSession();
  await s.eval(promptOf(30, 1));
  await expectError(() => s.eval(promptOf(3, 2)), "ERR_CONTEXT_LENGTH", /33 positions; max_position_embeddings is 32.*allowLongContext/);
  assert.is(s.length, 30);
  await expectError(() => short.complete(promptOf(20, 3), { maxTokens: 20 }), "ERR_CONTEXT_LENGTH");
  // The default maxTokens stops at the context's end instead.
  const r = await short.complete(promptOf(20, 3), { stopOnEos: false });
  assert.is(r.tokens.length, 13);
  const long = await Model.load(dir2, { allowLongContext: true });
  const ls = long.createSession();
  await ls.eval(promptOf(40, 4));
  assert.is(ls.length, 40);
  await expectError(() => Model.load(dir2, { prefillChunk: 6 }), "ERR_ARGUMENT", /prefillChunk/);
});

test("a disposed model rejects new requests with ERR_DISPOSED", async () => {
  const m = await Model.load(dir);
  const s = m.createSession();
  m.dispose();
  await expectError(() => s.eval([1]), "ERR_DISPOSED");
  await expectError(() => m.complete([1, 2], { maxTokens: 2 }), "ERR_DISPOSED");
  // Every abort in the API is coded, Model.load's too.
  const reason = new Error("stop");
  const err = await expectError(() => Model.load(dir, { signal: AbortSignal.abort(reason) }), "ERR_ABORTED");
  assert.is(err.cause, reason);
});

test.run();
