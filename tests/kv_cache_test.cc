// The KV cache manager on its own: randomised storms of add/reserve/commit/fork/free with every
// invariant checked after every operation, a shadow copy of each page's tokens proving prefix
// hits only happen on identical prefixes, exhaustion that leaves the pool as it was, and LRU
// eviction of cached pages.
#include "engine/kv_cache/kv_cache_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace nsa {
namespace {

constexpr int kPage = 8;

enum class Variant { kShared, kLinear, kPerBranch };

KvCacheManager::Options Opts(int32_t pages, Variant variant = Variant::kShared) {
  KvCacheManager::Options o;
  o.num_pages = pages;
  o.nsa.compress_block = 4, o.nsa.compress_stride = 2, o.nsa.select_block = kPage;
  o.nsa.window = 11;  // a ring of two or three window pages
  if (variant == Variant::kLinear) o.nsa.compress_fn = CompressFn::kLinear;
  if (variant == Variant::kPerBranch) o.nsa.kv_sharing = KvSharing::kPerBranch;
  o.model_key = 77;
  return o;
}

// What the test believes each page holds: token id per slot (-1 unwritten).
class Shadow {
 public:
  explicit Shadow(int32_t pages) : slots_(pages, std::vector<int>(kPage, -1)) {}
  void Apply(const StepSlots& s) {
    for (const PageCopy& c : s.copies) slots_[c.dst] = slots_[c.src];
  }
  void Write(const std::vector<int32_t>& table, int64_t first, std::span<const int> tokens) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int64_t t = first + static_cast<int64_t>(i);
      slots_[table[t / kPage]][t % kPage] = tokens[i];
    }
  }
  int At(int32_t page, int slot) const { return slots_[page][slot]; }

 private:
  std::vector<std::vector<int>> slots_;
};

class StormTest : public ::testing::TestWithParam<Variant> {};

TEST_P(StormTest, RandomisedStormKeepsEveryInvariant) {
  for (uint64_t seed : {1, 2, 3, 4}) {
    std::mt19937_64 rng(seed);
    const int32_t num_pages = 48 * (GetParam() == Variant::kShared ? 1 : 2);
    KvCacheManager m(Opts(num_pages, GetParam()));
    Shadow shadow(num_pages);
    // Prompts share prefixes: a few stems, random tails.
    std::vector<std::vector<int>> stems;
    for (int i = 0; i < 3; ++i) {
      std::vector<int> stem(20 + 7 * i);
      for (int& t : stem) t = static_cast<int>(rng() % 50);
      stems.push_back(stem);
    }
    std::map<SeqId, std::vector<int>> full_text;  // every token the sequence will hold
    SeqId next_id = 0;
    int64_t hits = 0, no_room = 0;
    for (int op = 0; op < 3000; ++op) {
      const int kind = static_cast<int>(rng() % 10);
      if (kind < 3 || full_text.empty()) {  // admit
        std::vector<int> prompt = stems[rng() % stems.size()];
        prompt.resize(prompt.size() - rng() % 5);
        for (int k = static_cast<int>(rng() % 12); k > 0; --k) prompt.push_back(static_cast<int>(rng() % 50));
        const SeqId id = next_id++;
        const int64_t hit = m.AddSequence(id, prompt);
        ASSERT_EQ(hit % kPage, 0);
        ASSERT_LT(hit, static_cast<int64_t>(prompt.size()));
        // The hit pages hold exactly the prompt's tokens.
        const auto& table = m.PageTable(id);
        for (int64_t t = 0; t < hit; ++t) ASSERT_EQ(shadow.At(table[t / kPage], t % kPage), prompt[t]) << "seed " << seed;
        hits += hit > 0;
        full_text[id] = prompt;
      } else if (kind < 7) {  // a step: the rest of the prompt in chunks, then decode tokens
        auto it = std::next(full_text.begin(), static_cast<long>(rng() % full_text.size()));
        const SeqId id = it->first;
        const int64_t t0 = m.NumTokens(id);
        int64_t n = 1 + static_cast<int64_t>(rng() % 9);
        while (static_cast<int64_t>(it->second.size()) < t0 + n) it->second.push_back(static_cast<int>(rng() % 50));
        const auto before = m.PageTable(id);
        const int32_t available = m.pool().num_available();
        const int64_t needed = m.PagesNeeded(id, n);
        auto slots = m.Reserve(id, n);
        if (!slots) {
          ++no_room;
          ASSERT_GT(needed, available);
          ASSERT_EQ(m.PageTable(id), before);  // nothing changed
          ASSERT_EQ(m.pool().num_available(), available);
        } else {
          ASSERT_EQ(slots->first_token, t0);
          ASSERT_EQ(slots->first_summary, Opts(1).nsa.NumCompressed(t0));
          ASSERT_EQ(slots->end_summary, Opts(1).nsa.NumCompressed(t0 + n));
          shadow.Apply(*slots);
          const std::span<const int> tokens(it->second.data() + t0, n);
          shadow.Write(m.PageTable(id), t0, tokens);
          m.Commit(id, tokens);
        }
      } else if (kind < 8) {  // fork
        auto it = std::next(full_text.begin(), static_cast<long>(rng() % full_text.size()));
        const SeqId child = next_id++;
        m.Fork(it->first, child);
        // The child diverges after what the parent holds.
        full_text[child] = std::vector<int>(it->second.begin(), it->second.begin() + m.NumTokens(it->first));
      } else {  // free
        auto it = std::next(full_text.begin(), static_cast<long>(rng() % full_text.size()));
        m.Free(it->first);
        full_text.erase(it);
      }
      m.CheckInvariants();
      ASSERT_EQ(m.pool().num_free() + m.pool().num_evictable() + m.pool().num_used(), num_pages);
    }
    EXPECT_GT(hits, 10) << "the storm should exercise prefix hits";
    EXPECT_GT(no_room, 10) << "the storm should exercise exhaustion";
    for (auto& [id, text] : full_text) m.Free(id);
    m.CheckInvariants();
    EXPECT_EQ(m.pool().num_used(), 0);
    EXPECT_EQ(m.Usage(), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, StormTest, ::testing::Values(Variant::kShared, Variant::kLinear, Variant::kPerBranch),
                         [](const auto& info) {
                           return std::string(info.param == Variant::kShared   ? "shared"
                                              : info.param == Variant::kLinear ? "linear"
                                                                               : "per_branch");
                         });

TEST(KvCacheManagerTest, RingsHoldOnlyWhatTheNextStepReads) {
  KvCacheManager m(Opts(64, Variant::kPerBranch));  // w = 11, l = 4, d = 2, l' = 8
  std::vector<int> a(60);
  for (int i = 0; i < 60; ++i) a[i] = i;
  m.AddSequence(1, a);
  ASSERT_TRUE(m.Reserve(1, 60));
  m.Commit(1, a);
  const PageTables& t = m.Tables(1);
  // 60 tokens: the next query (t = 60) reads tokens 50..60, pages 6 and 7.
  EXPECT_EQ(m.WindowRingStart(60), 6);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(t.win[j] >= 0, j >= 6) << j;
  // The next summary is block 29 (tokens 58..61): page 7 only.
  EXPECT_EQ(m.SourceRingStart(60), 7);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(t.src[j] >= 0, j >= 7) << j;
  EXPECT_EQ(m.pool().num_used(), 8 + 2 + 1);
  // A request sharing the first 7 pages gets raw pages 0..6 and the rings of a 56-token prefix.
  std::vector<int> b(a.begin(), a.begin() + 57);
  EXPECT_EQ(m.AddSequence(2, b), 56);
  EXPECT_EQ(m.WindowRingStart(56), 5);  // the query at t = 56 reads tokens 46..56
  EXPECT_EQ(m.Tables(2).win[4], -1);
  EXPECT_GE(m.Tables(2).win[5], 0);
  EXPECT_GE(m.Tables(2).win[6], 0);
  EXPECT_GE(m.Tables(2).src[6], 0);  // the next summary (block 27, tokens 54..57) starts in page 6
  m.CheckInvariants();
}

TEST(KvCacheManagerTest, EvictedRingPagesEndHitsOnCachedRawPages) {
  KvCacheManager m(Opts(26, Variant::kPerBranch));
  std::vector<int> a(64);
  for (int i = 0; i < 64; ++i) a[i] = i;
  m.AddSequence(1, a);
  ASSERT_TRUE(m.Reserve(1, 64));
  m.Commit(1, a);
  // Sequence 1 stays: its raw pages are held; the ring pages it released (window pages 0..5,
  // source pages 0..6) are cached and evictable.
  EXPECT_EQ(m.pool().num_evictable(), 13);
  std::vector<int> b(a.begin(), a.begin() + 50);
  EXPECT_EQ(m.AddSequence(2, b), 48);
  m.Free(2);
  // Taking 15 pages evicts all 13 ring pages; the raw pages stay cached and held.
  std::vector<int> c(200, 1000);
  m.AddSequence(3, c);
  ASSERT_TRUE(m.Reserve(3, 40));
  EXPECT_EQ(m.pool().num_evictable(), 0);
  EXPECT_TRUE(m.prefix_cache().Contains(m.PageTable(1)[0]));
  // Without the window and source pages before token 48, no continuation can start there.
  EXPECT_EQ(m.AddSequence(4, b), 0);
  m.CheckInvariants();
}

TEST(KvCacheManagerTest, ExhaustionIsANormalResult) {
  KvCacheManager m(Opts(4));
  std::vector<int> prompt(40, 3);
  m.AddSequence(1, prompt);
  EXPECT_FALSE(m.Reserve(1, 40).has_value());  // 5 pages > 4
  EXPECT_EQ(m.PageTable(1).size(), 0u);
  EXPECT_EQ(m.pool().num_free(), 4);
  auto slots = m.Reserve(1, 32);
  ASSERT_TRUE(slots.has_value());
  m.Commit(1, std::span<const int>(prompt.data(), 32));
  EXPECT_EQ(m.Usage(), 1.0);
  EXPECT_FALSE(m.CanAllocate(1));
  EXPECT_FALSE(m.Reserve(1, 1).has_value());
  m.CheckInvariants();
}

TEST(KvCacheManagerTest, PrefixHitsSharePagesAndCount) {
  KvCacheManager m(Opts(16));
  std::vector<int> a(30);
  for (int i = 0; i < 30; ++i) a[i] = i;
  EXPECT_EQ(m.AddSequence(1, a), 0);
  ASSERT_TRUE(m.Reserve(1, 30));
  m.Commit(1, a);
  // Same first 20 tokens: two full pages (16 tokens) are shared.
  std::vector<int> b(a.begin(), a.begin() + 20);
  b.push_back(99);
  EXPECT_EQ(m.AddSequence(2, b), 16);
  EXPECT_EQ(m.PageTable(2)[0], m.PageTable(1)[0]);
  EXPECT_EQ(m.PageTable(2)[1], m.PageTable(1)[1]);
  EXPECT_EQ(m.pool().ref_count(m.PageTable(1)[0]), 2);
  // A prompt of exactly 16 tokens still computes its last one: only one page is a hit.
  std::vector<int> c(a.begin(), a.begin() + 16);
  EXPECT_EQ(m.AddSequence(3, c), 8);
  // One token different in the first page: no hit at all.
  std::vector<int> d = b;
  d[3] = 1000;
  EXPECT_EQ(m.AddSequence(4, d), 0);
  EXPECT_EQ(m.prefix_queries(), 30 + 21 + 16 + 21);
  EXPECT_EQ(m.prefix_hits(), 16 + 8);
  // Another model's pages never match.
  KvCacheManager::Options other = Opts(16);
  other.model_key = 78;
  EXPECT_NE(PrefixCache::PageHash(77, std::span<const int>(a.data(), 8)),
            PrefixCache::PageHash(78, std::span<const int>(a.data(), 8)));
  m.CheckInvariants();
}

TEST(KvCacheManagerTest, ForkCopiesThePartialPageOnWrite) {
  KvCacheManager m(Opts(8));
  std::vector<int> a(12, 5);
  m.AddSequence(1, a);
  ASSERT_TRUE(m.Reserve(1, 12));
  m.Commit(1, a);
  m.Fork(1, 2);
  EXPECT_EQ(m.PageTable(1), m.PageTable(2));
  const int32_t shared_partial = m.PageTable(1)[1];
  auto slots = m.Reserve(2, 1);
  ASSERT_TRUE(slots);
  ASSERT_EQ(slots->copies.size(), 1u);
  EXPECT_EQ(slots->copies[0].src, shared_partial);
  EXPECT_NE(m.PageTable(2)[1], shared_partial);
  EXPECT_EQ(m.PageTable(2)[0], m.PageTable(1)[0]);  // the full page stays shared
  // The parent now owns the old partial page alone: no copy for it.
  auto parent_slots = m.Reserve(1, 1);
  ASSERT_TRUE(parent_slots);
  EXPECT_TRUE(parent_slots->copies.empty());
  m.CheckInvariants();
}

TEST(KvCacheManagerTest, EvictsLeastRecentlyReleasedCachedPages) {
  KvCacheManager m(Opts(4));
  std::vector<int> a(17, 1), b(17, 2);
  m.AddSequence(1, a);
  ASSERT_TRUE(m.Reserve(1, 16));
  m.Commit(1, std::span<const int>(a.data(), 16));
  m.Free(1);  // two cached pages of a, released first
  m.AddSequence(2, b);
  ASSERT_TRUE(m.Reserve(2, 16));
  m.Commit(2, std::span<const int>(b.data(), 16));
  m.Free(2);
  EXPECT_EQ(m.pool().num_evictable(), 4);
  EXPECT_EQ(m.Usage(), 0.0);
  // Taking two pages evicts a's pages (released earlier); b is still a hit.
  std::vector<int> c(17, 3);
  m.AddSequence(3, c);
  ASSERT_TRUE(m.Reserve(3, 16));
  EXPECT_EQ(m.AddSequence(4, b), 16);
  EXPECT_EQ(m.AddSequence(5, a), 0);
  m.CheckInvariants();
}

}  // namespace
}  // namespace nsa
