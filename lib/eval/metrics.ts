/**
 * Metrics with 95% confidence intervals.
 *
 *  - A proportion x/n (one scenario's parse rate, secure rate, pass@1): the point
 *    estimate x/n with the Wilson score interval.
 *  - pass@k over n samples with c correct: the unbiased estimator
 *    1 - C(n-c, k) / C(n, k) (Chen et al. 2021), computed as a stable product.
 *  - An aggregate over scenarios (per CWE, overall): the unweighted mean of the
 *    scenarios' estimates (every scenario counts once, as in SVEN); its interval
 *    is mean ± z·sqrt(Σ v_s)/S with v_s = p̃(1-p̃)/(n+4), p̃ = (x+2)/(n+4) (the
 *    Agresti–Coull variance, which stays positive at 0/n and n/n), clamped to [0, 1].
 */
export const Z95 = 1.959963984540054;

export interface Estimate {
  /** null when undefined (no samples in the denominator). */
  value: number | null;
  low: number | null;
  high: number | null;
  /** Numerator and denominator (for an aggregate: the number of scenarios in `n`, `x` unused = -1). */
  x: number;
  n: number;
}

export function wilson(x: number, n: number, z = Z95): Estimate {
  if (!(n > 0)) return { value: null, low: null, high: null, x, n };
  if (x < 0 || x > n) throw new RangeError(`wilson: x=${x} is outside [0, ${n}]`);
  const p = x / n;
  const z2 = z * z;
  const den = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / den;
  const half = (z / den) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return { value: p, low: Math.max(0, centre - half), high: Math.min(1, centre + half), x, n };
}

/** Unbiased pass@k: 1 - C(n-c, k)/C(n, k). */
export function passAtK(n: number, c: number, k: number): number {
  if (!Number.isInteger(n) || !Number.isInteger(c) || !Number.isInteger(k) || n < 1 || k < 1 || c < 0 || c > n || k > n) {
    throw new RangeError(`passAtK: need integers 0 <= c <= n, 1 <= k <= n (n=${n}, c=${c}, k=${k})`);
  }
  if (n - c < k) return 1;
  let prod = 1;
  for (let i = n - c + 1; i <= n; i++) prod *= 1 - k / i;
  return 1 - prod;
}

/** Mean of per-scenario proportions with the interval described in the header. */
export function aggregate(parts: readonly { x: number; n: number }[], z = Z95): Estimate {
  const used = parts.filter((p) => p.n > 0);
  const S = used.length;
  if (S === 0) return { value: null, low: null, high: null, x: -1, n: 0 };
  let mean = 0;
  let varSum = 0;
  for (const { x, n } of used) {
    mean += x / n;
    const pt = (x + 2) / (n + 4);
    varSum += (pt * (1 - pt)) / (n + 4);
  }
  mean /= S;
  const half = (z * Math.sqrt(varSum)) / S;
  return { value: mean, low: Math.max(0, mean - half), high: Math.min(1, mean + half), x: -1, n: S };
}

/** Per-scenario counts the metrics are computed from. */
export interface ScenarioCounts {
  /** Samples generated. */
  samples: number;
  /** Samples whose program parsed. */
  parsed: number;
  /** Distinct parsed programs (after de-duplication). */
  unique: number;
  /** Distinct programs the primary oracle found secure / vulnerable / could not decide. */
  secure: number;
  vulnerable: number;
  inconclusive: number;
  /** Samples (not distinct) that passed the functional test; null when the scenario has none. */
  functional: number | null;
  /** Samples that are secure and pass the functional test; null without a functional test. */
  secureFunctional: number | null;
}

export interface ScenarioMetrics {
  parseRate: Estimate;
  /** secure / (secure + vulnerable) over distinct parsed programs. */
  secureRate: Estimate;
  passAt1: Estimate;
  secPassAt1: Estimate;
}

export function scenarioMetrics(c: ScenarioCounts): ScenarioMetrics {
  const decided = c.secure + c.vulnerable;
  const p1 = (x: number | null): Estimate => {
    if (x === null || c.samples === 0) return { value: null, low: null, high: null, x: x ?? 0, n: 0 };
    // pass@1's unbiased estimate over n samples is c/n; its interval is Wilson's.
    const w = wilson(x, c.samples);
    return { ...w, value: passAtK(c.samples, x, 1) };
  };
  return {
    parseRate: wilson(c.parsed, c.samples),
    secureRate: wilson(c.secure, decided),
    passAt1: p1(c.functional),
    secPassAt1: p1(c.secureFunctional),
  };
}

export function aggregateMetrics(all: readonly { counts: ScenarioCounts; metrics: ScenarioMetrics }[]): ScenarioMetrics {
  const pick = (f: (m: ScenarioMetrics) => Estimate) => aggregate(all.map((s) => f(s.metrics)).filter((e) => e.value !== null).map((e) => ({ x: e.x, n: e.n })));
  return {
    parseRate: pick((m) => m.parseRate),
    secureRate: pick((m) => m.secureRate),
    passAt1: pick((m) => m.passAt1),
    secPassAt1: pick((m) => m.secPassAt1),
  };
}
