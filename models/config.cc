#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/common/status.h"
#include "nlohmann/json.hpp"

namespace nsa {
namespace {

using nlohmann::json;

// Reads an optional integer key; a present key of another type (or out of range) is an error.
absl::Status ReadInt(const json& j, const char* key, int* out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer() && !(it->is_number_float() && std::floor(it->get<double>()) == it->get<double>())) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"", key, "\" must be an integer, got ", it->dump()));
  }
  double v = it->get<double>();
  if (v < -2147483648.0 || v > 2147483647.0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"", key, "\" is out of range: ", it->dump()));
  }
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

template <typename T>
absl::Status ReadNumber(const json& j, const char* key, T* out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"", key, "\" must be a number, got ", it->dump()));
  }
  *out = static_cast<T>(it->get<double>());
  return absl::OkStatus();
}

absl::Status ReadBool(const json& j, const char* key, bool* out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"", key, "\" must be true or false, got ", it->dump()));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const json& j, const char* key, std::string* out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"", key, "\" must be a string, got ", it->dump()));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// eos_token_id may be a list in Hugging Face configs; the first entry is the one we stop on.
absl::Status ReadTokenId(const json& j, const char* key, int* out, const std::string& source) {
  auto it = j.find(key);
  if (it != j.end() && it->is_array()) {
    if (it->empty() || !(*it)[0].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": key \"", key, "\" must be an integer or a non-empty list of integers"));
    }
    *out = (*it)[0].get<int>();
    return absl::OkStatus();
  }
  return ReadInt(j, key, out, source);
}

}  // namespace

int FlaIntermediateSize(int hidden_size, double hidden_ratio) {
  int m = static_cast<int>(hidden_size * hidden_ratio * 2 / 3);
  return 256 * ((m + 256 - 1) / 256);
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const json& j, const std::string& source) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": config must be a JSON object"));
  ModelConfig c;
  RETURN_IF_ERROR(ReadString(j, "model_type", &c.model_type, source));
  if (c.model_type != "nsa") {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"model_type\" is \"", c.model_type,
                                                   "\"; this engine serves NSA models (\"nsa\")"));
  }
  RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c.vocab_size, source));
  RETURN_IF_ERROR(ReadInt(j, "hidden_size", &c.hidden_size, source));
  RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", &c.num_layers, source));
  RETURN_IF_ERROR(ReadInt(j, "num_heads", &c.num_heads, source));
  // fla's attention layer treats a null num_kv_heads as multi-head attention.
  if (auto it = j.find("num_kv_heads"); it != j.end() && it->is_null()) c.num_kv_heads = c.num_heads;
  RETURN_IF_ERROR(ReadInt(j, "num_kv_heads", &c.num_kv_heads, source));
  RETURN_IF_ERROR(ReadInt(j, "head_dim", &c.head_dim, source));
  c.v_head_dim = c.head_dim;
  RETURN_IF_ERROR(ReadInt(j, "v_head_dim", &c.v_head_dim, source));
  RETURN_IF_ERROR(ReadBool(j, "qkv_bias", &c.qkv_bias, source));
  RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings, source));
  RETURN_IF_ERROR(ReadNumber(j, "norm_eps", &c.norm_eps, source));
  RETURN_IF_ERROR(ReadNumber(j, "rope_theta", &c.rope_theta, source));
  RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", &c.max_position_embeddings, source));
  RETURN_IF_ERROR(ReadTokenId(j, "bos_token_id", &c.bos_token_id, source));
  RETURN_IF_ERROR(ReadTokenId(j, "eos_token_id", &c.eos_token_id, source));

  double hidden_ratio = 4;
  RETURN_IF_ERROR(ReadNumber(j, "hidden_ratio", &hidden_ratio, source));
  c.intermediate_size = 0;
  RETURN_IF_ERROR(ReadInt(j, "intermediate_size", &c.intermediate_size, source));
  if (c.intermediate_size == 0) c.intermediate_size = FlaIntermediateSize(c.hidden_size, hidden_ratio);

  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || (*it != "swish" && *it != "silu")) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": key \"hidden_act\" is ", it->dump(),
                                                     "; only \"swish\"/\"silu\" (SwiGLU) is supported"));
    }
  }

  NsaParams& n = c.nsa;
  int block_size = 64;
  RETURN_IF_ERROR(ReadInt(j, "block_size", &block_size, source));
  n.select_block = n.compress_block = n.compress_stride = block_size;
  RETURN_IF_ERROR(ReadInt(j, "compress_block_size", &n.compress_block, source));
  RETURN_IF_ERROR(ReadInt(j, "compress_stride", &n.compress_stride, source));
  RETURN_IF_ERROR(ReadInt(j, "block_counts", &n.num_selected, source));
  RETURN_IF_ERROR(ReadInt(j, "window_size", &n.window, source));
  RETURN_IF_ERROR(ReadInt(j, "init_blocks", &n.init_blocks, source));
  RETURN_IF_ERROR(ReadInt(j, "local_blocks", &n.local_blocks, source));

  std::string s = "mean";
  RETURN_IF_ERROR(ReadString(j, "compress_fn", &s, source));
  if (s == "mean") {
    n.compress_fn = CompressFn::kMean;
  } else if (s == "linear") {
    n.compress_fn = CompressFn::kLinear;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"compress_fn\" is \"", s, "\"; expected \"mean\" or \"linear\""));
  }
  const bool aligned = n.compress_block == n.compress_stride && n.compress_block == n.select_block;
  s = aligned ? "identity" : "geometric";
  RETURN_IF_ERROR(ReadString(j, "score_map", &s, source));
  if (s == "identity") {
    n.score_map = ScoreMap::kIdentity;
  } else if (s == "geometric") {
    n.score_map = ScoreMap::kGeometric;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"score_map\" is \"", s, "\"; expected \"identity\" or \"geometric\""));
  }
  s = "shared";
  RETURN_IF_ERROR(ReadString(j, "kv_sharing", &s, source));
  if (s == "shared") {
    n.kv_sharing = KvSharing::kShared;
  } else if (s == "per_branch") {
    n.kv_sharing = KvSharing::kPerBranch;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(source, ": key \"kv_sharing\" is \"", s, "\"; expected \"shared\" or \"per_branch\""));
  }
  RETURN_IF_ERROR(Annotate(c.Validate(), source));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return FromJson(j, path);
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](const char* key, int64_t v) -> absl::Status {
    if (v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\" must be positive, got ", v));
  };
  RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  RETURN_IF_ERROR(positive("num_hidden_layers", num_layers));
  RETURN_IF_ERROR(positive("num_heads", num_heads));
  RETURN_IF_ERROR(positive("num_kv_heads", num_kv_heads));
  RETURN_IF_ERROR(positive("head_dim", head_dim));
  RETURN_IF_ERROR(positive("v_head_dim", v_head_dim));
  RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  RETURN_IF_ERROR(positive("block_size", nsa.select_block));
  RETURN_IF_ERROR(positive("compress_block_size", nsa.compress_block));
  RETURN_IF_ERROR(positive("compress_stride", nsa.compress_stride));
  RETURN_IF_ERROR(positive("block_counts", nsa.num_selected));
  RETURN_IF_ERROR(positive("window_size", nsa.window));
  if (!(norm_eps > 0)) return absl::InvalidArgumentError("key \"norm_eps\" must be positive");
  if (!(rope_theta > 0)) return absl::InvalidArgumentError("key \"rope_theta\" must be positive");
  if (num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("key \"num_heads\" (", num_heads, ") must be a multiple of \"num_kv_heads\" (",
                                                   num_kv_heads, ")"));
  }
  if (head_dim % 2 != 0) return absl::InvalidArgumentError(absl::StrCat("key \"head_dim\" must be even for RoPE, got ", head_dim));
  if (nsa.compress_block % nsa.compress_stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat("key \"compress_stride\" (", nsa.compress_stride, ") must divide \"compress_block_size\" (",
                                                   nsa.compress_block, ")"));
  }
  if (nsa.select_block % nsa.compress_stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat("key \"compress_stride\" (", nsa.compress_stride, ") must divide \"block_size\" (",
                                                   nsa.select_block, ")"));
  }
  if (nsa.compress_block > nsa.select_block) {
    return absl::InvalidArgumentError(absl::StrCat("key \"compress_block_size\" (", nsa.compress_block, ") must not exceed \"block_size\" (",
                                                   nsa.select_block, ")"));
  }
  const bool aligned = nsa.compress_block == nsa.compress_stride && nsa.compress_block == nsa.select_block;
  if (nsa.score_map == ScoreMap::kIdentity && !aligned) {
    return absl::InvalidArgumentError(
        "key \"score_map\" is \"identity\" but compress_block_size, compress_stride and block_size differ; use \"geometric\"");
  }
  if (nsa.init_blocks < 0 || nsa.local_blocks < 0) {
    return absl::InvalidArgumentError("keys \"init_blocks\" and \"local_blocks\" must not be negative");
  }
  if (nsa.init_blocks + nsa.local_blocks > nsa.num_selected) {
    return absl::InvalidArgumentError(absl::StrCat("keys \"init_blocks\" + \"local_blocks\" (", nsa.init_blocks + nsa.local_blocks,
                                                   ") exceed \"block_counts\" (", nsa.num_selected, ")"));
  }
  if (qkv_bias && nsa.kv_sharing == KvSharing::kPerBranch) {
    return absl::InvalidArgumentError("key \"qkv_bias\" is not supported together with \"kv_sharing\": \"per_branch\"");
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("key \"bos_token_id\" (", bos_token_id, ") is outside the vocabulary of ", vocab_size));
  }
  if (eos_token_id < 0 || eos_token_id >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("key \"eos_token_id\" (", eos_token_id, ") is outside the vocabulary of ", vocab_size));
  }
  return absl::OkStatus();
}

uint64_t ModelConfig::Fingerprint() const {
  const std::string text = ToJson().dump();
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ull;
  return h;
}

json ModelConfig::ToJson() const {
  json j;
  j["model_type"] = model_type;
  j["architectures"] = json::array({"NSAForCausalLM"});
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_layers;
  j["num_heads"] = num_heads;
  j["num_kv_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["qkv_bias"] = qkv_bias;
  j["intermediate_size"] = intermediate_size;
  j["hidden_act"] = "swish";
  j["norm_eps"] = norm_eps;
  j["rope_theta"] = rope_theta;
  j["max_position_embeddings"] = max_position_embeddings;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["block_size"] = nsa.select_block;
  j["block_counts"] = nsa.num_selected;
  j["window_size"] = nsa.window;
  const bool aligned = nsa.compress_block == nsa.compress_stride && nsa.compress_block == nsa.select_block;
  if (!aligned) {
    j["compress_block_size"] = nsa.compress_block;
    j["compress_stride"] = nsa.compress_stride;
  }
  if (nsa.compress_fn == CompressFn::kLinear) j["compress_fn"] = "linear";
  if (nsa.score_map == ScoreMap::kGeometric) j["score_map"] = "geometric";
  if (nsa.init_blocks != 1) j["init_blocks"] = nsa.init_blocks;
  if (nsa.local_blocks != 2) j["local_blocks"] = nsa.local_blocks;
  if (v_head_dim != head_dim) j["v_head_dim"] = v_head_dim;
  if (nsa.kv_sharing == KvSharing::kPerBranch) j["kv_sharing"] = "per_branch";
  return j;
}

}  // namespace nsa
