#include "engine/kv_cache/prefix_cache.h"

#include <algorithm>

namespace nsa {
namespace {
uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}
}  // namespace

uint64_t PrefixCache::PageHash(uint64_t parent, std::span<const int> tokens) {
  uint64_t h = Mix(parent ^ 0x9e3779b97f4a7c15ull);
  for (int t : tokens) h = Mix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x632be59bd9b4e019ull));
  return h;
}

int32_t PrefixCache::Lookup(uint64_t hash, uint64_t parent, std::span<const int> tokens) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const Entry& e = by_page_.at(it->second);
  if (e.parent != parent || !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end())) return -1;
  return it->second;
}

bool PrefixCache::Insert(int32_t page, uint64_t hash, uint64_t parent, std::span<const int> tokens,
                         Companions companions) {
  if (!by_hash_.try_emplace(hash, page).second) return false;
  by_page_[page] = Entry{hash, parent, std::vector<int>(tokens.begin(), tokens.end()), companions};
  if (companions.win >= 0) companion_of_[companions.win] = page;
  if (companions.src >= 0) companion_of_[companions.src] = page;
  return true;
}

PrefixCache::Companions PrefixCache::Evict(int32_t page) {
  if (auto c = companion_of_.find(page); c != companion_of_.end()) {
    Companions& owner = by_page_.at(c->second).companions;
    (owner.win == page ? owner.win : owner.src) = -1;
    companion_of_.erase(c);
    return {};
  }
  auto it = by_page_.find(page);
  if (it == by_page_.end()) return {};
  const Companions left = it->second.companions;
  if (left.win >= 0) companion_of_.erase(left.win);
  if (left.src >= 0) companion_of_.erase(left.src);
  by_hash_.erase(it->second.hash);
  by_page_.erase(it);
  return left;
}

}  // namespace nsa
