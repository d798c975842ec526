// The serving scheduler: one engine-owned thread per model that owns decoding.
//
// Every iteration runs ONE batched Transformer::step over
//   - every generating sequence that is decoding (one token each), plus
//   - a bounded amount of pending prefill (chunked prefill): prompts and eval()
//     inputs are cut into chunks of `prefill_chunk` tokens at fixed offsets from
//     their start, and whole chunks are taken FIFO until the iteration's budget
//     is spent, so a long prompt never stalls the decoding sequences for more
//     than one chunk's compute.
// then samples every sequence whose logits are ready, natively (logit bias,
// finiteness check, temperature / top-k / top-p, seeded draw). Requests join and
// leave between iterations (continuous batching); cancellation is applied at
// the start of the next iteration and frees the sequence's KV cache.
//
// Chunk boundaries depend only on the request itself, and the kernels compute
// every token row independently of the others in a pass, so a sequence's tokens
// do not depend on what else is being served (see the README for the one
// exception: BF16 weights at batch sizes <= 4 vs > 4 rows).
//
// The per-step hook (for guided generation): a generating sequence may
//   - capture hidden states (HF output_hidden_states indices): the rows of every
//     token fed (prompt chunks and generated tokens) come with its events;
//   - carry a logit bias [vocab], added to its logits before sampling;
//   - run `stepwise`: when its logits are ready the sequence pauses (the event
//     says `awaiting`) until resume(id, bias) is called, so the bias for token t
//     can depend on the hidden states of every token before t. Other sequences
//     keep going meanwhile.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kernels/ops.h"
#include "model/transformer.h"
#include "serve/random.h"

namespace dg {

struct ServeRequest {
  enum class Kind { Eval, Generate };
  Kind kind = Kind::Eval;
  std::shared_ptr<Session> session;
  std::vector<int32_t> tokens;      // eval: tokens to append; generate: the prompt
  std::vector<int32_t> capture;     // hidden-state indices in [0, L], ascending, unique
  bool use_adapter = true;
  // Eval only.
  LogitsMode logits = LogitsMode::Last;
  // Generate only.
  SamplingParams sampling;
  uint64_t seed = 0;
  int64_t max_tokens = 1;
  std::vector<int32_t> stop_ids;    // sampled ids that end generation (not emitted)
  std::vector<float> logit_bias;    // empty or [vocab]
  bool stepwise = false;
  // Stepwise pauses (guided generation): only before the tokens whose index g
  // (0-based, generated so far) satisfies g < pause_head or, with
  // pause_every > 0, g % pause_every == 0. The default pauses before every token.
  int64_t pause_every = 1;
  int64_t pause_head = 0;
  // Report each sampled token's log-probability under the model (the logits
  // before any bias, temperature 1): candidate selection ties are broken by it.
  bool logprobs = false;
  // Keep the session's KV cache when the generation ends (the caller continues
  // from it, e.g. the chosen candidate); by default a generation frees it.
  bool keep_session = false;
};

// What the scheduler reports about one request after an iteration.
struct ServeEvent {
  uint64_t id = 0;
  std::vector<int32_t> tokens;      // generate: tokens sampled (in order)
  std::vector<float> logprobs;      // generate with logprobs: one per sampled token
  int64_t fed = 0;                  // tokens fed to the model; their hidden rows follow
  std::vector<float> hidden;        // [capture.size()][fed][hidden]
  std::vector<float> logits;        // eval, when done: [rows][vocab]
  bool awaiting = false;            // stepwise: logits ready, waiting for resume()
  bool done = false;
  std::string finish;               // done generate: "maxTokens" | "eos"
  std::string code, message;        // non-empty code: the request failed (done too)
};

struct ServeStats {
  int64_t active = 0;               // requests admitted and not finished
  int64_t iterations = 0;           // batched steps run so far
  int64_t max_batch_rows = 0;       // the most token rows one iteration has run
};

class Scheduler {
 public:
  // notify() is called on the scheduler thread whenever events are ready to drain().
  Scheduler(std::shared_ptr<const Transformer> model, int64_t prefill_chunk, int64_t max_positions,
            std::function<void()> notify);
  ~Scheduler();  // stops after the current iteration; unfinished requests are dropped
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Admits the requests atomically (they start in the same iteration) and
  // returns their ids. Validates everything first; on error nothing is admitted.
  std::vector<uint64_t> submit(std::vector<ServeRequest> requests);
  // Ends a request at the start of the next iteration with ERR_ABORTED (an eval
  // is rolled back to its session's previous length). Unknown ids are ignored.
  void cancel(uint64_t id);
  // Stepwise sequences: continue, with a new bias (nullopt: keep; empty: none).
  void resume(uint64_t id, std::optional<std::vector<float>> bias);
  std::vector<ServeEvent> drain();
  ServeStats stats() const;

  // Rows of prefill one iteration takes while sequences are decoding.
  int64_t prefill_chunk() const { return chunk_; }

 private:
  struct Seq;
  void loop();
  void iterate();
  void finish(Seq& s, ServeEvent& ev, const std::string& code, const std::string& message);
  void sample(Seq& s, ServeEvent& ev);
  ServeEvent& event_for(Seq& s);

  std::shared_ptr<const Transformer> model_;
  const int64_t chunk_, max_positions_;
  std::function<void()> notify_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool runnable_ = false;             // some admitted sequence can advance
  uint64_t next_id_ = 1;
  std::vector<std::unique_ptr<Seq>> incoming_;
  std::unordered_set<uint64_t> cancels_;
  std::unordered_map<uint64_t, std::optional<std::vector<float>>> resumes_;
  std::unordered_set<const Session*> busy_;  // sessions with an unfinished request
  std::vector<ServeEvent> out_;
  ServeStats stats_;
  std::string broken_;                // non-empty: the checkpoint changed on disk

  // Owned by the scheduler thread.
  std::vector<std::unique_ptr<Seq>> active_;
  std::vector<ServeEvent> pending_;   // this iteration's events, by request
  std::unordered_map<uint64_t, size_t> pending_index_;

  std::thread thread_;
};

// logits[v] += bias[v] (when given), then the sampled token. Throws
// ERR_NON_FINITE when a logit is NaN or +inf, or every logit is -inf.
int32_t sample_biased(float* logits, int64_t vocab, const float* bias, const SamplingParams& p, double u);

}  // namespace dg
