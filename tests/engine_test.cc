// The engine end to end on the CPU backend with the tiny test model: streaming, seeded
// determinism independent of batch composition and arrival order, chunked prefill, preemption
// and resume, n > 1, stop conditions, cancellation, deadlines, validation, admission limits, and
// a randomised storm of arrivals, cancellations and memory pressure.
#include "engine/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

#include "engine/runner/cpu_runner.h"
#include "models/progress.h"

namespace nsa {
namespace {

using ::testing::HasSubstr;
const std::string kModel = std::string(NSA_TEST_MODELS) + "/tiny";

// The CPU runner behind the device-sampling interface (ExecuteKeepingLogits + SampleLast), with
// the draws made by SampleWithUniform: the engine's device path on the CPU, where it must give
// exactly the host path's tokens (both draw the same uniforms from each sequence's generator).
class KeepLogitsRunner : public ModelRunner {
 public:
  explicit KeepLogitsRunner(std::unique_ptr<ModelRunner> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  int32_t num_pages() const override { return inner_->num_pages(); }
  std::string Describe() const override { return "cpu, sampling through SampleLast"; }
  absl::StatusOr<std::vector<std::vector<float>>> Execute(std::span<const RunnerSeq> seqs) override {
    return absl::InternalError("the engine must use ExecuteKeepingLogits when SamplesOnDevice()");
  }
  bool SamplesOnDevice() const override { return true; }
  absl::Status ExecuteKeepingLogits(std::span<const RunnerSeq> seqs) override {
    auto logits = inner_->Execute(seqs);
    if (!logits.ok()) return logits.status();
    kept_ = std::move(*logits);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<SampleResult>> SampleLast(std::span<const SampleDraw> draws) override {
    std::vector<SampleResult> out;
    for (const SampleDraw& d : draws) {
      ++draws_;
      out.push_back(SampleWithUniform(kept_.at(d.logits_row), *d.params, d.vocab_limit, d.history, d.banned, d.num_top, d.u));
    }
    return out;
  }
  int draws() const { return draws_; }

 private:
  std::unique_ptr<ModelRunner> inner_;
  std::vector<std::vector<float>> kept_;
  int draws_ = 0;
};

std::unique_ptr<Engine> MakeEngine(EngineOptions options = {}, int32_t pages = 512, bool keep_logits = false) {
  Progress::SetEnabled(false);
  auto model = NsaModel::Load(kModel, false);
  EXPECT_TRUE(model.ok()) << model.status();
  std::string error;
  auto tokenizer = Tokenizer::Load(kModel + "/tokenizer.model", &error);
  EXPECT_NE(tokenizer, nullptr) << error;
  if (options.seed == 0) options.seed = 1234;
  std::unique_ptr<ModelRunner> runner = std::make_unique<CpuRunner>(std::move(*model), pages);
  if (keep_logits) runner = std::make_unique<KeepLogitsRunner>(std::move(runner));
  auto engine = Engine::Create(options, std::move(runner), std::move(tokenizer));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(*engine);
}

struct Completion {
  std::vector<int> tokens;
  std::string text;
  std::vector<TokenLogprobs> logprobs;
  std::optional<Final> final;
  int deltas = 0;
};

// Reads a handle to the end; checks that each completion gets exactly one Final, last.
std::map<int, Completion> Collect(RequestHandle& h) {
  std::map<int, Completion> out;
  while (auto e = h.Next()) {
    if (auto* d = std::get_if<Delta>(&*e)) {
      Completion& c = out[d->index];
      EXPECT_FALSE(c.final.has_value()) << "delta after the final";
      c.tokens.insert(c.tokens.end(), d->token_ids.begin(), d->token_ids.end());
      c.text += d->text;
      c.logprobs.insert(c.logprobs.end(), d->logprobs.begin(), d->logprobs.end());
      ++c.deltas;
    } else {
      const Final& f = std::get<Final>(*e);
      EXPECT_FALSE(out[f.index].final.has_value()) << "two finals for completion " << f.index;
      out[f.index].final = f;
    }
  }
  return out;
}

Request Text(const std::string& text, int max_tokens, float temperature = 0.0f, uint64_t seed = 0) {
  Request r;
  r.text = text;
  r.stop.max_tokens = max_tokens;
  r.stop.ignore_eos = true;
  r.sampling.temperature = temperature;
  if (seed != 0) {
    r.has_seed = true;
    r.sampling.seed = seed;
  }
  return r;
}

Completion RunOne(Engine& e, Request r) {
  auto h = e.Submit(std::move(r));
  EXPECT_TRUE(h.ok()) << h.status();
  auto out = Collect(**h);
  EXPECT_EQ(out.size(), 1u);
  return out[0];
}

TEST(EngineTest, StreamsTokensAndTextThenOneFinal) {
  auto e = MakeEngine();
  Completion c = RunOne(*e, Text("Permission is hereby granted", 24));
  ASSERT_TRUE(c.final);
  EXPECT_EQ(c.final->reason, FinishReason::kLength);
  EXPECT_EQ(c.tokens.size(), 24u);
  EXPECT_EQ(c.final->usage.completion_tokens, 24);
  EXPECT_EQ(c.final->usage.prompt_tokens, static_cast<int64_t>(e->tokenizer().Encode("Permission is hereby granted", true).size()));
  EXPECT_GE(c.deltas, 20);  // streamed, not at the end
  // The streamed text is the decoded output.
  std::vector<int> prompt = e->tokenizer().Encode("Permission is hereby granted", true);
  std::vector<int> all = prompt;
  all.insert(all.end(), c.tokens.begin(), c.tokens.end());
  EXPECT_EQ(e->tokenizer().Decode(prompt) + c.text, e->tokenizer().Decode(all));
  EXPECT_TRUE(c.final->timings.first_token_set);
  EXPECT_LE(c.final->timings.arrival, c.final->timings.first_token);
  EXPECT_LE(c.final->timings.first_token, c.final->timings.done);
  e->CheckInvariants();
  EXPECT_EQ(e->GetLoad().kv_cache_usage, 0.0);
}

TEST(EngineTest, SeededOutputIsIndependentOfBatchAndArrivalOrder) {
  Request target = Text("The license grants", 30, 1.0f, 77);
  target.sampling.top_p = 0.9f;
  Completion alone = RunOne(*MakeEngine(), target);
  ASSERT_EQ(alone.tokens.size(), 30u);

  for (uint64_t shuffle : {1, 2, 3}) {
    EngineOptions options;
    options.scheduler.max_num_batched_tokens = shuffle == 3 ? 7 : 2048;  // chunked prefills in the mix
    auto e = MakeEngine(options);
    std::vector<Request> batch;
    for (int i = 0; i < 10; ++i) {
      batch.push_back(Text(std::string(i * 3 + 1, 'a' + i) + " copyright notice", 10 + i, 0.8f, 1000 + i));
    }
    batch.push_back(target);
    std::mt19937 rng(shuffle);
    std::shuffle(batch.begin(), batch.end(), rng);
    std::vector<std::unique_ptr<RequestHandle>> handles;
    size_t target_at = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].sampling.seed == 77) target_at = i;
      handles.push_back(std::move(*e->Submit(batch[i])));
    }
    for (size_t i = 0; i < handles.size(); ++i) {
      auto out = Collect(*handles[i]);
      if (i == target_at) {
        EXPECT_EQ(out[0].tokens, alone.tokens) << "shuffle " << shuffle;
      }
    }
  }
}

TEST(EngineTest, ChunkedPrefillGivesTheSameTokens) {
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "word" + std::to_string(i) + " ";
  Completion whole = RunOne(*MakeEngine(), Text(prompt, 20));
  for (int budget : {1, 5, 16, 33}) {
    EngineOptions options;
    options.scheduler.max_num_batched_tokens = budget;
    EXPECT_EQ(RunOne(*MakeEngine(options), Text(prompt, 20)).tokens, whole.tokens) << "budget " << budget;
  }
}

TEST(EngineTest, PreemptionAndResumeGiveTheSameTokens) {
  // Each request needs up to 10 pages of 16 tokens; 24 pages hold two: the rest are preempted.
  std::vector<Request> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(Text("Request number " + std::to_string(i), 140, 0.7f, 50 + i));
  std::vector<Completion> alone;
  for (const Request& r : requests) alone.push_back(RunOne(*MakeEngine(), r));

  EngineOptions options;
  options.scheduler.max_preemptions = 1000;
  auto e = MakeEngine(options, 24);
  std::vector<std::unique_ptr<RequestHandle>> handles;
  for (const Request& r : requests) handles.push_back(std::move(*e->Submit(r)));
  int preemptions = 0;
  for (size_t i = 0; i < handles.size(); ++i) {
    auto out = Collect(*handles[i]);
    EXPECT_EQ(out[0].tokens, alone[i].tokens) << "request " << i;
    preemptions += out[0].final->num_preemptions;
  }
  EXPECT_GT(preemptions, 0) << "the pool was meant to run dry";
  e->CheckInvariants();
  EXPECT_EQ(e->GetLoad().kv_cache_usage, 0.0);
}

TEST(EngineTest, NCompletionsShareThePromptAndReproduce) {
  auto e = MakeEngine();
  Request r = Text("Redistribution and use in source", 12, 1.0f, 9);
  r.n = 3;
  auto out = Collect(**e->Submit(r));
  ASSERT_EQ(out.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(out[i].final);
    EXPECT_EQ(out[i].final->index, i);
    EXPECT_EQ(out[i].tokens.size(), 12u);
  }
  EXPECT_NE(out[0].tokens, out[1].tokens);
  // Completion 0 is the n = 1 run with the same seed; the whole set reproduces.
  Request one = r;
  one.n = 1;
  EXPECT_EQ(RunOne(*e, one).tokens, out[0].tokens);
  auto again = Collect(**e->Submit(r));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(again[i].tokens, out[i].tokens);
  e->CheckInvariants();
}

TEST(EngineTest, DeviceSamplingPathGivesTheHostPathsTokens) {
  // n = 3 forks, penalties, bias, min_tokens bans, top-k/top-p/min-p and logprobs, several
  // requests in one batch: the same tokens, logprobs and finish reasons either way.
  auto requests = [] {
    std::vector<Request> rs;
    Request a = Text("Permission is hereby granted", 20, 0.9f, 7);
    a.n = 3;
    a.sampling.top_p = 0.9f;
    a.sampling.presence_penalty = 0.5f;
    a.sampling.frequency_penalty = 0.3f;
    a.logprobs = 2;
    rs.push_back(a);
    Request b = Text("THE SOFTWARE IS PROVIDED", 16, 1.1f, 8);
    b.sampling.top_k = 20;
    b.sampling.min_p = 0.05f;
    b.sampling.repetition_penalty = 1.3f;
    b.sampling.logit_bias = {{5, 3.0f}, {9, -100.0f}};
    b.stop.ignore_eos = false;
    b.stop.min_tokens = 5;
    rs.push_back(b);
    rs.push_back(Text("without warranty", 12));  // greedy
    return rs;
  };
  auto run = [&](bool keep) {
    auto e = MakeEngine({}, 512, keep);
    std::vector<std::unique_ptr<RequestHandle>> handles;
    for (Request& r : requests()) {
      auto h = e->Submit(std::move(r));
      EXPECT_TRUE(h.ok()) << h.status();
      handles.push_back(std::move(*h));
    }
    std::vector<std::map<int, Completion>> out;
    for (auto& h : handles) out.push_back(Collect(*h));
    return out;
  };
  const auto host = run(false), device = run(true);
  ASSERT_EQ(host.size(), device.size());
  int completions = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    ASSERT_EQ(host[i].size(), device[i].size()) << "request " << i;
    for (const auto& [index, c] : host[i]) {
      const Completion& d = device[i].at(index);
      EXPECT_EQ(c.tokens, d.tokens) << "request " << i << " completion " << index;
      ASSERT_EQ(c.logprobs.size(), d.logprobs.size());
      for (size_t t = 0; t < c.logprobs.size(); ++t) EXPECT_EQ(c.logprobs[t].logprob, d.logprobs[t].logprob);
      ASSERT_TRUE(c.final && d.final);
      EXPECT_EQ(c.final->reason, d.final->reason);
      ++completions;
    }
  }
  EXPECT_EQ(completions, 5);
  EXPECT_EQ(host[0].size(), 3u);
}

TEST(EngineTest, StopStringSplitAcrossTokens) {
  auto e = MakeEngine();
  Completion free_run = RunOne(*e, Text("THE SOFTWARE IS PROVIDED", 40));
  // A stop string that starts inside one token's text and ends inside a later one.
  std::vector<int> prompt = e->tokenizer().Encode("THE SOFTWARE IS PROVIDED", true);
  std::string before;
  size_t cut = 0;
  for (size_t i = 0; i < free_run.tokens.size() && cut == 0; ++i) {
    std::vector<int> upto = prompt;
    upto.insert(upto.end(), free_run.tokens.begin(), free_run.tokens.begin() + i + 1);
    const std::string t = e->tokenizer().Decode(upto).substr(e->tokenizer().Decode(prompt).size());
    if (t.size() >= 8 && i >= 3) cut = t.size();
  }
  ASSERT_GT(cut, 6u);
  const std::string stop = free_run.text.substr(cut - 5, 4);  // straddles a token boundary
  const size_t at = free_run.text.find(stop);
  for (bool include : {false, true}) {
    Request r = Text("THE SOFTWARE IS PROVIDED", 40);
    r.stop.stop = {stop};
    r.stop.include_stop_in_output = include;
    Completion c = RunOne(*e, r);
    EXPECT_EQ(c.final->reason, FinishReason::kStopSequence);
    EXPECT_EQ(c.final->matched_stop, stop);
    EXPECT_EQ(c.text, free_run.text.substr(0, at + (include ? stop.size() : 0)));
  }
}

TEST(EngineTest, EosStopTokensAndMinTokens) {
  auto e = MakeEngine();
  const int eos = e->config().eos_token_id;
  Request r = Text("x", 20);
  r.stop.ignore_eos = false;
  r.sampling.logit_bias = {{eos, 100.0f}};
  Completion c = RunOne(*e, r);
  EXPECT_EQ(c.final->reason, FinishReason::kEos);
  EXPECT_EQ(c.tokens, std::vector<int>{eos});
  r.stop.min_tokens = 5;
  c = RunOne(*e, r);
  EXPECT_EQ(c.final->reason, FinishReason::kEos);
  EXPECT_EQ(c.tokens.size(), 6u);
  EXPECT_EQ(c.final->usage.completion_tokens, 6);

  Request s = Text("x", 20);
  s.sampling.logit_bias = {{500, 100.0f}};
  s.stop.stop_token_ids = {500};
  c = RunOne(*e, s);
  EXPECT_EQ(c.final->reason, FinishReason::kStopToken);
  EXPECT_EQ(c.final->matched_stop, "500");
  EXPECT_EQ(c.tokens, std::vector<int>{500});
}

TEST(EngineTest, LogprobsPerToken) {
  auto e = MakeEngine();
  Request r = Text("Hello", 5);
  r.logprobs = 3;
  Completion c = RunOne(*e, r);
  ASSERT_EQ(c.logprobs.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(c.logprobs[i].token, c.tokens[i]);
    ASSERT_EQ(c.logprobs[i].top.size(), 3u);
    EXPECT_EQ(c.logprobs[i].top[0].token, c.tokens[i]);  // greedy: the chosen token is the top one
    EXPECT_LE(c.logprobs[i].logprob, 0.0f);
  }
}

TEST(EngineTest, CancelFreesPagesAndDeadlines) {
  auto e = MakeEngine();
  auto h = std::move(*e->Submit(Text("a long story", 3000)));
  std::optional<Event> first = h->Next();
  ASSERT_TRUE(first && std::holds_alternative<Delta>(*first));
  EXPECT_GT(e->GetLoad().kv_cache_usage, 0.0);
  h->Abort();
  std::optional<Final> final;
  while (auto ev = h->Next()) {
    if (auto* f = std::get_if<Final>(&*ev)) final = *f;
  }
  ASSERT_TRUE(final);
  EXPECT_EQ(final->reason, FinishReason::kCancelled);
  EXPECT_TRUE(e->Drain(std::chrono::seconds(5)));
  EXPECT_EQ(e->GetLoad().kv_cache_usage, 0.0);

  auto e2 = MakeEngine();
  Request late = Text("too late", 10);
  late.deadline = Clock::now() - std::chrono::seconds(1);
  Completion c = RunOne(*e2, late);
  EXPECT_EQ(c.final->reason, FinishReason::kTimeLimit);
  EXPECT_TRUE(c.final->before_start);
  EXPECT_TRUE(c.tokens.empty());
  // Dropping a handle cancels too.
  { auto dropped = e2->Submit(Text("dropped", 3000)); }
  EXPECT_TRUE(e2->Drain(std::chrono::seconds(5)));
  EXPECT_EQ(e2->GetLoad().kv_cache_usage, 0.0);
  EXPECT_EQ(e2->Submit(Text("after drain", 5)).status().code(), absl::StatusCode::kUnavailable);
}

TEST(EngineTest, ValidationMessagesAndAdmissionLimits) {
  EngineOptions options;
  options.max_queued_prompt_tokens = 100;
  auto e = MakeEngine(options);
  auto message = [&](Request r) { return std::string(e->Submit(std::move(r)).status().message()); };
  Request r;
  r.text = "";
  r.add_bos = false;
  EXPECT_THAT(message(r), HasSubstr("prompt is empty"));
  r = Request();
  r.tokens = {1, 5, 999999};
  EXPECT_THAT(message(r), HasSubstr("prompt token id 999999 is outside the vocabulary"));
  r = Text("hi", 5000);
  EXPECT_THAT(message(r), HasSubstr("This model's maximum context length is 4096 tokens. However, you requested"));
  r = Text("hi", 5);
  r.n = 100;
  EXPECT_THAT(message(r), HasSubstr("n must be in [1, 16]"));
  r = Text("hi", 5);
  r.logprobs = 50;
  EXPECT_THAT(message(r), HasSubstr("logprobs must be in [0, 20]"));
  r = Text("hi", 5);
  r.stop.min_tokens = 9;
  EXPECT_THAT(message(r), HasSubstr("min_tokens (9) must not exceed max_tokens (5)"));
  r = Text("hi", 5);
  r.stop.stop = {""};
  EXPECT_THAT(message(r), HasSubstr("stop strings must not be empty"));
  r = Text("hi", 5);
  r.sampling.top_p = 2;
  EXPECT_THAT(message(r), HasSubstr("top_p"));
  r = Request();
  r.tokens = std::vector<int>(150, 7);
  r.stop.max_tokens = 1;
  auto status = e->Submit(r).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("queued prompt tokens"));
}

TEST(EngineTest, PoolThatCannotHoldTheContextIsRefusedAtStartUp) {
  auto model = NsaModel::Load(kModel, false);
  std::string error;
  EngineOptions options;
  options.max_model_len = 4096;
  auto engine = Engine::Create(options, std::make_unique<CpuRunner>(std::move(*model), 10),
                               Tokenizer::Load(kModel + "/tokenizer.model", &error));
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("less than max_model_len"));
}

// Random arrivals from several threads, random cancellations (abort, dropped handles, deadlines)
// and a pool small enough to preempt: every request ends exactly once, nothing leaks.
TEST(EngineTest, StormKeepsEveryInvariant) {
  EngineOptions options;
  options.scheduler.max_num_seqs = 8;
  options.scheduler.max_num_batched_tokens = 64;
  options.scheduler.max_preemptions = 1000;
  auto e = MakeEngine(options, 40);
  std::atomic<int> finals{0}, completions{0}, cancelled{0};
  auto client = [&](int thread) {
    std::mt19937 rng(thread);
    for (int i = 0; i < 12; ++i) {
      Request r = Text(std::string(1 + rng() % 60, 'a' + thread), 1 + static_cast<int>(rng() % 80), 1.0f, 1 + rng());
      r.n = 1 + static_cast<int>(rng() % 2);
      const int mode = static_cast<int>(rng() % 5);
      if (mode == 1) r.deadline = Clock::now() + std::chrono::milliseconds(rng() % 50);
      auto h = e->Submit(r);
      ASSERT_TRUE(h.ok()) << h.status();
      completions += r.n;
      if (mode == 2) continue;  // dropped at once: cancelled
      int seen = 0;
      std::map<int, int> final_count;
      while (auto ev = (*h)->Next()) {
        if (auto* f = std::get_if<Final>(&*ev)) {
          ++final_count[f->index];
          ++finals;
          cancelled += f->reason == FinishReason::kCancelled;
        } else if (mode == 3 && ++seen == 3) {
          (*h)->Abort();
        }
      }
      for (auto& [index, count] : final_count) EXPECT_EQ(count, 1);
      EXPECT_EQ(static_cast<int>(final_count.size()), r.n);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(client, t);
  for (auto& t : threads) t.join();
  EXPECT_TRUE(e->Drain(std::chrono::seconds(60)));
  e->CheckInvariants();
  const Load load = e->GetLoad();
  EXPECT_EQ(load.running, 0);
  EXPECT_EQ(load.waiting, 0);
  EXPECT_EQ(load.kv_cache_usage, 0.0);
  EXPECT_GT(cancelled.load(), 0);
}

}  // namespace
}  // namespace nsa
