// A C interface to sentencepiece, built as its own shared module and loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by tokenizer.cc.
//
// Why: Debian's libsentencepiece carries its own copy of protobuf-lite and exports its symbols.
// In a process that also links libprotobuf (the gRPC server), the two copies interpose on each
// other and the process crashes during static initialisation. Loaded locally and bound deeply,
// sentencepiece keeps to its own protobuf and the rest of the process never sees it.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

int CopyOut(const std::string& s, char* out, int cap) {
  if (static_cast<int>(s.size()) <= cap) std::memcpy(out, s.data(), s.size());
  return static_cast<int>(s.size());
}

}  // namespace

extern "C" {

void* nsa_spm_load(const char* path, char* error, int error_cap) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    const std::string message = status.ToString();
    std::strncpy(error, message.c_str(), error_cap - 1);
    error[error_cap - 1] = '\0';
    delete sp;
    return nullptr;
  }
  return sp;
}

void nsa_spm_free(void* sp) { delete static_cast<sentencepiece::SentencePieceProcessor*>(sp); }

// Returns the number of ids; writes them when it fits in cap.
int nsa_spm_encode(void* sp, const char* text, int len, int* out, int cap) {
  std::vector<int> ids;
  static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Encode(std::string(text, len), &ids);
  if (static_cast<int>(ids.size()) <= cap) std::memcpy(out, ids.data(), ids.size() * sizeof(int));
  return static_cast<int>(ids.size());
}

// Returns the text's length; writes it when it fits in cap.
int nsa_spm_decode(void* sp, const int* ids, int n, char* out, int cap) {
  std::string text;
  static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Decode(std::vector<int>(ids, ids + n), &text);
  return CopyOut(text, out, cap);
}

int nsa_spm_piece(void* sp, int id, char* out, int cap) {
  return CopyOut(static_cast<sentencepiece::SentencePieceProcessor*>(sp)->IdToPiece(id), out, cap);
}

int nsa_spm_size(void* sp) { return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->GetPieceSize(); }
int nsa_spm_bos(void* sp) { return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->bos_id(); }
int nsa_spm_eos(void* sp) { return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->eos_id(); }
int nsa_spm_is_control(void* sp, int id) { return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->IsControl(id); }

// Returns the error's length (0 on success).
int nsa_spm_train(const char* args, char* error, int error_cap) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (status.ok()) return 0;
  return CopyOut(status.ToString(), error, error_cap - 1);
}

}  // extern "C"
