#!/usr/bin/env bash
# Rebuilds the default model shipped in models/default/ (README "Default model";
# the model card is models/default/README.md):
#   1. the corpus and tokenizer (scripts/build-corpus.sh),
#   2. full-parameter pretraining of benchmarks/default-model/config.json,
#   3. layer-wise probing on SVEN (the chart and the guard's layer band),
#   4. the guard and LoRA adapter, trained together by the Trainer on SVEN,
#   5. the guard's validation report, then models/default/ is replaced.
#
#   scripts/build-default-model.sh WORK_DIR [SHARED_DATASETS_DIR]
#
# Hours on 2 cores. Every stage resumes where a killed run stopped (run it again
# with the same WORK_DIR); a finished stage is skipped.
set -euo pipefail
work=$(realpath -m "${1:?usage: scripts/build-default-model.sh WORK_DIR [SHARED_DATASETS_DIR]}")
here=$(cd "$(dirname "$0")/.." && pwd)
datasets=$(realpath "${2:-$here/../shared/datasets}")
cli="node $here/dist/lib/cli/main.js"
dest=$here/models/default

[ -f "$work/corpus/heldout.safetensors" ] || "$here/scripts/build-corpus.sh" "$work/corpus" "$datasets"

if ! grep -qs '"finished":true' "$work/pretrain.jsonl"; then
  resume=(); [ -d "$work/model/checkpoint" ] && resume=(--resume)
  $cli pretrain "$here/benchmarks/default-model/config.json" --data "$work/corpus/train.safetensors" \
    --heldout "$work/corpus/heldout.safetensors" --tokenizer "$work/corpus/tokenizer" --out "$work/model" \
    --json "${resume[@]}" | tee -a "$work/pretrain.jsonl"
fi

[ -f "$work/probe/probe-report.json" ] || $cli probe "$work/model" --data "$datasets/sven/train" --out "$work/probe" --folds 5 --seed 1
layers=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).recommendedLayers.join(","))' "$work/probe/probe-report.json")

if [ ! -f "$work/guard/guard.json" ]; then
  resume=(); [ -d "$work/guard/last" ] && resume=(--resume)
  $cli train "$work/model" --data "$datasets/sven/train" --val "$datasets/sven/val" --out "$work/guard" \
    --layers "$layers" --aggregation attention --rank 16 --alpha 32 --dropout 0.05 --targets q_proj,k_proj,v_proj,o_proj \
    --lr 1e-3 --warmup 20 --epochs 3 --batch-size 4 --grad-accum 2 --security 1 --kl 0.5 --margin 0.5 \
    --eval-every 30 --patience 4 --seed 1 --json "${resume[@]}" | tee -a "$work/train.jsonl"
fi

# sec_eval completions, plain and guarded (parse rates; no functional tests: the model is a demonstration)
for mode in plain guarded; do
  [ -f "$work/eval-$mode/summary.json" ] && continue
  extra=(); [ $mode = guarded ] && extra=(--adapter "$work/guard" --guard "$work/guard")
  $cli eval "$work/model" --scenarios "$datasets/sec_eval" --samples 10 --max-tokens 128 --temperature 0.4 --seed 1 \
    --no-functional --out "$work/eval-$mode" "${extra[@]}"
done

node "$here/dist/benchmarks/default-model/report.js" --model "$work/model" --guard "$work/guard" \
  --val "$datasets/sven/val" --pretrain-log "$work/pretrain.jsonl" --probe "$work/probe/probe-report.json" \
  --eval-plain "$work/eval-plain" --eval-guarded "$work/eval-guarded" --out "$work/report.json"

# Assemble next to the old folder, then swap, so a failure leaves models/default/ whole.
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/guard"
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do cp "$work/model/$f" "$dest.tmp/"; done
for f in adapter_config.json adapter_model.safetensors guard.json guard.safetensors; do cp "$work/guard/$f" "$dest.tmp/guard/"; done
cp "$work/report.json" "$dest.tmp/training-report.json"
cp "$work/probe/probe-auc.svg" "$dest.tmp/probe-auc.svg"
[ -f "$dest/README.md" ] && cp "$dest/README.md" "$dest.tmp/README.md"
rm -rf "$dest.old" && { [ ! -d "$dest" ] || mv "$dest" "$dest.old"; } && mv "$dest.tmp" "$dest" && rm -rf "$dest.old"
echo "models/default/ rebuilt ($(du -sh "$dest" | cut -f1)); update the numbers in its README.md from training-report.json"
