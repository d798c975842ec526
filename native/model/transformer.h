// The decoder-only transformer (Llama / Qwen2 block) over memory-mapped weights.
//
// One entry point, step(): it appends tokens to one or more sessions' KV caches
// in a single batched pass (prefill = one long segment, batched decode = many
// one-token segments), and hands out logits and the hidden states of the
// requested layers as it computes them, so guided decoding never needs a second
// pass. Hidden-state indices follow HF output_hidden_states: 0 = embeddings,
// i = output of layer i (i < L), L = final RMSNorm of layer L's output.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/lora.h"
#include "model/weights.h"

namespace dg {

class Transformer;

// One sequence being decoded: its KV cache and position. Not shareable across
// concurrent steps (a busy session is rejected with ERR_SESSION_BUSY).
class Session {
 public:
  explicit Session(const Transformer& model);
  int64_t length() const { return cache_.length(); }
  // Forgets positions >= n (n <= length), e.g. to re-run from a shared prompt.
  void truncate(int64_t n);
  // Becomes a copy of `other`'s positions (its KV cache), e.g. to fork n
  // samples from one prefilled prompt. Neither may be in a step.
  void copy_from(const Session& other);
  uint64_t cache_bytes() const { return cache_.bytes(); }
  // Frees the KV cache now (length 0), e.g. when the scheduler ends a generation.
  void release() { cache_.release(); }
  const Transformer* model() const { return model_; }

 private:
  friend class Transformer;
  const Transformer* model_;
  KvCache cache_;
  std::atomic<bool> busy_{false};
};

enum class LogitsMode { None, Last, All };

struct StepOptions {
  LogitsMode logits = LogitsMode::Last;
  std::vector<int32_t> capture;  // hidden-state indices in [0, L], ascending, unique
  bool use_adapter = true;        // apply the attached LoRA adapter, if any
};

struct StepSegment {
  Session* session = nullptr;
  const int32_t* tokens = nullptr;
  int64_t n = 0;
};

struct SegmentOutput {
  std::vector<float> logits;  // [rows][vocab]: rows = n (All), 1 (Last), 0 (None)
  std::vector<float> hidden;  // [capture.size()][n][hidden]
};

class Transformer {
 public:
  // kv_dtype: what its sessions' KV caches hold, F32 or BF16 (see KvCache).
  // bf16_activations: BF16 weight matrices multiply BF16-rounded activations
  // (linear_forward in ops.h: AMX tiles from 4 rows) instead of f32 ones.
  Transformer(ModelConfig cfg, ModelWeights weights, DType kv_dtype = DType::F32, bool bf16_activations = false);
  const ModelConfig& config() const { return cfg_; }
  DType kv_dtype() const { return kv_dtype_; }
  bool bf16_activations() const { return bf16_activations_; }
  const ModelWeights& weights() const { return w_; }

  // Validates everything first (token ids, capture indices, distinct idle
  // sessions); on error nothing has changed. Rows are processed in passes of at
  // most kMaxRowsPerPass so long prompts need bounded activation memory.
  std::vector<SegmentOutput> step(const std::vector<StepSegment>& segments, const StepOptions& opts) const;

  static constexpr int64_t kMaxRowsPerPass = 512;

  // Attaches (or with nullptr detaches) a LoRA adapter. Safe while steps run:
  // each step uses the adapter that was attached when it started.
  void set_adapter(std::shared_ptr<const LoraAdapter> adapter) { std::atomic_store(&adapter_, std::move(adapter)); }
  std::shared_ptr<const LoraAdapter> adapter() const { return std::atomic_load(&adapter_); }

 private:
  struct Piece { size_t segment; int64_t row0_in_segment; int64_t n; };
  void run_pass(const std::vector<StepSegment>& segs, const std::vector<Piece>& pieces, const StepOptions& opts,
                const LoraAdapter* adapter, std::vector<SegmentOutput>& out) const;

  ModelConfig cfg_;
  ModelWeights w_;
  DType kv_dtype_;
  bool bf16_activations_;
  std::shared_ptr<const LoraAdapter> adapter_;  // accessed with std::atomic_load/store
};

}  // namespace dg
