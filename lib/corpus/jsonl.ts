/** The `text` of every document of a jsonl corpus file (buildCorpus's format); a bad line names file and line. */
import { DeepGuardError } from "../errors.js";

export function jsonlTexts(content: string, path: string): string[] {
  const texts: string[] = [];
  content.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    let doc: unknown;
    try {
      doc = JSON.parse(line);
    } catch {
      throw new DeepGuardError("ERR_ARGUMENT", `${path}:${i + 1}: not valid JSON`);
    }
    const text = (doc as { text?: unknown } | null)?.text;
    if (typeof text !== "string") throw new DeepGuardError("ERR_ARGUMENT", `${path}:${i + 1}: field "text" must be a string`);
    texts.push(text);
  });
  return texts;
}
