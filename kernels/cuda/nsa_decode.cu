#include "kernels/cuda/nsa_decode.h"

#include <algorithm>
#include <cfloat>

#include <cuda_pipeline.h>

namespace nsa::cuda {
namespace {

__device__ __forceinline__ int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;  // each warp takes 16 rows of a tile; the block merges them into one partial
constexpr int kCmpRows = 64;  // summaries per block in the compressed pass (one tile)
constexpr int kMaxG = 64;
constexpr int kMaxSelected = 64;
constexpr int kMaxBlocks = 16384;  // selection blocks: contexts up to 1M tokens at l' = 64

struct Sizes {
  int G, n, window_pages, cmp_chunks;
  // Splits: the blocks a (sequence, KV head) gets for each pass, and the tiles each walks.
  int cmp_splits, cmp_per_split, sel_splits, sel_per_split, win_splits, win_per_split;
  int64_t nmax;
  size_t scores, cmp_part, sel, seg_part;  // float/int offsets into the workspace
  size_t total_bytes;
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
  s.cmp_chunks = static_cast<int>(std::max<int64_t>(1, (s.nmax + kCmpRows - 1) / kCmpRows));
  const int units = a.batch * a.num_kv_heads, sms = NumSms();
  Split(s.cmp_chunks, units, sms, &s.cmp_splits, &s.cmp_per_split);
  Split(s.n, units, sms, &s.sel_splits, &s.sel_per_split);
  Split(s.window_pages, units, sms, &s.win_splits, &s.win_per_split);
  const size_t bk = static_cast<size_t>(a.batch) * a.num_kv_heads;
  const size_t part = static_cast<size_t>(s.G) * (2 + a.v_head_dim);  // one partial per split
  s.scores = 0;
  s.cmp_part = s.scores + bk * s.G * std::max<int64_t>(s.nmax, 1);
  s.sel = s.cmp_part + bk * s.cmp_splits * part;
  s.seg_part = s.sel + bk * s.n;
  s.total_bytes = (s.seg_part + bk * (s.sel_splits + s.win_splits) * part) * sizeof(float);
  return s;
}

// Copies `rows` rows of `dim` bf16 from `row_ptr(r)` into shared memory with asynchronous
// 16-byte copies spread over the whole block: every load is in flight at once, so a tile costs
// one memory latency, not one per row. The caller waits with __pipeline_wait_prior(0) and a
// __syncthreads.
template <typename RowPtr>
__device__ void LoadRows(__nv_bfloat16* dst, int rows, int dim, RowPtr row_ptr) {
  const int vectors = dim / 8;  // 8 bf16 = 16 bytes
  for (int idx = threadIdx.x; idx < rows * vectors; idx += blockDim.x) {
    const int r = idx / vectors, v = idx % vectors;
    __pipeline_memcpy_async(dst + r * dim + v * 8, row_ptr(r) + v * 8, 16);
  }
  __pipeline_commit();
}

// ---- tensor-core tile attention ------------------------------------------------------------
//
// A block walks a run of tiles (up to 64 rows each: summaries, or one page of tokens) with K and
// V in shared memory and the group's queries padded to Gp = 16 * ceil(G / 16) heads. Each of the
// 4 warps takes 16 rows of every tile and every 16-head slice of the group: S = Q K^T and
// O = P V on mma.sync m16n8k16 (bf16 in, fp32 accumulate), the softmax online across the run
// (FlashAttention-2: S fragments reused as P, running max and sum in registers, the output
// rescaled in shared memory). Each warp writes one partial [m, l, o[v_dim]] per head at the end,
// so the partials a run leaves behind shrink with its length (flash-decoding's split-K).
//
// Fragment layout (PTX ISA, m16n8k16): lane = 4 g + t. A: rows g and g + 8, columns 2t, 2t + 1
// and 2t + 8, 2t + 9; B: k = 2t, 2t + 1 and 2t + 8, 2t + 9, column g; C: rows g and g + 8,
// columns 2t and 2t + 1.
constexpr int kTileRows = 64;

__device__ __forceinline__ void Mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t Load32(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ uint32_t Pair(const __nv_bfloat16* lo, const __nv_bfloat16* hi) {
  __nv_bfloat162 v;
  v.x = *lo;
  v.y = *hi;
  return *reinterpret_cast<uint32_t*>(&v);
}

// q of the group into shared memory as bf16 [Gp][hd], heads beyond G zeroed: the G rows are
// contiguous in memory, copied asynchronously 16 bytes at a time with the K and V tiles.
__device__ void LoadQuery(const NsaDecodeArgs& a, int b, int g, int G, __nv_bfloat16* qs) {
  const __nv_bfloat16* q = a.q + (static_cast<int64_t>(b) * a.num_heads + g * G) * a.head_dim;
  const int gp = (G + 15) / 16 * 16, n = G * a.head_dim;
  for (int i = threadIdx.x * 8; i < n; i += blockDim.x * 8) __pipeline_memcpy_async(qs + i, q + i, 16);
  __pipeline_commit();
  for (int i = n + threadIdx.x; i < gp * a.head_dim; i += blockDim.x) qs[i] = __float2bfloat16(0.f);
}

// Shared memory of a run: K and V (kTileRows rows), q (Gp heads), and the warps' running
// outputs [kWarps][Gp][vhd] floats.
inline size_t TileSmemBytes(int G, int hd, int vhd) {
  const int gp = (G + 15) / 16 * 16;
  return static_cast<size_t>(kTileRows) * (hd + vhd) * 2 + static_cast<size_t>(gp) * hd * 2 +
         static_cast<size_t>(kWarps) * gp * vhd * 4;
}

// Rows [rows, kTileRows) of a tile are zeroed: their P is 0, and 0 times garbage could be NaN.
__device__ void ZeroRows(__nv_bfloat16* tile, int rows, int dim) {
  for (int i = rows * dim + threadIdx.x; i < kTileRows * dim; i += blockDim.x) tile[i] = __float2bfloat16(0.f);
}

// Walks `num_tiles` tiles. load(tile, ks, vs) issues the tile's asynchronous copies (all
// threads) and returns its row count (0: nothing to do); score(tile, head, row, value) receives
// every raw scaled score when the caller wants them. Writes the block's partial per head to
// part[G][2 + vhd] (its warps merged); a block that saw no row writes m = -FLT_MAX, l = 0, o = 0.
template <typename Load, typename Score>
__device__ void AttendTiles(__nv_bfloat16* qs, __nv_bfloat16* ks, __nv_bfloat16* vs, float* wo, int G, int num_tiles,
                            int hd, int vhd, float scale, float* part, Load load, Score score) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int gp = (G + 15) / 16 * 16, slices = gp / 16;
  const int r0 = warp * 16;  // this warp's rows of every tile
  float* o_run = wo + static_cast<size_t>(warp) * gp * vhd;  // [Gp][vhd]
  for (int i = lane; i < gp * vhd; i += 32) o_run[i] = 0.f;
  float m_run[kMaxG / 16][2], l_run[kMaxG / 16][2];
  for (int mt = 0; mt < kMaxG / 16; ++mt) m_run[mt][0] = m_run[mt][1] = -FLT_MAX, l_run[mt][0] = l_run[mt][1] = 0.f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int rows = load(tile, ks, vs);
    if (rows > 0) {
      ZeroRows(ks, rows, hd);
      ZeroRows(vs, rows, vhd);
    }
    __pipeline_wait_prior(0);
    __syncthreads();
    if (rows > r0) {  // this warp has rows in this tile
      for (int mt = 0; mt < slices; ++mt) {
        const __nv_bfloat16* q = qs + static_cast<size_t>(mt) * 16 * hd;
        float sacc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
        for (int kk = 0; kk < hd; kk += 16) {
          const uint32_t a0 = Load32(q + g * hd + kk + 2 * t), a1 = Load32(q + (g + 8) * hd + kk + 2 * t);
          const uint32_t a2 = Load32(q + g * hd + kk + 2 * t + 8), a3 = Load32(q + (g + 8) * hd + kk + 2 * t + 8);
          for (int j = 0; j < 2; ++j) {
            const __nv_bfloat16* k = ks + (r0 + 8 * j + g) * hd + kk + 2 * t;
            Mma(sacc[j], a0, a1, a2, a3, Load32(k), Load32(k + 8));
          }
        }
        float mx[2] = {m_run[mt][0], m_run[mt][1]};
        for (int j = 0; j < 2; ++j) {
          for (int c = 0; c < 4; ++c) {
            const int row = r0 + 8 * j + 2 * t + (c & 1);
            const int head = mt * 16 + g + (c >= 2 ? 8 : 0);
            const float v = sacc[j][c] * scale;
            if (row < rows && head < G) score(tile, head, row, v);
            sacc[j][c] = v;
            if (row < rows) mx[c >= 2] = fmaxf(mx[c >= 2], v);
          }
        }
        for (int i = 0; i < 2; ++i) {
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
        }
        const float corr[2] = {__expf(m_run[mt][0] - mx[0]), __expf(m_run[mt][1] - mx[1])};
        float sum[2] = {0.f, 0.f};
        for (int j = 0; j < 2; ++j) {
          for (int c = 0; c < 4; ++c) {
            const int row = r0 + 8 * j + 2 * t + (c & 1);
            const float p = row < rows ? __expf(sacc[j][c] - mx[c >= 2]) : 0.f;
            sacc[j][c] = p;
            sum[c >= 2] += p;
          }
        }
        for (int i = 0; i < 2; ++i) {
          sum[i] += __shfl_xor_sync(0xffffffff, sum[i], 1);
          sum[i] += __shfl_xor_sync(0xffffffff, sum[i], 2);
          l_run[mt][i] = l_run[mt][i] * corr[i] + sum[i];
          m_run[mt][i] = mx[i];
        }
        const uint32_t p0 = Pack(sacc[0][0], sacc[0][1]), p1 = Pack(sacc[0][2], sacc[0][3]);
        const uint32_t p2 = Pack(sacc[1][0], sacc[1][1]), p3 = Pack(sacc[1][2], sacc[1][3]);
        float* og = o_run + static_cast<size_t>(mt * 16 + g) * vhd;
        float* og8 = og + 8 * vhd;
        for (int nt = 0; nt < vhd; nt += 8) {
          const __nv_bfloat16* v = vs + (r0 + 2 * t) * vhd + nt + g;
          float o[4] = {0, 0, 0, 0};
          Mma(o, p0, p1, p2, p3, Pair(v, v + vhd), Pair(v + 8 * vhd, v + 9 * vhd));
          float2* a = reinterpret_cast<float2*>(og + nt + 2 * t);
          float2* b = reinterpret_cast<float2*>(og8 + nt + 2 * t);
          const float2 x = *a, y = *b;
          *a = make_float2(x.x * corr[0] + o[0], x.y * corr[0] + o[1]);
          *b = make_float2(y.x * corr[1] + o[2], y.y * corr[1] + o[3]);
        }
      }
    }
    __syncthreads();  // the next tile's copies overwrite ks and vs
  }
  // The block's partial, merged over its warps here (not by the readers): m and l of every
  // warp's heads from lanes t == 0 (rows g, g + 8 of each slice), then per (head, channel) the
  // warps' outputs rescaled to the common maximum. Warps that saw no row (l = 0) drop out.
  __shared__ float warp_ml[kWarps][kMaxG][2];
  for (int mt = 0; mt < slices; ++mt) {
    if (t == 0) {
      const int h0 = mt * 16 + g, h1 = h0 + 8;
      if (h0 < G) warp_ml[warp][h0][0] = m_run[mt][0], warp_ml[warp][h0][1] = l_run[mt][0];
      if (h1 < G) warp_ml[warp][h1][0] = m_run[mt][1], warp_ml[warp][h1][1] = l_run[mt][1];
    }
  }
  __syncthreads();
  const int wstride = 2 + vhd;
  for (int i = threadIdx.x; i < G * vhd; i += blockDim.x) {
    const int h = i / vhd, e = i % vhd;
    float m = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) {
      if (warp_ml[w][h][1] > 0.f) m = fmaxf(m, warp_ml[w][h][0]);
    }
    float l = 0.f, o = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      if (warp_ml[w][h][1] > 0.f) {
        const float f = __expf(warp_ml[w][h][0] - m);
        l += warp_ml[w][h][1] * f;
        o += wo[(static_cast<size_t>(w) * gp + h) * vhd + e] * f;
      }
    }
    part[h * wstride + 2 + e] = o;
    if (e == 0) part[h * wstride] = l > 0.f ? m : -FLT_MAX, part[h * wstride + 1] = l;
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
  float* wo;
};
__device__ RunSmem CarveRun(unsigned char* smem, int G, int hd, int vhd) {
  RunSmem r;
  r.ks = reinterpret_cast<__nv_bfloat16*>(smem);
  r.vs = r.ks + kTileRows * hd;
  r.qs = r.vs + kTileRows * vhd;
  r.wo = reinterpret_cast<float*>(r.qs + (G + 15) / 16 * 16 * hd);
  return r;
}

// ---- 1: compressed attention partials --------------------------------------------------------
// grid (cmp_splits, kv_heads, batch): split s walks chunks [s * per, (s + 1) * per) of 64
// summaries. Summary i is row i + shift of the raw pages' summary tables (E rows a page).
__global__ void CompressedKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z, G = z.G, hd = a.head_dim, vhd = a.v_head_dim;
  const int64_t t = a.positions[b];
  const int64_t N = a.nsa.NumCompressed(t + 1);
  const int chunks = static_cast<int>((N + kCmpRows - 1) / kCmpRows);
  const int first = split * z.cmp_per_split, last = min(chunks, first + z.cmp_per_split);
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  float* part = ws + z.cmp_part + (bk * z.cmp_splits + split) * G * (2 + vhd);
  if (first >= last) return EmptyPart(part, G, vhd);

  extern __shared__ __align__(16) unsigned char smem[];
  const RunSmem sm = CarveRun(smem, G, hd, vhd);
  LoadQuery(a, b, g, G, sm.qs);
  const int64_t table_row = a.table_rows ? a.table_rows[b] : b;
  const int32_t* table = a.raw_tables + table_row * a.max_pages;
  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(KvPlane::kCmp, a.layer, g, false), v_off = L.Offset(KvPlane::kCmp, a.layer, g, true);
  __shared__ int64_t row_page[kTileRows];
  __shared__ int row_slot[kTileRows];
  float* scores = ws + z.scores + bk * G * z.nmax;
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
    scores[head * z.nmax + static_cast<int64_t>(first + tile) * kCmpRows + row] = v;
  };
  AttendTiles(sm.qs, sm.ks, sm.vs, sm.wo, G, last - first, hd, vhd, a.scale, part, load, score);
}

// ---- 2: merge the compressed branch, score the blocks, choose top-n ---------------------------
// grid (kv_heads, batch).
__global__ void SelectKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  const int g = blockIdx.x, b = blockIdx.y, G = z.G, vhd = a.v_head_dim;
  const int64_t t = a.positions[b];
  const int64_t N = a.nsa.NumCompressed(t + 1);
  const int64_t c = t / a.nsa.select_block;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const float* part = ws + z.cmp_part + bk * z.cmp_splits * G * (2 + vhd);
  const int chunks = z.cmp_splits;  // split partials (empty ones have l = 0)
  __shared__ float lse[kMaxG];
  extern __shared__ __align__(16) unsigned char smem[];
  float* score = reinterpret_cast<float*>(smem);
  unsigned char* taken = reinterpret_cast<unsigned char*>(score + c + 1);

  // Merge the chunks' partials: one warp a head.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const int stride = 2 + vhd;
  for (int h = warp; h < G; h += warps) {
    float m = -FLT_MAX;
    for (int k = lane; k < chunks; k += 32) {
      if (part[(k * G + h) * stride + 1] > 0.f) m = fmaxf(m, part[(k * G + h) * stride]);
    }
    for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    float l = 0.f;
    for (int k = lane; k < chunks; k += 32) {
      const float lk = part[(k * G + h) * stride + 1];
      if (lk > 0.f) l += lk * __expf(part[(k * G + h) * stride] - m);
    }
    for (int o = 16; o > 0; o /= 2) l += __shfl_xor_sync(0xffffffff, l, o);
    if (lane == 0) lse[h] = l > 0.f ? m + __logf(l) : -FLT_MAX;
  }
  __syncthreads();

  // Block scores. First each summary's probability summed over the group, every (head, entry)
  // pair loaded independently and added up in shared memory, then the blocks' weighted sums.
  const float* s = ws + z.scores + bk * G * z.nmax;
  float* P = reinterpret_cast<float*>(taken + ((c + 1 + 15) / 16) * 16);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) P[i] = 0.f;
  __syncthreads();
  const int n32 = static_cast<int>(N);
#pragma unroll 4
  for (int idx = threadIdx.x; idx < G * n32; idx += blockDim.x) {
    const int h = idx / n32, i = idx % n32;
    atomicAdd(&P[i], __expf(s[h * z.nmax + i] - lse[h]));
  }
  __syncthreads();
  const int cpc = a.nsa.compress_block / a.nsa.compress_stride, cps = a.nsa.select_block / a.nsa.compress_stride;
  for (int64_t j = threadIdx.x; j <= c; j += blockDim.x) {
    float acc = 0.f;
    const int64_t lo = Max(0, j * cps - cpc + 1), hi = Min(N - 1, (j + 1) * cps - 1);
    for (int64_t i = lo; i <= hi; ++i) acc += a.nsa.GeometricWeight(i, j) * P[i];
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
      for (int64_t j = threadIdx.x; j <= c; j += blockDim.x) {
        const uint32_t bits = __float_as_uint(score[j]);
        if (!taken[j] && (bits & high_mask) == (prefix & high_mask)) atomicAdd(&hist[(bits >> shift) & 0xFF], 1);
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
  if (threadIdx.x == 0) {
    for (int i = 0; i < z.n; ++i) {
      sel[i] = i < count ? chosen[i] : -1;
      if (a.selected) a.selected[bk * z.n + i] = sel[i];
    }
  }
}

// ---- 3: selected blocks and window pages -------------------------------------------------------
// grid (sel_splits + win_splits, kv_heads, batch): a split walks a run of selected blocks, or a
// run of window pages, one page (the part of it in range) a tile; the two branches never share a
// split, since each has its own softmax.
__global__ void SegmentKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z, G = z.G, hd = a.head_dim, vhd = a.v_head_dim;
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

  extern __shared__ __align__(16) unsigned char smem[];
  const RunSmem sm = CarveRun(smem, G, hd, vhd);
  LoadQuery(a, b, g, G, sm.qs);
  const int64_t k_off = a.layout.Offset(plane, a.layer, g, false), v_off = a.layout.Offset(plane, a.layer, g, true);
  auto load = [&](int tile, __nv_bfloat16* ks, __nv_bfloat16* vs) {
    int64_t page_index, lo, hi;
    if (selected) {
      const int32_t blk = sel[first + tile];
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
  AttendTiles(sm.qs, sm.ks, sm.vs, sm.wo, G, last - first, hd, vhd, a.scale, part, load, no_score);
}

// ---- 4: merge per branch and gate --------------------------------------------------------------
// grid (num_heads, batch), v_head_dim threads or more. The merge factors exp(m_k - M) / L of every
// partial are computed once, then each thread sums its output channel over the partials.
__device__ void MergeFactors(const float* parts, int count, int part_stride, float* factors) {
  // One warp: M = max m_k, L = sum l_k exp(m_k - M); factors[k] = exp(m_k - M) / L (0 if empty).
  const int lane = threadIdx.x % 32;
  float m = -FLT_MAX;
  for (int k = lane; k < count; k += 32) {
    if (parts[k * part_stride + 1] > 0.f) m = fmaxf(m, parts[k * part_stride]);
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
  float l = 0.f;
  for (int k = lane; k < count; k += 32) {
    if (parts[k * part_stride + 1] > 0.f) l += parts[k * part_stride + 1] * __expf(parts[k * part_stride] - m);
  }
  for (int o = 16; o > 0; o /= 2) l += __shfl_xor_sync(0xffffffff, l, o);
  for (int k = lane; k < count; k += 32) {
    const float* p = parts + k * part_stride;
    factors[k] = l > 0.f && p[1] > 0.f ? __expf(p[0] - m) / l : 0.f;
  }
}

__global__ void CombineKernel(NsaDecodeArgs a, Sizes z, float* ws) {
  const int head = blockIdx.x, b = blockIdx.y, G = z.G, vhd = a.v_head_dim, stride = 2 + vhd;
  const int g = head / G, h = head % G;
  const size_t bk = static_cast<size_t>(b) * a.num_kv_heads + g;
  const int nc = z.cmp_splits, ns = z.sel_splits, nw = z.win_splits;  // one partial per split
  const float* cmp = ws + z.cmp_part + bk * nc * G * stride + h * stride;  // partial k at + k * G * stride
  const float* seg = ws + z.seg_part + bk * (ns + nw) * G * stride + h * stride;
  extern __shared__ float factors[];  // [nc + ns + nw]
  float* fc = factors;
  float* fs = factors + nc;
  const int warp = threadIdx.x / 32;
  if (warp == 0) MergeFactors(cmp, nc, G * stride, fc);
  if (warp == 1) MergeFactors(seg, ns, G * stride, fs);
  if (warp == 2) MergeFactors(seg + ns * G * stride, nw, G * stride, fs + ns);
  __syncthreads();
  const float* gate = a.gates + (static_cast<int64_t>(b) * a.num_heads + head) * 3;
  for (int e = threadIdx.x; e < vhd; e += blockDim.x) {
    float oc = 0.f, os = 0.f, ow = 0.f;
#pragma unroll 8
    for (int k = 0; k < nc; ++k) oc += fc[k] * cmp[k * G * stride + 2 + e];
#pragma unroll 8
    for (int k = 0; k < ns; ++k) os += fs[k] * seg[k * G * stride + 2 + e];
#pragma unroll 8
    for (int k = ns; k < ns + nw; ++k) ow += fs[k] * seg[k * G * stride + 2 + e];
    a.out[(static_cast<int64_t>(b) * a.num_heads + head) * vhd + e] = gate[0] * oc + gate[1] * os + gate[2] * ow;
  }
}

}  // namespace

size_t NsaDecodeWorkspaceBytes(const NsaDecodeArgs& args) { return SizesOf(args).total_bytes; }

cudaError_t LaunchNsaDecode(const NsaDecodeArgs& a, cudaStream_t stream) {
  if (a.num_kv_heads <= 0 || a.num_heads % a.num_kv_heads != 0) return cudaErrorInvalidValue;
  const Sizes z = SizesOf(a);
  if (z.G > kMaxG || z.n > kMaxSelected || z.n < 1) return cudaErrorInvalidValue;
  // Tiles step through key dims 16 at a time (mma k) and value dims 16 at a time; rows are
  // copied 16 bytes at a time. Shared memory bounds the largest dims.
  if (a.head_dim % 16 != 0 || a.head_dim < 16 || a.head_dim > 192) return cudaErrorInvalidValue;
  if (a.v_head_dim % 16 != 0 || a.v_head_dim < 16 || a.v_head_dim > 128) return cudaErrorInvalidValue;
  if (a.max_context / a.nsa.select_block + 1 > kMaxBlocks || a.batch < 1) return cudaErrorInvalidValue;
  // One page is one tile: pages longer than kTileRows tokens would need a loop the kernel lacks.
  if (a.nsa.select_block > kTileRows) return cudaErrorInvalidValue;
  float* ws = static_cast<float*>(a.workspace);
  const int lp = a.nsa.select_block;
  const size_t run_smem = TileSmemBytes(z.G, a.head_dim, a.v_head_dim);
  const size_t sel_smem = (a.max_context / lp + 1 + 16) * (sizeof(float) + 1) + 64 + std::max<int64_t>(z.nmax, 1) * sizeof(float);
  // Opt in to large shared memory once per process (the attribute is per kernel, not per launch).
  static const cudaError_t opt_in = [] {
    int max_smem = 0;
    cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    max_smem -= 8 << 10;  // leave room for the kernels' static shared memory
    cudaError_t e = cudaFuncSetAttribute(CompressedKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(SegmentKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(SelectKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(CombineKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    return e;
  }();
  if (opt_in != cudaSuccess) return opt_in;
  cudaEvent_t* ev = a.timing_events;
  if (ev) cudaEventRecord(ev[0], stream);
  CompressedKernel<<<dim3(z.cmp_splits, a.num_kv_heads, a.batch), kThreads, run_smem, stream>>>(a, z, ws);
  if (ev) cudaEventRecord(ev[1], stream);
  SelectKernel<<<dim3(a.num_kv_heads, a.batch), 512, sel_smem, stream>>>(a, z, ws);
  if (ev) cudaEventRecord(ev[2], stream);
  SegmentKernel<<<dim3(z.sel_splits + z.win_splits, a.num_kv_heads, a.batch), kThreads, run_smem, stream>>>(a, z, ws);
  if (ev) cudaEventRecord(ev[3], stream);
  const size_t combine_smem = (z.cmp_splits + z.sel_splits + z.win_splits) * sizeof(float);
  CombineKernel<<<dim3(a.num_heads, a.batch), 128, combine_smem, stream>>>(a, z, ws);
  if (ev) cudaEventRecord(ev[4], stream);
  return cudaGetLastError();
}

}  // namespace nsa::cuda
