#include "engine/kv_cache/kv_cache_manager.h"

#include "kernels/common/check.h"

namespace nsa {

KvCacheManager::KvCacheManager(const Options& options)
    : options_(options), page_tokens_(options.nsa.select_block), pool_(options.num_pages) {
  pool_.SetEvictionHook([this](int32_t page) { cache_.Erase(page); });
}

int64_t KvCacheManager::AddSequence(SeqId id, std::span<const int> prompt) {
  auto [it, inserted] = seqs_.try_emplace(id);
  NSA_CHECK(inserted, "sequence %lld added twice", static_cast<long long>(id));
  Sequence& s = it->second;
  prefix_queries_ += static_cast<int64_t>(prompt.size());
  if (!options_.prefix_caching || prompt.empty()) return 0;
  const size_t max_pages = (prompt.size() - 1) / page_tokens_;
  for (size_t k = 0; k < max_pages; ++k) {
    const std::span<const int> tokens = prompt.subspan(k * page_tokens_, page_tokens_);
    const uint64_t parent = ParentHash(s, k);
    const uint64_t hash = PrefixCache::PageHash(parent, tokens);
    const int32_t page = cache_.Lookup(hash, parent, tokens);
    if (page < 0) break;
    pool_.Retain(page);
    s.pages.push_back(page);
    s.hashes.push_back(hash);
    s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  }
  s.num_tokens = static_cast<int64_t>(s.tokens.size());
  prefix_hits_ += s.num_tokens;
  return s.num_tokens;
}

int64_t KvCacheManager::PagesNeeded(SeqId id, int64_t n) const {
  const Sequence& s = seqs_.at(id);
  const int64_t t1 = s.num_tokens + n;
  const int64_t grow = std::max<int64_t>(0, (t1 + page_tokens_ - 1) / page_tokens_ - static_cast<int64_t>(s.pages.size()));
  const bool writes_partial = n > 0 && s.num_tokens % page_tokens_ != 0;
  const bool shared = writes_partial && pool_.ref_count(s.pages[s.num_tokens / page_tokens_]) > 1;
  return grow + (shared ? 1 : 0);
}

std::optional<StepSlots> KvCacheManager::Reserve(SeqId id, int64_t n) {
  NSA_CHECK(n >= 0, "negative reservation");
  const int64_t needed = PagesNeeded(id, n);
  if (!CanAllocate(needed)) return std::nullopt;
  Sequence& s = seqs_.at(id);
  StepSlots slots;
  slots.first_token = s.num_tokens;
  slots.num_tokens = n;
  slots.first_summary = options_.nsa.NumCompressed(s.num_tokens);
  slots.end_summary = options_.nsa.NumCompressed(s.num_tokens + n);
  const size_t partial = s.num_tokens / page_tokens_;
  if (n > 0 && s.num_tokens % page_tokens_ != 0 && pool_.ref_count(s.pages[partial]) > 1) {
    // Copy-on-write: the other holders keep the old page, unchanged.
    const int32_t copy = *pool_.Allocate();
    slots.copies.push_back({s.pages[partial], copy});
    pool_.Release(s.pages[partial]);
    s.pages[partial] = copy;
  }
  const int64_t t1 = s.num_tokens + n;
  while (static_cast<int64_t>(s.pages.size()) * page_tokens_ < t1) s.pages.push_back(*pool_.Allocate());
  return slots;
}

void KvCacheManager::Commit(SeqId id, std::span<const int> tokens) {
  Sequence& s = seqs_.at(id);
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  s.num_tokens += static_cast<int64_t>(tokens.size());
  NSA_CHECK(s.num_tokens <= static_cast<int64_t>(s.pages.size()) * page_tokens_, "commit beyond reserved pages");
  while (static_cast<int64_t>(s.hashes.size() + 1) * page_tokens_ <= s.num_tokens) {
    const size_t k = s.hashes.size();
    const std::span<const int> page_tokens(s.tokens.data() + k * page_tokens_, page_tokens_);
    const uint64_t parent = ParentHash(s, k);
    const uint64_t hash = PrefixCache::PageHash(parent, page_tokens);
    s.hashes.push_back(hash);
    const int32_t page = s.pages[k];
    if (options_.prefix_caching && !pool_.IsCached(page) && cache_.Insert(page, hash, parent, page_tokens)) {
      pool_.SetCached(page, true);
    }
  }
}

void KvCacheManager::Fork(SeqId parent, SeqId child) {
  Sequence copy = seqs_.at(parent);
  for (int32_t page : copy.pages) pool_.Retain(page);
  const bool inserted = seqs_.emplace(child, std::move(copy)).second;
  NSA_CHECK(inserted, "fork target %lld exists", static_cast<long long>(child));
}

void KvCacheManager::Free(SeqId id) {
  auto it = seqs_.find(id);
  NSA_CHECK(it != seqs_.end(), "freeing unknown sequence %lld", static_cast<long long>(id));
  for (int32_t page : it->second.pages) pool_.Release(page);
  seqs_.erase(it);
}

double KvCacheManager::Usage() const {
  return pool_.num_pages() == 0 ? 0.0 : static_cast<double>(pool_.num_used()) / pool_.num_pages();
}

void KvCacheManager::CheckInvariants() const {
  pool_.CheckInvariants();
  std::vector<int32_t> holders(pool_.num_pages(), 0);
  for (const auto& [id, s] : seqs_) {
    NSA_CHECK(static_cast<int64_t>(s.pages.size()) * page_tokens_ >= s.num_tokens, "sequence %lld outgrew its pages",
              static_cast<long long>(id));
    NSA_CHECK(static_cast<int64_t>(s.tokens.size()) == s.num_tokens, "token ids and count disagree");
    for (size_t k = 0; k < s.pages.size(); ++k) {
      ++holders[s.pages[k]];
      // A page written by this sequence alone appears once in its table.
      for (size_t j = k + 1; j < s.pages.size(); ++j) NSA_CHECK(s.pages[j] != s.pages[k], "page %d twice in one table", s.pages[k]);
    }
  }
  for (int32_t p = 0; p < pool_.num_pages(); ++p) {
    NSA_CHECK(holders[p] == pool_.ref_count(p), "page %d: %d holders, count %d", p, holders[p], pool_.ref_count(p));
    NSA_CHECK(pool_.IsCached(p) == cache_.Contains(p), "page %d: pool and prefix cache disagree", p);
  }
}

}  // namespace nsa
