/**
 * L2-regularized binary logistic regression in float64, for linear probes.
 *
 * Minimizes  (1/n) [ sum_i log(1 + exp(-y_i (w . x_i + b))) + (lambda / 2) |w|^2 ],  y_i in {-1, +1},
 * the objective of scikit-learn's LogisticRegression(C = 1 / lambda) (the bias is not
 * penalized). Solved with L-BFGS (memory 10) and a backtracking Armijo line search:
 * each iteration costs two passes over X (n x d), so a probe over thousands of
 * features stays cheap next to the forward passes that produced them. The
 * objective is strictly convex, so the optimum is unique and the result does not
 * depend on the solver.
 */

export interface LogisticOptions {
  /** lambda above (scikit-learn's 1 / C). Default 1. */
  l2?: number;
  /** Stop when the largest gradient entry is below this. Default 1e-6. */
  tolerance?: number;
  maxIterations?: number;
}

export interface LogisticModel {
  weights: Float64Array;
  bias: number;
  iterations: number;
  converged: boolean;
  /** The objective at the solution. */
  loss: number;
}

/** log(1 + exp(z)) without overflow. */
function softplus(z: number): number {
  return z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
}

function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

/** Objective and gradient at theta = [w ; b]; `grad` is overwritten. `z` is scratch of length n. */
function evaluate(x: Float64Array, y: Uint8Array, n: number, d: number, l2: number, theta: Float64Array, grad: Float64Array, z: Float64Array): number {
  const b = theta[d];
  let loss = 0;
  for (let i = 0; i < n; i++) {
    let s = b;
    const row = i * d;
    for (let j = 0; j < d; j++) s += x[row + j] * theta[j];
    const sign = y[i] ? 1 : -1;
    loss += softplus(-sign * s);
    z[i] = sigmoid(s) - y[i]; // d loss_i / d s
  }
  grad.fill(0);
  let gb = 0;
  for (let i = 0; i < n; i++) {
    const r = z[i];
    if (r === 0) continue;
    gb += r;
    const row = i * d;
    for (let j = 0; j < d; j++) grad[j] += r * x[row + j];
  }
  let penalty = 0;
  for (let j = 0; j < d; j++) {
    penalty += theta[j] * theta[j];
    grad[j] = (grad[j] + l2 * theta[j]) / n;
  }
  grad[d] = gb / n;
  return (loss + 0.5 * l2 * penalty) / n;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/**
 * Fits on `x` (row-major n x d) and labels `y` (0 / 1). Both classes must be present
 * unless l2 > 0 (then the fit is still defined).
 */
export function fitLogistic(x: Float64Array, y: Uint8Array, d: number, options: LogisticOptions = {}): LogisticModel {
  const n = y.length;
  if (x.length !== n * d) throw new RangeError(`fitLogistic: ${x.length} values for ${n} x ${d}`);
  const l2 = options.l2 ?? 1;
  const tolerance = options.tolerance ?? 1e-6;
  const maxIterations = options.maxIterations ?? 1000;
  const p = d + 1;
  const memory = 10;
  const theta = new Float64Array(p);
  const grad = new Float64Array(p);
  const z = new Float64Array(n);
  const s: Float64Array[] = [];
  const yk: Float64Array[] = [];
  const rho: number[] = [];
  const direction = new Float64Array(p);
  const trial = new Float64Array(p);
  const trialGrad = new Float64Array(p);
  const alpha = new Float64Array(memory);

  let loss = evaluate(x, y, n, d, l2, theta, grad, z);
  let iterations = 0;
  let converged = maxAbs(grad) < tolerance;
  while (!converged && iterations < maxIterations) {
    // Two-loop recursion: direction = -H grad.
    direction.set(grad);
    for (let k = s.length - 1; k >= 0; k--) {
      alpha[k] = rho[k] * dot(s[k], direction);
      for (let j = 0; j < p; j++) direction[j] -= alpha[k] * yk[k][j];
    }
    const last = s.length - 1;
    const gamma = last >= 0 ? dot(s[last], yk[last]) / dot(yk[last], yk[last]) : 1 / Math.max(1, Math.sqrt(dot(grad, grad)));
    for (let j = 0; j < p; j++) direction[j] *= gamma;
    for (let k = 0; k < s.length; k++) {
      const beta = rho[k] * dot(yk[k], direction);
      for (let j = 0; j < p; j++) direction[j] += s[k][j] * (alpha[k] - beta);
    }
    for (let j = 0; j < p; j++) direction[j] = -direction[j];
    let slope = dot(grad, direction);
    if (!(slope < 0)) {
      // Not a descent direction (numerical trouble): restart from steepest descent.
      s.length = yk.length = rho.length = 0;
      for (let j = 0; j < p; j++) direction[j] = -grad[j];
      slope = -dot(grad, grad);
    }
    // Backtracking line search (Armijo). Near the optimum the loss stops resolving
    // in float64 before the gradient does: there a step is taken when it shrinks the gradient.
    const gradNorm = maxAbs(grad);
    let step = 1;
    let accepted = false;
    for (let tries = 0; tries < 60 && !accepted; tries++) {
      for (let j = 0; j < p; j++) trial[j] = theta[j] + step * direction[j];
      const trialLoss = evaluate(x, y, n, d, l2, trial, trialGrad, z);
      const flat = Math.abs(trialLoss - loss) <= 1e-14 * Math.max(1, Math.abs(loss));
      accepted = trialLoss <= loss + 1e-4 * step * slope || (flat && maxAbs(trialGrad) < gradNorm);
      if (accepted) loss = trialLoss;
      else step *= 0.5;
    }
    if (!accepted) break; // no progress possible in float64
    const sk = new Float64Array(p);
    const ykNew = new Float64Array(p);
    for (let j = 0; j < p; j++) {
      sk[j] = trial[j] - theta[j];
      ykNew[j] = trialGrad[j] - grad[j];
    }
    const sy = dot(sk, ykNew);
    if (sy > 1e-12 * Math.sqrt(dot(sk, sk) * dot(ykNew, ykNew))) {
      if (s.length === memory) {
        s.shift();
        yk.shift();
        rho.shift();
      }
      s.push(sk);
      yk.push(ykNew);
      rho.push(1 / sy);
    }
    theta.set(trial);
    grad.set(trialGrad);
    iterations++;
    converged = maxAbs(grad) < tolerance;
  }
  return { weights: theta.slice(0, d), bias: theta[d], iterations, converged, loss };
}

/** The decision value w . x + b of each row (the log-odds of class 1). */
export function decisionValues(model: LogisticModel, x: Float64Array, d: number): Float64Array {
  const n = x.length / d;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = model.bias;
    for (let j = 0; j < d; j++) s += x[i * d + j] * model.weights[j];
    out[i] = s;
  }
  return out;
}

/** ROC-AUC: the probability that a random positive scores above a random negative (ties count half), via average ranks. */
export function rocAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  let positives = 0;
  let rankSum = 0;
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && scores[order[j + 1]] === scores[order[i]]) j++;
    const rank = (i + j) / 2 + 1; // average 1-based rank of the tie group
    for (let k = i; k <= j; k++) {
      if (labels[order[k]]) {
        positives++;
        rankSum += rank;
      }
    }
    i = j + 1;
  }
  const negatives = n - positives;
  if (positives === 0 || negatives === 0) return NaN;
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

/** Fraction of rows whose decision value has the label's side (class 1 when > 0). */
export function accuracy(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  let right = 0;
  for (let i = 0; i < scores.length; i++) if ((scores[i] > 0 ? 1 : 0) === (labels[i] ? 1 : 0)) right++;
  return right / scores.length;
}
