// nsa-logits: prefills the first P tokens, decodes the rest one at a time, and writes the logits
// as raw little-endian float32 [1 + N - P][vocab]: row 0 at position P-1, row r at P-1+r.
// Used by tests/reference/compare_logits.py to hold the C++ model against the PyTorch one, on
// the CPU reference or (--backend cuda, on the GPU machine) the CUDA runner.
//
//   nsa-logits --model DIR --tokens 5,17,9,... --prompt-len P --out FILE [--backend cuda]
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "models/flags.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "models/nsa_model.h"
#include "models/progress.h"
#ifdef NSA_HAVE_CUDA
#include "engine/runner/cuda_runner.h"
#include "engine/runner/direct_batch.h"
#endif

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, tokens, "", "comma-separated token ids");
ABSL_FLAG(int, prompt_len, 1, "tokens prefilled at once");
ABSL_FLAG(std::string, out, "", "output file");
ABSL_FLAG(std::string, backend, "cpu", "cpu (the float32 reference) or cuda");

namespace {

#ifdef NSA_HAVE_CUDA
// The same rows from the CUDA runner: the prompt in one chunk, then one token a step.
int CudaLogits(const std::string& dir, const std::vector<int>& ids, int p, std::ofstream& out) {
  nsa::CudaRunnerOptions o;
  o.num_pages = 4096;
  o.max_num_seqs = 1;
  o.max_step_tokens = std::max<int64_t>(p, 1);
  o.max_context = static_cast<int64_t>(ids.size()) + 64;
  o.progress = false;
  auto runner = nsa::CudaRunner::Load(dir, o);
  if (!runner.ok()) {
    std::fprintf(stderr, "nsa-logits: %s\n", runner.status().ToString().c_str());
    return 2;
  }
  nsa::DirectBatch batch(**runner, 1);
  const int seq = batch.AddSequence();
  for (size_t i = 0; i < ids.size();) {
    const size_t n = i == 0 ? p : 1;
    nsa::DirectBatch::Work w{seq, std::vector<int>(ids.begin() + i, ids.begin() + i + n), true};
    auto logits = batch.Step({&w, 1});
    if (!logits.ok()) {
      std::fprintf(stderr, "nsa-logits: %s\n", logits.status().ToString().c_str());
      return 2;
    }
    out.write(reinterpret_cast<const char*>((*logits)[0].data()), (*logits)[0].size() * sizeof(float));
    i += n;
  }
  return out ? 0 : 2;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  nsa::ParseFlags(argc, argv);
  nsa::Progress::SetEnabled(false);
  auto model_or = nsa::NsaModel::Load(absl::GetFlag(FLAGS_model), false);
  if (!model_or.ok()) {
    std::fprintf(stderr, "nsa-logits: %s\n", model_or.status().ToString().c_str());
    return 2;
  }
  auto& model = **model_or;
  std::vector<int> ids;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',', absl::SkipEmpty())) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v < 0 || v >= model.config().vocab_size) {
      std::fprintf(stderr, "nsa-logits: bad token id \"%s\"\n", std::string(s).c_str());
      return 2;
    }
    ids.push_back(v);
  }
  const int p = absl::GetFlag(FLAGS_prompt_len);
  if (p < 1 || p > static_cast<int>(ids.size())) {
    std::fprintf(stderr, "nsa-logits: --prompt_len must be in [1, %zu]\n", ids.size());
    return 2;
  }
  std::ofstream out(absl::GetFlag(FLAGS_out), std::ios::binary);
  if (absl::GetFlag(FLAGS_backend) == "cuda") {
#ifdef NSA_HAVE_CUDA
    return CudaLogits(absl::GetFlag(FLAGS_model), ids, p, out);
#else
    std::fprintf(stderr, "nsa-logits: this build has no CUDA backend\n");
    return 2;
#endif
  }
  if (absl::GetFlag(FLAGS_backend) != "cpu") {
    std::fprintf(stderr, "nsa-logits: --backend must be cpu or cuda\n");
    return 2;
  }
  nsa::ContiguousKvStore cache = model.NewCache();
  std::vector<float> logits = model.Forward(std::span<const int>(ids.data(), p), cache);
  out.write(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
  for (size_t i = p; i < ids.size(); ++i) {
    logits = model.Forward(std::span<const int>(ids.data() + i, 1), cache);
    out.write(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
  }
  return out ? 0 : 2;
}
