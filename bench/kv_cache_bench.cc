// Host-side cost of the paged KV cache with 10,000 live sequences (target: >= 1M operations/s).
//   build/bench/kv_cache_bench
// Operations: a page allocate or release; a decode step's reserve + commit; a prefix lookup of
// one page during admission.
#include <benchmark/benchmark.h>

#include <random>

#include "engine/kv_cache/kv_cache_manager.h"

namespace nsa {
namespace {

constexpr int kSeqs = 10000;
constexpr int kPage = 64;

KvCacheManager::Options Opts() {
  KvCacheManager::Options o;
  o.num_pages = kSeqs * 40;
  o.nsa = NsaParams{};  // l = d = l' = 64
  o.model_key = 1;
  return o;
}

// 10,000 sequences of 1,000 tokens each, all committed (16 pages each, cached when full).
void Populate(KvCacheManager& m) {
  std::mt19937 rng(1);
  std::vector<int> prompt(1000);
  for (SeqId id = 0; id < kSeqs; ++id) {
    for (int& t : prompt) t = static_cast<int>(rng() % 32000);
    m.AddSequence(id, prompt);
    m.Reserve(id, 1000);
    m.Commit(id, prompt);
  }
}

void BM_PoolAllocateRelease(benchmark::State& state) {
  PagePool pool(kSeqs * 40);
  std::vector<int32_t> held;
  for (int i = 0; i < kSeqs * 16; ++i) held.push_back(*pool.Allocate());
  std::vector<int32_t> batch(64);
  for (auto _ : state) {
    for (int32_t& p : batch) p = *pool.Allocate();
    for (int32_t p : batch) pool.Release(p);
  }
  state.SetItemsProcessed(state.iterations() * 2 * static_cast<int64_t>(batch.size()));
}
BENCHMARK(BM_PoolAllocateRelease);

// One decode step's bookkeeping for one sequence: Reserve(1) and Commit(1 token). Every 64th step
// of a sequence allocates a page; every page filled is hashed into the prefix cache.
void BM_DecodeReserveCommit(benchmark::State& state) {
  KvCacheManager m(Opts());
  Populate(m);
  SeqId id = 0;
  int token = 5;
  for (auto _ : state) {
    auto slots = m.Reserve(id, 1);
    if (!slots) {
      state.SkipWithError("pool exhausted");
      break;
    }
    m.Commit(id, std::span<const int>(&token, 1));
    id = (id + 1) % kSeqs;
    ++token;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodeReserveCommit);

// Admission of a request whose 1,024-token prompt hits 15 cached pages of a live sequence,
// then its release: items are the pages looked up.
void BM_AdmitWithPrefixHitAndFree(benchmark::State& state) {
  KvCacheManager m(Opts());
  std::mt19937 rng(2);
  std::vector<std::vector<int>> prompts(kSeqs, std::vector<int>(1024));
  for (SeqId id = 0; id < kSeqs; ++id) {
    for (int& t : prompts[id]) t = static_cast<int>(rng() % 32000);
    m.AddSequence(id, prompts[id]);
    m.Reserve(id, 1024);
    m.Commit(id, prompts[id]);
  }
  SeqId next = kSeqs, donor = 0;
  int64_t pages = 0;
  for (auto _ : state) {
    const int64_t hit = m.AddSequence(next, prompts[donor]);
    pages += (1024 - 1) / kPage;  // the last page is never a hit: its last token is computed
    benchmark::DoNotOptimize(hit);
    m.Free(next++);
    donor = (donor + 1) % kSeqs;
  }
  state.SetItemsProcessed(pages);
}
BENCHMARK(BM_AdmitWithPrefixHitAndFree);

void BM_PrefixLookup(benchmark::State& state) {
  KvCacheManager m(Opts());
  Populate(m);
  // Re-derive the hashes of the first page of some sequences and look them up directly.
  std::mt19937 rng(1);
  std::vector<std::vector<int>> first_pages;
  std::vector<int> prompt(1000);
  for (int id = 0; id < kSeqs; ++id) {
    for (int& t : prompt) t = static_cast<int>(rng() % 32000);
    first_pages.emplace_back(prompt.begin(), prompt.begin() + kPage);
  }
  const PrefixCache& cache = m.prefix_cache();
  size_t i = 0;
  int64_t found = 0;
  for (auto _ : state) {
    const std::vector<int>& tokens = first_pages[i];
    const uint64_t hash = PrefixCache::PageHash(1, tokens);
    found += cache.Lookup(hash, 1, tokens) >= 0;
    i = (i + 1) % first_pages.size();
  }
  if (found != static_cast<int64_t>(state.iterations())) state.SkipWithError("lookups missed");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PrefixLookup);

}  // namespace
}  // namespace nsa

BENCHMARK_MAIN();
