import * as assert from "uvu/assert";

/** Asserts that fn (sync or async) throws an error with `code` whose message matches. */
export async function expectError(fn: () => unknown, code: string, message?: RegExp): Promise<Error> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected an error with code ${code}, nothing was thrown`);
  const err = caught as Error & { code?: string };
  assert.is(err.code, code, `wrong code for: ${err.message}`);
  if (message) assert.match(err.message, message);
  return err;
}
