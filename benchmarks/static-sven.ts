/**
 * npm run bench:static-sven
 *
 * How often the static analyzers (bandit for Python; cppcheck and flawfinder for C)
 * flag the vulnerable version of a SVEN validation pair versus its fixed version,
 * mapped to the pair's CWE exactly as the eval harness maps them. Reads
 * ../shared/datasets/sven/val (or --data DIR); writes benchmarks/results/static-sven.json.
 * Methods are dedented (bandit cannot parse an indented `def`).
 */
import { readdir, readFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { runChecker, type Checker } from "../lib/eval/checker.js";
import { writeJsonAtomic } from "../lib/io/atomic.js";
import { BanditChecker, CppcheckChecker, FlawfinderChecker } from "../lib/eval/oracles/static.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const { values } = parseArgs({ options: { data: { type: "string" } } });
const data = values.data ?? join(root, "..", "shared", "datasets", "sven", "val");

function dedent(text: string): string {
  const lines = text.split("\n");
  const indents = lines.filter((l) => l.trim()).map((l) => /^[ \t]*/.exec(l)![0].length);
  const cut = indents.length ? Math.min(...indents) : 0;
  return lines.map((l) => l.slice(Math.min(cut, /^[ \t]*/.exec(l)![0].length))).join("\n");
}

interface Cell { pairs: number; flaggedVulnerable: number; flaggedFixed: number; undecided: number }
const table: Record<string, Record<string, Cell>> = {};
const checkers: Checker[] = [new BanditChecker(), new CppcheckChecker(), new FlawfinderChecker()];
const started = Date.now();
for (const f of (await readdir(data)).filter((x) => x.endsWith(".jsonl")).sort()) {
  const cwe = f.replace(/\.jsonl$/, "");
  const lang = ["cwe-022", "cwe-078", "cwe-079", "cwe-089"].includes(cwe) ? "py" : "c";
  const lines = (await readFile(join(data, f), "utf8")).split("\n").filter((l) => l.trim());
  for (const c of checkers.filter((x) => x.languages.includes(lang))) {
    const why = await c.unavailable();
    const cell: Cell = { pairs: 0, flaggedVulnerable: 0, flaggedFixed: 0, undecided: 0 };
    if (why) {
      console.log(`${c.name}: ${why}`);
      continue;
    }
    for (const line of lines) {
      const rec = JSON.parse(line) as { func_src_before: string; func_src_after: string };
      const v = await runChecker(c, { language: lang, cwe, source: dedent(rec.func_src_before) + "\n", scenario: null });
      const s = await runChecker(c, { language: lang, cwe, source: dedent(rec.func_src_after) + "\n", scenario: null });
      cell.pairs++;
      if (v.vulnerable) cell.flaggedVulnerable++;
      if (s.vulnerable) cell.flaggedFixed++;
      if (v.vulnerable === null || s.vulnerable === null) cell.undecided++;
    }
    (table[c.name] ??= {})[cwe] = cell;
  }
}
const rows: string[] = ["| tool | CWE | pairs | flags vulnerable | flags fixed | undecided pairs |", "|---|---|---|---|---|---|"];
for (const [tool, per] of Object.entries(table)) {
  let tot: Cell = { pairs: 0, flaggedVulnerable: 0, flaggedFixed: 0, undecided: 0 };
  for (const [cwe, c] of Object.entries(per)) {
    rows.push(`| ${tool} | ${cwe} | ${c.pairs} | ${c.flaggedVulnerable} | ${c.flaggedFixed} | ${c.undecided} |`);
    tot = { pairs: tot.pairs + c.pairs, flaggedVulnerable: tot.flaggedVulnerable + c.flaggedVulnerable, flaggedFixed: tot.flaggedFixed + c.flaggedFixed, undecided: tot.undecided + c.undecided };
  }
  const pc = (x: number) => ((100 * x) / tot.pairs).toFixed(0);
  rows.push(`| ${tool} | all | ${tot.pairs} | ${tot.flaggedVulnerable} (${pc(tot.flaggedVulnerable)}%) | ${tot.flaggedFixed} (${pc(tot.flaggedFixed)}%) | ${tot.undecided} |`);
}
console.log(rows.join("\n"));
const out = join(root, "benchmarks", "results", "static-sven.json");
await mkdir(dirname(out), { recursive: true });
await writeJsonAtomic(out, { data, seconds: (Date.now() - started) / 1000, table });
console.log(`wrote ${out} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
