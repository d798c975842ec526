// Training reads the base weights in F32/F16/BF16: a block-quantized base is refused
// by name rather than read as zeros by the backward kernels.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "uvu";
import { Model } from "../../lib/index.js";
import { LoraParameters, trainForward } from "../../lib/train/lora.js";
import { makeTinyCheckpoint, tinySpecs } from "../support/checkpoint.js";
import { randomIds } from "../support/compare.js";
import { expectError } from "../support/expect.js";

test("trainForward on a quantized base is ERR_ARGUMENT naming the format", async () => {
  const root = await mkdtemp(join(tmpdir(), "dg-qtrain-"));
  try {
    const spec = tinySpecs()["qwen2-bf16-tied"];
    await makeTinyCheckpoint(join(root, "m"), spec);
    const model = await Model.load(join(root, "m"), { quantize: "q8_0" });
    const ids = Int32Array.from(randomIds(8, spec.vocab, 1));
    await expectError(() => trainForward(model, ids, null), "ERR_ARGUMENT", /quantize: "q8_0"/);
    const lora = LoraParameters.create(model, { rank: 2, alpha: 4, targetModules: ["q_proj"] }, 1);
    await expectError(() => trainForward(model, ids, lora), "ERR_ARGUMENT", /load it without quantize/);
    model.dispose();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test.run();
