#include "models/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nsa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using Json = nlohmann::json;

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir();
  if (!tmpl.empty() && tmpl.back() != '/') tmpl += '/';
  tmpl += "safetensors_test_XXXXXX";
  char* made = ::mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr) << "mkdtemp failed for " << tmpl;
  return tmpl;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string LengthPrefix(uint64_t n) {
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return prefix;
}

// A safetensors file from a literal header and `data_bytes` bytes of data.
std::string BuildFile(const std::string& header, size_t data_bytes) {
  std::string data(data_bytes, '\0');
  for (size_t i = 0; i < data_bytes; ++i) data[i] = static_cast<char>(i * 7 + 1);
  return LengthPrefix(header.size()) + header + data;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t ToHalfBits(DType dtype, float f) {
  std::byte out[2];
  ConvertFromFloat(dtype, &f, 1, out);
  uint16_t h;
  std::memcpy(&h, out, 2);
  return h;
}

float FromHalfBits(DType dtype, uint16_t h) {
  std::byte in[2];
  std::memcpy(in, &h, 2);
  float f;
  ConvertToFloat(dtype, in, 1, &f);
  return f;
}

std::vector<float> Ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = scale * std::sin(0.37f * static_cast<float>(i) + 0.1f) * (1.0f + static_cast<float>(i));
  }
  return v;
}

std::vector<std::byte> Encode(DType dtype, const std::vector<float>& values) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  ConvertFromFloat(dtype, values.data(), values.size(), bytes.data());
  return bytes;
}

std::vector<float> Decode(const SafetensorsFile& file, const TensorInfo& info) {
  std::vector<float> values(static_cast<size_t>(info.NumElements()));
  ConvertToFloat(info.dtype, file.Data(info), values.size(), values.data());
  return values;
}

// ------------------------------------------------------------------------------------------------
// DType and conversion

TEST(DTypeTest, NamesSizesAndParsing) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    absl::StatusOr<DType> parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, d);
  }
  absl::StatusOr<DType> unsupported = ParseDType("F8_E4M3");
  EXPECT_EQ(unsupported.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unsupported.status().message()), HasSubstr("unsupported dtype F8_E4M3"));
  absl::StatusOr<DType> unknown = ParseDType("FLOAT7");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("unknown dtype \"FLOAT7\""));
}

TEST(ConvertTest, BFloat16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between 0x3F80 and 0x3F81: ties go to the even 0x3F80.
  EXPECT_EQ(ToHalfBits(DType::kBF16, FromBits(0x3F808000)), 0x3F80);
  // Between 0x3F81 and 0x3F82: ties go to the even 0x3F82.
  EXPECT_EQ(ToHalfBits(DType::kBF16, FromBits(0x3F818000)), 0x3F82);
  EXPECT_EQ(ToHalfBits(DType::kBF16, FromBits(0x3F808001)), 0x3F81);
  EXPECT_EQ(ToHalfBits(DType::kBF16, FromBits(0x3F807FFF)), 0x3F80);
  EXPECT_EQ(ToHalfBits(DType::kBF16, FromBits(0xBF818000)), 0xBF82);
  EXPECT_EQ(ToHalfBits(DType::kBF16, std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(ToHalfBits(DType::kBF16, std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(ToHalfBits(DType::kBF16, -std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(ToHalfBits(DType::kBF16, -0.0f), 0x8000);
  // A NaN whose payload sits only in the truncated bits must stay NaN, not become infinity.
  EXPECT_TRUE(std::isnan(FromHalfBits(DType::kBF16, ToHalfBits(DType::kBF16, FromBits(0x7F800001)))));
  EXPECT_TRUE(std::isnan(FromHalfBits(DType::kBF16, ToHalfBits(DType::kBF16, FromBits(0xFF800001)))));
  EXPECT_EQ(FromHalfBits(DType::kBF16, 0x3F80), 1.0f);
  EXPECT_EQ(FromHalfBits(DType::kBF16, 0xC040), -3.0f);
}

TEST(ConvertTest, Float16RoundsToNearestEvenAndHandlesEdges) {
  EXPECT_EQ(ToHalfBits(DType::kF16, 1.0f), 0x3C00);
  EXPECT_EQ(ToHalfBits(DType::kF16, -2.0f), 0xC000);
  // 1 + 2^-11 is a tie between 0x3C00 and 0x3C01: even wins.
  EXPECT_EQ(ToHalfBits(DType::kF16, FromBits(0x3F801000)), 0x3C00);
  // 1 + 3 * 2^-11 is a tie between 0x3C01 and 0x3C02.
  EXPECT_EQ(ToHalfBits(DType::kF16, FromBits(0x3F803000)), 0x3C02);
  EXPECT_EQ(ToHalfBits(DType::kF16, FromBits(0x3F801001)), 0x3C01);
  // Largest finite, the overflow boundary (65520 ties up to infinity), and beyond.
  EXPECT_EQ(ToHalfBits(DType::kF16, 65504.0f), 0x7BFF);
  EXPECT_EQ(ToHalfBits(DType::kF16, 65519.0f), 0x7BFF);
  EXPECT_EQ(ToHalfBits(DType::kF16, 65520.0f), 0x7C00);
  EXPECT_EQ(ToHalfBits(DType::kF16, 1e9f), 0x7C00);
  EXPECT_EQ(ToHalfBits(DType::kF16, -1e9f), 0xFC00);
  EXPECT_EQ(ToHalfBits(DType::kF16, std::numeric_limits<float>::infinity()), 0x7C00);
  // Subnormals: 2^-24 is the smallest; 2^-25 ties to zero; 1.5 * 2^-24 ties up to 2 * 2^-24.
  EXPECT_EQ(ToHalfBits(DType::kF16, std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(ToHalfBits(DType::kF16, std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(ToHalfBits(DType::kF16, FromBits(0x33000001)), 0x0001);
  EXPECT_EQ(ToHalfBits(DType::kF16, std::ldexp(3.0f, -25)), 0x0002);
  EXPECT_EQ(ToHalfBits(DType::kF16, -std::ldexp(5.0f, -25)), 0x8002);  // 2.5 ties to 2
  EXPECT_EQ(ToHalfBits(DType::kF16, std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(ToHalfBits(DType::kF16, std::ldexp(1023.5f, -24)), 0x0400);  // rounds up to normal
  EXPECT_EQ(ToHalfBits(DType::kF16, 1e-30f), 0x0000);
  EXPECT_EQ(ToHalfBits(DType::kF16, -1e-30f), 0x8000);
  EXPECT_TRUE(std::isnan(FromHalfBits(DType::kF16, ToHalfBits(DType::kF16, FromBits(0x7F800001)))));
  EXPECT_EQ(FromHalfBits(DType::kF16, 0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(FromHalfBits(DType::kF16, 0x7BFF), 65504.0f);
  EXPECT_EQ(FromHalfBits(DType::kF16, 0xFC00), -std::numeric_limits<float>::infinity());
}

// Every 16-bit pattern must survive half -> float -> half (NaNs stay NaN).
TEST(ConvertTest, EveryHalfPatternRoundTrips) {
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    int mismatches = 0;
    for (uint32_t h = 0; h <= 0xFFFF; ++h) {
      float f = FromHalfBits(dtype, static_cast<uint16_t>(h));
      uint16_t back = ToHalfBits(dtype, f);
      if (std::isnan(f)) {
        if (!std::isnan(FromHalfBits(dtype, back))) ++mismatches;
      } else if (back != h) {
        ++mismatches;
      }
    }
    EXPECT_EQ(mismatches, 0) << DTypeName(dtype);
  }
}

TEST(ConvertTest, UnalignedBuffers) {
  std::vector<float> values = {1.5f, -2.25f, 3.0f};
  std::vector<std::byte> buffer(1 + values.size() * 4);
  ConvertFromFloat(DType::kF32, values.data(), values.size(), buffer.data() + 1);
  std::vector<float> back(values.size());
  ConvertToFloat(DType::kF32, buffer.data() + 1, values.size(), back.data());
  EXPECT_EQ(back, values);
  ConvertFromFloat(DType::kF16, values.data(), values.size(), buffer.data() + 1);
  ConvertToFloat(DType::kF16, buffer.data() + 1, values.size(), back.data());
  EXPECT_EQ(back, values);  // all exactly representable
}

// ------------------------------------------------------------------------------------------------
// Writer round trips

TEST(SafetensorsWriterTest, SingleFileRoundTripAllDTypes) {
  const std::string dir = MakeTempDir() + "/model";  // Open must create it
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<float> values;
  };
  std::vector<Spec> specs = {
      {"a.f32", DType::kF32, {3, 5}, Ramp(15, 1.0f)},
      {"b.f16", DType::kF16, {7}, Ramp(7, 3.0f)},  // odd: the next tensor starts unaligned
      {"c.f32_unaligned", DType::kF32, {2, 2}, Ramp(4, 100.0f)},
      {"d.bf16", DType::kBF16, {2, 3}, Ramp(6, 1e-3f)},
      {"e.empty", DType::kF32, {0, 4}, {}},
  };
  SafetensorsWriter writer(dir);
  for (const Spec& s : specs) writer.Declare(s.name, s.dtype, s.shape);
  ASSERT_TRUE(writer.Open().ok());
  // Reverse order: writes land by offset, not by sequence.
  for (auto it = specs.rbegin(); it != specs.rend(); ++it) {
    std::vector<std::byte> bytes = Encode(it->dtype, it->values);
    absl::Status status = writer.Write(it->name, bytes.data(), bytes.size());
    ASSERT_TRUE(status.ok()) << status;
  }
  absl::Status closed = writer.Close();
  ASSERT_TRUE(closed.ok()) << closed;
  EXPECT_FALSE(Exists(dir + "/model.safetensors.index.json"));

  const std::string path = dir + "/model.safetensors";
  std::string raw = ReadFile(path);
  ASSERT_GE(raw.size(), 8u);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ((8 + header_len) % 8, 0u) << "data section must start 8-byte aligned";

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->tensors().size(), specs.size());
  for (const Spec& s : specs) {
    const TensorInfo* info = (*file)->Find(s.name);
    ASSERT_NE(info, nullptr) << s.name;
    EXPECT_EQ(info->dtype, s.dtype);
    EXPECT_EQ(info->shape, s.shape);
    EXPECT_EQ(info->end - info->begin, s.values.size() * DTypeSize(s.dtype));
    std::vector<float> back = Decode(**file, *info);
    ASSERT_EQ(back.size(), s.values.size());
    for (size_t i = 0; i < back.size(); ++i) {
      float tolerance = s.dtype == DType::kF32   ? 0.0f
                        : s.dtype == DType::kF16 ? std::ldexp(std::fabs(s.values[i]), -11)
                                                 : std::ldexp(std::fabs(s.values[i]), -8);
      EXPECT_LE(std::fabs(back[i] - s.values[i]), tolerance) << s.name << "[" << i << "]";
    }
  }
  EXPECT_EQ((*file)->Find("missing"), nullptr);

  absl::StatusOr<SafetensorsSet> set = SafetensorsSet::OpenDirectory(dir);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->Names().size(), specs.size());
  EXPECT_EQ(set->TotalBytes(), 15u * 4 + 7 * 2 + 4 * 4 + 6 * 2);
  SafetensorsSet::Entry entry = set->Find("d.bf16");
  ASSERT_NE(entry.file, nullptr);
  EXPECT_EQ(entry.file->path(), path);
  EXPECT_EQ(entry.info->shape, (std::vector<int64_t>{2, 3}));
  SafetensorsSet::Entry absent = set->Find("nope");
  EXPECT_EQ(absent.file, nullptr);
  EXPECT_EQ(absent.info, nullptr);
}

TEST(SafetensorsWriterTest, ShardedRoundTrip) {
  const std::string dir = MakeTempDir();
  // 100-byte shards, greedy in declaration order:
  //   shard 1: w0 (40) + w1 (40); shard 2: w2 (40); shard 3: big (200, alone);
  //   shard 4: w3 (8) + empty (0).
  struct Spec {
    std::string name;
    std::vector<int64_t> shape;
    int shard;
  };
  std::vector<Spec> specs = {{"w0", {10}, 1}, {"w1", {2, 5}, 1}, {"w2", {10}, 2},
                             {"big", {50}, 3}, {"w3", {2}, 4},    {"empty", {0}, 4}};
  SafetensorsWriter writer(dir, /*max_shard_bytes=*/100);
  for (const Spec& s : specs) writer.Declare(s.name, DType::kF32, s.shape);
  ASSERT_TRUE(writer.Open().ok());
  std::map<std::string, std::vector<float>> values;
  for (size_t i = 0; i < specs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : specs[i].shape) n *= d;
    values[specs[i].name] = Ramp(static_cast<size_t>(n), static_cast<float>(i + 1));
  }
  for (const auto& [name, v] : values) {
    std::vector<std::byte> bytes = Encode(DType::kF32, v);
    ASSERT_TRUE(writer.Write(name, bytes.data(), bytes.size()).ok()) << name;
  }
  absl::Status closed = writer.Close();
  ASSERT_TRUE(closed.ok()) << closed;

  EXPECT_FALSE(Exists(dir + "/model.safetensors"));
  const std::string index_path = dir + "/model.safetensors.index.json";
  ASSERT_TRUE(Exists(index_path));
  Json index = Json::parse(ReadFile(index_path));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 40u + 40 + 40 + 200 + 8);
  for (const Spec& s : specs) {
    char shard_name[64];
    std::snprintf(shard_name, sizeof(shard_name), "model-%05d-of-00004.safetensors", s.shard);
    EXPECT_EQ(index["weight_map"][s.name], shard_name) << s.name;
  }

  absl::StatusOr<SafetensorsSet> set = SafetensorsSet::OpenDirectory(dir);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->Names().size(), specs.size());
  EXPECT_EQ(set->TotalBytes(), 328u);
  for (const Spec& s : specs) {
    SafetensorsSet::Entry entry = set->Find(s.name);
    ASSERT_NE(entry.file, nullptr) << s.name;
    char shard_name[64];
    std::snprintf(shard_name, sizeof(shard_name), "/model-%05d-of-00004.safetensors", s.shard);
    EXPECT_EQ(entry.file->path(), dir + shard_name);
    EXPECT_EQ(Decode(*entry.file, *entry.info), values[s.name]) << s.name;
  }
}

TEST(SafetensorsWriterTest, SingleShardReplacesStaleIndex) {
  const std::string dir = MakeTempDir();
  {
    SafetensorsWriter writer(dir, 8);
    writer.Declare("x", DType::kF32, {2});
    writer.Declare("y", DType::kF32, {2});
    ASSERT_TRUE(writer.Open().ok());
    std::vector<std::byte> bytes(8);
    ASSERT_TRUE(writer.Write("x", bytes.data(), 8).ok());
    ASSERT_TRUE(writer.Write("y", bytes.data(), 8).ok());
    ASSERT_TRUE(writer.Close().ok());
    ASSERT_TRUE(Exists(dir + "/model.safetensors.index.json"));
  }
  SafetensorsWriter writer(dir);
  writer.Declare("z", DType::kBF16, {3});
  ASSERT_TRUE(writer.Open().ok());
  std::vector<std::byte> bytes(6);
  ASSERT_TRUE(writer.Write("z", bytes.data(), 6).ok());
  ASSERT_TRUE(writer.Close().ok());
  absl::StatusOr<SafetensorsSet> set = SafetensorsSet::OpenDirectory(dir);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_NE(set->Find("z").file, nullptr);
  EXPECT_EQ(set->Find("x").file, nullptr);
}

TEST(SafetensorsWriterTest, MisuseIsReported) {
  const std::string dir = MakeTempDir();
  {
    SafetensorsWriter writer(dir);
    writer.Declare("a", DType::kF32, {2});
    std::vector<std::byte> bytes(8);
    EXPECT_EQ(writer.Write("a", bytes.data(), 8).code(), absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(writer.Open().ok());
    absl::Status undeclared = writer.Write("b", bytes.data(), 8);
    EXPECT_EQ(undeclared.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(undeclared.message()), HasSubstr("\"b\""));
    absl::Status wrong_size = writer.Write("a", bytes.data(), 4);
    EXPECT_EQ(wrong_size.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(wrong_size.message()),
                AllOf(HasSubstr("model.safetensors"), HasSubstr("\"a\""), HasSubstr("needs 8")));
    absl::Status missing = writer.Close();
    EXPECT_EQ(missing.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(missing.message()), HasSubstr("never written"));
  }
  {
    SafetensorsWriter writer(dir);
    writer.Declare("a", DType::kF32, {2});
    writer.Declare("a", DType::kF32, {2});
    absl::Status twice = writer.Open();
    EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(twice.message()), HasSubstr("declared twice"));
  }
  {
    SafetensorsWriter writer(dir);
    writer.Declare("neg", DType::kF32, {-1});
    EXPECT_EQ(writer.Open().code(), absl::StatusCode::kInvalidArgument);
  }
}

// ------------------------------------------------------------------------------------------------
// Malformed files

class MalformedTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }

  // Writes `bytes` as <dir>/model.safetensors, opens it and checks the failure.
  void ExpectOpenError(const std::string& bytes, absl::StatusCode code,
                       const std::vector<std::string>& substrings) {
    const std::string path = dir_ + "/model.safetensors";
    WriteFile(path, bytes);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << "opened unexpectedly";
    EXPECT_EQ(file.status().code(), code) << file.status();
    std::string message(file.status().message());
    EXPECT_THAT(message, HasSubstr(path));
    for (const std::string& s : substrings) EXPECT_THAT(message, HasSubstr(s));
    // The directory reader must surface the same error.
    absl::StatusOr<SafetensorsSet> set = SafetensorsSet::OpenDirectory(dir_);
    EXPECT_FALSE(set.ok());
    EXPECT_THAT(std::string(set.status().message()), HasSubstr(path));
  }

  std::string ValidFile() {
    return BuildFile(
        R"({"__metadata__":{"format":"pt"},)"
        R"("model.layers.0.attn.q_proj.weight":{"dtype":"BF16","shape":[4,8],"data_offsets":[0,64]},)"
        R"("norm":{"dtype":"F32","shape":[4],"data_offsets":[64,80]}})",
        80);
  }

  std::string dir_;
};

TEST_F(MalformedTest, ValidFileOpens) {
  const std::string path = dir_ + "/model.safetensors";
  WriteFile(path, ValidFile());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  // Tensors are listed in file order.
  EXPECT_EQ((*file)->tensors()[0].name, "model.layers.0.attn.q_proj.weight");
  EXPECT_EQ((*file)->tensors()[1].name, "norm");
  EXPECT_EQ((*file)->tensors()[0].NumElements(), 32);
}

TEST_F(MalformedTest, ShorterThanLengthPrefix) {
  ExpectOpenError("abc", absl::StatusCode::kInvalidArgument, {"too short"});
  ExpectOpenError("", absl::StatusCode::kInvalidArgument, {"too short"});
}

TEST_F(MalformedTest, TruncatedInHeader) {
  std::string bytes = ValidFile();
  ExpectOpenError(bytes.substr(0, 30), absl::StatusCode::kInvalidArgument,
                  {"runs past the end"});
}

TEST_F(MalformedTest, TruncatedInData) {
  std::string bytes = ValidFile();
  ExpectOpenError(bytes.substr(0, bytes.size() - 10), absl::StatusCode::kInvalidArgument,
                  {"tensor \"norm\"", "data_offsets [64, 80)", "data section of 70 bytes"});
}

TEST_F(MalformedTest, HeaderLengthBeyondFile) {
  std::string bytes = ValidFile();
  ExpectOpenError(LengthPrefix(bytes.size()) + bytes.substr(8), absl::StatusCode::kInvalidArgument,
                  {"header length"});
  ExpectOpenError(LengthPrefix(uint64_t{1} << 62) + bytes.substr(8),
                  absl::StatusCode::kInvalidArgument, {"header length"});
  ExpectOpenError(LengthPrefix(~uint64_t{0}) + bytes.substr(8),
                  absl::StatusCode::kInvalidArgument, {"header length"});
}

TEST_F(MalformedTest, BadHeaderJson) {
  ExpectOpenError(BuildFile(R"({"a": {"dtype": "F32",)", 0), absl::StatusCode::kInvalidArgument,
                  {"not valid JSON"});
  ExpectOpenError(BuildFile("{} trailing", 0), absl::StatusCode::kInvalidArgument,
                  {"not valid JSON"});
  ExpectOpenError(BuildFile(std::string("{\"\xff\":1}"), 0), absl::StatusCode::kInvalidArgument,
                  {"not valid JSON"});
}

TEST_F(MalformedTest, DeeplyNestedHeaderDoesNotCrash) {
  ExpectOpenError(BuildFile(std::string(200000, '['), 0), absl::StatusCode::kInvalidArgument,
                  {"not valid JSON"});
  ExpectOpenError(BuildFile(std::string(100000, '[') + std::string(100000, ']'), 0),
                  absl::StatusCode::kInvalidArgument, {"not a JSON object"});
}

TEST_F(MalformedTest, HeaderNotAnObject) {
  ExpectOpenError(BuildFile("[1, 2]", 0), absl::StatusCode::kInvalidArgument,
                  {"not a JSON object"});
  ExpectOpenError(BuildFile("\"x\"", 0), absl::StatusCode::kInvalidArgument,
                  {"not a JSON object"});
}

TEST_F(MalformedTest, EntryNotAnObject) {
  ExpectOpenError(BuildFile(R"({"t": [1, 2]})", 0), absl::StatusCode::kInvalidArgument,
                  {"tensor \"t\"", "not an object"});
}

TEST_F(MalformedTest, DuplicateTensorName) {
  ExpectOpenError(
      BuildFile(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                R"("t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                8),
      absl::StatusCode::kInvalidArgument, {"duplicate key \"t\""});
}

TEST_F(MalformedTest, OffsetsOutOfRange) {
  ExpectOpenError(BuildFile(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16),
                  absl::StatusCode::kInvalidArgument,
                  {"tensor \"w\"", "data_offsets [8, 24)", "16 bytes"});
  ExpectOpenError(BuildFile(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[20,20]}})", 16),
                  absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "data section"});
  ExpectOpenError(
      BuildFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,0]}})", 16),
      absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "end before they begin"});
  ExpectOpenError(
      BuildFile(R"({"w":{"dtype":"F32","shape":[1],)"
                R"("data_offsets":[18446744073709551612,18446744073709551616]}})",
                16),
      absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "data_offsets"});
}

TEST_F(MalformedTest, OverlappingTensors) {
  ExpectOpenError(BuildFile(R"({"first":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                            R"("second":{"dtype":"F16","shape":[4],"data_offsets":[12,20]}})",
                            20),
                  absl::StatusCode::kInvalidArgument,
                  {"tensor \"second\"", "overlap tensor \"first\""});
  // Same range twice.
  ExpectOpenError(BuildFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                            8),
                  absl::StatusCode::kInvalidArgument, {"overlap"});
}

TEST_F(MalformedTest, EmptyTensorsAreAllowedAnywhere) {
  const std::string path = dir_ + "/model.safetensors";
  WriteFile(path, BuildFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                            R"("e":{"dtype":"BF16","shape":[3,0],"data_offsets":[8,8]},)"
                            R"("s":{"dtype":"F32","shape":[],"data_offsets":[16,20]},)"
                            R"("z":{"dtype":"F16","shape":[0],"data_offsets":[20,20]}})",
                            20));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("e")->NumElements(), 0);
  EXPECT_EQ((*file)->Find("s")->NumElements(), 1);  // a scalar
}

TEST_F(MalformedTest, ShapeDisagreesWithByteLength) {
  ExpectOpenError(
      BuildFile(R"({"model.layers.0.attn.q_proj.weight":)"
                R"({"dtype":"BF16","shape":[4,8],"data_offsets":[0,100]}})",
                100),
      absl::StatusCode::kInvalidArgument,
      {"tensor \"model.layers.0.attn.q_proj.weight\": data_offsets [0, 100) hold 100 bytes but "
       "shape [4, 8] x BF16 needs 64"});
  // A shape whose byte count overflows 64 bits must not wrap around to match.
  ExpectOpenError(
      BuildFile(R"({"huge":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})",
                0),
      absl::StatusCode::kInvalidArgument, {"tensor \"huge\"", "more than 2^64"});
  ExpectOpenError(
      BuildFile(R"({"wrap":{"dtype":"F32","shape":[4611686018427387905],"data_offsets":[0,4]}})",
                4),
      absl::StatusCode::kInvalidArgument, {"tensor \"wrap\""});
}

TEST_F(MalformedTest, UnknownDType) {
  ExpectOpenError(BuildFile(R"({"w":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1),
                  absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "unknown dtype \"Q7\""});
  ExpectOpenError(BuildFile(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", 1),
                  absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "dtype is not a string"});
}

TEST_F(MalformedTest, UnsupportedDType) {
  ExpectOpenError(BuildFile(R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8),
                  absl::StatusCode::kInvalidArgument, {"tensor \"ids\"", "unsupported dtype I64"});
  ExpectOpenError(BuildFile(R"({"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
                  absl::StatusCode::kInvalidArgument,
                  {"tensor \"q\"", "unsupported dtype F8_E4M3"});
}

TEST_F(MalformedTest, BadShape) {
  for (const char* shape : {"[-1, 4]", "[4.0]", "[\"4\"]", "[null]", "4", "[[4]]",
                            "[18446744073709551615]", "[1e3]"}) {
    SCOPED_TRACE(shape);
    ExpectOpenError(BuildFile(absl::StrCat(R"({"w":{"dtype":"F32","shape":)", shape,
                                           R"(,"data_offsets":[0,16]}})"),
                              16),
                    absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "shape"});
  }
  ExpectOpenError(BuildFile(R"({"w":{"dtype":"F32","data_offsets":[0,16]}})", 16),
                  absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "missing shape"});
}

TEST_F(MalformedTest, BadDataOffsets) {
  ExpectOpenError(BuildFile(R"({"w":{"dtype":"F32","shape":[4]}})", 16),
                  absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "missing data_offsets"});
  for (const char* offsets : {"[0]", "[0, 8, 16]", "[-1, 15]", "[0.0, 16]", "\"0-16\"", "{}"}) {
    SCOPED_TRACE(offsets);
    ExpectOpenError(BuildFile(absl::StrCat(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":)",
                                           offsets, "}}"),
                              16),
                    absl::StatusCode::kInvalidArgument, {"tensor \"w\"", "data_offsets"});
  }
}

TEST_F(MalformedTest, BadMetadata) {
  ExpectOpenError(BuildFile(R"({"__metadata__":{"format":1}})", 0),
                  absl::StatusCode::kInvalidArgument, {"__metadata__", "\"format\""});
  ExpectOpenError(BuildFile(R"({"__metadata__":["pt"]})", 0), absl::StatusCode::kInvalidArgument,
                  {"__metadata__ is not an object"});
}

TEST_F(MalformedTest, MissingFileIsNotFound) {
  const std::string path = dir_ + "/absent.safetensors";
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
  // A directory is not a weights file.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> dir = SafetensorsFile::Open(dir_);
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------------
// Directories and indexes

class DirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }

  void WriteShard(const std::string& name, const std::vector<std::string>& tensors) {
    std::string header = "{";
    size_t offset = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      header += absl::StrCat(i ? "," : "", "\"", tensors[i],
                             R"(":{"dtype":"F32","shape":[2],"data_offsets":[)", offset, ",",
                             offset + 8, "]}");
      offset += 8;
    }
    header += "}";
    WriteFile(dir_ + "/" + name, BuildFile(header, offset));
  }

  void WriteIndex(const std::string& weight_map_json) {
    WriteFile(dir_ + "/model.safetensors.index.json",
              absl::StrCat(R"({"metadata":{"total_size":0},"weight_map":)", weight_map_json, "}"));
  }

  void ExpectDirError(absl::StatusCode code, const std::vector<std::string>& substrings) {
    absl::StatusOr<SafetensorsSet> set = SafetensorsSet::OpenDirectory(dir_);
    ASSERT_FALSE(set.ok());
    EXPECT_EQ(set.status().code(), code) << set.status();
    std::string message(set.status().message());
    EXPECT_THAT(message, HasSubstr(dir_));
    for (const std::string& s : substrings) EXPECT_THAT(message, HasSubstr(s));
  }

  std::string dir_;
};

TEST_F(DirectoryTest, HandWrittenIndexOpens) {
  WriteShard("a.safetensors", {"x", "y"});
  WriteShard("b.safetensors", {"z"});
  WriteIndex(R"({"x":"a.safetensors","y":"a.safetensors","z":"b.safetensors"})");
  absl::StatusOr<SafetensorsSet> set = SafetensorsSet::OpenDirectory(dir_);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->Names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(set->Find("z").file->path(), dir_ + "/b.safetensors");
  EXPECT_EQ(set->Find("x").file, set->Find("y").file);  // each shard opened once
  EXPECT_EQ(set->TotalBytes(), 24u);
}

TEST_F(DirectoryTest, NoWeights) {
  ExpectDirError(absl::StatusCode::kNotFound, {"model.safetensors"});
  absl::StatusOr<SafetensorsSet> missing_dir = SafetensorsSet::OpenDirectory(dir_ + "/nothing");
  EXPECT_EQ(missing_dir.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DirectoryTest, IndexNamesMissingShard) {
  WriteShard("a.safetensors", {"x"});
  WriteIndex(R"({"x":"a.safetensors","y":"gone.safetensors"})");
  ExpectDirError(absl::StatusCode::kNotFound,
                 {"model.safetensors.index.json", "\"gone.safetensors\"", "\"y\""});
}

TEST_F(DirectoryTest, IndexNamesTensorAbsentFromShard) {
  WriteShard("a.safetensors", {"x"});
  WriteShard("b.safetensors", {"z"});
  WriteIndex(R"({"x":"a.safetensors","w":"b.safetensors","z":"b.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument,
                 {"tensor \"w\"", "\"b.safetensors\"", "does not contain it"});
}

TEST_F(DirectoryTest, TensorInTwoShards) {
  WriteShard("a.safetensors", {"x", "dup"});
  WriteShard("b.safetensors", {"dup", "z"});
  WriteIndex(R"({"x":"a.safetensors","dup":"a.safetensors","z":"b.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument,
                 {"tensor \"dup\"", "a.safetensors", "b.safetensors"});
}

TEST_F(DirectoryTest, BadIndex) {
  WriteShard("a.safetensors", {"x"});
  WriteIndex(R"({"x":"../a.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"tensor \"x\"", "not a plain file name"});
  WriteIndex(R"({"x":"/etc/passwd"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"not a plain file name"});
  WriteIndex(R"({"x":".."})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"not a plain file name"});
  WriteIndex(R"({"x":3})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"tensor \"x\"", "not a string"});
  WriteIndex(R"(["a.safetensors"])");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"weight_map is not an object"});
  WriteIndex(R"({"x":"a.safetensors","x":"a.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"duplicate key \"x\""});
  WriteFile(dir_ + "/model.safetensors.index.json", "{not json");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"model.safetensors.index.json"});
  WriteFile(dir_ + "/model.safetensors.index.json", R"({"metadata":{}})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, {"missing weight_map"});
}

TEST_F(DirectoryTest, CorruptShardNamesShardAndFile) {
  WriteFile(dir_ + "/a.safetensors", BuildFile(R"({"x":{"dtype":"F32","shape":[3],)"
                                               R"("data_offsets":[0,8]}})",
                                               8));
  WriteIndex(R"({"x":"a.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument,
                 {dir_ + "/a.safetensors", "tensor \"x\"", "needs 12"});
}

// ------------------------------------------------------------------------------------------------
// Corrupted inputs must fail cleanly (run under ASan/UBSan to catch out-of-bounds reads).

// Opens `bytes` as a file; on success touches every tensor's bytes so a bad bound would be caught.
bool OpenAndTouch(const std::string& path, const std::string& bytes) {
  WriteFile(path, bytes);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) {
    EXPECT_NE(file.status().code(), absl::StatusCode::kOk);
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
    return false;
  }
  for (const TensorInfo& info : (*file)->tensors()) {
    EXPECT_LE(info.begin, info.end);
    EXPECT_LE(info.end, bytes.size());
    EXPECT_EQ(static_cast<size_t>(info.NumElements()) * DTypeSize(info.dtype),
              info.end - info.begin);
    std::vector<float> values = Decode(**file, info);
    (void)values;
  }
  return true;
}

TEST(SafetensorsFuzzTest, CorruptedFilesNeverCrash) {
  const std::string dir = MakeTempDir();
  {
    SafetensorsWriter writer(dir);
    writer.Declare("layer.0.w", DType::kBF16, {3, 4});
    writer.Declare("layer.0.b", DType::kF32, {4});
    writer.Declare("layer.1.w", DType::kF16, {5});
    writer.Declare("empty", DType::kF32, {0});
    ASSERT_TRUE(writer.Open().ok());
    for (const char* name : {"layer.0.w", "layer.0.b", "layer.1.w", "empty"}) {
      std::vector<std::byte> bytes(name == std::string("layer.0.w")   ? 24
                                   : name == std::string("layer.0.b") ? 16
                                   : name == std::string("layer.1.w") ? 10
                                                                      : 0);
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 13);
      ASSERT_TRUE(writer.Write(name, bytes.data(), bytes.size()).ok());
    }
    ASSERT_TRUE(writer.Close().ok());
  }
  const std::string original = ReadFile(dir + "/model.safetensors");
  const std::string path = dir + "/fuzz.safetensors";
  ASSERT_TRUE(OpenAndTouch(path, original));

  int ok = 0, failed = 0;
  // Every truncation: only the full length may succeed.
  for (size_t len = 0; len < original.size(); ++len) {
    EXPECT_FALSE(OpenAndTouch(path, original.substr(0, len))) << "truncated to " << len;
  }
  std::mt19937 rng(12345);
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string bytes = original;
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations; ++m) {
      const size_t pos = rng() % bytes.size();
      switch (rng() % 6) {
        case 0:  // flip one bit
          bytes[pos] = static_cast<char>(bytes[pos] ^ (1 << (rng() % 8)));
          break;
        case 1:  // random byte
          bytes[pos] = static_cast<char>(rng());
          break;
        case 2:  // a digit, to nudge offsets and shapes
          bytes[pos] = static_cast<char>('0' + rng() % 10);
          break;
        case 3:  // JSON punctuation
          bytes[pos] = "{}[],:\"-."[rng() % 9];
          break;
        case 4:  // truncate
          bytes.resize(pos);
          break;
        case 5:  // the length prefix
          bytes[rng() % std::min<size_t>(8, bytes.size())] = static_cast<char>(rng());
          break;
      }
      if (bytes.empty()) break;
    }
    (OpenAndTouch(path, bytes) ? ok : failed)++;
  }
  // Sanity: the mutations produced both outcomes, so the test exercises both paths.
  EXPECT_GT(failed, 1000);
  EXPECT_GT(ok, 0);
}

}  // namespace
}  // namespace nsa
