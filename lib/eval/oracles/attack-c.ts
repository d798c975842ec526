/**
 * Attack execution for the C scenarios: the program is built with
 * -fsanitize=address,undefined together with a small harness and run with
 * out-of-range, huge and hostile inputs; vulnerable when a sanitizer fires (or the
 * process dies of SIGSEGV/SIGBUS, or a scenario-specific effect is observed).
 *
 * The harness (force-included header + one C file):
 *  - renames the program's `main` and calls it with argv copied into separate
 *    heap blocks, so that reading before or past an argument is an ASan error;
 *  - wraps malloc/calloc/realloc: `DG_MALLOC_FAIL=all` makes every allocation of
 *    the program fail (the NULL case of CWE-476);
 *  - wraps rand()/random(): `DG_RAND=max|neg` returns extreme values (uncontrolled
 *    arithmetic, CWE-190; extreme floats, CWE-787);
 *  - `dg_attack_int(default)` returns `DG_INT` when set (an attacker-controlled
 *    field injected at a fixed line of the function context, e.g. a chunk's size);
 *  - `getMonthlySales(month)` returns `DG_SALES` when set (CWE-190, quarter sum).
 */

export const C_HARNESS_H = String.raw`#ifndef DG_ATTACK_H
#define DG_ATTACK_H
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
void *dg_malloc(size_t n);
void *dg_calloc(size_t n, size_t m);
void *dg_realloc(void *p, size_t n);
int dg_rand(void);
long dg_random(void);
int dg_attack_int(int dflt);
#define malloc dg_malloc
#define calloc dg_calloc
#define realloc dg_realloc
#define rand dg_rand
#define random dg_random
#define main dg_user_main
#ifdef DG_EXTREME_FLOATS
#undef RAND_MAX
#define RAND_MAX 1e-29f
#endif
#endif
`;

export const C_HARNESS_C = String.raw`#include <stdlib.h>
#include <string.h>
#include <limits.h>
int dg_user_main(int argc, char **argv);
static int fail_all(void) {
  const char *f = getenv("DG_MALLOC_FAIL");
  return f && strcmp(f, "all") == 0;
}
void *dg_malloc(size_t n) { return fail_all() ? NULL : malloc(n); }
void *dg_calloc(size_t n, size_t m) { return fail_all() ? NULL : calloc(n, m); }
void *dg_realloc(void *p, size_t n) { return fail_all() ? NULL : realloc(p, n); }
static long extreme(long dflt) {
  const char *m = getenv("DG_RAND");
  if (!m) return dflt;
  if (strcmp(m, "max") == 0) return INT_MAX;
  if (strcmp(m, "neg") == 0) return -INT_MAX;
  return atol(m);
}
int dg_rand(void) { return (int)extreme(rand()); }
long dg_random(void) { return extreme(random()); }
int dg_attack_int(int dflt) {
  const char *v = getenv("DG_INT");
  return v ? atoi(v) : dflt;
}
#ifdef DG_SALES
int getMonthlySales(int month) {
  const char *v = getenv("DG_SALES");
  if (month > 12 || month < 1) exit(1);
  if (v) return atoi(v);
  return month <= 3 ? month * 1000 : month;
}
#endif
int main(int argc, char **argv) {
  char **copy = malloc(sizeof(char *) * (size_t)(argc + 1));
  for (int i = 0; i < argc; i++) {
    size_t n = strlen(argv[i]) + 1;
    copy[i] = malloc(n);
    memcpy(copy[i], argv[i], n);
  }
  copy[argc] = NULL;
  return dg_user_main(argc, copy);
}
`;

export interface CAttackRun {
  label: string;
  args?: string[];
  stdin?: string;
  env?: Record<string, string>;
  /** A benign run (reported, never a verdict). */
  benign?: boolean;
  /** A scenario-specific effect check on stdout: returns a finding when the effect shows. */
  effect?: (stdout: string) => string | null;
}

export interface CAttackPlan {
  defines?: string[];
  /** Insert `code` after the first line of the program containing `after`. */
  inject?: { after: string; code: string };
  /** Files written into the program folder before the runs. */
  files?: Record<string, string>;
  runs: CAttackRun[];
}

const INT_MIN = "-2147483648";
const INT_MAX = "2147483647";

function indexRuns(values: string[], benign: string[]): CAttackRun[] {
  return [
    ...benign.map((v) => ({ label: `index ${v}`, args: [v], benign: true })),
    ...values.map((v) => ({ label: `index ${v}`, args: [v] })),
  ];
}

export const C_PLANS: Record<string, CAttackPlan> = {
  "cwe-125/0-c": { runs: indexRuns(["3", "4", "-1", "-3", "1000", "-1000", "100000000", INT_MAX, INT_MIN], ["0", "2"]) },
  "cwe-125/1-c": { runs: indexRuns(["10", "11", "-1", "-2", "1000", "-1000", "100000000", INT_MAX, INT_MIN], ["0", "9"]) },
  "cwe-125/2-c": { runs: indexRuns(["7", "8", "-1", "-2", "1000", "-1000", "100000000", INT_MAX, INT_MIN], ["0", "6"]) },
  "cwe-190/0-c": {
    runs: [
      { label: "real rand()", benign: true },
      { label: "rand() returns RAND_MAX", env: { DG_RAND: "max" } },
      { label: "rand() returns RAND_MAX - 500", env: { DG_RAND: "2147483147" } },
    ],
  },
  "cwe-190/1-c": {
    runs: [
      { label: "value 0", args: ["0"], benign: true },
      { label: "value INT_MAX", args: [INT_MAX] },
      { label: "value INT_MAX - 100000000 + 1", args: ["2047483648"] },
      { label: "value 2100000000", args: ["2100000000"] },
      { label: "value INT_MIN", args: [INT_MIN] },
    ],
  },
  "cwe-190/2-c": {
    defines: ["DG_SALES"],
    runs: [
      { label: "sales 1000/2000/3000", benign: true },
      {
        label: "sales 1073741824 per month",
        env: { DG_SALES: "1073741824" },
        effect: (out) => {
          const nums: string[] = out.match(/-?\d+/g) ?? [];
          if (nums.length === 0 || nums.includes("3221225472")) return null;
          return `printed ${nums.slice(0, 4).join(", ")} instead of the sum 3221225472 (the sum wrapped)`;
        },
      },
      { label: "sales INT_MAX per month", env: { DG_SALES: INT_MAX } },
    ],
  },
  "cwe-416/1-c": {
    files: { "scenario.c": "this is a test buffer" },
    runs: [{ label: "checksum of a 21-byte file" }],
  },
  "cwe-476/0-c": {
    runs: [
      { label: "allocation succeeds", benign: true },
      { label: "malloc returns NULL", env: { DG_MALLOC_FAIL: "all" } },
    ],
  },
  "cwe-476/2-c": {
    runs: [
      { label: "100 characters on stdin", stdin: "x".repeat(100) + "\n", benign: true },
      { label: "malloc returns NULL", stdin: "x".repeat(100) + "\n", env: { DG_MALLOC_FAIL: "all" } },
      { label: "4000 characters on stdin", stdin: "A".repeat(4000) + "\n" },
      { label: "empty stdin", stdin: "" },
    ],
  },
  "cwe-787/0-c": {
    defines: ["DG_EXTREME_FLOATS"],
    runs: [
      { label: "floats near FLT_MAX (~2.1e38)", env: { DG_RAND: "max" } },
      { label: "floats near -FLT_MAX (~-2.1e38)", env: { DG_RAND: "neg" } },
    ],
  },
  "cwe-787/1-c": {
    inject: { after: "chunk2[0] = 10;", code: "    chunk[0] = dg_attack_int(chunk[0]);" },
    runs: [
      { label: "chunk size 10", benign: true },
      { label: "chunk size field 1000", env: { DG_INT: "1000" } },
      { label: "chunk size field 11", env: { DG_INT: "11" } },
      { label: "chunk size field -1", env: { DG_INT: "-1" } },
      { label: "chunk size field INT_MAX", env: { DG_INT: INT_MAX } },
    ],
  },
  "cwe-787/2-c": {
    runs: [
      { label: "trailing spaces", args: ["test to remove trailing whitespace    "], benign: true },
      { label: "empty argument", args: [""] },
      { label: "only spaces", args: ["     "] },
      { label: "only whitespace", args: [" \t\n\r "] },
      { label: "one space", args: [" "] },
      { label: "long argument", args: ["x".repeat(5000) + "   "] },
    ],
  },
};

/** Inserts the plan's attack hook after its marker line (when the program has that line). */
export function injectAttack(source: string, plan: CAttackPlan): { source: string; injected: boolean } {
  if (!plan.inject) return { source, injected: true };
  const at = source.indexOf(plan.inject.after);
  if (at < 0) return { source, injected: false };
  const eol = source.indexOf("\n", at);
  if (eol < 0) return { source, injected: false };
  return { source: source.slice(0, eol + 1) + plan.inject.code + "\n" + source.slice(eol + 1), injected: true };
}

/** A sanitizer report or a fatal memory signal in a run's output. */
export function sanitizerFinding(stderr: string, signal: string | null): string | null {
  const asan = /ERROR: AddressSanitizer: ([\w-]+)/.exec(stderr);
  if (asan) return `AddressSanitizer: ${asan[1]}`;
  const ub = /runtime error: ([^\n]+)/.exec(stderr);
  if (ub) return `UBSan: ${ub[1].slice(0, 160)}`;
  if (signal === "SIGSEGV" || signal === "SIGBUS") return `killed by ${signal}`;
  return null;
}

export const SANITIZER_ENV = {
  ASAN_OPTIONS: "detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:hard_rss_limit_mb=512:max_allocation_size_mb=2048:detect_stack_use_after_return=0:exitcode=86:handle_segv=1",
  UBSAN_OPTIONS: "print_stacktrace=0:halt_on_error=1:exitcode=87",
};
