// Drives a ModelRunner without the engine's cache manager: each sequence is handed pages from a
// shuffled list as it grows (tables cover its whole length; window and source rings are never
// released). For tests, benchmarks and tools that hold a runner to a reference step by step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/runner/model_runner.h"
#include "kernels/kv_layout.h"

namespace nsa {

class DirectBatch {
 public:
  struct Work {
    int seq;
    std::vector<int> tokens;
    bool want_logits = true;
  };

  DirectBatch(ModelRunner& runner, uint64_t shuffle_seed) : runner_(runner) {
    free_.resize(runner.num_pages());
    std::iota(free_.begin(), free_.end(), 0);
    std::shuffle(free_.begin(), free_.end(), std::mt19937_64(shuffle_seed));
    const ModelConfig& c = runner.config();
    const KvLayout L = KvLayout::Make(c.num_layers, c.num_kv_heads, c.head_dim, c.v_head_dim, c.nsa);
    has_win_ = L.has_win;
    has_src_ = L.has_src_k || L.has_src_v;
  }

  int AddSequence() {
    seqs_.emplace_back();
    return static_cast<int>(seqs_.size()) - 1;
  }
  int64_t NumTokens(int seq) const { return seqs_[seq].num_tokens; }
  // Returns the sequence's pages to the free list (the sequence is empty afterwards).
  void Free(int seq) {
    Seq& s = seqs_[seq];
    for (std::vector<int32_t>* t : {&s.tables.raw, &s.tables.win, &s.tables.src}) {
      free_.insert(free_.end(), t->begin(), t->end());
      t->clear();
    }
    s.num_tokens = 0;
  }

  // Prefills `tokens` onto `seq` in steps of at most `chunk` tokens (chunked prefill); the last
  // step's logits.
  absl::StatusOr<std::vector<float>> Prefill(int seq, std::span<const int> tokens, int chunk) {
    if (chunk < 1) return absl::InvalidArgumentError("a prefill chunk must hold at least one token");
    std::vector<float> last;
    for (size_t i = 0; i < tokens.size(); i += chunk) {
      const size_t end = std::min(tokens.size(), i + static_cast<size_t>(chunk));
      Work w{seq, std::vector<int>(tokens.begin() + i, tokens.begin() + end), end == tokens.size()};
      auto out = Step({&w, 1});
      if (!out.ok()) return out.status();
      if (!out->empty()) last = std::move((*out)[0]);
    }
    return last;
  }

  // One runner step over the given sequences; logits of the entries that want them, in order.
  absl::StatusOr<std::vector<std::vector<float>>> Step(std::span<const Work> work) {
    std::vector<RunnerSeq> rs;
    for (const Work& w : work) {
      Seq& s = seqs_[w.seq];
      const int64_t end = s.num_tokens + static_cast<int64_t>(w.tokens.size());
      const int page_tokens = runner_.config().nsa.select_block;
      while (static_cast<int64_t>(s.tables.raw.size()) * page_tokens < end) {
        for (std::vector<int32_t>* t : {&s.tables.raw, has_win_ ? &s.tables.win : nullptr, has_src_ ? &s.tables.src : nullptr}) {
          if (t == nullptr) continue;
          if (free_.empty()) return absl::ResourceExhaustedError(absl::StrCat("out of KV pages at ", end, " tokens"));
          t->push_back(free_.back());
          free_.pop_back();
        }
      }
      rs.push_back(RunnerSeq{static_cast<SeqId>(w.seq), &s.tables, s.num_tokens, w.tokens, {}, w.want_logits});
    }
    auto out = runner_.Execute(rs);
    if (out.ok()) {
      for (const Work& w : work) seqs_[w.seq].num_tokens += static_cast<int64_t>(w.tokens.size());
    }
    return out;
  }

 private:
  struct Seq {
    PageTables tables;
    int64_t num_tokens = 0;
  };
  ModelRunner& runner_;
  std::vector<int32_t> free_;
  std::vector<Seq> seqs_;
  bool has_win_ = false, has_src_ = false;
};

}  // namespace nsa
