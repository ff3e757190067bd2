// Iteration-level scheduling: every step combines the running sequences (decodes and unfinished
// prefill chunks, oldest admission first) with chunks of waiting prompts, under a token budget
// (max_num_batched_tokens) and a sequence cap (max_num_seqs). When the page pool runs dry the
// most recently admitted running sequence is preempted by recompute: its pages are freed and it
// waits again at its original place in the queue. Waiting order: priority (lower first), then
// arrival. Pure host code, no CUDA; single-threaded (the engine loop).
#pragma once

#include <cstdint>
#include <set>
#include <vector>

#include "engine/kv_cache/kv_cache_manager.h"
#include "engine/scheduler/sequence.h"

namespace nsa {

struct SchedulerOptions {
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
  int max_preemptions = 8;  // a sequence preempted more often than this is failed
};

struct ScheduledSeq {
  Sequence* seq;
  StepSlots slots;  // tokens [first_token, first_token + num_tokens) and the page copies
  bool samples;  // the step computes its last token: sample the next one
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;
  std::vector<Sequence*> preempted;  // went back to waiting this step
  std::vector<Sequence*> refused;  // preempted too often: the engine fails them
  int64_t num_batched_tokens = 0;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, KvCacheManager* cache);

  void AddWaiting(Sequence* seq);
  // A sequence that shares its parent's pages (n > 1) and runs from now on.
  void AddRunning(Sequence* seq);
  // Finished or cancelled: frees its pages and forgets it.
  void Remove(Sequence* seq);

  SchedulerOutput Schedule();
  // After the runner ran `out`: commits the tokens and advances num_computed.
  void Commit(const SchedulerOutput& out);

  size_t num_running() const { return running_.size(); }
  size_t num_waiting() const { return waiting_.size(); }
  int64_t queued_prompt_tokens() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct WaitingOrder {
    bool operator()(const Sequence* a, const Sequence* b) const {
      if (a->priority != b->priority) return a->priority < b->priority;
      if (a->arrival != b->arrival) return a->arrival < b->arrival;
      return a->id < b->id;
    }
  };
  void Preempt(Sequence* seq, SchedulerOutput& out);

  SchedulerOptions options_;
  KvCacheManager* cache_;
  std::vector<Sequence*> running_;  // admission order
  std::set<Sequence*, WaitingOrder> waiting_;
};

}  // namespace nsa
