// The backend interface: the engine hands each step's work to a runner as plain data and gets
// logits back. The CPU runner (cpu_runner.h) is the reference; the CUDA runner implements the
// same interface, so the scheduler and the servers do not change with the backend.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache/kv_cache_manager.h"
#include "models/config.h"

namespace nsa {

// One sequence's work in a step: write K/V for tokens [first_token, first_token + tokens.size())
// into its pages (after carrying out `copies`), and return the last token's logits if asked.
struct RunnerSeq {
  SeqId id;
  const PageTables* tables;
  int64_t first_token;
  std::span<const int> tokens;
  std::span<const PageCopy> copies;
  bool want_logits;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  // Pages of KV storage the runner holds (the cache manager's pool size).
  virtual int32_t num_pages() const = 0;
  virtual std::string Describe() const = 0;  // "cpu, 2 threads" / "cuda: NVIDIA H100 ..."
  // Logits ([vocab] each) of the sequences with want_logits, in order. An error fails the
  // step's sequences.
  virtual absl::StatusOr<std::vector<std::vector<float>>> Execute(std::span<const RunnerSeq> seqs) = 0;
};

}  // namespace nsa
