// Safetensors files: a memory-mapped reader that validates the whole header before any tensor is
// used, and a writer (single file or shards with model.safetensors.index.json).
//
// File layout: [u64 little-endian N][N bytes of JSON header][data]. The header maps each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end)} relative to the start of the data;
// "__metadata__" holds string pairs. The reader rejects, naming the file and the tensor: a file
// shorter than its header, header JSON that does not parse or has the wrong types, an unknown
// dtype, offsets out of range or overlapping, and shape x dtype size != end - begin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "models/dtype.h"

namespace nsa {

std::string_view DTypeName(DType dtype);  // "F32", "F16", "BF16"
absl::StatusOr<DType> ParseDType(std::string_view name);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t begin = 0;  // byte offsets into the data section, half-open
  size_t end = 0;
  int64_t NumElements() const;
};

// One mapped .safetensors file. Immutable after Open; safe to read from any thread.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* Find(std::string_view name) const;  // nullptr when absent
  const std::byte* Data(const TensorInfo& info) const { return data_ + info.begin; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const std::byte* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a model directory: model.safetensors, or the shards that
// model.safetensors.index.json names (every shard must exist and hold the tensors the index
// assigns to it; a tensor in two shards is an error).
class SafetensorsSet {
 public:
  static absl::StatusOr<SafetensorsSet> OpenDirectory(const std::string& dir);

  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  // nullopt-like: file == nullptr when absent.
  Entry Find(std::string_view name) const;
  std::vector<std::string> Names() const;
  size_t TotalBytes() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> entries_;
};

// Writes a model's weights. Declare every tensor first, then Write each one's bytes in any order.
// Files above max_shard_bytes are split into model-0000i-of-0000n.safetensors plus the index.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string dir, size_t max_shard_bytes = size_t{5} << 30)
      : dir_(std::move(dir)), max_shard_bytes_(max_shard_bytes) {}
  ~SafetensorsWriter();  // closes any files still open (without an index)
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  void Declare(std::string name, DType dtype, std::vector<int64_t> shape);
  // Lays out the shards and writes the headers; after this, Write may be called.
  absl::Status Open();
  // Writes the bytes of a declared tensor (size must be shape x dtype size).
  absl::Status Write(std::string_view name, const std::byte* data, size_t nbytes);
  // Checks every tensor was written, closes the files and writes the index when sharded.
  absl::Status Close();

 private:
  struct Pending {
    TensorInfo info;
    int shard = 0;
    bool written = false;
  };
  std::string dir_;
  size_t max_shard_bytes_;
  std::vector<Pending> pending_;
  std::map<std::string, size_t, std::less<>> by_name_;  // name -> index in pending_
  bool opened_ = false;
  std::vector<std::string> shard_names_;
  std::vector<size_t> shard_data_start_;  // file offset where each shard's data begins
  std::vector<int> fds_;
};

}  // namespace nsa
