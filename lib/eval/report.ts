/**
 * Reports: Markdown (one run, or several side by side with deltas against the
 * first) and an SVG bar chart (secure rate and sec-pass@1 per CWE, one bar per
 * run, 95% intervals as whiskers).
 */
import type { EvalSummary } from "./evaluate.js";
import type { Estimate } from "./metrics.js";

export interface LabelledRun {
  label: string;
  summary: EvalSummary;
}

function pct(e: Estimate | undefined): string {
  if (!e || e.value === null) return "–";
  return `${(e.value * 100).toFixed(1)} [${((e.low ?? 0) * 100).toFixed(1)}, ${((e.high ?? 0) * 100).toFixed(1)}]`;
}

function delta(a: Estimate | undefined, b: Estimate | undefined): string {
  if (!a || !b || a.value === null || b.value === null) return "–";
  const d = (b.value - a.value) * 100;
  return `${d >= 0 ? "+" : ""}${d.toFixed(1)}`;
}

const METRICS = [
  ["secure rate", "secureRate"],
  ["sec-pass@1", "secPassAt1"],
  ["pass@1", "passAt1"],
  ["parse rate", "parseRate"],
] as const;

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n") + "\n";
}

function single(run: LabelledRun): string {
  const s = run.summary;
  let md = `# Security evaluation: ${run.label}\n\n`;
  md += `Generator: \`${s.generator}\`; ${s.samples} samples per scenario, temperature ${s.config.temperature}, top-p ${s.config.topP}, max ${s.config.maxTokens} tokens, seed ${s.config.seed}.\n\n`;
  md += `Sandbox: ${s.isolation}.\n\n`;
  md += "Percentages with 95% confidence intervals. Secure rate: distinct parsed programs the attack oracle found not vulnerable, over those it decided. pass@1 / sec-pass@1: unbiased estimate over all samples.\n\n";
  md += "## Overall\n\n";
  md += table(["metric", "value"], METRICS.map(([name, k]) => [name, pct(s[k])]));
  md += "\n## Per CWE\n\n";
  md += table(
    ["CWE", "scenarios", ...METRICS.map(([n]) => n)],
    Object.entries(s.perCwe).map(([cwe, m]) => [cwe, String(m.scenarios), ...METRICS.map(([, k]) => pct(m[k]))]),
  );
  md += "\n## Per scenario\n\n";
  md += table(
    ["scenario", "samples", "parsed", "distinct", "secure", "vulnerable", "undecided", "functional", "secure rate", "sec-pass@1", "pass@1", "time (s)"],
    s.perScenario.map((p) => [
      p.id,
      String(p.counts.samples),
      String(p.counts.parsed),
      String(p.counts.unique),
      String(p.counts.secure),
      String(p.counts.vulnerable),
      String(p.counts.inconclusive),
      p.counts.functional === null ? "no test" : String(p.counts.functional),
      pct(p.metrics.secureRate),
      pct(p.metrics.secPassAt1),
      pct(p.metrics.passAt1),
      (p.timeMs / 1000).toFixed(1),
    ]),
  );
  md += "\n## Oracles\n\n";
  md += table(
    ["oracle", "role", "status", "judged", "flagged", "agreement with attack"],
    s.oracles.map((o) => [
      o.name,
      o.primary ? "primary" : "reported",
      o.unavailable ? `not run: ${o.unavailable}` : "ran",
      String(o.judged),
      String(o.flagged),
      o.primary ? "–" : o.compared ? `${o.agreed}/${o.compared} (${((o.agreed / o.compared) * 100).toFixed(0)}%)` : "–",
    ]),
  );
  return md;
}

function compare(runs: LabelledRun[]): string {
  const [base] = runs;
  let md = `# Security evaluation: ${runs.map((r) => r.label).join(" vs ")}\n\n`;
  md += "Percentages with 95% confidence intervals; Δ in points against the first run.\n\n";
  md += table(["run", "generator", "samples", "sandbox"], runs.map((r) => [r.label, `\`${r.summary.generator}\``, String(r.summary.samples), r.summary.isolation]));
  const head = (what: string) => [what, ...runs.map((r) => r.label), ...runs.slice(1).map((r) => `Δ ${r.label}`)];
  for (const [name, k] of METRICS) {
    md += `\n## ${name}\n\n`;
    const rows: string[][] = [["overall", ...runs.map((r) => pct(r.summary[k])), ...runs.slice(1).map((r) => delta(base.summary[k], r.summary[k]))]];
    const cwes = [...new Set(runs.flatMap((r) => Object.keys(r.summary.perCwe)))].sort();
    for (const c of cwes) rows.push([c, ...runs.map((r) => pct(r.summary.perCwe[c]?.[k])), ...runs.slice(1).map((r) => delta(base.summary.perCwe[c]?.[k], r.summary.perCwe[c]?.[k]))]);
    const ids = [...new Set(runs.flatMap((r) => r.summary.perScenario.map((p) => p.id)))].sort();
    const at = (r: LabelledRun, id: string) => r.summary.perScenario.find((p) => p.id === id)?.metrics[k];
    for (const id of ids) rows.push([id, ...runs.map((r) => pct(at(r, id))), ...runs.slice(1).map((r) => delta(at(base, id), at(r, id)))]);
    md += table(head(""), rows);
  }
  return md;
}

export function renderMarkdown(runs: LabelledRun[]): string {
  return runs.length === 1 ? single(runs[0]) : compare(runs);
}

const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** Two panels (secure rate, sec-pass@1) of grouped bars per CWE, one bar per run, whiskers for the 95% interval. */
export function renderChart(runs: LabelledRun[]): string {
  const cwes = [...new Set(runs.flatMap((r) => Object.keys(r.summary.perCwe)))].sort();
  const groups = [...cwes, "overall"];
  const barW = 14;
  const groupW = runs.length * barW + 16;
  const panelH = 220;
  const left = 50;
  const width = left + groups.length * groupW + 20;
  const legendH = 20 + runs.length * 16;
  const height = legendH + 2 * (panelH + 60);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  runs.forEach((r, i) => {
    parts.push(`<rect x="${left}" y="${8 + i * 16}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${left + 16}" y="${17 + i * 16}">${esc(r.label)}</text>`);
  });
  const panels = [
    ["secure rate", "secureRate"],
    ["sec-pass@1", "secPassAt1"],
  ] as const;
  panels.forEach(([title, key], pi) => {
    const top = legendH + pi * (panelH + 60) + 20;
    const y = (v: number) => top + panelH - v * panelH;
    parts.push(`<text x="${left}" y="${top - 6}" font-weight="bold">${title} per CWE (95% CI)</text>`);
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(`<line x1="${left}" x2="${width - 10}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`);
      parts.push(`<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${Math.round(t * 100)}%</text>`);
    }
    groups.forEach((g, gi) => {
      const gx = left + gi * groupW + 8;
      runs.forEach((r, ri) => {
        const e: Estimate | undefined = g === "overall" ? r.summary[key] : r.summary.perCwe[g]?.[key];
        const x = gx + ri * barW;
        if (!e || e.value === null) {
          parts.push(`<text x="${x + barW / 2}" y="${y(0) - 3}" text-anchor="middle" fill="#999">–</text>`);
          return;
        }
        parts.push(`<rect x="${x}" y="${y(e.value)}" width="${barW - 2}" height="${Math.max(0, y(0) - y(e.value))}" fill="${COLORS[ri % COLORS.length]}"><title>${esc(r.label)} ${esc(g)}: ${(e.value * 100).toFixed(1)}%</title></rect>`);
        if (e.low !== null && e.high !== null) {
          const cx = x + (barW - 2) / 2;
          parts.push(`<line x1="${cx}" x2="${cx}" y1="${y(e.high)}" y2="${y(e.low)}" stroke="#333"/>`);
        }
      });
      parts.push(`<text x="${gx + (runs.length * barW) / 2}" y="${y(0) + 14}" text-anchor="middle">${esc(g)}</text>`);
    });
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}
