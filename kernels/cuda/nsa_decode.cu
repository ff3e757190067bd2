#include "kernels/cuda/nsa_decode.h"

#include <algorithm>
#include <cfloat>

#include <cuda_pipeline.h>

#include "kernels/cuda/tile_mma.cuh"

namespace nsa::cuda {
namespace {

using tile::kPad;
using tile::kRowTiles;
using tile::kTileRows;
using tile::Load32;
using tile::LoadRows;
using tile::Mma;
using tile::Pack;
using tile::Pair;
using tile::ZeroRows;

__device__ __forceinline__ int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kThreads = 128;
constexpr int kCmpRows = 64;  // summaries per block in the compressed pass (one tile)
constexpr int kMaxG = 64;
constexpr int kMaxSelected = 64;
constexpr int kMaxBlocks = 16384;  // selection blocks: contexts up to 1M tokens at l' = 64

struct Sizes {
  int G, n, window_pages, cmp_chunks;
  // Splits: the blocks a (sequence, KV head) gets for each pass, and the tiles each walks.
  int cmp_splits, cmp_per_split, sel_splits, sel_per_split, win_splits, win_per_split;
  int64_t nmax, nstride;  // summaries of the longest sequence; score row stride (a multiple of 4)
  int units;  // batch x KV heads
  size_t scores, cmp_part, sel, seg_part, counters;  // float/int offsets into the workspace
  size_t counter_bytes, total_bytes;
};

// Blocks per SM the splits aim for: runs short enough that co-resident blocks overlap one
// another's loads (a run has no double buffering of its own).
constexpr int kSmOversubscription = 2;

// Splits of `tiles` tiles so that batch x KV heads x splits is about kSmOversubscription x SMs.
void Split(int tiles, int units, int sms, int* splits, int* per_split) {
  const int want = std::max(1, std::min(tiles, (kSmOversubscription * sms + units - 1) / units));
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
  Split(s.cmp_chunks, units, sms, &s.cmp_splits, &s.cmp_per_split);
  Split(s.n, units, sms, &s.sel_splits, &s.sel_per_split);
  Split(s.window_pages, units, sms, &s.win_splits, &s.win_per_split);
  const size_t bk = static_cast<size_t>(a.batch) * a.num_kv_heads;
  const size_t part = static_cast<size_t>(s.G) * (2 + a.v_head_dim);  // one partial per split
  s.scores = 0;
  s.cmp_part = s.scores + bk * s.G * s.nstride;
  s.sel = s.cmp_part + bk * s.cmp_splits * part;
  s.seg_part = s.sel + (bk * s.n + 3) / 4 * 4;  // partials start 16-byte aligned (float2 stores)
  s.counters = s.seg_part + bk * (s.sel_splits + s.win_splits) * part;
  s.units = static_cast<int>(bk);
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
  LoadRows(qs, G, hd, [&](int r) { return q + r * hd; });
  for (int i = G * (hd + kPad) + threadIdx.x; i < gp * (hd + kPad); i += blockDim.x) qs[i] = __float2bfloat16(0.f);
}

// Shared memory of a run: K and V (kTileRows rows) and q (Gp heads), rows padded.
inline size_t TileSmemBytes(int G, int hd, int vhd) {
  const int gp = (G + 15) / 16 * 16;
  return (static_cast<size_t>(kTileRows) * (hd + kPad + vhd + kPad) + static_cast<size_t>(gp) * (hd + kPad)) * 2;
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
    if (rows > 0 && rows < kTileRows) {
      ZeroRows(ks, rows, hd);
      ZeroRows(vs, rows, vhd);
    }
    __pipeline_commit();  // the tile's copies (and, the first time, the query's)
    __pipeline_wait_prior(0);
    __syncthreads();
    if (rows > 0) {
      // Unrolled over the largest slice count so the running state stays in registers.
#pragma unroll
      for (int mt = 0; mt < kSlices; ++mt) {
        if (mt >= slices) break;
        const __nv_bfloat16* q = qs + static_cast<size_t>(mt) * 16 * qstride;
        float s[kRowTiles][4];
#pragma unroll
        for (int j = 0; j < kRowTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
        for (int kk = 0; kk < hd; kk += 16) {
          const uint32_t a0 = Load32(q + g * qstride + kk + 2 * t), a1 = Load32(q + (g + 8) * qstride + kk + 2 * t);
          const uint32_t a2 = Load32(q + g * qstride + kk + 2 * t + 8), a3 = Load32(q + (g + 8) * qstride + kk + 2 * t + 8);
#pragma unroll
          for (int j = 0; j < kRowTiles; ++j) {
            const __nv_bfloat16* k = ks + (8 * j + g) * qstride + kk + 2 * t;
            Mma(s[j], a0, a1, a2, a3, Load32(k), Load32(k + 8));
          }
        }
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
            const __nv_bfloat16* v = vs + (16 * ks16 + 2 * t) * vstride + 8 * ct + g;
            Mma(o[mt][nn], p0, p1, p2, p3, Pair(v, v + vstride), Pair(v + 8 * vstride, v + 9 * vstride));
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
// A (sequence, KV head) unit owns cmp_splits compressed tasks, win_splits window tasks and
// sel_splits selected-block tasks, each one run of tiles that leaves one partial. The last
// compressed task of a unit to finish scores the blocks and chooses the unit's top-n; the last
// task of any kind merges the unit's partials and writes its G outputs.

// Unit counters in the workspace (ints after the floats): [0] the next task of the fused kernel,
// then per unit: compressed tasks done, selection ready, tasks done.
struct Counters {
  int* next_task;
  int *cmp_done, *ready, *done;
};
__device__ Counters CountersOf(const Sizes& z, float* ws) {
  int* c = reinterpret_cast<int*>(ws + z.counters);
  return {c, c + 1, c + 1 + z.units, c + 1 + 2 * z.units};
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
template <int kSlices>
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
  __shared__ int64_t row_page[kTileRows];
  __shared__ int row_slot[kTileRows];
  float* scores = ws + z.scores + bk * G * z.nstride;
  auto load = [&](int tile, __nv_bfloat16* ks, __nv_bfloat16* vs) {
    const int64_t i0 = static_cast<int64_t>(first + tile) * kCmpRows;
    const int rows = static_cast<int>(Min(kCmpRows, N - i0));
    // Each summary's page and slot, once per row (not once per 16-byte copy).
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      const int vr = static_cast<int>(i0) + r + L.summary_row_shift;
      row_page[r] = static_cast<int64_t>(table[vr / L.summaries_per_page]) * L.page_elems;
      row_slot[r] = vr % L.summaries_per_page;
    }
    __syncthreads();
    LoadRows(ks, rows, hd, [&](int r) { return a.pages + row_page[r] + k_off + row_slot[r] * hd; });
    LoadRows(vs, rows, vhd, [&](int r) { return a.pages + row_page[r] + v_off + row_slot[r] * vhd; });
    return rows;
  };
  auto score = [&](int tile, int head, int row, float v) {
    scores[head * z.nstride + static_cast<int64_t>(first + tile) * kCmpRows + row] = v;
  };
  AttendTiles<kSlices>(sm.qs, sm.ks, sm.vs, G, last - first, hd, vhd, a.scale, part, load, score);
}

// Selection of unit (b, g), once all its compressed tasks are done: the compressed branch's
// log-sum-exp per head, block scores (geometric map, group sum), forced blocks, top-n (radix
// select), written ascending with -1 pads.
// trace: optional (benchmarks), four stamps after its phases (see NsaDecodeArgs::trace).
__device__ void SelectUnit(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, unsigned char* smem,
                           int64_t* trace = nullptr) {
  auto stamp = [&](int k) {
    if (trace && threadIdx.x == 0) trace[k] = GlobalTimer();
  };
  const int G = z.G, vhd = a.v_head_dim;
  const int64_t t = a.positions[b];
  const int64_t N = a.nsa.NumCompressed(t + 1);
  const int64_t c = t / a.nsa.select_block;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const float* part = ws + z.cmp_part + bk * z.cmp_splits * G * (2 + vhd);
  const int chunks = z.cmp_splits;  // split partials (empty ones have l = 0)
  __shared__ float lse[kMaxG];
  float* score = reinterpret_cast<float*>(smem);
  unsigned char* taken = reinterpret_cast<unsigned char*>(score + c + 1);

  // Merge the splits' partials: a warp a head, four heads at a time with all their loads in
  // flight, each lane merging its splits online, then the lanes' (max, sum) pairs merged.
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
  __syncthreads();
  stamp(4);

  // Block scores. First each summary's probability summed over the group: a thread takes four
  // summaries at a time and loads all G heads' 16-byte rows of them before it sums any, so the
  // L2 latency is paid once per four summaries, not once per head. Then the blocks' weighted sums.
  const float* s = ws + z.scores + bk * G * z.nstride;
  float* P = reinterpret_cast<float*>(taken + ((c + 1 + 15) / 16) * 16);
  for (int64_t i = 4 * threadIdx.x; i < N; i += 4 * blockDim.x) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16
    for (int h = 0; h < G; ++h) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(s + h * z.nstride + i));
      const float l = lse[h];
      acc.x += __expf(v.x - l), acc.y += __expf(v.y - l), acc.z += __expf(v.z - l), acc.w += __expf(v.w - l);
    }
    P[i] = acc.x;
    if (i + 1 < N) P[i + 1] = acc.y;
    if (i + 2 < N) P[i + 2] = acc.z;
    if (i + 3 < N) P[i + 3] = acc.w;
  }
  __syncthreads();
  stamp(5);
  const int cpc = a.nsa.compress_block / a.nsa.compress_stride, cps = a.nsa.select_block / a.nsa.compress_stride;
  const int n32 = static_cast<int>(N);
  for (int j = threadIdx.x; j <= c; j += blockDim.x) {
    // NsaParams::GeometricWeight in 32-bit arithmetic (contexts stay below 2^31 summaries): the
    // stride-d chunks summary i ([i, i + cpc)) shares with block j ([j cps, (j + 1) cps)).
    float acc = 0.f;
    const int lo = max(0, j * cps - cpc + 1), hi = min(n32 - 1, (j + 1) * cps - 1);
    for (int i = lo; i <= hi; ++i) acc += static_cast<float>(min(i + cpc, (j + 1) * cps) - max(i, j * cps)) * P[i];
    score[j] = acc;
    taken[j] = 0;
  }
  __syncthreads();

  // Forced blocks, then the highest scores (ties to the lower index), n in all.
  int32_t* sel = reinterpret_cast<int32_t*>(ws + z.sel) + bk * z.n;
  __shared__ int32_t chosen[kMaxSelected];
  __shared__ int count;
  if (threadIdx.x == 0) {
    count = 0;
    if (c + 1 <= z.n) {
      for (int64_t j = 0; j <= c; ++j) chosen[count++] = static_cast<int32_t>(j);
    } else {
      for (int64_t j = 0; j < a.nsa.init_blocks && j <= c; ++j) taken[j] = 1, chosen[count++] = static_cast<int32_t>(j);
      for (int64_t j = Max(0, c - a.nsa.local_blocks + 1); j <= c; ++j) {
        if (!taken[j]) taken[j] = 1, chosen[count++] = static_cast<int32_t>(j);
      }
    }
  }
  __syncthreads();
  stamp(6);
  const bool all = c + 1 <= z.n;
  if (!all) {
    // The k-th largest score among the free blocks, 8 bits at a time from the top (scores are
    // >= 0, so their bit patterns order like their values): after four passes prefix = T, the
    // k-th largest.
    const int k = z.n - count;
    __shared__ int hist[256];
    __shared__ uint32_t prefix_sh;
    __shared__ int remaining_sh;
    if (threadIdx.x == 0) prefix_sh = 0, remaining_sh = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
      __syncthreads();
      const uint32_t prefix = prefix_sh;
      const uint32_t high_mask = shift == 24 ? 0u : ~0u << (shift + 8);
      // Scores of nearby blocks share their top bits, so most land in one bin: the lanes of a
      // warp with the same digit add once, through their lowest lane (32 serialised shared-memory
      // atomics on one address a warp otherwise).
      for (int64_t base = 0; base <= c; base += blockDim.x) {
        const int64_t j = base + threadIdx.x;
        int digit = -1;
        if (j <= c) {
          const uint32_t bits = __float_as_uint(score[j]);
          if (!taken[j] && (bits & high_mask) == (prefix & high_mask)) digit = (bits >> shift) & 0xFF;
        }
        const unsigned peers = __match_any_sync(0xffffffff, digit);
        if (digit >= 0 && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], __popc(peers));
      }
      __syncthreads();
      if (warp == 0) {
        // Suffix sums over the 256 bins, 8 a lane (lane 0 holds the top bins 248-255), then the
        // digit where the count from the top first reaches `remaining`.
        const int remaining = remaining_sh;
        int bins[8], local = 0;
        for (int k = 0; k < 8; ++k) bins[k] = hist[255 - (lane * 8 + k)], local += bins[k];
        int before = local;  // inclusive prefix over lanes, from the top
        for (int o = 1; o < 32; o *= 2) {
          const int x = __shfl_up_sync(0xffffffff, before, o);
          if (lane >= o) before += x;
        }
        before -= local;  // count strictly above this lane's bins
        int found = -1, left = 0;
        if (before < remaining && before + local >= remaining) {
          int acc = before;
          for (int k = 0; k < 8; ++k) {
            if (acc + bins[k] >= remaining) {
              found = 255 - (lane * 8 + k);
              left = remaining - acc;
              break;
            }
            acc += bins[k];
          }
        }
        const unsigned who = __ballot_sync(0xffffffff, found >= 0);
        const int src = who ? __ffs(who) - 1 : 0;
        found = __shfl_sync(0xffffffff, found, src);
        left = __shfl_sync(0xffffffff, left, src);
        if (lane == 0) {
          prefix_sh = prefix | (static_cast<uint32_t>(found < 0 ? 0 : found) << shift);
          remaining_sh = found < 0 ? remaining : left;
        }
      }
      __syncthreads();
    }
    stamp(7);
    const uint32_t prefix = prefix_sh;
    // Everything above T, then the lowest indices equal to T until k are taken.
    __shared__ int above;
    if (threadIdx.x == 0) above = 0;
    __syncthreads();
    for (int64_t j = threadIdx.x; j <= c; j += blockDim.x) {
      if (!taken[j] && __float_as_uint(score[j]) > prefix) taken[j] = 2, atomicAdd(&above, 1);
    }
    __syncthreads();
    if (warp == 0) {
      int need = k - above;
      for (int64_t base = 0; base <= c && need > 0; base += 32) {
        const int64_t j = base + lane;
        const bool eq = j <= c && !taken[j] && __float_as_uint(score[j]) == prefix;
        const unsigned mask = __ballot_sync(0xffffffff, eq);
        const int rank = __popc(mask & ((1u << lane) - 1));
        if (eq && rank < need) taken[j] = 2;
        need -= min(need, __popc(mask));
      }
    }
    __syncthreads();
    // Collect in index order (ascending, as the reads want it).
    if (warp == 0) {
      int n_out = 0;
      for (int64_t base = 0; base <= c; base += 32) {
        const int64_t j = base + lane;
        const bool on = j <= c && taken[j];
        const unsigned mask = __ballot_sync(0xffffffff, on);
        if (on) chosen[n_out + __popc(mask & ((1u << lane) - 1))] = static_cast<int32_t>(j);
        n_out += __popc(mask);
      }
      if (lane == 0) count = n_out;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < z.n; i += blockDim.x) {
    sel[i] = i < count ? chosen[i] : -1;
    if (a.selected) a.selected[bk * z.n + i] = sel[i];
  }
}

// Selected or window task: split `split` of unit (b, g) walks a run of selected blocks (split <
// sel_splits) or of window pages, one page (the part of it in range) a tile; the two branches
// never share a split, since each has its own softmax.
template <int kSlices>
__device__ void SegmentTask(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, int split,
                            unsigned char* smem) {
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
  if (first >= last) return EmptyPart(part, G, vhd);

  const RunSmem sm = CarveRun(smem, G, hd, vhd);
  LoadQuery(a, b, g, G, sm.qs);
  const int64_t k_off = a.layout.Offset(plane, a.layer, g, false), v_off = a.layout.Offset(plane, a.layer, g, true);
  auto load = [&](int tile, __nv_bfloat16* ks, __nv_bfloat16* vs) {
    int64_t page_index, lo, hi;
    if (selected) {
      const int32_t blk = __ldcg(&sel[first + tile]);
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
    const __nv_bfloat16* page = a.pages + static_cast<int64_t>(table[page_index]) * a.layout.page_elems;
    // Rows of one page are contiguous: the K (then V) run is one stream of 16-byte reads.
    LoadRows(ks, rows, hd, [&](int r) { return page + k_off + static_cast<int64_t>(r0 + r) * hd; });
    LoadRows(vs, rows, vhd, [&](int r) { return page + v_off + static_cast<int64_t>(r0 + r) * vhd; });
    return rows;
  };
  auto no_score = [](int, int, int, float) {};
  AttendTiles<kSlices>(sm.qs, sm.ks, sm.vs, G, last - first, hd, vhd, a.scale, part, load, no_score);
}

// Merge factors of `count` partials [m, l, ...] `part_stride` floats apart, by one warp:
// M = max m_k, L = sum l_k exp(m_k - M); factors[k] = exp(m_k - M) / L (0 if empty).
__device__ void MergeFactors(const float* parts, int count, int part_stride, float* factors) {
  const int lane = threadIdx.x % 32;
  float m = -FLT_MAX;
  for (int k = lane; k < count; k += 32) {
    if (LoadCg(&parts[k * part_stride + 1]) > 0.f) m = fmaxf(m, LoadCg(&parts[k * part_stride]));
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
  float l = 0.f;
  for (int k = lane; k < count; k += 32) {
    const float lk = LoadCg(&parts[k * part_stride + 1]);
    if (lk > 0.f) l += lk * __expf(LoadCg(&parts[k * part_stride]) - m);
  }
  for (int o = 16; o > 0; o /= 2) l += __shfl_xor_sync(0xffffffff, l, o);
  for (int k = lane; k < count; k += 32) {
    const float* p = parts + k * part_stride;
    const float lk = LoadCg(&p[1]);
    factors[k] = l > 0.f && lk > 0.f ? __expf(LoadCg(&p[0]) - m) / l : 0.f;
  }
}

// Combine of head h of unit (b, g): each branch's partials merged (three warps compute the
// merge factors into `factors`, cmp_splits + sel_splits + win_splits floats of shared memory),
// the gates applied, the output written a channel a thread.
__device__ void CombineHead(const NsaDecodeArgs& a, const Sizes& z, float* ws, int b, int g, int h, float* factors) {
  const int G = z.G, vhd = a.v_head_dim, stride = 2 + vhd, head = g * G + h;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const int nc = z.cmp_splits, ns = z.sel_splits, nw = z.win_splits;
  const float* cmp = ws + z.cmp_part + bk * nc * G * stride + h * stride;  // partial k at + k * G * stride
  const float* seg = ws + z.seg_part + bk * (ns + nw) * G * stride + h * stride;
  const int warp = threadIdx.x / 32;
  if (warp == 0) MergeFactors(cmp, nc, G * stride, factors);
  if (warp == 1) MergeFactors(seg, ns, G * stride, factors + nc);
  if (warp == 2) MergeFactors(seg + ns * G * stride, nw, G * stride, factors + nc + ns);
  __syncthreads();
  const float* gate = a.gates + (static_cast<int64_t>(b) * a.num_heads + head) * 3;
  for (int e = threadIdx.x; e < vhd; e += blockDim.x) {
    float oc = 0.f, os = 0.f, ow = 0.f;
#pragma unroll 8
    for (int k = 0; k < nc; ++k) oc += factors[k] * LoadCg(&cmp[k * G * stride + 2 + e]);
#pragma unroll 8
    for (int k = 0; k < ns; ++k) os += factors[nc + k] * LoadCg(&seg[k * G * stride + 2 + e]);
#pragma unroll 8
    for (int k = ns; k < ns + nw; ++k) ow += factors[nc + k] * LoadCg(&seg[k * G * stride + 2 + e]);
    a.out[(static_cast<int64_t>(b) * a.num_heads + head) * vhd + e] = gate[0] * oc + gate[1] * os + gate[2] * ow;
  }
}

// ---- the fused kernel --------------------------------------------------------------------------
// One launch of min(tasks, resident blocks) blocks that take tasks from a queue in this order:
// every unit's compressed tasks, then every window task, then every selected task. A selected
// task waits for its unit's selection, which the unit's last compressed task runs; every task it
// can wait on was taken from the queue before it, by a block that is running and never waits,
// so the wait ends whatever the grid size and however many blocks are resident.
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
__device__ __forceinline__ void StoreRelease(int* p, int v) {
  asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ int SmId() {
  int id;
  asm volatile("mov.u32 %0, %smid;" : "=r"(id));
  return id;
}

template <int kSlices>
__global__ void __launch_bounds__(kThreads) FusedKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  const Counters cnt = CountersOf(z, ws);
  const int U = z.units, per_unit = z.cmp_splits + z.win_splits + z.sel_splits;
  const int cmp_tasks = U * z.cmp_splits, win_tasks = U * z.win_splits, work_tasks = U * per_unit;
  const int total = work_tasks + U * z.G;  // then a combine task per head
  __shared__ int task_sh;
  for (;;) {
    __syncthreads();  // the previous task is done with shared memory
    if (threadIdx.x == 0) task_sh = atomicAdd(cnt.next_task, 1);
    __syncthreads();
    const int task = task_sh;
    if (task >= total) break;
    int64_t* trace = a.trace ? a.trace + 8 * static_cast<int64_t>(task) : nullptr;
    if (trace && threadIdx.x == 0) trace[0] = GlobalTimer(), trace[2] = 0, trace[3] = SmId();
    if (task >= work_tasks) {  // combine: once every task of the unit is done
      const int k = task - work_tasks, unit = k / z.G;
      WaitAtLeast(&cnt.done[unit], per_unit);
      CombineHead(a, z, ws, unit / a.num_kv_heads, unit % a.num_kv_heads, k % z.G, reinterpret_cast<float*>(smem));
      if (trace && threadIdx.x == 0) trace[1] = GlobalTimer();
      continue;
    }
    int unit, split;
    if (task < cmp_tasks) {
      unit = task / z.cmp_splits;
      const int b = unit / a.num_kv_heads, g = unit % a.num_kv_heads;
      CompressedTask<kSlices>(a, z, ws, b, g, task % z.cmp_splits, smem);
      if (trace && threadIdx.x == 0) trace[1] = GlobalTimer();
      if (ArriveLast(&cnt.cmp_done[unit], z.cmp_splits)) {
        SelectUnit(a, z, ws, b, g, smem, trace);
        __syncthreads();
        if (threadIdx.x == 0) {
          __threadfence();
          StoreRelease(&cnt.ready[unit], 1);
          if (trace) trace[2] = GlobalTimer();
        }
      }
    } else {
      if (task < cmp_tasks + win_tasks) {
        const int k = task - cmp_tasks;
        unit = k / z.win_splits, split = z.sel_splits + k % z.win_splits;
      } else {
        const int k = task - cmp_tasks - win_tasks;
        unit = k / z.sel_splits, split = k % z.sel_splits;
        WaitAtLeast(&cnt.ready[unit], 1);
      }
      SegmentTask<kSlices>(a, z, ws, unit / a.num_kv_heads, unit % a.num_kv_heads, split, smem);
      if (trace && threadIdx.x == 0) trace[1] = GlobalTimer();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(&cnt.done[unit], 1);
    }
  }
}

// ---- the staged kernels (NsaDecodeArgs::staged): the same tasks, one launch per pass ------------
template <int kSlices>
__global__ void __launch_bounds__(kThreads) CompressedKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  CompressedTask<kSlices>(a, z, ws, blockIdx.z, blockIdx.y, blockIdx.x, smem);
}
__global__ void __launch_bounds__(kThreads) SelectKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  SelectUnit(a, z, ws, blockIdx.y, blockIdx.x, smem);
}
template <int kSlices>
__global__ void __launch_bounds__(kThreads) SegmentKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  SegmentTask<kSlices>(a, z, ws, blockIdx.z, blockIdx.y, blockIdx.x, smem);
}
__global__ void __launch_bounds__(kThreads) CombineKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  CombineHead(a, z, ws, blockIdx.y, blockIdx.x / z.G, blockIdx.x % z.G, reinterpret_cast<float*>(smem));
}

// The launches for kernels built for kSlices 16-head slices of the group (the checks are done).
template <int kSlices>
cudaError_t LaunchSlices(const NsaDecodeArgs& a, const Sizes& z, cudaStream_t stream) {
  float* ws = static_cast<float*>(a.workspace);
  const int lp = a.nsa.select_block;
  const size_t run_smem = TileSmemBytes(z.G, a.head_dim, a.v_head_dim);
  const size_t sel_smem = (a.max_context / lp + 1 + 16) * (sizeof(float) + 1) + 64 + z.nstride * sizeof(float);
  const size_t combine_smem = static_cast<size_t>(z.cmp_splits + z.sel_splits + z.win_splits) * sizeof(float);
  // Opt in to large shared memory once per process (the attribute is per kernel, not per launch).
  static const cudaError_t opt_in = [] {
    int max_smem = 0;
    cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    max_smem -= 8 << 10;  // leave room for the kernels' static shared memory
    cudaError_t e = cudaSuccess;
    for (const void* k : {reinterpret_cast<const void*>(FusedKernel<kSlices>), reinterpret_cast<const void*>(CompressedKernel<kSlices>),
                          reinterpret_cast<const void*>(SegmentKernel<kSlices>), reinterpret_cast<const void*>(SelectKernel),
                          reinterpret_cast<const void*>(CombineKernel)}) {
      if (e == cudaSuccess) e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    }
    return e;
  }();
  if (opt_in != cudaSuccess) return opt_in;
  if (!a.staged) {
    const size_t smem = std::max({run_smem, sel_smem, combine_smem});
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
      cudaFuncGetAttributes(&fa, FusedKernel<kSlices>);
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
    const int64_t tasks = static_cast<int64_t>(z.units) * (z.cmp_splits + z.sel_splits + z.win_splits + z.G);
    const int blocks = static_cast<int>(std::min<int64_t>(tasks, static_cast<int64_t>(per_sm) * NumSms()));
    const cudaError_t e = cudaMemsetAsync(ws + z.counters, 0, z.counter_bytes, stream);
    if (e != cudaSuccess) return e;
    FusedKernel<kSlices><<<blocks, kThreads, smem, stream>>>(a, z, ws);
    return cudaGetLastError();
  }
  CompressedKernel<kSlices><<<dim3(z.cmp_splits, a.num_kv_heads, a.batch), kThreads, run_smem, stream>>>(a, z, ws);
  SelectKernel<<<dim3(a.num_kv_heads, a.batch), kThreads, sel_smem, stream>>>(a, z, ws);
  SegmentKernel<kSlices><<<dim3(z.sel_splits + z.win_splits, a.num_kv_heads, a.batch), kThreads, run_smem, stream>>>(a, z, ws);
  CombineKernel<<<dim3(a.num_heads, a.batch), kThreads, combine_smem, stream>>>(a, z, ws);
  return cudaGetLastError();
}

}  // namespace

size_t NsaDecodeWorkspaceBytes(const NsaDecodeArgs& args) { return SizesOf(args).total_bytes; }

NsaDecodeTasks NsaDecodeTaskCounts(const NsaDecodeArgs& args) {
  const Sizes z = SizesOf(args);
  return {z.units * z.cmp_splits, z.units * z.win_splits, z.units * z.sel_splits, z.units * z.G};
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
  // One page is one tile: pages longer than kTileRows tokens would need a loop the kernel lacks.
  if (a.nsa.select_block > kTileRows) return cudaErrorInvalidValue;
  switch ((z.G + 15) / 16) {
    case 1:
      return LaunchSlices<1>(a, z, stream);
    case 2:
      return LaunchSlices<2>(a, z, stream);
    default:
      return LaunchSlices<4>(a, z, stream);
  }
}

}  // namespace nsa::cuda
