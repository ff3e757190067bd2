#include "kernels/cuda/nsa_prefill.h"

#include <cfloat>
#include <cmath>

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

constexpr int kThreads = 128;  // 4 warps, 16 query rows each
constexpr int kQueryRows = 64;  // query rows a block
constexpr int kMaxColTiles = 16;  // 8-column tiles of the output: v_dim <= 128, all of them a warp

// A warp's 16 query rows (fragment rows g and g + 8 of each lane) walking K/V tiles of 64 keys,
// FlashAttention-2 style: S = Q K^T on mma.sync, the online softmax with each row's own mask,
// P (rounded to bf16) times V over all of V's columns, the output kept in registers.
struct WarpRows {
  float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0.f, 0.f};
  float o[kMaxColTiles][4] = {};

  // One tile: q the warp's 16 rows ([16][hd + kPad]), ks and vs the tile ([64][dim + kPad]),
  // i0 the first key's index; visible(half, i) says whether row g + 8 half sees key i.
  template <typename Visible>
  __device__ __forceinline__ void Step(const __nv_bfloat16* q, const __nv_bfloat16* ks, const __nv_bfloat16* vs, int hd,
                                       int vhd, float scale, int64_t i0, Visible visible) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int qstride = hd + kPad, vstride = vhd + kPad, col_tiles = vhd / 8;
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
    // s[j][c]: row g (+ 8 for c >= 2), key i0 + 8 j + 2 t + (c & 1).
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < kRowTiles; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float v = s[j][c] * scale;
        s[j][c] = v;
        if (visible(c >= 2, i0 + 8 * j + 2 * t + (c & 1))) mx[c >= 2] = fmaxf(mx[c >= 2], v);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
    }
    const float corr[2] = {__expf(m[0] - mx[0]), __expf(m[1] - mx[1])};
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kRowTiles; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float p = visible(c >= 2, i0 + 8 * j + 2 * t + (c & 1)) ? __expf(s[j][c] - mx[c >= 2]) : 0.f;
        s[j][c] = p;
        sum[c >= 2] += p;
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      sum[h] += __shfl_xor_sync(0xffffffff, sum[h], 1);
      sum[h] += __shfl_xor_sync(0xffffffff, sum[h], 2);
      l[h] = l[h] * corr[h] + sum[h];
      m[h] = mx[h];
    }
#pragma unroll
    for (int nt = 0; nt < kMaxColTiles; ++nt) {
      o[nt][0] *= corr[0], o[nt][1] *= corr[0], o[nt][2] *= corr[1], o[nt][3] *= corr[1];
    }
#pragma unroll
    for (int ks16 = 0; ks16 < kRowTiles / 2; ++ks16) {
      const uint32_t p0 = Pack(s[2 * ks16][0], s[2 * ks16][1]), p1 = Pack(s[2 * ks16][2], s[2 * ks16][3]);
      const uint32_t p2 = Pack(s[2 * ks16 + 1][0], s[2 * ks16 + 1][1]), p3 = Pack(s[2 * ks16 + 1][2], s[2 * ks16 + 1][3]);
#pragma unroll
      for (int nt = 0; nt < kMaxColTiles; ++nt) {
        if (nt >= col_tiles) break;
        const __nv_bfloat16* v = vs + (16 * ks16 + 2 * t) * vstride + 8 * nt + g;
        Mma(o[nt], p0, p1, p2, p3, Pair(v, v + vstride), Pair(v + 8 * vstride, v + 9 * vstride));
      }
    }
  }

  // Row g + 8 half's output, normalised, into out[vhd] (this lane's columns); returns its
  // log-sum-exp (-inf when the row saw no key).
  __device__ __forceinline__ float Write(int half, float* out, int vhd) const {
    const int t = threadIdx.x % 4, col_tiles = vhd / 8;
    const float inv = l[half] > 0.f ? 1.f / l[half] : 0.f;
#pragma unroll
    for (int nt = 0; nt < kMaxColTiles; ++nt) {
      if (nt >= col_tiles) break;
      *reinterpret_cast<float2*>(out + 8 * nt + 2 * t) = make_float2(o[nt][2 * half] * inv, o[nt][2 * half + 1] * inv);
    }
    return l[half] > 0.f ? m[half] + __logf(l[half]) : -INFINITY;
  }
};

// Keys of a branch, by index: the range a position may see, [Lo(t), Hi(t)), both nondecreasing in
// t, and where key i's row lives: Locate(i, &page_elem_offset, &slot) (the plane is the caller's).
struct CompressedKeys {  // summary i is visible at t when i < NumCompressed(t + 1)
  const NsaPrefillArgs& a;
  __device__ int64_t Lo(int64_t) const { return 0; }
  __device__ int64_t Hi(int64_t t) const { return a.nsa.NumCompressed(t + 1); }
  __device__ void Locate(int64_t i, int64_t* page, int* slot) const {
    const int64_t vr = i + a.layout.summary_row_shift;  // rows of the raw pages' summary planes
    *page = static_cast<int64_t>(a.raw_table[vr / a.layout.summaries_per_page]) * a.layout.page_elems;
    *slot = static_cast<int>(vr % a.layout.summaries_per_page);
  }
};
struct WindowKeys {  // tokens max(0, t - w + 1) .. t, in the window pages (per-branch) or the raw ones
  const NsaPrefillArgs& a;
  const int32_t* table;
  __device__ int64_t Lo(int64_t t) const { return t - a.nsa.window + 1 > 0 ? t - a.nsa.window + 1 : 0; }
  __device__ int64_t Hi(int64_t t) const { return t + 1; }
  __device__ void Locate(int64_t i, int64_t* page, int* slot) const {
    *page = static_cast<int64_t>(table[i / a.layout.page_tokens]) * a.layout.page_elems;
    *slot = static_cast<int>(i % a.layout.page_tokens);
  }
};

// One branch for the block's 64 query rows: grid (ceil(num_queries * G / 64), num_kv_heads). Row R
// of a block's 64 is query R / G, head R % G of KV head blockIdx.y; rows past the chunk are
// computed on zeros and not written. The block walks the keys its rows see, 64 a tile; each row
// masks the keys outside its own range.
template <typename Keys>
__device__ void PrefillBranch(const NsaPrefillArgs& a, const Keys& keys, KvPlane plane, float* out_all, float* lse_all) {
  const int G = a.num_heads / a.num_kv_heads, kv = blockIdx.y, hd = a.head_dim, vhd = a.v_head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kQueryRows;
  const int64_t rows_total = static_cast<int64_t>(a.num_queries) * G;
  const int qstride = hd + kPad;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [64][hd + kPad]
  __nv_bfloat16* ks = qs + kQueryRows * qstride;  // [64][hd + kPad]
  __nv_bfloat16* vs = ks + kTileRows * qstride;  // [64][vhd + kPad]
  __shared__ int64_t row_page[kTileRows];
  __shared__ int row_slot[kTileRows];

  // The block's query rows: rows past the chunk are zero.
  const int valid_rows = static_cast<int>(rows_total - row0 < kQueryRows ? rows_total - row0 : kQueryRows);
  LoadRows(qs, valid_rows, hd, [&](int r) {
    const int64_t R = row0 + r, query = R / G;
    return a.q + (query * a.num_heads + static_cast<int64_t>(kv) * G + R % G) * hd;
  });
  for (int i = valid_rows * qstride + threadIdx.x; i < kQueryRows * qstride; i += blockDim.x) qs[i] = __float2bfloat16(0.f);
  __pipeline_commit();  // the first tile waits for it (and a block with no tile before it exits)

  // The key ranges of this thread's two rows (fragment rows g and g + 8 of its warp); the block
  // walks from its first row's start to its last row's end.
  int64_t lo[2], hi[2];
  for (int half = 0; half < 2; ++half) {
    const int64_t R = row0 + warp * 16 + g + 8 * half;
    const int64_t pos = a.first_position + (R < rows_total ? R / G : 0);
    lo[half] = keys.Lo(pos), hi[half] = R < rows_total ? keys.Hi(pos) : lo[half];  // past the chunk: nothing
  }
  const int64_t key_begin = keys.Lo(a.first_position + row0 / G);
  const int64_t key_end = keys.Hi(a.first_position + (row0 + valid_rows - 1) / G);
  const int num_tiles = static_cast<int>(key_end > key_begin ? (key_end - key_begin + kTileRows - 1) / kTileRows : 0);

  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(plane, a.layer, kv, false), v_off = L.Offset(plane, a.layer, kv, true);
  WarpRows st;

  for (int tile_index = 0; tile_index < num_tiles; ++tile_index) {
    const int64_t i0 = key_begin + static_cast<int64_t>(tile_index) * kTileRows;
    const int rows = static_cast<int>(key_end - i0 < kTileRows ? key_end - i0 : kTileRows);
    __syncthreads();  // the previous tile's reads of ks, vs and row_page are done
    for (int r = threadIdx.x; r < rows; r += blockDim.x) keys.Locate(i0 + r, &row_page[r], &row_slot[r]);
    __syncthreads();
    LoadRows(ks, rows, hd, [&](int r) { return a.pages + row_page[r] + k_off + row_slot[r] * hd; });
    LoadRows(vs, rows, vhd, [&](int r) { return a.pages + row_page[r] + v_off + row_slot[r] * vhd; });
    // Rows past the tile's keys are masked out of S; V's must be finite (P is 0 there).
    if (rows < kTileRows) ZeroRows(vs, rows, vhd);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();

    st.Step(qs + warp * 16 * qstride, ks, vs, hd, vhd, a.scale, i0,
            [&](int half, int64_t i) { return i >= lo[half] && i < hi[half]; });
  }

  __pipeline_wait_prior(0);  // no copy in flight at exit (a block that saw no key)
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t R = row0 + warp * 16 + g + 8 * half;
    if (R >= rows_total) continue;
    const int64_t query = R / G, head = static_cast<int64_t>(kv) * G + R % G;
    const float lse = st.Write(half, out_all + (query * a.num_heads + head) * vhd, vhd);
    if (t == 0) lse_all[query * a.num_heads + head] = lse;
  }
}

__global__ void __launch_bounds__(kThreads) CompressedPrefillKernel(NsaPrefillArgs a) {
  PrefillBranch(a, CompressedKeys{a}, KvPlane::kCmp, a.cmp_out, a.cmp_lse);
}

__global__ void __launch_bounds__(kThreads) WindowPrefillKernel(NsaPrefillArgs a) {
  // Per-branch K/V: the window pages' own plane; shared: the raw pages' tokens.
  const bool own = a.win_table != nullptr;
  PrefillBranch(a, WindowKeys{a, own ? a.win_table : a.raw_table}, own ? KvPlane::kWin : KvPlane::kSel, a.win_out,
                a.win_lse);
}


// The selected branch, group-centric: a warp takes one (position, 16-head slice of the group),
// its heads the MMA's rows; a block takes 4 consecutive such items and walks the union of their
// positions' selected blocks (neighbouring positions choose mostly the same), loading each
// block's tokens once for the 4 warps; a warp computes only the blocks its position chose, each
// row masked to tokens <= its position. grid (ceil(num_queries * slices / 4), num_kv_heads).
constexpr int kMaxUnion = 4 * 64;  // 4 positions' n <= 64 blocks

__global__ void __launch_bounds__(kThreads) SelectedPrefillKernel(NsaPrefillArgs a) {
  const int G = a.num_heads / a.num_kv_heads, kv = blockIdx.y, hd = a.head_dim, vhd = a.v_head_dim;
  const int n = a.nsa.num_selected, slices = (G + 15) / 16, lp = a.layout.page_tokens;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int qstride = hd + kPad;
  const int64_t items = static_cast<int64_t>(a.num_queries) * slices;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * 4 + warp;
  const bool active = item < items;
  const int64_t query = active ? item / slices : 0, slice = item % slices;
  const int64_t position = a.first_position + query;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [4 warps x 16][hd + kPad]
  __nv_bfloat16* ks = qs + kQueryRows * qstride;  // [64][hd + kPad]
  __nv_bfloat16* vs = ks + kTileRows * qstride;  // [64][vhd + kPad]
  __shared__ int32_t chosen[kMaxUnion];  // the 4 warps' selections, n each (-1: none)
  __shared__ int32_t blocks[kMaxUnion];  // their union, ascending
  __shared__ unsigned char member[4][kMaxUnion];  // member[w][u]: warp w's position chose blocks[u]
  __shared__ int union_size;

  // q: warp w's rows are heads 16 slice .. + 15 of the group (zero past G or past the chunk).
  for (int w = 0; w < 4; ++w) {
    const int64_t it = static_cast<int64_t>(blockIdx.x) * 4 + w;
    const int64_t qy = it / slices, h0 = (it % slices) * 16;
    const int heads = it < items ? static_cast<int>(G - h0 < 16 ? G - h0 : 16) : 0;
    LoadRows(qs + w * 16 * qstride, heads, hd,
             [&](int r) { return a.q + (qy * a.num_heads + static_cast<int64_t>(kv) * G + h0 + r) * hd; });
    for (int i = heads * qstride + threadIdx.x; i < 16 * qstride; i += blockDim.x) qs[w * 16 * qstride + i] = __float2bfloat16(0.f);
  }
  __pipeline_commit();

  // The union of the 4 selections: an entry is kept if no earlier entry holds the same block;
  // its place is the number of kept blocks below it.
  __shared__ unsigned char kept[kMaxUnion];
  for (int i = threadIdx.x; i < 4 * n; i += blockDim.x) {
    const int w = i / n;
    const int64_t it = static_cast<int64_t>(blockIdx.x) * 4 + w;
    chosen[i] = it < items ? a.selection[((it / slices) * a.num_kv_heads + kv) * n + i % n] : -1;
  }
  for (int i = threadIdx.x; i < 4 * kMaxUnion; i += blockDim.x) (&member[0][0])[i] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < 4 * n; i += blockDim.x) {
    const int32_t v = chosen[i];
    bool first = v >= 0;
    for (int k = 0; k < i && first; ++k) first = chosen[k] != v;
    kept[i] = first;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 4 * n; i += blockDim.x) {
    if (!kept[i]) continue;
    int rank = 0;
    for (int k = 0; k < 4 * n; ++k) rank += kept[k] && chosen[k] < chosen[i];
    blocks[rank] = chosen[i];
  }
  if (threadIdx.x == 0) {
    int u = 0;
    for (int i = 0; i < 4 * n; ++i) u += kept[i];
    union_size = u;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 4 * n; i += blockDim.x) {
    const int32_t v = chosen[i];
    if (v < 0) continue;
    int lo = 0, hi = union_size - 1;  // binary search of v in blocks
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (blocks[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    member[i / n][lo] = 1;
  }
  __syncthreads();

  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(KvPlane::kSel, a.layer, kv, false), v_off = L.Offset(KvPlane::kSel, a.layer, kv, true);
  const int64_t last_item = (static_cast<int64_t>(blockIdx.x) * 4 + 3 < items ? static_cast<int64_t>(blockIdx.x) * 4 + 3 : items - 1);
  const int64_t last_position = a.first_position + last_item / slices;
  WarpRows st;
  const bool row_ok[2] = {active && slice * 16 + g < G, active && slice * 16 + g + 8 < G};
  for (int u = 0; u < union_size; ++u) {
    const int64_t j = blocks[u], first_token = j * lp;
    // The tokens of block j that any of the 4 positions may see (none for a block past them all,
    // which a valid selection never holds: an empty tile, as in the decode kernel).
    const int64_t seen = last_position + 1 - first_token;
    const int rows = static_cast<int>(seen < 0 ? 0 : seen < lp ? seen : lp);
    __syncthreads();  // the previous block's reads of ks and vs are done
    if (rows > 0) {
      const __nv_bfloat16* page = a.pages + static_cast<int64_t>(a.raw_table[j]) * L.page_elems;
      LoadRows(ks, rows, hd, [&](int r) { return page + k_off + static_cast<int64_t>(r) * hd; });
      LoadRows(vs, rows, vhd, [&](int r) { return page + v_off + static_cast<int64_t>(r) * vhd; });
    }
    if (rows < kTileRows) ZeroRows(vs, rows, vhd);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    if (!active || !member[warp][u]) continue;  // uniform in the warp
    st.Step(qs + warp * 16 * qstride, ks, vs, hd, vhd, a.scale, first_token, [&](int half, int64_t i) {
      return row_ok[half] && i - first_token < rows && i <= position;
    });
  }
  __pipeline_wait_prior(0);  // no copy in flight at exit
  if (!active) return;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    if (!row_ok[half]) continue;
    const int64_t head = static_cast<int64_t>(kv) * G + slice * 16 + g + 8 * half;
    const float lse = st.Write(half, a.slc_out + (query * a.num_heads + head) * vhd, vhd);
    if (t == 0) a.slc_lse[query * a.num_heads + head] = lse;
  }
}

// The checks and the launch of one branch's kernel.
enum class Which { kCompressed, kWindow, kSelected };

template <Which which>
cudaError_t LaunchBranch(const NsaPrefillArgs& a, cudaStream_t stream) {
  constexpr auto kernel = which == Which::kCompressed ? CompressedPrefillKernel
                          : which == Which::kWindow   ? WindowPrefillKernel
                                                      : SelectedPrefillKernel;
  if (a.num_kv_heads <= 0 || a.num_heads <= 0 || a.num_heads % a.num_kv_heads != 0 || a.num_queries < 0) {
    return cudaErrorInvalidValue;
  }
  if (a.head_dim % 16 != 0 || a.head_dim < 16 || a.head_dim > 192) return cudaErrorInvalidValue;
  if (a.v_head_dim % 16 != 0 || a.v_head_dim < 16 || a.v_head_dim > 8 * kMaxColTiles) return cudaErrorInvalidValue;
  // The layout must describe these heads, and the layer must be one of its.
  const KvLayout& L = a.layout;
  if (L.num_kv_heads != a.num_kv_heads || L.head_dim != a.head_dim || L.v_head_dim != a.v_head_dim || a.layer < 0 ||
      a.layer >= L.num_layers || L.summaries_per_page <= 0 || L.page_tokens <= 0 || a.nsa.compress_stride <= 0) {
    return cudaErrorInvalidValue;
  }
  if (a.first_position < 0 || !a.q || !a.pages || !a.raw_table) return cudaErrorInvalidValue;
  if (which == Which::kCompressed && (!a.cmp_out || !a.cmp_lse)) return cudaErrorInvalidValue;
  if (which == Which::kWindow &&
      (!a.win_out || !a.win_lse || (L.has_win != (a.win_table != nullptr)) || a.nsa.window < 1)) {
    return cudaErrorInvalidValue;
  }
  if (which == Which::kSelected && (!a.slc_out || !a.slc_lse || !a.selection || a.nsa.num_selected < 1 ||
                                    a.nsa.num_selected > kMaxUnion / 4 || L.page_tokens > kTileRows)) {
    return cudaErrorInvalidValue;
  }
  if (a.num_queries == 0) return cudaSuccess;
  const int G = a.num_heads / a.num_kv_heads;
  const size_t smem = (static_cast<size_t>(kQueryRows + kTileRows) * (a.head_dim + kPad) +
                       static_cast<size_t>(kTileRows) * (a.v_head_dim + kPad)) * sizeof(__nv_bfloat16);
  // Opt in to large shared memory once per kernel (the attribute is the kernel's, not the launch's).
  static const cudaError_t opt_in = [] {
    int device = 0, max_smem = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem - (8 << 10));
  }();
  if (opt_in != cudaSuccess) return opt_in;
  // Compressed and window: 64 query rows a block; selected: 4 (position, 16-head slice) items.
  const int64_t blocks = which == Which::kSelected
                             ? (static_cast<int64_t>(a.num_queries) * ((G + 15) / 16) + 3) / 4
                             : (static_cast<int64_t>(a.num_queries) * G + kQueryRows - 1) / kQueryRows;
  kernel<<<dim3(static_cast<unsigned>(blocks), a.num_kv_heads), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchNsaPrefillCompressed(const NsaPrefillArgs& a, cudaStream_t stream) {
  return LaunchBranch<Which::kCompressed>(a, stream);
}

cudaError_t LaunchNsaPrefillWindow(const NsaPrefillArgs& a, cudaStream_t stream) {
  return LaunchBranch<Which::kWindow>(a, stream);
}

cudaError_t LaunchNsaPrefillSelected(const NsaPrefillArgs& a, cudaStream_t stream) {
  return LaunchBranch<Which::kSelected>(a, stream);
}

}  // namespace nsa::cuda
