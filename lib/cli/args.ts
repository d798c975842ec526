/** Argument helpers shared by the CLI commands: flags before positionals, numbers, id lists, the model folder. */

export type UsageFactory = (message: string) => Error;

type FlagSpec = Record<string, { type: "string" | "boolean" }>;

/**
 * Puts "--" before the first argument that is not one of `flags` (or a flag's
 * value), so positionals such as a prompt "-x" or "--help me" are not taken
 * for options. "--name=value" forms are recognised too.
 */
export function positionalsLast(args: string[], flags: FlagSpec): string[] {
  const options: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    const name = a.startsWith("--") ? a.slice(2).split("=")[0] : null;
    const flag = name !== null ? flags[name] : undefined;
    if (!flag) {
      positionals.push(a);
      continue;
    }
    // "--name=value", so a value may start with "-" (e.g. --temperature -1 is then named as out of range).
    if (flag.type === "string" && !a.includes("=") && i + 1 < args.length) options.push(`${a}=${args[++i]}`);
    else options.push(a);
  }
  return [...options, "--", ...positionals];
}

/**
 * A number flag: plain decimal only (no hex, no "1e3" for integers, no empty
 * string), inside [min, max]; the error names the flag.
 */
export function numberOption(
  usage: UsageFactory,
  name: string,
  raw: string | undefined,
  integer: boolean,
  min: number,
  max = Infinity,
  minExclusive = false,
): number | undefined {
  if (raw === undefined) return undefined;
  const pattern = integer ? /^-?\d+$/ : /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
  const n = Number(raw);
  if (!pattern.test(raw.trim()) || !Number.isFinite(n) || (integer && !Number.isSafeInteger(n))) {
    throw usage(`--${name} must be ${integer ? "an integer" : "a number"}, got "${raw}"`);
  }
  if (n < min || n > max || (minExclusive && n === min)) {
    const range = `${minExclusive ? "(" : "["}${min}, ${max === Infinity ? "∞)" : `${max}]`}`;
    throw usage(`--${name} must be in ${range}, got ${raw}`);
  }
  return n;
}

/** "1,2,3" as token ids; the error names the bad entry. */
export function parseIds(usage: UsageFactory, raw: string): number[] {
  return raw.split(",").map((s, i) => {
    const t = s.trim();
    if (!/^\d+$/.test(t)) throw usage(`--ids entry ${i} ("${s}") is not a non-negative integer`);
    return Number(t);
  });
}

/**
 * The model folder is an optional first positional: with `others + 1`
 * positionals it is the first one; with `others` the package's default model
 * is meant (modelDir undefined, which Model.load reads as the default).
 */
export function splitModelDir(
  positionals: string[],
  others: number,
  usage: UsageFactory,
  what: string,
): { modelDir: string | undefined; rest: string[] } {
  if (positionals.length === others + 1) return { modelDir: positionals[0], rest: positionals.slice(1) };
  if (positionals.length === others) return { modelDir: undefined, rest: positionals };
  throw usage(what);
}
