// The backend interface: the engine hands each step's work to a runner as plain data and gets
// logits back. The CPU runner (cpu_runner.h) is the reference; the CUDA runner implements the
// same interface, so the scheduler and the servers do not change with the backend.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache/kv_cache_manager.h"
#include "engine/sampler/sampler.h"
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

// One draw from the logits a step left on the device (runners that sample there).
struct SampleDraw {
  int logits_row;  // which of the step's sequences with want_logits, in order
  const SamplingParams* params;
  const TokenHistory* history;  // for the penalties; may be null
  std::vector<int> banned;  // EOS and stop ids before min_tokens
  int vocab_limit;
  int num_top;  // < 0: no logprobs
  double u;  // Sampler::UniformFor of the sequence's own generator
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

  // Runners that sample where the logits are (the CUDA runner): ExecuteKeepingLogits runs the
  // step like Execute but leaves the logits there, and SampleLast draws from them (several draws
  // may read one row: n > 1). The engine uses this pair when SamplesOnDevice() is true.
  virtual bool SamplesOnDevice() const { return false; }
  virtual absl::Status ExecuteKeepingLogits(std::span<const RunnerSeq> seqs) {
    return absl::UnimplementedError("this runner samples on the host");
  }
  virtual absl::StatusOr<std::vector<SampleResult>> SampleLast(std::span<const SampleDraw> draws) {
    return absl::UnimplementedError("this runner samples on the host");
  }
};

}  // namespace nsa
