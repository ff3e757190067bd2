// CPU reference speed (the embedded default's backend): decode tokens/s of one stream at a given
// context, and prefill tokens/s, for the tiny presets. Weights are written once to a temp dir.
//   build/bench/cpu_decode_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <map>
#include <random>

#include "models/nsa_model.h"
#include "models/presets.h"
#include "models/progress.h"

namespace nsa {
namespace {

const NsaModel& Model(const std::string& preset) {
  static std::map<std::string, std::unique_ptr<NsaModel>> models;
  auto& m = models[preset];
  if (!m) {
    Progress::SetEnabled(false);
    const std::string dir = std::filesystem::temp_directory_path() / ("nsa_bench_" + preset);
    RandomModelOptions options;
    options.progress = false;
    if (!WriteRandomModel(PresetConfig(preset).value(), dir, options).ok()) std::abort();
    m = std::move(NsaModel::Load(dir, false).value());
  }
  return *m;
}

std::vector<int> Tokens(int n, int vocab) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> pick(3, vocab - 1);
  std::vector<int> ids(n);
  for (int& t : ids) t = pick(rng);
  return ids;
}

// One decode step at context state.range(0); the cache is rebuilt when it outgrows the range.
void BM_Decode(benchmark::State& state, const std::string& preset) {
  const NsaModel& model = Model(preset);
  const int context = static_cast<int>(state.range(0));
  const std::vector<int> ids = Tokens(context + 4096, model.config().vocab_size);
  ContiguousKvStore cache = model.NewCache();
  model.Forward(std::span<const int>(ids.data(), context), cache);
  int pos = context;
  for (auto _ : state) {
    if (pos >= context + 256) {
      state.PauseTiming();
      cache = model.NewCache();
      model.Forward(std::span<const int>(ids.data(), context), cache);
      pos = context;
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(model.Forward(std::span<const int>(ids.data() + pos++, 1), cache));
  }
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_Prefill(benchmark::State& state, const std::string& preset) {
  const NsaModel& model = Model(preset);
  const std::vector<int> ids = Tokens(static_cast<int>(state.range(0)), model.config().vocab_size);
  for (auto _ : state) {
    ContiguousKvStore cache = model.NewCache();
    benchmark::DoNotOptimize(model.Forward(ids, cache));
  }
  state.counters["tok/s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * state.range(0)), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_Decode, tiny, std::string("tiny"))->Arg(16)->Arg(256)->Arg(2048)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Decode, tiny_paper, std::string("tiny-paper"))->Arg(16)->Arg(256)->Arg(2048)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Prefill, tiny, std::string("tiny"))->Arg(256)->Arg(2048)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Prefill, tiny_paper, std::string("tiny-paper"))->Arg(256)->Arg(2048)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace nsa

BENCHMARK_MAIN();
