#include "engine/scheduler/scheduler.h"

#include <algorithm>

#include "kernels/common/check.h"

namespace nsa {

Scheduler::Scheduler(const SchedulerOptions& options, KvCacheManager* cache) : options_(options), cache_(cache) {}

void Scheduler::AddWaiting(Sequence* seq) {
  seq->running = false;
  waiting_.insert(seq);
}

void Scheduler::AddRunning(Sequence* seq) {
  seq->running = true;
  running_.push_back(seq);
}

void Scheduler::Remove(Sequence* seq) {
  if (seq->running) {
    running_.erase(std::find(running_.begin(), running_.end(), seq));
    cache_->Free(seq->id);
  } else {
    waiting_.erase(seq);
  }
  seq->running = false;
}

int64_t Scheduler::queued_prompt_tokens() const {
  int64_t n = 0;
  for (const Sequence* s : waiting_) n += s->num_to_compute();
  return n;
}

void Scheduler::Preempt(Sequence* seq, SchedulerOutput& out) {
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  cache_->Free(seq->id);
  seq->num_computed = 0;
  ++seq->num_preemptions;
  AddWaiting(seq);
  out.preempted.push_back(seq);
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;
  int64_t budget = options_.max_num_batched_tokens;

  // Running sequences first, oldest admission first.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* s = running_[i];
    const int64_t n = std::min(s->num_to_compute(), budget);
    NSA_CHECK(n > 0, "running sequence %lld has nothing to compute", static_cast<long long>(s->id));
    std::optional<StepSlots> slots = cache_->Reserve(s->id, n);
    while (!slots && running_.back() != s) {
      Preempt(running_.back(), out);
      slots = cache_->Reserve(s->id, n);
    }
    if (!slots) {  // s itself is the most recent admission
      Preempt(s, out);
      continue;
    }
    out.seqs.push_back({s, std::move(*slots), s->num_computed + n == static_cast<int64_t>(s->tokens.size())});
    budget -= n;
    ++i;
  }

  // Then waiting prompts, unless this step had to preempt (the pool is under pressure).
  while (budget > 0 && out.preempted.empty() && !waiting_.empty()) {
    Sequence* s = *waiting_.begin();
    const int n_completions = s->ever_scheduled ? 1 : std::max(1, s->n);
    if (static_cast<int64_t>(running_.size()) + n_completions > options_.max_num_seqs) break;
    if (s->num_preemptions > options_.max_preemptions) {
      waiting_.erase(waiting_.begin());
      out.refused.push_back(s);
      continue;
    }
    const int64_t hit = cache_->AddSequence(s->id, s->tokens);
    s->num_computed = hit;
    const int64_t n = std::min(s->num_to_compute(), budget);
    std::optional<StepSlots> slots = cache_->Reserve(s->id, n);
    if (!slots) {
      cache_->Free(s->id);
      s->num_computed = 0;
      break;
    }
    if (!s->ever_scheduled) s->cached_tokens = hit;
    waiting_.erase(waiting_.begin());
    AddRunning(s);
    out.seqs.push_back({s, std::move(*slots), s->num_computed + n == static_cast<int64_t>(s->tokens.size())});
    budget -= n;
  }
  out.num_batched_tokens = options_.max_num_batched_tokens - budget;
  return out;
}

void Scheduler::Commit(const SchedulerOutput& out) {
  for (const ScheduledSeq& e : out.seqs) {
    Sequence* s = e.seq;
    const std::span<const int> tokens(s->tokens.data() + e.slots.first_token, e.slots.num_tokens);
    cache_->Commit(s->id, tokens);
    s->num_computed += e.slots.num_tokens;
  }
}

}  // namespace nsa
