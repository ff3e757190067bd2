// The CPU model through paged storage: identical (to the bit) to the contiguous reference across
// page boundaries, with scrambled page ids, with prefix-cache hits, and after copy-on-write forks;
// stored summaries equal the compression of their raw tokens.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <random>

#include "engine/kv_cache/host_kv_pool.h"
#include "engine/kv_cache/kv_cache_manager.h"
#include "kernels/reference/nsa_attention.h"
#include "models/nsa_model.h"
#include "models/presets.h"
#include "models/progress.h"

namespace nsa {
namespace {

std::unique_ptr<NsaModel> MakeModel(const std::string& preset) {
  Progress::SetEnabled(false);
  // One directory per process: ctest runs the tests of this binary in parallel processes.
  const std::string dir = ::testing::TempDir() + "/paged_model_test_" + preset + "_" + std::to_string(getpid());
  RandomModelOptions options;
  options.seed = 21;
  options.dtype = DType::kF32;
  options.progress = false;
  EXPECT_TRUE(WriteRandomModel(PresetConfig(preset).value(), dir, options).ok());
  return std::move(NsaModel::Load(dir, false).value());
}

std::vector<int> Tokens(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> ids(n);
  for (int& t : ids) t = 3 + static_cast<int>(rng() % 2000);
  return ids;
}

// Logits of every token of `ids`, computed contiguously in one prefill.
std::vector<float> Reference(const NsaModel& model, const std::vector<int>& ids) {
  ContiguousKvStore store = model.NewCache();
  std::vector<float> all;
  model.Forward(ids, store, &all);
  return all;
}

// Runs tokens [start, start+n) of `ids` for `seq` through the manager and pool; returns logits.
std::vector<float> Step(const NsaModel& model, KvCacheManager& m, HostKvPool& pool, SeqId seq, const std::vector<int>& ids,
                        int64_t n) {
  const int64_t t0 = m.NumTokens(seq);
  auto slots = m.Reserve(seq, n);
  EXPECT_TRUE(slots.has_value());
  if (!slots) return {};
  pool.ApplyCopies(slots->copies);
  PagedKvStore store = pool.Store(m.Tables(seq), t0);
  std::vector<float> all;
  const std::span<const int> tokens(ids.data() + t0, n);
  model.Forward(tokens, store, &all);
  m.Commit(seq, tokens);
  return all;
}

void ExpectRowsEqual(const std::vector<float>& got, const std::vector<float>& full, int64_t first_row, int vocab,
                     const char* what) {
  ASSERT_EQ(got.size() % vocab, 0u);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i], full[first_row * vocab + static_cast<int64_t>(i)]) << what << ": row " << first_row + int64_t(i) / vocab;
  }
}

KvCacheManager::Options Options(const ModelConfig& c, int32_t pages) {
  KvCacheManager::Options o;
  o.num_pages = pages;
  o.nsa = c.nsa;
  o.model_key = 1;
  return o;
}

class PagedModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PagedModelTest, PagedEqualsContiguousAcrossPageBoundaries) {
  auto model = MakeModel(GetParam());
  const ModelConfig& c = model->config();
  const std::vector<int> ids = Tokens(150, 1);
  const std::vector<float> full = Reference(*model, ids);
  for (int chunk : {1, 7, 16, 40}) {
    KvCacheManager m(Options(c, 64));
    HostKvPool pool(c, 64);
    // Scramble which pool pages the sequence gets: hold every other page with a dummy sequence.
    std::vector<int> filler(16 * c.nsa.select_block, 9);
    m.AddSequence(100, filler);
    ASSERT_TRUE(m.Reserve(100, 5 * c.nsa.select_block));
    m.AddSequence(1, ids);
    for (int64_t t = 0; t < 150; t += chunk) {
      const int64_t n = std::min<int64_t>(chunk, 150 - t);
      ExpectRowsEqual(Step(*model, m, pool, 1, ids, n), full, t, c.vocab_size, "paged");
    }
    EXPECT_NE(m.PageTable(1)[0], 0);
    m.CheckInvariants();
  }
}

TEST_P(PagedModelTest, PrefixHitGivesTheColdResult) {
  auto model = MakeModel(GetParam());
  const ModelConfig& c = model->config();
  KvCacheManager m(Options(c, 64));
  HostKvPool pool(c, 64);
  const std::vector<int> a = Tokens(120, 2);
  m.AddSequence(1, a);
  Step(*model, m, pool, 1, a, 120);
  // b shares a's first 83 tokens: 5 full pages of 16 are hits, the rest is computed.
  std::vector<int> b(a.begin(), a.begin() + 83);
  for (int t : Tokens(60, 3)) b.push_back(t);
  const int64_t hit = m.AddSequence(2, b);
  EXPECT_EQ(hit, 80);
  const std::vector<float> cold = Reference(*model, b);
  ExpectRowsEqual(Step(*model, m, pool, 2, b, 30), cold, hit, c.vocab_size, "after hit");
  for (int i = 0; i < 33; ++i) ExpectRowsEqual(Step(*model, m, pool, 2, b, 1), cold, hit + 30 + i, c.vocab_size, "decode");
  // The donor is gone: its cached pages still serve a third request.
  m.Free(1);
  m.Free(2);
  EXPECT_EQ(m.AddSequence(3, b), 128);
  ExpectRowsEqual(Step(*model, m, pool, 3, b, 15), cold, 128, c.vocab_size, "after free");
  EXPECT_GT(m.prefix_hits(), 0);
  m.CheckInvariants();
}

TEST_P(PagedModelTest, ForkedSequencesMatchTheirOwnColdRuns) {
  auto model = MakeModel(GetParam());
  const ModelConfig& c = model->config();
  KvCacheManager m(Options(c, 64));
  HostKvPool pool(c, 64);
  const std::vector<int> prompt = Tokens(50, 4);  // ends mid-page: the fork shares a partial page
  m.AddSequence(1, prompt);
  Step(*model, m, pool, 1, prompt, 50);
  m.Fork(1, 2);
  std::vector<int> x = prompt, y = prompt;
  for (int t : Tokens(30, 5)) x.push_back(t);
  for (int t : Tokens(30, 6)) y.push_back(t);
  const std::vector<float> cold_x = Reference(*model, x), cold_y = Reference(*model, y);
  for (int i = 0; i < 30; ++i) {
    ExpectRowsEqual(Step(*model, m, pool, 2, y, 1), cold_y, 50 + i, c.vocab_size, "child");
    ExpectRowsEqual(Step(*model, m, pool, 1, x, 1), cold_x, 50 + i, c.vocab_size, "parent");
  }
  m.CheckInvariants();
}

INSTANTIATE_TEST_SUITE_P(Presets, PagedModelTest, ::testing::Values("tiny", "tiny-paper"),
                         [](const auto& info) { return info.param == "tiny" ? std::string("fla") : std::string("paper"); });

TEST(PagedSummariesTest, EqualTheMeanOfTheirRawTokens) {
  auto model = MakeModel("tiny");
  const ModelConfig& c = model->config();
  KvCacheManager m(Options(c, 16));
  HostKvPool pool(c, 16);
  const std::vector<int> ids = Tokens(100, 7);
  m.AddSequence(1, ids);
  Step(*model, m, pool, 1, ids, 37);
  for (int i = 0; i < 63; ++i) Step(*model, m, pool, 1, ids, 1);
  PagedKvStore store = pool.Store(m.Tables(1), 100);
  const int64_t n = c.nsa.NumCompressed(100);
  ASSERT_EQ(n, 6);
  for (int layer = 0; layer < c.num_layers; ++layer) {
    for (int g = 0; g < c.num_kv_heads; ++g) {
      for (bool value : {false, true}) {
        const ref::RowSource raw = store.Rows(KvPlane::kSel, layer, g, value);
        const ref::RowSource cmp = store.Rows(KvPlane::kCmp, layer, g, value);
        for (int64_t i = 0; i < n; ++i) {
          std::vector<float> want(c.head_dim);
          ref::CompressMean(raw, i * c.nsa.compress_stride, c.nsa.compress_block, c.head_dim, want.data());
          for (int e = 0; e < c.head_dim; ++e) ASSERT_EQ(cmp.Row(i)[e], want[e]) << "layer " << layer << " summary " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace nsa
