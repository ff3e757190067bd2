#include "engine/runner/backend.h"

#include "absl/strings/str_cat.h"
#include "engine/runner/cpu_runner.h"
#include "kernels/common/status.h"
#include "kernels/cuda/device_info.h"
#include "models/nsa_model.h"

namespace nsa {

absl::StatusOr<Backend> MakeBackend(const std::string& model_dir, const BackendOptions& options) {
  if (options.backend != "auto" && options.backend != "cpu" && options.backend != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--backend must be auto, cpu or cuda, got \"", options.backend, "\""));
  }
  const int gpus = cuda::DeviceCount();
  Backend b;
  if (options.backend == "cuda") {
    // The CUDA model runner is not part of this build yet (the kernels land with it).
    return absl::UnimplementedError(absl::StrCat("the CUDA backend is not available in this build (",
                                                 gpus > 0 ? cuda::DeviceDescription(0) : "no GPU found",
                                                 "); use --backend cpu"));
  }
  b.note = gpus > 0 && options.backend == "auto"
               ? absl::StrCat("GPU found (", cuda::DeviceDescription(0), ") but this build has no CUDA runner yet: CPU backend")
               : "CPU backend";
  ASSIGN_OR_RETURN(std::unique_ptr<NsaModel> model, NsaModel::Load(model_dir, options.progress));
  const int32_t pages = CpuRunner::PagesFor(model->config(), options.kv_cache_bytes);
  if (pages < 1) return absl::InvalidArgumentError("the KV cache memory holds no page; raise it");
  b.runner = std::make_unique<CpuRunner>(std::move(model), pages);
  return b;
}

}  // namespace nsa
