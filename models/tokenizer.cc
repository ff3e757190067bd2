#include "models/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <sstream>

#ifndef NSA_SENTENCEPIECE_MODULE_PATH
#define NSA_SENTENCEPIECE_MODULE_PATH ""
#endif

namespace nsa {
namespace {

// sentencepiece lives in its own module (sentencepiece_shim.cc says why); these are its entries.
struct Module {
  void* (*load)(const char*, char*, int);
  void (*free)(void*);
  int (*encode)(void*, const char*, int, int*, int);
  int (*decode)(void*, const int*, int, char*, int);
  int (*piece)(void*, int, char*, int);
  int (*size)(void*);
  int (*bos)(void*);
  int (*eos)(void*);
  int (*is_control)(void*, int);
  int (*train)(const char*, char*, int);
  std::string error;
};

std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("NSA_SENTENCEPIECE_MODULE")) paths.push_back(env);
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back((exe.parent_path() / "libnsa_sentencepiece.so").string());
    paths.push_back((exe.parent_path().parent_path() / "lib" / "libnsa_sentencepiece.so").string());
  }
  if (*NSA_SENTENCEPIECE_MODULE_PATH) paths.push_back(NSA_SENTENCEPIECE_MODULE_PATH);
  return paths;
}

const Module& GetModule() {
  static Module m;
  static std::once_flag once;
  std::call_once(once, [] {
    void* handle = nullptr;
    std::string tried;
    for (const std::string& path : Candidates()) {
      handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle) break;
      tried += " " + path;
    }
    if (!handle) {
      m.error = "cannot load the sentencepiece module libnsa_sentencepiece.so (tried" + tried +
                "); set NSA_SENTENCEPIECE_MODULE to its path";
      return;
    }
    auto sym = [&](auto& fn, const char* name) { fn = reinterpret_cast<std::decay_t<decltype(fn)>>(dlsym(handle, name)); };
    sym(m.load, "nsa_spm_load");
    sym(m.free, "nsa_spm_free");
    sym(m.encode, "nsa_spm_encode");
    sym(m.decode, "nsa_spm_decode");
    sym(m.piece, "nsa_spm_piece");
    sym(m.size, "nsa_spm_size");
    sym(m.bos, "nsa_spm_bos");
    sym(m.eos, "nsa_spm_eos");
    sym(m.is_control, "nsa_spm_is_control");
    sym(m.train, "nsa_spm_train");
    if (!m.load || !m.train) m.error = "libnsa_sentencepiece.so lacks its entry points";
  });
  return m;
}

// Calls fn(buffer, capacity) until the result fits.
template <typename T, typename Fn>
std::vector<T> Grow(Fn fn, int first) {
  std::vector<T> buf(std::max(first, 16));
  int n = fn(buf.data(), static_cast<int>(buf.size()));
  if (n > static_cast<int>(buf.size())) {
    buf.resize(n);
    n = fn(buf.data(), n);
  }
  buf.resize(n);
  return buf;
}

}  // namespace

struct Tokenizer::Impl {
  const Module* m;
  void* sp;
  ~Impl() { m->free(sp); }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path, std::string* error) {
  const Module& m = GetModule();
  if (!m.error.empty()) {
    *error = m.error;
    return nullptr;
  }
  char message[512] = {0};
  void* sp = m.load(path.c_str(), message, sizeof(message));
  if (sp == nullptr) {
    *error = path + ": cannot load sentencepiece model: " + message;
    return nullptr;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::unique_ptr<Impl>(new Impl{&m, sp})));
}

std::vector<int> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids = Grow<int>(
      [&](int* out, int cap) { return impl_->m->encode(impl_->sp, text.data(), static_cast<int>(text.size()), out, cap); },
      static_cast<int>(text.size()) + 1);
  if (add_bos && bos_id() >= 0) ids.insert(ids.begin(), bos_id());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<char> text = Grow<char>(
      [&](char* out, int cap) { return impl_->m->decode(impl_->sp, ids.data(), static_cast<int>(ids.size()), out, cap); },
      static_cast<int>(ids.size()) * 8);
  return std::string(text.begin(), text.end());
}

std::string Tokenizer::IdToPiece(int id) const {
  std::vector<char> piece = Grow<char>([&](char* out, int cap) { return impl_->m->piece(impl_->sp, id, out, cap); }, 32);
  return std::string(piece.begin(), piece.end());
}

int Tokenizer::vocab_size() const { return impl_->m->size(impl_->sp); }
int Tokenizer::bos_id() const { return impl_->m->bos(impl_->sp); }
int Tokenizer::eos_id() const { return impl_->m->eos(impl_->sp); }
bool Tokenizer::IsControl(int id) const { return impl_->m->is_control(impl_->sp, id) != 0; }

std::string Tokenizer::Train(const std::vector<std::string>& inputs, const std::string& prefix, int vocab_size,
                             int num_threads) {
  const Module& m = GetModule();
  if (!m.error.empty()) return m.error;
  std::ostringstream args;
  args << "--input=";
  for (size_t i = 0; i < inputs.size(); ++i) args << (i ? "," : "") << inputs[i];
  args << " --model_prefix=" << prefix << " --vocab_size=" << vocab_size
       << " --model_type=bpe --byte_fallback=true --character_coverage=1.0 --split_digits=true"
       << " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=" << num_threads
       << " --max_sentence_length=16384 --minloglevel=1";
  char message[1024] = {0};
  const int n = m.train(args.str().c_str(), message, sizeof(message));
  return n == 0 ? std::string() : std::string(message, std::min<size_t>(n, sizeof(message) - 1));
}

}  // namespace nsa
