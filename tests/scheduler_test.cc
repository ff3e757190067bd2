// The scheduler on its own, with sequences that never run a model: the token budget and the
// sequence cap, chunked prefill, priority order, preemption of the latest admission (and the
// preemption cap), and prefix hits at admission.
#include "engine/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include "engine/engine.h"

namespace nsa {
namespace {

struct Fixture {
  explicit Fixture(int32_t pages, SchedulerOptions o = {}) {
    KvCacheManager::Options c;
    c.num_pages = pages;
    c.nsa.compress_block = c.nsa.compress_stride = c.nsa.select_block = 16;
    cache = std::make_unique<KvCacheManager>(c);
    scheduler = std::make_unique<Scheduler>(o, cache.get());
  }
  Sequence* Add(int prompt, int priority = 0) {
    auto s = std::make_unique<Sequence>();
    s->id = static_cast<SeqId>(seqs.size());
    s->arrival = s->id;
    s->priority = priority;
    s->tokens.assign(prompt, static_cast<int>(s->id) * 1000 + 7);
    for (int i = 0; i < prompt; ++i) s->tokens[i] += i;  // distinct pages per sequence
    s->num_prompt = prompt;
    seqs.push_back(std::move(s));
    scheduler->AddWaiting(seqs.back().get());
    return seqs.back().get();
  }
  // Runs a step and "samples" one token for every sequence that completed its tokens.
  SchedulerOutput Step() {
    SchedulerOutput out = scheduler->Schedule();
    scheduler->Commit(out);
    for (const ScheduledSeq& e : out.seqs) {
      if (e.samples) e.seq->tokens.push_back(1);
    }
    cache->CheckInvariants();
    return out;
  }
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<Scheduler> scheduler;
  std::vector<std::unique_ptr<Sequence>> seqs;
};

TEST(SchedulerTest, BudgetChunksPrefillsAndDecodesGoFirst) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 32;
  Fixture f(100, o);
  Sequence* a = f.Add(50);
  SchedulerOutput s1 = f.Step();
  ASSERT_EQ(s1.seqs.size(), 1u);
  EXPECT_EQ(s1.seqs[0].slots.num_tokens, 32);
  EXPECT_FALSE(s1.seqs[0].samples);
  Sequence* b = f.Add(40);
  SchedulerOutput s2 = f.Step();  // a's last 18 tokens, then 14 of b
  ASSERT_EQ(s2.seqs.size(), 2u);
  EXPECT_EQ(s2.seqs[0].seq, a);
  EXPECT_EQ(s2.seqs[0].slots.num_tokens, 18);
  EXPECT_TRUE(s2.seqs[0].samples);
  EXPECT_EQ(s2.seqs[1].seq, b);
  EXPECT_EQ(s2.seqs[1].slots.num_tokens, 14);
  SchedulerOutput s3 = f.Step();  // a decodes one token, b continues
  EXPECT_EQ(s3.seqs[0].slots.num_tokens, 1);
  EXPECT_EQ(s3.seqs[1].slots.num_tokens, 26);
  EXPECT_EQ(s3.num_batched_tokens, 27);
}

TEST(SchedulerTest, SequenceCapAndPriority) {
  SchedulerOptions o;
  o.max_num_seqs = 2;
  Fixture f(100, o);
  Sequence* low = f.Add(5, 1);
  Sequence* first = f.Add(5, 0);
  Sequence* second = f.Add(5, 0);
  SchedulerOutput s = f.Step();
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(s.seqs[0].seq, first);
  EXPECT_EQ(s.seqs[1].seq, second);
  EXPECT_EQ(f.scheduler->num_waiting(), 1u);
  f.scheduler->Remove(first);
  s = f.Step();
  EXPECT_EQ(s.seqs.back().seq, low);
}

TEST(SchedulerTest, PreemptsTheLatestAdmissionAndCapsIt) {
  SchedulerOptions o;
  o.max_preemptions = 0;
  Fixture f(6, o);  // 96 tokens of room
  Sequence* a = f.Add(40);
  Sequence* b = f.Add(40);
  f.Step();  // both admitted, 3 pages each; each samples its 41st token
  std::vector<Sequence*> preempted;
  for (int i = 0; i < 12 && preempted.empty(); ++i) {
    SchedulerOutput out = f.Step();
    preempted = out.preempted;
  }
  // a reached token 48 first and needed a fourth page: b, admitted last, made room.
  ASSERT_EQ(preempted, std::vector<Sequence*>{b});
  EXPECT_EQ(b->num_preemptions, 1);
  EXPECT_EQ(a->num_preemptions, 0);
  EXPECT_FALSE(b->running);
  EXPECT_EQ(b->num_computed, 0);
  EXPECT_EQ(b->tokens.size(), 41u + 8u);  // its tokens are kept for the recompute
  // Past the cap (0 here) a preempted sequence is refused at its next admission.
  SchedulerOutput out = f.Step();
  EXPECT_EQ(out.refused, std::vector<Sequence*>{b});
  EXPECT_EQ(f.scheduler->num_waiting(), 0u);
}

TEST(SchedulerTest, AdmissionUsesPrefixHits) {
  Fixture f(100);
  Sequence* a = f.Add(40);
  f.Step();
  auto b = std::make_unique<Sequence>();
  b->id = 99;
  b->arrival = 99;
  b->tokens = a->tokens;
  b->tokens.resize(40);
  b->num_prompt = 40;
  f.scheduler->AddWaiting(b.get());
  SchedulerOutput s = f.Step();
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(s.seqs[1].slots.first_token, 32);  // two full pages were hits
  EXPECT_EQ(b->cached_tokens, 32);
  f.scheduler->Remove(b.get());
}

}  // namespace
}  // namespace nsa
