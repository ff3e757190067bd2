#include "models/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <sstream>

namespace nsa {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path, std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.Load(path);
  if (!status.ok()) {
    *error = path + ": cannot load sentencepiece model: " + status.ToString();
    return nullptr;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids;
  impl_->sp.Encode(std::string(text), &ids);
  if (add_bos && bos_id() >= 0) ids.insert(ids.begin(), bos_id());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::string text;
  impl_->sp.Decode(ids, &text);
  return text;
}

std::string Tokenizer::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
int Tokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
int Tokenizer::bos_id() const { return impl_->sp.bos_id(); }
int Tokenizer::eos_id() const { return impl_->sp.eos_id(); }
bool Tokenizer::IsControl(int id) const { return impl_->sp.IsControl(id); }

std::string Tokenizer::Train(const std::vector<std::string>& inputs, const std::string& prefix, int vocab_size,
                             int num_threads) {
  std::ostringstream args;
  args << "--input=";
  for (size_t i = 0; i < inputs.size(); ++i) args << (i ? "," : "") << inputs[i];
  args << " --model_prefix=" << prefix << " --vocab_size=" << vocab_size
       << " --model_type=bpe --byte_fallback=true --character_coverage=1.0 --split_digits=true"
       << " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=" << num_threads
       << " --max_sentence_length=16384 --minloglevel=1";
  const auto status = sentencepiece::SentencePieceTrainer::Train(args.str());
  return status.ok() ? std::string() : status.ToString();
}

}  // namespace nsa
