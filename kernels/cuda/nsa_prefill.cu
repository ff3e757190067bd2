#include "kernels/cuda/nsa_prefill.h"

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <type_traits>

#include <cuda_pipeline.h>

#include "kernels/cuda/select_util.cuh"
#include "kernels/cuda/tile_mma.cuh"

namespace nsa::cuda {
namespace {

using tile::kPad;
using tile::kRowTiles;
using tile::kTileRows;
using tile::Mma;
using tile::Pack;
using tile::LdMatrixX4;
using tile::QkTile;
using tile::StridedLoadContiguousRows;
using tile::StridedLoadRows;
using tile::ZeroRows;

constexpr int kThreads = 128;  // 4 warps, 16 query rows each (32 in the branches' two-row-tile form)
constexpr int kQueryRows = 64;  // query rows a block (times R in the compressed and window branches)
constexpr int kMaxColTiles = 16;  // 8-column tiles of the output: v_dim <= 128, all of them a warp

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// 2^x (ex2.approx: what __expf uses after its multiply).
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// S = Q K^T for R 16-row tiles of a warp (q: [16 R][hd + kPad]) against 8 NT keys, as QkTile
// (kernels/cuda/tile_mma.cuh) for one: each K fragment is loaded once and used for every row
// tile. s[r][j][c]: row tile r's row g (+ 8 for c >= 2), key 8 j + 2 t + (c & 1).
template <int R, int NT>
__device__ __forceinline__ void QkTileRows(const __nv_bfloat16* q, const __nv_bfloat16* ks, int hd,
                                           float (&s)[R][NT][4]) {
  const int lane = threadIdx.x % 32, r8 = lane % 8, m = lane / 8;
  const int qstride = hd + kPad;
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int j = 0; j < NT; ++j) s[r][j][0] = s[r][j][1] = s[r][j][2] = s[r][j][3] = 0.f;
  }
  for (int kk = 0; kk < hd; kk += 16) {
    uint32_t a[R][4];
#pragma unroll
    for (int r = 0; r < R; ++r) LdMatrixX4(a[r], q + (16 * r + r8 + 8 * (m & 1)) * qstride + kk + 8 * (m >> 1));
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
      uint32_t b[4];
      LdMatrixX4(b, ks + (8 * (j + (m >> 1)) + r8) * qstride + kk + 8 * (m & 1));
#pragma unroll
      for (int r = 0; r < R; ++r) {
        Mma(s[r][j], a[r][0], a[r][1], a[r][2], a[r][3], b[0], b[1]);
        Mma(s[r][j + 1], a[r][0], a[r][1], a[r][2], a[r][3], b[2], b[3]);
      }
    }
  }
}

// A warp's R 16-row tiles of query rows (fragment rows g and g + 8 of each lane, slot 2 r + half
// for row tile r) walking K/V tiles of 64 keys, FlashAttention-2 style: S = Q K^T on mma.sync,
// the online softmax with each row's own mask, P (rounded to bf16) times V over all of V's
// columns, the output kept in registers. The running maxima m are in base-2 units (scores times
// scale log2 e), so each exponential is one ex2. With R = 2 every K and V fragment serves two
// row tiles (half the shared-memory reads and address work a row, twice the registers).
template <int R = 1>
struct WarpRowsT {
  float m[R][2], l[R][2];
  float o[R][kMaxColTiles][4];

  __device__ WarpRowsT() {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      m[r][0] = m[r][1] = -FLT_MAX, l[r][0] = l[r][1] = 0.f;
#pragma unroll
      for (int nt = 0; nt < kMaxColTiles; ++nt) o[r][nt][0] = o[r][nt][1] = o[r][nt][2] = o[r][nt][3] = 0.f;
    }
  }

  // One tile: q the warp's 16 R rows ([16 R][hd + kPad]), ks and vs the tile's 8 NT keys
  // ([8 NT][dim + kPad]; 64 by default), i0 the first key's index; visible(slot, i) says whether
  // row slot (g + 8 (slot % 2) of row tile slot / 2) sees key i. kMasked = false: every row sees
  // every key of the tile (the caller knows), and visible is not asked (the masks' integer work
  // was the kernels' busiest pipe).
  template <int NT = kRowTiles, bool kMasked = true, typename Visible>
  __device__ __forceinline__ void Step(const __nv_bfloat16* q, const __nv_bfloat16* ks, const __nv_bfloat16* vs, int hd,
                                       int vhd, float scale, int64_t i0, Visible visible) {
    const int lane = threadIdx.x % 32, t = lane % 4, r8 = lane % 8, m8 = lane / 8;
    const int vstride = vhd + kPad, col_tiles = vhd / 8;
    float s[R][NT][4];
    if constexpr (R == 1) {
      QkTile<NT>(q, ks, hd, s[0]);
    } else {
      QkTileRows<R, NT>(q, ks, hd, s);
    }
    const float scale2 = scale * kLog2e;
    float mx[R][2], corr[R][2], sum[R][2];
    bool moved = false;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      mx[r][0] = m[r][0], mx[r][1] = m[r][1];
#pragma unroll
      for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float v = s[r][j][c] * scale2;
          s[r][j][c] = v;
          if (!kMasked || visible(2 * r + (c >= 2), i0 + 8 * j + 2 * t + (c & 1))) mx[r][c >= 2] = fmaxf(mx[r][c >= 2], v);
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mx[r][h] = fmaxf(mx[r][h], __shfl_xor_sync(0xffffffff, mx[r][h], 1));
        mx[r][h] = fmaxf(mx[r][h], __shfl_xor_sync(0xffffffff, mx[r][h], 2));
      }
      corr[r][0] = Exp2(m[r][0] - mx[r][0]), corr[r][1] = Exp2(m[r][1] - mx[r][1]);
      sum[r][0] = sum[r][1] = 0.f;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float p =
              !kMasked || visible(2 * r + (c >= 2), i0 + 8 * j + 2 * t + (c & 1)) ? Exp2(s[r][j][c] - mx[r][c >= 2]) : 0.f;
          s[r][j][c] = p;
          sum[r][c >= 2] += p;
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        sum[r][h] += __shfl_xor_sync(0xffffffff, sum[r][h], 1);
        sum[r][h] += __shfl_xor_sync(0xffffffff, sum[r][h], 2);
        l[r][h] = l[r][h] * corr[r][h] + sum[r][h];
        m[r][h] = mx[r][h];
      }
      moved = moved || corr[r][0] != 1.f || corr[r][1] != 1.f;
    }
    // Rescale the output only when some row's maximum moved (most tiles after the first few).
    if (__any_sync(0xffffffff, moved)) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int nt = 0; nt < kMaxColTiles; ++nt) {
          o[r][nt][0] *= corr[r][0], o[r][nt][1] *= corr[r][0], o[r][nt][2] *= corr[r][1], o[r][nt][3] *= corr[r][1];
        }
      }
    }
#pragma unroll
    for (int ks16 = 0; ks16 < NT / 2; ++ks16) {
      uint32_t p[R][4];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        p[r][0] = Pack(s[r][2 * ks16][0], s[r][2 * ks16][1]), p[r][1] = Pack(s[r][2 * ks16][2], s[r][2 * ks16][3]);
        p[r][2] = Pack(s[r][2 * ks16 + 1][0], s[r][2 * ks16 + 1][1]);
        p[r][3] = Pack(s[r][2 * ks16 + 1][2], s[r][2 * ks16 + 1][3]);
      }
      // V's B fragments, transposed: matrices (keys 16 ks16 + 0-7 | + 8-15) x (columns 8 nt |
      // 8 (nt + 1)) give b0, b1 of column tiles nt and nt + 1 (col_tiles is even).
#pragma unroll
      for (int nt = 0; nt < kMaxColTiles; nt += 2) {
        if (nt >= col_tiles) break;
        uint32_t b[4];
        LdMatrixX4<true>(b, vs + (16 * ks16 + 8 * (m8 & 1) + r8) * vstride + 8 * (nt + (m8 >> 1)));
#pragma unroll
        for (int r = 0; r < R; ++r) {
          Mma(o[r][nt], p[r][0], p[r][1], p[r][2], p[r][3], b[0], b[1]);
          Mma(o[r][nt + 1], p[r][0], p[r][1], p[r][2], p[r][3], b[2], b[3]);
        }
      }
    }
  }

  // Row slot's output (g + 8 (slot % 2) of row tile slot / 2), normalised, into out[vhd] (this
  // lane's columns); returns its log-sum-exp (-inf when the row saw no key).
  __device__ __forceinline__ float Write(int slot, float* out, int vhd) const {
    const int t = threadIdx.x % 4, col_tiles = vhd / 8, r = slot / 2, half = slot % 2;
    const float inv = l[r][half] > 0.f ? 1.f / l[r][half] : 0.f;
#pragma unroll
    for (int nt = 0; nt < kMaxColTiles; ++nt) {
      if (nt >= col_tiles) break;
      *reinterpret_cast<float2*>(out + 8 * nt + 2 * t) =
          make_float2(o[r][nt][2 * half] * inv, o[r][nt][2 * half + 1] * inv);
    }
    return l[r][half] > 0.f ? (m[r][half] + __log2f(l[r][half])) * kLn2 : -INFINITY;
  }
};
using WarpRows = WarpRowsT<1>;

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

// One branch for the block's 64 R query rows (R 16-row tiles a warp): grid (ceil(num_queries * G
// / (64 R)), num_kv_heads). Row X of a block's 64 R is query X / G, head X % G of KV head
// blockIdx.y; rows past the chunk are computed on zeros and not written. The block walks the keys
// its rows see, 64 a tile; each row masks the keys outside its own range. S K/V buffers: with 2
// the next tile's copies are in flight while the warps compute on this one (the same tiles, the
// same arithmetic either way).
template <int R, int S, typename Keys>
__device__ void PrefillBranch(const NsaPrefillArgs& a, const Keys& keys, KvPlane plane, float* out_all, float* lse_all) {
  static_assert(S == 1 || S == 2, "one or two K/V buffers");
  constexpr int kBlockRows = kQueryRows * R, kSlots = 2 * R;
  const int G = a.num_heads / a.num_kv_heads, kv = blockIdx.y, hd = a.head_dim, vhd = a.v_head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  const int64_t rows_total = static_cast<int64_t>(a.num_queries) * G;
  const int qstride = hd + kPad;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [64 R][hd + kPad]
  __nv_bfloat16* ks_all = qs + kBlockRows * qstride;  // S x [64][hd + kPad]
  __nv_bfloat16* vs_all = ks_all + S * kTileRows * qstride;  // S x [64][vhd + kPad]
  __shared__ int64_t row_page[S][kTileRows];
  __shared__ int row_slot[S][kTileRows];

  // The block's query rows: rows past the chunk are zero.
  const int valid_rows = static_cast<int>(rows_total - row0 < kBlockRows ? rows_total - row0 : kBlockRows);
  StridedLoadRows(qs, valid_rows, hd, [&](int r) {
    const int64_t X = row0 + r, query = X / G;
    return a.q + (query * a.num_heads + static_cast<int64_t>(kv) * G + X % G) * hd;
  });
  for (int i = valid_rows * qstride + threadIdx.x; i < kBlockRows * qstride; i += blockDim.x) qs[i] = __float2bfloat16(0.f);
  __pipeline_commit();  // the first tile waits for it (and a block with no tile before it exits)

  const int64_t key_begin = keys.Lo(a.first_position + row0 / G);
  const int64_t key_end = keys.Hi(a.first_position + (row0 + valid_rows - 1) / G);
  // The key ranges of this thread's rows (slot 2 r + half: fragment row g + 8 half of the warp's
  // row tile r); the block walks from its first row's start to its last row's end. With two row
  // tiles the ranges are kept as 32-bit offsets from the block's first key (registers are what
  // that form is short of; a chunk's keys span far less than 2^31); with one, as key indices.
  using Off = std::conditional_t<(R > 1), int, int64_t>;
  const int64_t base = R > 1 ? key_begin : int64_t{0};
  Off lo[kSlots], hi[kSlots];
#pragma unroll
  for (int slot = 0; slot < kSlots; ++slot) {
    const int64_t X = row0 + warp * 16 * R + 16 * (slot / 2) + g + 8 * (slot % 2);
    const int64_t pos = a.first_position + (X < rows_total ? X / G : 0);
    lo[slot] = static_cast<Off>(keys.Lo(pos) - base);
    hi[slot] = X < rows_total ? static_cast<Off>(keys.Hi(pos) - base) : lo[slot];  // past the chunk: nothing
  }
  // The keys every row of this warp sees: [lo_all, hi_all) (tiles inside it skip the masks).
  Off lo_all = lo[0], hi_all = hi[0];
#pragma unroll
  for (int slot = 1; slot < kSlots; ++slot) {
    lo_all = lo[slot] > lo_all ? lo[slot] : lo_all, hi_all = hi[slot] < hi_all ? hi[slot] : hi_all;
  }
  for (int d = 1; d < 32; d *= 2) {
    const Off l2 = __shfl_xor_sync(0xffffffff, lo_all, d), h2 = __shfl_xor_sync(0xffffffff, hi_all, d);
    lo_all = l2 > lo_all ? l2 : lo_all, hi_all = h2 < hi_all ? h2 : hi_all;
  }
  const int num_tiles = static_cast<int>(key_end > key_begin ? (key_end - key_begin + kTileRows - 1) / kTileRows : 0);

  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(plane, a.layer, kv, false), v_off = L.Offset(plane, a.layer, kv, true);
  WarpRowsT<R> st;

  const int vstride = vhd + kPad;
  // Tile `tile_index`'s keys into buffer `buf`: their pages located, the rows' copies issued and
  // committed (one group a tile). The caller has synchronised since the buffer's last reads.
  auto issue = [&](int tile_index, int buf) {
    const int64_t i0 = key_begin + static_cast<int64_t>(tile_index) * kTileRows;
    const int rows = static_cast<int>(key_end - i0 < kTileRows ? key_end - i0 : kTileRows);
    for (int r = threadIdx.x; r < rows; r += blockDim.x) keys.Locate(i0 + r, &row_page[buf][r], &row_slot[buf][r]);
    __syncthreads();
    __nv_bfloat16 *ks = ks_all + buf * kTileRows * qstride, *vs = vs_all + buf * kTileRows * vstride;
    StridedLoadRows(ks, rows, hd, [&](int r) { return a.pages + row_page[buf][r] + k_off + row_slot[buf][r] * hd; });
    StridedLoadRows(vs, rows, vhd, [&](int r) { return a.pages + row_page[buf][r] + v_off + row_slot[buf][r] * vhd; });
    // Rows past the tile's keys are masked out of S; V's must be finite (P is 0 there).
    if (rows < kTileRows) ZeroRows(vs, rows, vhd);
    __pipeline_commit();
  };
  if (S == 2 && num_tiles > 0) issue(0, 0);
  for (int tile_index = 0; tile_index < num_tiles; ++tile_index) {
    const int64_t i0 = key_begin + static_cast<int64_t>(tile_index) * kTileRows;
    const int buf = S == 2 ? tile_index & 1 : 0;
    __syncthreads();  // the reads of the buffer about to be filled (and of its row_page) are done
    if (S == 2) {
      // The next tile's copies go out before this one's wait; an empty group keeps the count.
      if (tile_index + 1 < num_tiles) {
        issue(tile_index + 1, buf ^ 1);
      } else {
        __pipeline_commit();
      }
      __pipeline_wait_prior(1);  // every group but the newest: q's and this tile's
    } else {
      issue(tile_index, 0);
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    const __nv_bfloat16 *ks = ks_all + buf * kTileRows * qstride, *vs = vs_all + buf * kTileRows * vstride;

    auto visible = [&](int slot, int64_t i) {
      const Off rel = static_cast<Off>(i - base);
      return rel >= lo[slot] && rel < hi[slot];
    };
    if (i0 - base >= lo_all && i0 - base + kTileRows <= hi_all) {  // uniform in the warp
      st.template Step<kRowTiles, false>(qs + warp * 16 * R * qstride, ks, vs, hd, vhd, a.scale, i0, visible);
    } else {
      st.Step(qs + warp * 16 * R * qstride, ks, vs, hd, vhd, a.scale, i0, visible);
    }
  }

  __pipeline_wait_prior(0);  // no copy in flight at exit (a block that saw no key)
#pragma unroll
  for (int slot = 0; slot < kSlots; ++slot) {
    const int64_t X = row0 + warp * 16 * R + 16 * (slot / 2) + g + 8 * (slot % 2);
    if (X >= rows_total) continue;
    const int64_t query = X / G, head = static_cast<int64_t>(kv) * G + X % G;
    const float lse = st.Write(slot, out_all + (query * a.num_heads + head) * vhd, vhd);
    if (t == 0) lse_all[query * a.num_heads + head] = lse;
  }
}

template <int R, int S>
__global__ void __launch_bounds__(kThreads) CompressedPrefillKernel(NsaPrefillArgs a) {
  PrefillBranch<R, S>(a, CompressedKeys{a}, KvPlane::kCmp, a.cmp_out, a.cmp_lse);
}

template <int R, int S>
__global__ void __launch_bounds__(kThreads) WindowPrefillKernel(NsaPrefillArgs a) {
  // Per-branch K/V: the window pages' own plane; shared: the raw pages' tokens.
  const bool own = a.win_table != nullptr;
  PrefillBranch<R, S>(a, WindowKeys{a, own ? a.win_table : a.raw_table}, own ? KvPlane::kWin : KvPlane::kSel, a.win_out,
                   a.win_lse);
}


// The selected branch, group-centric: an item is one (position, 16-head slice of the group), its
// heads the MMA's rows; a block takes 4 consecutive items and their positions' chosen blocks,
// in one of two walks, picked per block from how much the 4 selections overlap:
//  - union: the block walks the union of the 4 selections, each block's tokens loaded once, a
//    warp an item computing only the blocks its position chose (about as many tiles as loads
//    when neighbours choose alike; warps idle on the others' blocks when they do not);
//  - split: the items one after another, each walking its own blocks double-buffered, the 4
//    warps splitting every block's 64 tokens (16 each, own online softmax), the partial
//    softmaxes merged at the end: every warp busy, every item's blocks loaded.
// The union walk is taken when the union holds at most `union_max` blocks (NsaPrefillArgs::
// selected_form). grid (ceil(num_queries * slices / 4), num_kv_heads).
constexpr int kMaxSelected = 64;
constexpr int kMaxUnion = 4 * kMaxSelected;  // 4 positions' n <= 64 blocks
constexpr int kSplitKeys = kTileRows / 4;  // a warp's tokens of a block in the split walk
// SelectedForm::kAuto's largest union for the union walk, for n = 16 (scaled with n): measured on
// an H200 at 7b 64k, the union walk cost about as much per union block as the split walk per
// 2.5 n / 4 blocks of an item (bench/NOTES.md).
constexpr int kAutoUnionMax = 40;

// Shared memory: two K/V buffers ([64][hd + kPad] and [64][vhd + kPad] each), 16 rows of q for
// the split walk, then the 4 selections' bookkeeping, sized by n (at 7b, three blocks fit an
// SM). The union walk keeps its 4 items' q (64 rows) in the second buffer.
constexpr int kBookkeepingBytes = 4 * (4 + 4 + 4 + 1 + 4);  // a chosen block's (chosen, union, list, kept, member)
size_t SelectedBytes(int head_dim, int v_head_dim, int n) {
  return (size_t{2} * kTileRows * (head_dim + v_head_dim + 2 * kPad) + size_t{16} * (head_dim + kPad)) *
             sizeof(__nv_bfloat16) +
         size_t{kBookkeepingBytes} * n;
}

// The 16 rows of an item's q (heads h0 .. h0 + heads - 1 of KV head kv at query `query`) into
// qs, zero past `heads`; the caller commits the copies.
__device__ __forceinline__ void LoadItemQ(const NsaPrefillArgs& a, __nv_bfloat16* qs, int64_t query, int kv, int h0,
                                          int heads) {
  const int G = a.num_heads / a.num_kv_heads, qstride = a.head_dim + kPad;
  // The item's heads are consecutive rows of the query's q.
  const __nv_bfloat16* q = a.q + (query * a.num_heads + static_cast<int64_t>(kv) * G + h0) * a.head_dim;
  StridedLoadContiguousRows(qs, heads, a.head_dim, q);
  for (int i = heads * qstride + threadIdx.x; i < 16 * qstride; i += blockDim.x) qs[i] = __float2bfloat16(0.f);
}

// Block j's tokens that a position sees: min(lp, position + 1 - j lp), none for a block past it.
__device__ __forceinline__ int VisibleRows(int64_t position, int64_t j, int lp) {
  const int64_t seen = position + 1 - j * lp;
  return static_cast<int>(seen < 0 ? 0 : seen < lp ? seen : lp);
}

// A union walk's next block: block j's first `rows` tokens of K and V into ks and vs (V's other
// rows zero), after every thread is done with the previous block and before any reads this one.
__device__ __forceinline__ void LoadUnionBlock(const NsaPrefillArgs& a, int64_t j, int rows, int64_t k_off,
                                               int64_t v_off, __nv_bfloat16* ks, __nv_bfloat16* vs) {
  const int hd = a.head_dim, vhd = a.v_head_dim;
  __syncthreads();  // the previous block's reads of ks and vs are done
  if (rows > 0) {
    const __nv_bfloat16* page = a.pages + static_cast<int64_t>(a.raw_table[j]) * a.layout.page_elems;
    StridedLoadContiguousRows(ks, rows, hd, page + k_off);
    StridedLoadContiguousRows(vs, rows, vhd, page + v_off);
  }
  if (rows < kTileRows) ZeroRows(vs, rows, vhd);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
}

// The split walk of one item: its `count` blocks (list), the next block's copies in flight while
// the current one is computed; writes the item's output and log-sum-exp. qs: its q (committed
// copies, or already there); buf: the two K/V buffers.
__device__ void SplitWalk(const NsaPrefillArgs& a, int64_t query, int h0, int heads, const __nv_bfloat16* qs,
                          __nv_bfloat16* buf, const int32_t* list, int count) {
  const int G = a.num_heads / a.num_kv_heads, kv = blockIdx.y, hd = a.head_dim, vhd = a.v_head_dim;
  const int lp = a.layout.page_tokens, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int qstride = hd + kPad, vstride = vhd + kPad, buf_elems = kTileRows * (qstride + vstride);
  const int64_t position = a.first_position + query;
  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(KvPlane::kSel, a.layer, kv, false), v_off = L.Offset(KvPlane::kSel, a.layer, kv, true);
  auto load = [&](int b) {
    const int64_t j = list[b];
    const int rows = VisibleRows(position, j, lp);
    __nv_bfloat16* ks = buf + (b & 1) * buf_elems;
    const __nv_bfloat16* page = a.pages + static_cast<int64_t>(a.raw_table[j]) * L.page_elems;
    StridedLoadContiguousRows(ks, rows, hd, page + k_off);
    StridedLoadContiguousRows(ks + kTileRows * qstride, rows, vhd, page + v_off);
  };
  if (count > 0) load(0);
  __pipeline_commit();

  WarpRows st;
  const bool row_ok[2] = {g < heads, g + 8 < heads};
  for (int b = 0; b < count; ++b) {
    if (b + 1 < count) load(b + 1);  // into the other buffer, free since the last iteration's barrier
    __pipeline_commit();
    const int64_t first_token = static_cast<int64_t>(list[b]) * lp;
    const int rows = VisibleRows(position, list[b], lp);
    __nv_bfloat16* ks = buf + (b & 1) * buf_elems;
    __nv_bfloat16* vs = ks + kTileRows * qstride;
    // V's rows past the visible tokens (not copied into): P is 0 there, and 0 times garbage could be NaN.
    if (rows < kTileRows) ZeroRows(vs, rows, vhd);
    __pipeline_wait_prior(1);  // block b's copies (and q's) have landed
    __syncthreads();
    if (kSplitKeys * warp < rows) {  // uniform in the warp
      const int k0 = kSplitKeys * warp;
      auto visible = [&](int half, int64_t i) { return row_ok[half] && i - first_token < rows; };
      if (heads == 16 && k0 + kSplitKeys <= rows) {  // every row sees every key of the warp's part
        st.Step<kSplitKeys / 8, false>(qs, ks + k0 * qstride, vs + k0 * vstride, hd, vhd, a.scale, first_token + k0,
                                       visible);
      } else {
        st.Step<kSplitKeys / 8>(qs, ks + k0 * qstride, vs + k0 * vstride, hd, vhd, a.scale, first_token + k0, visible);
      }
    }
    __syncthreads();  // this buffer's reads are done before the next iteration's copies into it
  }
  __pipeline_wait_prior(0);  // no copy in flight (an item with no block)
  __syncthreads();

  // Merge the 4 warps' partial softmaxes: row r's maximum M over the warps, its sum
  // L = sum_w l_w 2^(m_w - M), and out = sum_w o_w 2^(m_w - M) / L (base-2 units, as WarpRows).
  float* mw = reinterpret_cast<float*>(buf);  // [4][16]
  float* lw = mw + 4 * 16;  // [4][16]
  float* ow = lw + 4 * 16;  // [4][16][vhd]
  if (t == 0) {
    for (int half = 0; half < 2; ++half) mw[warp * 16 + g + 8 * half] = st.m[0][half], lw[warp * 16 + g + 8 * half] = st.l[0][half];
  }
  __syncthreads();
  auto row_max_sum = [&](int r, float* M, float* Lsum) {
    float mx = mw[r];
    for (int w = 1; w < 4; ++w) mx = fmaxf(mx, mw[w * 16 + r]);
    float sum = 0.f;
    for (int w = 0; w < 4; ++w) sum += lw[w * 16 + r] * Exp2(mw[w * 16 + r] - mx);
    *M = mx, *Lsum = sum;
  };
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = g + 8 * half;
    float M, Lsum;
    row_max_sum(r, &M, &Lsum);
    const float f = Lsum > 0.f ? Exp2(st.m[0][half] - M) / Lsum : 0.f;
#pragma unroll
    for (int nt = 0; nt < kMaxColTiles; ++nt) {
      if (nt >= vhd / 8) break;
      *reinterpret_cast<float2*>(ow + (warp * 16 + r) * vhd + 8 * nt + 2 * t) =
          make_float2(st.o[0][nt][2 * half] * f, st.o[0][nt][2 * half + 1] * f);
    }
  }
  __syncthreads();
  const int64_t head0 = query * a.num_heads + static_cast<int64_t>(kv) * G + h0;
  for (int i = threadIdx.x; i < heads * vhd; i += blockDim.x) {
    const int r = i / vhd, col = i % vhd;
    float sum = 0.f;
    for (int w = 0; w < 4; ++w) sum += ow[(w * 16 + r) * vhd + col];
    a.slc_out[(head0 + r) * vhd + col] = sum;
  }
  if (threadIdx.x < heads) {
    float M, Lsum;
    row_max_sum(threadIdx.x, &M, &Lsum);
    a.slc_lse[head0 + threadIdx.x] = Lsum > 0.f ? (M + __log2f(Lsum)) * kLn2 : -INFINITY;
  }
  __syncthreads();  // the merge's reads of buf are done before the caller's next copies into it
}

__global__ void __launch_bounds__(kThreads) SelectedPrefillKernel(NsaPrefillArgs a, int union_max) {
  const int G = a.num_heads / a.num_kv_heads, kv = blockIdx.y, hd = a.head_dim, vhd = a.v_head_dim;
  const int n = a.nsa.num_selected, slices = (G + 15) / 16, lp = a.layout.page_tokens;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int qstride = hd + kPad, buf_elems = kTileRows * (qstride + vhd + kPad);
  const int64_t items = static_cast<int64_t>(a.num_queries) * slices, item0 = static_cast<int64_t>(blockIdx.x) * 4;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* buf = reinterpret_cast<__nv_bfloat16*>(smem);  // 2 K/V buffers
  __nv_bfloat16* q16 = buf + 2 * buf_elems;  // [16][hd + kPad]: the split walk's q
  int32_t* chosen = reinterpret_cast<int32_t*>(q16 + 16 * qstride);  // [4 n]: the 4 items' selections (-1: none)
  int32_t* blocks = chosen + 4 * n;  // [4 n]: their union, ascending
  int32_t* list = blocks + 4 * n;  // [4][n]: each item's chosen blocks, -1 pads dropped
  unsigned char* member = reinterpret_cast<unsigned char*>(list + 4 * n);  // [4][4 n]: item w chose blocks[u]
  unsigned char* kept = member + 16 * n;  // [4 n]
  __shared__ int union_size, counts[4];

  // The union of the 4 selections: an entry is kept if no earlier entry holds the same block;
  // its place is the number of kept blocks below it.
  for (int i = threadIdx.x; i < 4 * n; i += blockDim.x) {
    const int64_t it = item0 + i / n;
    chosen[i] = it < items ? a.selection[((it / slices) * a.num_kv_heads + kv) * n + i % n] : -1;
  }
  for (int i = threadIdx.x; i < 16 * n; i += blockDim.x) member[i] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < 4 * n; i += blockDim.x) {
    const int32_t v = chosen[i];
    bool first = v >= 0;
    for (int k = 0; k < i && first; ++k) first = chosen[k] != v;
    kept[i] = first;
  }
  if (threadIdx.x < 4) {  // each item's own list
    int c = 0;
    for (int k = 0; k < n; ++k) {
      if (const int32_t j = chosen[threadIdx.x * n + k]; j >= 0) list[threadIdx.x * n + c++] = j;
    }
    counts[threadIdx.x] = c;
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

  if (union_size > union_max) {  // the split walk, item by item (uniform in the block)
    for (int w = 0; w < 4 && item0 + w < items; ++w) {
      const int64_t it = item0 + w, h0 = (it % slices) * 16;
      const int heads = static_cast<int>(G - h0 < 16 ? G - h0 : 16);
      LoadItemQ(a, q16, it / slices, kv, static_cast<int>(h0), heads);  // committed with the first block
      SplitWalk(a, it / slices, static_cast<int>(h0), heads, q16, buf, list + w * n, counts[w]);
    }
    return;
  }

  // The union walk: item w's q in warp w's 16 rows of the second buffer, tiles in the first.
  __nv_bfloat16* qs = buf + buf_elems;  // [4 x 16][hd + kPad]
  __nv_bfloat16* ks = buf;  // [64][hd + kPad]
  __nv_bfloat16* vs = ks + kTileRows * qstride;  // [64][vhd + kPad]
  for (int w = 0; w < 4; ++w) {
    const int64_t it = item0 + w, h0 = (it % slices) * 16;
    const int heads = it < items ? static_cast<int>(G - h0 < 16 ? G - h0 : 16) : 0;
    LoadItemQ(a, qs + w * 16 * qstride, it / slices, kv, static_cast<int>(h0), heads);
  }
  __pipeline_commit();
  for (int i = threadIdx.x; i < 4 * n; i += blockDim.x) {
    const int32_t v = chosen[i];
    if (v < 0) continue;
    int lo = 0, hi = union_size - 1;  // binary search of v in blocks
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (blocks[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    member[(i / n) * 4 * n + lo] = 1;
  }
  __syncthreads();

  const int64_t item = item0 + warp;
  const bool active = item < items;
  const int64_t query = active ? item / slices : 0, slice = item % slices;
  const int64_t position = a.first_position + query;
  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(KvPlane::kSel, a.layer, kv, false), v_off = L.Offset(KvPlane::kSel, a.layer, kv, true);
  const int64_t last_item = item0 + 3 < items ? item0 + 3 : items - 1;
  const int64_t last_position = a.first_position + last_item / slices;
  WarpRows st;
  const bool row_ok[2] = {active && slice * 16 + g < G, active && slice * 16 + g + 8 < G};
  // Whether every row of the warp is a head (a warp-wide vote: for a partial last slice with
  // more than 8 heads, the lanes' own two rows differ).
  const bool all_rows = __all_sync(0xffffffff, row_ok[0] && row_ok[1]);
  for (int u = 0; u < union_size; ++u) {
    const int64_t j = blocks[u], first_token = j * lp;
    // The tokens of block j that any of the 4 positions may see (none for a block past them all,
    // which a valid selection never holds: an empty tile, as in the decode kernel).
    const int rows = VisibleRows(last_position, j, lp);
    LoadUnionBlock(a, j, rows, k_off, v_off, ks, vs);
    if (!active || !member[warp * 4 * n + u]) continue;  // uniform in the warp
    auto visible = [&](int half, int64_t i) { return row_ok[half] && i - first_token < rows && i <= position; };
    if (all_rows && rows == kTileRows && first_token + kTileRows - 1 <= position) {  // uniform in the warp
      st.Step<kRowTiles, false>(qs + warp * 16 * qstride, ks, vs, hd, vhd, a.scale, first_token, visible);
    } else {
      st.Step(qs + warp * 16 * qstride, ks, vs, hd, vhd, a.scale, first_token, visible);
    }
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

// The selected branch for G <= 8, packed: a warp's 16 rows are the G heads of P = 16 / G
// consecutive positions (P G rows used, the rest padding) instead of one position's G heads and
// 16 - G rows of padding. A block takes 4 warps' 4 P positions and walks the union of their
// selections (the union walk above, each block's tokens loaded once), each row masked to its own
// position's blocks and tokens. The union comes from a bitmap of the chunk's C selection blocks
// with a prefix count a word (4 P n entries, up to 1,024 at G = 1: a pairwise scan would be
// quadratic), each union entry with a mask of the slots that chose it. grid (ceil(queries /
// 4 P), num_kv_heads).
__host__ __device__ constexpr int PackedPositions(int G) { return 16 / G; }

// Shared memory: one K/V tile, the 4 warps' q, then per chosen entry (E = 4 P n) its block, its
// union entry and that entry's 64-bit mask, and the bitmap and its prefix counts.
size_t PackedSelectedBytes(int head_dim, int v_head_dim, int n, int G, int64_t C) {
  const size_t E = size_t{4} * PackedPositions(G) * n, words = static_cast<size_t>((C + 31) / 32);
  return size_t{kTileRows} * (2 * head_dim + v_head_dim + 3 * kPad) * sizeof(__nv_bfloat16) + E * (8 + 4 + 4) +
         words * 8;
}

__global__ void __launch_bounds__(kThreads) PackedSelectedPrefillKernel(NsaPrefillArgs a, int C) {
  const int G = a.num_heads / a.num_kv_heads, P = PackedPositions(G), kv = blockIdx.y, hd = a.head_dim;
  const int vhd = a.v_head_dim, n = a.nsa.num_selected, lp = a.layout.page_tokens, E = 4 * P * n;
  const int words = (C + 31) / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int qstride = hd + kPad;
  const int64_t query0 = static_cast<int64_t>(blockIdx.x) * 4 * P;  // slot s: query query0 + s
  const int slots = static_cast<int>(a.num_queries - query0 < 4 * P ? a.num_queries - query0 : 4 * P);
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(smem);  // [64][hd + kPad]
  __nv_bfloat16* vs = ks + kTileRows * qstride;  // [64][vhd + kPad]
  __nv_bfloat16* qs = vs + kTileRows * (vhd + kPad);  // [4 x 16][hd + kPad]
  auto* mask = reinterpret_cast<unsigned long long*>(qs + 4 * 16 * qstride);  // [E]: union entry u's slots
  int32_t* chosen = reinterpret_cast<int32_t*>(mask + E);  // [E]: slot s's selection at s n (-1: none)
  int32_t* blocks = chosen + E;  // [E]: the union, ascending
  auto* bits = reinterpret_cast<uint32_t*>(blocks + E);  // [words]: the chosen blocks
  auto* below = bits + words;  // [words]: chosen blocks in the words before
  __shared__ int union_size;

  // Warp w's q: row r is head r % G of slot w P + r / G (zero rows past the chunk and past P G).
  for (int w = 0; w < 4; ++w) {
    const int valid = std::max(0, std::min(P * G, (slots - w * P) * G));  // the valid rows are a prefix
    StridedLoadRows(qs + w * 16 * qstride, valid, hd, [&](int r) {
      return a.q + ((query0 + w * P + r / G) * a.num_heads + static_cast<int64_t>(kv) * G + r % G) * hd;
    });
    for (int i = valid * qstride + threadIdx.x; i < 16 * qstride; i += blockDim.x) {
      qs[w * 16 * qstride + i] = __float2bfloat16(0.f);
    }
  }
  __pipeline_commit();
  for (int i = threadIdx.x; i < E; i += blockDim.x) {
    const int s = i / n;
    chosen[i] = s < slots ? a.selection[((query0 + s) * a.num_kv_heads + kv) * n + i % n] : -1;
    mask[i] = 0;
  }
  for (int i = threadIdx.x; i < words; i += blockDim.x) bits[i] = 0;
  __syncthreads();
  // The union: a block's place in it is the number of chosen blocks below it.
  for (int i = threadIdx.x; i < E; i += blockDim.x) {
    if (const int32_t v = chosen[i]; v >= 0 && v < C) atomicOr(&bits[v / 32], 1u << (v % 32));
  }
  __syncthreads();
  if (warp == 0) {  // prefix counts, 32 words a round
    uint32_t carry = 0;
    for (int w0 = 0; w0 < words; w0 += 32) {
      const uint32_t c = w0 + lane < words ? __popc(bits[w0 + lane]) : 0;
      uint32_t incl = c;
      for (int d = 1; d < 32; d *= 2) {
        const uint32_t y = __shfl_up_sync(0xffffffff, incl, d);
        if (lane >= d) incl += y;
      }
      if (w0 + lane < words) below[w0 + lane] = carry + incl - c;
      carry += __shfl_sync(0xffffffff, incl, 31);
    }
    if (lane == 0) union_size = static_cast<int>(carry);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < E; i += blockDim.x) {
    const int32_t v = chosen[i];
    if (v < 0 || v >= C) continue;
    const int u = static_cast<int>(below[v / 32] + __popc(bits[v / 32] & ((1u << (v % 32)) - 1u)));
    blocks[u] = v;  // every entry of the same block writes the same value
    atomicOr(&mask[u], 1ull << (i / n));
  }
  __syncthreads();  // blocks and mask complete (the first LoadUnionBlock waits for the q copies)

  // This lane's two rows: slot (-1: padding or past the chunk), position, head.
  int slot[2];
  int64_t position[2];
  for (int half = 0; half < 2; ++half) {
    const int r = g + 8 * half, sl = warp * P + r / G;
    slot[half] = r < P * G && sl < slots ? sl : -1;
    position[half] = a.first_position + query0 + (slot[half] >= 0 ? slot[half] : 0);
  }
  // The warp's slots holding a position (4 P <= 64), its first position, the block's last.
  const int warp_slots = std::max(0, std::min(P, slots - warp * P));
  const unsigned long long warp_bits = warp_slots > 0 ? ((1ull << warp_slots) - 1ull) << (warp * P) : 0ull;
  const int64_t warp_first = a.first_position + query0 + warp * P, last_position = a.first_position + query0 + slots - 1;
  const KvLayout& L = a.layout;
  const int64_t k_off = L.Offset(KvPlane::kSel, a.layer, kv, false), v_off = L.Offset(KvPlane::kSel, a.layer, kv, true);
  WarpRows st;
  for (int u = 0; u < union_size; ++u) {
    const int64_t j = blocks[u], first_token = j * lp;
    const int rows = VisibleRows(last_position, j, lp);
    LoadUnionBlock(a, j, rows, k_off, v_off, ks, vs);
    const unsigned long long chose = mask[u];
    if (!(chose & warp_bits)) continue;  // uniform in the warp: none of its positions chose block j
    // Each row's tokens of the tile: [0, lim), none where its position did not choose block j.
    int lim[2];
    for (int half = 0; half < 2; ++half) {
      lim[half] = slot[half] >= 0 && ((chose >> slot[half]) & 1ull) ? VisibleRows(position[half], j, lp) : 0;
      lim[half] = lim[half] < rows ? lim[half] : rows;
    }
    auto visible = [&](int half, int64_t i) { return static_cast<int>(i - first_token) < lim[half]; };
    // Every row sees the whole tile (uniform in the warp; padding rows compute on q = 0 and are
    // never written): each of its positions chose the block and the first sees all of it.
    if ((chose & warp_bits) == warp_bits && rows == kTileRows && first_token + kTileRows - 1 <= warp_first) {
      st.Step<kRowTiles, false>(qs + warp * 16 * qstride, ks, vs, hd, vhd, a.scale, first_token, visible);
    } else {
      st.Step(qs + warp * 16 * qstride, ks, vs, hd, vhd, a.scale, first_token, visible);
    }
  }
  __pipeline_wait_prior(0);  // no copy in flight at exit
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    if (slot[half] < 0) continue;
    const int64_t query = query0 + slot[half], head = static_cast<int64_t>(kv) * G + (g + 8 * half) % G;
    const float lse = st.Write(half, a.slc_out + (query * a.num_heads + head) * vhd, vhd);
    if (t == 0) a.slc_lse[query * a.num_heads + head] = lse;
  }
}

// ---- the selection: per-position block scores and top-n ----------------------------------------
// A block takes P consecutive positions of the chunk (P x G <= 64 query rows, whole positions) of
// one KV head and walks the summaries its last position sees, 64 a tile (K only): S = Q K^T on
// mma.sync as in the compressed branch, p = exp(s - lse) with the compressed branch's log-sum-exp
// (the same softmax the decode kernel's scores use), summed over the group's heads in head order
// (through shared memory, so every run gives the same sums) into the tile's summaries, then over
// each summary's overlap with the selection blocks (the geometric map; one to one when
// l = d = l') into each position's block scores, [P][C] in shared memory.
// Then a warp a position: the forced blocks, the best of the rest (ties to the lower index: the
// reference's order), the n blocks written ascending (every block when c + 1 <= n).
constexpr int kMaxSelectPositions = 8;
constexpr int kMaxQkSteps = 192 / 16;  // 16-dim steps of Q K^T at the largest head dim

// QkTile (kernels/cuda/tile_mma.cuh) with the warp's Q fragments already in registers
// (qa[step]: dims 16 step .. 16 step + 15, as QkTile loads them): the same products, the same
// order, the same floats.
__device__ __forceinline__ void QkTileFragments(const uint32_t (&qa)[kMaxQkSteps][4], const __nv_bfloat16* ks, int hd,
                                                float (&s)[kRowTiles][4]) {
  const int lane = threadIdx.x % 32, r8 = lane % 8, m = lane / 8;
  const int qstride = hd + kPad;
#pragma unroll
  for (int j = 0; j < kRowTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
  for (int step = 0; step < kMaxQkSteps; ++step) {
    if (step >= hd / 16) break;
#pragma unroll
    for (int j = 0; j < kRowTiles; j += 2) {
      uint32_t b[4];
      LdMatrixX4(b, ks + (8 * (j + (m >> 1)) + r8) * qstride + 16 * step + 8 * (m & 1));
      Mma(s[j], qa[step][0], qa[step][1], qa[step][2], qa[step][3], b[0], b[1]);
      Mma(s[j + 1], qa[step][0], qa[step][1], qa[step][2], qa[step][3], b[2], b[3]);
    }
  }
}
constexpr int kRowPStride = kTileRows + 1;  // a row's p in shared memory, padded against bank conflicts

// kIdentity: the identity map (l = d = l', the 7b and fla shapes), known at compile time so that
// the other maps' code is what it was without the shortcut (as a runtime flag it cost the paper
// shape's selection 10% on the H200: 42.6 -> 46.8 ms at 64k).
template <bool kIdentity>
__global__ void __launch_bounds__(kThreads) SelectPrefillKernel(NsaPrefillArgs a, int P, int C) {
  const int G = a.num_heads / a.num_kv_heads, kv = blockIdx.y, hd = a.head_dim, n = a.nsa.num_selected;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int qstride = hd + kPad;
  const int64_t q_begin = static_cast<int64_t>(blockIdx.x) * P;
  const int npos = static_cast<int>(a.num_queries - q_begin < P ? a.num_queries - q_begin : P);
  const int rows_used = npos * G;
  extern __shared__ __align__(16) unsigned char smem[];
  // Two K buffers; the first holds the queries until each warp has its Q fragments in registers.
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [64][hd + kPad]
  __nv_bfloat16* kbuf[2] = {qs, qs + kQueryRows * qstride};  // [64][hd + kPad] each
  float* rowp = reinterpret_cast<float*>(kbuf[1] + kTileRows * qstride);  // [64 rows][kRowPStride]: each row's p
  float* ptile = rowp + kQueryRows * kRowPStride;  // [P][64]: the tile's summaries, summed over heads
  float* scores = ptile + P * kTileRows;  // [P][C]: the block scores
  __shared__ int64_t row_page[2][kTileRows];
  __shared__ int row_slot[2][kTileRows];
  __shared__ int32_t picks[kThreads / 32][kMaxSelected];

  StridedLoadRows(qs, rows_used, hd, [&](int r) {
    return a.q + ((q_begin + r / G) * a.num_heads + static_cast<int64_t>(kv) * G + r % G) * hd;
  });
  for (int i = rows_used * qstride + threadIdx.x; i < kQueryRows * qstride; i += blockDim.x) qs[i] = __float2bfloat16(0.f);
  __pipeline_commit();
  for (int i = threadIdx.x; i < npos * C; i += blockDim.x) scores[i] = 0.f;

  // This lane's two rows: their visible summaries and log-sum-exp.
  int64_t hi[2];
  float lse[2];
  for (int half = 0; half < 2; ++half) {
    const int r = warp * 16 + g + 8 * half;
    const int64_t query = q_begin + (r < rows_used ? r / G : 0);
    hi[half] = r < rows_used ? a.nsa.NumCompressed(a.first_position + query + 1) : 0;
    lse[half] = r < rows_used ? a.cmp_lse[query * a.num_heads + static_cast<int64_t>(kv) * G + r % G] : 0.f;
    if (!(lse[half] > -INFINITY)) hi[half] = 0;  // sees no summary
  }
  const int64_t key_end = a.nsa.NumCompressed(a.first_position + q_begin + npos);
  const int num_tiles = static_cast<int>((key_end + kTileRows - 1) / kTileRows);
  const int cpc = a.nsa.compress_block / a.nsa.compress_stride, cps = a.nsa.select_block / a.nsa.compress_stride;
  const int64_t k_off = a.layout.Offset(KvPlane::kCmp, a.layer, kv, false);
  const CompressedKeys keys{a};

  // The warp's Q fragments (16 rows x hd) into registers, once: the queries' shared memory then
  // takes K tiles, so two K buffers fit in the space of one buffer and the queries.
  uint32_t qa[kMaxQkSteps][4];
  __pipeline_wait_prior(0);
  __syncthreads();
  {
    const int r8 = lane % 8, m = lane / 8;
#pragma unroll
    for (int step = 0; step < kMaxQkSteps; ++step) {
      if (step < hd / 16) LdMatrixX4(qa[step], qs + (warp * 16 + r8 + 8 * (m & 1)) * qstride + 16 * step + 8 * (m >> 1));
    }
  }
  // Tile `tile_index`'s summaries into K buffer `buf`: located, copied, committed (a group a
  // tile). The caller has synchronised since the buffer's and its row_page's last reads.
  auto issue = [&](int tile_index, int buf) {
    const int64_t i0 = static_cast<int64_t>(tile_index) * kTileRows;
    const int rows = static_cast<int>(key_end - i0 < kTileRows ? key_end - i0 : kTileRows);
    for (int r = threadIdx.x; r < rows; r += blockDim.x) keys.Locate(i0 + r, &row_page[buf][r], &row_slot[buf][r]);
    __syncthreads();
    StridedLoadRows(kbuf[buf], rows, hd, [&](int r) { return a.pages + row_page[buf][r] + k_off + row_slot[buf][r] * hd; });
    __pipeline_commit();
  };
  __syncthreads();  // every warp has its fragments: buffer 0 may be overwritten
  if (num_tiles > 0) issue(0, 0);
  for (int tile_index = 0; tile_index < num_tiles; ++tile_index) {
    const int64_t i0 = static_cast<int64_t>(tile_index) * kTileRows;
    const int rows = static_cast<int>(key_end - i0 < kTileRows ? key_end - i0 : kTileRows);
    const int buf = tile_index & 1;
    __syncthreads();  // the previous tile's reads of the other buffer, ptile and row_page are done
    // The next tile's copies go out before this one's wait; an empty group keeps the count.
    if (tile_index + 1 < num_tiles) {
      issue(tile_index + 1, buf ^ 1);
    } else {
      __pipeline_commit();
    }
    __pipeline_wait_prior(1);
    __syncthreads();
    const __nv_bfloat16* ks = kbuf[buf];
    if (warp * 16 < rows_used) {  // uniform in the warp
      float s[kRowTiles][4];
      QkTileFragments(qa, ks, hd, s);
#pragma unroll
      for (int j = 0; j < kRowTiles; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int half = c >= 2, col = 8 * j + 2 * t + (c & 1);
          const float p = i0 + col < hi[half] ? __expf(s[j][c] * a.scale - lse[half]) : 0.f;
          rowp[(warp * 16 + g + 8 * half) * kRowPStride + col] = p;
        }
      }
    }
    __syncthreads();
    // The group sum of each (position, summary), heads in order 0 .. G - 1 as the decode kernel
    // sums them: the same value on every run, whatever the group size. With the identity map
    // (l = d = l') summary i is block i's score: added there directly, no second pass.
    for (int idx = threadIdx.x; idx < npos * kTileRows; idx += blockDim.x) {
      const int p = idx / kTileRows, col = idx % kTileRows;
      float acc = 0.f;
      for (int h = 0; h < G; ++h) acc += rowp[(p * G + h) * kRowPStride + col];
      if constexpr (!kIdentity) {
        ptile[idx] = acc;
      } else if (col < rows) {
        scores[p * C + i0 + col] += acc;
      }
    }
    if constexpr (kIdentity) continue;  // the next tile's barrier orders these adds before its own
    __syncthreads();
    // Summary i covers stride chunks [i, i + cpc), block j chunks [j cps, (j + 1) cps): the tile's
    // summaries reach blocks i0 / cps .. (i0 + rows - 1 + cpc - 1) / cps.
    const int64_t j_lo = i0 / cps, j_hi_raw = (i0 + rows - 1 + cpc - 1) / cps;
    const int64_t j_hi = j_hi_raw < C - 1 ? j_hi_raw : C - 1;
    const int span = static_cast<int>(j_hi - j_lo + 1);
    for (int idx = threadIdx.x; idx < npos * span; idx += blockDim.x) {
      const int p = idx / span;
      const int64_t j = j_lo + idx % span;
      const int64_t i_first = j * cps - cpc + 1 > i0 ? j * cps - cpc + 1 : i0;
      const int64_t i_last = (j + 1) * cps - 1 < i0 + rows - 1 ? (j + 1) * cps - 1 : i0 + rows - 1;
      float acc = 0.f;
      for (int64_t i = i_first; i <= i_last; ++i) {
        const int64_t lo = i > j * cps ? i : j * cps, hi_c = i + cpc < (j + 1) * cps ? i + cpc : (j + 1) * cps;
        acc += static_cast<float>(hi_c - lo) * ptile[p * kTileRows + (i - i0)];
      }
      scores[p * C + j] += acc;
    }
  }
  __pipeline_wait_prior(0);  // no copy in flight (a block that saw no summary)
  __syncthreads();

  for (int p = warp; p < npos; p += kThreads / 32) {
    const int64_t query = q_begin + p, c = (a.first_position + query) / a.nsa.select_block;
    int32_t* out = a.selection_out + (query * a.num_kv_heads + kv) * n;
    if (c + 1 <= n) {
      for (int k = lane; k < n; k += 32) out[k] = k <= c ? k : -1;
      continue;
    }
    float* sc = scores + p * C;
    int* mine = picks[warp];
    // The forced blocks first (few: init + local <= n), marked out of the candidates.
    if (lane == 0) {
      int f = 0;
      for (int64_t j = 0; j <= c; ++j) {
        if (select::Forced(a.nsa, j, c)) mine[f++] = static_cast<int32_t>(j), sc[j] = -1.f;
        else j = c - a.nsa.local_blocks;  // skip the free middle
      }
    }
    __syncwarp();
    const int forced = select::NumForced(a.nsa, c);
    int count = forced;  // blocks chosen (n unless the scores are not finite)
    for (int k = forced; k < n; ++k) {
      float bv = -1.f;
      int bj = INT_MAX;
      for (int64_t j = lane; j <= c; j += 32) {
        const float v = sc[j];
        if (v > bv) bv = v, bj = static_cast<int>(j);  // ascending j: ties keep the lower index
      }
      select::WarpBest(bv, bj);
      if (bj == INT_MAX) break;  // no candidate left (NaN scores): uniform in the warp
      if (lane == 0) mine[k] = bj, sc[bj] = -2.f;
      __syncwarp();
      count = k + 1;
    }
    // Ascending: each entry's place is the number of smaller ones (distinct blocks); -1 pads.
    for (int k = lane; k < n; k += 32) {
      if (k >= count) {
        out[k] = -1;
        continue;
      }
      int rank = 0;
      for (int e = 0; e < count; ++e) rank += mine[e] < mine[k];
      out[rank] = mine[k];
    }
    __syncwarp();
  }
}

// out = g_cmp o_cmp + g_slc o_slc + g_win o_win, a (query, head) a warp-wide stride of channels.
__global__ void CombinePrefillKernel(NsaPrefillArgs a, const float* gates, float* out) {
  const int vhd = a.v_head_dim;
  const int64_t total = static_cast<int64_t>(a.num_queries) * a.num_heads * vhd;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float* gate = gates + (e / vhd) * 3;
    out[e] = gate[0] * a.cmp_out[e] + gate[1] * a.slc_out[e] + gate[2] * a.win_out[e];
  }
}

// The checks and the launch of one branch's kernel.
enum class Which { kCompressed, kWindow };

// The checks every kernel shares: the heads, the head dims, the layout and the chunk.
cudaError_t CheckCommon(const NsaPrefillArgs& a) {
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
  return cudaSuccess;
}

// Opts a kernel in to large shared memory once (the attribute is the kernel's, not the launch's);
// returns the bytes a block may have. One instantiation per kernel: the kernels share a type.
template <auto kernel>
cudaError_t OptIn(size_t* limit) {
  static size_t bytes = 0;
  static const cudaError_t status = [] {
    int device = 0, max_smem = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    bytes = static_cast<size_t>(max_smem) - (8 << 10);  // room for the static arrays
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  }();
  *limit = bytes;
  return status;
}

// Shared memory of the compressed/window kernel with R row tiles a warp and S K/V buffers: 64 R
// rows of q, S K/V tiles.
size_t BranchBytes(int R, int S, int head_dim, int v_head_dim) {
  return (static_cast<size_t>(kQueryRows * R + S * kTileRows) * (head_dim + kPad) +
          static_cast<size_t>(S * kTileRows) * (v_head_dim + kPad)) * sizeof(__nv_bfloat16);
}

template <Which which, int R, int S>
cudaError_t LaunchBranchRows(const NsaPrefillArgs& a, cudaStream_t stream) {
  constexpr auto kernel = which == Which::kCompressed ? CompressedPrefillKernel<R, S> : WindowPrefillKernel<R, S>;
  const size_t smem = BranchBytes(R, S, a.head_dim, a.v_head_dim);
  size_t limit = 0;
  if (const cudaError_t e = OptIn<kernel>(&limit); e != cudaSuccess) return e;
  if (smem > limit) return cudaErrorInvalidValue;
  const int G = a.num_heads / a.num_kv_heads;
  const int64_t blocks = (static_cast<int64_t>(a.num_queries) * G + kQueryRows * R - 1) / (kQueryRows * R);
  kernel<<<dim3(static_cast<unsigned>(blocks), a.num_kv_heads), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

template <Which which>
cudaError_t LaunchBranch(const NsaPrefillArgs& a, cudaStream_t stream) {
  if (const cudaError_t e = CheckCommon(a); e != cudaSuccess) return e;
  const KvLayout& L = a.layout;
  if (which == Which::kCompressed && (!a.cmp_out || !a.cmp_lse)) return cudaErrorInvalidValue;
  if (which == Which::kWindow &&
      (!a.win_out || !a.win_lse || (L.has_win != (a.win_table != nullptr)) || a.nsa.window < 1)) {
    return cudaErrorInvalidValue;
  }
  if (a.num_queries == 0) return cudaSuccess;
  if (a.branch_row_tiles != 1 && a.branch_row_tiles != 2) return cudaErrorInvalidValue;
  if (a.branch_stages < 0 || a.branch_stages > 2) return cudaErrorInvalidValue;
  const bool two = a.branch_row_tiles == 2;
  int stages = a.branch_stages;
  if (stages == 0) {
    // Two K/V buffers unless they cost a thread block an SM: compare the resident blocks of both
    // forms (registers and shared memory) as the occupancy calculator counts them.
    constexpr auto k1 = which == Which::kCompressed ? CompressedPrefillKernel<1, 1> : WindowPrefillKernel<1, 1>;
    constexpr auto k2 = which == Which::kCompressed ? CompressedPrefillKernel<1, 2> : WindowPrefillKernel<1, 2>;
    constexpr auto k3 = which == Which::kCompressed ? CompressedPrefillKernel<2, 1> : WindowPrefillKernel<2, 1>;
    constexpr auto k4 = which == Which::kCompressed ? CompressedPrefillKernel<2, 2> : WindowPrefillKernel<2, 2>;
    int one = 0, both = 0;
    size_t limit = 0;
    for (const cudaError_t e : {two ? OptIn<k3>(&limit) : OptIn<k1>(&limit), two ? OptIn<k4>(&limit) : OptIn<k2>(&limit)}) {
      if (e != cudaSuccess) return e;
    }
    const int R = two ? 2 : 1;
    if (const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &one, two ? k3 : k1, kThreads, BranchBytes(R, 1, a.head_dim, a.v_head_dim));
        e != cudaSuccess) {
      return e;
    }
    const size_t bytes2 = BranchBytes(R, 2, a.head_dim, a.v_head_dim);
    if (bytes2 <= limit) {
      if (const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&both, two ? k4 : k2, kThreads, bytes2);
          e != cudaSuccess) {
        return e;
      }
    }
    stages = both >= one ? 2 : 1;
  }
  if (two) return stages == 2 ? LaunchBranchRows<which, 2, 2>(a, stream) : LaunchBranchRows<which, 2, 1>(a, stream);
  return stages == 2 ? LaunchBranchRows<which, 1, 2>(a, stream) : LaunchBranchRows<which, 1, 1>(a, stream);
}

}  // namespace

bool NsaPrefillSupports(int num_heads, int num_kv_heads, int head_dim, int v_head_dim, const NsaParams& p,
                        const KvLayout& layout, int64_t max_context) {
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0 || num_heads / num_kv_heads > kQueryRows) return false;
  if (head_dim % 16 != 0 || head_dim < 16 || head_dim > 192 || v_head_dim % 16 != 0 || v_head_dim < 16 ||
      v_head_dim > 8 * kMaxColTiles) {
    return false;
  }
  if (p.num_selected < 1 || p.num_selected > kMaxSelected || p.select_block <= 0 || p.select_block > kTileRows ||
      layout.page_tokens > kTileRows || p.compress_stride <= 0 || p.compress_block % p.compress_stride != 0 ||
      p.select_block % p.compress_stride != 0) {
    return false;
  }
  // Shared memory: the branch kernels' tiles, and the selection's scores of one position at the
  // longest context (8 KB of each block's allowance is the kernels' static arrays).
  int device = 0, optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    return false;
  }
  const size_t limit = static_cast<size_t>(optin) - (8 << 10);
  const size_t branch = BranchBytes(2, 1, head_dim, v_head_dim);  // the default form, one K/V buffer at least
  const size_t select = static_cast<size_t>(kQueryRows + kTileRows) * (head_dim + kPad) * sizeof(__nv_bfloat16) +
                        static_cast<size_t>(kQueryRows) * kRowPStride * sizeof(float) +
                        (static_cast<size_t>(kTileRows) + static_cast<size_t>(max_context / p.select_block + 1)) * sizeof(float);
  return branch <= limit && select <= limit && SelectedBytes(head_dim, v_head_dim, p.num_selected) <= limit;
}

cudaError_t LaunchNsaPrefillSelect(const NsaPrefillArgs& a, cudaStream_t stream) {
  if (const cudaError_t e = CheckCommon(a); e != cudaSuccess) return e;
  const NsaParams& p = a.nsa;
  if (!a.cmp_lse || !a.selection_out || p.num_selected < 1 || p.num_selected > kMaxSelected || p.select_block <= 0 ||
      p.compress_block % p.compress_stride != 0 || p.select_block % p.compress_stride != 0) {
    return cudaErrorInvalidValue;
  }
  if (a.num_queries == 0) return cudaSuccess;
  const int G = a.num_heads / a.num_kv_heads;
  // Block scores for blocks 0 .. c of the chunk's last position.
  const int64_t C = (a.first_position + a.num_queries - 1) / p.select_block + 1;
  const bool identity = p.compress_block == p.compress_stride && p.select_block == p.compress_stride;
  size_t limit = 0;
  if (const cudaError_t e = identity ? OptIn<SelectPrefillKernel<true>>(&limit) : OptIn<SelectPrefillKernel<false>>(&limit);
      e != cudaSuccess) {
    return e;
  }
  const size_t fixed = static_cast<size_t>(kQueryRows + kTileRows) * (a.head_dim + kPad) * sizeof(__nv_bfloat16) +
                       static_cast<size_t>(kQueryRows) * kRowPStride * sizeof(float);
  const size_t per_position = (static_cast<size_t>(kTileRows) + static_cast<size_t>(C)) * sizeof(float);
  int P = std::min(kMaxSelectPositions, kQueryRows / G);
  if (limit > fixed) P = static_cast<int>(std::min<size_t>(P, (limit - fixed) / per_position));
  if (limit <= fixed || P < 1) return cudaErrorInvalidValue;  // a context too long for one position's scores
  const size_t smem = fixed + P * per_position;
  const int64_t blocks = (a.num_queries + P - 1) / P;
  const dim3 grid(static_cast<unsigned>(blocks), a.num_kv_heads);
  if (identity) {
    SelectPrefillKernel<true><<<grid, kThreads, smem, stream>>>(a, P, static_cast<int>(C));
  } else {
    SelectPrefillKernel<false><<<grid, kThreads, smem, stream>>>(a, P, static_cast<int>(C));
  }
  return cudaGetLastError();
}

cudaError_t LaunchNsaPrefillCombine(const NsaPrefillArgs& a, const float* gates, float* out, cudaStream_t stream) {
  if (!a.cmp_out || !a.slc_out || !a.win_out || !gates || !out || a.num_queries < 0 || a.num_heads <= 0 ||
      a.v_head_dim <= 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t total = static_cast<int64_t>(a.num_queries) * a.num_heads * a.v_head_dim;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, 132 * 16);
  CombinePrefillKernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(a, gates, out);
  return cudaGetLastError();
}

cudaError_t LaunchNsaPrefillCompressed(const NsaPrefillArgs& a, cudaStream_t stream) {
  return LaunchBranch<Which::kCompressed>(a, stream);
}

cudaError_t LaunchNsaPrefillWindow(const NsaPrefillArgs& a, cudaStream_t stream) {
  return LaunchBranch<Which::kWindow>(a, stream);
}

cudaError_t LaunchNsaPrefillSelected(const NsaPrefillArgs& a, cudaStream_t stream) {
  if (const cudaError_t e = CheckCommon(a); e != cudaSuccess) return e;
  const int n = a.nsa.num_selected;
  if (!a.slc_out || !a.slc_lse || !a.selection || n < 1 || n > kMaxSelected || a.layout.page_tokens > kTileRows) {
    return cudaErrorInvalidValue;
  }
  if (a.num_queries == 0) return cudaSuccess;
  const int G = a.num_heads / a.num_kv_heads;
  using Form = NsaPrefillArgs::SelectedForm;
  if (G <= 8 && a.pack_positions && a.selected_form != Form::kSplit) {
    // The selection blocks of the chunk's last position: every valid choice is below C.
    const int64_t C = (a.first_position + a.num_queries - 1) / a.layout.page_tokens + 1;
    const size_t smem = PackedSelectedBytes(a.head_dim, a.v_head_dim, n, G, C);
    size_t limit = 0;
    if (const cudaError_t e = OptIn<PackedSelectedPrefillKernel>(&limit); e != cudaSuccess) return e;
    if (C <= INT_MAX && smem <= limit) {  // else padded, below
      const int64_t blocks = (a.num_queries + 4 * PackedPositions(G) - 1) / (4 * PackedPositions(G));
      PackedSelectedPrefillKernel<<<dim3(static_cast<unsigned>(blocks), a.num_kv_heads), kThreads, smem, stream>>>(
          a, static_cast<int>(C));
      return cudaGetLastError();
    }
  }
  const size_t smem = SelectedBytes(a.head_dim, a.v_head_dim, n);
  size_t limit = 0;
  if (const cudaError_t e = OptIn<SelectedPrefillKernel>(&limit); e != cudaSuccess) return e;
  if (smem > limit) return cudaErrorInvalidValue;
  const int union_max = a.selected_form == Form::kSplit   ? -1
                        : a.selected_form == Form::kUnion ? kMaxUnion
                                                          : kAutoUnionMax * n / 16;
  const int64_t blocks = (static_cast<int64_t>(a.num_queries) * ((G + 15) / 16) + 3) / 4;  // 4 items a block
  SelectedPrefillKernel<<<dim3(static_cast<unsigned>(blocks), a.num_kv_heads), kThreads, smem, stream>>>(a, union_max);
  return cudaGetLastError();
}

}  // namespace nsa::cuda
