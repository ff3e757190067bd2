// The CUDA backend's model runner: the whole NSA transformer on one GPU in bf16 with fp32
// accumulation, over a paged KV cache in one device allocation (kernels/kv_layout.h).
//
// A step (any mix of prefill chunks and decode tokens, as the scheduler batched them):
//   page copies (copy-on-write) -> metadata upload (tokens, positions, page tables, the blocks
//   that complete) -> embedding -> per layer: RMSNorm, one fused q|k|v|gates(|per-branch K/V)
//   GEMM, bias + RoPE + sigmoid split, K/V into the pages, summaries of completed blocks, NSA
//   attention, o_proj GEMM added onto the fp32 residual, RMSNorm, fused gate|up GEMM, SwiGLU,
//   down GEMM added onto the residual -> final RMSNorm and LM head on the rows that sample.
//
// Attention: a sequence's chunk of at least CudaRunnerOptions::prefill_kernel_min_tokens new
// tokens runs the prefill kernels (kernels/cuda/nsa_prefill.h) over its page tables; every other
// token is its own query of the decode kernel (kernels/cuda/nsa_decode.h) at its own position.
// Both compute the same function (model_gpu_test: decode = prefill at every position).
//
// Decode steps (one token per sequence) replay CUDA graphs captured per (batch bucket, context
// bucket): padding rows write nowhere and read a scratch page.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runner/model_runner.h"
#include "kernels/kv_layout.h"
#include "models/config.h"
#include "models/weights.h"

namespace nsa {

struct CudaRunnerOptions {
  int device = 0;
  double memory_fraction = 0.9;  // of the card's memory this process may use (weights + cache + work)
  int32_t num_pages = 0;  // > 0: exactly this many KV pages instead of the memory fraction
  int max_num_seqs = 256;  // sequences per step
  int64_t max_step_tokens = 2048;  // tokens per step
  int64_t max_context = 0;  // longest sequence; 0: the model's max_position_embeddings
  bool cuda_graphs = true;
  int64_t attention_workspace_bytes = int64_t{256} << 20;
  bool progress = true;
  // Benchmarks: time every stage of eager steps with CUDA events (ProfileReport()).
  bool profile = false;
  // Sample on the GPU (kernels/cuda/sampling.h) instead of copying logits to the host.
  bool device_sampling = true;
  // Steps of up to this many rows run their projections on the small-m kernel
  // (kernels/cuda/small_gemm.h) instead of cuBLASLt (0: cuBLASLt only). A sequence decoding alone
  // and in a larger batch then runs different kernels, so its logits differ in rounding and a
  // sampled continuation may differ (as in vLLM); 0 keeps every step on cuBLASLt.
  int small_gemm_rows = 1;
  // A sequence's chunk of at least this many new tokens runs the prefill kernels
  // (kernels/cuda/nsa_prefill.h: compressed, selection, selected, window, gated sum) instead of a
  // decode-kernel query per token; 0: every token through the decode kernel.
  int prefill_kernel_min_tokens = 64;
};

class CudaRunner : public ModelRunner {
 public:
  // Weights from `weights` (float32 host copies, e.g. LoadWeights) or, when null, the preset
  // random weights of `random_seed` generated on the device (models/presets.h RandomWeight).
  static absl::StatusOr<std::unique_ptr<CudaRunner>> Create(const ModelConfig& config, const ModelWeights* weights,
                                                            uint64_t random_seed, const CudaRunnerOptions& options);
  static absl::StatusOr<std::unique_ptr<CudaRunner>> Load(const std::string& dir, const CudaRunnerOptions& options);
  ~CudaRunner() override;

  const ModelConfig& config() const override { return config_; }
  int32_t num_pages() const override { return num_pages_; }
  std::string Describe() const override;
  absl::StatusOr<std::vector<std::vector<float>>> Execute(std::span<const RunnerSeq> seqs) override;
  bool SamplesOnDevice() const override { return options_.device_sampling; }
  absl::Status ExecuteKeepingLogits(std::span<const RunnerSeq> seqs) override;
  absl::StatusOr<std::vector<SampleResult>> SampleLast(std::span<const SampleDraw> draws) override;

  // For benchmarks: the page storage (bf16, [num_pages + 1][page_elems], the last page is the
  // padding scratch page) and the graphs captured so far.
  void* page_storage() const { return pages_; }
  int64_t page_bytes() const;
  int num_graphs() const { return static_cast<int>(graphs_.size()); }
  int64_t weight_bytes() const { return weight_bytes_; }
  // With options.profile: GPU time per stage (summed over layers) of the last eager step.
  std::string ProfileReport() const { return profile_report_; }

  struct DeviceState;  // device buffers (cuda_runner.cc)

 private:
  explicit CudaRunner(ModelConfig config, CudaRunnerOptions options);
  absl::Status Init(const ModelWeights* weights, uint64_t random_seed);
  absl::Status Forward(int num_tokens, int num_rows, int64_t context);
  // Attention of layer `layer` for the step's tokens [q0, q0 + count) of one sequence (table row
  // `seq`, positions first_position ..) through the prefill kernels, into the attention rows.
  absl::Status PrefillAttention(int layer, int q0, int count, int seq, int64_t first_position);
  bool prefill_kernels_ = false;  // the model's shapes are within the prefill kernels' limits
  // A step; the logits stay on the device (rows in kept_rows_) and are copied to the host only
  // when `download`.
  absl::StatusOr<std::vector<std::vector<float>>> Step(std::span<const RunnerSeq> seqs, bool download);

  ModelConfig config_;
  KvLayout layout_;  // the device pages' layout
  CudaRunnerOptions options_;
  std::unique_ptr<DeviceState> d_;
  void* pages_ = nullptr;
  int32_t num_pages_ = 0;
  int max_pages_ = 0;  // page-table row length
  int64_t weight_bytes_ = 0;
  std::string device_name_;
  std::string profile_report_;
  std::map<std::pair<int, int64_t>, void*> graphs_;
  std::vector<int> kept_rows_;  // device logits row of each sequence of the last step that wanted logits  // (batch bucket, context bucket) -> cudaGraphExec_t
};

}  // namespace nsa
