#include "engine/runner/backend.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/runner/cpu_runner.h"
#include "kernels/common/status.h"
#include "kernels/cuda/device_info.h"
#include "models/nsa_model.h"
#include "models/presets.h"
#ifdef NSA_HAVE_CUDA
#include "engine/runner/cuda_runner.h"
#endif

namespace nsa {

absl::StatusOr<ModelConfig> BackendConfig(const std::string& model_dir, const BackendOptions& options) {
  if (options.random_weights.empty()) return ModelConfig::FromFile(model_dir + "/config.json");
  absl::StatusOr<ModelConfig> config = PresetConfig(options.random_weights);  // its error names the presets
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat("--random-weights: ", config.status().message()));
  return config;
}

absl::StatusOr<Backend> MakeBackend(const std::string& model_dir, const BackendOptions& options) {
  if (options.backend != "auto" && options.backend != "cpu" && options.backend != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--backend must be auto, cpu or cuda, got \"", options.backend, "\""));
  }
  const bool random = !options.random_weights.empty();
  std::optional<ModelConfig> preset;
  if (random) {
    ASSIGN_OR_RETURN(preset, BackendConfig(model_dir, options));
  }
  const std::string weights_note =
      random ? absl::StrCat("; random weights of preset ", options.random_weights, ", seed ", options.random_weights_seed) : "";
  const int gpus = cuda::DeviceCount();
  Backend b;
#ifdef NSA_HAVE_CUDA
  if (options.backend == "cuda" || (options.backend == "auto" && gpus > 0)) {
    if (gpus == 0) return absl::FailedPreconditionError("--backend cuda: no CUDA device found; use --backend cpu");
    CudaRunnerOptions o;
    o.memory_fraction = options.gpu_memory_utilization;
    o.max_num_seqs = options.max_num_seqs;
    o.max_step_tokens = options.max_num_batched_tokens;
    o.max_context = options.max_model_len;
    o.cuda_graphs = !options.enforce_eager;
    o.progress = options.progress;
    std::unique_ptr<CudaRunner> runner;
    if (random) {
      ASSIGN_OR_RETURN(runner, CudaRunner::Create(*preset, nullptr, options.random_weights_seed, o));
    } else {
      ASSIGN_OR_RETURN(runner, CudaRunner::Load(model_dir, o));
    }
    b.note = absl::StrCat(options.backend == "auto" ? absl::StrCat("GPU found (", cuda::DeviceDescription(0), "): CUDA backend")
                                                    : "CUDA backend",
                          weights_note);
    b.runner = std::move(runner);
    return b;
  }
  b.note = gpus > 0 ? "CPU backend (--backend cpu)" : "no GPU found: CPU backend";
#else
  if (options.backend == "cuda") {
    return absl::UnimplementedError(absl::StrCat("this build has no CUDA backend (built without nvcc; ",
                                                 gpus > 0 ? cuda::DeviceDescription(0) : "no GPU found", "); use --backend cpu"));
  }
  b.note = "CPU backend (built without CUDA)";
#endif
  b.note += weights_note;
  std::unique_ptr<NsaModel> model;
  if (random) {
    model = std::make_unique<NsaModel>(*preset, RandomModelWeights(*preset, options.random_weights_seed, DType::kBF16));
  } else {
    ASSIGN_OR_RETURN(model, NsaModel::Load(model_dir, options.progress));
  }
  const int32_t pages = CpuRunner::PagesFor(model->config(), options.kv_cache_bytes);
  if (pages < 1) return absl::InvalidArgumentError("the KV cache memory holds no page; raise it");
  b.runner = std::make_unique<CpuRunner>(std::move(model), pages);
  return b;
}

}  // namespace nsa
