// The CPU backend: the float32 reference model over host pages. Sequences of a step run one
// after another, each forward pass spread over the cores.
#pragma once

#include <memory>

#include "engine/kv_cache/host_kv_pool.h"
#include "engine/runner/model_runner.h"
#include "models/nsa_model.h"

namespace nsa {

class CpuRunner : public ModelRunner {
 public:
  CpuRunner(std::unique_ptr<NsaModel> model, int32_t num_pages);
  // Pages for `bytes` of host memory, at least enough for one sequence of max_model_len.
  static int32_t PagesFor(const ModelConfig& config, int64_t bytes);

  const ModelConfig& config() const override { return model_->config(); }
  int32_t num_pages() const override { return pool_.num_pages(); }
  std::string Describe() const override;
  absl::StatusOr<std::vector<std::vector<float>>> Execute(std::span<const RunnerSeq> seqs) override;

 private:
  std::unique_ptr<NsaModel> model_;
  HostKvPool pool_;
};

}  // namespace nsa
