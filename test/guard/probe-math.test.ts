// The probe's statistics against plain references: Newton/IRLS for the logistic
// regression, hand-counted ROC-AUC, fold grouping and the band rule.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { accuracy, decisionValues, fitLogistic, rocAuc } from "../../lib/guard/logistic.js";
import { foldRows, pairFolds, probeLayer, recommendBand, type LayerResult } from "../../lib/guard/probe.js";
import { Random } from "../../lib/random.js";

/** A small problem: labels from a noisy linear rule, so the optimum is finite even with little regularization. */
function problem(n: number, d: number, seed: number): { x: Float64Array; y: Uint8Array } {
  const r = new Random(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r.nextDouble())) * Math.cos(2 * Math.PI * r.nextDouble());
  const truth = Array.from({ length: d }, () => gauss());
  const x = new Float64Array(n * d);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0.3;
    for (let j = 0; j < d; j++) {
      x[i * d + j] = gauss();
      s += truth[j] * x[i * d + j];
    }
    y[i] = s + 1.5 * gauss() > 0 ? 1 : 0;
  }
  return { x, y };
}

/**
 * Reference fit: Newton's method (IRLS) on the same objective, with the full
 * (d+1)x(d+1) Hessian solved by Gaussian elimination with partial pivoting.
 */
function newtonFit(x: Float64Array, y: Uint8Array, d: number, l2: number): { w: number[]; b: number } {
  const n = y.length;
  const p = d + 1;
  const theta = new Array(p).fill(0);
  for (let iter = 0; iter < 50; iter++) {
    const g = new Array(p).fill(0);
    const h = Array.from({ length: p }, () => new Array(p).fill(0));
    for (let i = 0; i < n; i++) {
      const row = [...Array.from(x.subarray(i * d, (i + 1) * d)), 1];
      const s = row.reduce((a, v, j) => a + v * theta[j], 0);
      const mu = 1 / (1 + Math.exp(-s));
      for (let j = 0; j < p; j++) {
        g[j] += (mu - y[i]) * row[j];
        for (let k = 0; k < p; k++) h[j][k] += mu * (1 - mu) * row[j] * row[k];
      }
    }
    for (let j = 0; j < d; j++) {
      g[j] += l2 * theta[j];
      h[j][j] += l2;
    }
    // Solve h * step = g.
    const a = h.map((row, j) => [...row, g[j]]);
    for (let c = 0; c < p; c++) {
      let piv = c;
      for (let r = c + 1; r < p; r++) if (Math.abs(a[r][c]) > Math.abs(a[piv][c])) piv = r;
      [a[c], a[piv]] = [a[piv], a[c]];
      for (let r = c + 1; r < p; r++) {
        const f = a[r][c] / a[c][c];
        for (let k = c; k <= p; k++) a[r][k] -= f * a[c][k];
      }
    }
    const step = new Array(p).fill(0);
    for (let r = p - 1; r >= 0; r--) {
      let s = a[r][p];
      for (let k = r + 1; k < p; k++) s -= a[r][k] * step[k];
      step[r] = s / a[r][r];
    }
    for (let j = 0; j < p; j++) theta[j] -= step[j];
    if (Math.max(...step.map(Math.abs)) < 1e-13) break;
  }
  return { w: theta.slice(0, d), b: theta[d] };
}

test("logistic regression matches a Newton/IRLS reference fit (n > d and n < d)", () => {
  for (const [n, d, l2, seed] of [
    [120, 6, 1, 1],
    [200, 3, 0.01, 2],
    [30, 50, 2, 3], // more features than samples: the L2 term keeps the optimum unique
  ] as const) {
    const { x, y } = problem(n, d, seed);
    const fit = fitLogistic(x, y, d, { l2, tolerance: 1e-10 });
    const ref = newtonFit(x, y, d, l2);
    assert.ok(fit.converged, `converged for n=${n} d=${d}`);
    const scale = Math.max(1, ...ref.w.map(Math.abs));
    for (let j = 0; j < d; j++) assert.ok(Math.abs(fit.weights[j] - ref.w[j]) < 1e-6 * scale, `w[${j}] ${fit.weights[j]} vs ${ref.w[j]}`);
    assert.ok(Math.abs(fit.bias - ref.b) < 1e-6 * scale, `bias ${fit.bias} vs ${ref.b}`);
  }
});

test("stronger L2 shrinks the weights; decision values are w.x + b", () => {
  const { x, y } = problem(100, 4, 4);
  const weak = fitLogistic(x, y, 4, { l2: 0.1 });
  const strong = fitLogistic(x, y, 4, { l2: 100 });
  const norm = (w: Float64Array) => Math.hypot(...w);
  assert.ok(norm(strong.weights) < norm(weak.weights) / 5);
  const z = decisionValues(weak, x, 4);
  assert.ok(Math.abs(z[7] - (weak.bias + [0, 1, 2, 3].reduce((a, j) => a + weak.weights[j] * x[7 * 4 + j], 0))) < 1e-12);
});

test("ROC-AUC and accuracy against hand-counted values", () => {
  // scikit-learn's roc_auc_score example: 3 of the 4 positive/negative pairs are ordered right.
  assert.is(rocAuc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75);
  // Ties count half: positives {1, 3}, negatives {1, 2}: (0.5 + 0 + 1 + 1) / 4.
  assert.is(rocAuc([1, 1, 2, 3], [0, 1, 0, 1]), 0.625);
  assert.is(rocAuc([5, 4, 3], [1, 1, 0]), 1);
  assert.is(rocAuc([5, 4, 3], [0, 0, 1]), 1 - 1);
  assert.ok(Number.isNaN(rocAuc([1, 2], [1, 1])), "undefined with one class");
  assert.is(accuracy([-1, 2, 0.5, -3], [0, 1, 0, 0]), 0.75);
  assert.is(accuracy([0], [0]), 1, "0 is the negative side");
});

test("folds: pairs dealt evenly, deterministic for a seed, both versions of a pair together", () => {
  const fold = pairFolds(23, 5, 9);
  assert.equal(fold, pairFolds(23, 5, 9));
  assert.not.equal(Array.from(fold), Array.from(pairFolds(23, 5, 10)));
  const sizes = [0, 0, 0, 0, 0];
  for (const f of fold) sizes[f]++;
  assert.equal([...sizes].sort(), [4, 4, 5, 5, 5]);
  const seen = new Set<number>();
  for (let f = 0; f < 5; f++) {
    const { train, test: held } = foldRows(fold, f);
    assert.is(train.length + held.length, 46);
    for (const r of held) {
      assert.ok(held.includes(r ^ 1), `row ${r}'s twin is in the same test fold`);
      assert.ok(!train.includes(r) && !train.includes(r ^ 1));
      seen.add(r);
    }
  }
  assert.is(seen.size, 46, "every function is tested once");
});

test("probeLayer: separable features give AUC 1, label-free features about chance", () => {
  const pairs = 40;
  const hidden = 8;
  const r = new Random(5);
  const separable = new Float32Array(pairs * 2 * hidden);
  const noise = new Float32Array(pairs * 2 * hidden);
  for (let row = 0; row < pairs * 2; row++) {
    for (let j = 0; j < hidden; j++) {
      separable[row * hidden + j] = r.nextDouble() + (j === 3 ? (row & 1 ? 2 : -2) : 0);
      noise[row * hidden + j] = r.nextDouble();
    }
  }
  const fold = pairFolds(pairs, 4, 1);
  const good = probeLayer(separable, hidden, fold, 4, 1);
  assert.equal(good.auc, [1, 1, 1, 1]);
  assert.equal(good.accuracy, [1, 1, 1, 1]);
  const bad = probeLayer(noise, hidden, fold, 4, 1);
  const mean = bad.auc.reduce((a, b) => a + b, 0) / 4;
  assert.ok(mean > 0.25 && mean < 0.75, `chance-level AUC, got ${mean}`);
});

test("the band rule: best upper layer, grown towards the better neighbour within the tolerance", () => {
  const layers = (aucs: number[], std = 0): LayerResult[] => aucs.map((auc, layer) => ({ layer, auc, aucStd: std, accuracy: auc, accuracyStd: 0 }));
  // L = 8: upper half is 4..8; best 6; neighbours 5 (0.84) and 7 (0.845) within 0.01 ... then 8 (0.80) is not.
  assert.equal(recommendBand(layers([0.6, 0.7, 0.75, 0.8, 0.83, 0.842, 0.85, 0.845, 0.8]), 4), [5, 6, 7]);
  // A wider fold spread widens the tolerance; bandSize caps the band.
  assert.equal(recommendBand(layers([0.6, 0.7, 0.75, 0.8, 0.83, 0.842, 0.85, 0.845, 0.8], 0.05), 4), [4, 5, 6, 7]);
  assert.equal(recommendBand(layers([0.6, 0.7, 0.75, 0.8, 0.83, 0.842, 0.85, 0.845, 0.8], 0.05), 2), [6, 7]);
  // The embeddings and the lower half never enter, even when they score best.
  assert.equal(recommendBand(layers([0.99, 0.98, 0.5, 0.6, 0.55]), 4), [3]);
  // Ties pick the higher layer; a 1-layer model gets its last state.
  assert.equal(recommendBand(layers([0.5, 0.7, 0.7, 0.7, 0.7]), 1), [4]);
  assert.equal(recommendBand(layers([0.5, 0.6]), 4), [1]);
});

test.run();
