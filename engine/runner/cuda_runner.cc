#include "engine/runner/cuda_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <tuple>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status.h"
#include "kernels/cuda/device_info.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kv_write.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/cuda/nsa_decode.h"
#include "kernels/cuda/nsa_prefill.h"
#include "kernels/cuda/sampling.h"
#include "kernels/kv_layout.h"
#include "models/dtype.h"
#include "models/presets.h"

namespace nsa {

using bf16 = __nv_bfloat16;

namespace {

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat("CUDA ", what, ": ", cudaGetErrorString(e));
  return e == cudaErrorMemoryAllocation ? absl::ResourceExhaustedError(msg) : absl::InternalError(msg);
}

#define CUDA_OK(call, what) RETURN_IF_ERROR(CudaStatus((call), what))

// Decode batch sizes that get their own graph; a step pads up to the next one.
int BatchBucket(int n, int max_seqs) {
  static constexpr int kBuckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024};
  for (int b : kBuckets) {
    if (b >= n) return std::min(b, max_seqs);
  }
  return max_seqs;
}

// Context bucket of a decode graph: the attention's grids depend on the longest context.
int64_t ContextBucket(int64_t context, int64_t max_context) {
  int64_t b = 4096;
  while (b < context) b *= 2;
  return std::min(b, max_context);
}

}  // namespace

// Device memory of the runner. Layer weights are fused for the GEMMs: q|k|v|gates(|k_win|v_win|
// k_cmp|v_cmp) rows in one matrix, gate|up rows in another.
struct CudaRunner::DeviceState {
  struct Layer {
    bf16 *qkvg = nullptr, *o = nullptr, *gate_up = nullptr, *down = nullptr;
    float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr;
    float *attn_norm = nullptr, *mlp_norm = nullptr;
    float* intra_block_pe = nullptr;
    bf16 *compress_key = nullptr, *compress_value = nullptr;
  };
  std::vector<Layer> layers;
  bf16 *embeddings = nullptr, *lm_head = nullptr;
  float* norm = nullptr;
  double* inv_freq = nullptr;  // RoPE frequencies [head_dim / 2]
  int qkvg_width = 0;
  std::vector<void*> allocations;

  cudaStream_t stream = nullptr;
  cuda::Gemm gemm;

  // Activations for up to T tokens.
  float *x = nullptr, *proj = nullptr, *gates = nullptr, *attn = nullptr, *logits = nullptr;
  bf16 *h = nullptr, *mlp = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *k_win = nullptr, *v_win = nullptr, *k_src = nullptr,
       *v_src = nullptr;
  void* attn_workspace = nullptr;

  // Step metadata, device side, and its pinned host staging (same layout).
  struct Meta {
    int32_t *tokens, *token_seq, *attn_row, *summary_seq, *logit_rows, *raw, *win, *src;
    int64_t *positions, *summary_index;
  };
  Meta dev{}, host{};
  void* meta_dev = nullptr;
  void* meta_host = nullptr;
  float* logits_host = nullptr;
  // Recorded after a step's metadata uploads: the next step rewrites the pinned staging only
  // once they are done (a step that keeps its logits on the device does not wait for itself).
  cudaEvent_t uploaded = nullptr;
  int64_t T = 0, max_summaries = 0;
  int table_rows = 0;  // max_num_seqs + 1: the last row is the padding row (all scratch page)

  // This step's sizes (Forward reads them).
  int num_summaries = 0;
  // This step's chunks that run the prefill kernels: tokens [q0, q0 + count) of table row seq.
  struct PrefillRun {
    int q0, count, seq;
    int64_t first_position;
  };
  std::vector<PrefillRun> prefill_runs;

  // Device sampling buffers, grown to the largest step's draws.
  int sample_capacity = 0;
  int64_t extra_capacity = 0;
  cuda::DeviceSampleRow* sample_rows = nullptr;
  cuda::DeviceSampleExtra* sample_extras = nullptr;
  int32_t* sample_token = nullptr;
  float* sample_logprob = nullptr;
  cuda::DeviceLogprob* sample_top = nullptr;
  void* sample_workspace = nullptr;

  template <typename T>
  absl::Status Alloc(T** p, int64_t count) {
    void* raw = nullptr;
    const cudaError_t e = cudaMalloc(&raw, std::max<int64_t>(count, 1) * sizeof(T));
    if (e != cudaSuccess) {
      return absl::ResourceExhaustedError(absl::StrCat("GPU memory: cannot allocate ", count * sizeof(T), " bytes: ",
                                                       cudaGetErrorString(e)));
    }
    allocations.push_back(raw);
    *p = static_cast<T*>(raw);
    return absl::OkStatus();
  }
  ~DeviceState() {
    for (void* p : {static_cast<void*>(sample_rows), static_cast<void*>(sample_extras), static_cast<void*>(sample_token),
                    static_cast<void*>(sample_logprob), static_cast<void*>(sample_top), sample_workspace}) {
      if (p) cudaFree(p);
    }
    for (void* p : allocations) cudaFree(p);
    if (meta_host) cudaFreeHost(meta_host);
    if (logits_host) cudaFreeHost(logits_host);
    if (uploaded) cudaEventDestroy(uploaded);
    if (stream) cudaStreamDestroy(stream);
  }
};

CudaRunner::CudaRunner(ModelConfig config, CudaRunnerOptions options)
    : config_(std::move(config)),
      layout_(KvLayout::Make(config_.num_layers, config_.num_kv_heads, config_.head_dim, config_.v_head_dim, config_.nsa)),
      options_(options),
      d_(std::make_unique<DeviceState>()) {}

CudaRunner::~CudaRunner() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
  d_.reset();
  if (pages_) cudaFree(pages_);
}

int64_t CudaRunner::page_bytes() const { return layout_.page_elems * int64_t{sizeof(bf16)}; }

absl::StatusOr<std::unique_ptr<CudaRunner>> CudaRunner::Create(const ModelConfig& config, const ModelWeights* weights,
                                                               uint64_t random_seed, const CudaRunnerOptions& options) {
  RETURN_IF_ERROR(config.Validate());
  if (cuda::DeviceCount() <= options.device) return absl::FailedPreconditionError("no CUDA device found");
  if (!(options.memory_fraction > 0 && options.memory_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("the GPU memory fraction must be in (0, 1], got ", options.memory_fraction));
  }
  if (options.max_num_seqs < 1 || options.max_step_tokens < 1) {
    return absl::InvalidArgumentError("max_num_seqs and max_step_tokens must be positive");
  }
  std::unique_ptr<CudaRunner> r(new CudaRunner(config, options));
  RETURN_IF_ERROR(r->Init(weights, random_seed));
  return r;
}

absl::StatusOr<std::unique_ptr<CudaRunner>> CudaRunner::Load(const std::string& dir, const CudaRunnerOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(dir, config, options.progress));
  return Create(config, &weights, 0, options);
}

absl::Status CudaRunner::Init(const ModelWeights* weights, uint64_t seed) {
  const ModelConfig& c = config_;
  DeviceState& d = *d_;
  CUDA_OK(cudaSetDevice(options_.device), "set device");
  device_name_ = cuda::DeviceDescription(options_.device);
  CUDA_OK(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking), "stream");
  CUDA_OK(cudaEventCreateWithFlags(&d.uploaded, cudaEventDisableTiming), "event");
  RETURN_IF_ERROR(d.gemm.Init());
  d.gemm.set_small_m_rows(options_.small_gemm_rows);

  const int64_t H = c.hidden_size, M = c.intermediate_size, V = c.vocab_size;
  const int nh = c.num_heads, kvh = c.num_kv_heads, hd = c.head_dim, vhd = c.v_head_dim;
  const bool per_branch = c.nsa.kv_sharing == KvSharing::kPerBranch;
  const bool linear = c.nsa.compress_fn == CompressFn::kLinear;
  d.qkvg_width = nh * hd + kvh * hd + kvh * vhd + 3 * nh + (per_branch ? 2 * (kvh * hd + kvh * vhd) : 0);

  // Weights: allocate the fused matrices, then place every checkpoint tensor into them.
  d.layers.resize(c.num_layers);
  RETURN_IF_ERROR(d.Alloc(&d.embeddings, V * H));
  RETURN_IF_ERROR(d.Alloc(&d.norm, H));
  if (!c.tie_word_embeddings) RETURN_IF_ERROR(d.Alloc(&d.lm_head, V * H));
  for (DeviceState::Layer& L : d.layers) {
    RETURN_IF_ERROR(d.Alloc(&L.qkvg, d.qkvg_width * H));
    RETURN_IF_ERROR(d.Alloc(&L.o, H * nh * vhd));
    RETURN_IF_ERROR(d.Alloc(&L.gate_up, 2 * M * H));
    RETURN_IF_ERROR(d.Alloc(&L.down, H * M));
    RETURN_IF_ERROR(d.Alloc(&L.attn_norm, H));
    RETURN_IF_ERROR(d.Alloc(&L.mlp_norm, H));
    if (c.qkv_bias) {
      RETURN_IF_ERROR(d.Alloc(&L.q_bias, nh * hd));
      RETURN_IF_ERROR(d.Alloc(&L.k_bias, kvh * hd));
      RETURN_IF_ERROR(d.Alloc(&L.v_bias, kvh * vhd));
    }
    if (linear) {
      const int64_t l = c.nsa.compress_block;
      RETURN_IF_ERROR(d.Alloc(&L.intra_block_pe, kvh * l * hd));
      RETURN_IF_ERROR(d.Alloc(&L.compress_key, kvh * l * hd * hd));
      RETURN_IF_ERROR(d.Alloc(&L.compress_value, kvh * l * vhd * vhd));
    }
  }
  // Row offsets in the fused q|k|v|gates|k_win|v_win|k_cmp|v_cmp matrix.
  const int64_t off_k = nh * hd, off_v = off_k + kvh * hd, off_g = off_v + kvh * vhd, off_kw = off_g + 3 * nh,
                off_vw = off_kw + kvh * hd, off_kc = off_vw + kvh * vhd, off_vc = off_kc + kvh * hd;
  std::vector<bf16> staging;
  for (const TensorSpec& s : ExpectedTensors(c)) {
    bf16* dst16 = nullptr;
    float* dst32 = nullptr;
    using LW = LayerWeights;
    if (s.layer < 0) {
      if (s.model_field == &ModelWeights::embeddings) dst16 = d.embeddings;
      if (s.model_field == &ModelWeights::lm_head) dst16 = d.lm_head;
      if (s.model_field == &ModelWeights::norm) dst32 = d.norm;
    } else {
      DeviceState::Layer& L = d.layers[s.layer];
      auto f = s.layer_field;
      if (f == &LW::q_proj) dst16 = L.qkvg;
      if (f == &LW::k_proj) dst16 = L.qkvg + off_k * H;
      if (f == &LW::v_proj) dst16 = L.qkvg + off_v * H;
      if (f == &LW::g_proj) dst16 = L.qkvg + off_g * H;
      if (f == &LW::k_win_proj) dst16 = L.qkvg + off_kw * H;
      if (f == &LW::v_win_proj) dst16 = L.qkvg + off_vw * H;
      if (f == &LW::k_cmp_proj) dst16 = L.qkvg + off_kc * H;
      if (f == &LW::v_cmp_proj) dst16 = L.qkvg + off_vc * H;
      if (f == &LW::o_proj) dst16 = L.o;
      if (f == &LW::gate_proj) dst16 = L.gate_up;
      if (f == &LW::up_proj) dst16 = L.gate_up + M * H;
      if (f == &LW::down_proj) dst16 = L.down;
      if (f == &LW::compress_key) dst16 = L.compress_key;
      if (f == &LW::compress_value) dst16 = L.compress_value;
      if (f == &LW::attn_norm) dst32 = L.attn_norm;
      if (f == &LW::mlp_norm) dst32 = L.mlp_norm;
      if (f == &LW::q_bias) dst32 = L.q_bias;
      if (f == &LW::k_bias) dst32 = L.k_bias;
      if (f == &LW::v_bias) dst32 = L.v_bias;
      if (f == &LW::intra_block_pe) dst32 = L.intra_block_pe;
    }
    if (!dst16 && !dst32) return absl::InternalError(absl::StrCat("the CUDA runner has no place for tensor ", s.name));
    const int64_t n = s.NumElements();
    weight_bytes_ += n * (dst16 ? 2 : 4);
    if (weights == nullptr) {
      const uint64_t hash = HashName(s.name);
      CUDA_OK(dst16 ? cuda::LaunchRandomBf16(dst16, n, seed, hash, s.init_mean, s.init_std, d.stream)
                    : cuda::LaunchRandomFloat(dst32, n, seed, hash, s.init_mean, s.init_std, d.stream),
              "random weights");
      continue;
    }
    const std::vector<float>& src = s.layer >= 0 ? weights->layers[s.layer].*s.layer_field : weights->*s.model_field;
    if (static_cast<int64_t>(src.size()) != n) return absl::InvalidArgumentError(absl::StrCat("tensor ", s.name, " has the wrong size"));
    if (dst32) {
      CUDA_OK(cudaMemcpy(dst32, src.data(), n * sizeof(float), cudaMemcpyHostToDevice), "upload");
    } else {
      staging.resize(n);
      ConvertFromFloat(DType::kBF16, src.data(), n, reinterpret_cast<std::byte*>(staging.data()));
      CUDA_OK(cudaMemcpy(dst16, staging.data(), n * sizeof(bf16), cudaMemcpyHostToDevice), "upload");
    }
  }
  staging = {};
  if (c.tie_word_embeddings) d.lm_head = d.embeddings;
  // RoPE frequencies with the host's pow, as kernels/reference/ops.cc computes them.
  std::vector<double> inv_freq(hd / 2);
  for (int i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(c.rope_theta, -2.0 * i / hd);
  RETURN_IF_ERROR(d.Alloc(&d.inv_freq, hd / 2));
  CUDA_OK(cudaMemcpy(d.inv_freq, inv_freq.data(), inv_freq.size() * sizeof(double), cudaMemcpyHostToDevice), "upload");

  // Activations and step metadata.
  const int64_t T = std::max<int64_t>(options_.max_step_tokens, options_.max_num_seqs);
  d.T = T;
  RETURN_IF_ERROR(d.Alloc(&d.x, T * H));
  RETURN_IF_ERROR(d.Alloc(&d.h, T * std::max(H, int64_t{nh} * vhd)));
  RETURN_IF_ERROR(d.Alloc(&d.mlp, T * M));  // SwiGLU's output: written while the gate/up product still reads d.h
  RETURN_IF_ERROR(d.Alloc(&d.proj, T * std::max<int64_t>(d.qkvg_width, 2 * M)));
  RETURN_IF_ERROR(d.Alloc(&d.gates, T * 3 * nh));
  RETURN_IF_ERROR(d.Alloc(&d.attn, T * nh * vhd));
  RETURN_IF_ERROR(d.Alloc(&d.q, T * nh * hd));
  RETURN_IF_ERROR(d.Alloc(&d.k, T * kvh * hd));
  RETURN_IF_ERROR(d.Alloc(&d.v, T * kvh * vhd));
  if (per_branch) {
    RETURN_IF_ERROR(d.Alloc(&d.k_win, T * kvh * hd));
    RETURN_IF_ERROR(d.Alloc(&d.v_win, T * kvh * vhd));
    RETURN_IF_ERROR(d.Alloc(&d.v_src, T * kvh * vhd));
  }
  if (per_branch || linear) RETURN_IF_ERROR(d.Alloc(&d.k_src, T * kvh * hd));
  RETURN_IF_ERROR(d.Alloc(&d.logits, int64_t{options_.max_num_seqs} * V));
  CUDA_OK(cudaMallocHost(&d.logits_host, int64_t{options_.max_num_seqs} * V * sizeof(float)), "pinned logits");
  RETURN_IF_ERROR(d.Alloc(reinterpret_cast<char**>(&d.attn_workspace), options_.attention_workspace_bytes));

  const int64_t max_context = options_.max_context > 0 ? options_.max_context : c.max_position_embeddings;
  options_.max_context = max_context;
  max_pages_ = static_cast<int>(max_context / c.nsa.select_block + 2);
  // The prefill kernels' limits; other shapes and longer contexts prefill through the decode kernel.
  prefill_kernels_ = cuda::NsaPrefillSupports(nh, kvh, hd, vhd, c.nsa, layout_, max_context);
  d.table_rows = options_.max_num_seqs + 1;
  d.max_summaries = T / c.nsa.compress_stride + options_.max_num_seqs + 1;
  // One block of metadata: int64 arrays first (alignment), then int32 arrays.
  const int64_t table_elems = int64_t{d.table_rows} * max_pages_;
  const int64_t meta_bytes = (T + d.max_summaries) * 8 + (3 * T + d.max_summaries + options_.max_num_seqs + 3 * table_elems) * 4;
  RETURN_IF_ERROR(d.Alloc(reinterpret_cast<char**>(&d.meta_dev), meta_bytes));
  CUDA_OK(cudaMallocHost(&d.meta_host, meta_bytes), "pinned metadata");
  auto carve = [&](void* base, DeviceState::Meta* m) {
    char* p = static_cast<char*>(base);
    auto take = [&](auto** out, int64_t count) {
      *out = reinterpret_cast<std::remove_reference_t<decltype(*out)>>(p);
      p += count * sizeof(**out);
    };
    take(&m->positions, T);
    take(&m->summary_index, d.max_summaries);
    take(&m->tokens, T);
    take(&m->token_seq, T);
    take(&m->attn_row, T);
    take(&m->summary_seq, d.max_summaries);
    take(&m->logit_rows, options_.max_num_seqs);
    take(&m->raw, table_elems);
    take(&m->win, table_elems);
    take(&m->src, table_elems);
  };
  carve(d.meta_dev, &d.dev);
  carve(d.meta_host, &d.host);

  // The KV pages: what the memory fraction leaves, plus one scratch page for padding rows.
  const int64_t pbytes = page_bytes();
  CUDA_OK(cudaDeviceSynchronize(), "weights");
  int64_t pages = options_.num_pages;
  if (pages <= 0) {
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_OK(cudaMemGetInfo(&free_bytes, &total_bytes), "memory info");
    const int64_t used = static_cast<int64_t>(total_bytes - free_bytes);
    // Leave room for graphs and cuBLASLt's own state.
    const int64_t budget = static_cast<int64_t>(options_.memory_fraction * static_cast<double>(total_bytes)) - used - (int64_t{256} << 20);
    pages = budget / pbytes - 1;
    if (pages < 1) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "no GPU memory left for the KV cache: %.2f GiB of %.2f GiB used by weights and buffers at memory fraction %.2f",
          used / 1073741824.0, total_bytes / 1073741824.0, options_.memory_fraction));
    }
  }
  pages = std::min<int64_t>(pages, (int64_t{1} << 31) - 2);
  num_pages_ = static_cast<int32_t>(pages);
  CUDA_OK(cudaMalloc(&pages_, (pages + 1) * pbytes), "KV pages");
  CUDA_OK(cudaMemset(static_cast<char*>(pages_) + pages * pbytes, 0, pbytes), "scratch page");
  // The padding row of every table points at the scratch page.
  for (int32_t* t : {d.host.raw, d.host.win, d.host.src}) {
    std::fill(t + int64_t{options_.max_num_seqs} * max_pages_, t + table_elems, num_pages_);
  }
  for (auto [h, dv] : {std::pair{d.host.raw, d.dev.raw}, std::pair{d.host.win, d.dev.win}, std::pair{d.host.src, d.dev.src}}) {
    const int64_t off = int64_t{options_.max_num_seqs} * max_pages_;
    CUDA_OK(cudaMemcpy(dv + off, h + off, max_pages_ * sizeof(int32_t), cudaMemcpyHostToDevice), "tables");
  }
  return absl::OkStatus();
}

std::string CudaRunner::Describe() const {
  const double gib = 1073741824.0;
  return absl::StrFormat("cuda: %s, bf16, weights %.2f GiB, %d KV pages of %d tokens (%.2f GiB), CUDA graphs %s", device_name_,
                         weight_bytes_ / gib, num_pages_, config_.nsa.select_block, num_pages_ * double(page_bytes()) / gib,
                         options_.cuda_graphs ? "on" : "off");
}

namespace {

// Stage timing for benchmarks: an event after each stage, summed per stage name after the step.
class StageTimer {
 public:
  StageTimer(bool on, cudaStream_t stream) : on_(on), stream_(stream) {
    if (on_) Mark("start");
  }
  ~StageTimer() {
    for (auto& [name, e] : marks_) cudaEventDestroy(e);
  }
  void Mark(const char* stage) {
    if (!on_) return;
    cudaEvent_t e;
    cudaEventCreate(&e);
    cudaEventRecord(e, stream_);
    marks_.emplace_back(stage, e);
  }
  std::string Report() {
    if (!on_ || marks_.size() < 2) return "";
    cudaEventSynchronize(marks_.back().second);
    std::map<std::string, float> total;
    float all = 0;
    for (size_t i = 1; i < marks_.size(); ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, marks_[i - 1].second, marks_[i].second);
      total[marks_[i].first] += ms;
      all += ms;
    }
    std::string out = absl::StrFormat("step %.3f ms:", all);
    for (const auto& [name, ms] : total) absl::StrAppendFormat(&out, " %s %.3f", name, ms);
    return out;
  }

 private:
  bool on_;
  cudaStream_t stream_;
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;
};

// Whether the q/k/v split writes the new K/V rows into the pages (one launch less a layer):
// yes unless NSA_SPLIT_KV_WRITE=0 (read once).
bool SplitWritesCache() {
  static const bool on = [] {
    const char* v = std::getenv("NSA_SPLIT_KV_WRITE");
    return !(v && std::string_view(v) == "0");
  }();
  return on;
}

}  // namespace

absl::Status CudaRunner::Forward(int N, int R, int64_t context) {
  const ModelConfig& c = config_;
  DeviceState& d = *d_;
  cudaStream_t st = d.stream;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(st, &capturing);
  StageTimer timer(options_.profile && capturing == cudaStreamCaptureStatusNone, st);
  const int H = c.hidden_size, M = c.intermediate_size, V = c.vocab_size;
  const int nh = c.num_heads, kvh = c.num_kv_heads, hd = c.head_dim, vhd = c.v_head_dim;
  const bool per_branch = c.nsa.kv_sharing == KvSharing::kPerBranch;
  const bool linear = c.nsa.compress_fn == CompressFn::kLinear;
  const KvLayout& layout = layout_;
  bf16* pages = static_cast<bf16*>(pages_);

  CUDA_OK(cuda::LaunchEmbed(d.dev.tokens, N, d.embeddings, H, d.x, st), "embedding");
  timer.Mark("embed");
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const DeviceState::Layer& L = d.layers[layer];
    CUDA_OK(cuda::LaunchRmsNorm(d.x, nullptr, N, H, L.attn_norm, c.norm_eps, d.h, st), "attn norm");
    timer.Mark("norm");
    RETURN_IF_ERROR(d.gemm.Run(d.h, N, H, L.qkvg, d.qkvg_width, d.proj, false, st));
    timer.Mark("gemm_qkvg");
    cuda::KvWriteArgs wa;
    wa.layout = layout, wa.layer = layer, wa.num_tokens = N, wa.token_seq = d.dev.token_seq, wa.token_pos = d.dev.positions;
    wa.raw_tables = d.dev.raw, wa.win_tables = layout.has_win ? d.dev.win : nullptr;
    wa.src_tables = layout.has_src_k || layout.has_src_v ? d.dev.src : nullptr, wa.max_pages = max_pages_;
    wa.k = d.k, wa.v = d.v, wa.k_win = d.k_win, wa.v_win = d.v_win, wa.k_src = d.k_src, wa.v_src = d.v_src, wa.pages = pages;
    cuda::QkvSplitArgs qa;
    qa.n = N, qa.width = d.qkvg_width, qa.num_heads = nh, qa.num_kv_heads = kvh, qa.head_dim = hd, qa.v_head_dim = vhd;
    qa.per_branch = per_branch, qa.linear = linear, qa.inv_freq = d.inv_freq;
    qa.proj = d.proj, qa.q_bias = L.q_bias, qa.k_bias = L.k_bias, qa.v_bias = L.v_bias, qa.positions = d.dev.positions;
    qa.q = d.q, qa.gates = d.gates, qa.k = d.k, qa.v = d.v, qa.k_win = d.k_win, qa.v_win = d.v_win, qa.k_src = d.k_src,
    qa.v_src = d.v_src;
    // The split writes the new rows into the pages itself (NSA_SPLIT_KV_WRITE=0: the separate
    // copy kernel, for comparison).
    qa.write_cache = SplitWritesCache(), qa.cache = wa;
    CUDA_OK(cuda::LaunchQkvSplit(qa, st), "qkv split");
    timer.Mark("qkv_split");
    if (!qa.write_cache) CUDA_OK(cuda::LaunchKvWrite(wa, st), "kv write");

    cuda::SummaryArgs sa;
    sa.layout = layout, sa.nsa = c.nsa, sa.layer = layer, sa.rope_theta = c.rope_theta, sa.num_summaries = d.num_summaries;
    sa.summary_seq = d.dev.summary_seq, sa.summary_index = d.dev.summary_index, sa.raw_tables = d.dev.raw;
    sa.src_tables = wa.src_tables, sa.max_pages = max_pages_, sa.intra_block_pe = L.intra_block_pe;
    sa.compress_key = L.compress_key, sa.compress_value = L.compress_value, sa.pages = pages;
    CUDA_OK(cuda::LaunchSummaries(sa, st), "summaries");
    timer.Mark("kv_write_summaries");

    // Attention: the prefill runs through the prefill kernels, the other tokens through the
    // decode kernel, in runs of queries whose workspace fits.
    cuda::NsaDecodeArgs aa;
    aa.num_heads = nh, aa.num_kv_heads = kvh, aa.head_dim = hd, aa.v_head_dim = vhd, aa.layer = layer;
    aa.scale = 1.0f / std::sqrt(static_cast<float>(hd)), aa.nsa = c.nsa, aa.layout = layout, aa.pages = pages;
    aa.raw_tables = d.dev.raw, aa.win_tables = wa.win_tables, aa.max_pages = max_pages_, aa.max_context = context;
    aa.workspace = d.attn_workspace;
    int run = N;
    for (;;) {
      aa.batch = run;
      if (run == 1 || cuda::NsaDecodeWorkspaceBytes(aa) <= static_cast<size_t>(options_.attention_workspace_bytes)) break;
      run = (run + 1) / 2;
    }
    if (cuda::NsaDecodeWorkspaceBytes(aa) > static_cast<size_t>(options_.attention_workspace_bytes)) {
      return absl::ResourceExhaustedError("the attention workspace is too small for one query at this context");
    }
    const bool decode_only = d.prefill_runs.empty();
    auto decode_tokens = [&](int from, int to) -> absl::Status {
      for (int q0 = from; q0 < to; q0 += run) {
        aa.batch = std::min(run, to - q0);
        aa.q = d.q + int64_t{q0} * nh * hd, aa.gates = d.gates + int64_t{q0} * nh * 3;
        aa.positions = d.dev.positions + q0, aa.table_rows = d.dev.attn_row + q0;
        // A step of decode tokens only: the kernel writes the o projection's bf16 input itself.
        if (decode_only) {
          aa.out = nullptr, aa.out_bf16 = d.h + int64_t{q0} * nh * vhd;
        } else {
          aa.out = d.attn + int64_t{q0} * nh * vhd, aa.out_bf16 = nullptr;
        }
        CUDA_OK(cuda::LaunchNsaDecode(aa, st), "attention");
      }
      return absl::OkStatus();
    };
    int next = 0;  // the first token not yet attended
    for (const DeviceState::PrefillRun& r : d.prefill_runs) {
      RETURN_IF_ERROR(decode_tokens(next, r.q0));
      RETURN_IF_ERROR(PrefillAttention(layer, r.q0, r.count, r.seq, r.first_position));
      next = r.q0 + r.count;
    }
    RETURN_IF_ERROR(decode_tokens(next, N));
    timer.Mark("attention");
    if (!decode_only) CUDA_OK(cuda::LaunchToBf16(d.attn, int64_t{N} * nh * vhd, d.h, st), "attention out");
    timer.Mark("convert");
    RETURN_IF_ERROR(d.gemm.Run(d.h, N, nh * vhd, L.o, H, d.x, true, st));
    timer.Mark("gemm_o");

    CUDA_OK(cuda::LaunchRmsNorm(d.x, nullptr, N, H, L.mlp_norm, c.norm_eps, d.h, st), "mlp norm");
    timer.Mark("norm");
    RETURN_IF_ERROR(d.gemm.RunSiluMul(d.h, N, H, L.gate_up, M, d.proj, d.mlp, st));
    timer.Mark("gemm_gate_up_swiglu");
    RETURN_IF_ERROR(d.gemm.Run(d.mlp, N, M, L.down, H, d.x, true, st));
    timer.Mark("gemm_down");
  }
  if (R > 0) {
    CUDA_OK(cuda::LaunchRmsNorm(d.x, d.dev.logit_rows, R, H, d.norm, c.norm_eps, d.h, st), "final norm");
    RETURN_IF_ERROR(d.gemm.Run(d.h, R, H, d.lm_head, V, d.logits, false, st));
    timer.Mark("lm_head");
  }
  if (const std::string r = timer.Report(); !r.empty()) profile_report_ = r;
  return absl::OkStatus();
}

absl::Status CudaRunner::PrefillAttention(int layer, int q0, int count, int seq, int64_t first_position) {
  const ModelConfig& c = config_;
  DeviceState& d = *d_;
  const int nh = c.num_heads, kvh = c.num_kv_heads, hd = c.head_dim, vhd = c.v_head_dim, n = c.nsa.num_selected;
  cuda::NsaPrefillArgs a;
  a.num_heads = nh, a.num_kv_heads = kvh, a.head_dim = hd, a.v_head_dim = vhd, a.layer = layer;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd)), a.nsa = c.nsa, a.layout = layout_;
  a.pages = static_cast<const bf16*>(pages_);
  a.raw_table = d.dev.raw + int64_t{seq} * max_pages_;
  a.win_table = layout_.has_win ? d.dev.win + int64_t{seq} * max_pages_ : nullptr;
  // The workspace holds each branch's output and log-sum-exp and the selection of `per` queries.
  const int64_t floats = 3 * (int64_t{nh} * vhd + nh), ints = int64_t{kvh} * n;
  const int64_t per = options_.attention_workspace_bytes / ((floats + ints) * 4);
  if (per < 1) return absl::ResourceExhaustedError("the attention workspace is too small for one prefill query");
  for (int done = 0; done < count;) {
    const int m = static_cast<int>(std::min<int64_t>(per, count - done));
    float* w = static_cast<float*>(d.attn_workspace);
    a.cmp_out = w, a.slc_out = w + int64_t{m} * nh * vhd, a.win_out = w + 2 * int64_t{m} * nh * vhd;
    a.cmp_lse = w + 3 * int64_t{m} * nh * vhd, a.slc_lse = a.cmp_lse + int64_t{m} * nh, a.win_lse = a.slc_lse + int64_t{m} * nh;
    a.selection_out = reinterpret_cast<int32_t*>(a.win_lse + int64_t{m} * nh);
    a.selection = a.selection_out;
    const int q = q0 + done;
    a.q = d.q + int64_t{q} * nh * hd, a.num_queries = m, a.first_position = first_position + done;
    CUDA_OK(cuda::LaunchNsaPrefillCompressed(a, d.stream), "prefill compressed");
    CUDA_OK(cuda::LaunchNsaPrefillSelect(a, d.stream), "prefill selection");
    CUDA_OK(cuda::LaunchNsaPrefillSelected(a, d.stream), "prefill selected");
    CUDA_OK(cuda::LaunchNsaPrefillWindow(a, d.stream), "prefill window");
    CUDA_OK(cuda::LaunchNsaPrefillCombine(a, d.gates + int64_t{q} * nh * 3, d.attn + int64_t{q} * nh * vhd, d.stream),
            "prefill combine");
    done += m;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> CudaRunner::Execute(std::span<const RunnerSeq> seqs) {
  return Step(seqs, true);
}

absl::Status CudaRunner::ExecuteKeepingLogits(std::span<const RunnerSeq> seqs) { return Step(seqs, false).status(); }

absl::StatusOr<std::vector<SampleResult>> CudaRunner::SampleLast(std::span<const SampleDraw> draws) {
  DeviceState& d = *d_;
  cudaStream_t st = d.stream;
  const int D = static_cast<int>(draws.size());
  const int V = config_.vocab_size;
  if (D == 0) return std::vector<SampleResult>{};
  // Rows and their per-token controls (CSR), as engine/sampler/sampler.cc applies them.
  std::vector<cuda::DeviceSampleRow> rows(D);
  std::vector<cuda::DeviceSampleExtra> extras;
  for (int i = 0; i < D; ++i) {
    const SampleDraw& s = draws[i];
    if (s.logits_row < 0 || s.logits_row >= static_cast<int>(kept_rows_.size())) {
      return absl::InternalError(absl::StrCat("sample draw ", i, " names logits row ", s.logits_row, " of ", kept_rows_.size()));
    }
    const SamplingParams& p = *s.params;
    cuda::DeviceSampleRow& r = rows[i];
    r.logits_row = kept_rows_[s.logits_row];
    r.vocab_limit = std::min(s.vocab_limit, V);
    r.temperature = p.temperature, r.top_p = p.top_p, r.min_p = p.min_p, r.top_k = p.top_k;
    r.repetition_penalty = p.repetition_penalty, r.presence_penalty = p.presence_penalty;
    r.frequency_penalty = p.frequency_penalty, r.num_top = s.num_top, r.u = s.u;
    r.extra_begin = static_cast<int32_t>(extras.size());
    for (const auto& [token, bias] : p.logit_bias) extras.push_back({token, cuda::kExtraBias, bias});
    for (int token : s.banned) extras.push_back({token, cuda::kExtraBanned, 0.f});
    if (s.history != nullptr && p.NeedsPenalties()) {
      if (p.repetition_penalty != 1.0f) {
        for (const auto& [token, unused] : s.history->prompt_tokens) extras.push_back({token, cuda::kExtraPrompt, 0.f});
      }
      for (const auto& [token, count] : s.history->output_counts) {
        extras.push_back({token, cuda::kExtraOutput, static_cast<float>(count)});
      }
    }
    r.extra_end = static_cast<int32_t>(extras.size());
  }
  // Buffers grow to the largest step seen (allocation is outside any graph).
  if (D > d.sample_capacity) {
    for (void* p : {static_cast<void*>(d.sample_rows), static_cast<void*>(d.sample_token), static_cast<void*>(d.sample_logprob),
                    static_cast<void*>(d.sample_top), d.sample_workspace}) {
      if (p) cudaFree(p);
    }
    const int cap = std::max(D, 2 * d.sample_capacity);
    CUDA_OK(cudaMalloc(&d.sample_rows, cap * sizeof(cuda::DeviceSampleRow)), "sampling buffers");
    CUDA_OK(cudaMalloc(&d.sample_token, cap * sizeof(int32_t)), "sampling buffers");
    CUDA_OK(cudaMalloc(&d.sample_logprob, cap * sizeof(float)), "sampling buffers");
    CUDA_OK(cudaMalloc(&d.sample_top, int64_t{cap} * cuda::kMaxTopLogprobs * sizeof(cuda::DeviceLogprob)), "sampling buffers");
    CUDA_OK(cudaMalloc(&d.sample_workspace, cuda::SampleWorkspaceBytes(cap, V)), "sampling workspace");
    d.sample_capacity = cap;
  }
  if (static_cast<int64_t>(extras.size()) > d.extra_capacity) {
    if (d.sample_extras) cudaFree(d.sample_extras);
    const int64_t cap = std::max<int64_t>(extras.size(), 2 * d.extra_capacity);
    CUDA_OK(cudaMalloc(&d.sample_extras, cap * sizeof(cuda::DeviceSampleExtra)), "sampling extras");
    d.extra_capacity = cap;
  }
  CUDA_OK(cudaMemcpyAsync(d.sample_rows, rows.data(), D * sizeof(rows[0]), cudaMemcpyHostToDevice, st), "sampling upload");
  if (!extras.empty()) {
    CUDA_OK(cudaMemcpyAsync(d.sample_extras, extras.data(), extras.size() * sizeof(extras[0]), cudaMemcpyHostToDevice, st),
            "sampling upload");
  }
  cuda::SampleArgs a;
  a.num_rows = D, a.vocab = V, a.logits_stride = V, a.logits = d.logits, a.rows = d.sample_rows;
  a.extras = extras.empty() ? nullptr : d.sample_extras, a.workspace = d.sample_workspace;
  a.token = d.sample_token, a.logprob = d.sample_logprob, a.top = d.sample_top;
  CUDA_OK(cuda::LaunchSample(a, st), "sampling");
  std::vector<int32_t> tokens(D);
  std::vector<float> logprobs(D);
  std::vector<cuda::DeviceLogprob> top(int64_t{D} * cuda::kMaxTopLogprobs);
  CUDA_OK(cudaMemcpyAsync(tokens.data(), d.sample_token, D * sizeof(int32_t), cudaMemcpyDeviceToHost, st), "sampling download");
  CUDA_OK(cudaMemcpyAsync(logprobs.data(), d.sample_logprob, D * sizeof(float), cudaMemcpyDeviceToHost, st), "sampling download");
  CUDA_OK(cudaMemcpyAsync(top.data(), d.sample_top, top.size() * sizeof(top[0]), cudaMemcpyDeviceToHost, st), "sampling download");
  CUDA_OK(cudaStreamSynchronize(st), "sampling");
  std::vector<SampleResult> out(D);
  for (int i = 0; i < D; ++i) {
    out[i].token = tokens[i];
    if (draws[i].num_top < 0) continue;
    out[i].logprob = logprobs[i];
    for (int k = 0; k < std::min(draws[i].num_top, cuda::kMaxTopLogprobs); ++k) {
      const cuda::DeviceLogprob& lp = top[int64_t{i} * cuda::kMaxTopLogprobs + k];
      if (lp.token >= 0) out[i].top.push_back({lp.token, lp.logprob});
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<float>>> CudaRunner::Step(std::span<const RunnerSeq> seqs, bool download) {
  const ModelConfig& c = config_;
  DeviceState& d = *d_;
  const NsaParams& p = c.nsa;
  cudaStream_t st = d.stream;
  const int S = static_cast<int>(seqs.size());
  if (S > options_.max_num_seqs) {
    return absl::InvalidArgumentError(absl::StrCat("a step of ", S, " sequences exceeds the runner's ", options_.max_num_seqs));
  }
  int64_t total = 0, context = 1;
  bool decode_only = true;
  for (const RunnerSeq& s : seqs) {
    for (int t : s.tokens) {
      // The embedding gather would read outside the table: refuse before anything runs.
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", t, " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
    total += static_cast<int64_t>(s.tokens.size());
    context = std::max<int64_t>(context, s.first_token + static_cast<int64_t>(s.tokens.size()));
    decode_only = decode_only && s.tokens.size() == 1;
    const size_t longest = std::max({s.tables->raw.size(), s.tables->win.size(), s.tables->src.size()});
    if (static_cast<int64_t>(longest) > max_pages_) {
      return absl::InvalidArgumentError(absl::StrCat("a sequence of ", s.first_token + s.tokens.size(),
                                                     " tokens exceeds the runner's maximum context ", options_.max_context));
    }
  }
  if (total > options_.max_step_tokens && !(decode_only && total <= d.T)) {
    return absl::InvalidArgumentError(absl::StrCat("a step of ", total, " tokens exceeds the runner's ", options_.max_step_tokens));
  }
  const bool graph = options_.cuda_graphs && decode_only && S > 0;
  const int N = graph ? BatchBucket(S, options_.max_num_seqs) : static_cast<int>(total);
  if (graph) context = ContextBucket(context, options_.max_context + 1);

  // Copy-on-write page copies first: this step's writes go to the copies.
  const int64_t pbytes = page_bytes();
  for (const RunnerSeq& s : seqs) {
    for (const PageCopy& cp : s.copies) {
      CUDA_OK(cudaMemcpyAsync(static_cast<char*>(pages_) + cp.dst * pbytes, static_cast<char*>(pages_) + cp.src * pbytes, pbytes,
                              cudaMemcpyDeviceToDevice, st),
              "page copy");
    }
  }

  // Metadata. Padding rows (graph steps) write nowhere and read the scratch row.
  DeviceState::Meta& h = d.host;
  const int pad_row = options_.max_num_seqs;
  CUDA_OK(cudaEventSynchronize(d.uploaded), "previous step's uploads");  // the staging is free again
  // Page tables: the kinds the layout has, each row as far as the step's longest table (the
  // kernels read no further), -1 past a sequence's own pages.
  const bool has_src = layout_.has_src_k || layout_.has_src_v;
  size_t columns = 1;
  for (const RunnerSeq& s : seqs) {
    columns = std::max({columns, s.tables->raw.size(), layout_.has_win ? s.tables->win.size() : size_t{0},
                        has_src ? s.tables->src.size() : size_t{0}});
  }
  int n = 0, summaries = 0, rows = 0;
  d.prefill_runs.clear();
  for (int i = 0; i < S; ++i) {
    const RunnerSeq& s = seqs[i];
    for (auto [dst, src, used] : {std::tuple{h.raw, &s.tables->raw, true}, std::tuple{h.win, &s.tables->win, layout_.has_win},
                                  std::tuple{h.src, &s.tables->src, has_src}}) {
      if (!used) continue;
      int32_t* row = dst + int64_t{i} * max_pages_;
      std::copy(src->begin(), src->end(), row);
      std::fill(row + src->size(), row + columns, -1);
    }
    const int64_t t0 = s.first_token, count = static_cast<int64_t>(s.tokens.size());
    if (!graph && prefill_kernels_ && options_.prefill_kernel_min_tokens > 0 && count >= options_.prefill_kernel_min_tokens) {
      d.prefill_runs.push_back({n, static_cast<int>(count), i, t0});
    }
    for (int64_t j = 0; j < count; ++j, ++n) {
      h.tokens[n] = s.tokens[j], h.positions[n] = t0 + j, h.token_seq[n] = i, h.attn_row[n] = i;
    }
    for (int64_t b = p.NumCompressed(t0); b < p.NumCompressed(t0 + count); ++b) {
      h.summary_seq[summaries] = i, h.summary_index[summaries] = b, ++summaries;
    }
    if (graph) {
      h.logit_rows[rows++] = n - 1;
    } else if (s.want_logits) {
      h.logit_rows[rows++] = n - 1;
    }
  }
  if (graph) {
    for (; n < N; ++n) h.tokens[n] = 0, h.positions[n] = 0, h.token_seq[n] = -1, h.attn_row[n] = pad_row;
    for (; summaries < N; ++summaries) h.summary_seq[summaries] = -1, h.summary_index[summaries] = 0;
    for (; rows < N; ++rows) h.logit_rows[rows] = rows;
  }
  d.num_summaries = summaries;
  auto up = [&](auto* dst, auto* src, int64_t count) {
    return CudaStatus(cudaMemcpyAsync(dst, src, count * sizeof(*src), cudaMemcpyHostToDevice, st), "metadata upload");
  };
  RETURN_IF_ERROR(up(d.dev.tokens, h.tokens, n));
  RETURN_IF_ERROR(up(d.dev.positions, h.positions, n));
  RETURN_IF_ERROR(up(d.dev.token_seq, h.token_seq, n));
  RETURN_IF_ERROR(up(d.dev.attn_row, h.attn_row, n));
  RETURN_IF_ERROR(up(d.dev.summary_seq, h.summary_seq, summaries));
  RETURN_IF_ERROR(up(d.dev.summary_index, h.summary_index, summaries));
  RETURN_IF_ERROR(up(d.dev.logit_rows, h.logit_rows, rows));
  auto up_table = [&](int32_t* dst, const int32_t* src) {
    const size_t pitch = max_pages_ * sizeof(int32_t);
    return CudaStatus(cudaMemcpy2DAsync(dst, pitch, src, pitch, columns * sizeof(int32_t), S, cudaMemcpyHostToDevice, st),
                      "page-table upload");
  };
  RETURN_IF_ERROR(up_table(d.dev.raw, h.raw));
  if (layout_.has_win) RETURN_IF_ERROR(up_table(d.dev.win, h.win));
  if (has_src) RETURN_IF_ERROR(up_table(d.dev.src, h.src));
  CUDA_OK(cudaEventRecord(d.uploaded, st), "event");

  if (graph) {
    const auto key = std::make_pair(N, context);
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      // First step of this shape: run it eagerly (its result is this step's), then capture it
      // for the next ones.
      RETURN_IF_ERROR(Forward(N, N, context));
      cudaGraph_t g = nullptr;
      CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "graph capture");
      const absl::Status fs = Forward(N, N, context);
      const cudaError_t ce = cudaStreamEndCapture(st, &g);
      RETURN_IF_ERROR(fs);
      CUDA_OK(ce, "graph capture");
      cudaGraphExec_t exec = nullptr;
      const cudaError_t ie = cudaGraphInstantiate(&exec, g, 0);
      cudaGraphDestroy(g);
      CUDA_OK(ie, "graph instantiate");
      graphs_.emplace(key, exec);
    } else {
      CUDA_OK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(it->second), st), "graph launch");
    }
  } else {
    RETURN_IF_ERROR(Forward(N, rows, context));
  }

  // Where the logits of the sequences that sample are: row i (graph steps compute every row) or
  // the r-th of those that want them.
  kept_rows_.clear();
  for (int i = 0, r = 0; i < S; ++i) {
    if (seqs[i].want_logits) kept_rows_.push_back(graph ? i : r++);
  }
  std::vector<std::vector<float>> out;
  // Kept on the device: no wait here, so the host prepares the draws while the step runs
  // (SampleLast waits, and reports any fault of the step).
  if (!download) return out;
  const int64_t V = c.vocab_size;
  CUDA_OK(cudaMemcpyAsync(d.logits_host, d.logits, int64_t{graph ? S : rows} * V * sizeof(float), cudaMemcpyDeviceToHost, st),
          "logits download");
  CUDA_OK(cudaStreamSynchronize(st), "step");
  for (int row : kept_rows_) {
    const float* p = d.logits_host + int64_t{row} * V;
    out.emplace_back(p, p + V);
  }
  return out;
}

}  // namespace nsa
