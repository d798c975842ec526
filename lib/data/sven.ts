/**
 * SVEN jsonl records: one vulnerability fix per line (func_src_before is the
 * vulnerable function, func_src_after the fixed one), validated with zod.
 *
 * Offsets: SVEN was produced in Python, so `char_start` / `char_end` index
 * Python strings, i.e. Unicode code points (not UTF-8 bytes, not UTF-16 units).
 * Checked on the shipped train/val split: all 7417 char_changes equal their
 * source sliced by code points, while a UTF-8 byte slice fails on a non-ASCII
 * line (cwe-125 train line 88). Code points equal UTF-16 units except past a
 * character outside the BMP; toUnitOffset() converts.
 */
import { basename } from "node:path";
import { z } from "zod";
import { issueField } from "../validate.js";

const offset = z.number().int().nonnegative();
const charChange = z.object({ char_start: offset, char_end: offset, chars: z.string() });
const lineChange = z.object({ line_no: z.number().int().positive(), char_start: offset, char_end: offset, line: z.string() });

/** Unknown extra fields are allowed (some SVEN files add `description`). */
export const svenRecordSchema = z
  .object({
    func_name: z.string(),
    func_src_before: z.string().min(1),
    func_src_after: z.string().min(1),
    vul_type: z.string().regex(/^cwe-\d+$/i, 'must look like "cwe-089"'),
    char_changes: z.object({ deleted: z.array(charChange), added: z.array(charChange) }),
    line_changes: z.object({ deleted: z.array(lineChange), added: z.array(lineChange) }),
    commit_link: z.string(),
    file_name: z.string(),
    description: z.string().optional(),
  })
  .superRefine((r, ctx) => {
    // Every changed range must lie inside its source and hold exactly `chars`.
    for (const [side, src] of [
      ["deleted", r.func_src_before],
      ["added", r.func_src_after],
    ] as const) {
      const points = codePointsIfNeeded(src);
      const length = points ? points.length : src.length;
      r.char_changes[side].forEach((c, i) => {
        const path = ["char_changes", side, i];
        if (c.char_end < c.char_start || c.char_end > length) {
          ctx.addIssue({
            code: "custom",
            path: [...path, "char_end"],
            message: `range [${c.char_start}, ${c.char_end}) is outside the ${length} characters of ${side === "deleted" ? "func_src_before" : "func_src_after"}`,
          });
        } else {
          const slice = points ? points.slice(c.char_start, c.char_end).join("") : src.slice(c.char_start, c.char_end);
          if (slice !== c.chars) {
            ctx.addIssue({ code: "custom", path: [...path, "chars"], message: `does not match the source at [${c.char_start}, ${c.char_end})` });
          }
        }
      });
    }
  });

export type SvenRecord = z.output<typeof svenRecordSchema>;

export interface InvalidLine {
  file: string;
  line: number;
  field: string;
  message: string;
}

/** The code points of `s` when it has characters outside the BMP (offsets then differ from UTF-16 units), else null. */
function codePointsIfNeeded(s: string): string[] | null {
  return /[\ud800-\udfff]/.test(s) ? Array.from(s) : null;
}

/** UTF-16 index of code-point offset `cp` in `s`. */
export function toUnitOffset(s: string, cp: number): number {
  if (!/[\ud800-\udfff]/.test(s)) return cp;
  let u = 0;
  for (let k = 0; k < cp && u < s.length; k++) u += s.codePointAt(u)! > 0xffff ? 2 : 1;
  return u;
}

/** "cwe-89", "CWE-089" and "89" all become "cwe-089"; null when it is not a CWE id. */
export function normalizeCwe(raw: string): string | null {
  const m = /^(?:cwe-?)?(\d+)$/i.exec(raw.trim());
  return m ? `cwe-${m[1].padStart(3, "0")}` : null;
}

const PY_CWES = new Set(["cwe-022", "cwe-078", "cwe-079", "cwe-089"]);
const C_EXTENSIONS = new Set(["c", "cc", "cpp", "cxx", "h", "hh", "hpp"]);

/** The language of a record: by its file's extension, else by SVEN's split of CWEs between Python and C/C++. */
export function recordLanguage(fileName: string, cwe: string): "py" | "c" {
  const ext = /\.([A-Za-z]+)$/.exec(fileName)?.[1]?.toLowerCase();
  if (ext === "py") return "py";
  if (ext && C_EXTENSIONS.has(ext)) return "c";
  return PY_CWES.has(cwe) ? "py" : "c";
}

export type ParsedLine = { ok: true; record: SvenRecord } | { ok: false; invalid: InvalidLine };

/** Parses and validates one jsonl line; `file` and `line` (1-based) are for the error. */
export function parseSvenLine(text: string, file: string, line: number): ParsedLine {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return { ok: false, invalid: { file, line, field: "(line)", message: `not valid JSON: ${(err as Error).message}` } };
  }
  const parsed = svenRecordSchema.safeParse(json);
  if (parsed.success) return { ok: true, record: parsed.data };
  const issue = parsed.error.issues[0];
  const { field, missing } = issueField(issue);
  return { ok: false, invalid: { file, line, field, message: missing ? "missing required field" : issue.message } };
}

/** "cwe-089.jsonl:12" */
export function recordId(file: string, line: number): string {
  return `${basename(file)}:${line}`;
}
