// Prefix cache: full pages identified by a hash chain over their tokens,
//
//   hash(page k) = H(hash(page k-1), tokens of page k),   hash(page -1) = the model's key,
//
// so a hit on page k implies the whole prefix up to it matched. Each entry also keeps its
// parent hash and tokens, and a lookup compares them, so a hash collision can never return the
// wrong page. A cached page carries the summaries that end inside it (kernels/kv_layout.h).
// Single-threaded: owned by the cache manager.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace nsa {

class PrefixCache {
 public:
  static uint64_t PageHash(uint64_t parent, std::span<const int> tokens);

  // The cached page with these contents, or -1.
  int32_t Lookup(uint64_t hash, uint64_t parent, std::span<const int> tokens) const;
  // Registers a full page; false (and nothing changes) when identical contents are cached already.
  bool Insert(int32_t page, uint64_t hash, uint64_t parent, std::span<const int> tokens);
  // Forgets an evicted page.
  void Erase(int32_t page);
  bool Contains(int32_t page) const { return by_page_.contains(page); }
  size_t size() const { return by_page_.size(); }

 private:
  struct Entry {
    uint64_t hash;
    uint64_t parent;
    std::vector<int> tokens;
  };
  absl::flat_hash_map<uint64_t, int32_t> by_hash_;
  absl::flat_hash_map<int32_t, Entry> by_page_;
};

}  // namespace nsa
