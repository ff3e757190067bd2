#include "models/presets.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/common/status.h"
#include "models/progress.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"

namespace nsa {

std::vector<std::string> PresetNames() { return {"tiny", "tiny-paper", "fla-340m", "1.3b", "7b", "paper"}; }

absl::StatusOr<ModelConfig> PresetConfig(const std::string& name) {
  ModelConfig c;
  c.max_position_embeddings = 131072;
  c.vocab_size = 32000;
  c.tie_word_embeddings = false;
  auto fla_blocks = [&c] {
    c.nsa = NsaParams{};  // l = d = l' = 64, 16 blocks, window 512, mean, identity, shared
  };
  if (name == "tiny" || name == "tiny-paper") {
    // Small enough for CI on 2 cores; blocks small enough that every branch matters within 256
    // tokens (16 selection blocks of which 4 are chosen, a 32-token window).
    c.vocab_size = 2048;
    c.hidden_size = 256;
    c.num_layers = 4;
    c.num_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 32;
    c.v_head_dim = 32;
    c.intermediate_size = FlaIntermediateSize(c.hidden_size, 4);
    c.max_position_embeddings = 4096;
    c.nsa.compress_block = c.nsa.compress_stride = c.nsa.select_block = 16;
    c.nsa.num_selected = 4;
    c.nsa.window = 32;
    if (name == "tiny-paper") {
      // The paper's structure scaled down: overlapping blocks (l = 2d), l' = 2l, learned linear
      // compression, per-branch K/V, value dim below key dim.
      c.head_dim = 48;
      c.v_head_dim = 32;
      c.nsa.compress_block = 8;
      c.nsa.compress_stride = 4;
      c.nsa.select_block = 16;
      c.nsa.compress_fn = CompressFn::kLinear;
      c.nsa.score_map = ScoreMap::kGeometric;
      c.nsa.kv_sharing = KvSharing::kPerBranch;
    }
  } else if (name == "fla-340m") {
    c.hidden_size = 1024, c.num_layers = 24, c.num_heads = 32, c.num_kv_heads = 2, c.head_dim = 64;
    c.v_head_dim = 64;
    c.intermediate_size = FlaIntermediateSize(c.hidden_size, 4);
    fla_blocks();
  } else if (name == "1.3b") {
    c.hidden_size = 2048, c.num_layers = 24, c.num_heads = 32, c.num_kv_heads = 2, c.head_dim = 128;
    c.v_head_dim = 128, c.intermediate_size = 5632;
    fla_blocks();
  } else if (name == "7b") {
    c.hidden_size = 4096, c.num_layers = 32, c.num_heads = 64, c.num_kv_heads = 4, c.head_dim = 128;
    c.v_head_dim = 128, c.intermediate_size = 11008;
    fla_blocks();
  } else if (name == "paper") {
    c.hidden_size = 2560, c.num_layers = 30, c.num_heads = 64, c.num_kv_heads = 4, c.head_dim = 192;
    c.v_head_dim = 128, c.intermediate_size = 6912;
    c.nsa.compress_block = 32, c.nsa.compress_stride = 16, c.nsa.select_block = 64;
    c.nsa.num_selected = 16, c.nsa.window = 512, c.nsa.init_blocks = 1, c.nsa.local_blocks = 2;
    c.nsa.compress_fn = CompressFn::kLinear;
    c.nsa.score_map = ScoreMap::kGeometric;
    c.nsa.kv_sharing = KvSharing::kPerBranch;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset \"", name, "\"; known: ", absl::StrJoin(PresetNames(), ", ")));
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

uint64_t HashName(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}

namespace {
uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

absl::Status WriteJson(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}
}  // namespace

float RandomWeight(uint64_t seed, uint64_t name_hash, int64_t index, float mean, float std) {
  // Counter-based: any element can be produced independently, so generation runs in parallel.
  const uint64_t bits = SplitMix(SplitMix(seed ^ name_hash) + static_cast<uint64_t>(index));
  const double u = (bits >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
  return mean + std * static_cast<float>((2.0 * u - 1.0) * std::sqrt(3.0));
}

absl::Status WriteRandomModel(const ModelConfig& config, const std::string& dir, const RandomModelOptions& options) {
  RETURN_IF_ERROR(config.Validate());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create directory: ", ec.message()));

  RETURN_IF_ERROR(WriteJson(dir + "/config.json", config.ToJson()));
  RETURN_IF_ERROR(WriteJson(dir + "/generation_config.json",
                            {{"bos_token_id", config.bos_token_id}, {"eos_token_id", config.eos_token_id}}));
  RETURN_IF_ERROR(WriteJson(dir + "/tokenizer_config.json", {{"add_bos_token", true},
                                                             {"add_eos_token", false},
                                                             {"bos_token", "<s>"},
                                                             {"eos_token", "</s>"},
                                                             {"unk_token", "<unk>"},
                                                             {"model_max_length", config.max_position_embeddings},
                                                             // ChatML, so the chat API works on random models.
                                                             {"chat_template",
                                                              "{% for message in messages %}{{ '<|im_start|>' + message['role'] + "
                                                              "'\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
                                                              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
                                                             {"tokenizer_class", "LlamaTokenizer"}}));

  const std::vector<TensorSpec> specs = ExpectedTensors(config);
  SafetensorsWriter writer(dir, options.max_shard_bytes);
  int64_t total = 0;
  for (const TensorSpec& s : specs) {
    writer.Declare(s.name, options.dtype, s.shape);
    total += s.NumElements() * static_cast<int64_t>(DTypeSize(options.dtype));
  }
  RETURN_IF_ERROR(writer.Open());
  std::unique_ptr<Progress> bar;
  if (options.progress) bar = std::make_unique<Progress>("writing weights", total, Progress::Unit::kBytes);
  const size_t elem = DTypeSize(options.dtype);
  for (const TensorSpec& s : specs) {
    const int64_t n = s.NumElements();
    const uint64_t name_hash = HashName(s.name);
    std::vector<float> values(n);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) values[i] = RandomWeight(options.seed, name_hash, i, s.init_mean, s.init_std);
    std::vector<std::byte> bytes(n * elem);
    ConvertFromFloat(options.dtype, values.data(), n, bytes.data());
    RETURN_IF_ERROR(writer.Write(s.name, bytes.data(), bytes.size()));
    if (bar) bar->Add(static_cast<int64_t>(bytes.size()));
  }
  return writer.Close();
}

ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed, DType dtype) {
  ModelWeights w;
  w.layers.resize(config.num_layers);
  const size_t elem = DTypeSize(dtype);
  for (const TensorSpec& s : ExpectedTensors(config)) {
    const int64_t n = s.NumElements();
    const uint64_t name_hash = HashName(s.name);
    std::vector<float>& values = s.layer >= 0 ? w.layers[s.layer].*s.layer_field : w.*s.model_field;
    values.resize(n);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) values[i] = RandomWeight(seed, name_hash, i, s.init_mean, s.init_std);
    std::vector<std::byte> bytes(n * elem);
    ConvertFromFloat(dtype, values.data(), n, bytes.data());
    ConvertToFloat(dtype, bytes.data(), n, values.data());
  }
  return w;
}

}  // namespace nsa
