// config.json parsing: fla-org's NSAConfig as saved by transformers, the paper's extension keys,
// and every contradiction nsa-spec.md section 2 says to reject.
#include "models/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "models/presets.h"
#include "nlohmann/json.hpp"

namespace nsa {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// A config.json as fla-org's NSAConfig.save_pretrained writes it (every key present).
json FlaConfig() {
  return json::parse(R"({
    "architectures": ["NSAForCausalLM"], "model_type": "nsa", "transformers_version": "4.51.3",
    "hidden_size": 1024, "num_hidden_layers": 24, "num_heads": 32, "num_kv_heads": 2, "head_dim": 64,
    "qkv_bias": false, "block_size": 64, "block_counts": 16, "window_size": 512, "rope_theta": 10000.0,
    "max_position_embeddings": 2048, "hidden_ratio": 4, "intermediate_size": null, "hidden_act": "swish",
    "initializer_range": 0.02, "elementwise_affine": true, "norm_eps": 1e-06, "use_cache": true,
    "pad_token_id": null, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false,
    "fuse_norm": true, "fuse_swiglu": true, "fuse_cross_entropy": true, "fuse_linear_cross_entropy": false,
    "use_l2warp": false, "vocab_size": 32000, "torch_dtype": "bfloat16"})");
}

absl::Status Parse(const json& j) { return ModelConfig::FromJson(j, "config.json").status(); }

TEST(ConfigTest, FlaCheckpointLoadsWithSpecDefaults) {
  auto c = ModelConfig::FromJson(FlaConfig(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->group_size(), 16);
  EXPECT_EQ(c->v_head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 2816);  // fla: int(1024 * 4 * 2 / 3) = 2730, rounded up to 256
  EXPECT_EQ(c->nsa.compress_block, 64);
  EXPECT_EQ(c->nsa.compress_stride, 64);
  EXPECT_EQ(c->nsa.select_block, 64);
  EXPECT_EQ(c->nsa.num_selected, 16);
  EXPECT_EQ(c->nsa.window, 512);
  EXPECT_EQ(c->nsa.init_blocks, 1);
  EXPECT_EQ(c->nsa.local_blocks, 2);
  EXPECT_EQ(c->nsa.compress_fn, CompressFn::kMean);
  EXPECT_EQ(c->nsa.score_map, ScoreMap::kIdentity);
  EXPECT_EQ(c->nsa.kv_sharing, KvSharing::kShared);
}

TEST(ConfigTest, PaperExtensionKeys) {
  json j = FlaConfig();
  j["head_dim"] = 192;
  j["v_head_dim"] = 128;
  j["compress_block_size"] = 32;
  j["compress_stride"] = 16;
  j["compress_fn"] = "linear";
  j["kv_sharing"] = "per_branch";
  auto c = ModelConfig::FromJson(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->nsa.score_map, ScoreMap::kGeometric);  // the default when l, d, l' differ
  EXPECT_EQ(c->v_head_dim, 128);
  EXPECT_EQ(c->nsa.compress_fn, CompressFn::kLinear);
  EXPECT_EQ(c->nsa.kv_sharing, KvSharing::kPerBranch);
}

TEST(ConfigTest, GeometricWeightsOfThePaperShape) {
  NsaParams p;
  p.compress_block = 32, p.compress_stride = 16, p.select_block = 64;
  for (int j = 1; j < 5; ++j) {
    EXPECT_EQ(p.GeometricWeight(4 * j - 2, j), 0);
    EXPECT_EQ(p.GeometricWeight(4 * j - 1, j), 1);
    EXPECT_EQ(p.GeometricWeight(4 * j + 0, j), 2);
    EXPECT_EQ(p.GeometricWeight(4 * j + 1, j), 2);
    EXPECT_EQ(p.GeometricWeight(4 * j + 2, j), 2);
    EXPECT_EQ(p.GeometricWeight(4 * j + 3, j), 1);
    EXPECT_EQ(p.GeometricWeight(4 * j + 4, j), 0);
  }
  NsaParams id;  // l = d = l': identity
  EXPECT_EQ(id.GeometricWeight(3, 3), 1);
  EXPECT_EQ(id.GeometricWeight(2, 3), 0);
}

TEST(ConfigTest, NumCompressedFollowsTheVisibilityRule) {
  NsaParams p;
  p.compress_block = 32, p.compress_stride = 16;
  EXPECT_EQ(p.NumCompressed(31), 0);
  EXPECT_EQ(p.NumCompressed(32), 1);  // block 0 ends at t = 31: visible to t = 31 itself
  EXPECT_EQ(p.NumCompressed(47), 1);
  EXPECT_EQ(p.NumCompressed(48), 2);
  EXPECT_EQ(p.NumCompressed(65536), 4095);  // the spec's 64k figure
}

struct BadCase {
  const char* name;
  json patch;
  const char* message;  // must appear in the error
};

class ConfigRejectTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigRejectTest, NamesTheKey) {
  json j = FlaConfig();
  j.merge_patch(GetParam().patch);
  absl::Status s = Parse(j);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(GetParam().message));
  EXPECT_THAT(std::string(s.message()), HasSubstr("config.json"));
}

INSTANTIATE_TEST_SUITE_P(
    Contradictions, ConfigRejectTest,
    ::testing::Values(
        BadCase{"stride_not_dividing_block", {{"compress_block_size", 32}, {"compress_stride", 12}}, "\"compress_stride\""},
        BadCase{"stride_not_dividing_select", {{"block_size", 40}, {"compress_block_size", 16}, {"compress_stride", 16}},
                "\"block_size\""},
        BadCase{"compress_longer_than_select", {{"compress_block_size", 128}, {"compress_stride", 64}}, "\"compress_block_size\""},
        BadCase{"identity_with_overlap", {{"compress_block_size", 32}, {"compress_stride", 16}, {"score_map", "identity"}},
                "\"score_map\""},
        BadCase{"forced_exceed_n", {{"block_counts", 2}, {"init_blocks", 1}, {"local_blocks", 2}}, "\"block_counts\""},
        BadCase{"heads_not_multiple", {{"num_kv_heads", 3}}, "\"num_kv_heads\""},
        BadCase{"odd_head_dim", {{"head_dim", 63}}, "\"head_dim\""},
        BadCase{"zero_window", {{"window_size", 0}}, "\"window_size\""},
        BadCase{"negative_layers", {{"num_hidden_layers", -1}}, "\"num_hidden_layers\""},
        BadCase{"unknown_compress_fn", {{"compress_fn", "max"}}, "\"compress_fn\""},
        BadCase{"unknown_score_map", {{"score_map", "soft"}}, "\"score_map\""},
        BadCase{"unknown_kv_sharing", {{"kv_sharing", "split"}}, "\"kv_sharing\""},
        BadCase{"string_for_int", {{"hidden_size", "1024"}}, "\"hidden_size\""},
        BadCase{"fraction_for_int", {{"block_counts", 2.5}}, "\"block_counts\""},
        BadCase{"bool_wrong_type", {{"qkv_bias", 1}}, "\"qkv_bias\""},
        BadCase{"other_model_type", {{"model_type", "llama"}}, "\"model_type\""},
        BadCase{"other_activation", {{"hidden_act", "gelu"}}, "\"hidden_act\""},
        BadCase{"eos_outside_vocab", {{"eos_token_id", 32000}}, "\"eos_token_id\""},
        BadCase{"bias_with_per_branch", {{"qkv_bias", true}, {"kv_sharing", "per_branch"}}, "\"qkv_bias\""}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ConfigTest, EveryPresetRoundTripsThroughJson) {
  for (const std::string& name : PresetNames()) {
    auto c = PresetConfig(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    auto back = ModelConfig::FromJson(c->ToJson(), name);
    ASSERT_TRUE(back.ok()) << name << ": " << back.status();
    EXPECT_EQ(back->ToJson(), c->ToJson()) << name;
  }
  EXPECT_FALSE(PresetConfig("13b").ok());
}

TEST(ConfigTest, MissingFileAndBadJson) {
  EXPECT_EQ(ModelConfig::FromFile("/nonexistent/config.json").status().code(), absl::StatusCode::kNotFound);
  const std::string path = ::testing::TempDir() + "/bad_config.json";
  FILE* f = fopen(path.c_str(), "w");
  fputs("{\"model_type\": \"nsa\",", f);
  fclose(f);
  absl::Status s = ModelConfig::FromFile(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("bad_config.json"));
}

}  // namespace
}  // namespace nsa
