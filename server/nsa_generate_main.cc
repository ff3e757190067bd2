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
#include "engine/engine.h"
#include "engine/runner/backend.h"
#include "kernels/kv_layout.h"
#include "kernels/common/status.h"
#include "models/nsa_model.h"
#include "models/tokenizer.h"

#ifndef NSA_DEFAULT_MODEL_DIR
#define NSA_DEFAULT_MODEL_DIR "models/tiny"
#endif

ABSL_FLAG(std::string, model, NSA_DEFAULT_MODEL_DIR, "model directory (config.json, safetensors, tokenizer.model)");
ABSL_FLAG(std::string, random_weights, "",
          "a preset (tiny, tiny-paper, fla-340m, 1.3b, 7b, paper) with random weights instead of --model's config and "
          "checkpoint; --model then only supplies the tokenizer");
ABSL_FLAG(uint64_t, random_weights_seed, 0, "seed of --random-weights");
ABSL_FLAG(std::string, tokenizer, "", "sentencepiece tokenizer.model (default: --model's)");
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(int, max_tokens, 64, "largest number of tokens to generate");
ABSL_FLAG(float, temperature, 0.8f, "sampling temperature; 0 = greedy");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass, (0, 1]");
ABSL_FLAG(int, top_k, 0, "keep the k most likely tokens; 0 = off");
ABSL_FLAG(float, min_p, 0.0f, "drop tokens below min_p x the top probability; 0 = off");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(bool, ignore_eos, false, "keep generating after the end-of-sequence token");
ABSL_FLAG(bool, quiet, false, "no progress or timing on stderr");
ABSL_FLAG(std::string, backend, "auto", "auto (CUDA when a GPU is present), cpu or cuda");

namespace nsa {
namespace {

absl::Status Run() {
  Request request;
  request.text = absl::GetFlag(FLAGS_prompt);
  request.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  request.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  request.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  request.sampling.min_p = absl::GetFlag(FLAGS_min_p);
  request.sampling.seed = absl::GetFlag(FLAGS_seed);
  request.has_seed = true;
  request.stop.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  request.stop.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  if (*request.stop.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--max_tokens must be >= 1, got ", *request.stop.max_tokens));
  }
  const bool quiet = absl::GetFlag(FLAGS_quiet);

  const std::string dir = absl::GetFlag(FLAGS_model);
  // One sequence through the same engine the servers use: on the CPU, pages for the whole context
  // (raw, window and source kinds); one 4096-token budget per step.
  BackendOptions backend;
  backend.random_weights = absl::GetFlag(FLAGS_random_weights);
  backend.random_weights_seed = absl::GetFlag(FLAGS_random_weights_seed);
  ASSIGN_OR_RETURN(const ModelConfig config, BackendConfig(dir, backend));
  std::string error;
  const std::string tokenizer_path = absl::GetFlag(FLAGS_tokenizer).empty() ? dir + "/tokenizer.model" : absl::GetFlag(FLAGS_tokenizer);
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::Load(tokenizer_path, &error);
  if (!tokenizer) return absl::InvalidArgumentError(error);
  backend.backend = absl::GetFlag(FLAGS_backend);
  backend.progress = !quiet;
  backend.max_num_seqs = 1;
  backend.max_num_batched_tokens = 4096;
  const KvLayout layout = KvLayout::Make(config.num_layers, config.num_kv_heads, config.head_dim, config.v_head_dim, config.nsa);
  const int64_t pages = 3 * ((config.max_position_embeddings + config.nsa.select_block - 1) / config.nsa.select_block);
  backend.kv_cache_bytes = pages * layout.page_elems * int64_t{sizeof(float)};
  ASSIGN_OR_RETURN(Backend runner, MakeBackend(dir, backend));
  if (!quiet) std::fprintf(stderr, "nsa-generate: %s\n", runner.note.c_str());
  EngineOptions options;
  options.scheduler.max_num_seqs = 1;
  options.scheduler.max_num_batched_tokens = 4096;
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(options, std::move(runner.runner), std::move(tokenizer)));
  ASSIGN_OR_RETURN(std::unique_ptr<RequestHandle> handle, engine->Submit(std::move(request)));

  std::fputs(absl::GetFlag(FLAGS_prompt).c_str(), stdout);
  std::fflush(stdout);
  std::optional<Final> final;
  while (std::optional<Event> event = handle->Next()) {
    if (const Delta* d = std::get_if<Delta>(&*event)) {
      std::fwrite(d->text.data(), 1, d->text.size(), stdout);
      std::fflush(stdout);
    } else {
      final = std::get<Final>(*event);
    }
  }
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (final->reason == FinishReason::kError) return absl::InternalError(final->error);
  if (!quiet) {
    const Timings& t = final->timings;
    const double prefill = std::chrono::duration<double>(t.first_token - t.scheduled).count();
    const double decode = std::chrono::duration<double>(t.done - t.first_token).count();
    const int64_t generated = final->usage.completion_tokens;
    std::fprintf(stderr, "prompt %lld tokens, first token after %.1f ms; generated %lld tokens (%s), %.1f tok/s decode\n",
                 static_cast<long long>(final->usage.prompt_tokens), 1e3 * prefill, static_cast<long long>(generated),
                 FinishReasonName(final->reason), generated > 1 ? (generated - 1) / decode : 0.0);
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
