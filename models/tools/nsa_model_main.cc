// nsa-model: writes model directories and tokenizers.
//
//   nsa-model create --preset tiny --out DIR [--seed 0] [--dtype bf16] [--tokenizer-vocab N]
//                    [--tokenizer FILE] [--corpus FILE,...] [--max-shard-mib N]
//   nsa-model tokenizer --out FILE.model --tokenizer-vocab N [--corpus FILE,...]
//   nsa-model presets
//   nsa-model check --model DIR        (loads and validates every tensor)
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "absl/flags/flag.h"
#include "models/flags.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/common/status.h"
#include "models/nsa_model.h"
#include "models/presets.h"
#include "models/progress.h"
#include "models/tokenizer.h"

ABSL_FLAG(std::string, preset, "tiny", "model preset: tiny, tiny-paper, fla-340m, 1.3b, 7b, paper");
ABSL_FLAG(std::string, out, "", "output directory (create) or tokenizer file (tokenizer)");
ABSL_FLAG(std::string, model, "", "model directory (check)");
ABSL_FLAG(uint64_t, seed, 0, "seed of the random weights");
ABSL_FLAG(std::string, dtype, "bf16", "weight dtype: bf16, f16 or f32");
ABSL_FLAG(int, tokenizer_vocab, 0, "tokenizer vocabulary size (0: the model's, at most 4096)");
ABSL_FLAG(std::string, tokenizer, "", "copy this tokenizer.model instead of training one");
ABSL_FLAG(std::string, corpus, "",
          "comma-separated text files to train the tokenizer on (default: English text shipped with Debian: "
          "/usr/share/common-licenses and package copyright files)");
ABSL_FLAG(int64_t, max_shard_mib, 5120, "largest safetensors shard, MiB");
ABSL_FLAG(bool, quiet, false, "no progress output");
ABSL_FLAG(int, num_layers, 0, "create: this many layers instead of the preset's (0: the preset's), e.g. a preset's shapes in a model small enough for a reference run");

namespace nsa {
namespace {

namespace fs = std::filesystem;

// Gathers real English text that every Debian machine has: the license texts of base-files and
// the copyright files of installed packages (deduplicated by content), up to max_bytes.
absl::StatusOr<std::string> CollectCorpus(const std::string& out_path, int64_t max_bytes) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/share/common-licenses", ec)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  for (const auto& e : fs::directory_iterator("/usr/share/doc", ec)) {
    fs::path p = e.path() / "copyright";
    if (fs::is_regular_file(p, ec)) files.push_back(p);
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) return absl::NotFoundError("no text found under /usr/share/common-licenses or /usr/share/doc");
  // Read first (a few MiB), so the bar's total is the text actually used.
  std::vector<std::string> texts;
  std::set<size_t> seen;
  int64_t total = 0;
  for (const fs::path& p : files) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (!seen.insert(std::hash<std::string>{}(text)).second) continue;
    if (total + static_cast<int64_t>(text.size()) + 1 > max_bytes) break;
    total += static_cast<int64_t>(text.size()) + 1;
    texts.push_back(std::move(text));
  }
  std::ofstream out(out_path, std::ios::binary);
  Progress bar("writing corpus", total, Progress::Unit::kBytes);
  for (const std::string& text : texts) {
    out << text << "\n";
    bar.Add(static_cast<int64_t>(text.size()) + 1);
  }
  bar.Finish();
  if (!out) return absl::InternalError(absl::StrCat(out_path, ": write failed"));
  return out_path;
}

absl::Status TrainTokenizer(const std::string& model_path, int vocab_size) {
  if (vocab_size < 300) {
    return absl::InvalidArgumentError(absl::StrCat("--tokenizer_vocab must be at least 300 (256 byte pieces + specials), got ", vocab_size));
  }
  std::error_code ec;
  if (fs::path parent = fs::path(model_path).parent_path(); !parent.empty()) fs::create_directories(parent, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create the directory of ", model_path, ": ", ec.message()));
  std::string prefix = model_path;
  if (prefix.size() > 6 && prefix.substr(prefix.size() - 6) == ".model") prefix.resize(prefix.size() - 6);
  std::vector<std::string> inputs;
  std::string tmp;
  if (!absl::GetFlag(FLAGS_corpus).empty()) {
    inputs = absl::StrSplit(absl::GetFlag(FLAGS_corpus), ',', absl::SkipEmpty());
    for (const std::string& f : inputs) {
      if (!fs::is_regular_file(f)) return absl::NotFoundError(absl::StrCat("--corpus: no such file: ", f));
    }
  } else {
    tmp = prefix + ".corpus.txt";
    ASSIGN_OR_RETURN(std::string path, CollectCorpus(tmp, int64_t{8} << 20));
    inputs.push_back(path);
  }
  int64_t bytes = 0;
  for (const std::string& f : inputs) bytes += static_cast<int64_t>(fs::file_size(f));
  std::fprintf(stderr, "training a %d-piece BPE tokenizer on %.1f MiB of text...\n", vocab_size, bytes / 1048576.0);
  const auto start = std::chrono::steady_clock::now();
  std::string error;
  {
    Heartbeat beat(absl::StrCat("training tokenizer (", vocab_size, " pieces)"));
    error = Tokenizer::Train(inputs, prefix, vocab_size, 2);
  }
  if (!tmp.empty()) fs::remove(tmp);
  fs::remove(prefix + ".vocab");
  if (!error.empty()) return absl::InternalError(absl::StrCat("tokenizer training failed: ", error));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "tokenizer: %s.model in %.1fs (%.2f MiB/s of text)\n", prefix.c_str(), secs,
               bytes / 1048576.0 / secs);
  return absl::OkStatus();
}

absl::Status Create() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  ASSIGN_OR_RETURN(ModelConfig config, PresetConfig(absl::GetFlag(FLAGS_preset)));
  if (const int layers = absl::GetFlag(FLAGS_num_layers); layers != 0) {
    if (layers < 1 || layers > 1024) return absl::InvalidArgumentError(absl::StrCat("--num-layers must be in [1, 1024], got ", layers));
    config.num_layers = layers;
  }
  RandomModelOptions options;
  options.seed = absl::GetFlag(FLAGS_seed);
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "bf16") {
    options.dtype = DType::kBF16;
  } else if (dtype == "f16") {
    options.dtype = DType::kF16;
  } else if (dtype == "f32") {
    options.dtype = DType::kF32;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be bf16, f16 or f32, got \"", dtype, "\""));
  }
  const int64_t shard_mib = absl::GetFlag(FLAGS_max_shard_mib);
  if (shard_mib <= 0) return absl::InvalidArgumentError("--max_shard_mib must be positive");
  options.max_shard_bytes = static_cast<size_t>(shard_mib) << 20;
  options.progress = !absl::GetFlag(FLAGS_quiet);
  RETURN_IF_ERROR(WriteRandomModel(config, out, options));

  const std::string tok_dst = out + "/tokenizer.model";
  if (const std::string src = absl::GetFlag(FLAGS_tokenizer); !src.empty()) {
    std::error_code ec;
    fs::copy_file(src, tok_dst, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("copying ", src, ": ", ec.message()));
  } else {
    int vocab = absl::GetFlag(FLAGS_tokenizer_vocab);
    if (vocab == 0) vocab = std::min(config.vocab_size, 4096);
    if (vocab > config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("--tokenizer_vocab (", vocab, ") exceeds the model's vocab_size (", config.vocab_size, ")"));
    }
    RETURN_IF_ERROR(TrainTokenizer(tok_dst, vocab));
  }
  std::fprintf(stderr, "wrote %s (preset %s, seed %llu, %s)\n", out.c_str(), absl::GetFlag(FLAGS_preset).c_str(),
               static_cast<unsigned long long>(options.seed), dtype.c_str());
  return absl::OkStatus();
}

absl::Status Check() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(auto model, NsaModel::Load(dir, !absl::GetFlag(FLAGS_quiet)));
  std::string error;
  auto tok = Tokenizer::Load(dir + "/tokenizer.model", &error);
  if (!tok) return absl::InvalidArgumentError(error);
  if (tok->vocab_size() > model->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/tokenizer.model has ", tok->vocab_size(),
                                                   " pieces, more than the model's vocab_size ", model->config().vocab_size));
  }
  const ModelConfig& c = model->config();
  std::printf("%s: ok: %d layers, hidden %d, heads %d/%d, head dim %d/%d, vocab %d (tokenizer %d)\n", dir.c_str(),
              c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.v_head_dim, c.vocab_size,
              tok->vocab_size());
  return absl::OkStatus();
}

}  // namespace
}  // namespace nsa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("nsa-model create|tokenizer|presets|check [flags]; see --help");
  std::vector<char*> args = nsa::ParseFlags(argc, argv);
  if (absl::GetFlag(FLAGS_quiet)) nsa::Progress::SetEnabled(false);
  if (args.size() != 2) {
    std::fprintf(stderr, "usage: nsa-model create|tokenizer|presets|check [flags] (see --help)\n");
    return 2;
  }
  const std::string verb = args[1];
  absl::Status status;
  if (verb == "create") {
    status = nsa::Create();
  } else if (verb == "tokenizer") {
    if (absl::GetFlag(FLAGS_out).empty()) {
      status = absl::InvalidArgumentError("--out is required");
    } else {
      const int vocab = absl::GetFlag(FLAGS_tokenizer_vocab);
      status = nsa::TrainTokenizer(absl::GetFlag(FLAGS_out), vocab == 0 ? 4096 : vocab);
    }
  } else if (verb == "presets") {
    for (const std::string& name : nsa::PresetNames()) {
      auto c = nsa::PresetConfig(name).value();
      std::printf("%-10s %2d layers, hidden %4d, heads %2d/%d, head dim %d/%d, MLP %5d, vocab %d, l=%d d=%d l'=%d n=%d w=%d\n",
                  name.c_str(), c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.v_head_dim,
                  c.intermediate_size, c.vocab_size, c.nsa.compress_block, c.nsa.compress_stride, c.nsa.select_block,
                  c.nsa.num_selected, c.nsa.window);
    }
  } else if (verb == "check") {
    status = nsa::Check();
  } else {
    std::fprintf(stderr, "nsa-model: unknown command \"%s\" (create, tokenizer, presets, check)\n", verb.c_str());
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "nsa-model: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
