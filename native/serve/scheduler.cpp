#include "serve/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace dg {

struct Scheduler::Seq {
  uint64_t id = 0;
  ServeRequest req;
  int64_t start_length = 0;   // session length at admission (an aborted eval rolls back to it)
  int64_t fed = 0;            // tokens of req.tokens fed so far
  // Eval: outputs gathered over the chunks.
  std::vector<float> logits, hidden;
  // Generate.
  std::unique_ptr<Xoshiro128> rng;
  int64_t generated = 0;
  int32_t next_token = -1;    // sampled, to be fed in the next iteration
  std::vector<float> ready;   // logits waiting to be sampled
  bool has_logits = false;
  bool resumed = false;       // stepwise: resume() arrived for the waiting logits
  bool paused = false;        // stepwise: these logits wait for resume()
  bool done = false;

  bool prefilling() const { return fed < int64_t(req.tokens.size()); }
  bool generate() const { return req.kind == ServeRequest::Kind::Generate; }
  bool waiting() const { return has_logits && paused && !resumed; }
  bool pauses_here() const {
    return req.stepwise && (generated < req.pause_head || (req.pause_every > 0 && generated % req.pause_every == 0));
  }
};

int32_t sample_biased(float* logits, int64_t vocab, const float* bias, const SamplingParams& p, double u) {
  if (bias)
    for (int64_t i = 0; i < vocab; ++i) logits[i] += bias[i];
  return sample_token(logits, vocab, p, u);
}

Scheduler::Scheduler(std::shared_ptr<const Transformer> model, int64_t prefill_chunk, int64_t max_positions,
                     std::function<void()> notify)
    : model_(std::move(model)), chunk_(prefill_chunk), max_positions_(max_positions), notify_(std::move(notify)) {
  if (chunk_ < 4 || chunk_ > Transformer::kMaxRowsPerPass || chunk_ % 4 != 0)
    throw Error("ERR_ARGUMENT", "prefill chunk must be a multiple of 4 in [4, " +
                                    std::to_string(Transformer::kMaxRowsPerPass) + "]");
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::vector<uint64_t> Scheduler::submit(std::vector<ServeRequest> requests) {
  const ModelConfig& c = model_->config();
  std::unordered_set<const Session*> seen;
  for (size_t r = 0; r < requests.size(); ++r) {
    const ServeRequest& q = requests[r];
    const std::string which = requests.size() > 1 ? "request " + std::to_string(r) + ": " : "";
    if (!q.session || q.session->model() != model_.get())
      throw Error("ERR_ARGUMENT", which + "the session belongs to another model");
    if (!seen.insert(q.session.get()).second)
      throw Error("ERR_ARGUMENT", "the same session appears twice in one batch");
    if (q.tokens.empty()) throw Error("ERR_ARGUMENT", which + "no tokens");
    for (size_t t = 0; t < q.tokens.size(); ++t)
      if (q.tokens[t] < 0 || q.tokens[t] >= c.vocab)
        throw Error("ERR_TOKEN_ID", which + "token id " + std::to_string(q.tokens[t]) + " at position " +
                                        std::to_string(t) + " is out of range [0, " + std::to_string(c.vocab) + ")");
    for (size_t i = 0; i < q.capture.size(); ++i)
      if (q.capture[i] < 0 || q.capture[i] > c.n_layers || (i > 0 && q.capture[i] <= q.capture[i - 1]))
        throw Error("ERR_ARGUMENT", which + "hidden-state indices must be ascending, unique and in [0, " +
                                        std::to_string(c.n_layers) + "]");
    if (q.kind == ServeRequest::Kind::Generate) {
      if (q.max_tokens < 1) throw Error("ERR_ARGUMENT", which + "maxTokens must be >= 1");
      if (!q.logit_bias.empty() && int64_t(q.logit_bias.size()) != c.vocab)
        throw Error("ERR_ARGUMENT", which + "the logit bias has " + std::to_string(q.logit_bias.size()) +
                                        " entries; the vocabulary has " + std::to_string(c.vocab));
    }
    // The most positions the request can reach (generate feeds max_tokens - 1 sampled tokens).
    const int64_t reach = q.session->length() + int64_t(q.tokens.size()) +
                          (q.kind == ServeRequest::Kind::Generate ? q.max_tokens - 1 : 0);
    if (max_positions_ > 0 && reach > max_positions_)
      throw Error("ERR_CONTEXT_LENGTH", which + "the sequence would reach " + std::to_string(reach) +
                                            " positions; max_position_embeddings is " +
                                            std::to_string(max_positions_) +
                                            " (load with allowLongContext: true to go beyond it)");
  }
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!broken_.empty()) throw Error("ERR_CHECKPOINT_CHANGED", broken_);
    for (const ServeRequest& q : requests)
      if (busy_.count(q.session.get()))
        throw Error("ERR_SESSION_BUSY", "a session was used by two concurrent requests; await the first");
    for (ServeRequest& q : requests) {
      auto s = std::make_unique<Seq>();
      s->id = next_id_++;
      s->start_length = q.session->length();
      if (q.kind == ServeRequest::Kind::Generate) s->rng = std::make_unique<Xoshiro128>(q.seed);
      busy_.insert(q.session.get());
      s->req = std::move(q);
      ids.push_back(s->id);
      incoming_.push_back(std::move(s));
    }
  }
  cv_.notify_all();
  return ids;
}

void Scheduler::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.insert(id);
  }
  cv_.notify_all();
}

void Scheduler::resume(uint64_t id, std::optional<std::vector<float>> bias) {
  if (bias && !bias->empty() && int64_t(bias->size()) != model_->config().vocab)
    throw Error("ERR_ARGUMENT", "the logit bias has " + std::to_string(bias->size()) + " entries; the vocabulary has " +
                                    std::to_string(model_->config().vocab));
  {
    std::lock_guard<std::mutex> lk(mu_);
    resumes_[id] = std::move(bias);
  }
  cv_.notify_all();
}

std::vector<ServeEvent> Scheduler::drain() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<ServeEvent> out;
  out.swap(out_);
  return out;
}

ServeStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

ServeEvent& Scheduler::event_for(Seq& s) {
  auto it = pending_index_.find(s.id);
  if (it != pending_index_.end()) return pending_[it->second];
  pending_index_[s.id] = pending_.size();
  pending_.emplace_back();
  pending_.back().id = s.id;
  return pending_.back();
}

void Scheduler::finish(Seq& s, ServeEvent& ev, const std::string& code, const std::string& message) {
  s.done = true;
  ev.done = true;
  ev.code = code;
  ev.message = message;
  if (!code.empty()) {
    ev.tokens.clear();
    ev.hidden.clear();
    ev.fed = 0;
    // A failed eval leaves its session as it was; a generation's session is its own.
    if (!s.generate() && s.req.session->length() > s.start_length) s.req.session->truncate(s.start_length);
  }
  if (s.generate() && !(s.req.keep_session && code.empty())) s.req.session->release();  // generate() owns its session: free the KV cache now
}

// Samples s.ready; records the token or the end of the generation in ev.
void Scheduler::sample(Seq& s, ServeEvent& ev) {
  const int64_t vocab = model_->config().vocab;
  const double u = s.rng->next_double();
  double lse = 0;
  if (s.req.logprobs) {
    // log-sum-exp of the unbiased logits (sample_biased adds the bias in place).
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, s.ready[size_t(i)]);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(s.ready[size_t(i)]) - mx);
    lse = double(mx) + std::log(sum);
  }
  const float* raw = s.ready.data();
  std::vector<float> unbiased;
  if (s.req.logprobs) unbiased.assign(s.ready.begin(), s.ready.end());  // sampling edits ready in place
  if (!unbiased.empty()) raw = unbiased.data();
  const int32_t token = sample_biased(s.ready.data(), vocab, s.req.logit_bias.empty() ? nullptr : s.req.logit_bias.data(),
                                      s.req.sampling, u);
  s.has_logits = false;
  s.resumed = false;
  s.paused = false;
  const float token_logprob = s.req.logprobs ? float(double(raw[token]) - lse) : 0.f;
  if (std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), token) != s.req.stop_ids.end()) {
    ev.finish = "eos";
    finish(s, ev, "", "");
    return;
  }
  ev.tokens.push_back(token);
  if (s.req.logprobs) ev.logprobs.push_back(token_logprob);
  if (++s.generated >= s.req.max_tokens) {
    ev.finish = "maxTokens";
    finish(s, ev, "", "");
    return;
  }
  s.next_token = token;
}

void Scheduler::loop() {
  for (;;) {
    std::unordered_set<uint64_t> cancels;
    std::unordered_map<uint64_t, std::optional<std::vector<float>>> resumes;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !incoming_.empty() || !cancels_.empty() || !resumes_.empty() || runnable_; });
      if (stop_) return;
      for (auto& s : incoming_) active_.push_back(std::move(s));
      incoming_.clear();
      cancels.swap(cancels_);
      resumes.swap(resumes_);
    }
    pending_.clear();
    pending_index_.clear();
    for (auto& s : active_) {
      if (cancels.count(s->id)) {
        const int64_t total = int64_t(s->req.tokens.size());
        finish(*s, event_for(*s), "ERR_ABORTED",
               s->prefilling() ? "cancelled during prefill (" + std::to_string(s->fed) + " of " + std::to_string(total) +
                                     " input tokens fed)"
                               : "cancelled after " + std::to_string(s->generated) + " generated tokens");
        continue;
      }
      auto r = resumes.find(s->id);
      if (r != resumes.end() && s->waiting()) {
        if (r->second) s->req.logit_bias = std::move(*r->second);
        s->resumed = true;
      }
    }
    // A memory-mapped checkpoint that changed size under us would fault on the
    // next read (SIGBUS): fail everything instead, and refuse new work.
    std::string broken;
    for (const auto& f : model_->weights().storage.files)
      if (f->changed()) broken = f->path() + " changed size on disk while it was memory-mapped; reload the model";
    if (!broken.empty()) {
      for (auto& s : active_)
        if (!s->done) finish(*s, event_for(*s), "ERR_CHECKPOINT_CHANGED", broken);
    } else {
      try {
        iterate();
      } catch (const std::exception& e) {
        // Not expected (requests are validated on admission): fail what was running.
        const Error* de = dynamic_cast<const Error*>(&e);
        const bool oom = dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
        for (auto& s : active_)
          if (!s->done)
            finish(*s, event_for(*s), de ? de->code() : oom ? "ERR_OUT_OF_MEMORY" : "ERR_NATIVE", e.what());
      }
    }
    bool any_events = !pending_.empty();
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!broken.empty()) broken_ = broken;
      for (auto& s : active_)
        if (s->done) busy_.erase(s->req.session.get());
      for (auto& ev : pending_) out_.push_back(std::move(ev));
      active_.erase(std::remove_if(active_.begin(), active_.end(), [](const auto& s) { return s->done; }),
                    active_.end());
      runnable_ = std::any_of(active_.begin(), active_.end(), [](const auto& s) { return !s->waiting(); });
      stats_.active = int64_t(active_.size() + incoming_.size());
    }
    if (any_events) notify_();
  }
}

void Scheduler::iterate() {
  const ModelConfig& c = model_->config();
  ThreadPool& pool = ThreadPool::global();

  // 1. Stepwise sequences that were resumed sample their waiting logits first.
  for (auto& s : active_)
    if (!s->done && s->has_logits && s->resumed) {
      ServeEvent& ev = event_for(*s);
      try {
        sample(*s, ev);
      } catch (const Error& e) {
        finish(*s, ev, e.code(), e.what());
      }
    }

  // 2. The batch: every decoding sequence, then whole prefill chunks FIFO.
  struct Item {
    Seq* seq;
    const int32_t* tokens;
    int64_t n;
    bool produces_logits;  // the last chunk of an input, or a decode token
  };
  std::vector<Item> items;
  bool decoding = false;
  for (auto& s : active_) {
    if (s->done) continue;
    if (s->next_token >= 0) items.push_back({s.get(), &s->next_token, 1, true});
    decoding = decoding || (s->generate() && !s->prefilling());  // decoding, or waiting for its hook
  }
  // While others decode, one chunk; otherwise a full pass of prefill.
  const int64_t budget = decoding ? chunk_ : std::max(chunk_, Transformer::kMaxRowsPerPass);
  int64_t used = 0;
  for (auto& s : active_) {
    if (s->done || !s->prefilling()) continue;
    // Whole chunks from the input's start; several consecutive chunks of one
    // input form one segment (a session appears once per step). Chunks are
    // multiples of 4 rows, the attention kernel's row grouping, so how chunks
    // are grouped does not change any result.
    const int64_t left = int64_t(s->req.tokens.size()) - s->fed;
    int64_t n = left <= budget - used ? left : (budget - used) / chunk_ * chunk_;
    if (n == 0 && used == 0) n = std::min(chunk_, left);
    if (n == 0) break;
    items.push_back({s.get(), s->req.tokens.data() + s->fed, n, n == left});
    used += n;
    if (used >= budget) break;
  }
  if (items.empty()) return;

  // 3. One step per group of compatible options (adapter on/off, every row's
  // logits or only the last); hidden states: the union of what the group wants.
  std::map<std::pair<bool, bool>, std::vector<size_t>> groups;
  for (size_t i = 0; i < items.size(); ++i) {
    const ServeRequest& q = items[i].seq->req;
    const bool all = q.kind == ServeRequest::Kind::Eval && q.logits == LogitsMode::All;
    groups[{q.use_adapter, all}].push_back(i);
  }
  int64_t rows = 0;
  for (const Item& it : items) rows += it.n;
  std::vector<Seq*> to_sample;
  for (const auto& [key, members] : groups) {
    StepOptions opts;
    opts.use_adapter = key.first;
    opts.logits = key.second ? LogitsMode::All : LogitsMode::Last;
    std::vector<int32_t> capture;
    for (size_t i : members) capture.insert(capture.end(), items[i].seq->req.capture.begin(), items[i].seq->req.capture.end());
    std::sort(capture.begin(), capture.end());
    capture.erase(std::unique(capture.begin(), capture.end()), capture.end());
    opts.capture = capture;
    std::vector<StepSegment> segs;
    for (size_t i : members) segs.push_back({items[i].seq->req.session.get(), items[i].tokens, items[i].n});
    std::vector<SegmentOutput> out;
    try {
      out = model_->step(segs, opts);
    } catch (const std::exception& e) {
      const Error* de = dynamic_cast<const Error*>(&e);
      for (size_t i : members) finish(*items[i].seq, event_for(*items[i].seq), de ? de->code() : "ERR_NATIVE", e.what());
      continue;
    }
    for (size_t m = 0; m < members.size(); ++m) {
      const Item& it = items[members[m]];
      Seq& s = *it.seq;
      const SegmentOutput& o = out[m];
      const bool was_decode = !s.prefilling();
      if (!was_decode) s.fed += it.n;
      if (was_decode) s.next_token = -1;
      // Hidden rows this request asked for, out of the group's union.
      const size_t hsz = size_t(c.hidden), n = size_t(it.n);
      auto rows_of = [&](int32_t idx) {
        const size_t u = size_t(std::lower_bound(capture.begin(), capture.end(), idx) - capture.begin());
        return o.hidden.data() + u * n * hsz;
      };
      if (s.generate()) {
        ServeEvent& ev = event_for(s);
        if (!s.req.capture.empty()) {
          // Append: an event may carry rows of several iterations' feeds? No:
          // one feed per iteration per sequence, so the event holds exactly these.
          ev.fed = it.n;
          ev.hidden.resize(s.req.capture.size() * n * hsz);
          for (size_t ci = 0; ci < s.req.capture.size(); ++ci)
            std::memcpy(ev.hidden.data() + ci * n * hsz, rows_of(s.req.capture[ci]), n * hsz * sizeof(float));
        } else {
          ev.fed = it.n;
        }
        if (it.produces_logits) {
          s.ready.assign(o.logits.begin(), o.logits.begin() + c.vocab);
          s.has_logits = true;
          if (s.pauses_here()) {
            ev.awaiting = true;
            s.paused = true;
          } else {
            to_sample.push_back(&s);
          }
        }
      } else {
        const int64_t total = int64_t(s.req.tokens.size());
        if (!s.req.capture.empty()) {
          if (s.hidden.empty()) s.hidden.resize(s.req.capture.size() * size_t(total) * hsz);
          const size_t row0 = size_t(s.fed - it.n);
          for (size_t ci = 0; ci < s.req.capture.size(); ++ci)
            std::memcpy(s.hidden.data() + (ci * size_t(total) + row0) * hsz, rows_of(s.req.capture[ci]),
                        n * hsz * sizeof(float));
        }
        if (s.req.logits == LogitsMode::All) s.logits.insert(s.logits.end(), o.logits.begin(), o.logits.end());
        else if (s.req.logits == LogitsMode::Last && it.produces_logits) s.logits = o.logits;
        if (s.fed == total) {
          ServeEvent& ev = event_for(s);
          ev.logits.swap(s.logits);
          ev.hidden.swap(s.hidden);
          ev.fed = total;
          finish(s, ev, "", "");
        }
      }
    }
  }

  // 4. Sample every sequence whose logits are ready, in parallel (the sampler's
  // buffers are thread-local). Events are created first: pending_ must not grow
  // while other threads hold references into it.
  std::vector<ServeEvent*> evs;
  for (Seq* s : to_sample) evs.push_back(&event_for(*s));
  std::vector<std::string> codes(to_sample.size()), messages(to_sample.size());
  std::vector<ServeEvent> local(to_sample.size());
  pool.parallel_for(int64_t(to_sample.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        sample(*to_sample[size_t(i)], local[size_t(i)]);
      } catch (const Error& err) {
        codes[size_t(i)] = err.code();
        messages[size_t(i)] = err.what();
      }
    }
  });
  for (size_t i = 0; i < to_sample.size(); ++i) {
    ServeEvent& ev = *evs[i];
    if (!codes[i].empty()) {
      finish(*to_sample[i], ev, codes[i], messages[i]);
      continue;
    }
    ev.tokens.insert(ev.tokens.end(), local[i].tokens.begin(), local[i].tokens.end());
    ev.logprobs.insert(ev.logprobs.end(), local[i].logprobs.begin(), local[i].logprobs.end());
    if (local[i].done) {
      ev.done = true;
      ev.finish = local[i].finish;
    }
  }

  std::lock_guard<std::mutex> lk(mu_);
  stats_.iterations += 1;
  stats_.max_batch_rows = std::max(stats_.max_batch_rows, rows);
}

}  // namespace dg
