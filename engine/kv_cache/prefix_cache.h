// Prefix cache: full raw pages identified by a hash chain over their tokens,
//
//   hash(page k) = H(hash(page k-1), tokens of page k),   hash(page -1) = the model's key,
//
// so a hit on page k implies the whole prefix up to it matched. Each entry also keeps its
// parent hash and tokens, and a lookup compares them, so a hash collision can never return the
// wrong page. A cached raw page carries the summaries that end inside it (kernels/kv_layout.h);
// with per-branch K/V or linear compression it also names its companion window and source pages
// (same tokens, other planes), which a continuation needs for its rings. Companions are cached
// and evicted on their own; an evicted companion is forgotten here, which shortens later hits.
// Single-threaded: owned by the cache manager.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace nsa {

class PrefixCache {
 public:
  struct Companions {
    int32_t win = -1;
    int32_t src = -1;
  };

  static uint64_t PageHash(uint64_t parent, std::span<const int> tokens);

  // The cached raw page with these contents, or -1.
  int32_t Lookup(uint64_t hash, uint64_t parent, std::span<const int> tokens) const;
  // Registers a full raw page; false (and nothing changes) when identical contents are cached.
  bool Insert(int32_t page, uint64_t hash, uint64_t parent, std::span<const int> tokens, Companions companions);
  Companions CompanionsOf(int32_t raw_page) const { return by_page_.at(raw_page).companions; }

  // Called when the pool evicts `page`. A raw page's entry is erased and its remaining
  // companions returned (the caller uncaches them); an evicted companion is detached.
  Companions Evict(int32_t page);

  bool Contains(int32_t raw_page) const { return by_page_.contains(raw_page); }
  bool IsCompanion(int32_t page) const { return companion_of_.contains(page); }
  size_t size() const { return by_page_.size(); }

 private:
  struct Entry {
    uint64_t hash;
    uint64_t parent;
    std::vector<int> tokens;
    Companions companions;
  };
  absl::flat_hash_map<uint64_t, int32_t> by_hash_;
  absl::flat_hash_map<int32_t, Entry> by_page_;
  absl::flat_hash_map<int32_t, int32_t> companion_of_;  // companion page -> its raw page
};

}  // namespace nsa
