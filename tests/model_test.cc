// The CPU reference transformer: decode equals prefill at every position (chunked too), every
// weight dtype and the sharded layout load to the same model, and malformed model directories
// fail with errors that name the file and the tensor.
#include "models/nsa_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "models/presets.h"
#include "models/progress.h"
#include "models/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace nsa {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string TempModelDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/model_test_" + name + "_" + std::to_string(getpid());
  fs::remove_all(dir);
  return dir;
}

std::string WriteModel(const std::string& preset, const std::string& name, DType dtype = DType::kF32,
                       size_t max_shard = size_t{1} << 30, uint64_t seed = 5) {
  Progress::SetEnabled(false);
  const std::string dir = TempModelDir(name);
  RandomModelOptions options;
  options.seed = seed;
  options.dtype = dtype;
  options.max_shard_bytes = max_shard;
  options.progress = false;
  const absl::Status s = WriteRandomModel(PresetConfig(preset).value(), dir, options);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

class DecodeEqualsPrefillTest : public ::testing::TestWithParam<std::string> {};

// nsa-spec.md section 6: token-by-token decoding gives the prefill's outputs at every position.
// Chunk sizes cross every block, stride and window boundary of the tiny presets.
TEST_P(DecodeEqualsPrefillTest, EveryPositionEveryChunking) {
  const std::string dir = WriteModel(GetParam(), "dep_" + GetParam());
  auto model = NsaModel::Load(dir, false);
  ASSERT_TRUE(model.ok()) << model.status();
  const int T = 150, V = (*model)->config().vocab_size;
  const std::vector<int> ids = RandomTokens(T, V, 42);

  ContiguousKvStore full_cache = (*model)->NewCache();
  std::vector<float> full;
  (*model)->Forward(ids, full_cache, &full);
  ASSERT_EQ(full.size(), size_t(T) * V);
  for (float x : full) ASSERT_TRUE(std::isfinite(x));

  for (int chunk : {1, 5, 16, 33}) {
    ContiguousKvStore cache = (*model)->NewCache();
    std::vector<float> part;
    for (int start = 0; start < T; start += chunk) {
      const int n = std::min(chunk, T - start);
      (*model)->Forward(std::span<const int>(ids.data() + start, n), cache, &part);
      for (int i = 0; i < n; ++i) {
        for (int v = 0; v < V; ++v) {
          // The same arithmetic in the same order: equal to the bit.
          ASSERT_EQ(part[size_t(i) * V + v], full[size_t(start + i) * V + v])
              << "chunk " << chunk << " position " << start + i << " token " << v;
        }
      }
    }
    EXPECT_EQ(cache.num_tokens(), T);
    EXPECT_EQ(cache.num_summaries(), (*model)->config().nsa.NumCompressed(T));
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, DecodeEqualsPrefillTest, ::testing::Values("tiny", "tiny-paper"),
                         [](const auto& info) { return info.param == "tiny" ? std::string("fla") : std::string("paper"); });

std::vector<float> Logits(const std::string& dir, const std::vector<int>& ids) {
  auto model = NsaModel::Load(dir, false);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  ContiguousKvStore cache = (*model)->NewCache();
  return (*model)->Forward(ids, cache);
}

TEST(ModelLoadTest, ShardedEqualsSingleFileAndDtypesAgree) {
  const std::vector<int> ids = RandomTokens(40, 2048, 1);
  const std::vector<float> single = Logits(WriteModel("tiny", "single"), ids);
  const std::string sharded_dir = WriteModel("tiny", "sharded", DType::kF32, 512 * 1024);
  EXPECT_TRUE(fs::exists(sharded_dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(sharded_dir + "/model.safetensors"));
  EXPECT_EQ(Logits(sharded_dir, ids), single);

  double scale = 0;
  for (float x : single) scale = std::max(scale, double(std::abs(x)));
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    const std::vector<float> got = Logits(WriteModel("tiny", std::string(DTypeName(dtype)), dtype), ids);
    ASSERT_EQ(got.size(), single.size());
    double err = 0;
    for (size_t i = 0; i < got.size(); ++i) err = std::max(err, double(std::abs(got[i] - single[i])));
    // Rounding the weights moves the logits a little, never a lot.
    EXPECT_GT(err, 0.0) << DTypeName(dtype);
    EXPECT_LT(err / scale, dtype == DType::kF16 ? 5e-3 : 5e-2) << DTypeName(dtype);
  }
}

TEST(ModelLoadTest, RandomWeightsAreAFunctionOfTheSeed) {
  auto bytes = [](const std::string& dir) {
    std::ifstream in(dir + "/model.safetensors", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string a = bytes(WriteModel("tiny", "seed_a", DType::kBF16, size_t{1} << 30, 3));
  const std::string b = bytes(WriteModel("tiny", "seed_b", DType::kBF16, size_t{1} << 30, 3));
  const std::string c = bytes(WriteModel("tiny", "seed_c", DType::kBF16, size_t{1} << 30, 4));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a.size(), c.size());
}

// Rewrites dir's weights with one tensor left out, one reshaped, or one extra.
void RewriteWeights(const std::string& dir, const std::string& drop, const std::string& reshape, const std::string& extra) {
  auto set = SafetensorsSet::OpenDirectory(dir);
  ASSERT_TRUE(set.ok());
  std::vector<std::pair<std::string, std::vector<std::byte>>> data;
  SafetensorsWriter writer(dir + ".new");
  for (const std::string& name : set->Names()) {
    if (name == drop) continue;
    auto e = set->Find(name);
    std::vector<int64_t> shape = e.info->shape;
    if (name == reshape) std::swap(shape[0], shape[1]);
    writer.Declare(name, e.info->dtype, shape);
    data.emplace_back(name, std::vector<std::byte>(e.file->Data(*e.info), e.file->Data(*e.info) + (e.info->end - e.info->begin)));
  }
  if (!extra.empty()) {
    writer.Declare(extra, DType::kF32, {2});
    data.emplace_back(extra, std::vector<std::byte>(8));
  }
  ASSERT_TRUE(writer.Open().ok());
  for (auto& [name, bytes] : data) ASSERT_TRUE(writer.Write(name, bytes.data(), bytes.size()).ok());
  ASSERT_TRUE(writer.Close().ok());
  fs::rename(dir + ".new/model.safetensors", dir + "/model.safetensors");
}

absl::Status LoadStatus(const std::string& dir) { return NsaModel::Load(dir, false).status(); }

TEST(ModelLoadTest, MissingTensorIsNamed) {
  const std::string dir = WriteModel("tiny", "missing");
  RewriteWeights(dir, "model.layers.2.attn.g_proj.weight", "", "");
  const absl::Status s = LoadStatus(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"model.layers.2.attn.g_proj.weight\" is missing"));
}

TEST(ModelLoadTest, WrongShapeIsNamed) {
  const std::string dir = WriteModel("tiny", "shape");
  RewriteWeights(dir, "", "model.layers.1.mlp.up_proj.weight", "");
  const absl::Status s = LoadStatus(dir);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors: tensor \"model.layers.1.mlp.up_proj.weight\" has shape [256, 768]"));
}

TEST(ModelLoadTest, UnusedTensorIsRefused) {
  const std::string dir = WriteModel("tiny", "extra");
  RewriteWeights(dir, "", "", "model.layers.0.attn.q_proj.bias");
  const absl::Status s = LoadStatus(dir);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"model.layers.0.attn.q_proj.bias\" is not used by this config"));
}

TEST(ModelLoadTest, ConfigThatContradictsTheWeights) {
  const std::string dir = WriteModel("tiny", "contradict");
  nlohmann::json j;
  std::ifstream(dir + "/config.json") >> j;
  j["kv_sharing"] = "per_branch";  // the checkpoint has no k_cmp_proj/k_win_proj
  std::ofstream(dir + "/config.json") << j.dump();
  EXPECT_THAT(std::string(LoadStatus(dir).message()), HasSubstr("\"model.layers.0.attn.k_cmp_proj.weight\" is missing"));
  j["kv_sharing"] = "shared";
  j["compress_block_size"] = 12;  // d = 16 does not divide l = 12
  std::ofstream(dir + "/config.json") << j.dump();
  const absl::Status s = LoadStatus(dir);
  EXPECT_THAT(std::string(s.message()), HasSubstr("config.json"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"compress_stride\""));
}

TEST(ModelLoadTest, TruncatedWeightsNameTheFile) {
  const std::string dir = WriteModel("tiny", "truncated");
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 100);
  const absl::Status s = LoadStatus(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
}

TEST(ModelLoadTest, NonFiniteWeightsAreRefused) {
  const std::string dir = WriteModel("tiny", "nan");
  auto set = SafetensorsSet::OpenDirectory(dir);
  ASSERT_TRUE(set.ok());
  const size_t offset = set->Find("model.norm.weight").info->begin;
  std::ifstream in(dir + "/model.safetensors", std::ios::binary);
  uint64_t header = 0;
  in.read(reinterpret_cast<char*>(&header), 8);
  in.close();
  std::fstream f(dir + "/model.safetensors", std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(8 + header + offset);
  const float nan = std::nanf("");
  f.write(reinterpret_cast<const char*>(&nan), 4);
  f.close();
  EXPECT_THAT(std::string(LoadStatus(dir).message()), HasSubstr("\"model.norm.weight\" holds NaN or Inf"));
}

TEST(ModelLoadTest, MissingDirectory) {
  const absl::Status s = LoadStatus("/nonexistent/model");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("/nonexistent/model"));
}

}  // namespace
}  // namespace nsa
