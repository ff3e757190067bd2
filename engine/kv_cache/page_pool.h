// The page pool: every page of the KV cache is free, in use (reference count > 0), or cached and
// unreferenced ("evictable"). Evictable pages stay readable for prefix hits until the pool needs
// them back, least recently released first.
//
//   free list --Allocate--> used --Release (count 0, not cached)--> free list
//                            |  ^
//        Release (count 0,   |  | Retain (prefix hit)
//        cached)             v  |
//                         evictable (LRU) --Allocate when the free list is empty--> used
//
// Running out is a normal result (nullopt), never an abort. Single-threaded: the engine loop owns it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace nsa {

class PagePool {
 public:
  explicit PagePool(int32_t num_pages);

  int32_t num_pages() const { return static_cast<int32_t>(ref_count_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_evictable() const { return num_evictable_; }
  int32_t num_used() const { return num_pages() - num_free() - num_evictable(); }
  // Pages an Allocate can still return: free plus evictable.
  int32_t num_available() const { return num_free() + num_evictable(); }

  // A page with reference count 1, or nullopt when none is free or evictable. Evicting calls
  // the eviction hook first, so the prefix cache forgets the page.
  std::optional<int32_t> Allocate();
  void Retain(int32_t page);
  void Release(int32_t page);

  // Prefix-cache membership: a cached page goes to the LRU list, not the free list, at count 0.
  // Marking a page in use as cached; Uncache also frees an unreferenced page.
  void SetCached(int32_t page);
  void Uncache(int32_t page);
  bool IsCached(int32_t page) const { return cached_[page]; }
  int32_t ref_count(int32_t page) const { return ref_count_[page]; }
  void SetEvictionHook(std::function<void(int32_t)> hook) { on_evict_ = std::move(hook); }

  // Aborts when the counts disagree with the lists (tests).
  void CheckInvariants() const;

 private:
  void LinkLru(int32_t page);  // append as most recently released
  void UnlinkLru(int32_t page);

  std::vector<int32_t> ref_count_;
  std::vector<char> cached_;
  std::vector<int32_t> free_;  // stack
  // Intrusive doubly-linked LRU of evictable pages; -1 ends the list.
  std::vector<int32_t> lru_prev_, lru_next_;
  int32_t lru_head_ = -1, lru_tail_ = -1;
  int32_t num_evictable_ = 0;
  std::function<void(int32_t)> on_evict_;
};

}  // namespace nsa
