#include "engine/runner/cpu_runner.h"

#include <omp.h>

#include "absl/strings/str_cat.h"

namespace nsa {

CpuRunner::CpuRunner(std::unique_ptr<NsaModel> model, int32_t num_pages)
    : model_(std::move(model)), pool_(model_->config(), num_pages) {}

int32_t CpuRunner::PagesFor(const ModelConfig& config, int64_t bytes) { return HostKvPool::PagesForBytes(config, bytes); }

std::string CpuRunner::Describe() const {
  return absl::StrCat("cpu (float32 reference), ", omp_get_max_threads(), " threads, ", pool_.num_pages(), " KV pages of ",
                      pool_.layout().page_tokens, " tokens");
}

absl::StatusOr<std::vector<std::vector<float>>> CpuRunner::Execute(std::span<const RunnerSeq> seqs) {
  std::vector<std::vector<float>> logits;
  for (const RunnerSeq& s : seqs) {
    pool_.ApplyCopies(s.copies);
    PagedKvStore store = pool_.Store(*s.tables, s.first_token);
    std::vector<float> out = model_->Forward(s.tokens, store, nullptr, s.want_logits);
    if (s.want_logits) logits.push_back(std::move(out));
  }
  return logits;
}

}  // namespace nsa
