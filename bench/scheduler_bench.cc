// Host overhead of one engine step with N running sequences (target: <= 200 us at 256):
//   BM_SchedulerStep     Schedule + Commit + one new token per sequence (the loop's bookkeeping)
//   BM_SampleGreedy/TopP one sequence's sampling over a 32,000-token vocabulary
//   build/bench/scheduler_bench
#include <benchmark/benchmark.h>

#include <random>

#include "engine/scheduler/scheduler.h"

namespace nsa {
namespace {

void BM_SchedulerStep(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  KvCacheManager::Options c;
  c.num_pages = n * 64;
  c.nsa = NsaParams{};  // l' = 64
  KvCacheManager cache(c);
  SchedulerOptions o;
  o.max_num_seqs = n;
  o.max_num_batched_tokens = int64_t{n} * 1024;
  Scheduler scheduler(o, &cache);
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::mt19937 rng(1);
  for (int i = 0; i < n; ++i) {
    auto s = std::make_unique<Sequence>();
    s->id = i;
    s->arrival = i;
    s->tokens.resize(500);
    for (int& t : s->tokens) t = static_cast<int>(rng() % 32000);
    s->num_prompt = 500;
    scheduler.AddWaiting(s.get());
    seqs.push_back(std::move(s));
  }
  auto step = [&] {
    SchedulerOutput out = scheduler.Schedule();
    scheduler.Commit(out);
    for (const ScheduledSeq& e : out.seqs) {
      if (e.samples) e.seq->tokens.push_back(7);
    }
    return out.seqs.size();
  };
  step();  // prefill everything once
  for (auto _ : state) {
    const size_t scheduled = step();
    if (scheduled != static_cast<size_t>(n)) {
      state.SkipWithError(("scheduled " + std::to_string(scheduled) + " of " + std::to_string(n)).c_str());
      break;
    }
  }
  state.counters["seqs"] = n;
}
// A fixed count keeps every sequence within its 64 pages (500 + 2,000 tokens), so no step preempts.
BENCHMARK(BM_SchedulerStep)->Arg(256)->Arg(1024)->Iterations(2000)->Unit(benchmark::kMicrosecond);

void Sample(benchmark::State& state, float temperature, float top_p) {
  std::vector<float> logits(32000);
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 3);
  for (float& l : logits) l = nd(rng);
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  Sampler sampler(3);
  for (auto _ : state) benchmark::DoNotOptimize(sampler.Sample(logits, p, 32000).token);
}
void BM_SampleGreedy(benchmark::State& state) { Sample(state, 0.0f, 1.0f); }
void BM_SampleTopP(benchmark::State& state) { Sample(state, 0.8f, 0.95f); }
BENCHMARK(BM_SampleGreedy)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SampleTopP)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace nsa

BENCHMARK_MAIN();
