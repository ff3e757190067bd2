#include "engine/kv_cache/page_pool.h"

#include "kernels/common/check.h"

namespace nsa {

PagePool::PagePool(int32_t num_pages)
    : ref_count_(num_pages, 0), cached_(num_pages, 0), lru_prev_(num_pages, -1), lru_next_(num_pages, -1) {
  free_.reserve(num_pages);
  for (int32_t p = num_pages - 1; p >= 0; --p) free_.push_back(p);  // hand out low ids first
}

std::optional<int32_t> PagePool::Allocate() {
  int32_t page;
  if (!free_.empty()) {
    page = free_.back();
    free_.pop_back();
  } else if (lru_head_ >= 0) {
    page = lru_head_;
    UnlinkLru(page);
    cached_[page] = 0;
    if (on_evict_) on_evict_(page);
  } else {
    return std::nullopt;
  }
  ref_count_[page] = 1;
  return page;
}

void PagePool::Retain(int32_t page) {
  if (ref_count_[page] == 0) {
    NSA_CHECK(cached_[page], "retaining free page %d", page);
    UnlinkLru(page);
  }
  ++ref_count_[page];
}

void PagePool::Release(int32_t page) {
  NSA_CHECK(ref_count_[page] > 0, "releasing page %d with count 0", page);
  if (--ref_count_[page] > 0) return;
  if (cached_[page]) {
    LinkLru(page);
  } else {
    free_.push_back(page);
  }
}

void PagePool::SetCached(int32_t page) {
  NSA_CHECK(ref_count_[page] > 0, "only a page in use joins the cache (page %d)", page);
  cached_[page] = 1;
}

void PagePool::Uncache(int32_t page) {
  if (!cached_[page]) return;
  cached_[page] = 0;
  if (ref_count_[page] == 0) {
    UnlinkLru(page);
    free_.push_back(page);
  }
}

void PagePool::LinkLru(int32_t page) {
  lru_prev_[page] = lru_tail_;
  lru_next_[page] = -1;
  (lru_tail_ >= 0 ? lru_next_[lru_tail_] : lru_head_) = page;
  lru_tail_ = page;
  ++num_evictable_;
}

void PagePool::UnlinkLru(int32_t page) {
  const int32_t prev = lru_prev_[page], next = lru_next_[page];
  (prev >= 0 ? lru_next_[prev] : lru_head_) = next;
  (next >= 0 ? lru_prev_[next] : lru_tail_) = prev;
  lru_prev_[page] = lru_next_[page] = -1;
  --num_evictable_;
}

void PagePool::CheckInvariants() const {
  std::vector<char> seen(ref_count_.size(), 0);
  for (int32_t p : free_) {
    NSA_CHECK(!seen[p] && ref_count_[p] == 0 && !cached_[p], "free page %d is also elsewhere", p);
    seen[p] = 1;
  }
  int32_t n = 0;
  for (int32_t p = lru_head_; p >= 0; p = lru_next_[p]) {
    NSA_CHECK(!seen[p] && ref_count_[p] == 0 && cached_[p], "evictable page %d is also elsewhere", p);
    seen[p] = 1;
    ++n;
  }
  NSA_CHECK(n == num_evictable_, "LRU holds %d pages, count says %d", n, num_evictable_);
  for (size_t p = 0; p < ref_count_.size(); ++p) {
    NSA_CHECK(seen[p] || ref_count_[p] > 0, "page %zu is lost: count 0 and on no list", p);
  }
}

}  // namespace nsa
