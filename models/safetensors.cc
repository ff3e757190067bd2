#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace nsa {
namespace {

using Json = nlohmann::json;

// A header larger than this is not a real model; refusing it bounds the memory a hostile file can
// make the JSON parser allocate.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// Same bound for model.safetensors.index.json.
constexpr uint64_t kMaxIndexBytes = uint64_t{100} << 20;

constexpr char kSingleFileName[] = "model.safetensors";
constexpr char kIndexFileName[] = "model.safetensors.index.json";

// Debian's Abseil is built with its own absl::string_view, which std::string_view does not
// convert to implicitly.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Names come from untrusted files; escaping keeps control bytes out of logs.
std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CEscape(s), "\""); }

std::string ErrnoText(int err) { return std::strerror(err); }

absl::Status FileError(const std::string& path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

absl::Status TensorError(const std::string& path, absl::string_view tensor,
                         absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": tensor ", Quote(tensor), ": ", message));
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Parses `text` and rejects duplicate object keys at any depth. nlohmann keeps the last of
// duplicates silently, which would let a header hide a tensor (or a weight map hide a shard).
// Returns a discarded value on any error, with `*duplicate` set when that was the cause.
Json ParseJsonStrict(const char* begin, const char* end, std::string* duplicate) {
  std::vector<std::set<std::string>> keys;
  bool failed = false;
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    if (failed) return false;
    switch (event) {
      case Json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(key).second) {
            *duplicate = key;
            failed = true;
            return false;
          }
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json json = Json::parse(begin, end, callback, /*allow_exceptions=*/false);
  if (failed) return Json(Json::value_t::discarded);
  return json;
}

// nlohmann stores non-negative integers as unsigned and negative ones as signed; floats (even
// integral ones like 4.0) are rejected because the format stores integers.
bool GetNonNegativeInt(const Json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

// Reads a whole small file; NotFound when it does not exist.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": ", ErrnoText(err)));
    return FileError(path, absl::StrCat("cannot open: ", ErrnoText(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return FileError(path, absl::StrCat("file of ", st.st_size, " bytes is larger than the ",
                                        max_bytes, " allowed"));
  }
  std::string text;
  char buffer[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return FileError(path, absl::StrCat("read failed: ", ErrnoText(err)));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > max_bytes) {
      ::close(fd);
      return FileError(path, "file grew while being read");
    }
  }
  ::close(fd);
  return text;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string JoinPath(const std::string& dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

// Writes all of `size` bytes at `offset`; pwrite may write less than asked for large buffers.
absl::Status PwriteAll(int fd, const std::string& path, const void* data, size_t size,
                       size_t offset) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // Linux caps one write at about 2 GiB; asking for less keeps every call well-defined.
    size_t chunk = std::min<size_t>(size, size_t{1} << 30);
    ssize_t n = ::pwrite(fd, p, chunk, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FileError(path, absl::StrCat("write failed: ", ErrnoText(errno)));
    }
    if (n == 0) return FileError(path, "write made no progress");
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  // Names the safetensors format defines but this engine does not compute in; telling them apart
  // from garbage points at the fix (convert the checkpoint) rather than at a corrupt file.
  static constexpr std::string_view kKnownUnsupported[] = {
      "F64",    "I64",      "U64",      "I32",    "U32",      "I16",      "U16",
      "I8",     "U8",       "BOOL",     "F8_E4M3", "F8_E5M2", "F8_E8M0",  "F8_E4M3FNUZ",
      "F8_E5M2FNUZ", "F6_E2M3", "F6_E3M2", "F4",  "C64",      "C128",
  };
  for (std::string_view known : kKnownUnsupported) {
    if (name == known) return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", Sv(name)));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", Quote(Sv(name))));
}

int64_t TensorInfo::NumElements() const {
  // A zero anywhere wins even when the other dimensions would overflow.
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// ----------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  // Not make_unique: the constructor is private.
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": ", ErrnoText(err)));
    return FileError(path, absl::StrCat("cannot open: ", ErrnoText(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return FileError(path, absl::StrCat("fstat failed: ", ErrnoText(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return FileError(path, absl::StrCat("file of ", file_size,
                                        " bytes is too short for the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int mmap_errno = errno;
  // The mapping keeps the file alive; the descriptor is no longer needed.
  ::close(fd);
  if (map == MAP_FAILED) {
    return FileError(path, absl::StrCat("mmap failed: ", ErrnoText(mmap_errno)));
  }
  file->map_ = map;
  file->map_size_ = file_size;
  const auto* bytes = static_cast<const unsigned char*>(map);

  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes) {
    return FileError(path, absl::StrCat("header length ", header_size, " exceeds the ",
                                        kMaxHeaderBytes, "-byte limit"));
  }
  if (header_size > file_size - 8) {
    return FileError(path, absl::StrCat("header length ", header_size, " runs past the end of the ",
                                        file_size, "-byte file"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  const uint64_t data_size = file_size - 8 - header_size;
  file->data_ = reinterpret_cast<const std::byte*>(bytes + 8 + header_size);

  std::string duplicate;
  Json json = ParseJsonStrict(header, header + header_size, &duplicate);
  if (json.is_discarded()) {
    if (!duplicate.empty()) {
      return FileError(path, absl::StrCat("header has duplicate key ", Quote(duplicate)));
    }
    return FileError(path, "header is not valid JSON");
  }
  if (!json.is_object()) return FileError(path, "header is not a JSON object");

  std::vector<TensorInfo> tensors;
  tensors.reserve(json.size());
  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return FileError(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return FileError(path, absl::StrCat("__metadata__ value for ", Quote(key),
                                              " is not a string"));
        }
        file->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) return TensorError(path, name, "entry is not an object");

    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end()) return TensorError(path, name, "missing dtype");
    if (!dtype_it->is_string()) return TensorError(path, name, "dtype is not a string");
    absl::StatusOr<DType> dtype = ParseDType(dtype_it->get_ref<const std::string&>());
    if (!dtype.ok()) return TensorError(path, name, dtype.status().message());

    auto shape_it = entry.find("shape");
    if (shape_it == entry.end()) return TensorError(path, name, "missing shape");
    if (!shape_it->is_array()) return TensorError(path, name, "shape is not an array");
    std::vector<int64_t> shape;
    shape.reserve(shape_it->size());
    for (const Json& dim : *shape_it) {
      uint64_t d;
      if (!GetNonNegativeInt(dim, &d) ||
          d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return TensorError(path, name,
                           absl::StrCat("shape ", shape_it->dump(-1, ' ', false,
                                                                 Json::error_handler_t::replace),
                                        " is not a list of non-negative integers"));
      }
      shape.push_back(static_cast<int64_t>(d));
    }

    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end()) return TensorError(path, name, "missing data_offsets");
    uint64_t begin = 0, end = 0;
    if (!offsets_it->is_array() || offsets_it->size() != 2 ||
        !GetNonNegativeInt((*offsets_it)[0], &begin) ||
        !GetNonNegativeInt((*offsets_it)[1], &end)) {
      return TensorError(path, name, "data_offsets is not a pair of non-negative integers");
    }
    if (begin > end) {
      return TensorError(path, name,
                         absl::StrCat("data_offsets [", begin, ", ", end, ") end before they begin"));
    }
    if (end > data_size) {
      return TensorError(path, name,
                         absl::StrCat("data_offsets [", begin, ", ", end,
                                      ") run past the data section of ", data_size, " bytes"));
    }

    // Overflow-checked: an absurd shape must not wrap around to a plausible byte count.
    uint64_t needed = DTypeSize(*dtype);
    bool overflow = false;
    bool has_zero = std::find(shape.begin(), shape.end(), 0) != shape.end();
    if (has_zero) {
      needed = 0;
    } else {
      for (int64_t d : shape) {
        if (__builtin_mul_overflow(needed, static_cast<uint64_t>(d), &needed)) {
          overflow = true;
          break;
        }
      }
    }
    if (overflow || needed != end - begin) {
      return TensorError(
          path, name,
          absl::StrCat("data_offsets [", begin, ", ", end, ") hold ", end - begin,
                       " bytes but shape ", ShapeText(shape), " x ", Sv(DTypeName(*dtype)), " needs ",
                       overflow ? std::string("more than 2^64") : absl::StrCat(needed)));
    }

    TensorInfo info;
    info.name = name;
    info.dtype = *dtype;
    info.shape = std::move(shape);
    info.begin = static_cast<size_t>(begin);
    info.end = static_cast<size_t>(end);
    tensors.push_back(std::move(info));
  }

  // File order: callers that stream weights then read the mapping front to back.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Empty tensors own no bytes, so they cannot overlap anything.
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin == t.end) continue;
    if (previous != nullptr && t.begin < previous->end) {
      return TensorError(path, t.name,
                         absl::StrFormat("data_offsets [%d, %d) overlap tensor %s at [%d, %d)",
                                         t.begin, t.end, Quote(previous->name), previous->begin,
                                         previous->end));
    }
    previous = &t;
  }

  for (size_t i = 0; i < tensors.size(); ++i) file->index_.emplace(tensors[i].name, i);
  file->tensors_ = std::move(tensors);
  return file;
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ----------------------------------------------------------------------------------------------
// SafetensorsSet

absl::StatusOr<SafetensorsSet> SafetensorsSet::OpenDirectory(const std::string& dir) {
  SafetensorsSet set;
  const std::string index_path = JoinPath(dir, kIndexFileName);

  if (!FileExists(index_path)) {
    const std::string single_path = JoinPath(dir, kSingleFileName);
    if (!FileExists(single_path)) {
      return absl::NotFoundError(absl::StrCat(dir, ": neither ", kIndexFileName, " nor ",
                                              kSingleFileName, " exists"));
    }
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(single_path);
    if (!opened.ok()) return opened.status();
    std::unique_ptr<SafetensorsFile> file = *std::move(opened);
    for (const TensorInfo& info : file->tensors()) {
      // A file cannot hold a name twice (duplicate keys are rejected), so emplace always inserts.
      set.entries_.emplace(info.name, Entry{file.get(), &info});
    }
    set.files_.push_back(std::move(file));
    return set;
  }

  absl::StatusOr<std::string> index_read = ReadSmallFile(index_path, kMaxIndexBytes);
  if (!index_read.ok()) return index_read.status();
  const std::string index_text = *std::move(index_read);
  std::string duplicate;
  Json index =
      ParseJsonStrict(index_text.data(), index_text.data() + index_text.size(), &duplicate);
  if (index.is_discarded()) {
    if (!duplicate.empty()) {
      return FileError(index_path, absl::StrCat("duplicate key ", Quote(duplicate)));
    }
    return FileError(index_path, "not valid JSON");
  }
  if (!index.is_object()) return FileError(index_path, "not a JSON object");
  auto map_it = index.find("weight_map");
  if (map_it == index.end()) return FileError(index_path, "missing weight_map");
  if (!map_it->is_object()) return FileError(index_path, "weight_map is not an object");

  // Validate every name before opening anything, so a bad index fails fast and names its entry.
  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return FileError(index_path,
                       absl::StrCat("weight_map entry for tensor ", Quote(tensor),
                                    " is not a string"));
    }
    const std::string& shard_name = shard.get_ref<const std::string&>();
    // The index is untrusted: a shard name must not reach outside the model directory.
    if (shard_name.empty() || shard_name == "." || shard_name == ".." ||
        shard_name.find('/') != std::string::npos || shard_name.find('\0') != std::string::npos) {
      return FileError(index_path, absl::StrCat("tensor ", Quote(tensor), " maps to shard ",
                                                Quote(shard_name),
                                                ", which is not a plain file name"));
    }
    tensors_by_shard[shard_name].push_back(tensor);
  }

  for (const auto& [shard_name, tensors] : tensors_by_shard) {
    const std::string shard_path = JoinPath(dir, shard_name);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(shard_path);
    if (!opened.ok()) {
      return absl::Status(opened.status().code(),
                          absl::StrCat(index_path, ": shard ", Quote(shard_name), " (of tensor ",
                                       Quote(tensors.front()), "): ", opened.status().message()));
    }
    std::unique_ptr<SafetensorsFile> file = *std::move(opened);
    for (const std::string& tensor : tensors) {
      if (file->Find(tensor) == nullptr) {
        return FileError(index_path, absl::StrCat("tensor ", Quote(tensor), " maps to shard ",
                                                  Quote(shard_name),
                                                  ", which does not contain it"));
      }
    }
    for (const TensorInfo& info : file->tensors()) {
      auto [it, inserted] = set.entries_.emplace(info.name, Entry{file.get(), &info});
      if (!inserted) {
        return FileError(index_path,
                         absl::StrCat("tensor ", Quote(info.name), " is in both shard ",
                                      Quote(it->second.file->path()), " and shard ",
                                      Quote(shard_path)));
      }
    }
    set.files_.push_back(std::move(file));
  }
  return set;
}

SafetensorsSet::Entry SafetensorsSet::Find(std::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return Entry{nullptr, nullptr};
  return it->second;
}

std::vector<std::string> SafetensorsSet::Names() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

size_t SafetensorsSet::TotalBytes() const {
  size_t total = 0;
  for (const auto& [name, entry] : entries_) total += entry.info->end - entry.info->begin;
  return total;
}

// ----------------------------------------------------------------------------------------------
// SafetensorsWriter

SafetensorsWriter::~SafetensorsWriter() {
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);
  }
}

void SafetensorsWriter::Declare(std::string name, DType dtype, std::vector<int64_t> shape) {
  Pending pending;
  pending.info.name = std::move(name);
  pending.info.dtype = dtype;
  pending.info.shape = std::move(shape);
  pending_.push_back(std::move(pending));
}

absl::Status SafetensorsWriter::Open() {
  if (opened_) return absl::FailedPreconditionError(absl::StrCat(dir_, ": writer opened twice"));

  // Declare cannot fail, so its arguments are checked here.
  by_name_.clear();
  std::vector<uint64_t> sizes(pending_.size());
  for (size_t i = 0; i < pending_.size(); ++i) {
    const TensorInfo& info = pending_[i].info;
    if (info.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat(dir_, ": tensor name \"__metadata__\" is reserved"));
    }
    if (!by_name_.emplace(info.name, i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir_, ": tensor ", Quote(info.name), " declared twice"));
    }
    int64_t elements = info.NumElements();
    uint64_t bytes = 0;
    if (elements < 0 || __builtin_mul_overflow(static_cast<uint64_t>(elements),
                                               DTypeSize(info.dtype), &bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(dir_, ": tensor ", Quote(info.name),
                                                     " has invalid shape ",
                                                     ShapeText(info.shape)));
    }
    sizes[i] = bytes;
  }

  // Greedy in declaration order, so shards follow the order the caller chose (usually layer
  // order); a tensor over the limit still fits in a shard of its own.
  std::vector<uint64_t> shard_bytes;
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (shard_bytes.empty() ||
        (shard_bytes.back() > 0 && shard_bytes.back() + sizes[i] > max_shard_bytes_)) {
      shard_bytes.push_back(0);
    }
    pending_[i].shard = static_cast<int>(shard_bytes.size() - 1);
    pending_[i].info.begin = shard_bytes.back();
    pending_[i].info.end = shard_bytes.back() + sizes[i];
    shard_bytes.back() += sizes[i];
  }
  if (shard_bytes.empty()) shard_bytes.push_back(0);  // no tensors: still a valid, empty file
  const size_t num_shards = shard_bytes.size();

  shard_names_.clear();
  if (num_shards == 1) {
    shard_names_.push_back(kSingleFileName);
  } else {
    for (size_t s = 0; s < num_shards; ++s) {
      shard_names_.push_back(
          absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, num_shards));
    }
  }

  // One JSON header per shard; dump can throw on names that are not UTF-8.
  std::vector<std::string> headers(num_shards);
  try {
    std::vector<Json> jsons(num_shards, Json::object());
    for (Json& j : jsons) j["__metadata__"] = {{"format", "pt"}};
    for (const Pending& p : pending_) {
      jsons[p.shard][p.info.name] = {{"dtype", std::string(Sv(DTypeName(p.info.dtype)))},
                                     {"shape", p.info.shape},
                                     {"data_offsets", {p.info.begin, p.info.end}}};
    }
    for (size_t s = 0; s < num_shards; ++s) headers[s] = jsons[s].dump();
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir_, ": cannot encode safetensors header: ", e.what()));
  }

  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir_, ": cannot create directory: ", ec.message()));
  }
  // The reader prefers an index over model.safetensors, so an index left by an earlier sharded
  // write into this directory would shadow a new single file.
  if (num_shards == 1) {
    const std::string stale_index = JoinPath(dir_, kIndexFileName);
    if (::unlink(stale_index.c_str()) != 0 && errno != ENOENT) {
      return FileError(stale_index, absl::StrCat("cannot remove stale index: ", ErrnoText(errno)));
    }
  }

  shard_data_start_.clear();
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);  // left by an earlier Open that failed part way
  }
  fds_.assign(num_shards, -1);
  for (size_t s = 0; s < num_shards; ++s) {
    std::string& header = headers[s];
    // Pad so the data starts 8-byte aligned: mapped tensors then keep their natural alignment.
    size_t padded = (8 + header.size() + 7) / 8 * 8 - 8;
    header.append(padded - header.size(), ' ');
    std::string prefix(8, '\0');
    uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
    header.insert(0, prefix);

    const std::string path = JoinPath(dir_, shard_names_[s]);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return FileError(path, absl::StrCat("cannot create: ", ErrnoText(errno)));
    fds_[s] = fd;
    if (absl::Status s = PwriteAll(fd, path, header.data(), header.size(), 0); !s.ok()) return s;
    // Pre-size so Writes can land in any order and a short file shows up as missing data.
    if (::ftruncate(fd, static_cast<off_t>(header.size() + shard_bytes[s])) != 0) {
      return FileError(path, absl::StrCat("ftruncate failed: ", ErrnoText(errno)));
    }
    shard_data_start_.push_back(header.size());
  }
  opened_ = true;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Write(std::string_view name, const std::byte* data,
                                      size_t nbytes) {
  if (!opened_) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir_, ": Write of tensor ", Quote(Sv(name)), " before Open"));
  }
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir_, ": tensor ", Quote(Sv(name)), " was not declared"));
  }
  Pending& p = pending_[it->second];
  const std::string path = JoinPath(dir_, shard_names_[p.shard]);
  if (fds_[p.shard] < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": Write after Close"));
  }
  if (p.written) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": tensor ", Quote(Sv(name)), " written twice"));
  }
  const size_t expected = p.info.end - p.info.begin;
  if (nbytes != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": tensor ", Quote(Sv(name)), ": got ", nbytes, " bytes but shape ",
        ShapeText(p.info.shape), " x ", Sv(DTypeName(p.info.dtype)), " needs ", expected));
  }
  if (absl::Status s = PwriteAll(fds_[p.shard], path, data, nbytes,
                                 shard_data_start_[p.shard] + p.info.begin);
      !s.ok()) {
    return s;
  }
  p.written = true;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Close() {
  if (!opened_) return absl::FailedPreconditionError(absl::StrCat(dir_, ": Close before Open"));
  for (const Pending& p : pending_) {
    if (!p.written) {
      return absl::FailedPreconditionError(
          absl::StrCat(JoinPath(dir_, shard_names_[p.shard]), ": tensor ", Quote(p.info.name),
                       " was declared but never written"));
    }
  }
  for (size_t s = 0; s < fds_.size(); ++s) {
    if (fds_[s] < 0) continue;
    int fd = fds_[s];
    fds_[s] = -1;
    // close reports deferred write errors (e.g. a full disk on NFS); they must not pass silently.
    if (::close(fd) != 0) {
      return FileError(JoinPath(dir_, shard_names_[s]),
                       absl::StrCat("close failed: ", ErrnoText(errno)));
    }
  }
  if (shard_names_.size() <= 1) return absl::OkStatus();

  uint64_t total = 0;
  Json weight_map = Json::object();
  for (const Pending& p : pending_) {
    total += p.info.end - p.info.begin;
    weight_map[p.info.name] = shard_names_[p.shard];
  }
  Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
  const std::string text = index.dump(2) + "\n";

  const std::string path = JoinPath(dir_, kIndexFileName);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FileError(path, absl::StrCat("cannot create: ", ErrnoText(errno)));
  absl::Status status = PwriteAll(fd, path, text.data(), text.size(), 0);
  if (::close(fd) != 0 && status.ok()) {
    status = FileError(path, absl::StrCat("close failed: ", ErrnoText(errno)));
  }
  return status;
}

}  // namespace nsa
