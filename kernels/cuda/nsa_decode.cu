#include "kernels/cuda/nsa_decode.h"

#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <string_view>

#include <cuda_pipeline.h>

#include "kernels/cuda/select_util.cuh"
#include "kernels/cuda/tile_mma.cuh"

namespace nsa::cuda {
namespace {

using select::Forced;
using select::NumForced;
using select::WarpBest;
using tile::kPad;
using tile::kRowTiles;
using tile::kTileRows;
using tile::LoadContiguousRows;
using tile::LoadGatheredRows;
using tile::Mma;
using tile::Pack;
using tile::LdMatrixX2Trans;
using tile::QkTile;
using tile::ZeroRows;

__device__ __forceinline__ int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// Diagnostic builds only (bench/gpu/stage-diag.sh; -DNSA_DECODE_DIAG=mask): the benches' time
// without one part of a tile's work, to attribute it; the outputs are wrong. 1: the tiles' rows
// located without the page-table reads (logical page = physical page); 2: the tiles waited for
// but not computed; 4: the tiles computed without waiting for their copies. 0 (every real build):
// none, and the same code as without the macro.
#ifndef NSA_DECODE_DIAG
#define NSA_DECODE_DIAG 0
#endif
constexpr bool kDiagNoTable = NSA_DECODE_DIAG & 1, kDiagNoCompute = NSA_DECODE_DIAG & 2,
               kDiagNoWait = NSA_DECODE_DIAG & 4;

constexpr int kThreads = 128;
constexpr int kCmpRows = 64;  // summaries per block in the compressed pass (one tile)
constexpr int kMaxG = 64;
constexpr int kMaxSelected = 64;
constexpr int kMaxBlocks = 16384;  // selection blocks: contexts up to 1M tokens at l' = 64
// Selection: at most 32 score tasks a unit (a lane each when their lists merge), each taking at
// most 32 x kScorePerLane blocks (registers of one warp).
constexpr int kMaxScoreSplits = 32;
constexpr int kScorePerLane = 16;
constexpr int kScoreBlocks = 64;  // blocks a score task aims for when units are few
static_assert(kMaxBlocks <= kMaxScoreSplits * 32 * kScorePerLane, "a unit's blocks must fit its score tasks");

struct Sizes {
  int G, n, window_pages, cmp_chunks;
  // Splits: the blocks a (sequence, KV head) gets for each pass, and the tiles each walks.
  int cmp_splits, cmp_per_split, sel_splits, sel_per_split, win_splits, win_per_split;
  int64_t nmax, nstride;  // summaries of the longest sequence; score row stride (a multiple of 4)
  int units;  // batch x KV heads
  int merge_heads;  // heads a merge task of the fused kernel combines (divides G)
  int score_splits, score_per, score_summaries;  // score tasks a unit, blocks and summaries each
  size_t scores, cmp_part, sel, seg_part, lse, cand, counters;  // float/int offsets into the workspace
  size_t counter_bytes, total_bytes;
};

// Blocks per SM the splits aim for: runs short enough that co-resident blocks overlap one
// another's loads (a run has no double buffering of its own). For the benchmarks' sweeps,
// NSA_DECODE_OVERSUB=k (1-16) overrides it for every branch and NSA_DECODE_OVERSUB_CMP=k for the
// compressed one (which then also skips the one-wave rule in SizesOf).
constexpr int kSmOversubscription = 2;
int EnvOversub(const char* name) {  // k in 1-16, else 0
  const char* v = std::getenv(name);
  const int x = v ? std::atoi(v) : 0;
  return x >= 1 && x <= 16 ? x : 0;
}
int Oversubscription() {
  static const int k = EnvOversub("NSA_DECODE_OVERSUB");
  return k ? k : kSmOversubscription;
}
int CmpOversubscription() {  // 0: unset
  static const int k = EnvOversub("NSA_DECODE_OVERSUB_CMP");
  return k;
}
// A switch from the environment: 0 or 1, else `fallback`.
int EnvSwitch(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v && std::string_view(v) == "0") return 0;
  if (v && std::string_view(v) == "1") return 1;
  return fallback;
}

// Blocks of the fused kernel an SM keeps resident for kSlices 16-head slices of the group (its
// __launch_bounds__): 4 at one slice (128 registers; the selection merged in the selected tasks
// would otherwise take it to 145, 3 blocks), 3 at two (168 registers), else 1.
constexpr int FusedBlocksPerSm(int slices) { return slices == 1 ? 4 : slices == 2 ? 3 : 1; }

// Splits of `tiles` tiles so that batch x KV heads x splits is about `oversub` x SMs.
void Split(int tiles, int units, int sms, int oversub, int* splits, int* per_split) {
  const int want = std::max(1, std::min(tiles, (oversub * sms + units - 1) / units));
  *per_split = (tiles + want - 1) / want;
  *splits = (tiles + *per_split - 1) / *per_split;
}

int NumSms() {
  static const int sms = [] {
    int device = 0, count = 132;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
    return count;
  }();
  return sms;
}

Sizes SizesOf(const NsaDecodeArgs& a) {
  Sizes s;
  s.G = a.num_heads / a.num_kv_heads;
  s.n = a.nsa.num_selected;
  s.window_pages = (a.nsa.window + a.nsa.select_block - 1) / a.nsa.select_block + 1;
  s.nmax = a.nsa.NumCompressed(a.max_context);
  s.nstride = std::max<int64_t>((s.nmax + 3) / 4 * 4, 4);
  s.cmp_chunks = static_cast<int>(std::max<int64_t>(1, (s.nmax + kCmpRows - 1) / kCmpRows));
  const int units = a.batch * a.num_kv_heads, sms = NumSms();
  const int wave = FusedBlocksPerSm((s.G + 15) / 16) * sms;  // resident blocks of the fused kernel
  const int cmp_oversub = CmpOversubscription();
  Split(s.cmp_chunks, units, sms, cmp_oversub ? cmp_oversub : Oversubscription(), &s.cmp_splits, &s.cmp_per_split);
  Split(s.n, units, sms, Oversubscription(), &s.sel_splits, &s.sel_per_split);
  Split(s.window_pages, units, sms, Oversubscription(), &s.win_splits, &s.win_per_split);
  // A compressed run longer than a selected one (overlapping compression: several summaries a
  // block, so many more tiles) is the longest link of the chain compressed -> scores -> selected:
  // it gets as many splits as one wave of resident blocks holds, its runs no shorter than the
  // selected ones.
  if (s.cmp_per_split > s.sel_per_split && !cmp_oversub) {
    const int unit_wave = std::max(1, wave / units);
    const int per = std::max(s.sel_per_split, (s.cmp_chunks + unit_wave - 1) / unit_wave);
    if (per < s.cmp_per_split) {
      s.cmp_per_split = per;
      s.cmp_splits = (s.cmp_chunks + per - 1) / per;
    }
  }
  // The selected tasks run mostly alone, after the selection: as many splits as one wave of
  // resident blocks holds (NSA_DECODE_SEL_WAVE=0: as the other branches; 7b 32 x 64k 96 us against
  // 100, paper 185 against 190, fourteenth session call 3).
  static const int sel_wave = EnvSwitch("NSA_DECODE_SEL_WAVE", 1);
  if (sel_wave && wave / units > s.sel_splits) {
    const int want = std::min(s.n, wave / units);
    s.sel_per_split = (s.n + want - 1) / want;
    s.sel_splits = (s.n + s.sel_per_split - 1) / s.sel_per_split;
  }
  const size_t bk = static_cast<size_t>(a.batch) * a.num_kv_heads;
  const size_t part = static_cast<size_t>(s.G) * (2 + a.v_head_dim);  // one partial per split
  s.scores = 0;
  s.cmp_part = s.scores + bk * s.G * s.nstride;
  s.sel = s.cmp_part + bk * s.cmp_splits * part;
  s.seg_part = s.sel + (bk * s.n + 3) / 4 * 4;  // partials start 16-byte aligned (float2 stores)
  const int64_t blocks = a.max_context / a.nsa.select_block + 1;
  // About kScoreBlocks blocks a task while units are few, fewer and longer tasks as they grow
  // (as Split), never more than 32 x kScorePerLane blocks a task.
  // (A wave of score tasks instead gained nothing at 7b 32 x 64k: fourteenth session call 2.)
  const int64_t want = (2 * sms + units - 1) / units;
  s.score_splits = static_cast<int>(std::max<int64_t>(
      {1, (blocks + 32 * kScorePerLane - 1) / (32 * kScorePerLane),
       std::min<int64_t>({kMaxScoreSplits, (blocks + kScoreBlocks - 1) / kScoreBlocks, want})}));
  s.score_per = static_cast<int>((blocks + s.score_splits - 1) / s.score_splits);
  const int cpc = a.nsa.compress_block / a.nsa.compress_stride, cps = a.nsa.select_block / a.nsa.compress_stride;
  s.score_summaries = s.score_per * cps + cpc;
  s.lse = s.seg_part + bk * (s.sel_splits + s.win_splits) * part;
  s.cand = s.lse + (bk * s.G + 1) / 2 * 2;  // candidates (float2) 8-byte aligned
  s.counters = s.cand + bk * s.score_splits * s.n * 2;
  s.units = static_cast<int>(bk);
  // A merge task per head while they fit one wave of resident blocks; beyond, they would queue
  // behind one another at the end of the launch: the fewest heads a task (a power of two dividing
  // G) that fit one wave. NsaDecodeArgs::merge_heads (or NSA_DECODE_MERGE_HEADS) overrides it.
  static const int merge_env = [] {
    const char* v = std::getenv("NSA_DECODE_MERGE_HEADS");
    return v ? std::atoi(v) : 0;
  }();
  s.merge_heads = a.merge_heads > 0 ? a.merge_heads : merge_env > 0 && s.G % merge_env == 0 ? merge_env : 0;
  if (s.merge_heads == 0) {
    s.merge_heads = 1;
    while (s.G % (2 * s.merge_heads) == 0 && static_cast<int64_t>(bk) * s.G / s.merge_heads > wave) s.merge_heads *= 2;
  }
  s.counter_bytes = (1 + 3 * bk) * sizeof(int);
  s.total_bytes = s.counters * sizeof(float) + s.counter_bytes;
  return s;
}

// ---- tensor-core tile attention ------------------------------------------------------------
//
// A block walks a run of tiles (up to 64 rows each: summaries, or one page of tokens) with K and
// V in shared memory and the group's queries padded to Gp = 16 * ceil(G / 16) heads. Every warp
// computes the whole S = Q K^T of a tile (16 heads x 64 rows a slice, mma.sync m16n8k16, bf16 in,
// fp32 accumulate) and the same online softmax, so all four agree on the running max and sum;
// each then multiplies P by its own quarter of V's columns (its 8-column tiles w, w + 4, ...),
// keeping that part of the output in registers across the run (FlashAttention-2: S fragments
// reused as P). No warp waits for another within a tile, and the block's partial
// [m, l, o[v_dim]] per head is written straight from the registers (flash-decoding's split-K).
// The fragment helpers and row copies are in kernels/cuda/tile_mma.cuh.
constexpr int kMaxColTiles = 4;  // 8-column tiles of the output a warp owns: v_dim <= 128

// q of the group into shared memory as bf16 [Gp][hd + kPad], heads beyond G zeroed, copied
// asynchronously 16 bytes at a time with the first K and V tiles.
__device__ void LoadQuery(const NsaDecodeArgs& a, int b, int g, int G, __nv_bfloat16* qs) {
  const __nv_bfloat16* q = a.q + (static_cast<int64_t>(b) * a.num_heads + g * G) * a.head_dim;
  const int gp = (G + 15) / 16 * 16, hd = a.head_dim;
  LoadContiguousRows(qs, G, hd, q);
  for (int i = G * (hd + kPad) + threadIdx.x; i < gp * (hd + kPad); i += blockDim.x) qs[i] = __float2bfloat16(0.f);
}

// Shared memory of a run: K and V (kTileRows rows) and q (Gp heads), rows padded; with the keys
// split across warps (AttendTilesByKeys) the K/V space also holds the warps' merge at the end.
inline size_t TileSmemBytes(int G, int hd, int vhd, bool by_keys = false) {
  const int gp = (G + 15) / 16 * 16;
  size_t kv = static_cast<size_t>(kTileRows) * (hd + kPad + vhd + kPad) * 2;
  if (by_keys) kv = std::max(kv, static_cast<size_t>(kThreads / 32) * 16 * (vhd + 1) * sizeof(float));
  return kv + static_cast<size_t>(gp) * (hd + kPad) * 2;
}

// The tile the caller's load issued, in shared memory: rows past `rows` zeroed (their P is 0,
// and 0 times garbage could be NaN), the copies waited for, the block synchronised.
__device__ __forceinline__ void AwaitTile(int rows, __nv_bfloat16* ks, __nv_bfloat16* vs, int hd, int vhd) {
  if (rows > 0 && rows < kTileRows) {
    ZeroRows(ks, rows, hd);
    ZeroRows(vs, rows, vhd);
  }
  __pipeline_commit();  // the tile's copies (and, the first time, the query's)
  if constexpr (!kDiagNoWait) __pipeline_wait_prior(0);
  __syncthreads();
}

// Walks `num_tiles` tiles. load(tile, ks, vs) issues the tile's asynchronous copies (all
// threads) and returns its row count (0: nothing to do); score(tile, head, row, value) receives
// every raw scaled score when the caller wants them (each exactly once). Writes the block's
// partial per head to part[G][2 + vhd]; a block that saw no row writes m = -FLT_MAX, l = 0, o = 0.
// kSlices >= ceil(G / 16): the registers the running state takes (kernels are built per count).
template <int kSlices, typename Load, typename Score>
__device__ void AttendTiles(__nv_bfloat16* qs, __nv_bfloat16* ks, __nv_bfloat16* vs, int G, int num_tiles, int hd,
                            int vhd, float scale, float* part, Load load, Score score) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int r8 = lane % 8, m8 = (lane / 8) % 4;  // ldmatrix: the row and matrix this lane addresses
  const int slices = (G + 15) / 16, col_tiles = vhd / 8;
  const int qstride = hd + kPad, vstride = vhd + kPad;
  float m_run[kSlices][2], l_run[kSlices][2], o[kSlices][kMaxColTiles][4];
#pragma unroll
  for (int mt = 0; mt < kSlices; ++mt) {
    m_run[mt][0] = m_run[mt][1] = -FLT_MAX, l_run[mt][0] = l_run[mt][1] = 0.f;
#pragma unroll
    for (int nn = 0; nn < kMaxColTiles; ++nn) o[mt][nn][0] = o[mt][nn][1] = o[mt][nn][2] = o[mt][nn][3] = 0.f;
  }

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int rows = load(tile, ks, vs);
    AwaitTile(rows, ks, vs, hd, vhd);
    if (rows > 0) {
      // Unrolled over the largest slice count so the running state stays in registers.
#pragma unroll
      for (int mt = 0; mt < kSlices; ++mt) {
        if (mt >= slices) break;
        const __nv_bfloat16* q = qs + static_cast<size_t>(mt) * 16 * qstride;
        float s[kRowTiles][4];
        QkTile(q, ks, hd, s);
        // s[j][c]: head mt * 16 + g (+ 8 for c >= 2), row 8 j + 2 t + (c & 1).
        float mx[2] = {m_run[mt][0], m_run[mt][1]};
#pragma unroll
        for (int j = 0; j < kRowTiles; ++j) {
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int row = 8 * j + 2 * t + (c & 1);
            const int head = mt * 16 + g + (c >= 2 ? 8 : 0);
            const float v = s[j][c] * scale;
            if ((j & 3) == warp && row < rows && head < G) score(tile, head, row, v);  // each score once
            s[j][c] = v;
            if (row < rows) mx[c >= 2] = fmaxf(mx[c >= 2], v);
          }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
        }
        const float corr[2] = {__expf(m_run[mt][0] - mx[0]), __expf(m_run[mt][1] - mx[1])};
        float sum[2] = {0.f, 0.f};
#pragma unroll
        for (int j = 0; j < kRowTiles; ++j) {
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int row = 8 * j + 2 * t + (c & 1);
            const float p = row < rows ? __expf(s[j][c] - mx[c >= 2]) : 0.f;
            s[j][c] = p;
            sum[c >= 2] += p;
          }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          sum[i] += __shfl_xor_sync(0xffffffff, sum[i], 1);
          sum[i] += __shfl_xor_sync(0xffffffff, sum[i], 2);
          l_run[mt][i] = l_run[mt][i] * corr[i] + sum[i];
          m_run[mt][i] = mx[i];
        }
        // O (this warp's column tiles) = O corr + P V, 16 rows of V (two row tiles of S) a step.
#pragma unroll
        for (int nn = 0; nn < kMaxColTiles; ++nn) {
          o[mt][nn][0] *= corr[0], o[mt][nn][1] *= corr[0], o[mt][nn][2] *= corr[1], o[mt][nn][3] *= corr[1];
        }
#pragma unroll
        for (int ks16 = 0; ks16 < kRowTiles / 2; ++ks16) {
          const uint32_t p0 = Pack(s[2 * ks16][0], s[2 * ks16][1]), p1 = Pack(s[2 * ks16][2], s[2 * ks16][3]);
          const uint32_t p2 = Pack(s[2 * ks16 + 1][0], s[2 * ks16 + 1][1]), p3 = Pack(s[2 * ks16 + 1][2], s[2 * ks16 + 1][3]);
#pragma unroll
          for (int nn = 0; nn < kMaxColTiles; ++nn) {
            const int ct = warp + 4 * nn;
            if (ct >= col_tiles) break;
            // V's b0, b1, transposed: (rows 16 ks16 + 0-7 | + 8-15) x columns 8 ct.
            uint32_t b[2];
            LdMatrixX2Trans(b, vs + (16 * ks16 + 8 * (m8 & 1) + r8) * vstride + 8 * ct);
            Mma(o[mt][nn], p0, p1, p2, p3, b[0], b[1]);
          }
        }
      }
    }
    __syncthreads();  // the next tile's copies overwrite ks and vs
  }
  // The partial, from the registers: o[mt][nn][c] is head mt * 16 + g (+ 8 for c >= 2), column
  // 8 (warp + 4 nn) + 2 t + (c & 1). Every warp holds the same m and l; warp 0 writes them.
  const int stride = 2 + vhd;
#pragma unroll
  for (int mt = 0; mt < kSlices; ++mt) {
    if (mt >= slices) break;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h = mt * 16 + g + 8 * half;
      if (h >= G) continue;
      float* ph = part + h * stride;
      if (warp == 0 && t == 0) ph[0] = l_run[mt][half] > 0.f ? m_run[mt][half] : -FLT_MAX, ph[1] = l_run[mt][half];
#pragma unroll
      for (int nn = 0; nn < kMaxColTiles; ++nn) {
        const int ct = warp + 4 * nn;
        if (ct >= col_tiles) break;
        *reinterpret_cast<float2*>(ph + 2 + 8 * ct + 2 * t) = make_float2(o[mt][nn][2 * half], o[mt][nn][2 * half + 1]);
      }
    }
  }
}

// AttendTiles for G <= 16 (one slice of heads) with the tile's keys split across the warps
// instead of V's columns: warp w computes S for keys 16 w .. 16 w + 15 only (a quarter of the
// Q K^T work of AttendTiles, where every warp computes the whole S), keeps its own online softmax
// over them, and multiplies its P by all of V's columns (one k-step of the P V product). The four
// partial softmaxes [m, l, o] are merged once per run, through shared memory (the K/V tiles'
// space, free after the last tile), in warp order: the same floats on every run. The same
// contract as AttendTiles (load, score, part); smem: the run's (TileSmemBytes covers the merge).
constexpr int kMaxColTilesByKeys = 16;  // all of V's 8-column tiles: v_dim <= 128
template <typename Load, typename Score>
__device__ void AttendTilesByKeys(__nv_bfloat16* qs, __nv_bfloat16* ks, __nv_bfloat16* vs, int G, int num_tiles, int hd,
                                  int vhd, float scale, float* part, Load load, Score score) {
  constexpr int kWarps = kThreads / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int r8 = lane % 8, m8 = (lane / 8) % 4;  // ldmatrix: the row and matrix this lane addresses
  const int col_tiles = vhd / 8, qstride = hd + kPad, vstride = vhd + kPad;
  const int key0 = 16 * warp;  // this warp's first key of each tile
  float m_run[2] = {-FLT_MAX, -FLT_MAX}, l_run[2] = {0.f, 0.f}, o[kMaxColTilesByKeys][4];
#pragma unroll
  for (int nn = 0; nn < kMaxColTilesByKeys; ++nn) o[nn][0] = o[nn][1] = o[nn][2] = o[nn][3] = 0.f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int rows = load(tile, ks, vs);
    AwaitTile(rows, ks, vs, hd, vhd);
    if (!kDiagNoCompute && key0 < rows) {  // uniform in the warp: a short tile leaves the last warps idle
      float s[2][4];
      tile::QkTile<2>(qs, ks + key0 * qstride, hd, s);
      // s[j][c]: head g (+ 8 for c >= 2), key key0 + 8 j + 2 t + (c & 1).
      float mx[2] = {m_run[0], m_run[1]};
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int row = key0 + 8 * j + 2 * t + (c & 1), head = g + (c >= 2 ? 8 : 0);
          const float v = s[j][c] * scale;
          if (row < rows && head < G) score(tile, head, row, v);  // each score once: one warp a key
          s[j][c] = v;
          if (row < rows) mx[c >= 2] = fmaxf(mx[c >= 2], v);
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
      }
      const float corr[2] = {__expf(m_run[0] - mx[0]), __expf(m_run[1] - mx[1])};
      float sum[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int row = key0 + 8 * j + 2 * t + (c & 1);
          const float p = row < rows ? __expf(s[j][c] - mx[c >= 2]) : 0.f;
          s[j][c] = p;
          sum[c >= 2] += p;
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        sum[i] += __shfl_xor_sync(0xffffffff, sum[i], 1);
        sum[i] += __shfl_xor_sync(0xffffffff, sum[i], 2);
        l_run[i] = l_run[i] * corr[i] + sum[i];
        m_run[i] = mx[i];
      }
      const uint32_t p0 = Pack(s[0][0], s[0][1]), p1 = Pack(s[0][2], s[0][3]);
      const uint32_t p2 = Pack(s[1][0], s[1][1]), p3 = Pack(s[1][2], s[1][3]);
      // O = O corr + P V over all columns: V's keys key0 .. key0 + 15, two column tiles a load.
      // O is rescaled only when some row's maximum moved (corr = 1 elsewhere: the same bits).
      if (__any_sync(0xffffffff, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
        for (int nn = 0; nn < kMaxColTilesByKeys; ++nn) {
          if (nn >= col_tiles) break;
          o[nn][0] *= corr[0], o[nn][1] *= corr[0], o[nn][2] *= corr[1], o[nn][3] *= corr[1];
        }
      }
#pragma unroll
      for (int nn = 0; nn < kMaxColTilesByKeys; nn += 2) {
        if (nn >= col_tiles) break;
        uint32_t b[4];
        tile::LdMatrixX4<true>(b, vs + (key0 + 8 * (m8 & 1) + r8) * vstride + 8 * (nn + (m8 >> 1)));
        Mma(o[nn], p0, p1, p2, p3, b[0], b[1]);
        Mma(o[nn + 1], p0, p1, p2, p3, b[2], b[3]);
      }
    }
    __syncthreads();  // the next tile's copies overwrite ks and vs
  }

  // Merge the warps' partials: M = max_w m_w, factors exp(m_w - M); l and o summed in warp order.
  // The merge's space starts at the K/V tiles and may run into q's (TileSmemBytes sizes it): no
  // copy may still be landing there (none is after a tile's wait; this covers a run of none).
  __pipeline_wait_prior(0);
  __syncthreads();
  __shared__ float m_sh[kWarps][16];
  float* o_sh = reinterpret_cast<float*>(ks);  // [kWarps][16][vhd], over the K/V tiles and q
  if (t == 0) m_sh[warp][g] = m_run[0], m_sh[warp][g + 8] = m_run[1];
  __syncthreads();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int h = g + 8 * half;
    float M = m_sh[0][h];
    for (int w = 1; w < kWarps; ++w) M = fmaxf(M, m_sh[w][h]);
    const float f = __expf(m_run[half] - M);
    float* oh = o_sh + (warp * 16 + h) * vhd;
#pragma unroll
    for (int nn = 0; nn < kMaxColTilesByKeys; ++nn) {
      if (nn >= col_tiles) break;
      *reinterpret_cast<float2*>(oh + 8 * nn + 2 * t) = make_float2(o[nn][2 * half] * f, o[nn][2 * half + 1] * f);
    }
    if (t == 0) o_sh[(kWarps * 16) * vhd + warp * 16 + h] = l_run[half] * f;  // l_w f_w after the o's
  }
  __syncthreads();
  const int stride = 2 + vhd;
  // Thread x sums column x % vhd of heads x / vhd + k dh (one division a run, none a value).
  const int dh = blockDim.x / vhd, h0 = threadIdx.x / vhd, col = threadIdx.x - h0 * vhd;
  for (int h = h0; dh > h0 && h < G; h += dh) {
    float acc = 0.f;
    for (int w = 0; w < kWarps; ++w) acc += o_sh[(w * 16 + h) * vhd + col];
    part[h * stride + 2 + col] = acc;
  }
  if (threadIdx.x < G) {
    const int h = threadIdx.x;
    float M = m_sh[0][h], L = 0.f;
    for (int w = 1; w < kWarps; ++w) M = fmaxf(M, m_sh[w][h]);
    for (int w = 0; w < kWarps; ++w) L += o_sh[(kWarps * 16) * vhd + w * 16 + h];
    part[h * stride] = L > 0.f ? M : -FLT_MAX, part[h * stride + 1] = L;
  }
}

__device__ void EmptyPart(float* part, int G, int vhd) {
  for (int i = threadIdx.x; i < G * (2 + vhd); i += blockDim.x) {
    const int k = i % (2 + vhd);
    part[i] = k == 0 ? -FLT_MAX : 0.f;
  }
}

// Shared-memory layout of a run's block.
struct RunSmem {
  __nv_bfloat16 *ks, *vs, *qs;
};
__device__ RunSmem CarveRun(unsigned char* smem, int G, int hd, int vhd) {
  RunSmem r;
  r.ks = reinterpret_cast<__nv_bfloat16*>(smem);
  r.vs = r.ks + kTileRows * (hd + kPad);
  r.qs = r.vs + kTileRows * (vhd + kPad);
  return r;
}

// ---- tasks -------------------------------------------------------------------------------------
// Sequence b's context has at most n selection blocks (c + 1 <= n, c = t / l'): every block is
// selected, so the selection is 0 .. c without scores. Every place that treats such units apart
// (EveryBlockSelection, ScoreTask, SegmentTask, CompressedTask's raw scores, the staged score pass
// and the fused kernel's waits) asks this one test.
__device__ __forceinline__ bool EveryBlock(const NsaDecodeArgs& a, const Sizes& z, int b) {
  return a.positions[b] / a.nsa.select_block + 1 <= z.n;
}

// A (sequence, KV head) unit owns cmp_splits compressed tasks, win_splits window tasks and
// sel_splits selected-block tasks, each one run of tiles that leaves one partial, and
// score_splits score tasks that choose its blocks (below); a merge task per head then combines
// the partials and writes the outputs.

// Unit counters in the workspace (ints after the floats): [0] the next task of the fused kernel,
// then per unit: compressed tasks done, score tasks done, tasks done.
struct Counters {
  int* next_task;
  int *cmp_done, *score_done, *done;
};
__device__ Counters CountersOf(const Sizes& z, float* ws) {
  int* c = reinterpret_cast<int*>(ws + z.counters);
  const int U = z.units;
  return {c, c + 1, c + 1 + U, c + 1 + 2 * U};
}

__device__ __forceinline__ int64_t GlobalTimer() {
  int64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// Data another block wrote in this launch is read through L2 (ld.global.cg): the reader's L1 may
// hold an older copy of the line.
__device__ __forceinline__ float LoadCg(const float* p) { return __ldcg(p); }

// Thread 0 publishes the block's global writes, then counts one more event of `count`; every
// thread learns whether it was the last of `total`.
__device__ bool ArriveLast(int* count, int total) {
  __shared__ int last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(count, 1) == total - 1;
    if (last) __threadfence();  // order the reads of the others' data after their counts
  }
  __syncthreads();
  return last;
}

// Compressed task: split `split` of unit (b, g) walks chunks [split * per, (split + 1) * per) of
// 64 summaries; summary i is row i + shift of the raw pages' summary tables (E rows a page). It
// also leaves every raw scaled score for the selection.
template <int kSlices, bool kByKeys>
__device__ void CompressedTask(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, int split,
                               unsigned char* smem) {
  const int G = z.G, hd = a.head_dim, vhd = a.v_head_dim;
  const int64_t t = a.positions[b];
  const int64_t N = a.nsa.NumCompressed(t + 1);
  const int chunks = static_cast<int>((N + kCmpRows - 1) / kCmpRows);
  const int first = split * z.cmp_per_split, last = min(chunks, first + z.cmp_per_split);
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  float* part = ws + z.cmp_part + (bk * z.cmp_splits + split) * G * (2 + vhd);
  if (first >= last) return EmptyPart(part, G, vhd);

  const RunSmem sm = CarveRun(smem, G, hd, vhd);
  LoadQuery(a, b, g, G, sm.qs);
  const int64_t table_row = a.table_rows ? a.table_rows[b] : b;
  const int32_t* table = a.raw_tables + table_row * a.max_pages;
  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(KvPlane::kCmp, a.layer, g, false), v_off = L.Offset(KvPlane::kCmp, a.layer, g, true);
  __shared__ int64_t row_k[kTileRows], row_v[kTileRows];  // each summary's K and V, offsets into the pages
  float* scores = ws + z.scores + bk * G * z.nstride;
  // A context of at most n blocks selects them all without scores (EveryBlock): none written.
  const bool want_scores = !EveryBlock(a, z, b);
  auto load = [&](int tile, __nv_bfloat16* ks, __nv_bfloat16* vs) {
    const int64_t i0 = static_cast<int64_t>(first + tile) * kCmpRows;
    const int rows = static_cast<int>(Min(kCmpRows, N - i0));
    // Each summary's K and V offsets, once per row (not once per 16-byte copy).
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      const int vr = static_cast<int>(i0) + r + L.summary_row_shift, slot = vr % L.summaries_per_page;
      const int logical = vr / L.summaries_per_page;
      const int64_t page = static_cast<int64_t>(kDiagNoTable ? logical : table[logical]) * L.page_elems;
      row_k[r] = page + k_off + slot * hd, row_v[r] = page + v_off + slot * vhd;
    }
    __syncthreads();
    LoadGatheredRows(ks, rows, hd, a.pages, row_k);
    LoadGatheredRows(vs, rows, vhd, a.pages, row_v);
    return rows;
  };
  auto score = [&](int tile, int head, int row, float v) {
    if (want_scores) scores[head * z.nstride + static_cast<int64_t>(first + tile) * kCmpRows + row] = v;
  };
  if constexpr (kByKeys) {
    AttendTilesByKeys(sm.qs, sm.ks, sm.vs, G, last - first, hd, vhd, a.scale, part, load, score);
  } else {
    AttendTiles<kSlices>(sm.qs, sm.ks, sm.vs, G, last - first, hd, vhd, a.scale, part, load, score);
  }
}

// ---- selection, spread over blocks --------------------------------------------------------------
// Once a unit's compressed tasks are done, the heads' log-sum-exps are merged from their partials
// (HeadsLse: in each score task of the fused kernel, in a pass of its own when staged). Then
// score_splits score tasks each take a range of at most score_per selection blocks: the group's
// probabilities of the summaries the range needs, the blocks' scores (geometric map, group sum),
// and the range's own top picks, sorted (ScoreTask). Once all are done, the ranges' sorted lists
// are merged a lane a list and the forced blocks added (MergeLists: in each selected task of the
// fused kernel, in the last score task when staged), the unit's n blocks ascending. A context of at
// most n blocks takes them all (EveryBlockSelection).
// Forced blocks and the candidates' order: kernels/cuda/select_util.cuh.

// The n blocks ascending with -1 pads, from `count` chosen blocks in shared memory, into `out`
// (shared or global memory). Rank sort (n <= 64 distinct blocks): each entry's place is the
// number of smaller entries.
__device__ void SortInto(const int32_t* chosen, int count, int n, int32_t* out) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    if (i < count) {
      int rank = 0;
      for (int k = 0; k < count; ++k) rank += chosen[k] < chosen[i];
      out[rank] = chosen[i];
    } else {
      out[i] = -1;
    }
  }
}

// The unit's selection, already sorted with its pads (SortInto's output, shared memory), copied
// into the workspace and, when asked, NsaDecodeArgs::selected.
__device__ void CopySelection(const NsaDecodeArgs& a, const Sizes& z, float* ws, size_t bk, const int32_t* sorted) {
  for (int i = threadIdx.x; i < z.n; i += blockDim.x) {
    reinterpret_cast<int32_t*>(ws + z.sel)[bk * z.n + i] = sorted[i];
    if (a.selected) a.selected[bk * z.n + i] = sorted[i];
  }
}

// A context of at most n blocks (EveryBlock) selects blocks 0 .. c: writes that selection and
// returns true; else returns false and writes nothing.
__device__ bool EveryBlockSelection(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g) {
  if (!EveryBlock(a, z, b)) return false;
  const int64_t c = a.positions[b] / a.nsa.select_block;
  __shared__ int32_t all[kMaxSelected];  // 0 .. c ascending, then the pads: already sorted
  for (int j = threadIdx.x; j < z.n; j += blockDim.x) all[j] = j <= c ? j : -1;
  __syncthreads();
  CopySelection(a, z, ws, static_cast<size_t>(b) * a.num_kv_heads + g, all);
  return true;
}

// The heads' log-sum-exps of the compressed branch of unit bk, from its split partials, into
// lse[G] (shared or global memory; one warp a head, four heads at a time with all their loads in
// flight). The same floats wherever it runs.
__device__ void HeadsLse(const NsaDecodeArgs& a, const Sizes& z, const float* ws, size_t bk, float* lse) {
  const int G = z.G, vhd = a.v_head_dim;
  const float* part = ws + z.cmp_part + bk * z.cmp_splits * G * (2 + vhd);
  const int chunks = z.cmp_splits;  // split partials (empty ones have l = 0)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const int stride = 2 + vhd;
  constexpr int kHeadsAtOnce = 4;
  for (int h0 = warp; h0 < G; h0 += kHeadsAtOnce * warps) {
    float m[kHeadsAtOnce], l[kHeadsAtOnce];
#pragma unroll
    for (int u = 0; u < kHeadsAtOnce; ++u) m[u] = -FLT_MAX, l[u] = 0.f;
    for (int k = lane; k < chunks; k += 32) {
      float mk[kHeadsAtOnce], lk[kHeadsAtOnce];
#pragma unroll
      for (int u = 0; u < kHeadsAtOnce; ++u) {
        const int h = h0 + u * warps;
        mk[u] = h < G ? LoadCg(&part[(k * G + h) * stride]) : -FLT_MAX;
        lk[u] = h < G ? LoadCg(&part[(k * G + h) * stride + 1]) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kHeadsAtOnce; ++u) {
        if (lk[u] > 0.f) {
          const float mm = fmaxf(m[u], mk[u]);
          l[u] = l[u] * __expf(m[u] - mm) + lk[u] * __expf(mk[u] - mm), m[u] = mm;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kHeadsAtOnce; ++u) {
      for (int o = 16; o > 0; o /= 2) {
        const float mo = __shfl_xor_sync(0xffffffff, m[u], o), lo = __shfl_xor_sync(0xffffffff, l[u], o);
        const float mm = fmaxf(m[u], mo);
        l[u] = (l[u] > 0.f ? l[u] * __expf(m[u] - mm) : 0.f) + (lo > 0.f ? lo * __expf(mo - mm) : 0.f), m[u] = mm;
      }
      const int h = h0 + u * warps;
      if (lane == 0 && h < G) lse[h] = l[u] > 0.f ? m[u] + __logf(l[u]) : -FLT_MAX;
    }
  }
}

// The staged form's pass after the compressed one: the selection of a unit that takes every
// block, else the heads' log-sum-exps into the workspace.
__device__ void LseUnit(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g) {
  if (EveryBlockSelection(a, z, ws, b, g)) return;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  HeadsLse(a, z, ws, bk, ws + z.lse + bk * z.G);
}

// A candidate: a block's score and index in 8 bytes (the index's bits in a float's place).
__device__ __forceinline__ float2 Candidate(float score, int j) { return make_float2(score, __int_as_float(j)); }

// Picks a unit must make beyond its forced blocks.
__device__ __forceinline__ int FreePicks(const NsaDecodeArgs& a, const Sizes& z, int64_t c) {
  return z.n - NumForced(a.nsa, c);
}

// Score task `split` of unit (b, g): blocks [split * score_per, ...) of the unit's c + 1.
// smem: floats for the range's summaries' probabilities and its blocks' scores. lse_from_parts:
// the heads' log-sum-exps from the compressed partials (HeadsLse; the fused kernel, once every
// compressed task of the unit is done), else from the workspace (the staged pass before).
__device__ void ScoreTask(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, int split, float* smem,
                          bool lse_from_parts) {
  const int G = z.G;
  const int64_t t = a.positions[b];
  const int64_t N = a.nsa.NumCompressed(t + 1);
  const int64_t c = t / a.nsa.select_block;
  if (EveryBlock(a, z, b)) return;  // every block is taken (EveryBlockSelection)
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const int kf = max(0, FreePicks(a, z, c));
  float2* cand = reinterpret_cast<float2*>(ws + z.cand) + (bk * z.score_splits + split) * z.n;
  const int j0 = split * z.score_per, j1 = static_cast<int>(Min(c + 1, j0 + z.score_per));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (j0 >= j1) {
    for (int r = threadIdx.x; r < kf; r += blockDim.x) cand[r] = Candidate(-1.f, INT_MAX);
    return;
  }
  // The summaries blocks [j0, j1) overlap: i in [j0 cps - cpc + 1, j1 cps - 1].
  const int cpc = a.nsa.compress_block / a.nsa.compress_stride, cps = a.nsa.select_block / a.nsa.compress_stride;
  const int n32 = static_cast<int>(N);
  const int i_lo = max(0, j0 * cps - cpc + 1), i_hi = min(n32 - 1, j1 * cps - 1);
  float* P = smem;  // [i_hi - i_lo + 1]
  float* score = smem + z.score_summaries;  // [j1 - j0]
  const float* s = ws + z.scores + bk * G * z.nstride;
  // The raw scores of this thread's first summary, up to kEarlyHeads heads, are loaded before the
  // log-sum-exps, so both wait on memory once together.
  constexpr int kEarlyHeads = 16;
  float early[kEarlyHeads];
  const int i_first = i_lo + threadIdx.x;
#pragma unroll
  for (int h = 0; h < kEarlyHeads; ++h) early[h] = h < G && i_first <= i_hi ? LoadCg(&s[h * z.nstride + i_first]) : 0.f;
  __shared__ float lse[kMaxG];
  if (lse_from_parts) {
    HeadsLse(a, z, ws, bk, lse);
  } else {
    for (int h = threadIdx.x; h < G; h += blockDim.x) lse[h] = LoadCg(ws + z.lse + bk * G + h);
  }
  __syncthreads();
  for (int i = i_first; i <= i_hi; i += blockDim.x) {
    float acc = 0.f;
    if (i == i_first) {
#pragma unroll
      for (int h = 0; h < kEarlyHeads; ++h) {
        if (h < G) acc += __expf(early[h] - lse[h]);
      }
    }
#pragma unroll 16
    for (int h = i == i_first ? kEarlyHeads : 0; h < G; ++h) acc += __expf(LoadCg(&s[h * z.nstride + i]) - lse[h]);
    P[i - i_lo] = acc;
  }
  __syncthreads();
  for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    // NsaParams::GeometricWeight in 32-bit arithmetic: the stride-d chunks summary i
    // ([i, i + cpc)) shares with block j ([j cps, (j + 1) cps)).
    float acc = -1.f;  // forced blocks are no candidates
    if (!Forced(a.nsa, j, c)) {
      acc = 0.f;
      const int lo = max(0, j * cps - cpc + 1), hi = min(n32 - 1, (j + 1) * cps - 1);
      for (int i = lo; i <= hi; ++i) acc += static_cast<float>(min(i + cpc, (j + 1) * cps) - max(i, j * cps)) * P[i - i_lo];
    }
    score[j - j0] = acc;
  }
  __syncthreads();
  const int len = j1 - j0;
  if (len <= static_cast<int>(blockDim.x)) {
    // The range's best kf, sorted, by rank: a thread a block counts the blocks better than its own
    // (Better: higher score, then lower index) and, if fewer than kf, writes it at that place. The
    // same list as the rounds below, a few hundred instructions instead of kf serial warp rounds.
    const int x = threadIdx.x;
    const bool candidate = x < len && score[x] >= 0.f;  // forced blocks (-1) are no candidates
    if (candidate) {
      const float v = score[x];
      int rank = 0;
      for (int y = 0; y < len; ++y) rank += select::Better(v, x, score[y], y);
      if (rank < kf) cand[rank] = Candidate(v, j0 + x);
    }
    const int valid = __syncthreads_count(candidate);
    for (int r = valid + threadIdx.x; r < kf; r += blockDim.x) cand[r] = Candidate(-1.f, INT_MAX);
    return;
  }
  if (warp != 0) return;
  // Longer ranges (many units): the range's best kf, sorted, in kf rounds: lane l holds blocks
  // j0 + l + 32 m in registers; each round the warp's best is written and its lane looks at its
  // own blocks again.
  float v[kScorePerLane];
#pragma unroll
  for (int m = 0; m < kScorePerLane; ++m) {
    const int j = j0 + lane + 32 * m;
    v[m] = j < j1 ? score[j - j0] : -1.f;
  }
  auto lane_best = [&](float& bv, int& bj) {
    bv = -1.f, bj = INT_MAX;
#pragma unroll
    for (int m = 0; m < kScorePerLane; ++m) {
      if (v[m] > bv) bv = v[m], bj = j0 + lane + 32 * m;  // ascending j: ties keep the lower index
    }
  };
  float bv;
  int bj;
  lane_best(bv, bj);
  for (int r = 0; r < kf; ++r) {
    float wv = bv;
    int wj = bj;
    WarpBest(wv, wj);
    if (lane == 0) cand[r] = wv < 0.f ? Candidate(-1.f, INT_MAX) : Candidate(wv, wj);
    if (wv >= 0.f && wj == bj) {  // this lane's block won: drop it and look again
#pragma unroll
      for (int m = 0; m < kScorePerLane; ++m) {
        if (j0 + lane + 32 * m == wj) v[m] = -1.f;
      }
      lane_best(bv, bj);
    }
  }
}

// After the unit's score tasks (a unit with more than n blocks): their sorted lists merged a lane
// a list (score_splits <= 32), kf rounds of the warp's best head, then the forced blocks added.
// Returns the chosen blocks (shared memory, unordered) and their count. cache: shared memory for
// score_splits x kf candidates (the lists are copied in first, every load in flight at once, so
// the rounds wait on no global load).
__device__ const int32_t* MergeLists(const NsaDecodeArgs& a, const Sizes& z, const float* ws, int b, int g,
                                     float2* cache, int* chosen_count) {
  const int64_t t = a.positions[b];
  const int64_t c = t / a.nsa.select_block;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const int kf = max(0, FreePicks(a, z, c));
  __shared__ int32_t chosen[kMaxSelected];
  __shared__ int count;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    int f = 0;
    for (int64_t j = 0; j <= c; ++j) {
      if (Forced(a.nsa, j, c)) chosen[f++] = static_cast<int32_t>(j);
      else j = c - a.nsa.local_blocks;  // skip the free middle
    }
    count = f;
  }
  __syncthreads();
  const float2* lists = reinterpret_cast<const float2*>(ws + z.cand) + bk * z.score_splits * z.n;
  for (int idx = threadIdx.x; idx < z.score_splits * kf; idx += blockDim.x) {
    cache[idx] = __ldcg(&lists[(idx / kf) * z.n + idx % kf]);
  }
  __syncthreads();
  if (warp == 0) {
    int ptr = 0;
    auto head = [&](float& hv, int& hj) {
      if (lane < z.score_splits && ptr < kf) {
        const float2 e = cache[lane * kf + ptr];
        hv = e.x, hj = __float_as_int(e.y);
      } else {
        hv = -1.f, hj = INT_MAX;
      }
    };
    float hv;
    int hj;
    head(hv, hj);
    const int base = count;
    int picked = 0;
    for (int r = 0; r < kf; ++r) {
      float wv = hv;
      int wj = hj;
      WarpBest(wv, wj);
      if (wv < 0.f) break;  // fewer free blocks than picks (not with c + 1 > n)
      if (lane == 0) chosen[base + r] = wj;
      ++picked;
      if (wj == hj) ++ptr, head(hv, hj);
    }
    if (lane == 0) count = base + picked;
  }
  __syncthreads();
  *chosen_count = count;
  return chosen;
}

// The unit's selection from its score tasks' lists (MergeLists), sorted into `sorted` (shared
// memory, visible to the block on return) and, when `publish`, copied into the workspace and
// NsaDecodeArgs::selected. cache: MergeLists'.
__device__ __forceinline__ void MergedSelection(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g,
                                                int unit, float2* cache, int32_t* sorted, bool publish) {
  int count;
  const int32_t* picked = MergeLists(a, z, ws, b, g, cache, &count);
  SortInto(picked, count, z.n, sorted);
  __syncthreads();
  if (publish) CopySelection(a, z, ws, static_cast<size_t>(unit), sorted);
}

// Selected or window task: split `split` of unit (b, g) walks a run of selected blocks (split <
// sel_splits) or of window pages, one page (the part of it in range) a tile; the two branches
// never share a split, since each has its own softmax. chosen: the unit's selection in shared
// memory (the fused kernel's selected tasks merge it themselves), else null: the workspace's.
template <int kSlices, bool kByKeys>
__device__ void SegmentTask(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, int split,
                            unsigned char* smem, const int32_t* chosen = nullptr) {
  const int G = z.G, hd = a.head_dim, vhd = a.v_head_dim;
  const int64_t t = a.positions[b];
  const int lp = a.nsa.select_block;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  float* part = ws + z.seg_part + (bk * (z.sel_splits + z.win_splits) + split) * G * (2 + vhd);
  const bool selected = split < z.sel_splits;
  const int first = selected ? split * z.sel_per_split : (split - z.sel_splits) * z.win_per_split;
  const int last = selected ? min(z.n, first + z.sel_per_split) : min(z.window_pages, first + z.win_per_split);
  const int32_t* sel = reinterpret_cast<const int32_t*>(ws + z.sel) + bk * z.n;
  const int64_t table_row = a.table_rows ? a.table_rows[b] : b;
  const int32_t* table = a.raw_tables + table_row * a.max_pages;
  KvPlane plane = KvPlane::kSel;
  if (!selected && a.win_tables) table = a.win_tables + table_row * a.max_pages, plane = KvPlane::kWin;
  const int64_t window_start = Max(0, t - a.nsa.window + 1);
  // c + 1 <= n: every block 0 .. c is selected (EveryBlockSelection's list), known here without
  // waiting for the selection.
  const int64_t c = t / lp;
  const bool every_block = EveryBlock(a, z, b);
  if (first >= last) return EmptyPart(part, G, vhd);

  const RunSmem sm = CarveRun(smem, G, hd, vhd);
  LoadQuery(a, b, g, G, sm.qs);
  const int64_t k_off = a.layout.Offset(plane, a.layer, g, false), v_off = a.layout.Offset(plane, a.layer, g, true);
  auto load = [&](int tile, __nv_bfloat16* ks, __nv_bfloat16* vs) {
    int64_t page_index, lo, hi;
    if (selected) {
      const int32_t blk = every_block ? (first + tile <= c ? first + tile : -1)
                          : chosen    ? chosen[first + tile]
                                      : __ldcg(&sel[first + tile]);
      if (blk < 0) return 0;
      page_index = blk;
      lo = page_index * lp;
    } else {
      page_index = window_start / lp + first + tile;
      lo = Max(page_index * lp, window_start);
    }
    hi = Min((page_index + 1) * lp, t + 1);
    if (lo >= hi) return 0;
    const int rows = static_cast<int>(hi - lo), r0 = static_cast<int>(lo - page_index * lp);
    const int64_t physical = kDiagNoTable ? page_index : table[page_index];
    const __nv_bfloat16* page = a.pages + physical * a.layout.page_elems;
    // Rows of one page are contiguous: the K (then V) run is one stream of 16-byte reads.
    LoadContiguousRows(ks, rows, hd, page + k_off + static_cast<int64_t>(r0) * hd);
    LoadContiguousRows(vs, rows, vhd, page + v_off + static_cast<int64_t>(r0) * vhd);
    return rows;
  };
  auto no_score = [](int, int, int, float) {};
  if constexpr (kByKeys) {
    AttendTilesByKeys(sm.qs, sm.ks, sm.vs, G, last - first, hd, vhd, a.scale, part, load, no_score);
  } else {
    AttendTiles<kSlices>(sm.qs, sm.ks, sm.vs, G, last - first, hd, vhd, a.scale, part, load, no_score);
  }
}

// Merge factors of `count` partials [m, l, ...] `part_stride` floats apart, by one warp, times the
// branch's gate: M = max m_k, L = sum l_k exp(m_k - M); factors[k] = gate exp(m_k - M) / L (0 if
// empty). A lane keeps up to kMergePerLane partials' m and l in registers, so for up to
// 32 kMergePerLane partials they are loaded once, all in flight together.
constexpr int kMergePerLane = 4;
__device__ void MergeFactors(const float* parts, int count, int part_stride, float gate, float* factors) {
  const int lane = threadIdx.x % 32;
  float mk[kMergePerLane], lk[kMergePerLane];
#pragma unroll
  for (int r = 0; r < kMergePerLane; ++r) {
    const int k = lane + 32 * r;
    mk[r] = k < count ? LoadCg(&parts[k * part_stride]) : -FLT_MAX;
    lk[r] = k < count ? LoadCg(&parts[k * part_stride + 1]) : 0.f;
  }
  const int rest = lane + 32 * kMergePerLane;  // partials past the registers' (loaded again)
  float m = -FLT_MAX;
#pragma unroll
  for (int r = 0; r < kMergePerLane; ++r) {
    if (lk[r] > 0.f) m = fmaxf(m, mk[r]);
  }
  for (int k = rest; k < count; k += 32) {
    if (LoadCg(&parts[k * part_stride + 1]) > 0.f) m = fmaxf(m, LoadCg(&parts[k * part_stride]));
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
  float l = 0.f;
#pragma unroll
  for (int r = 0; r < kMergePerLane; ++r) {
    if (lk[r] > 0.f) l += lk[r] * __expf(mk[r] - m);
  }
  for (int k = rest; k < count; k += 32) {
    const float lr = LoadCg(&parts[k * part_stride + 1]);
    if (lr > 0.f) l += lr * __expf(LoadCg(&parts[k * part_stride]) - m);
  }
  for (int o = 16; o > 0; o /= 2) l += __shfl_xor_sync(0xffffffff, l, o);
#pragma unroll
  for (int r = 0; r < kMergePerLane; ++r) {
    const int k = lane + 32 * r;
    if (k < count) factors[k] = l > 0.f && lk[r] > 0.f ? gate * (__expf(mk[r] - m) / l) : 0.f;
  }
  for (int k = rest; k < count; k += 32) {
    const float lr = LoadCg(&parts[k * part_stride + 1]);
    factors[k] = l > 0.f && lr > 0.f ? gate * (__expf(LoadCg(&parts[k * part_stride]) - m) / l) : 0.f;
  }
}

// Combine of head h of unit (b, g): each branch's partials merged (three warps compute the gated
// merge factors into `factors`, cmp_splits + sel_splits + win_splits floats of shared memory),
// then the output is one weighted sum over every partial in order (compressed, selected, window;
// empty partials add exact zeros, so a larger max_context's extra empty splits change no bit), a
// channel a thread, its loads 8 at a time in flight.
__device__ void CombineHead(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, int h, float* factors) {
  const int G = z.G, vhd = a.v_head_dim, stride = 2 + vhd, head = g * G + h;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const int nc = z.cmp_splits, ns = z.sel_splits, nw = z.win_splits;
  const float* cmp = ws + z.cmp_part + bk * nc * G * stride + h * stride;  // partial k at + k * G * stride
  const float* seg = ws + z.seg_part + bk * (ns + nw) * G * stride + h * stride;
  const float* gate = a.gates + (static_cast<int64_t>(b) * a.num_heads + head) * 3;
  // Warps 0, 1, 2: the compressed, selected and window branches, through one call site (one copy
  // of MergeFactors' code instead of three: at batch 1 the SM fetches every instruction cold).
  const int warp = threadIdx.x / 32;
  if (warp < 3) {
    const float* parts = warp == 0 ? cmp : warp == 1 ? seg : seg + ns * G * stride;
    const int count = warp == 0 ? nc : warp == 1 ? ns : nw, first = warp == 0 ? 0 : warp == 1 ? nc : nc + ns;
    MergeFactors(parts, count, G * stride, gate[warp], factors + first);
  }
  __syncthreads();
  const int total = nc + ns + nw;
  for (int e = threadIdx.x; e < vhd; e += blockDim.x) {
    float y = 0.f;
#pragma unroll 8
    for (int k = 0; k < total; ++k) {
      const float* p = k < nc ? cmp + k * G * stride : seg + (k - nc) * G * stride;
      y += factors[k] * LoadCg(p + 2 + e);
    }
    const int64_t at = (static_cast<int64_t>(b) * a.num_heads + head) * vhd + e;
    if (a.out) a.out[at] = y;
    if (a.out_bf16) a.out_bf16[at] = __float2bfloat16(y);
  }
}

// The merge of heads h0 .. h0 + hp - 1 of unit (b, g), hp > 1 (Sizes::merge_heads: large batches,
// where a task per head would not fit one wave of resident blocks). As CombineHead, but thread p
// computes the gated merge factors of (head, branch) p (factors: [hp][cmp_splits + sel_splits +
// win_splits] floats of shared memory), up to kThreadMerge partials' m and l loaded at once, and
// thread x then sums two channels at a time over every partial in CombineHead's order, up to
// kMergeChunk partials' loads in flight together (at 32 x 64k a head has 10-11 partials).
constexpr int kThreadMerge = 8, kMergeChunk = 12;
__device__ void CombineHeads(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, int h0, int hp,
                             float* factors) {
  const int G = z.G, vhd = a.v_head_dim, stride = 2 + vhd;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const int nc = z.cmp_splits, ns = z.sel_splits, nw = z.win_splits, total = nc + ns + nw;
  const float* cmp = ws + z.cmp_part + bk * nc * G * stride;  // head h's partial k at + (k G + h) stride
  const float* seg = ws + z.seg_part + bk * (ns + nw) * G * stride;
  const int64_t head0 = static_cast<int64_t>(b) * a.num_heads + g * G + h0;
  for (int p = threadIdx.x; p < 3 * hp; p += blockDim.x) {
    const int h = p / 3, branch = p - 3 * h;
    const float* parts = (branch == 0 ? cmp : branch == 1 ? seg : seg + ns * G * stride) + (h0 + h) * stride;
    const int count = branch == 0 ? nc : branch == 1 ? ns : nw, first = branch == 0 ? 0 : branch == 1 ? nc : nc + ns;
    const int ps = G * stride;
    float mk[kThreadMerge], lk[kThreadMerge];
#pragma unroll
    for (int k = 0; k < kThreadMerge; ++k) {
      mk[k] = k < count ? LoadCg(&parts[k * ps]) : -FLT_MAX;
      lk[k] = k < count ? LoadCg(&parts[k * ps + 1]) : 0.f;
    }
    float m = -FLT_MAX, l = 0.f;
#pragma unroll
    for (int k = 0; k < kThreadMerge; ++k) {
      if (lk[k] > 0.f) m = fmaxf(m, mk[k]);
    }
    for (int k = kThreadMerge; k < count; ++k) {
      if (LoadCg(&parts[k * ps + 1]) > 0.f) m = fmaxf(m, LoadCg(&parts[k * ps]));
    }
#pragma unroll
    for (int k = 0; k < kThreadMerge; ++k) {
      if (lk[k] > 0.f) l += lk[k] * __expf(mk[k] - m);
    }
    for (int k = kThreadMerge; k < count; ++k) {
      const float lr = LoadCg(&parts[k * ps + 1]);
      if (lr > 0.f) l += lr * __expf(LoadCg(&parts[k * ps]) - m);
    }
    const float gate = a.gates[(head0 + h) * 3 + branch];
    float* f = factors + h * total + first;
#pragma unroll
    for (int k = 0; k < kThreadMerge; ++k) {
      if (k < count) f[k] = l > 0.f && lk[k] > 0.f ? gate * (__expf(mk[k] - m) / l) : 0.f;
    }
    for (int k = kThreadMerge; k < count; ++k) {
      const float lr = LoadCg(&parts[k * ps + 1]);
      f[k] = l > 0.f && lr > 0.f ? gate * (__expf(LoadCg(&parts[k * ps]) - m) / l) : 0.f;
    }
  }
  __syncthreads();
  const int pairs = vhd / 2;
  for (int i = threadIdx.x; i < hp * pairs; i += blockDim.x) {
    const int h = i / pairs, e = 2 * (i - h * pairs);
    const float* base_c = cmp + (h0 + h) * stride + 2 + e;
    const float* base_s = seg + (h0 + h) * stride + 2 + e;
    float y0 = 0.f, y1 = 0.f;
    for (int k0 = 0; k0 < total; k0 += kMergeChunk) {
      float2 v[kMergeChunk];
#pragma unroll
      for (int u = 0; u < kMergeChunk; ++u) {
        const int k = k0 + u;
        const float* q = k < nc ? base_c + k * G * stride : base_s + (k - nc) * G * stride;
        v[u] = k < total ? __ldcg(reinterpret_cast<const float2*>(q)) : make_float2(0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kMergeChunk; ++u) {
        if (k0 + u < total) {
          const float f = factors[h * total + k0 + u];
          y0 += f * v[u].x, y1 += f * v[u].y;
        }
      }
    }
    const int64_t at = (head0 + h) * vhd + e;
    if (a.out) *reinterpret_cast<float2*>(a.out + at) = make_float2(y0, y1);
    if (a.out_bf16) *reinterpret_cast<__nv_bfloat162*>(a.out_bf16 + at) = __floats2bfloat162_rn(y0, y1);
  }
}

// ---- the fused kernel --------------------------------------------------------------------------
// One launch of min(tasks, resident blocks) blocks that take tasks from a queue in this order:
// every unit's compressed tasks, window tasks, score tasks, selected tasks, then a merge task per
// head. A score task waits for its unit's compressed tasks (then merges the heads' log-sum-exps
// itself), a selected task for its unit's score tasks (then merges their lists itself), a merge
// task for all of its unit's tasks (units whose every block is selected, EveryBlock, skip the
// first two waits: fewer edges only). Every hand-off is one counter a task increments as it ends:
// no task publishes for others. So:
// every task one can wait on was taken from the queue before it by a running block, and waits
// only on tasks taken earlier still, so every wait ends whatever the grid size and however many
// blocks are resident.
// Waiting blocks poll with relaxed loads and acquire once, after the flag is seen: an acquire
// load invalidates the SM's L1, and a stream of them from waiting blocks slows every block that
// shares their SM.
__device__ __forceinline__ int LoadRelaxed(const int* p) {
  int v;
  asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ void WaitAtLeast(const int* p, int value) {
  if (threadIdx.x == 0) {
    while (LoadRelaxed(p) < value) __nanosleep(64);
    __threadfence();
  }
  __syncthreads();
}

__device__ __forceinline__ int SmId() {
  int id;
  asm volatile("mov.u32 %0, %smid;" : "=r"(id));
  return id;
}

template <int kSlices, bool kByKeys>
__global__ void __launch_bounds__(kThreads, FusedBlocksPerSm(kSlices)) FusedKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  const Counters cnt = CountersOf(z, ws);
  const int U = z.units, per_unit = z.cmp_splits + z.score_splits + z.win_splits + z.sel_splits;
  // The queue: compressed, window, score, selected tasks, then the merge tasks. Window tasks wait
  // for nothing, so they go before the score tasks, which wait (after them, the window tasks lost
  // 6% at 7b 32 x 64k: fourteenth session call 4).
  const int cmp_end = U * z.cmp_splits, win_end = cmp_end + U * z.win_splits;
  const int score_end = win_end + U * z.score_splits, work_end = U * per_unit;
  const int total = work_end + U * z.G / z.merge_heads;
  __shared__ int task_sh;
  for (;;) {
    __syncthreads();  // the previous task is done with shared memory
    if (threadIdx.x == 0) task_sh = atomicAdd(cnt.next_task, 1);
    __syncthreads();
    const int task = task_sh;
    if (task >= total) break;
    int64_t* trace = a.trace ? a.trace + 8 * static_cast<int64_t>(task) : nullptr;
    if (trace && threadIdx.x == 0) trace[0] = GlobalTimer(), trace[2] = 0, trace[3] = SmId();
    if (task >= work_end) {  // merge: once every task of the unit is done
      const int per = z.G / z.merge_heads, k = task - work_end, unit = k / per, h0 = k % per * z.merge_heads;
      WaitAtLeast(&cnt.done[unit], per_unit);
      const int b = unit / a.num_kv_heads, g = unit % a.num_kv_heads;
      if (z.merge_heads == 1) {
        CombineHead(a, z, ws, b, g, h0, reinterpret_cast<float*>(smem));
      } else {
        CombineHeads(a, z, ws, b, g, h0, z.merge_heads, reinterpret_cast<float*>(smem));
      }
      if (trace && threadIdx.x == 0) trace[1] = GlobalTimer();
      continue;
    }
    int unit, kind;  // kind: 0 compressed, 1 score, 2 window or selected
    if (task < cmp_end) {
      unit = task / z.cmp_splits, kind = 0;
      const int b = unit / a.num_kv_heads, g = unit % a.num_kv_heads;
      CompressedTask<kSlices, kByKeys>(a, z, ws, b, g, task % z.cmp_splits, smem);
      if (trace && threadIdx.x == 0) trace[1] = GlobalTimer();
    } else if (task >= win_end && task < score_end) {
      const int k = task - win_end, split = k % z.score_splits;
      unit = k / z.score_splits, kind = 1;
      const int b = unit / a.num_kv_heads, g = unit % a.num_kv_heads;
      if (EveryBlock(a, z, b)) {
        // Every block is selected (c + 1 <= n): nothing to score, no wait; the first score task
        // writes the list when the caller asked for it.
        if (split == 0 && a.selected) EveryBlockSelection(a, z, ws, b, g);
      } else {
        // Each score task merges the heads' log-sum-exps itself once the unit's compressed tasks
        // are done (no hand-off through a task of its own).
        WaitAtLeast(&cnt.cmp_done[unit], z.cmp_splits);
        ScoreTask(a, z, ws, b, g, split, reinterpret_cast<float*>(smem), true);
      }
      if (trace && threadIdx.x == 0) trace[1] = GlobalTimer();
    } else {
      int split;
      kind = 2;
      if (task < win_end) {
        const int k = task - cmp_end;
        unit = k / z.win_splits, split = z.sel_splits + k % z.win_splits;
      } else {
        const int k = task - score_end;
        unit = k / z.sel_splits, split = k % z.sel_splits;
      }
      const int b = unit / a.num_kv_heads, g = unit % a.num_kv_heads;
      __shared__ int32_t chosen_sorted[kMaxSelected];
      const int32_t* chosen = nullptr;
      // Short contexts (c + 1 <= n) select every block: the task reads no selection, so it starts
      // at once. Otherwise each selected task merges the score tasks' lists itself once they are
      // all done (no hand-off through a last task), and the first writes the unit's selection.
      if (split < z.sel_splits && !EveryBlock(a, z, b)) {
        WaitAtLeast(&cnt.score_done[unit], z.score_splits);
        MergedSelection(a, z, ws, b, g, unit, reinterpret_cast<float2*>(smem), chosen_sorted, split == 0);
        chosen = chosen_sorted;
        if (trace && threadIdx.x == 0) trace[2] = GlobalTimer();
      }
      SegmentTask<kSlices, kByKeys>(a, z, ws, b, g, split, smem, chosen);
      if (trace && threadIdx.x == 0) trace[1] = GlobalTimer();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      if (kind == 0) atomicAdd(&cnt.cmp_done[unit], 1);
      if (kind == 1) atomicAdd(&cnt.score_done[unit], 1);
      atomicAdd(&cnt.done[unit], 1);
    }
  }
}

// ---- the staged kernels (NsaDecodeArgs::staged): the same tasks, one launch per pass ------------
template <int kSlices, bool kByKeys>
__global__ void __launch_bounds__(kThreads) CompressedKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  CompressedTask<kSlices, kByKeys>(a, z, ws, blockIdx.z, blockIdx.y, blockIdx.x, smem);
}
__global__ void __launch_bounds__(kThreads) LseKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  LseUnit(a, z, ws, blockIdx.y, blockIdx.x);
}
// The last score task of a unit merges (the counters start at zero: the launch clears them).
__global__ void __launch_bounds__(kThreads) ScoreKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int b = blockIdx.z, g = blockIdx.y, unit = b * a.num_kv_heads + g;
  ScoreTask(a, z, ws, b, g, blockIdx.x, reinterpret_cast<float*>(smem), false);
  if (ArriveLast(&CountersOf(z, ws).score_done[unit], z.score_splits) && !EveryBlock(a, z, b)) {
    __shared__ int32_t sorted[kMaxSelected];
    MergedSelection(a, z, ws, b, g, unit, reinterpret_cast<float2*>(smem), sorted, true);
  }
}
template <int kSlices, bool kByKeys>
__global__ void __launch_bounds__(kThreads) SegmentKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  SegmentTask<kSlices, kByKeys>(a, z, ws, blockIdx.z, blockIdx.y, blockIdx.x, smem);
}
__global__ void __launch_bounds__(kThreads) CombineKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  CombineHead(a, z, ws, blockIdx.y, blockIdx.x / z.G, blockIdx.x % z.G, reinterpret_cast<float*>(smem));
}

// The launches for kernels built for kSlices 16-head slices of the group (the checks are done),
// kByKeys: the tiles' keys split across the warps (AttendTilesByKeys; kSlices = 1 only).
template <int kSlices, bool kByKeys = false>
cudaError_t LaunchSlices(const NsaDecodeArgs& a, const Sizes& z, cudaStream_t stream) {
  static_assert(!kByKeys || kSlices == 1, "the key split is built for one slice of 16 heads");
  float* ws = static_cast<float*>(a.workspace);
  const size_t run_smem = TileSmemBytes(z.G, a.head_dim, a.v_head_dim, kByKeys);
  const size_t score_smem = std::max(static_cast<size_t>(z.score_summaries + z.score_per) * sizeof(float),
                                     static_cast<size_t>(z.score_splits) * z.n * sizeof(float2));  // ScoreTask, MergeLists
  const size_t combine_smem =
      static_cast<size_t>(z.cmp_splits + z.sel_splits + z.win_splits) * z.merge_heads * sizeof(float);
  // Opt in to large shared memory once per process (the attribute is per kernel, not per launch).
  static const cudaError_t opt_in = [] {
    int max_smem = 0;
    cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    max_smem -= 8 << 10;  // leave room for the kernels' static shared memory
    cudaError_t e = cudaSuccess;
    for (const void* k : {reinterpret_cast<const void*>(FusedKernel<kSlices, kByKeys>), reinterpret_cast<const void*>(CompressedKernel<kSlices, kByKeys>),
                          reinterpret_cast<const void*>(SegmentKernel<kSlices, kByKeys>), reinterpret_cast<const void*>(ScoreKernel),
                          reinterpret_cast<const void*>(CombineKernel)}) {
      if (e == cudaSuccess) e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    }
    return e;
  }();
  if (opt_in != cudaSuccess) return opt_in;
  const cudaError_t cleared = cudaMemsetAsync(ws + z.counters, 0, z.counter_bytes, stream);
  if (cleared != cudaSuccess) return cleared;
  if (!a.staged) {
    const size_t smem = std::max({run_smem, score_smem, combine_smem});
    // As many blocks as fit at once (more would only wait for a free slot), at most one a task.
    // Computed from the kernel's registers and shared memory rather than the occupancy API, which
    // the first launch of a new shared-memory size may meet inside a stream capture.
    struct Limits {
      int regs_per_sm, smem_per_sm, reserved, threads_per_sm, regs, static_smem;
    };
    static const Limits limits = [] {
      int device = 0;
      cudaGetDevice(&device);
      cudaFuncAttributes fa{};
      cudaFuncGetAttributes(&fa, FusedKernel<kSlices, kByKeys>);
      int r = 65536, m = 233472, res = 1024, th = 2048;
      cudaDeviceGetAttribute(&r, cudaDevAttrMaxRegistersPerMultiprocessor, device);
      cudaDeviceGetAttribute(&m, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
      cudaDeviceGetAttribute(&res, cudaDevAttrReservedSharedMemoryPerBlock, device);
      cudaDeviceGetAttribute(&th, cudaDevAttrMaxThreadsPerMultiProcessor, device);
      return Limits{r, m, res, th, std::max(fa.numRegs, 1), static_cast<int>(fa.sharedSizeBytes)};
    }();
    const int regs_per_block = (limits.regs * 32 + 255) / 256 * 256 * (kThreads / 32);
    const int per_sm = std::max(1, std::min({limits.threads_per_sm / kThreads, limits.regs_per_sm / regs_per_block,
                                             limits.smem_per_sm / static_cast<int>(smem + limits.static_smem + limits.reserved)}));
    const int64_t tasks = static_cast<int64_t>(z.units) *
                          (z.cmp_splits + z.score_splits + z.sel_splits + z.win_splits + z.G / z.merge_heads);
    const int blocks = static_cast<int>(std::min<int64_t>(tasks, static_cast<int64_t>(per_sm) * NumSms()));
    FusedKernel<kSlices, kByKeys><<<blocks, kThreads, smem, stream>>>(a, z, ws);
    return cudaGetLastError();
  }
  CompressedKernel<kSlices, kByKeys><<<dim3(z.cmp_splits, a.num_kv_heads, a.batch), kThreads, run_smem, stream>>>(a, z, ws);
  LseKernel<<<dim3(a.num_kv_heads, a.batch), kThreads, 0, stream>>>(a, z, ws);
  ScoreKernel<<<dim3(z.score_splits, a.num_kv_heads, a.batch), kThreads, score_smem, stream>>>(a, z, ws);
  SegmentKernel<kSlices, kByKeys><<<dim3(z.sel_splits + z.win_splits, a.num_kv_heads, a.batch), kThreads, run_smem, stream>>>(a, z, ws);
  CombineKernel<<<dim3(a.num_heads, a.batch), kThreads, combine_smem, stream>>>(a, z, ws);
  return cudaGetLastError();
}

}  // namespace

size_t NsaDecodeWorkspaceBytes(const NsaDecodeArgs& args) { return SizesOf(args).total_bytes; }

int NsaDecodeCompressedRun(const NsaDecodeArgs& args) { return SizesOf(args).cmp_per_split; }

int NsaDecodeMergeHeads(const NsaDecodeArgs& args) { return SizesOf(args).merge_heads; }

bool KeySplit() {
  static const bool on = EnvSwitch("NSA_DECODE_KEY_SPLIT", 1) == 1;
  return on;
}

NsaDecodeTasks NsaDecodeTaskCounts(const NsaDecodeArgs& args) {
  const Sizes z = SizesOf(args);
  return {z.units * z.cmp_splits, z.units * z.win_splits, z.units * z.score_splits, z.units * z.sel_splits,
          z.units * z.G / z.merge_heads};
}

cudaError_t LaunchNsaDecode(const NsaDecodeArgs& a, cudaStream_t stream) {
  if (a.num_kv_heads <= 0 || a.num_heads % a.num_kv_heads != 0) return cudaErrorInvalidValue;
  const Sizes z = SizesOf(a);
  if (z.G > kMaxG || z.n > kMaxSelected || z.n < 1) return cudaErrorInvalidValue;
  // The forced blocks must fit in the n chosen ones (models/config.cc rejects such configs too).
  if (a.nsa.init_blocks < 0 || a.nsa.local_blocks < 0 || a.nsa.init_blocks + a.nsa.local_blocks > z.n) {
    return cudaErrorInvalidValue;
  }
  // Tiles step through key dims 16 at a time (mma k) and value dims 16 at a time; rows are
  // copied 16 bytes at a time. Shared memory bounds the largest dims.
  if (a.head_dim % 16 != 0 || a.head_dim < 16 || a.head_dim > 192) return cudaErrorInvalidValue;
  if (a.v_head_dim % 16 != 0 || a.v_head_dim < 16 || a.v_head_dim > 128) return cudaErrorInvalidValue;
  if (a.max_context / a.nsa.select_block + 1 > kMaxBlocks || a.batch < 1) return cudaErrorInvalidValue;
  if (!a.out && !a.out_bf16) return cudaErrorInvalidValue;
  if (a.merge_heads < 0 || (a.merge_heads > 0 && z.G % a.merge_heads != 0)) return cudaErrorInvalidValue;
  // One page is one tile: pages longer than kTileRows tokens would need a loop the kernel lacks.
  if (a.nsa.select_block > kTileRows) return cudaErrorInvalidValue;
  switch ((z.G + 15) / 16) {
    case 1:
      return (a.key_split < 0 ? KeySplit() : a.key_split != 0) ? LaunchSlices<1, true>(a, z, stream)
                                                                : LaunchSlices<1>(a, z, stream);
    case 2:
      return LaunchSlices<2>(a, z, stream);
    default:
      return LaunchSlices<4>(a, z, stream);
  }
}

}  // namespace nsa::cuda
