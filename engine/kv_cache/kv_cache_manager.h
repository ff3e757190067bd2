// The KV cache manager: per-sequence page tables over one page pool, with prefix sharing,
// copy-on-write forks, window and compression-input rings, and summary bookkeeping. Pure host
// code: the runner owns the storage (host memory for the CPU backend, one device allocation for
// CUDA) and follows the plan returned by Reserve.
//
// A sequence's tokens fill logical pages of l' tokens; raw page j is selection block j:
//
//   tokens   |0 ........ l'-1|l' ...... 2l'-1|2l' ... t0-1 | t0 ... t0+n-1 |
//   raw      |     raw[0]     |     raw[1]     |  raw[2]  (partial)         | new page ...
//            '---- full: hashed, may be shared through the prefix cache ----'
//                                                 ^ Reserve(n) writes here; if this partial page
//                                                   is shared (after Fork) it is copied first
//   win      |       -1       |     win[1]     |  win[2]                    |   (per_branch)
//   src      |       -1       |       -1       |  src[2]                    |   (per_branch, linear)
//
// The window table keeps only the pages the next query can read (tokens >= t - w + 1), the
// source table only those the next summary reads (tokens >= its first): both are rings, -1 marks
// a released slot. Summary i is computed in the step that appends token i*d + l - 1 and stored in
// that token's raw page, so full raw pages carry their summaries wherever they are shared.
// Single-threaded: the engine loop owns the manager.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/kv_cache/page_pool.h"
#include "engine/kv_cache/prefix_cache.h"
#include "kernels/nsa_params.h"

namespace nsa {

using SeqId = int64_t;

struct PageCopy {
  int32_t src;
  int32_t dst;
};

// What the runner does for one sequence in one step.
struct StepSlots {
  int64_t first_token = 0;  // position of the first new token
  int64_t num_tokens = 0;
  int64_t first_summary = 0;  // summaries [first_summary, end_summary) complete in this step
  int64_t end_summary = 0;
  std::vector<PageCopy> copies;  // copy these whole pages before writing (copy-on-write)
};

// A sequence's pages: raw (selection K/V and summaries), and the rings. -1 = not held.
struct PageTables {
  std::vector<int32_t> raw, win, src;
};

class KvCacheManager {
 public:
  struct Options {
    int32_t num_pages = 0;
    NsaParams nsa;  // page size l' = nsa.select_block; rings follow w, l and the K/V sharing
    bool prefix_caching = true;
    uint64_t model_key = 0;  // seeds the hash chain: pages of different models never match
  };
  explicit KvCacheManager(const Options& options);

  // Admits a sequence that will process `prompt`. Retains the longest cached prefix of full
  // pages whose ring pages are still cached (leaving at least one prompt token to compute, whose
  // logits are needed) and returns its length in tokens; the sequence then holds that many.
  int64_t AddSequence(SeqId id, std::span<const int> prompt);
  // Makes room for tokens [t0, t0 + n), t0 = NumTokens(id). nullopt when the pool cannot supply
  // the pages: nothing changes, and the caller preempts or waits.
  std::optional<StepSlots> Reserve(SeqId id, int64_t n);
  // The reserved tokens are written: newly full pages enter the prefix cache, ring pages that
  // no later step reads are released.
  void Commit(SeqId id, std::span<const int> tokens);
  // `child` shares every page of `parent` (n > 1 sampling); partial last pages are copied on the
  // first write of either.
  void Fork(SeqId parent, SeqId child);
  void Free(SeqId id);

  bool Contains(SeqId id) const { return seqs_.contains(id); }
  int64_t NumTokens(SeqId id) const { return seqs_.at(id).num_tokens; }
  const PageTables& Tables(SeqId id) const { return seqs_.at(id).tables; }
  const std::vector<int32_t>& PageTable(SeqId id) const { return seqs_.at(id).tables.raw; }
  // Pages Reserve(id, n) would take from the pool.
  int64_t PagesNeeded(SeqId id, int64_t n) const;
  bool CanAllocate(int64_t num_pages) const { return num_pages <= pool_.num_available(); }
  // Fraction of pages held by sequences (evictable cached pages count as free).
  double Usage() const;
  size_t num_sequences() const { return seqs_.size(); }
  int page_tokens() const { return page_tokens_; }
  bool has_win() const { return has_win_; }
  bool has_src() const { return has_src_; }
  // First logical page of each ring a sequence of `num_tokens` tokens must hold.
  int64_t WindowRingStart(int64_t num_tokens) const;
  int64_t SourceRingStart(int64_t num_tokens) const;

  // Prefix-cache counters, in tokens (vLLM's prefix_cache_queries/hits).
  int64_t prefix_queries() const { return prefix_queries_; }
  int64_t prefix_hits() const { return prefix_hits_; }
  const PagePool& pool() const { return pool_; }
  const PrefixCache& prefix_cache() const { return cache_; }

  // Aborts when reference counts, lists, tables, rings and the prefix cache disagree (tests).
  void CheckInvariants() const;

 private:
  struct Sequence {
    PageTables tables;
    std::vector<int> tokens;  // ids of the committed tokens
    std::vector<uint64_t> hashes;  // chain hash of each full raw page
    int64_t num_tokens = 0;
  };
  std::vector<std::vector<int32_t>*> ActiveTables(Sequence& s);
  uint64_t ParentHash(const Sequence& s, size_t page_index) const {
    return page_index == 0 ? options_.model_key : s.hashes[page_index - 1];
  }
  // Whether a hit of `num_pages` raw pages (all cached) still has the ring pages it needs.
  bool RingsCached(const std::vector<int32_t>& raw_hits, size_t num_pages) const;

  Options options_;
  int page_tokens_;
  bool has_win_, has_src_;
  PagePool pool_;
  PrefixCache cache_;
  absl::flat_hash_map<SeqId, Sequence> seqs_;
  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
};

}  // namespace nsa
