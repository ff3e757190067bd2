// nsa-generate: loads a model directory and streams generated text to stdout as it is produced.
//
//   nsa-generate [--model DIR] --prompt "Once upon a time" [--max_tokens 64] [--temperature 0.8]
//                [--top_p 0.95] [--top_k 0] [--min_p 0] [--seed 0] [--ignore_eos]
//
// Without --model it uses the embedded default model that set-up writes. Timing goes to stderr.
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "models/flags.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "engine/kv_cache/host_kv_pool.h"
#include "engine/kv_cache/kv_cache_manager.h"
#include "engine/output/detokenizer.h"
#include "engine/sampler/sampler.h"
#include "kernels/common/check.h"
#include "kernels/common/status.h"
#include "models/nsa_model.h"
#include "models/tokenizer.h"

#ifndef NSA_DEFAULT_MODEL_DIR
#define NSA_DEFAULT_MODEL_DIR "models/tiny"
#endif

ABSL_FLAG(std::string, model, NSA_DEFAULT_MODEL_DIR, "model directory (config.json, safetensors, tokenizer.model)");
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(int, max_tokens, 64, "largest number of tokens to generate");
ABSL_FLAG(float, temperature, 0.8f, "sampling temperature; 0 = greedy");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass, (0, 1]");
ABSL_FLAG(int, top_k, 0, "keep the k most likely tokens; 0 = off");
ABSL_FLAG(float, min_p, 0.0f, "drop tokens below min_p x the top probability; 0 = off");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(bool, ignore_eos, false, "keep generating after the end-of-sequence token");
ABSL_FLAG(bool, quiet, false, "no progress or timing on stderr");

namespace nsa {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status Run() {
  SamplingParams sampling;
  sampling.temperature = absl::GetFlag(FLAGS_temperature);
  sampling.top_p = absl::GetFlag(FLAGS_top_p);
  sampling.top_k = absl::GetFlag(FLAGS_top_k);
  sampling.min_p = absl::GetFlag(FLAGS_min_p);
  sampling.seed = absl::GetFlag(FLAGS_seed);
  
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  if (max_tokens < 1) return absl::InvalidArgumentError(absl::StrCat("--max_tokens must be >= 1, got ", max_tokens));
  const bool quiet = absl::GetFlag(FLAGS_quiet);

  const std::string dir = absl::GetFlag(FLAGS_model);
  ASSIGN_OR_RETURN(std::unique_ptr<NsaModel> model, NsaModel::Load(dir, !quiet));
  std::string error;
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::Load(dir + "/tokenizer.model", &error);
  if (!tokenizer) return absl::InvalidArgumentError(error);
  const ModelConfig& config = model->config();
  if (tokenizer->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/tokenizer.model has ", tokenizer->vocab_size(),
                                                   " pieces but the model's vocab_size is ", config.vocab_size));
  }

  RETURN_IF_ERROR(Annotate(sampling.Validate(config.vocab_size), "invalid sampling flag"));
  const std::vector<int> prompt = tokenizer->Encode(absl::GetFlag(FLAGS_prompt), /*add_bos=*/true);
  if (static_cast<int64_t>(prompt.size()) + max_tokens > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("this model's maximum context length is ", config.max_position_embeddings,
                                                   " tokens; the prompt has ", prompt.size(), " and --max_tokens asks for ",
                                                   max_tokens));
  }

  // One sequence through the paged cache, as the engine runs it: reserve pages, write, commit.
  const int64_t context = static_cast<int64_t>(prompt.size()) + max_tokens;
  KvCacheManager::Options cache_options;
  // Raw pages for the whole context, window and source rings for the per-branch variant.
  cache_options.num_pages = static_cast<int32_t>(3 * ((context + config.nsa.select_block - 1) / config.nsa.select_block));
  cache_options.nsa = config.nsa;
  KvCacheManager pages(cache_options);
  HostKvPool pool(config, cache_options.num_pages);
  constexpr SeqId kSeq = 0;
  pages.AddSequence(kSeq, prompt);
  auto forward = [&](std::span<const int> tokens) {
    const int64_t t0 = pages.NumTokens(kSeq);
    const std::optional<StepSlots> slots = pages.Reserve(kSeq, static_cast<int64_t>(tokens.size()));
    NSA_CHECK(slots.has_value(), "the pool is sized for the whole context");
    pool.ApplyCopies(slots->copies);
    PagedKvStore store = pool.Store(pages.Tables(kSeq), t0);
    std::vector<float> logits = model->Forward(tokens, store);
    pages.Commit(kSeq, tokens);
    return logits;
  };

  Sampler sampler(sampling.seed);
  IncrementalDetokenizer detok(*tokenizer, prompt);
  std::fputs(absl::GetFlag(FLAGS_prompt).c_str(), stdout);
  std::fflush(stdout);

  const auto start = Clock::now();
  std::vector<float> logits = forward(prompt);
  const auto first = Clock::now();
  int generated = 0;
  while (true) {
    const int token = sampler.Sample(logits, sampling, tokenizer->vocab_size()).token;
    ++generated;
    if (token == config.eos_token_id && !absl::GetFlag(FLAGS_ignore_eos)) break;
    const std::string delta = detok.Add(token);
    if (!delta.empty()) {
      std::fwrite(delta.data(), 1, delta.size(), stdout);
      std::fflush(stdout);
    }
    if (generated >= max_tokens) break;
    const int next[1] = {token};
    logits = forward(next);
  }
  const auto end = Clock::now();
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (!quiet) {
    const double prefill = std::chrono::duration<double>(first - start).count();
    const double decode = std::chrono::duration<double>(end - first).count();
    std::fprintf(stderr, "prompt %zu tokens in %.1f ms (%.0f tok/s); generated %d tokens, %.1f tok/s decode\n",
                 prompt.size(), 1e3 * prefill, prompt.size() / prefill, generated,
                 generated > 1 ? (generated - 1) / decode : 0.0);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace nsa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("nsa-generate --prompt TEXT [--model DIR] [--max_tokens N] [--temperature T] ...");
  nsa::ParseFlags(argc, argv);
  const absl::Status status = nsa::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "nsa-generate: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
