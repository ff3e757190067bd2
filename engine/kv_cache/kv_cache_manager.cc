#include "engine/kv_cache/kv_cache_manager.h"

#include <algorithm>

#include "kernels/common/check.h"

namespace nsa {

KvCacheManager::KvCacheManager(const Options& options)
    : options_(options),
      page_tokens_(options.nsa.select_block),
      has_win_(options.nsa.kv_sharing == KvSharing::kPerBranch),
      has_src_(options.nsa.kv_sharing == KvSharing::kPerBranch || options.nsa.compress_fn == CompressFn::kLinear),
      pool_(options.num_pages) {
  pool_.SetEvictionHook([this](int32_t page) {
    const PrefixCache::Companions orphans = cache_.Evict(page);
    if (orphans.win >= 0) pool_.Uncache(orphans.win);
    if (orphans.src >= 0) pool_.Uncache(orphans.src);
  });
}

int64_t KvCacheManager::WindowRingStart(int64_t num_tokens) const {
  return std::max<int64_t>(0, num_tokens - options_.nsa.window + 1) / page_tokens_;
}

int64_t KvCacheManager::SourceRingStart(int64_t num_tokens) const {
  // The next summary is the first one not yet computed; its inputs start at i*d.
  return options_.nsa.NumCompressed(num_tokens) * options_.nsa.compress_stride / page_tokens_;
}

std::vector<std::vector<int32_t>*> KvCacheManager::ActiveTables(Sequence& s) {
  std::vector<std::vector<int32_t>*> t = {&s.tables.raw};
  if (has_win_) t.push_back(&s.tables.win);
  if (has_src_) t.push_back(&s.tables.src);
  return t;
}

bool KvCacheManager::RingsCached(const std::vector<int32_t>& raw_hits, size_t num_pages) const {
  const int64_t tokens = static_cast<int64_t>(num_pages) * page_tokens_;
  for (size_t j = 0; j < num_pages; ++j) {
    const PrefixCache::Companions c = cache_.CompanionsOf(raw_hits[j]);
    if (has_win_ && static_cast<int64_t>(j) >= WindowRingStart(tokens) && c.win < 0) return false;
    if (has_src_ && static_cast<int64_t>(j) >= SourceRingStart(tokens) && c.src < 0) return false;
  }
  return true;
}

int64_t KvCacheManager::AddSequence(SeqId id, std::span<const int> prompt) {
  auto [it, inserted] = seqs_.try_emplace(id);
  NSA_CHECK(inserted, "sequence %lld added twice", static_cast<long long>(id));
  Sequence& s = it->second;
  prefix_queries_ += static_cast<int64_t>(prompt.size());
  if (!options_.prefix_caching || prompt.empty()) return 0;

  // Longest chain of cached raw pages, then the longest prefix of it whose rings survive.
  const size_t max_pages = (prompt.size() - 1) / page_tokens_;
  std::vector<int32_t> raw_hits;
  std::vector<uint64_t> hashes;
  uint64_t parent = options_.model_key;
  for (size_t k = 0; k < max_pages; ++k) {
    const std::span<const int> tokens = prompt.subspan(k * page_tokens_, page_tokens_);
    const uint64_t hash = PrefixCache::PageHash(parent, tokens);
    const int32_t page = cache_.Lookup(hash, parent, tokens);
    if (page < 0) break;
    raw_hits.push_back(page);
    hashes.push_back(hash);
    parent = hash;
  }
  size_t hit = raw_hits.size();
  while (hit > 0 && !RingsCached(raw_hits, hit)) --hit;

  const int64_t tokens = static_cast<int64_t>(hit) * page_tokens_;
  for (size_t j = 0; j < hit; ++j) {
    pool_.Retain(raw_hits[j]);
    s.tables.raw.push_back(raw_hits[j]);
    const PrefixCache::Companions c = cache_.CompanionsOf(raw_hits[j]);
    if (has_win_) {
      const bool keep = static_cast<int64_t>(j) >= WindowRingStart(tokens);
      s.tables.win.push_back(keep ? c.win : -1);
      if (keep) pool_.Retain(c.win);
    }
    if (has_src_) {
      const bool keep = static_cast<int64_t>(j) >= SourceRingStart(tokens);
      s.tables.src.push_back(keep ? c.src : -1);
      if (keep) pool_.Retain(c.src);
    }
  }
  s.hashes.assign(hashes.begin(), hashes.begin() + static_cast<long>(hit));
  s.tokens.assign(prompt.begin(), prompt.begin() + tokens);
  s.num_tokens = tokens;
  prefix_hits_ += tokens;
  return tokens;
}

int64_t KvCacheManager::PagesNeeded(SeqId id, int64_t n) const {
  const Sequence& s = seqs_.at(id);
  const int64_t t1 = s.num_tokens + n;
  const int64_t grow = std::max<int64_t>(0, (t1 + page_tokens_ - 1) / page_tokens_ - static_cast<int64_t>(s.tables.raw.size()));
  const int kinds = 1 + has_win_ + has_src_;
  int64_t needed = grow * kinds;
  if (n > 0 && s.num_tokens % page_tokens_ != 0) {
    const size_t partial = s.num_tokens / page_tokens_;
    for (const std::vector<int32_t>* t : {&s.tables.raw, &s.tables.win, &s.tables.src}) {
      if (!t->empty() && pool_.ref_count((*t)[partial]) > 1) ++needed;
    }
  }
  return needed;
}

std::optional<StepSlots> KvCacheManager::Reserve(SeqId id, int64_t n) {
  NSA_CHECK(n >= 0, "negative reservation");
  if (!CanAllocate(PagesNeeded(id, n))) return std::nullopt;
  Sequence& s = seqs_.at(id);
  StepSlots slots;
  slots.first_token = s.num_tokens;
  slots.num_tokens = n;
  slots.first_summary = options_.nsa.NumCompressed(s.num_tokens);
  slots.end_summary = options_.nsa.NumCompressed(s.num_tokens + n);
  const int64_t t1 = s.num_tokens + n;
  const size_t partial = s.num_tokens / page_tokens_;
  for (std::vector<int32_t>* table : ActiveTables(s)) {
    if (n > 0 && s.num_tokens % page_tokens_ != 0) {
      int32_t& page = (*table)[partial];
      NSA_CHECK(page >= 0, "the page being written was released");
      if (pool_.ref_count(page) > 1) {
        // Copy-on-write: the other holders keep the old page, unchanged.
        const int32_t copy = *pool_.Allocate();
        slots.copies.push_back({page, copy});
        pool_.Release(page);
        page = copy;
      }
    }
    while (static_cast<int64_t>(table->size()) * page_tokens_ < t1) table->push_back(*pool_.Allocate());
  }
  return slots;
}

void KvCacheManager::Commit(SeqId id, std::span<const int> tokens) {
  Sequence& s = seqs_.at(id);
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  s.num_tokens += static_cast<int64_t>(tokens.size());
  NSA_CHECK(s.num_tokens <= static_cast<int64_t>(s.tables.raw.size()) * page_tokens_, "commit beyond reserved pages");
  while (static_cast<int64_t>(s.hashes.size() + 1) * page_tokens_ <= s.num_tokens) {
    const size_t k = s.hashes.size();
    const std::span<const int> page_tokens(s.tokens.data() + k * page_tokens_, page_tokens_);
    const uint64_t parent = ParentHash(s, k);
    const uint64_t hash = PrefixCache::PageHash(parent, page_tokens);
    s.hashes.push_back(hash);
    const int32_t page = s.tables.raw[k];
    if (!options_.prefix_caching || pool_.IsCached(page)) continue;
    // Ring pages of the same tokens go along while this sequence still holds them.
    PrefixCache::Companions c;
    if (has_win_ && s.tables.win[k] >= 0 && !pool_.IsCached(s.tables.win[k])) c.win = s.tables.win[k];
    if (has_src_ && s.tables.src[k] >= 0 && !pool_.IsCached(s.tables.src[k])) c.src = s.tables.src[k];
    if (cache_.Insert(page, hash, parent, page_tokens, c)) {
      pool_.SetCached(page);
      if (c.win >= 0) pool_.SetCached(c.win);
      if (c.src >= 0) pool_.SetCached(c.src);
    }
  }
  // Release ring pages no later step reads.
  auto trim = [&](std::vector<int32_t>& ring, int64_t start) {
    for (int64_t j = 0; j < std::min<int64_t>(start, static_cast<int64_t>(ring.size())); ++j) {
      if (ring[j] >= 0) {
        pool_.Release(ring[j]);
        ring[j] = -1;
      }
    }
  };
  if (has_win_) trim(s.tables.win, WindowRingStart(s.num_tokens));
  if (has_src_) trim(s.tables.src, SourceRingStart(s.num_tokens));
}

void KvCacheManager::Fork(SeqId parent, SeqId child) {
  Sequence copy = seqs_.at(parent);
  for (std::vector<int32_t>* table : ActiveTables(copy)) {
    for (int32_t page : *table) {
      if (page >= 0) pool_.Retain(page);
    }
  }
  const bool inserted = seqs_.emplace(child, std::move(copy)).second;
  NSA_CHECK(inserted, "fork target %lld exists", static_cast<long long>(child));
}

void KvCacheManager::Free(SeqId id) {
  auto it = seqs_.find(id);
  NSA_CHECK(it != seqs_.end(), "freeing unknown sequence %lld", static_cast<long long>(id));
  for (std::vector<int32_t>* table : ActiveTables(it->second)) {
    for (int32_t page : *table) {
      if (page >= 0) pool_.Release(page);
    }
  }
  seqs_.erase(it);
}

double KvCacheManager::Usage() const {
  return pool_.num_pages() == 0 ? 0.0 : static_cast<double>(pool_.num_used()) / pool_.num_pages();
}

void KvCacheManager::CheckInvariants() const {
  pool_.CheckInvariants();
  std::vector<int32_t> holders(pool_.num_pages(), 0);
  for (const auto& [id, s] : seqs_) {
    const PageTables& t = s.tables;
    NSA_CHECK(static_cast<int64_t>(t.raw.size()) * page_tokens_ >= s.num_tokens, "sequence %lld outgrew its pages",
              static_cast<long long>(id));
    NSA_CHECK(static_cast<int64_t>(s.tokens.size()) == s.num_tokens, "token ids and count disagree");
    NSA_CHECK(t.win.size() == (has_win_ ? t.raw.size() : 0) && t.src.size() == (has_src_ ? t.raw.size() : 0),
              "ring tables out of step with the raw table");
    // Rings hold exactly the pages from their start on.
    for (size_t j = 0; j < t.win.size(); ++j) {
      NSA_CHECK((t.win[j] >= 0) == (static_cast<int64_t>(j) >= WindowRingStart(s.num_tokens)), "window ring slot %zu", j);
    }
    for (size_t j = 0; j < t.src.size(); ++j) {
      NSA_CHECK((t.src[j] >= 0) == (static_cast<int64_t>(j) >= SourceRingStart(s.num_tokens)), "source ring slot %zu", j);
    }
    std::vector<int32_t> mine;
    for (const std::vector<int32_t>* table : {&t.raw, &t.win, &t.src}) {
      for (int32_t page : *table) {
        if (page < 0) continue;
        ++holders[page];
        mine.push_back(page);
      }
    }
    std::sort(mine.begin(), mine.end());
    NSA_CHECK(std::adjacent_find(mine.begin(), mine.end()) == mine.end(), "a page appears twice in one sequence");
  }
  for (int32_t p = 0; p < pool_.num_pages(); ++p) {
    NSA_CHECK(holders[p] == pool_.ref_count(p), "page %d: %d holders, count %d", p, holders[p], pool_.ref_count(p));
    NSA_CHECK(pool_.IsCached(p) == (cache_.Contains(p) || cache_.IsCompanion(p)), "page %d: pool and prefix cache disagree",
              p);
  }
}

}  // namespace nsa
