// nsa-logits: prefills the first P tokens, decodes the rest one at a time, and writes the logits
// as raw little-endian float32 [1 + N - P][vocab]: row 0 at position P-1, row r at P-1+r.
// Used by tests/reference/compare_logits.py to hold the C++ model against the PyTorch one.
//
//   nsa-logits --model DIR --tokens 5,17,9,... --prompt-len P --out FILE
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "models/flags.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "models/nsa_model.h"
#include "models/progress.h"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, tokens, "", "comma-separated token ids");
ABSL_FLAG(int, prompt_len, 1, "tokens prefilled at once");
ABSL_FLAG(std::string, out, "", "output file");

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
  nsa::ContiguousKvStore cache = model.NewCache();
  std::vector<float> logits = model.Forward(std::span<const int>(ids.data(), p), cache);
  out.write(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
  for (size_t i = p; i < ids.size(); ++i) {
    logits = model.Forward(std::span<const int>(ids.data() + i, 1), cache);
    out.write(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
  }
  return out ? 0 : 2;
}
