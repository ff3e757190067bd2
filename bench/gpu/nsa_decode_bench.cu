// NSA decode attention on the GPU: time, bytes NSA must read, GB/s and percent of the copy
// ceiling measured in the same run, for the `7b` attention shape and the `paper` shape at
// batch 1, 8, 32 and contexts 8k-128k. Validation is the job of tests/gpu/nsa_decode_test.
// With --prefill, instead: the attention of one whole prompt at batch 1 through the prefill
// kernels (issue 8; independent random queries, then queries correlated across positions, whose
// neighbours choose mostly the same blocks as in a trained model) and, for comparison, every
// position a query of the decode kernel: time and TFLOP/s (NSA's FLOPs: the keys each position
// attends).
//   nsa_decode_bench [--quick] [--prefill]   (prints a markdown table)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bench/gpu/copy_ceiling.h"
#include "kernels/cuda/nsa_decode.h"
#include "kernels/cuda/nsa_prefill.h"

namespace {

__global__ void FillKernel(__nv_bfloat16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 16;
    x *= 2246822519u;
    x ^= x >> 13;
    p[i] = __float2bfloat16((x & 0xFFFF) / 32768.f - 1.f);
  }
}

// Queries that barely change from one position to the next (a shared direction per column plus
// 10% noise), so neighbouring positions choose mostly the same blocks, as in a trained model;
// FillKernel's independent queries make every position choose its own.
__global__ void CorrelatedKernel(__nv_bfloat16* p, size_t n, size_t width, uint32_t seed) {
  auto hash = [](uint32_t x) {
    x ^= x >> 16;
    x *= 2246822519u;
    x ^= x >> 13;
    return (x & 0xFFFF) / 32768.f - 1.f;
  };
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float shared = hash(static_cast<uint32_t>(i % width) * 2654435761u ^ seed);
    p[i] = __float2bfloat16(shared + 0.1f * hash(static_cast<uint32_t>(i) * 2246822519u ^ (seed * 7)));
  }
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// NSA_BENCH_TRACE=1: one more fused launch with the per-task trace, summarised per kind of task
// (times in us from the first task's start), to see the critical path inside the kernel.
void PrintTrace(nsa::cuda::NsaDecodeArgs a, cudaStream_t stream) {
  const nsa::cuda::NsaDecodeTasks n = nsa::cuda::NsaDecodeTaskCounts(a);
  const int total = n.compressed + n.window + n.score + n.selected + n.combine;
  int64_t* d = nullptr;
  CHECK(cudaMalloc(&d, static_cast<size_t>(total) * 8 * 8));
  CHECK(cudaMemset(d, 0, static_cast<size_t>(total) * 8 * 8));
  a.staged = false, a.trace = d;
  CHECK(nsa::cuda::LaunchNsaDecode(a, stream));
  CHECK(cudaStreamSynchronize(stream));
  std::vector<int64_t> h(static_cast<size_t>(total) * 8);
  CHECK(cudaMemcpy(h.data(), d, h.size() * 8, cudaMemcpyDeviceToHost));
  cudaFree(d);
  int64_t t0 = INT64_MAX;
  for (int i = 0; i < total; ++i) t0 = std::min(t0, h[8 * i]);
  const char* names[] = {"compressed", "window", "score", "selected", "combine"};
  const int counts[] = {n.compressed, n.window, n.score, n.selected, n.combine};
  int first = 0;
  for (int k = 0; k < 5; ++k) {
    std::vector<float> dur;
    int64_t s0 = INT64_MAX, s1 = 0, e1 = 0;
    for (int i = first; i < first + counts[k]; ++i) {
      const int64_t* r = &h[8 * i];
      dur.push_back((r[1] - r[0]) * 1e-3f);
      s0 = std::min(s0, r[0]), s1 = std::max(s1, r[0]), e1 = std::max(e1, r[1]);
    }
    if (!dur.empty()) {
      std::fprintf(stderr, "  trace %-10s %4d tasks: starts %.2f-%.2f us, last end %.2f us, duration median %.2f max %.2f us\n",
                   names[k], counts[k], (s0 - t0) * 1e-3, (s1 - t0) * 1e-3, (e1 - t0) * 1e-3, Median(dur),
                   *std::max_element(dur.begin(), dur.end()));
    }
    first += counts[k];
  }
  // When the selected tasks had merged their unit's selection (their third stamp).
  std::vector<float> ends;
  for (int i = n.compressed + n.window + n.score; i < n.compressed + n.window + n.score + n.selected; ++i) {
    if (h[8 * i + 2]) ends.push_back((h[8 * i + 2] - t0) * 1e-3f);
  }
  if (!ends.empty()) {
    std::fprintf(stderr, "  trace selection merged in %zu selected tasks: median %.2f us, last %.2f us\n", ends.size(),
                 Median(ends), *std::max_element(ends.begin(), ends.end()));
  }
}

// Attention of a whole prompt of `context` tokens as the runner prefills today (issue 8 replaces
// it): every position a query of the decode kernel over the sequence's table, in runs of as many
// queries as a 256 MB workspace holds (the runner's default). `a` describes the sequence (batch
// 1); returns seconds and the queries a launch.
std::pair<double, int> PrefillTime(nsa::cuda::NsaDecodeArgs a, int64_t context, cudaStream_t stream) {
  int run = 4096;
  for (; run > 1; run /= 2) {
    nsa::cuda::NsaDecodeArgs probe = a;
    probe.batch = run, probe.max_context = context;
    if (nsa::cuda::NsaDecodeWorkspaceBytes(probe) <= (size_t{256} << 20)) break;
  }
  __nv_bfloat16* q;
  float *gates, *out;
  int64_t* pos;
  int32_t* rows;
  void* ws;
  a.batch = run, a.max_context = context;
  CHECK(cudaMalloc(&ws, nsa::cuda::NsaDecodeWorkspaceBytes(a)));
  CHECK(cudaMalloc(&q, static_cast<size_t>(run) * a.num_heads * a.head_dim * 2));
  CHECK(cudaMalloc(&gates, static_cast<size_t>(run) * a.num_heads * 3 * 4));
  CHECK(cudaMalloc(&out, static_cast<size_t>(run) * a.num_heads * a.v_head_dim * 4));
  CHECK(cudaMalloc(&pos, context * 8));
  CHECK(cudaMalloc(&rows, run * 4));
  FillKernel<<<256, 256>>>(q, static_cast<size_t>(run) * a.num_heads * a.head_dim, 11);
  std::vector<int64_t> pos_h(context);
  for (int64_t t = 0; t < context; ++t) pos_h[t] = t;
  std::vector<float> gates_h(static_cast<size_t>(run) * a.num_heads * 3, 0.33f);
  CHECK(cudaMemcpy(pos, pos_h.data(), context * 8, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(gates, gates_h.data(), gates_h.size() * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemset(rows, 0, run * 4));  // every query reads the one sequence's tables
  a.q = q, a.gates = gates, a.out = out, a.table_rows = rows, a.workspace = ws, a.staged = false, a.selected = nullptr;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start, stream);
  for (int64_t p0 = 0; p0 < context; p0 += run) {
    a.batch = static_cast<int>(std::min<int64_t>(run, context - p0));
    a.positions = pos + p0;
    a.max_context = p0 + a.batch;
    CHECK(nsa::cuda::LaunchNsaDecode(a, stream));
  }
  cudaEventRecord(stop, stream);
  CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  for (void* ptr : {static_cast<void*>(q), static_cast<void*>(gates), static_cast<void*>(out), static_cast<void*>(pos),
                    static_cast<void*>(rows), ws}) {
    cudaFree(ptr);
  }
  return {ms * 1e-3, run};
}

// The same prompt through the prefill kernels (kernels/cuda/nsa_prefill.h) as the runner runs a
// chunk: compressed, selection, selected, window and the gated sum, in chunks of 2048 positions.
// split_ms: each kernel's milliseconds (compressed, selection, selected, window, combine), then
// the selected branch with every thread block in the split walk and in the union walk
// (NsaPrefillArgs::selected_form; run after the default form on the same selection, not in the
// total), and the union walk unpacked (pack_positions = false: differs from the union walk for
// G <= 8 only), then the compressed and window branches with one row tile a warp
// (NsaPrefillArgs::branch_row_tiles = 1, against the default 2; not in the total either), then
// with two row tiles and one K/V buffer (branch_stages = 1; the default picks 2 where they fit).
constexpr int kPrefillParts = 12;
double PrefillKernelsTime(const nsa::cuda::NsaDecodeArgs& d, int64_t context, cudaStream_t stream,
                          std::array<double, kPrefillParts>* split_ms, bool correlated) {
  constexpr int kChunk = 2048;
  nsa::cuda::NsaPrefillArgs a;
  a.num_heads = d.num_heads, a.num_kv_heads = d.num_kv_heads, a.head_dim = d.head_dim, a.v_head_dim = d.v_head_dim;
  a.layer = 0, a.scale = d.scale, a.nsa = d.nsa, a.layout = d.layout, a.pages = d.pages;
  a.raw_table = d.raw_tables, a.win_table = d.win_tables;
  const size_t outs = size_t{kChunk} * d.num_heads * d.v_head_dim, lses = size_t{kChunk} * d.num_heads;
  __nv_bfloat16* q;
  float *w, *gates, *out;
  int32_t* sel;
  CHECK(cudaMalloc(&q, size_t{kChunk} * d.num_heads * d.head_dim * 2));
  CHECK(cudaMalloc(&w, (3 * outs + 3 * lses) * 4));
  CHECK(cudaMalloc(&gates, lses * 3 * 4));
  CHECK(cudaMalloc(&out, outs * 4));
  CHECK(cudaMalloc(&sel, size_t{kChunk} * d.num_kv_heads * d.nsa.num_selected * 4));
  const size_t width = static_cast<size_t>(d.num_heads) * d.head_dim;
  if (correlated) {
    CorrelatedKernel<<<256, 256>>>(q, size_t{kChunk} * width, width, 13);
  } else {
    FillKernel<<<256, 256>>>(q, size_t{kChunk} * width, 13);
  }
  std::vector<float> gates_h(lses * 3, 0.33f);
  CHECK(cudaMemcpy(gates, gates_h.data(), gates_h.size() * 4, cudaMemcpyHostToDevice));
  a.q = q, a.cmp_out = w, a.slc_out = w + outs, a.win_out = w + 2 * outs;
  a.cmp_lse = w + 3 * outs, a.slc_lse = a.cmp_lse + lses, a.win_lse = a.slc_lse + lses;
  a.selection = sel, a.selection_out = sel;
  // Events around each kernel of each chunk: the whole time, and each kernel's share.
  const int chunks = static_cast<int>((context + kChunk - 1) / kChunk);
  std::vector<cudaEvent_t> ev(static_cast<size_t>(chunks) * kPrefillParts + 1);
  for (cudaEvent_t& e : ev) cudaEventCreate(&e);
  auto run = [&] {
    int k = 0;
    cudaEventRecord(ev[k++], stream);
    for (int64_t p0 = 0; p0 < context; p0 += kChunk) {
      a.first_position = p0, a.num_queries = static_cast<int>(std::min<int64_t>(kChunk, context - p0));
      CHECK(nsa::cuda::LaunchNsaPrefillCompressed(a, stream));
      cudaEventRecord(ev[k++], stream);
      CHECK(nsa::cuda::LaunchNsaPrefillSelect(a, stream));
      cudaEventRecord(ev[k++], stream);
      CHECK(nsa::cuda::LaunchNsaPrefillSelected(a, stream));
      cudaEventRecord(ev[k++], stream);
      CHECK(nsa::cuda::LaunchNsaPrefillWindow(a, stream));
      cudaEventRecord(ev[k++], stream);
      CHECK(nsa::cuda::LaunchNsaPrefillCombine(a, gates, out, stream));
      cudaEventRecord(ev[k++], stream);
      using Form = nsa::cuda::NsaPrefillArgs::SelectedForm;
      for (auto [form, pack] : {std::pair{Form::kSplit, true}, std::pair{Form::kUnion, true}, std::pair{Form::kUnion, false}}) {
        a.selected_form = form, a.pack_positions = pack;
        if (pack || d.num_heads / d.num_kv_heads <= 8) CHECK(nsa::cuda::LaunchNsaPrefillSelected(a, stream));
        cudaEventRecord(ev[k++], stream);
      }
      a.selected_form = nsa::cuda::NsaPrefillArgs{}.selected_form, a.pack_positions = true;
      for (auto [row_tiles, stages] : {std::pair{1, 0}, std::pair{2, 1}}) {
        a.branch_row_tiles = row_tiles, a.branch_stages = stages;
        CHECK(nsa::cuda::LaunchNsaPrefillCompressed(a, stream));
        cudaEventRecord(ev[k++], stream);
        CHECK(nsa::cuda::LaunchNsaPrefillWindow(a, stream));
        cudaEventRecord(ev[k++], stream);
      }
      a.branch_row_tiles = nsa::cuda::NsaPrefillArgs{}.branch_row_tiles, a.branch_stages = nsa::cuda::NsaPrefillArgs{}.branch_stages;
    }
  };
  run();  // warm-up (shared-memory opt-ins)
  CHECK(cudaStreamSynchronize(stream));
  run();
  CHECK(cudaEventSynchronize(ev.back()));
  double ms = 0;
  for (int c = 0; c < chunks; ++c) {
    for (int kernel = 0; kernel < kPrefillParts; ++kernel) {
      float part = 0;
      cudaEventElapsedTime(&part, ev[c * kPrefillParts + kernel], ev[c * kPrefillParts + kernel + 1]);
      (*split_ms)[kernel] += part;
      if (kernel < 5) ms += part;
    }
  }
  for (cudaEvent_t& e : ev) cudaEventDestroy(e);
  for (void* ptr : {static_cast<void*>(q), static_cast<void*>(w), static_cast<void*>(gates), static_cast<void*>(out),
                    static_cast<void*>(sel)}) {
    cudaFree(ptr);
  }
  return ms * 1e-3;
}

struct Shape {
  const char* name;
  int heads, kv_heads, hd, vhd, l, d, lp, n, w;
  bool per_branch;
};

// The unpacked union walk's time, "-" where it is the union walk (G > 8).
std::string Ms(double ms, const Shape& sh) {
  if (sh.heads / sh.kv_heads > 8) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", ms);
  return buf;
}

}  // namespace

using namespace nsa;

int main(int argc, char** argv) {
  bool quick = false, prefill = false;
  for (int i = 1; i < argc; ++i) {
    quick |= std::strcmp(argv[i], "--quick") == 0;
    prefill |= std::strcmp(argv[i], "--prefill") == 0;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const double ceiling = std::getenv("NSA_BENCH_ONLY") ? 3.0e12 : nsa::bench::CopyCeiling();
  std::printf("device: %s, %d SMs; copy ceiling %.2f TB/s\n\n", prop.name, prop.multiProcessorCount, ceiling / 1e12);
  if (prefill) {
    std::printf("### Prefill attention of one prompt: the prefill kernels (chunks of 2048) and, for comparison, every position a query of the decode kernel\n\n");
    std::printf("| shape | prompt | prefill kernels (ms) | TFLOP/s | compressed / selection / selected / window / sum (ms) | "
                "selected, split / union walk only / union unpacked (G <= 8) (ms) | compressed / window, 1 row tile a warp (ms) | "
                "compressed / window, 1 K/V buffer (ms) | "
                "correlated queries: all / selected / split / union walk only / union unpacked (ms) | "
                "decode kernel per position (ms) | TFLOP/s | queries a launch |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  } else {
    std::printf("| shape | batch | context | time (us) | NSA bytes (MB) | GB/s | %% of copy ceiling | four launches (us) |\n|---|---|---|---|---|---|---|---|\n");
  }
  // g4: the 7b shape with 16 KV heads (G = 4, as many models outside NSA's papers), prefill only:
  // the selected branch packs 4 positions a warp there.
  const Shape shapes[] = {{"7b", 64, 4, 128, 128, 64, 64, 64, 16, 512, false},
                          {"paper", 64, 4, 192, 128, 32, 16, 64, 16, 512, true},
                          {"g4", 64, 16, 128, 128, 64, 64, 64, 16, 512, false}};
  for (const Shape& sh : shapes) {
    if (!prefill && sh.heads / sh.kv_heads < 16) continue;
    for (int batch : {1, 8, 32}) {
      for (int64_t context : {1024, 8192, 16384, 32768, 65536, 131072}) {
        // 1k (batch 1, decode only): a context of at most n blocks, every block selected.
        if (context == 1024 && (batch != 1 || prefill)) continue;
        if ((quick && context != 65536 && context != 1024) || (prefill && batch != 1)) continue;
        // NSA_BENCH_ONLY=shape:batch:context runs one configuration (for ncu).
        if (const char* only = std::getenv("NSA_BENCH_ONLY")) {
          char want[64];
          std::snprintf(want, sizeof(want), "%s:%d:%lld", sh.name, batch, static_cast<long long>(context));
          if (std::strcmp(only, want) != 0) continue;
        }
        NsaParams p;
        p.compress_block = sh.l, p.compress_stride = sh.d, p.select_block = sh.lp, p.num_selected = sh.n, p.window = sh.w;
        p.score_map = sh.l == sh.lp ? ScoreMap::kIdentity : ScoreMap::kGeometric;
        p.kv_sharing = sh.per_branch ? KvSharing::kPerBranch : KvSharing::kShared;
        const KvLayout L = KvLayout::Make(1, sh.kv_heads, sh.hd, sh.vhd, p);
        const int pages_per_seq = static_cast<int>(context / sh.lp);
        const int kinds = sh.per_branch ? 2 : 1;
        const size_t num_pages = static_cast<size_t>(batch) * pages_per_seq * kinds;
        const size_t pool_elems = num_pages * L.page_elems;
        __nv_bfloat16 *pool, *q;
        float *gates, *out;
        int32_t *raw, *win;
        int64_t* pos;
        void* ws;
        if (cudaMalloc(&pool, pool_elems * 2) != cudaSuccess) {
          std::printf("| %s | %d | %lld | (does not fit) | | | | |\n", sh.name, batch, static_cast<long long>(context));
          cudaGetLastError();
          continue;
        }
        FillKernel<<<1024, 256>>>(pool, pool_elems, 7);
        std::vector<int32_t> raw_h(static_cast<size_t>(batch) * pages_per_seq), win_h(raw_h.size());
        for (size_t i = 0; i < raw_h.size(); ++i) raw_h[i] = static_cast<int32_t>(i * kinds), win_h[i] = static_cast<int32_t>(i * kinds + kinds - 1);
        std::vector<int64_t> pos_h(batch, context - 1);
        std::vector<float> gates_h(static_cast<size_t>(batch) * sh.heads * 3, 0.33f);
        CHECK(cudaMalloc(&q, static_cast<size_t>(batch) * sh.heads * sh.hd * 2));
        CHECK(cudaMalloc(&gates, gates_h.size() * 4));
        CHECK(cudaMalloc(&out, static_cast<size_t>(batch) * sh.heads * sh.vhd * 4));
        CHECK(cudaMalloc(&raw, raw_h.size() * 4));
        CHECK(cudaMalloc(&win, win_h.size() * 4));
        CHECK(cudaMalloc(&pos, batch * 8));
        FillKernel<<<64, 256>>>(q, static_cast<size_t>(batch) * sh.heads * sh.hd, 9);
        CHECK(cudaMemcpy(gates, gates_h.data(), gates_h.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(raw, raw_h.data(), raw_h.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(win, win_h.data(), win_h.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(pos, pos_h.data(), batch * 8, cudaMemcpyHostToDevice));
        nsa::cuda::NsaDecodeArgs a;
        a.batch = batch, a.num_heads = sh.heads, a.num_kv_heads = sh.kv_heads, a.head_dim = sh.hd, a.v_head_dim = sh.vhd;
        a.scale = 0.088f, a.nsa = p, a.layout = L, a.q = q, a.gates = gates, a.pages = pool, a.raw_tables = raw;
        a.win_tables = sh.per_branch ? win : nullptr, a.max_pages = pages_per_seq, a.positions = pos;
        a.max_context = context, a.out = out;
        CHECK(cudaMalloc(&ws, nsa::cuda::NsaDecodeWorkspaceBytes(a)));
        a.workspace = ws;
        // Captured once in a CUDA graph and replayed, as the engine runs decode steps: the time
        // is the GPU's, not the host's launch latency. The fused kernel, then the same tasks as
        // four launches (a pass each) for comparison.
        cudaStream_t stream;
        CHECK(cudaStreamCreate(&stream));
        auto release = [&] {
          cudaStreamDestroy(stream);
          for (void* ptr : {static_cast<void*>(pool), static_cast<void*>(q), static_cast<void*>(gates), static_cast<void*>(out),
                            static_cast<void*>(raw), static_cast<void*>(win), static_cast<void*>(pos), ws}) {
            cudaFree(ptr);
          }
        };
        if (prefill) {
          // The whole prompt's attention, and its FLOPs: per position t (context t + 1) and head,
          // 2 (hd + vhd) a key it attends (q.k and p.v).
          std::array<double, kPrefillParts> split{}, split_corr{};
          const double kernels = PrefillKernelsTime(a, context, stream, &split, false);
          const double kernels_corr = PrefillKernelsTime(a, context, stream, &split_corr, true);
          const auto [seconds, run] = PrefillTime(a, context, stream);
          double flops = 0;
          for (int64_t t1 = 1; t1 <= context; ++t1) {
            flops += static_cast<double>(p.NumCompressed(t1) + std::min<int64_t>(int64_t{sh.n} * sh.lp, t1) + std::min<int64_t>(sh.w, t1));
          }
          flops *= 2.0 * sh.heads * (sh.hd + sh.vhd);
          std::printf("| %s | %lldk | %.1f | %.1f | %.1f / %.1f / %.1f / %.1f / %.1f | %.1f / %.1f / %s | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f / %.1f / %.1f / %s | %.1f | %.1f | %d |\n",
                      sh.name, static_cast<long long>(context / 1024), kernels * 1e3, flops / kernels / 1e12, split[0],
                      split[1], split[2], split[3], split[4], split[5], split[6], Ms(split[7], sh).c_str(), split[8],
                      split[9], split[10], split[11], kernels_corr * 1e3, split_corr[2], split_corr[5], split_corr[6], Ms(split_corr[7], sh).c_str(),
                      seconds * 1e3, flops / seconds / 1e12, run);
          std::fflush(stdout);
          release();
          continue;
        }
        auto time_graph = [&](bool staged) {
          a.staged = staged;
          CHECK(nsa::cuda::LaunchNsaDecode(a, stream));  // the first call opts in to shared memory
          cudaGraph_t graph;
          cudaGraphExec_t exec;
          CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
          CHECK(nsa::cuda::LaunchNsaDecode(a, stream));
          CHECK(cudaStreamEndCapture(stream, &graph));
          CHECK(cudaGraphInstantiate(&exec, graph, 0));
          const float ms = nsa::bench::MedianEventMs(stream, 10, 50, [&] { CHECK(cudaGraphLaunch(exec, stream)); });
          cudaGraphExecDestroy(exec);
          cudaGraphDestroy(graph);
          return ms * 1e-3;
        };
        const double t = time_graph(false);
        const double t_staged = time_graph(true);
        if (std::getenv("NSA_BENCH_TRACE")) PrintTrace(a, stream);
        // nsa-spec.md section 5: (N_cmp + min(n l', T) + min(w, T)) (hd + vhd) 2 bytes per (sequence, KV head).
        const int64_t entries = p.NumCompressed(context) + std::min<int64_t>(int64_t{sh.n} * sh.lp, context) +
                                std::min<int64_t>(sh.w, context);
        const double bytes = static_cast<double>(batch) * sh.kv_heads * entries * (sh.hd + sh.vhd) * 2 +
                             static_cast<double>(batch) * sh.heads * (sh.hd * 2 + sh.vhd * 4);
        std::printf("| %s | %d | %lldk | %.1f | %.2f | %.0f | %.1f%% | %.1f |\n", sh.name, batch,
                    static_cast<long long>(context / 1024), t * 1e6, bytes / 1e6, bytes / t / 1e9, 100 * bytes / t / ceiling,
                    t_staged * 1e6);
        release();
      }
    }
  }
  return 0;
}
