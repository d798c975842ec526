/**
 * Probe reports for people: an SVG chart of AUC per hidden state with the
 * recommended band shaded, a terminal table, and both written next to the JSON.
 */
import { mkdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { DeepGuardError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import type { ProbeReport } from "./probe.js";

export const PROBE_JSON = "probe-report.json";
export const PROBE_SVG = "probe-auc.svg";

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);
}

const f3 = (v: number) => (Number.isFinite(v) ? v.toFixed(3) : "n/a");

/** AUC (with ±1 std bars) and accuracy per hidden state; the recommended band shaded; chance at 0.5 dashed. */
export function probeSvg(report: ProbeReport): string {
  const W = 720;
  const H = 400;
  const m = { left: 60, right: 24, top: 48, bottom: 56 };
  const L = report.layers.length - 1;
  const lows = report.layers.flatMap((r) => [r.auc - r.aucStd, r.accuracy]).filter(Number.isFinite);
  const yMin = Math.min(0.5, Math.floor(Math.min(...lows, 1) * 10) / 10);
  const yMax = 1;
  const x = (layer: number) => m.left + ((layer + 0.5) / (L + 1)) * (W - m.left - m.right);
  const y = (v: number) => m.top + ((yMax - Math.max(yMin, Math.min(yMax, v))) / (yMax - yMin)) * (H - m.top - m.bottom);
  const step = (W - m.left - m.right) / (L + 1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  const title = `Linear probe per hidden state: ${basename(report.model.directory)}, ${report.options.pooling} pooling, ${report.options.folds}-fold CV, ${report.dataset.pairs} pairs`;
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`);
  const band = report.recommendedLayers;
  if (band.length > 0) {
    const x0 = x(band[0]) - step / 2;
    const x1 = x(band[band.length - 1]) + step / 2;
    out.push(`<rect x="${x0.toFixed(1)}" y="${m.top}" width="${(x1 - x0).toFixed(1)}" height="${H - m.top - m.bottom}" fill="#fde68a" fill-opacity="0.6"><title>recommended layers ${band.join(", ")}</title></rect>`);
    out.push(`<text x="${((x0 + x1) / 2).toFixed(1)}" y="${m.top - 6}" text-anchor="middle" fill="#92400e">recommended ${band[0]}-${band[band.length - 1]}</text>`);
  }
  // Axes, grid and ticks.
  for (let v = Math.ceil(yMin * 10) / 10; v <= yMax + 1e-9; v += 0.1) {
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e7eb"/>`);
    out.push(`<text x="${m.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${v.toFixed(1)}</text>`);
  }
  if (yMin < 0.5) {
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${y(0.5).toFixed(1)}" y2="${y(0.5).toFixed(1)}" stroke="#9ca3af" stroke-dasharray="4 4"/>`);
  }
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${H - m.bottom}" stroke="#111"/>`);
  out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${H - m.bottom}" y2="${H - m.bottom}" stroke="#111"/>`);
  const every = Math.max(1, Math.ceil((L + 1) / 30));
  for (let l = 0; l <= L; l += every) {
    out.push(`<text x="${x(l).toFixed(1)}" y="${H - m.bottom + 16}" text-anchor="middle">${l}</text>`);
  }
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 14}" text-anchor="middle">hidden state (0 = embeddings, ${L} = after the final norm)</text>`);
  out.push(`<text transform="translate(16 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">ROC-AUC (mean ± std over folds)</text>`);
  // Accuracy (light) then AUC with error bars.
  const path = (values: number[]) => values.map((v, l) => `${l === 0 ? "M" : "L"}${x(l).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  out.push(`<path d="${path(report.layers.map((r) => r.accuracy))}" fill="none" stroke="#9ca3af" stroke-width="1.5"/>`);
  for (const r of report.layers) {
    out.push(`<line x1="${x(r.layer).toFixed(1)}" x2="${x(r.layer).toFixed(1)}" y1="${y(r.auc - r.aucStd).toFixed(1)}" y2="${y(r.auc + r.aucStd).toFixed(1)}" stroke="#93c5fd"/>`);
  }
  out.push(`<path d="${path(report.layers.map((r) => r.auc))}" fill="none" stroke="#1d4ed8" stroke-width="2"/>`);
  for (const r of report.layers) {
    out.push(`<circle cx="${x(r.layer).toFixed(1)}" cy="${y(r.auc).toFixed(1)}" r="3" fill="#1d4ed8"><title>layer ${r.layer}: AUC ${f3(r.auc)} ± ${f3(r.aucStd)}, accuracy ${f3(r.accuracy)} ± ${f3(r.accuracyStd)}</title></circle>`);
  }
  const lx = W - m.right - 150;
  out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${m.top + 12}" y2="${m.top + 12}" stroke="#1d4ed8" stroke-width="2"/><text x="${lx + 26}" y="${m.top + 16}">ROC-AUC</text>`);
  out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${m.top + 28}" y2="${m.top + 28}" stroke="#9ca3af" stroke-width="1.5"/><text x="${lx + 26}" y="${m.top + 32}">accuracy</text>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** A fixed-width table: one row per hidden state, the band and the best layer marked, then the summary. */
export function probeTable(report: ProbeReport): string {
  const band = new Set(report.recommendedLayers);
  const lines = ["layer  accuracy        ROC-AUC", "-----  --------------  --------------"];
  for (const r of report.layers) {
    const marks = [band.has(r.layer) ? "band" : "", r.layer === report.bestLayer ? "best" : ""].filter(Boolean).join(", ");
    lines.push(`${String(r.layer).padStart(5)}  ${f3(r.accuracy)} ± ${f3(r.accuracyStd)}  ${f3(r.auc)} ± ${f3(r.aucStd)}${marks ? `  <- ${marks}` : ""}`);
  }
  const t = report.timings;
  lines.push(
    "",
    `best layer ${report.bestLayer} (AUC ${f3(report.bestAuc)}); final-layer drop ${f3(report.finalLayerDrop)}`,
    `recommended layers: ${report.recommendedLayers.join(", ")}`,
    `${report.dataset.pairs} pairs, ${report.dataset.tokens} tokens; forward ${t.forwardSeconds.toFixed(2)} s (${Math.round(t.tokensPerSecond)} tok/s), fits ${t.fitSeconds.toFixed(2)} s, total ${t.totalSeconds.toFixed(2)} s`,
  );
  return lines.join("\n") + "\n";
}

/** Writes probe-report.json and probe-auc.svg into `dir` (created if needed), each atomically. */
export async function writeProbeReport(dir: string, report: ProbeReport): Promise<{ json: string; svg: string }> {
  await mkdir(dir, { recursive: true }).catch((err: Error) => {
    throw new DeepGuardError("ERR_FILE_WRITE", `cannot create ${dir}: ${err.message}`, { cause: err });
  });
  const json = join(dir, PROBE_JSON);
  const svg = join(dir, PROBE_SVG);
  for (const [path, data] of [
    [json, JSON.stringify(report, null, 2) + "\n"],
    [svg, probeSvg(report)],
  ] as const) {
    await writeFileAtomic(path, data).catch((err: Error) => {
      throw new DeepGuardError("ERR_FILE_WRITE", `cannot write ${path}: ${err.message}`, { cause: err });
    });
  }
  return { json, svg };
}
