// What guided generation added to the serving layer: a stepwise pause schedule
// (pauseEvery / pauseHead), per-token log-probabilities, keepSession, and
// copying a session's KV cache.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Model } from "../../lib/index.js";
import type { NativeServeEvent, NativeServeRequest } from "../../lib/native-types.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { expectError } from "../support/expect.js";

let root = "";
let model: Model;
const spec = { ...tinySpecs()["llama-f32-untied-mha"], vocab: 300, maxPositions: 256 };

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "dg-guided-sched-"));
  model = await Model.load((await makeTinyCheckpoint(join(root, "m"), spec)).dir, { prefillChunk: 8 });
});
test.after(async () => {
  model?.dispose();
  await rm(root, { recursive: true, force: true });
});

const prompt = Int32Array.from({ length: 9 }, (_, i) => (i * 37 + 11) % spec.vocab);

/** Runs one request to its end, resuming every pause with `bias`; returns every event. */
async function drive(req: Partial<NativeServeRequest>, bias?: (g: number) => Float32Array | undefined): Promise<{ events: NativeServeEvent[]; pausedAt: number[] }> {
  const session = model.createSession();
  const { scheduler } = model.generationContext();
  const events: NativeServeEvent[] = [];
  const pausedAt: number[] = [];
  let generated = 0;
  await new Promise<void>((resolve) => {
    scheduler.submitAll(
      [{ kind: "generate", session: session.native, tokens: prompt, capture: [], temperature: 1, topK: 0, topP: 1, seed: 3, maxTokens: 12, stopIds: [], ...req }],
      (ev) => {
        events.push(ev);
        generated += ev.tokens.length;
        if (ev.awaiting) {
          pausedAt.push(generated);
          scheduler.resume(ev.id, bias?.(generated));
        }
        if (ev.done) resolve();
      },
    );
  });
  if (!req.keepSession) assert.is(session.length, 0, "a finished generation frees its KV cache");
  else session.dispose();
  return { events, pausedAt };
}

const tokensOf = (evs: NativeServeEvent[]) => evs.flatMap((e) => e.tokens);

test("pauseEvery / pauseHead: pauses only before the chosen tokens; the tokens are those of an unpaused run", async () => {
  const plain = await drive({});
  const every = await drive({ stepwise: true });
  assert.equal(every.pausedAt, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  const sparse = await drive({ stepwise: true, pauseEvery: 5, pauseHead: 3 });
  assert.equal(sparse.pausedAt, [0, 1, 2, 5, 10]);
  const headOnly = await drive({ stepwise: true, pauseEvery: 0, pauseHead: 1 });
  assert.equal(headOnly.pausedAt, [0]);
  for (const r of [every, sparse, headOnly]) assert.equal(tokensOf(r.events), tokensOf(plain.events));
  // A bias given at a pause applies from that token on: ban the token a plain run draws at 5.
  const banned = tokensOf(plain.events)[5];
  const ban = new Float32Array(spec.vocab);
  ban[banned] = -Infinity;
  const biased = await drive({ stepwise: true, pauseEvery: 5, pauseHead: 0 }, (g) => (g === 5 ? ban : undefined));
  assert.equal(tokensOf(biased.events).slice(0, 5), tokensOf(plain.events).slice(0, 5));
  assert.ok(!tokensOf(biased.events).slice(5).includes(banned));
});

test("logprobs: each sampled token's log-probability under the unbiased logits", async () => {
  const bias = new Float32Array(spec.vocab).fill(0.5);
  const r = await drive({ logprobs: true, logitBias: bias, temperature: 0.7 });
  const tokens = tokensOf(r.events);
  const lps = r.events.flatMap((e) => Array.from(e.logprobs ?? []));
  assert.is(lps.length, tokens.length);
  // Reference: a fresh forward over prompt + tokens, log-softmax in float64.
  const fw = await model.forward([...prompt, ...tokens.slice(0, -1)], { logits: "all" });
  tokens.forEach((t, i) => {
    const row = fw.logits.row(prompt.length - 1 + i);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    const ref = row[t] - max - Math.log(sum);
    assert.ok(Math.abs(lps[i] - ref) < 1e-3, `token ${i}: ${lps[i]} vs ${ref}`);
  });
});

test("keepSession keeps the KV cache; copyFrom forks it, and a fork continues as the original would", async () => {
  const a = model.createSession();
  await a.eval(prompt);
  const b = model.createSession();
  b.native.copyFrom(a.native);
  assert.is(b.length, prompt.length);
  const next = [5, 6, 7];
  const ra = await a.eval(next, { logits: "all" });
  const rb = await b.eval(next, { logits: "all" });
  assert.equal(Array.from(ra.logits.data), Array.from(rb.logits.data));
  await expectError(() => b.native.copyFrom({} as never), "ERR_ARGUMENT");
  a.dispose();
  b.dispose();
  const kept = model.createSession();
  const { scheduler } = model.generationContext();
  await new Promise<void>((resolve) =>
    scheduler.submitAll(
      [{ kind: "generate", session: kept.native, tokens: prompt, capture: [], temperature: 0, topK: 0, topP: 1, seed: 1, maxTokens: 4, stopIds: [], keepSession: true }],
      (ev) => ev.done && resolve(),
    ),
  );
  assert.is(kept.length, prompt.length + 3, "the prompt and the 3 fed tokens (the 4th is sampled, not fed)");
  kept.dispose();
});

test.run();
